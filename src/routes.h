/* routes.h: the HTTP route table shared by every worker and the plain HTTP
 * endpoints. Worker thread. */
#ifndef HUB_ROUTES_H
#define HUB_ROUTES_H

#include "common.h"
#include "http.h"

enum {
    HUB_ROUTE_NONE = 0,
    HUB_ROUTE_WS,        /* GET /ws: the gohub JSON protocol */
    HUB_ROUTE_HEALTH,    /* GET /health */
    HUB_ROUTE_RELOAD,    /* POST /api/reload */
    HUB_ROUTE_API,       /* every other /api/... path (api.c) */
    HUB_ROUTE_METRICS,   /* GET /metrics (metrics.c) */
};

/* Handles one complete request on c (HTTP phase). rest/restlen are the bytes
 * that followed the request head in the same read: after an upgrade they
 * belong to the WebSocket and are processed here. */
void hub_routes_handle(hub_conn_t *c, const hub_http_req_t *r, const uint8_t *rest,
                       size_t restlen);

/* Sends an HTTP response (head_only: HEAD, no body); closes after it when
 * keep_alive is 0. extra is "" or header lines ending in CRLF. */
void hub_routes_respond(hub_conn_t *c, int status, const char *extra, const char *ctype,
                        const char *body, size_t blen, int keep_alive, int head_only);

/* Sends an HTTP error with the JSON error body and closes after it (keep
 * 0) or not. extra is "" or header lines ending in CRLF. */
void hub_routes_error(hub_conn_t *c, int status, const char *code, const char *message,
                      const char *extra, int keep_alive);

#endif
