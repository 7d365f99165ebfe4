/* routes.c: the route table and the plain HTTP endpoints, and the WebSocket
 * upgrade decision (handshake checks, connection limit, 101). Worker thread. */
#include "routes.h"

#include <stdio.h>
#include <string.h>

#include "config.h"
#include "conn.h"
#include "handshake.h"
#include "log.h"
#include "server.h"
#include "worker.h"
#include "ws.h"

typedef struct {
    const char *path;
    int kind;
} route_t;

/* /connection/websocket (Centrifuge protocol) joins this table later. */
static const route_t routes[] = {
    { "/ws", HUB_ROUTE_WS },
    { "/health", HUB_ROUTE_HEALTH },
};

static const route_t *find(const hub_http_req_t *r)
{
    for (size_t i = 0; i < HUB_ARRAY_LEN(routes); i++)
        if (hub_span_eq(r, r->path, routes[i].path))
            return &routes[i];
    return NULL;
}

static void respond(hub_conn_t *c, int status, const char *extra, const char *ctype,
                    const char *body, size_t blen, int keep_alive, int head_only)
{
    size_t n;
    char *out = hub_http_format(status, extra, ctype, body, blen, keep_alive, head_only, &n);
    hub_frame_t *f = out ? hub_frame_copy(out, n) : NULL;
    free(out);
    if (f == NULL) {
        hub_conn_abort(c);
        return;
    }
    hub_conn_send_raw(c, f);
    if (!keep_alive)
        hub_conn_linger(c);
}

void hub_routes_error(hub_conn_t *c, int status, const char *code, const char *message,
                      const char *extra, int keep_alive)
{
    char body[256];
    size_t n = hub_http_error_body(body, sizeof(body), code, message);
    respond(c, status, extra, "application/json", body, n, keep_alive, 0);
}

static void health(hub_conn_t *c, const hub_http_req_t *r, int keep_alive)
{
    hub_server_t *srv = c->w->srv;
    if (r->method != HUB_HTTP_GET && r->method != HUB_HTTP_HEAD) {
        hub_routes_error(c, 405, "method_not_allowed", "use GET", "Allow: GET, HEAD\r\n",
                         keep_alive);
        return;
    }
    char body[512];
    int n = snprintf(body, sizeof(body),
                     "{\"status\":\"ok\",\"version\":\"%s\",\"node_id\":\"%s\","
                     "\"uptime_s\":%llu,\"connections\":%ld,\"bus\":\"disabled\"}",
                     GOHUB_VERSION, srv->node_id,
                     (unsigned long long)hub_server_uptime_s(srv),
                     atomic_load(&srv->ws_connections));
    respond(c, 200, "Cache-Control: no-store\r\n", "application/json", body, (size_t)n,
            keep_alive, r->method == HUB_HTTP_HEAD);
}

static void upgrade(hub_conn_t *c, const hub_http_req_t *r, int route, const uint8_t *rest,
                    size_t restlen)
{
    hub_server_t *srv = c->w->srv;
    char accept[HUB_WS_ACCEPT_LEN + 1];
    const char *reason = NULL;
    int status = hub_handshake_check(r, &c->w->cfg->allowed_origins, accept, &reason);
    if (status != 101) {
        const char *extra = status == 405   ? "Allow: GET\r\n"
                            : status == 426 ? "Sec-WebSocket-Version: 13\r\n"
                                            : "";
        const char *code = status == 405   ? "method_not_allowed"
                           : status == 426 ? "upgrade_required"
                           : status == 403 ? "forbidden"
                                           : "bad_request";
        hub_log_debug("handshake refused", "conn=%llu status=%d reason=%s",
                      (unsigned long long)c->id, status, reason);
        hub_routes_error(c, status, code, reason, extra, 0);
        return;
    }
    if (atomic_fetch_add(&srv->ws_connections, 1) >= (long)srv->max_connections) {
        atomic_fetch_sub(&srv->ws_connections, 1);
        hub_log_warn("connection limit reached", "limit=%u", srv->max_connections);
        hub_routes_error(c, 503, "unavailable", "connection limit reached",
                         "Retry-After: 1\r\n", 0);
        return;
    }
    c->flags |= HUB_CONN_F_COUNTED;
    char resp[256];
    size_t n = hub_handshake_response(accept, resp, sizeof(resp));
    hub_frame_t *f = hub_frame_copy(resp, n);
    if (f == NULL) {
        hub_conn_abort(c);
        return;
    }
    hub_conn_send_raw(c, f);
    hub_http_free(c->http);
    c->http = NULL;
    c->route = (uint8_t)route;
    hub_ws_start(c);
    hub_log_debug("websocket open", "conn=%llu", (unsigned long long)c->id);
    if (restlen > 0) /* frames pipelined behind the handshake */
        hub_ws_input(c, rest, restlen);
}

void hub_routes_handle(hub_conn_t *c, const hub_http_req_t *r, const uint8_t *rest,
                       size_t restlen)
{
    /* after an Upgrade head we cannot know where a next request starts */
    int keep_alive = r->keep_alive && !r->upgrade;
    if (r->http_major != 1) { /* HTTP/0.9 ("GET /") or an unknown major */
        hub_routes_error(c, 400, "bad_request", "HTTP/1.x required", "", 0);
        return;
    }
    const route_t *rt = find(r);
    if (rt == NULL) {
        hub_routes_error(c, 404, "not_found", "no such endpoint", "", keep_alive);
        return;
    }
    switch (rt->kind) {
    case HUB_ROUTE_WS:
        upgrade(c, r, rt->kind, rest, restlen);
        break;
    case HUB_ROUTE_HEALTH:
        health(c, r, keep_alive);
        break;
    default:
        hub_routes_error(c, 404, "not_found", "no such endpoint", "", keep_alive);
        break;
    }
}
