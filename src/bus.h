/* bus.h: the cluster bus seen from both sides.
 *
 * gohub nodes exchange opaque messages on named subjects through a
 * transport (Redis pub/sub, NATS). Everything runs on one bus thread per
 * node with its own uv loop (bus.c): workers post publish / subscribe
 * requests to its inbox; inbound messages are handed to the core, which
 * routes them to workers' inboxes. A transport never touches worker state,
 * never calls Lua, and copies what it keeps.
 *
 * Subjects are built by the core only from validated ids (hub_bus_subject)
 * and are plain ASCII without blanks, '*' or '>'; a transport may add its
 * own prefix (cluster.redis.key_prefix) or use them as they are (NATS).
 *
 * Transport contract (every function below runs on the bus thread):
 *  - open() starts connecting in the background and returns at once; the
 *    transport reconnects by itself, forever, with backoff (100 ms doubling
 *    to cluster.reconnect_max_backoff, with jitter), and calls
 *    hub_bus_transport_state() on every change. On a (re)connect the core
 *    calls subscribe() again for every subject it holds.
 *  - publish() never blocks the loop. While disconnected the transport may
 *    buffer up to cluster.publish_buffer bytes and must drop (and count)
 *    beyond that; a message is never delivered twice by the transport
 *    itself (JetStream redelivery is deduplicated by the core).
 *  - subscribe()/unsubscribe() are idempotent; the core only calls them
 *    when a subject's local use starts or ends.
 *  - inbound messages go to hub_bus_transport_message() with the subject
 *    as subscribed (the transport strips its prefix), in arrival order.
 *  - close() disconnects and frees; no callback after it returns, except
 *    handle close callbacks the loop still has to run.
 */
#ifndef HUB_BUS_H
#define HUB_BUS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common.h"

typedef struct hub_bus_s hub_bus_t;

/* Connection state, also what /health reports. */
enum { HUB_BUS_DISABLED = 0, HUB_BUS_DOWN, HUB_BUS_CONNECTED };

typedef struct hub_bus_transport_s {
    const char *name; /* "redis", "nats" */
    /* Starts connecting. *impl receives the transport's state (owned by
     * it until close). Returns 0 or HUB_E* for a bad configuration only:
     * an unreachable server is not an error (the node starts degraded). */
    int (*open)(hub_bus_t *bus, uv_loop_t *loop, const hub_config_t *cfg, void **impl);
    /* Sends p..p+n on subject (the transport copies what it keeps).
     * msg_id, when not NULL, is a cluster-unique id of this message (the
     * core's origin node id + sequence, printable ASCII, no blanks, at most
     * 128 bytes): NATS with JetStream sends it as the Nats-Msg-Id header so
     * the server stores a re-published message once; transports without
     * server-side dedupe (core NATS, Redis) ignore it. */
    void (*publish)(void *impl, const char *subject, const uint8_t *p, size_t n,
                    const char *msg_id);
    void (*subscribe)(void *impl, const char *subject);
    void (*unsubscribe)(void *impl, const char *subject);
    void (*close)(void *impl);
} hub_bus_transport_t;

extern const hub_bus_transport_t hub_bus_redis;
extern const hub_bus_transport_t hub_bus_nats;

/* ---- called by transports (bus thread) ------------------------------------ */

/* The transport connected (1) or lost its connection (0). */
void hub_bus_transport_state(hub_bus_t *bus, int connected);

/* A message arrived on subject (as subscribed). p is only valid during
 * the call. */
void hub_bus_transport_message(hub_bus_t *bus, const char *subject, size_t slen,
                               const uint8_t *p, size_t n);

/* Counts a message the transport dropped (buffer full while down, payload
 * over the server's limit, slow consumer). */
void hub_bus_transport_dropped(hub_bus_t *bus, const char *why);

#endif
