/* routes.c: the route table and the plain HTTP endpoints, and the WebSocket
 * upgrade decision (handshake checks, connection limit, 101). Worker thread. */
#include "routes.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "auth.h"
#include "bus.h"
#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "handshake.h"
#include "log.h"
#include "lua_vm.h"
#include "metrics.h"
#include "msg.h"
#include "pct.h"
#include "ratelimit.h"
#include "registry.h"
#include "reload.h"
#include "server.h"
#include "worker.h"
#include "ws.h"

typedef struct {
    const char *path;
    int kind;
    uint8_t scope;  /* HUB_SCOPE_* bits: served on addresses with any of them */
    uint8_t prefix; /* path is a prefix (ends in '/') */
} route_t;

/* /connection/websocket (Centrifuge protocol) joins this table later.
 * First match wins. */
static const route_t routes[] = {
    { "/ws", HUB_ROUTE_WS, HUB_SCOPE_WS, 0 },
    { "/health", HUB_ROUTE_HEALTH, HUB_SCOPE_WS | HUB_SCOPE_API, 0 },
    { "/metrics", HUB_ROUTE_METRICS, HUB_SCOPE_METRICS, 0 },
    { "/api/reload", HUB_ROUTE_RELOAD, HUB_SCOPE_API, 0 },
    { "/api/", HUB_ROUTE_API, HUB_SCOPE_API, 1 },
};

/* The route for r's path among those served on an address of scope. */
static const route_t *find(const hub_http_req_t *r, uint8_t scope)
{
    for (size_t i = 0; i < HUB_ARRAY_LEN(routes); i++) {
        const route_t *rt = &routes[i];
        if (!(rt->scope & scope))
            continue;
        size_t n = strlen(rt->path);
        if (rt->prefix ? r->path.len > n && memcmp(r->buf + r->path.off, rt->path, n) == 0
                       : hub_span_eq(r, r->path, rt->path))
            return rt;
    }
    return NULL;
}

void hub_routes_respond(hub_conn_t *c, int status, const char *extra, const char *ctype,
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
    hub_routes_respond(c, status, extra, "application/json", body, n, keep_alive, 0);
}

static void health(hub_conn_t *c, const hub_http_req_t *r, int keep_alive)
{
    hub_server_t *srv = c->w->srv;
    if (r->method != HUB_HTTP_GET && r->method != HUB_HTTP_HEAD) {
        hub_routes_error(c, 405, "method_not_allowed", "use GET", "Allow: GET, HEAD\r\n",
                         keep_alive);
        return;
    }
    /* a configured bus that is down: local traffic is served, the cluster
     * is not, so a load balancer should prefer other nodes */
    int bus = hub_cluster_state();
    int down = bus == HUB_BUS_DOWN;
    char body[512];
    int n = snprintf(body, sizeof(body),
                     "{\"status\":\"%s\",\"version\":\"%s\",\"node_id\":\"%s\","
                     "\"uptime_s\":%llu,\"connections\":%ld,\"bus\":\"%s\"}",
                     down ? "degraded" : "ok", GOHUB_VERSION, srv->node_id,
                     (unsigned long long)hub_server_uptime_s(srv),
                     atomic_load(&srv->ws_connections),
                     bus == HUB_BUS_CONNECTED ? "connected" : down ? "down" : "disabled");
    hub_routes_respond(c, down ? 503 : 200, "Cache-Control: no-store\r\n", "application/json",
                       body, (size_t)n, keep_alive, r->method == HUB_HTTP_HEAD);
}

static void reload(hub_conn_t *c, const hub_http_req_t *r, int keep_alive)
{
    if (r->method != HUB_HTTP_POST) {
        hub_routes_error(c, 405, "method_not_allowed", "use POST", "Allow: POST\r\n",
                         keep_alive);
        return;
    }
    if (!hub_api_allowed(c, r, "", keep_alive))
        return;
    /* answered (then closed) when every worker has reported; meanwhile the
     * connection reads nothing and the header deadline is off (the answer
     * runs on this thread, so not before this returns) */
    int rc = hub_reload_request(c->w->srv, c->w->index, c->id);
    if (rc != 0) {
        hub_routes_error(c, 503, "unavailable",
                         rc == HUB_ENOMEM ? "out of memory" : "shutting down",
                         "Retry-After: 1\r\n", 0);
        return;
    }
    hub_conn_pause(c);
    c->timer_ms = UINT64_MAX;
}

/* limits.connections_per_second_per_ip for c's peer. */
static int ip_rate_ok(hub_conn_t *c)
{
    uint32_t rate = c->w->cfg->connections_per_second_per_ip;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (rate == 0 || uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
        return 1;
    return hub_rl_ip_allow((struct sockaddr *)&ss, uv_now(&c->w->loop) * 1000, rate);
}

/* The token of an upgrade request: the first non-empty ?token= query
 * parameter (percent-decoded; '+' stays '+', base64url has none), else
 * "Authorization: Bearer <token>". *tok gets a malloc'd copy (caller
 * frees) or NULL when there is none. Returns 0, HUB_EINVAL for a broken
 * percent escape, HUB_ENOMEM. */
static int request_token(const hub_http_req_t *r, char **tok, size_t *len)
{
    *tok = NULL;
    *len = 0;
    const char *q = r->buf + r->query.off, *end = q + r->query.len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        if (pe - q > 6 && memcmp(q, "token=", 6) == 0) {
            const char *v = q + 6;
            size_t vl = (size_t)(pe - v);
            char *out = malloc(vl + 1);
            if (out == NULL)
                return HUB_ENOMEM;
            size_t n = hub_pct_decode(v, vl, out, vl + 1);
            if (n == (size_t)-1) {
                free(out);
                return HUB_EINVAL;
            }
            *tok = out;
            *len = n;
            return 0;
        }
        q = pe + 1;
    }
    hub_span_t a = hub_http_header(r, "Authorization", NULL);
    if (!hub_span_present(a) || a.len <= 7 || strncasecmp(r->buf + a.off, "Bearer ", 7) != 0)
        return 0; /* none, or another scheme: not ours */
    const char *v = r->buf + a.off + 7, *ve = r->buf + a.off + a.len;
    while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
    if (v == ve)
        return 0;
    if ((*tok = strndup(v, (size_t)(ve - v))) == NULL)
        return HUB_ENOMEM;
    *len = (size_t)(ve - v);
    return 0;
}

/* Authentication at the handshake (auth.enabled): a valid token gives
 * *ident; no token is anonymous when auth.allow_anonymous, else refused
 * (J12); a bad token is refused with 401 and a short reason (H21). With
 * auth disabled every token is ignored. Returns 1 to go on, 0 when the
 * request was answered. */
static int handshake_auth(hub_conn_t *c, const hub_http_req_t *r, hub_identity_t **ident)
{
    *ident = NULL;
    const hub_auth_t *a = c->w->auth;
    if (a == NULL)
        return 1;
    char *tok;
    size_t len;
    hub_auth_reason_t why;
    int rc = request_token(r, &tok, &len);
    if (rc == HUB_ENOMEM)
        why = HUB_AUTH_INTERNAL;
    else if (rc != 0)
        why = HUB_AUTH_MALFORMED;
    else if (tok == NULL)
        why = c->w->cfg->auth_allow_anonymous ? HUB_AUTH_OK : HUB_AUTH_NO_TOKEN;
    else
        why = hub_auth_verify(a, tok, len, hub_now_ms(), ident);
    free(tok);
    /* an anonymous connection (no token, allowed) is no auth attempt */
    if (why != HUB_AUTH_OK || *ident != NULL)
        hub_metrics_auth(&c->w->metrics, why == HUB_AUTH_OK, hub_auth_reason_name(why));
    if (why == HUB_AUTH_OK)
        return 1;
    hub_log_info("handshake token refused", "conn=%llu reason=%s", (unsigned long long)c->id,
                 hub_auth_reason_name(why));
    if (why == HUB_AUTH_INTERNAL) {
        hub_routes_error(c, 503, "unavailable", "out of memory", "Retry-After: 1\r\n", 0);
        return 0;
    }
    const char *code = why == HUB_AUTH_NO_TOKEN  ? "token_required"
                       : why == HUB_AUTH_EXPIRED ? "token_expired"
                                                 : "invalid_token";
    const char *extra = why == HUB_AUTH_NO_TOKEN
                            ? "WWW-Authenticate: Bearer realm=\"gohub\"\r\n"
                            : "WWW-Authenticate: Bearer realm=\"gohub\", error=\"invalid_token\"\r\n";
    hub_routes_error(c, 401, code, hub_auth_reason_text(why), extra, 0);
    return 0;
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
    if (!ip_rate_ok(c)) {
        hub_log_info("upgrade rate limit", "conn=%llu limit=%u/s", (unsigned long long)c->id,
                     c->w->cfg->connections_per_second_per_ip);
        hub_routes_error(c, 429, "too_many_requests",
                         "too many connections from this address", "Retry-After: 1\r\n", 0);
        return;
    }
    hub_identity_t *ident;
    if (!handshake_auth(c, r, &ident))
        return;
    if (atomic_fetch_add(&srv->ws_connections, 1) >= (long)srv->max_connections) {
        atomic_fetch_sub(&srv->ws_connections, 1);
        hub_identity_free(ident);
        hub_log_warn("connection limit reached", "limit=%u", srv->max_connections);
        hub_routes_error(c, 503, "unavailable", "connection limit reached",
                         "Retry-After: 1\r\n", 0);
        return;
    }
    if (hub_reg_client_add(c->id, c->w->index, ident ? ident->user_id : NULL) != 0) {
        atomic_fetch_sub(&srv->ws_connections, 1);
        hub_identity_free(ident);
        hub_routes_error(c, 503, "unavailable", "out of memory", "Retry-After: 1\r\n", 0);
        return;
    }
    c->ident = ident; /* the connection owns it from here */
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
    char why[128];
    int refuse = hub_vm_on_connect(c->w->vm, c, why, sizeof(why));
    if (refuse) {
        hub_conn_close(c, (uint16_t)refuse, why);
        return;
    }
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
    const route_t *rt = find(r, c->scope);
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
    case HUB_ROUTE_RELOAD:
        reload(c, r, keep_alive);
        break;
    case HUB_ROUTE_METRICS:
        hub_metrics_serve(c, r, keep_alive);
        break;
    case HUB_ROUTE_API:
        hub_api_handle(c, r, keep_alive);
        break;
    default:
        hub_routes_error(c, 404, "not_found", "no such endpoint", "", keep_alive);
        break;
    }
}
