/* ws.h: the WebSocket phase of a connection, on wslay. A whole single-frame
 * message that arrives in one read skips wslay (unmasked and checked here:
 * the common case); everything else (fragments, frames split across reads,
 * control frames) goes to wslay, which reassembles, validates UTF-8, answers
 * pings and runs the close handshake. Data frames are never sent through
 * wslay (it copies per message), only control frames come out of it, onto
 * the connection's ordered queue.
 *
 * Idle connections hold no wslay state: a per-worker pool lends a slot (event
 * context + message buffer) while a connection is inside a frame or a
 * fragmented message; input is handed to wslay one frame at a time so a slot
 * never keeps another connection's bytes. Worker thread only. */
#ifndef HUB_WS_H
#define HUB_WS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct hub_ws_pool_s hub_ws_pool_t;

/* A pool for one worker; max_message is limits.max_message_bytes. */
hub_ws_pool_t *hub_ws_pool_new(uint32_t max_message);
void hub_ws_pool_free(hub_ws_pool_t *p);

/* Switches c to the WebSocket phase (after the 101 is queued). */
void hub_ws_start(hub_conn_t *c);

/* Processes inbound bytes of a connection in the WebSocket phase. */
void hub_ws_input(hub_conn_t *c, const uint8_t *p, size_t n);

/* Returns c's borrowed slot, if any, to the pool (or frees it when its state
 * is not clean). Safe to call from inside a message callback: the release
 * then happens when wslay returns. */
void hub_ws_release(hub_conn_t *c);

#endif
