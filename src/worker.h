/* worker.h: a worker thread: its own uv loop, SO_REUSEPORT listener,
 * connections, wslay pool, outbound-queue pools and inbox. Nothing of a
 * worker is touched by another thread except its inbox. */
#ifndef HUB_WORKER_H
#define HUB_WORKER_H

#include <stdint.h>
#include <uv.h>

#include "common.h"
#include "hmap.h"
#include "inbox.h"
#include "log.h"
#include "metrics.h"
#include "ws.h"

#define HUB_READ_BUF 65536

/* What a listening address serves (hub_conn_t.scope): server.addr serves
 * everything that http.addr / metrics.addr did not take away. */
#define HUB_SCOPE_WS      0x01 /* WebSocket endpoints and /health */
#define HUB_SCOPE_API     0x02 /* the HTTP API (/api/...) and /health */
#define HUB_SCOPE_METRICS 0x04 /* /metrics */
#define HUB_MAX_LISTENERS 3

typedef struct {
    uv_tcp_t tcp;
    hub_worker_t *w;
    int fd;
    uint8_t scope;
    uint8_t retry; /* a connection waits: accepting it failed (memory); on_tick retries */
} hub_listener_t;

typedef struct hub_write_req_s hub_write_req_t;

struct hub_worker_s {
    int index;
    hub_server_t *srv;
    const hub_config_t *cfg;
    const struct hub_auth_s *auth; /* the server's verifier (NULL = auth disabled);
                                    swapped together with cfg */
    uv_loop_t loop;
    uv_thread_t thread;
    hub_listener_t listeners[HUB_MAX_LISTENERS];
    int nlisteners;
    hub_ratelog_t accept_oom_log; /* accepts that failed for memory (retried each tick) */
    hub_inbox_t inbox;
    /* shutdown messages, posted at most once each and never allocated (a
     * shutdown must work when memory is short): to the worker, [0] close
     * gracefully and [1] now; to the server, that the worker is done */
    hub_inbox_msg_t stop_msg[2];
    hub_inbox_msg_t done_msg;
    uv_prepare_t prepare;
    uv_timer_t tick;
    uint64_t tick_ms, round_ms;  /* on_tick's period; the time one round of the walk takes */
    hub_conn_t *tick_at;         /* the walk's next connection; NULL: a round starts */
    uint64_t tick_queued;        /* outbound bytes summed so far in this round */
    char *rbuf;                  /* shared read buffer: data is consumed or copied in on_read */
    hub_conn_t *conns;           /* every connection (doubly linked) */
    hub_idmap_t byid;            /* connection id → connection */
    hub_strmap_t counters;       /* gohub.count: name → (int64_t *) */
    hub_conn_t *pending;         /* connections with output to flush */
    hub_conn_t *closing;         /* connections to uv_close */
    uint64_t *ending;            /* ids of closing WebSockets to end (hub_conn_end) */
    size_t nending, ending_cap;
    uint64_t nconns;             /* connections still allocated */
    uint64_t conn_seq;
    hub_ws_pool_t *ws_pool;
    hub_outq_node_t *node_free;  /* free outbound queue nodes */
    size_t node_free_n;
    hub_write_req_t *wreq_free;  /* free write requests */
    size_t wreq_free_n;
    hub_frame_t *ping_frame;     /* shared, immortal while the worker runs */
    struct hub_vm_s *vm;         /* the Lua state handling this worker's messages */
    struct hub_vm_s *next_vm;    /* built by a reload, waiting for the commit */
    uv_mutex_t lua_mu;           /* guards the five fields below (watchdog) */
    void *lua_active;            /* the lua_State inside a handler call, or NULL */
    uint64_t lua_enter_ns;
    uint64_t lua_limit_ns;       /* lua.time_limit_ms of w->cfg (hub_vm_watch_config):
                                    the watchdog runs on main and must not read
                                    w->cfg, which a reload swaps on the worker */
    int lua_jit;                 /* lua.jit, for the watchdog's log line */
    int lua_hooked;              /* the watchdog armed the interrupt hook */
    uint32_t wait_tickets;       /* numbers the waits of parked handlers (lua_vm.c) */
    int stopping;                /* no new connections; exit when none is left */
    int handles_closed;
    hub_metrics_t metrics;       /* written by this worker only; read by scrapes */
};

#define HUB_LISTEN_BACKLOG 4096

/* Prepares w (main thread, before start). fds[0..n) are bound, listening
 * SO_REUSEPORT sockets that w takes over, serving scopes[i] (HUB_SCOPE_*).
 * Returns 0 or HUB_E*. */
int hub_worker_init(hub_worker_t *w, hub_server_t *srv, int index, const int *fds,
                    const uint8_t *scopes, int n);

/* Starts the thread. Returns 0 or a UV error. */
int hub_worker_start(hub_worker_t *w);

/* Any thread: asks w to stop accepting and close every connection with 1001
 * (force: hard-close them now). */
void hub_worker_stop(hub_worker_t *w, int force);

/* Main thread: waits for the thread to end and frees what w holds. */
void hub_worker_join(hub_worker_t *w);

/* Frees what w holds once its loop has ended (join calls it; tests that
 * run a worker's loop on their own thread call it directly). */
void hub_worker_destroy(hub_worker_t *w);

/* Worker thread: the open WebSocket connection with this id, or NULL. */
hub_conn_t *hub_worker_conn(hub_worker_t *w, uint64_t id);

/* Worker thread: hub_conn_end(id) in the next prepare phase. */
void hub_worker_defer_end(hub_worker_t *w, uint64_t id);

/* Worker thread: puts c on the flush list. */
void hub_worker_want_flush(hub_worker_t *w, hub_conn_t *c);

/* Worker thread: samples the gauges that are not kept up to date per
 * event (gohub_outbound_queue_bytes: the sum of the connections' oq_bytes).
 * The periodic tick calls it, so a scrape sees values at most one tick
 * (<= 1 s) old, and the send path pays nothing for them. */
void hub_worker_sample_metrics(hub_worker_t *w);

/* Worker thread: called from a connection's close callback. */
void hub_worker_conn_gone(hub_worker_t *w, hub_conn_t *c);

#endif
