/* reload.c: two-phase Lua reload across workers, preceded by a config
 * reload when asked by SIGHUP or the API (see reload.h). The main thread
 * counts prepared workers and decides; workers swap configs and build, swap
 * or drop VMs on their own threads through their inboxes. */
#include "reload.h"

#include <string.h>

#include "auth.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "lua_vm.h"
#include "metrics.h"
#include "registry.h"
#include "routes.h"
#include "server.h"
#include "worker.h"

#define MAX_WATCH 8

/* An API caller waiting for a reload's result: allocated by its worker
 * (hub_reload_request), posted to the main thread, kept there in a
 * waitlist, and posted back with the result, so that answering allocates
 * nothing and every caller gets an answer. */
typedef struct request_s {
    hub_inbox_msg_t base;
    struct request_s *next_waiter;
    int worker;
    uint64_t conn_id;
    int ok;            /* the answer */
    char err[512];
} request_msg_t;

typedef struct {
    request_msg_t *head;
} waitlist_t;

/* worker → main: the worker's new VM is built (ok) or not (err) */
typedef struct {
    hub_inbox_msg_t base;
    int ok;
    char err[512];
} prepared_msg_t;

/* main → worker */
typedef struct {
    hub_inbox_msg_t base;
    int op;                  /* OP_CONFIG, OP_PREPARE, OP_COMMIT, OP_ABORT */
    uint32_t gen;            /* OP_PREPARE */
    const hub_config_t *cfg; /* OP_CONFIG */
    const hub_auth_t *auth;  /* OP_CONFIG: built from cfg, NULL = auth disabled */
    prepared_msg_t *reply;   /* OP_PREPARE: the worker's answer, posted back */
} worker_msg_t;

enum { OP_CONFIG, OP_PREPARE, OP_COMMIT, OP_ABORT };

/* A worker's reload messages, made once and reused by every reload, so a
 * reload allocates no message (one that could not be sent would leave a
 * worker on a freed config, or the reload waiting for ever). Each one has
 * run before it is posted again: reloads run one at a time, inboxes are
 * FIFO, and a reload's step waits for every worker's answer to the step
 * before (config and prepare are posted after the last reload's answers
 * came; end after this reload's answers, which the worker sent after
 * running the last end). */
typedef struct {
    worker_msg_t config, prepare, end; /* end: OP_COMMIT or OP_ABORT */
    prepared_msg_t prepared;
} slots_t;

struct hub_reload_s {
    uv_fs_event_t watch[MAX_WATCH];
    int nwatch;
    uv_timer_t debounce;
    int running, again;
    int want_config;      /* the next start re-reads the config file first */
    hub_config_t *retired;/* the config before the last swap: freed once every
                             worker has moved on (see finish) */
    hub_auth_t *retired_auth; /* the token verifier of that config, likewise */
    uint32_t gen;
    int prepared, failed;
    int building;         /* the workers were sent a prepare: finish sends the end */
    uint64_t started_ns;
    char err[512];
    waitlist_t cur;  /* answered by the reload in progress (or about to start) */
    waitlist_t next; /* came during it: answered by the one after */
    slots_t *slots;  /* one per worker */
};

static void worker_run(void *owner, hub_inbox_msg_t *m);

/* Posts worker i's message m (one of its slots) as op. A closed inbox
 * (the worker is stopping) drops it. */
static void post_worker(hub_server_t *s, int i, worker_msg_t *m, int op)
{
    m->base.run = worker_run;
    m->op = op;
    m->gen = s->reload->gen;
    m->cfg = s->cfg;
    m->auth = s->auth;
    hub_inbox_post(&s->workers[i].inbox, &m->base);
}

static void finish(hub_server_t *s);

/* Re-reads the config file; on success the new snapshot becomes s->cfg and
 * every worker is told to switch to it. Returns 0, or -1 with r->err set
 * (the running config stays). */
static int apply_config(hub_server_t *s)
{
    struct hub_reload_s *r = s->reload;
    char err[448], kept[512];
    hub_config_t *cfg = hub_config_reload(s->cfg, s->config_path, err, sizeof(err), kept,
                                          sizeof(kept));
    /* the new verifier (auth.* keys, the public key file read again) */
    hub_auth_t *auth = NULL;
    if (cfg != NULL && hub_auth_new(cfg, &auth, err, sizeof(err)) != 0) {
        hub_config_free(cfg);
        cfg = NULL;
    }
    if (cfg == NULL) {
        snprintf(r->err, sizeof(r->err), "config: %s", err);
        hub_log_error("config reload refused: the running config stays", "error=%s", err);
        return -1;
    }
    if (kept[0])
        hub_log_warn("config reload: these keys need a restart and keep their old values",
                     "keys=%s", kept);
    hub_log_setup(cfg->log_level, cfg->log_format);
    for (size_t i = 0; i < cfg->rooms_predefined.n; i++)
        hub_reg_room_create(cfg->rooms_predefined.items[i], NULL, cfg->rooms_default_max_clients,
                            0, NULL);
    hub_assert(r->retired == NULL); /* reloads run one at a time */
    r->retired = s->cfg;
    s->cfg = cfg;
    r->retired_auth = s->auth; /* connections keep the identities they have */
    s->auth = auth;
    for (int i = 0; i < s->nworkers; i++)
        post_worker(s, i, &r->slots[i].config, OP_CONFIG);
    hub_log_info("config reloaded", "file=%s", s->config_path ? s->config_path : "(defaults)");
    return 0;
}

static void start(hub_server_t *s)
{
    struct hub_reload_s *r = s->reload;
    r->running = 1;
    r->prepared = r->failed = 0;
    r->err[0] = '\0';
    r->started_ns = uv_hrtime();
    if (r->want_config) {
        r->want_config = 0;
        if (apply_config(s) != 0) {
            r->failed = 1;
            finish(s);
            return;
        }
    }
    r->gen++; /* the VMs being built */
    r->building = 1;
    for (int i = 0; i < s->nworkers; i++) {
        r->slots[i].prepare.reply = &r->slots[i].prepared;
        post_worker(s, i, &r->slots[i].prepare, OP_PREPARE);
    }
}

void hub_reload_all(hub_server_t *s, const char *why)
{
    if (s->reload != NULL)
        s->reload->want_config = 1;
    hub_reload_trigger(s, why);
}

void hub_reload_trigger(hub_server_t *s, const char *why)
{
    struct hub_reload_s *r = s->reload;
    if (r == NULL || s->stopping)
        return;
    hub_log_info("lua reload requested", "reason=%s", why);
    if (r->running) {
        r->again = 1;
        return;
    }
    start(s);
}

static void on_answer(void *owner, hub_inbox_msg_t *m);

/* Sends q back to its worker with the result (q goes with it). */
static void answer_waiter(hub_server_t *s, request_msg_t *q, int ok, const char *err)
{
    q->base.run = on_answer;
    q->ok = ok;
    snprintf(q->err, sizeof(q->err), "%s", err);
    if (hub_inbox_post(&s->workers[q->worker].inbox, &q->base) != 0)
        free(q); /* the worker is stopping: its connections with it */
}

static void finish(hub_server_t *s)
{
    struct hub_reload_s *r = s->reload;
    int ok = !r->failed;
    /* every worker handled OP_CONFIG before its OP_PREPARE (inboxes are
     * FIFO), or the config step failed and nothing was swapped */
    hub_config_free(r->retired);
    r->retired = NULL;
    hub_auth_free(r->retired_auth);
    r->retired_auth = NULL;
    /* a failed config step sent the workers nothing (and their end
     * slots may still be queued from the last reload) */
    for (int i = 0; r->building && i < s->nworkers; i++)
        post_worker(s, i, &r->slots[i].end, ok ? OP_COMMIT : OP_ABORT);
    r->building = 0;
    double ms = (double)(uv_hrtime() - r->started_ns) / 1e6;
    hub_metrics_reload(ok);
    if (ok)
        hub_log_info("lua reloaded", "workers=%d build_ms=%g", s->nworkers, ms);
    else
        hub_log_error("reload failed: the old code keeps serving", "error=%s", r->err);
    for (request_msg_t *q = r->cur.head, *next; q != NULL; q = next) {
        next = q->next_waiter;
        answer_waiter(s, q, ok, r->err);
    }
    r->cur.head = NULL;
    r->running = 0;
    if (r->again) {
        r->again = 0;
        waitlist_t t = r->cur;
        r->cur = r->next;
        r->next = t;
        start(s);
    }
}

static void on_prepared(void *owner, hub_inbox_msg_t *m)
{
    hub_server_t *s = owner;
    prepared_msg_t *pm = (prepared_msg_t *)m;
    struct hub_reload_s *r = s->reload;
    if (!pm->ok && !r->failed) {
        r->failed = 1;
        snprintf(r->err, sizeof(r->err), "%s", pm->err);
    }
    if (++r->prepared == s->nworkers)
        finish(s);
}

static void on_request(void *owner, hub_inbox_msg_t *m)
{
    hub_server_t *s = owner;
    request_msg_t *q = (request_msg_t *)m;
    struct hub_reload_s *r = s->reload;
    if (s->stopping) {
        answer_waiter(s, q, 0, "shutting down");
        return;
    }
    waitlist_t *l = r->running ? &r->next : &r->cur;
    q->next_waiter = l->head;
    l->head = q;
    hub_reload_all(s, "api");
}

int hub_reload_request(hub_server_t *s, int worker, uint64_t conn_id)
{
    request_msg_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return HUB_ENOMEM;
    m->base.run = on_request;
    m->worker = worker;
    m->conn_id = conn_id;
    if (hub_inbox_post(&s->inbox, &m->base) != 0) {
        free(m);
        return HUB_ECLOSED;
    }
    return 0;
}

/* ---- worker side --------------------------------------------------------- */

static void answer(hub_worker_t *w, uint64_t conn_id, int ok, const char *err)
{
    hub_conn_t *c = hub_idmap_get(&w->byid, conn_id);
    if (c == NULL || c->state != HUB_CONN_HTTP || (c->flags & HUB_CONN_F_CLOSED))
        return;
    hub_conn_resume(c);
    static const char body[] = "{\"status\":\"ok\",\"lua\":\"reloaded\"}";
    if (ok)
        hub_routes_respond(c, 200, "", "application/json", body, sizeof(body) - 1, 0, 0);
    else
        hub_routes_error(c, 422, "reload_failed", err, "", 0);
}

/* Runs on the API caller's worker (`owner`): answers it, frees q. */
static void on_answer(void *owner, hub_inbox_msg_t *m)
{
    request_msg_t *q = (request_msg_t *)m;
    answer(owner, q->conn_id, q->ok, q->err);
    free(q);
}

/* Runs on worker `owner`: build, swap or drop. m is one of the worker's
 * slots (not freed). */
static void worker_run(void *owner, hub_inbox_msg_t *m)
{
    hub_worker_t *w = owner;
    worker_msg_t *wm = (worker_msg_t *)m;
    switch (wm->op) {
    case OP_CONFIG:
        w->cfg = wm->cfg;
        w->auth = wm->auth;
        hub_vm_watch_config(w);
        break;
    case OP_PREPARE: {
        prepared_msg_t *pm = wm->reply;
        hub_vm_free(w->next_vm);
        pm->err[0] = '\0';
        w->next_vm = hub_vm_new(w, wm->gen, pm->err, sizeof(pm->err));
        pm->base.run = on_prepared;
        pm->ok = w->next_vm != NULL;
        hub_inbox_post(&w->srv->inbox, &pm->base); /* closed: stopping */
        break;
    }
    case OP_COMMIT:
        if (w->next_vm != NULL) {
            hub_vm_t *old = w->vm;
            w->vm = w->next_vm;
            w->next_vm = NULL;
            hub_vm_free(old);
        }
        break;
    case OP_ABORT:
        hub_vm_free(w->next_vm);
        w->next_vm = NULL;
        break;
    }
}

/* ---- file watch ---------------------------------------------------------- */

static void on_debounce(uv_timer_t *t)
{
    hub_server_t *s = t->data;
    hub_reload_trigger(s, "file change");
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    HUB_UNUSED(events);
    hub_server_t *s = h->data;
    if (status < 0)
        return;
    /* editors write temp files and swap files: any change restarts the
     * quiet period; only .lua files matter, but a rename may report the
     * temp name, so every event counts */
    hub_log_debug("lua file changed", "file=%s", filename ? filename : "?");
    uv_timer_start(&s->reload->debounce, on_debounce, s->cfg->lua_reload_debounce_ms, 0);
}

static void watch_dir(hub_server_t *s, const char *path)
{
    struct hub_reload_s *r = s->reload;
    if (r->nwatch >= MAX_WATCH)
        return;
    uv_fs_event_t *h = &r->watch[r->nwatch];
    uv_fs_event_init(&s->loop, h);
    h->data = s;
    if (uv_fs_event_start(h, on_fs_event, path, 0) == 0) {
        r->nwatch++;
    } else {
        uv_close((uv_handle_t *)h, NULL);
    }
}

int hub_reload_init(hub_server_t *s)
{
    struct hub_reload_s *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return HUB_ENOMEM;
    r->slots = calloc((size_t)s->nworkers, sizeof(*r->slots));
    if (r->slots == NULL) {
        free(r);
        return HUB_ENOMEM;
    }
    s->reload = r;
    r->gen = 1; /* the boot VMs are generation 1; a reload makes gen + 1 */
    uv_timer_init(&s->loop, &r->debounce);
    r->debounce.data = s;
    if (!s->cfg->lua_watch)
        return 0;
    const char *subdirs[] = { "", "/handlers", "/lib" };
    for (size_t i = 0; i < HUB_ARRAY_LEN(subdirs); i++) {
        char path[1100];
        snprintf(path, sizeof(path), "%s%s", s->cfg->lua_path, subdirs[i]);
        watch_dir(s, path);
    }
    return 0;
}

void hub_reload_free(hub_server_t *s)
{
    if (s->reload != NULL) {
        hub_config_free(s->reload->retired);
        hub_auth_free(s->reload->retired_auth);
        free(s->reload->slots);
    }
    free(s->reload);
    s->reload = NULL;
}

void hub_reload_close(hub_server_t *s)
{
    struct hub_reload_s *r = s->reload;
    if (r == NULL)
        return;
    for (int i = 0; i < r->nwatch; i++)
        uv_close((uv_handle_t *)&r->watch[i], NULL);
    /* the workers are stopping: their callers' connections go with them */
    waitlist_t *lists[] = { &r->cur, &r->next };
    for (size_t i = 0; i < HUB_ARRAY_LEN(lists); i++) {
        for (request_msg_t *q = lists[i]->head, *next; q != NULL; q = next) {
            next = q->next_waiter;
            free(q);
        }
        lists[i]->head = NULL;
    }
    uv_close((uv_handle_t *)&r->debounce, NULL);
}
