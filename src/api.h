/* api.h: the HTTP admin API (/api/...; PROTOCOL.md "HTTP API"): who may
 * call it (http.api_key, else loopback peers only), CORS for browsers
 * (http.cors_origins), and the endpoints on rooms, clients, broadcasts and
 * stats. Answers are this node's view; deliveries go through fanout.c and
 * state lives in the registry. Worker thread (the connection's owner). */
#ifndef HUB_API_H
#define HUB_API_H

#include <stddef.h>

#include "common.h"
#include "http.h"

/* Answers one request for a path under /api/ (other than /api/reload),
 * including its errors; closes after the answer when keep_alive is 0. */
void hub_api_handle(hub_conn_t *c, const hub_http_req_t *r, int keep_alive);

/* API access: a request with an Origin header needs an origin allowed by
 * http.cors_origins (browsers); then, with http.api_key, "Authorization:
 * Bearer <key>" or "X-API-Key: <key>" (compared in constant time); without
 * a key, loopback peers only. Returns 1 when allowed; otherwise answers 401
 * or 403 itself (with extra, "" or CRLF-terminated header lines, added) and
 * returns 0. */
int hub_api_allowed(hub_conn_t *c, const hub_http_req_t *r, const char *extra, int keep_alive);

/* The access decision alone, for a configured key ("" = none), the two
 * credential headers (NULL when absent) and whether the peer is on
 * loopback: 0 allowed, 401 or 403. Pure; any thread. */
int hub_api_access(const char *key, const char *authorization, size_t alen,
                   const char *x_api_key, size_t xlen, int peer_is_loopback);

/* Writes the CORS response header lines for r's Origin into buf (always
 * NUL-terminated): "" when r has no Origin or http.cors_origins does not
 * allow it. Returns 1 when the origin is allowed (or absent), 0 when an
 * Origin was sent and is not allowed. */
int hub_api_cors(const hub_conn_t *c, const hub_http_req_t *r, char *buf, size_t len);

#endif
