/* conn.c: connection lifecycle (accept, read, HTTP phase, lingering close,
 * hard close), the ordered outbound queue with its byte limit, and the write
 * path. Worker thread only. */
#include "conn.h"

#include <string.h>
#include <sys/socket.h>

#include "auth.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "lua_vm.h"
#include "metrics.h"
#include "msg.h"
#include "ratelimit.h"
#include "registry.h"
#include "routes.h"
#include "server.h"
#include "worker.h"
#include "ws.h"

/* One queued reference to a frame. Nodes come from a per-worker free list,
 * so queueing a fan-out frame allocates nothing in steady state. */
struct hub_outq_node_s {
    hub_outq_node_t *next;
    hub_frame_t *f;
};

#define WRITE_IOV 64
/* A uv_write in flight: it owns the nodes it writes until on_write. */
struct hub_write_req_s {
    uv_write_t req;
    hub_write_req_t *next_free;
    hub_outq_node_t *nodes;
    uint64_t bytes;
};

/* Free queue nodes kept per worker. One 64 KiB read can carry hundreds of
 * room messages, each queued to every member: with 4,096 kept, a burst of
 * 1,000 messages to 41 members malloc'd and freed ~90% of its nodes
 * (callgrind). 65,536 nodes are at most 1 MiB per worker. */
#define NODE_KEEP 65536
#define WREQ_KEEP 4096 /* free write requests kept per worker */

static hub_outq_node_t *node_get(hub_worker_t *w)
{
    hub_outq_node_t *n = w->node_free;
    if (n != NULL) {
        w->node_free = n->next;
        w->node_free_n--;
        return n;
    }
    return malloc(sizeof(*n));
}

static void node_put(hub_worker_t *w, hub_outq_node_t *n)
{
    hub_frame_release(n->f);
    if (w->node_free_n >= NODE_KEEP) {
        free(n);
        return;
    }
    n->next = w->node_free;
    w->node_free = n;
    w->node_free_n++;
}

static hub_write_req_t *wreq_get(hub_worker_t *w)
{
    hub_write_req_t *r = w->wreq_free;
    if (r != NULL) {
        w->wreq_free = r->next_free;
        w->wreq_free_n--;
        return r;
    }
    return malloc(sizeof(*r));
}

static void wreq_put(hub_worker_t *w, hub_write_req_t *r)
{
    if (w->wreq_free_n >= WREQ_KEEP) {
        free(r);
        return;
    }
    r->next_free = w->wreq_free;
    w->wreq_free = r;
    w->wreq_free_n++;
}

void hub_conn_pools_free(hub_worker_t *w)
{
    while (w->node_free) {
        hub_outq_node_t *n = w->node_free;
        w->node_free = n->next;
        free(n);
    }
    while (w->wreq_free) {
        hub_write_req_t *r = w->wreq_free;
        w->wreq_free = r->next_free;
        free(r);
    }
    w->node_free_n = w->wreq_free_n = 0;
}

static hub_conn_t *of_handle(uv_handle_t *h)
{
    return hub_container_of((uv_tcp_t *)h, hub_conn_t, tcp);
}

/* ---- outbound ---------------------------------------------------------- */

static void enqueue(hub_conn_t *c, hub_outq_node_t *n)
{
    /* per recipient of every fan-out: locals, so the atomic store below
     * does not make the compiler load c->w and n->f again */
    hub_worker_t *w = c->w;
    const hub_frame_t *f = n->f;
    n->next = NULL;
    if (c->oq_tail)
        c->oq_tail->next = n;
    else
        c->oq_head = n;
    c->oq_tail = n;
    c->oq_bytes += f->len;
    /* kind 0 (HTTP, control frames) has a slot that is never exposed */
    hub_mc_add(&w->metrics.sent[f->kind], 1);
    hub_worker_want_flush(w, c);
}

/* Drops every queued node except a partly written head (dropping it would
 * cut a frame in half on the wire). Returns how many were messages. */
static uint64_t drop_unsent(hub_conn_t *c)
{
    hub_outq_node_t *keep = NULL, *n = c->oq_head;
    uint64_t msgs = 0;
    if (n != NULL && c->oq_off > 0) {
        keep = n;
        n = n->next;
        keep->next = NULL;
    }
    while (n != NULL) {
        hub_outq_node_t *next = n->next;
        c->oq_bytes -= n->f->len;
        msgs += n->f->kind != 0;
        node_put(c->w, n);
        n = next;
    }
    c->oq_head = c->oq_tail = keep;
    return msgs;
}

void hub_conn_drop_queue(hub_conn_t *c)
{
    c->oq_off = 0;
    hub_mc_add(&c->w->metrics.dropped[HUB_DROP_CLOSED], drop_unsent(c));
}

/* f (not queued) made the queue go over its limit. */
static void slow_consumer(hub_conn_t *c, const hub_frame_t *f)
{
    hub_log_warn("slow consumer closed", "conn=%llu queued=%llu limit=%llu",
                 (unsigned long long)c->id, (unsigned long long)c->oq_bytes,
                 (unsigned long long)c->w->cfg->max_outbound_bytes);
    hub_metrics_t *m = &c->w->metrics;
    hub_mc_add(&m->dropped[HUB_DROP_QUEUE_FULL], drop_unsent(c) + (f->kind != 0));
    hub_mc_add(&m->slow_consumers, 1);
    hub_conn_close(c, 1013, "slow consumer");
}

int hub_conn_send(hub_conn_t *c, hub_frame_t *f)
{
    if (c->flags & (HUB_CONN_F_CLOSED | HUB_CONN_F_NOMORE)) {
        hub_mc_add(&c->w->metrics.dropped[HUB_DROP_CLOSED], f->kind != 0);
        return HUB_ECLOSED;
    }
    if (c->oq_bytes + f->len > c->w->cfg->max_outbound_bytes) {
        slow_consumer(c, f);
        return HUB_EFULL;
    }
    hub_outq_node_t *n = node_get(c->w);
    if (n == NULL) {
        hub_conn_abort(c);
        return HUB_ENOMEM;
    }
    n->f = hub_frame_ref(f);
    enqueue(c, n);
    return 0;
}

void hub_conn_send_raw(hub_conn_t *c, hub_frame_t *f)
{
    if (c->flags & (HUB_CONN_F_CLOSED | HUB_CONN_F_NOMORE)) {
        hub_frame_release(f);
        return;
    }
    hub_outq_node_t *n = node_get(c->w);
    if (n == NULL) {
        hub_frame_release(f);
        hub_conn_abort(c);
        return;
    }
    n->f = f;
    enqueue(c, n);
}

/* Marks len bytes of the queue head as written, releasing whole nodes. */
static void consume(hub_conn_t *c, size_t len)
{
    c->oq_bytes -= len;
    while (len > 0) {
        hub_outq_node_t *n = c->oq_head;
        size_t left = n->f->len - c->oq_off;
        if (len < left) {
            c->oq_off += (uint32_t)len;
            return;
        }
        len -= left;
        c->oq_off = 0;
        c->oq_head = n->next;
        if (c->oq_head == NULL)
            c->oq_tail = NULL;
        node_put(c->w, n);
    }
}

/* Everything queued has reached the kernel. */
static void drained(hub_conn_t *c)
{
    if (c->state == HUB_CONN_CLOSING && !(c->flags & HUB_CONN_F_SHUTDOWN)) {
        uv_os_fd_t fd;
        c->flags |= HUB_CONN_F_SHUTDOWN;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 || shutdown(fd, SHUT_WR) != 0)
            hub_conn_abort(c);
    }
}

static void on_write(uv_write_t *req, int status)
{
    hub_write_req_t *wr = hub_container_of(req, hub_write_req_t, req);
    hub_conn_t *c = of_handle((uv_handle_t *)req->handle);
    hub_worker_t *w = c->w;
    hub_outq_node_t *n = wr->nodes;
    while (n != NULL) {
        hub_outq_node_t *next = n->next;
        node_put(w, n);
        n = next;
    }
    c->oq_bytes -= wr->bytes;
    wreq_put(w, wr);
    c->flags &= (uint16_t)~HUB_CONN_F_WRITING;
    if (status < 0) {
        if (status != UV_ECANCELED)
            hub_log_debug("write failed", "conn=%llu err=%s", (unsigned long long)c->id,
                          uv_err_name(status));
        hub_conn_abort(c);
        return;
    }
    if (c->oq_head != NULL)
        hub_worker_want_flush(w, c);
    else
        drained(c);
}

void hub_conn_flush(hub_conn_t *c)
{
    uv_buf_t bufs[WRITE_IOV];
    if (c->flags & (HUB_CONN_F_CLOSED | HUB_CONN_F_WRITING))
        return;
    while (c->oq_head != NULL) {
        int nb = 0;
        size_t total = 0;
        for (hub_outq_node_t *n = c->oq_head; n != NULL && nb < WRITE_IOV; n = n->next) {
            size_t off = nb == 0 ? c->oq_off : 0;
            bufs[nb++] = hub_uv_buf(n->f->data + off, n->f->len - off);
            total += n->f->len - off;
        }
        int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, (unsigned)nb);
        if (r == UV_EAGAIN || r == UV_ENOSYS)
            r = 0;
        if (r < 0) {
            hub_log_debug("write failed", "conn=%llu err=%s", (unsigned long long)c->id,
                          uv_err_name(r));
            hub_conn_abort(c);
            return;
        }
        consume(c, (size_t)r);
        if ((size_t)r < total)
            break;
    }
    if (c->oq_head == NULL) {
        drained(c);
        return;
    }
    /* the kernel buffer is full: hand the rest to one uv_write */
    hub_write_req_t *wr = wreq_get(c->w);
    if (wr == NULL) {
        hub_conn_abort(c);
        return;
    }
    int nb = 0;
    hub_outq_node_t *n = c->oq_head, *last = NULL;
    wr->bytes = 0;
    while (n != NULL && nb < WRITE_IOV) {
        size_t off = nb == 0 ? c->oq_off : 0;
        bufs[nb++] = hub_uv_buf(n->f->data + off, n->f->len - off);
        wr->bytes += n->f->len - off;
        last = n;
        n = n->next;
    }
    wr->nodes = c->oq_head;
    last->next = NULL;
    c->oq_head = n;
    if (n == NULL)
        c->oq_tail = NULL;
    c->oq_off = 0;
    int r = uv_write(&wr->req, (uv_stream_t *)&c->tcp, bufs, (unsigned)nb, on_write);
    if (r != 0) {
        /* on_write will not run: give the nodes back ourselves */
        for (hub_outq_node_t *m = wr->nodes; m != NULL;) {
            hub_outq_node_t *next = m->next;
            node_put(c->w, m);
            m = next;
        }
        c->oq_bytes -= wr->bytes;
        wreq_put(c->w, wr);
        hub_conn_abort(c);
        return;
    }
    c->flags |= HUB_CONN_F_WRITING;
}

/* ---- closing ----------------------------------------------------------- */

void hub_conn_end(hub_conn_t *c)
{
    if (!(c->flags & HUB_CONN_F_COUNTED) || (c->flags & HUB_CONN_F_ENDED))
        return;
    c->flags |= HUB_CONN_F_ENDED;
    /* leaves its rooms (member_left), runs the disconnect hooks */
    hub_vm_on_close(c->w->vm, c);
}

static void on_close(uv_handle_t *h)
{
    hub_conn_t *c = of_handle(h);
    hub_worker_t *w = c->w;
    hub_conn_drop_queue(c);
    hub_ws_release(c);
    hub_http_free(c->http);
    if (c->flags & HUB_CONN_F_COUNTED) {
        hub_conn_end(c); /* a connection that dropped without a close */
        atomic_fetch_sub(&w->srv->ws_connections, 1);
        hub_metrics_closed(&w->metrics, c->close_code);
    }
    hub_worker_conn_gone(w, c);
    hub_identity_free(c->ident);
    free(c);
}

void hub_conn_close_now(hub_conn_t *c)
{
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

void hub_conn_abort(hub_conn_t *c)
{
    if (c->flags & HUB_CONN_F_CLOSED)
        return;
    c->flags |= HUB_CONN_F_CLOSED;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->close_next = c->w->closing;
    c->w->closing = c;
}

void hub_conn_linger(hub_conn_t *c)
{
    if (c->state == HUB_CONN_CLOSING || (c->flags & HUB_CONN_F_CLOSED))
        return;
    /* a closing WebSocket is gone for everyone else: it leaves its rooms in
     * the next prepare phase (not here: this may run inside a room walk
     * that holds the registry lock, e.g. a slow consumer cut mid-fan-out) */
    if (c->state == HUB_CONN_WS && (c->flags & HUB_CONN_F_COUNTED))
        hub_worker_defer_end(c->w, c->id);
    c->state = HUB_CONN_CLOSING;
    c->flags |= HUB_CONN_F_NOMORE;
    c->timer_ms = uv_now(&c->w->loop) + c->w->cfg->close_timeout_ms;
    hub_http_free(c->http);
    c->http = NULL;
    hub_ws_release(c);
    if (c->oq_head == NULL && !(c->flags & HUB_CONN_F_WRITING))
        drained(c);
}

void hub_conn_close(hub_conn_t *c, uint16_t code, const char *reason)
{
    if (c->flags & HUB_CONN_F_CLOSED)
        return;
    if (c->state == HUB_CONN_HTTP) {
        hub_conn_abort(c);
        return;
    }
    if (c->state == HUB_CONN_WS) {
        if (c->close_code == 0)
            c->close_code = code;
        hub_frame_t *f = hub_frame_ws_close(code, reason);
        if (f == NULL) {
            hub_conn_abort(c);
            return;
        }
        hub_conn_send_raw(c, f);
        hub_log_debug("closing", "conn=%llu code=%u reason=%s", (unsigned long long)c->id,
                      (unsigned)code, reason ? reason : "");
    }
    hub_conn_linger(c);
}

/* ---- input ------------------------------------------------------------- */

static void http_input(hub_conn_t *c, const uint8_t *p, size_t n)
{
    hub_worker_t *w = c->w;
    while (n > 0 && c->state == HUB_CONN_HTTP &&
           !(c->flags & (HUB_CONN_F_CLOSED | HUB_CONN_F_WAITING))) {
        if (c->http == NULL) {
            hub_http_limits_t lim = { w->cfg->max_request_line, w->cfg->max_header_bytes,
                                      w->cfg->max_body_bytes };
            c->http = hub_http_new(&lim);
            if (c->http == NULL) {
                hub_conn_abort(c);
                return;
            }
        }
        size_t used;
        int status;
        const char *reason;
        int r = hub_http_feed(c->http, (const char *)p, n, &used, &status, &reason);
        if (r == HUB_HTTP_NEED_MORE)
            return;
        if (r < 0) {
            const char *code = status == 414   ? "uri_too_long"
                               : status == 431 ? "headers_too_large"
                               : status == 413 ? "body_too_large"
                               : status == 500 ? "internal"
                                               : "bad_request";
            hub_routes_error(c, status, code, reason, "", 0);
            return;
        }
        p += used;
        n -= used;
        /* the next request, if any, gets a fresh header deadline */
        c->timer_ms = uv_now(&w->loop) + w->cfg->header_timeout_ms;
        hub_routes_handle(c, hub_http_request(c->http), p, n);
        if (c->state != HUB_CONN_HTTP || (c->flags & HUB_CONN_F_WAITING))
            return; /* upgraded (rest already consumed), closing, or waiting */
        hub_http_reset(c->http);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    HUB_UNUSED(suggested);
    hub_conn_t *c = of_handle(h);
    *buf = uv_buf_init(c->w->rbuf, HUB_READ_BUF);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    hub_conn_t *c = of_handle((uv_handle_t *)s);
    if (nread == 0 || (c->flags & HUB_CONN_F_CLOSED))
        return;
    if (nread < 0) {
        if (nread != UV_EOF)
            hub_log_debug("read failed", "conn=%llu err=%s", (unsigned long long)c->id,
                          uv_err_name((int)nread));
        hub_conn_abort(c);
        return;
    }
    const uint8_t *p = (const uint8_t *)buf->base;
    switch (c->state) {
    case HUB_CONN_HTTP:
        http_input(c, p, (size_t)nread);
        break;
    case HUB_CONN_WS:
        hub_ws_input(c, p, (size_t)nread);
        break;
    default:
        break; /* lingering close: input is discarded until EOF */
    }
}

void hub_conn_pause(hub_conn_t *c)
{
    c->flags |= HUB_CONN_F_WAITING;
    uv_read_stop((uv_stream_t *)&c->tcp);
}

void hub_conn_resume(hub_conn_t *c)
{
    c->flags &= (uint16_t)~HUB_CONN_F_WAITING;
    if (!(c->flags & HUB_CONN_F_CLOSED) &&
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        hub_conn_abort(c);
}

int hub_conn_accept(hub_worker_t *w, uv_stream_t *server, uint8_t scope)
{
    hub_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL || uv_tcp_init(&w->loop, &c->tcp) != 0) {
        /* the connection stays in the backlog (libuv stops watching the
         * listener until it is accepted): the worker's tick retries */
        free(c);
        uint64_t n = hub_ratelog_hit(&w->accept_oom_log, uv_now(&w->loop));
        if (n)
            hub_log_error("accept: out of memory (retried every tick)", "worker=%d failures=%llu",
                          w->index, (unsigned long long)n);
        return HUB_ENOMEM;
    }
    c->w = w;
    c->id = ((uint64_t)(w->index + 1) << 40) | ++w->conn_seq;
    c->lua_ref = -2; /* LUA_NOREF */
    c->scope = scope;
    /* from here on the handle must go through uv_close */
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    /* accepted first, so that every failure below closes the socket and
     * the listener is watched again */
    int r = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (r != 0) {
        hub_log_debug("accept failed", "err=%s", uv_err_name(r));
        hub_conn_abort(c);
        return 0;
    }
    if (hub_idmap_put(&w->byid, c->id, c) != 0) {
        hub_log_error("accept: out of memory", "worker=%d", w->index);
        hub_conn_abort(c);
        return 0;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->state = HUB_CONN_HTTP;
    c->timer_ms = uv_now(&w->loop) + w->cfg->header_timeout_ms;
    r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r != 0)
        hub_conn_abort(c);
    return 0;
}

/* ---- timers ------------------------------------------------------------ */

void hub_conn_tick(hub_conn_t *c, uint64_t now, uint64_t wall_ms)
{
    /* J11: the token's exp (+ leeway) passed and no fresh authenticate
     * replaced the identity; the tick period bounds the delay */
    if (c->ident != NULL && c->state == HUB_CONN_WS && !(c->flags & HUB_CONN_F_CLOSED) &&
        hub_identity_expired(c->ident, wall_ms)) {
        hub_log_info("token expired: closing", "conn=%llu user_id=%s",
                     (unsigned long long)c->id, c->ident->user_id);
        hub_conn_close(c, 1008, "token expired");
        return;
    }
    if ((c->flags & HUB_CONN_F_CLOSED) || now < c->timer_ms)
        return;
    switch (c->state) {
    case HUB_CONN_HTTP:
        hub_log_debug("header timeout", "conn=%llu", (unsigned long long)c->id);
        hub_routes_error(c, 408, "request_timeout", "request head not received in time", "",
                         0);
        break;
    case HUB_CONN_WS:
        if (c->flags & HUB_CONN_F_PING) {
            hub_log_debug("pong timeout", "conn=%llu", (unsigned long long)c->id);
            hub_conn_abort(c); /* a close frame cannot reach a dead peer */
            break;
        }
        if (hub_conn_send(c, c->w->ping_frame) == 0) {
            c->flags |= HUB_CONN_F_PING;
            c->timer_ms = now + c->w->cfg->pong_timeout_ms;
        }
        break;
    default:
        hub_log_debug("close timeout", "conn=%llu", (unsigned long long)c->id);
        hub_conn_abort(c);
        break;
    }
}

/* ---- identity ---------------------------------------------------------- */

_Static_assert(HUB_USER_ID_MAX > HUB_AUTH_USER_ID_MAX &&
                   HUB_USER_ID_MAX >= HUB_CLIENT_ID_MAX + 5,
               "HUB_USER_ID_MAX must hold any token user id and any anon-<client id>");

size_t hub_client_id_format(const hub_server_t *srv, uint64_t id, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s-%llx", srv->node_id, (unsigned long long)id);
    return n < 0 ? 0 : ((size_t)n >= len ? len - 1 : (size_t)n);
}

size_t hub_conn_client_id(const hub_conn_t *c, char *buf, size_t len)
{
    return hub_client_id_format(c->w->srv, c->id, buf, len);
}

size_t hub_anon_user_id(const hub_server_t *srv, uint64_t id, char *buf, size_t len)
{
    int n = snprintf(buf, len, "anon-%s-%llx", srv->node_id, (unsigned long long)id);
    return n < 0 ? 0 : ((size_t)n >= len ? len - 1 : (size_t)n);
}

size_t hub_conn_user_id(const hub_conn_t *c, char *buf, size_t len)
{
    if (c->ident == NULL)
        return hub_anon_user_id(c->w->srv, c->id, buf, len);
    int n = snprintf(buf, len, "%s", c->ident->user_id);
    return n < 0 ? 0 : ((size_t)n >= len ? len - 1 : (size_t)n);
}

int hub_conn_set_identity(hub_conn_t *c, hub_identity_t *id)
{
    int rc = hub_reg_client_set_user(c->id, id ? id->user_id : NULL);
    if (rc != 0) {
        hub_identity_free(id);
        return rc;
    }
    hub_identity_free(c->ident);
    c->ident = id;
    return 0;
}

uint64_t hub_client_id_parse(const hub_server_t *srv, const char *s, size_t len)
{
    size_t nl = srv->node_id_len ? srv->node_id_len : strlen(srv->node_id);
    if (len <= nl + 1 || len > nl + 17 || memcmp(s, srv->node_id, nl) != 0 || s[nl] != '-')
        return 0;
    uint64_t id = 0;
    for (size_t i = nl + 1; i < len; i++) {
        char ch = s[i];
        int v = ch >= '0' && ch <= '9' ? ch - '0' : (ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1);
        if (v < 0)
            return 0;
        id = id << 4 | (uint64_t)v;
    }
    return id;
}

/* ---- messages ---------------------------------------------------------- */

#define RL_WINDOW_S 10 /* limits.rate_limit_close_after counts refusals in this window */

void hub_conn_on_message(hub_conn_t *c, int opcode, const uint8_t *p, size_t n)
{
    HUB_UNUSED(opcode); /* binary was refused with 1003 at the frame header */
    hub_metrics_message_size(&c->w->metrics, n);
    const hub_config_t *cfg = c->w->cfg;
    uint64_t now_ms = uv_now(&c->w->loop);
    if (hub_likely(hub_rl_allow(&c->rl_tat_us, now_ms * 1000, cfg->messages_per_second,
                                cfg->messages_burst))) {
        hub_vm_dispatch(c->w->vm, c, p, n);
        return;
    }
    uint32_t now_s = (uint32_t)(now_ms / 1000);
    if (now_s - c->rl_window_s >= RL_WINDOW_S) {
        c->rl_window_s = now_s;
        c->rl_strikes = 0;
    }
    c->rl_strikes++;
    if (cfg->rate_limit_close_after && c->rl_strikes >= cfg->rate_limit_close_after) {
        hub_log_info("rate limit abuse: closing", "conn=%llu refused=%u",
                     (unsigned long long)c->id, c->rl_strikes);
        hub_conn_close(c, 1008, "rate limit exceeded");
        return;
    }
    hub_vm_refuse(c, p, n, 1005, "rate limited");
}
