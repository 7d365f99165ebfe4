/* worker.c: a worker thread's loop: accept on its own SO_REUSEPORT socket,
 * flush output and run deferred closes in the prepare phase, drive timers
 * from one periodic tick, and stop on request. Worker thread, except
 * hub_worker_init/start/join (main thread) and hub_worker_stop (any). */
#include "worker.h"

#include <string.h>

#include "config.h"
#include "conn.h"
#include "frame.h"
#include "log.h"
#include "lua_vm.h"
#include "msg.h"
#include "server.h"

/* Runs the flush list, then the deferred closes. libuv runs prepare
 * callbacks once per loop turn, right before it polls for I/O. */
void hub_worker_defer_end(hub_worker_t *w, uint64_t id)
{
    if (w->nending == w->ending_cap) {
        size_t cap = w->ending_cap ? w->ending_cap * 2 : 64;
        uint64_t *n = realloc(w->ending, cap * sizeof(*n));
        if (n == NULL)
            return; /* on_close still ends it, later */
        w->ending = n;
        w->ending_cap = cap;
    }
    w->ending[w->nending++] = id;
}

/* Ends closing WebSockets; what that triggers (hooks, presence, cut slow
 * consumers) may defer more, so loop until the list stays empty. */
static void run_ending(hub_worker_t *w)
{
    while (w->nending > 0) {
        uint64_t id = w->ending[--w->nending];
        hub_conn_t *c = hub_idmap_get(&w->byid, id);
        if (c != NULL)
            hub_conn_end(c);
    }
}

static void on_prepare(uv_prepare_t *p)
{
    hub_worker_t *w = p->data;
    run_ending(w);
    while (w->pending != NULL) {
        hub_conn_t *c = w->pending;
        w->pending = c->pend_next;
        c->pend_next = NULL;
        c->flags &= (uint16_t)~HUB_CONN_F_PENDING;
        hub_conn_flush(c);
    }
    while (w->closing != NULL) {
        hub_conn_t *c = w->closing;
        w->closing = c->close_next;
        hub_conn_close_now(c);
    }
}

void hub_worker_want_flush(hub_worker_t *w, hub_conn_t *c)
{
    if (c->flags & (HUB_CONN_F_PENDING | HUB_CONN_F_CLOSED))
        return;
    c->flags |= HUB_CONN_F_PENDING;
    c->pend_next = w->pending;
    w->pending = c;
}

static void close_handles(hub_worker_t *w);

static void maybe_finish(hub_worker_t *w)
{
    if (w->stopping && w->nconns == 0 && !w->handles_closed)
        close_handles(w);
}

hub_conn_t *hub_worker_conn(hub_worker_t *w, uint64_t id)
{
    hub_conn_t *c = hub_idmap_get(&w->byid, id);
    if (c == NULL || c->state != HUB_CONN_WS || (c->flags & HUB_CONN_F_CLOSED))
        return NULL;
    return c;
}

void hub_worker_conn_gone(hub_worker_t *w, hub_conn_t *c)
{
    hub_idmap_del(&w->byid, c->id);
    if (w->tick_at == c)
        w->tick_at = c->next;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    maybe_finish(w);
}

void hub_worker_sample_metrics(hub_worker_t *w)
{
    uint64_t queued = 0;
    for (hub_conn_t *c = w->conns; c != NULL; c = c->next)
        queued += c->oq_bytes;
    hub_mc_set(&w->metrics.queue_bytes, queued);
}

/* Each tick visits the next slice of the connections, so that a round
 * visits every one once per round_ms; the deadlines that fall due together
 * (pings, above all) are then met a slice at a time, not in one stall. A
 * tick never frees a connection (closes finish in the prepare phase), and
 * one that goes away moves the cursor on (hub_worker_conn_gone). */
/* Accepts l's pending connection; when that fails (memory), the connection
 * stays pending and on_tick tries again (libuv watches l again only once
 * it is accepted). */
static void accept_on(hub_listener_t *l)
{
    l->retry = hub_conn_accept(l->w, (uv_stream_t *)&l->tcp, l->scope) != 0;
}

static void on_tick(uv_timer_t *t)
{
    hub_worker_t *w = t->data;
    uint64_t now = uv_now(&w->loop), wall_ms = hub_now_ms();
    uint64_t slice = (w->nconns * w->tick_ms + w->round_ms - 1) / w->round_ms;
    if (w->tick_at == NULL) {
        w->tick_at = w->conns;
        w->tick_queued = 0;
    }
    for (uint64_t i = 0; i < slice && w->tick_at != NULL; i++) {
        hub_conn_t *c = w->tick_at;
        w->tick_at = c->next;
        w->tick_queued += c->oq_bytes; /* hub_worker_sample_metrics, in the same walk */
        hub_conn_tick(c, now, wall_ms);
    }
    if (w->tick_at == NULL)
        hub_mc_set(&w->metrics.queue_bytes, w->tick_queued);
    for (int i = 0; i < w->nlisteners && !w->stopping; i++)
        if (w->listeners[i].retry)
            accept_on(&w->listeners[i]);
}

static void on_connection(uv_stream_t *server, int status)
{
    hub_listener_t *l = server->data;
    hub_worker_t *w = l->w;
    if (status < 0) {
        hub_log_warn("accept error", "worker=%d err=%s", w->index, uv_err_name(status));
        return;
    }
    if (w->stopping)
        return;
    accept_on(l);
}

static void on_stop(void *owner, hub_inbox_msg_t *m)
{
    hub_worker_t *w = owner;
    int force = m == &w->stop_msg[1];
    if (!w->stopping) {
        w->stopping = 1;
        for (int i = 0; i < w->nlisteners; i++)
            uv_close((uv_handle_t *)&w->listeners[i].tcp, NULL);
    }
    for (hub_conn_t *c = w->conns; c != NULL; c = c->next) {
        if (force)
            hub_conn_abort(c);
        else
            hub_conn_close(c, 1001, "server shutting down");
    }
    maybe_finish(w);
}

static void close_handles(hub_worker_t *w)
{
    w->handles_closed = 1;
    uv_close((uv_handle_t *)&w->prepare, NULL);
    uv_close((uv_handle_t *)&w->tick, NULL);
    hub_inbox_close(&w->inbox, NULL);
}

static void worker_main(void *arg)
{
    hub_worker_t *w = arg;
    hub_metrics_bind(&w->metrics); /* code without w at hand counts here */
    uv_run(&w->loop, UV_RUN_DEFAULT);
    hub_server_worker_done(w->srv, w);
}

int hub_worker_init(hub_worker_t *w, hub_server_t *srv, int index, const int *fds,
                    const uint8_t *scopes, int n)
{
    const hub_config_t *cfg = srv->cfg;
    memset(w, 0, sizeof(*w));
    w->index = index;
    w->srv = srv;
    w->cfg = cfg;
    w->auth = srv->auth;
    int r = uv_loop_init(&w->loop);
    if (r != 0)
        return r;
    hub_idmap_init(&w->byid);
    hub_strmap_init(&w->counters);
    w->rbuf = malloc(HUB_READ_BUF);
    w->ws_pool = hub_ws_pool_new(cfg->max_message_bytes);
    w->ping_frame = hub_frame_ws(HUB_WS_OP_PING, NULL, 0);
    if (w->rbuf == NULL || w->ws_pool == NULL || w->ping_frame == NULL)
        return HUB_ENOMEM;
    if ((r = hub_inbox_init(&w->inbox, &w->loop, w)) != 0)
        return r;
    if ((r = uv_mutex_init(&w->lua_mu)) != 0)
        return r;
    hub_vm_watch_config(w);
    char err[512];
    w->vm = hub_vm_new(w, 1, err, sizeof(err));
    if (w->vm == NULL) {
        hub_log_error("cannot load the Lua code", "worker=%d error=%s", index, err);
        return HUB_ECONFIG;
    }
    uv_prepare_init(&w->loop, &w->prepare);
    w->prepare.data = w;
    uv_prepare_start(&w->prepare, on_prepare);

    /* one walk drives every per-connection deadline: a round visits each
     * connection once per a quarter of the shortest timeout (25 ms to 1 s),
     * a slice per tick of at most 100 ms. Whole walks once a second sent
     * ~800 pings (and took ~800 pongs) at once with 10,000 connections: a
     * ~10 ms stall in every second's delivery latency. */
    uint64_t shortest = cfg->header_timeout_ms;
    if (cfg->ping_interval_ms < shortest)
        shortest = cfg->ping_interval_ms;
    if (cfg->pong_timeout_ms < shortest)
        shortest = cfg->pong_timeout_ms;
    if (cfg->close_timeout_ms < shortest)
        shortest = cfg->close_timeout_ms;
    uint64_t period = shortest / 4;
    w->round_ms = period < 25 ? 25 : (period > 1000 ? 1000 : period);
    w->tick_ms = w->round_ms < 100 ? w->round_ms : 100;
    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    uv_timer_start(&w->tick, on_tick, w->tick_ms, w->tick_ms);

    hub_assert(n >= 1 && n <= HUB_MAX_LISTENERS);
    for (int i = 0; i < n; i++) {
        hub_listener_t *l = &w->listeners[i];
        l->w = w;
        l->fd = fds[i];
        l->scope = scopes[i];
        uv_tcp_init(&w->loop, &l->tcp);
        l->tcp.data = l;
        w->nlisteners++;
        if ((r = uv_tcp_open(&l->tcp, fds[i])) != 0)
            return r;
        if ((r = uv_listen((uv_stream_t *)&l->tcp, HUB_LISTEN_BACKLOG, on_connection)) != 0)
            return r;
    }
    return 0;
}

int hub_worker_start(hub_worker_t *w)
{
    return uv_thread_create(&w->thread, worker_main, w);
}

void hub_worker_stop(hub_worker_t *w, int force)
{
    hub_inbox_msg_t *m = &w->stop_msg[force ? 1 : 0];
    m->run = on_stop;
    hub_inbox_post(&w->inbox, m); /* refused once the worker has stopped: nothing to do */
}

void hub_worker_join(hub_worker_t *w)
{
    uv_thread_join(&w->thread);
    hub_worker_destroy(w);
}

void hub_worker_destroy(hub_worker_t *w)
{
    int r = uv_loop_close(&w->loop);
    if (r != 0)
        hub_log_error("worker loop did not close cleanly", "worker=%d err=%s", w->index,
                      uv_err_name(r));
    hub_inbox_destroy(&w->inbox);
    hub_vm_free(w->vm);
    hub_vm_free(w->next_vm);
    w->vm = w->next_vm = NULL;
    uv_mutex_destroy(&w->lua_mu);
    hub_ws_pool_free(w->ws_pool);
    hub_idmap_free(&w->byid);
    free(w->ending);
    hub_strmap_free_values(&w->counters);
    hub_conn_pools_free(w);
    hub_frame_release(w->ping_frame);
    free(w->rbuf);
}
