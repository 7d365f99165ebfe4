/* server.h: process state shared by all threads: the config snapshot, node
 * identity, counters, workers, and the main thread's signal handling and
 * shutdown orchestration. Fields are written by the main thread before the
 * workers start, except the atomic counters. */
#ifndef HUB_SERVER_H
#define HUB_SERVER_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "common.h"
#include "inbox.h"

struct hub_server_s {
    hub_config_t *cfg;            /* current snapshot; replaced by a reload (main
                                     thread), workers follow via their inbox */
    const char *config_path;      /* NULL = built-in defaults + environment */
    struct hub_auth_s *auth;      /* token verifier built from cfg (auth.h); NULL =
                                     auth disabled. Owned here; a reload builds a new
                                     one, workers follow like cfg, the old one is
                                     freed once every worker moved on */
    char node_id[72];
    size_t node_id_len;           /* strlen(node_id) once set at start; 0 = not
                                     cached (client ids then measure node_id) */
    uint64_t start_ms;            /* uv_hrtime()/1e6 at start */
    uint32_t max_connections;     /* effective limit on WebSocket connections */
    atomic_long ws_connections;   /* open WebSocket connections, all workers */
    int nworkers;
    hub_worker_t *workers;
    uv_loop_t loop;               /* main thread */
    hub_inbox_t inbox;            /* workers report their end here */
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t shutdown_timer;
    uv_timer_t watchdog;          /* stops handlers past lua.time_limit_ms */
    struct hub_reload_s *reload;  /* Lua reload state (reload.c) */
    int stopping;                 /* signals received */
    int workers_done;
};

/* Runs the daemon with cfg (takes ownership), loaded from config_path
 * (NULL: none; kept for reloads), until shutdown. Returns the process exit
 * code. */
int hub_server_run(hub_config_t *cfg, const char *config_path);

/* Seconds since start. Any thread. */
uint64_t hub_server_uptime_s(const hub_server_t *s);

/* Worker thread: the worker has no connections and handles left. */
void hub_server_worker_done(hub_server_t *s, hub_worker_t *w);

#endif
