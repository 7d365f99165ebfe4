/* server.c: process start-up (fd limit, node id, listening sockets, workers)
 * and the main thread's loop: signals and shutdown orchestration. Main
 * thread, except hub_server_worker_done (worker threads) and
 * hub_server_uptime_s (any). */
#include "server.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "cluster.h"
#include "cluster_ops.h"
#include "config.h"
#include "log.h"
#include "lua_vm.h"
#include "registry.h"
#include "reload.h"
#include "worker.h"

#define FD_RESERVE 64 /* fds kept for listeners, logs, and later the bus */

uint64_t hub_server_uptime_s(const hub_server_t *s)
{
    return (uv_hrtime() / 1000000 - s->start_ms) / 1000;
}

static void on_worker_done(void *owner, hub_inbox_msg_t *m)
{
    hub_server_t *s = owner;
    HUB_UNUSED(m); /* a worker's done_msg */
    if (++s->workers_done < s->nworkers)
        return;
    uv_close((uv_handle_t *)&s->sig_term, NULL);
    uv_close((uv_handle_t *)&s->sig_int, NULL);
    uv_close((uv_handle_t *)&s->sig_hup, NULL);
    uv_close((uv_handle_t *)&s->shutdown_timer, NULL);
    uv_close((uv_handle_t *)&s->watchdog, NULL);
    hub_reload_close(s);
    hub_inbox_close(&s->inbox, NULL);
}

void hub_server_worker_done(hub_server_t *s, hub_worker_t *w)
{
    w->done_msg.run = on_worker_done;
    hub_inbox_post(&s->inbox, &w->done_msg); /* once per worker */
}

static void on_watchdog(uv_timer_t *t)
{
    hub_server_t *s = t->data;
    for (int i = 0; i < s->nworkers; i++)
        hub_vm_watchdog(&s->workers[i]);
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    hub_server_t *s = t->data;
    hub_log_warn("shutdown timeout: closing the remaining connections", "timeout_ms=%u",
                 s->cfg->shutdown_timeout_ms);
    for (int i = 0; i < s->nworkers; i++)
        hub_worker_stop(&s->workers[i], 1);
}

static void on_signal(uv_signal_t *h, int signum)
{
    hub_server_t *s = h->data;
    if (signum == SIGHUP) {
        hub_reload_all(s, "SIGHUP");
        return;
    }
    if (s->stopping++) {
        hub_log_warn("second signal: exiting now", "signal=%d", signum);
        _exit(1);
    }
    hub_log_info("shutting down", "signal=%d connections=%ld timeout_ms=%u", signum,
                 atomic_load(&s->ws_connections), s->cfg->shutdown_timeout_ms);
    for (int i = 0; i < s->nworkers; i++)
        hub_worker_stop(&s->workers[i], 0);
    uv_timer_start(&s->shutdown_timer, on_shutdown_timeout, s->cfg->shutdown_timeout_ms, 0);
}

/* Raises the soft fd limit to the hard one and derives the connection limit. */
static void apply_fd_limit(hub_server_t *s)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        s->max_connections = s->cfg->max_connections ? s->cfg->max_connections : 1000;
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t old = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            rl.rlim_cur = old;
    }
    uint64_t fit = rl.rlim_cur > FD_RESERVE ? rl.rlim_cur - FD_RESERVE : 1;
    uint32_t want = s->cfg->max_connections;
    if (want == 0) {
        s->max_connections = fit > 10000000 ? 10000000 : (uint32_t)fit;
    } else {
        s->max_connections = want;
        if (want > fit)
            hub_log_warn("limits.max_connections exceeds what the fd limit allows",
                         "max_connections=%u fd_limit=%llu usable=%llu", want,
                         (unsigned long long)rl.rlim_cur, (unsigned long long)fit);
    }
}

static void make_node_id(hub_server_t *s)
{
    const char *id = s->cfg->cluster_node_id[0] ? s->cfg->cluster_node_id
                                                 : s->cfg->server_node_id;
    if (id[0]) {
        snprintf(s->node_id, sizeof(s->node_id), "%s", id);
    } else {
        unsigned char rnd[4] = { 0 };
        if (uv_random(NULL, NULL, rnd, sizeof(rnd), 0, NULL) != 0) {
            uint64_t t = uv_hrtime() ^ (uint64_t)getpid();
            memcpy(rnd, &t, sizeof(rnd));
        }
        snprintf(s->node_id, sizeof(s->node_id), "gohub-%02x%02x%02x%02x", rnd[0], rnd[1],
                 rnd[2], rnd[3]);
    }
    s->node_id_len = strlen(s->node_id); /* client ids are parsed twice per room message */
}

typedef struct {
    const char *key; /* config key of the address */
    char host[256];
    int port;
    uint8_t scope;   /* HUB_SCOPE_* */
} lsn_t;

/* Adds the address of key (a non-empty http.addr / metrics.addr) serving
 * scope: merged into an existing listener on the same fixed host:port, else
 * a new one; server.addr (lsn[0]) then stops serving scope. Returns the new
 * count or -1. */
static int plan_extra(lsn_t *lsn, int n, const char *key, const char *addr, uint8_t scope)
{
    lsn_t l = { key, "", 0, scope };
    if (hub_config_parse_addr(addr, l.host, sizeof(l.host), &l.port) != 0) {
        hub_log_error("bad listen address", "key=%s addr=%s", key, addr);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (l.port != 0 && lsn[i].port == l.port && strcmp(lsn[i].host, l.host) == 0) {
            lsn[i].scope |= scope;
            return n;
        }
    }
    lsn[0].scope &= (uint8_t)~scope;
    lsn[n] = l;
    return n + 1;
}

/* The listening addresses and what each serves. Returns their count (at
 * least 1: server.addr first) or -1 after logging. */
static int plan_listeners(const hub_config_t *cfg, lsn_t *lsn)
{
    lsn[0] = (lsn_t){ "server.addr", "", 0,
                      HUB_SCOPE_WS | HUB_SCOPE_API | HUB_SCOPE_METRICS };
    if (hub_config_parse_addr(cfg->server_addr, lsn[0].host, sizeof(lsn[0].host),
                              &lsn[0].port) != 0) {
        hub_log_error("bad listen address", "key=server.addr addr=%s", cfg->server_addr);
        return -1;
    }
    int n = 1;
    if (!cfg->metrics_enabled)
        lsn[0].scope &= (uint8_t)~HUB_SCOPE_METRICS;
    if (cfg->http_addr[0])
        n = plan_extra(lsn, n, "http.addr", cfg->http_addr, HUB_SCOPE_API);
    if (n > 0 && cfg->metrics_enabled && cfg->metrics_addr[0])
        n = plan_extra(lsn, n, "metrics.addr", cfg->metrics_addr, HUB_SCOPE_METRICS);
    return n;
}

/* SO_REUSEPORT lets any socket of the same user join a port, so a second
 * gohub on a port in use (or metrics.addr 0.0.0.0:P beside server.addr
 * 127.0.0.1:P) would bind without error and silently take a share of the
 * connections. Before the first socket of a fixed port is bound, a plain
 * socket (SO_REUSEADDR only, as a restart needs) must be able to bind it:
 * that fails with EADDRINUSE against any listening socket on it, including
 * this process's own, which listen as soon as they are bound. Returns 0 when
 * the address is free. */
static int probe_free(const struct sockaddr *sa, socklen_t len, char *err, size_t errlen)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int r = bind(fd, sa, len);
    int e = errno;
    close(fd);
    if (r != 0) {
        snprintf(err, errlen, "%s", e == EADDRINUSE ? "already in use (by another process, "
                 "or by another of this configuration's addresses)" : strerror(e));
        return -1;
    }
    return 0;
}

/* Creates one bound, listening SO_REUSEPORT socket. first: the first socket
 * of this address, checked with probe_free. *port 0 lets the kernel choose,
 * and the chosen port is written back so the next workers bind the same one. */
static int listen_socket(const char *host, int *port, int first, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    int fam = strchr(host, ':') ? AF_INET6 : AF_INET;
    int r = fam == AF_INET6 ? uv_ip6_addr(host, *port, (struct sockaddr_in6 *)&ss)
                            : uv_ip4_addr(host, *port, (struct sockaddr_in *)&ss);
    if (r != 0) {
        snprintf(err, errlen, "bad host '%s'", host);
        return -1;
    }
    socklen_t len = fam == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (first && *port != 0 && probe_free((struct sockaddr *)&ss, len, err, errlen) != 0)
        return -1;
    int fd = socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        snprintf(err, errlen, "SO_REUSEPORT: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, HUB_LISTEN_BACKLOG) != 0) {
        snprintf(err, errlen, "bind %s:%d: %s", host, *port, strerror(errno));
        close(fd);
        return -1;
    }
    if (*port == 0) {
        len = sizeof(ss);
        getsockname(fd, (struct sockaddr *)&ss, &len);
        *port = ntohs(fam == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                      : ((struct sockaddr_in *)&ss)->sin_port);
    }
    return fd;
}

int hub_server_run(hub_config_t *cfg, const char *config_path)
{
    hub_server_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        hub_config_free(cfg);
        return 1;
    }
    int code = 1, started = 0, reg_ready = 0;
    s->cfg = cfg;
    s->config_path = config_path;
    s->start_ms = uv_hrtime() / 1000000;
    atomic_init(&s->ws_connections, 0);
    signal(SIGPIPE, SIG_IGN);
    make_node_id(s);
    apply_fd_limit(s);
    s->nworkers = cfg->server_workers ? cfg->server_workers : (int)uv_available_parallelism();
    if (s->nworkers < 1)
        s->nworkers = 1;

    char err[640];
    lsn_t lsn[HUB_MAX_LISTENERS];
    int nlsn = plan_listeners(cfg, lsn);
    if (nlsn < 0)
        goto out;
    if (hub_vm_check_runtime(err, sizeof(err)) != 0) {
        hub_log_error("unsupported LuaJIT", "reason=%s", err);
        goto out;
    }
    if (hub_auth_new(cfg, &s->auth, err, sizeof(err)) != 0) {
        hub_log_error("cannot start: bad auth configuration", "reason=%s", err);
        goto out;
    }
    if (hub_reg_init(s->nworkers) != 0)
        goto out;
    reg_ready = 1;
    for (size_t i = 0; i < cfg->rooms_predefined.n; i++)
        hub_reg_room_create(cfg->rooms_predefined.items[i], NULL,
                            cfg->rooms_default_max_clients, 0, NULL);
    s->workers = calloc((size_t)s->nworkers, sizeof(hub_worker_t));
    int *fds = calloc((size_t)s->nworkers * HUB_MAX_LISTENERS, sizeof(int));
    uint8_t scopes[HUB_MAX_LISTENERS];
    if (s->workers == NULL || fds == NULL) {
        free(fds);
        goto out;
    }
    for (int i = 0; i < s->nworkers * nlsn; i++) {
        lsn_t *l = &lsn[i % nlsn];
        scopes[i % nlsn] = l->scope;
        fds[i] = listen_socket(l->host, &l->port, i < nlsn, err, sizeof(err));
        if (fds[i] < 0) {
            int v6 = strchr(l->host, ':') != NULL;
            hub_log_error("cannot listen", "key=%s addr=%s%s%s:%d reason=%s", l->key,
                          v6 ? "[" : "", l->host, v6 ? "]" : "", l->port, err);
            for (int j = 0; j < i; j++)
                close(fds[j]);
            free(fds);
            goto out;
        }
    }

    uv_loop_init(&s->loop);
    hub_inbox_init(&s->inbox, &s->loop, s);
    uv_signal_init(&s->loop, &s->sig_term);
    uv_signal_init(&s->loop, &s->sig_int);
    uv_signal_init(&s->loop, &s->sig_hup);
    s->sig_term.data = s->sig_int.data = s->sig_hup.data = s;
    uv_signal_start(&s->sig_term, on_signal, SIGTERM);
    uv_signal_start(&s->sig_int, on_signal, SIGINT);
    uv_signal_start(&s->sig_hup, on_signal, SIGHUP);
    uv_timer_init(&s->loop, &s->shutdown_timer);
    s->shutdown_timer.data = s;
    /* a handler is stopped within time_limit + one watchdog period */
    uint64_t wd = (uint64_t)cfg->lua_time_limit_ms / 4;
    wd = wd < 5 ? 5 : (wd > 50 ? 50 : wd);
    uv_timer_init(&s->loop, &s->watchdog);
    s->watchdog.data = s;

    for (int i = 0; i < s->nworkers; i++) {
        int r = hub_worker_init(&s->workers[i], s, i, fds + i * nlsn, scopes, nlsn);
        if (r != 0) {
            hub_log_error("worker init failed", "worker=%d err=%s", i, hub_strerror(r));
            /* sockets not yet handed over are closed with the process */
            free(fds);
            _exit(1);
        }
    }
    free(fds);
    /* the bus thread delivers into the workers' inboxes, which exist now */
    hub_ops_init(s);
    if (hub_cluster_start(s) != 0)
        _exit(1);
    for (int i = 0; i < s->nworkers; i++) {
        if (hub_worker_start(&s->workers[i]) != 0) {
            hub_log_error("cannot start worker thread", "worker=%d", i);
            _exit(1);
        }
        started++;
    }
    uv_timer_start(&s->watchdog, on_watchdog, wd, wd);
    if (hub_reload_init(s) != 0)
        hub_log_warn("lua file watch unavailable", "path=%s", cfg->lua_path);
    hub_log_info("listening", "addr=%s port=%d workers=%d node_id=%s max_connections=%u "
                              "version=%s",
                 lsn[0].host, lsn[0].port, s->nworkers, s->node_id, s->max_connections,
                 GOHUB_VERSION);
    for (int i = 1; i < nlsn; i++)
        hub_log_info("listening", "key=%s addr=%s port=%d serves=%s%s", lsn[i].key, lsn[i].host,
                     lsn[i].port, lsn[i].scope & HUB_SCOPE_API ? "/api/* /health " : "",
                     lsn[i].scope & HUB_SCOPE_METRICS ? "/metrics" : "");

    uv_run(&s->loop, UV_RUN_DEFAULT);
    /* every worker loop has ended (inboxes closed, nothing left to publish):
     * the bus goes before the workers' inboxes are destroyed */
    hub_cluster_stop();
    for (int i = 0; i < started; i++)
        hub_worker_join(&s->workers[i]);
    uv_run(&s->loop, UV_RUN_NOWAIT); /* let the closed handles finish */
    if (uv_loop_close(&s->loop) != 0)
        hub_log_warn("main loop did not close cleanly", "");
    hub_inbox_destroy(&s->inbox);
    hub_reload_free(s);
    hub_log_info("stopped", "");
    code = 0;
out:
    if (reg_ready)
        hub_reg_free();
    free(s->workers);
    hub_auth_free(s->auth);
    hub_config_free(s->cfg);
    free(s);
    return code;
}
