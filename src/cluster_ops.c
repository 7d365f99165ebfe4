/* cluster_ops.c: see cluster_ops.h.
 *
 * Payloads are fields "<decimal length>:<bytes>" (hub_cluster_field_put /
 * _get), so any byte may appear.
 *   query (HUB_CL_QUERY, to node.<id>): qid, round (1 count, 2 slice),
 *     offset, limit
 *   reply (HUB_CL_REPLY, to the asker): qid, round, count (the node's
 *     clients), at (index in the asked slice of this message's first
 *     record), last (1 on the answer's final message), then records:
 *     client id, user id, connected_at (ms), room count, that many room ids
 * A slice's answer is cut into messages of at most OPS_PART_MAX bytes of
 * records; a client in more rooms than fit in one gets its list cut there.
 *
 * Threads: the asking side (query_t, the timer) lives on the bus thread;
 * a slice is built on a worker (hub_reg_client_list sorts every client),
 * which sends it from there (this node's own slice is posted to the bus
 * thread instead); the answer goes back to the asking worker's inbox. */
#include "cluster_ops.h"

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "conn.h"
#include "fanout.h"
#include "http.h"
#include "inbox.h"
#include "log.h"
#include "msg.h"
#include "registry.h"
#include "server.h"
#include "worker.h"

#define OPS_PART_MAX    (192 * 1024)  /* record bytes in one reply (NATS takes 1 MiB) */
#define OPS_HEAD_MAX    128           /* a reply's five number fields */
#define OPS_SLICE_MAX   1000          /* clients one node lists for one query */
#define OPS_QUERY_BYTES (32u << 20)   /* reply bytes one query keeps, all nodes */
#define OPS_JOBS_MAX    64            /* slices for other nodes queued or being built */
#define OPS_NODES_MAX   1024          /* nodes one query asks (cluster.c keeps as many) */
#define OPS_ROOMS_MAX   1000000       /* rooms one record may claim */
#define OPS_SPARE       256           /* an error body that always fits */

static hub_server_t *S; /* set by hub_ops_init before the bus thread starts */
static int stopped;     /* bus thread: the cluster stops, nothing new starts */

void hub_ops_init(hub_server_t *srv)
{
    S = srv;
}

/* ---- fields (cluster.h: "<decimal length>:<bytes>") ------------------------- */

static size_t field_put_u64(uint8_t *buf, size_t len, size_t cap, uint64_t v)
{
    char num[24];
    int k = snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
    return hub_cluster_field_put(buf, len, cap, num, (size_t)k);
}

/* The bytes hub_cluster_field_put takes for n bytes. */
static size_t field_size(size_t n)
{
    char num[24];
    return (size_t)snprintf(num, sizeof(num), "%zu:", n) + n;
}

/* A field holding a decimal number (1 to 20 digits, no overflow). 0 or -1. */
static int field_get_u64(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    char num[24];
    if (hub_cluster_field_get(p, end, num, sizeof(num)) != 0 || num[0] == '\0' ||
        strlen(num) > 20)
        return -1;
    uint64_t v = 0;
    for (const char *c = num; *c; c++) {
        if (*c < '0' || *c > '9')
            return -1;
        uint64_t d = (uint64_t)(*c - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* A field copied into out (outlen bytes, NUL-terminated): 0, or -1 when
 * it is malformed, empty (or starts with a NUL) or does not fit. */
static int field_get_str(const uint8_t **p, const uint8_t *end, char *out, size_t outlen)
{
    return hub_cluster_field_get(p, end, out, outlen) == 0 && out[0] != '\0' ? 0 : -1;
}

/* ---- replies: built in parts, read back as JSON ----------------------------------- */

typedef struct {
    uint64_t qid, round, count, at, last;
} head_t;

static int head_get(const uint8_t **p, const uint8_t *end, head_t *h)
{
    if (field_get_u64(p, end, &h->qid) || field_get_u64(p, end, &h->round) ||
        field_get_u64(p, end, &h->count) || field_get_u64(p, end, &h->at) ||
        field_get_u64(p, end, &h->last) || (h->round != 1 && h->round != 2) || h->last > 1)
        return -1;
    return 0;
}

/* Writes the five header fields into out (OPS_HEAD_MAX bytes); returns the
 * length. */
static size_t head_put(uint8_t *out, const head_t *h)
{
    size_t n = field_put_u64(out, 0, OPS_HEAD_MAX, h->qid);
    n = field_put_u64(out, n, OPS_HEAD_MAX, h->round);
    n = field_put_u64(out, n, OPS_HEAD_MAX, h->count);
    n = field_put_u64(out, n, OPS_HEAD_MAX, h->at);
    return field_put_u64(out, n, OPS_HEAD_MAX, h->last);
}

/* One answer being cut into messages: records gather in buf after room
 * for the header; each full message goes to emit(arg, bytes, n). */
typedef struct {
    head_t head;             /* qid, round and count; at and last set per message */
    uint8_t *buf;            /* OPS_HEAD_MAX + OPS_PART_MAX bytes, the caller's */
    size_t len;              /* record bytes in buf (after OPS_HEAD_MAX) */
    size_t nrec;             /* records in buf */
    size_t cut;              /* records whose room list was cut */
    void (*emit)(void *arg, const uint8_t *p, size_t n);
    void *arg;
} parts_t;

/* Sends the records gathered so far as one message (last: the answer's
 * final one, possibly without records). */
static void parts_flush(parts_t *pt, int last)
{
    uint8_t head[OPS_HEAD_MAX];
    pt->head.last = (uint64_t)last;
    size_t hl = head_put(head, &pt->head);
    uint8_t *start = pt->buf + OPS_HEAD_MAX - hl;
    memcpy(start, head, hl);
    pt->emit(pt->arg, start, hl + pt->len);
    pt->head.at += pt->nrec;
    pt->len = 0;
    pt->nrec = 0;
}

/* Adds one client: its id, user id, connection time and rooms (cut to
 * what fits in one message). */
static void parts_add(parts_t *pt, const char *cid, const char *uid, uint64_t connected_at,
                      char *const *rooms, size_t nrooms)
{
    char ms[24];
    int ml = snprintf(ms, sizeof(ms), "%llu", (unsigned long long)connected_at);
    size_t cl = strlen(cid), ul = strlen(uid);
    /* the room count's field takes at most 2 + 7 bytes (OPS_ROOMS_MAX) */
    size_t need = field_size(cl) + field_size(ul) + field_size((size_t)ml) + 9, k = 0;
    for (; k < nrooms && k < OPS_ROOMS_MAX; k++) {
        size_t r = field_size(strlen(rooms[k]));
        if (need + r > OPS_PART_MAX)
            break;
        need += r;
    }
    pt->cut += k < nrooms;
    if (pt->len + need > OPS_PART_MAX)
        parts_flush(pt, 0);
    uint8_t *rec = pt->buf + OPS_HEAD_MAX;
    size_t n = pt->len;
    n = hub_cluster_field_put(rec, n, OPS_PART_MAX, cid, cl);
    n = n ? hub_cluster_field_put(rec, n, OPS_PART_MAX, uid, ul) : 0;
    n = n ? hub_cluster_field_put(rec, n, OPS_PART_MAX, ms, (size_t)ml) : 0;
    n = n ? field_put_u64(rec, n, OPS_PART_MAX, k) : 0;
    for (size_t i = 0; i < k && n; i++)
        n = hub_cluster_field_put(rec, n, OPS_PART_MAX, rooms[i], strlen(rooms[i]));
    if (n == 0) /* cannot happen: need counted every byte */
        return;
    pt->len = n;
    pt->nrec++;
}

/* Adds item to parent (an object when key != NULL, else an array); on
 * failure (item NULL: out of memory) frees item. Returns 1 or 0. */
static int add(cJSON *parent, const char *key, cJSON *item)
{
    if (item != NULL &&
        (key ? cJSON_AddItemToObject(parent, key, item) : cJSON_AddItemToArray(parent, item)))
        return 1;
    cJSON_Delete(item);
    return 0;
}

/* Reads one record at *p as the JSON object the API lists, with node_id.
 * NULL when it is malformed (or out of memory). */
static cJSON *record_json(const uint8_t **p, const uint8_t *end, const char *node_id)
{
    char cid[HUB_CLIENT_ID_MAX], uid[HUB_USER_ID_MAX], room[130];
    uint64_t at, nr;
    if (field_get_str(p, end, cid, sizeof(cid)) || field_get_str(p, end, uid, sizeof(uid)) ||
        field_get_u64(p, end, &at) || field_get_u64(p, end, &nr) || nr > OPS_ROOMS_MAX)
        return NULL;
    cJSON *o = cJSON_CreateObject(), *rooms = NULL;
    int ok = o != NULL && add(o, "client_id", cJSON_CreateString(cid)) &&
             add(o, "user_id", cJSON_CreateString(uid)) &&
             add(o, "node_id", cJSON_CreateString(node_id)) &&
             add(o, "rooms", rooms = cJSON_CreateArray());
    for (uint64_t i = 0; i < nr && ok; i++)
        ok = field_get_str(p, end, room, sizeof(room)) == 0 &&
             hub_reg_valid_room_id(room, strlen(room)) &&
             add(rooms, NULL, cJSON_CreateString(room));
    ok = ok && add(o, "connected_at", cJSON_CreateNumber((double)at));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* ---- room delete ---------------------------------------------------------------- */

int hub_ops_room_delete(hub_worker_t *w, const char *id)
{
    if (hub_cluster_enabled()) {
        hub_room_info_t r;
        int here = hub_reg_room_get(id, &r) == 0;
        if (!here && !hub_cluster_room_info(id, &r))
            return HUB_ENOTFOUND;
        hub_reg_info_free(&r);
        /* before this node's HUB_CL_ROOM_OFF (the registry posts it to the
         * same bus inbox, after this): every node deletes its copy before
         * it could tell its members that ours left */
        hub_cluster_send(HUB_CL_ROOM_DEL, id, NULL, 0);
    }
    hub_member_t *m;
    size_t n;
    if (hub_reg_room_delete(id, &m, &n) != 0)
        /* only on other nodes (they delete it), or deleted meanwhile */
        return hub_cluster_enabled() ? 0 : HUB_ENOTFOUND;
    hub_fanout_room_deleted(w, id, m, n);
    hub_reg_members_free(m, n);
    return (int)n;
}

/* Bus thread: another node deleted room: so does this one, and its members
 * get room_deleted. Nothing to do when the room is not here (any more). */
static void on_room_del(const char *origin, const char *room)
{
    if (!hub_reg_valid_room_id(room, strlen(room)))
        return;
    hub_member_t *m;
    size_t n;
    if (hub_reg_room_delete(room, &m, &n) != 0)
        return;
    hub_fanout_room_deleted_remote(S, room, m, n);
    hub_reg_members_free(m, n);
    hub_log_info("room deleted by another node", "room=%s node_id=%s members=%zu", room, origin,
                 n);
}

/* ---- the answering side ----------------------------------------------------------- */

static atomic_int jobs;  /* slices being built for other nodes */
static unsigned next_worker; /* bus thread: the worker for the next slice */

/* A slice to build on a worker. */
typedef struct {
    hub_inbox_msg_t base;
    uint64_t qid;
    uint64_t offset, limit;
    int self;                /* this node asked: the answer goes to the bus thread */
    char to[72];             /* the asking node */
} job_msg_t;

/* This node's own reply, posted to the bus thread. */
typedef struct {
    hub_inbox_msg_t base;
    size_t n;
    uint8_t bytes[];
} self_msg_t;

static void on_reply(const char *origin, const uint8_t *p, size_t n);

static void run_self(void *owner, hub_inbox_msg_t *m)
{
    HUB_UNUSED(owner);
    self_msg_t *sm = (self_msg_t *)m;
    if (S != NULL && !stopped)
        on_reply(S->node_id, sm->bytes, sm->n);
    free(sm);
}

static void emit_bus(void *arg, const uint8_t *p, size_t n)
{
    hub_cluster_send(HUB_CL_REPLY, arg, p, n);
}

static void emit_self(void *arg, const uint8_t *p, size_t n)
{
    HUB_UNUSED(arg);
    self_msg_t *m = malloc(sizeof(*m) + n);
    if (m == NULL)
        return; /* the asker counts this node missing at the deadline */
    m->base.run = run_self;
    m->n = n;
    memcpy(m->bytes, p, n);
    if (hub_cluster_post(&m->base) != 0)
        free(m);
}

/* Worker: lists the asked slice of this node's clients and sends it. On
 * out of memory nothing is sent: the asker counts this node missing. */
static void run_job(void *owner, hub_inbox_msg_t *m)
{
    hub_worker_t *w = owner;
    job_msg_t *j = (job_msg_t *)m;
    hub_client_info_t *v = NULL;
    size_t n = 0, total = 0;
    uint8_t *buf = malloc(OPS_HEAD_MAX + OPS_PART_MAX);
    if (buf != NULL && hub_reg_client_list(j->offset, j->limit, &v, &n, &total) == 0) {
        parts_t pt = { .head = { j->qid, 2, total, 0, 0 }, .buf = buf,
                       .emit = j->self ? emit_self : emit_bus, .arg = j->to };
        for (size_t i = 0; i < n; i++) {
            char cid[HUB_CLIENT_ID_MAX], uid[HUB_USER_ID_MAX];
            hub_client_id_format(w->srv, v[i].conn_id, cid, sizeof(cid));
            if (v[i].user_id)
                snprintf(uid, sizeof(uid), "%s", v[i].user_id);
            else
                hub_anon_user_id(w->srv, v[i].conn_id, uid, sizeof(uid));
            parts_add(&pt, cid, uid, v[i].connected_at, v[i].rooms, v[i].nrooms);
        }
        parts_flush(&pt, 1);
        if (pt.cut > 0)
            hub_log_warn("api clients: room lists cut to fit one bus message", "clients=%zu",
                         pt.cut);
    }
    hub_reg_clients_free(v, n);
    free(buf);
    if (!j->self)
        atomic_fetch_sub(&jobs, 1);
    free(j);
}

/* Bus thread: posts a slice job to worker index (counted in jobs unless
 * it is for this node). 0, or -1 when it cannot. */
static int post_job(int index, const char *to, int self, uint64_t qid, uint64_t offset,
                    uint64_t limit)
{
    if (!self && atomic_fetch_add(&jobs, 1) >= OPS_JOBS_MAX) {
        atomic_fetch_sub(&jobs, 1);
        return -1;
    }
    job_msg_t *j = calloc(1, sizeof(*j));
    if (j != NULL) {
        j->base.run = run_job;
        j->qid = qid;
        j->offset = offset;
        j->limit = limit;
        j->self = self;
        snprintf(j->to, sizeof(j->to), "%s", to);
        if (hub_inbox_post(&S->workers[index].inbox, &j->base) == 0)
            return 0;
        free(j);
    }
    if (!self)
        atomic_fetch_sub(&jobs, 1);
    return -1;
}

/* Bus thread: a query from origin. A count is answered here and now; a
 * slice is built on a worker, round robin (at most OPS_JOBS_MAX queued or
 * being built: beyond, the query is dropped and the asker counts this node
 * missing). */
static void on_query(const char *origin, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    uint64_t qid, round, offset, limit;
    if (field_get_u64(&p, end, &qid) || field_get_u64(&p, end, &round) ||
        field_get_u64(&p, end, &offset) || field_get_u64(&p, end, &limit) ||
        (round != 1 && round != 2)) {
        hub_log_warn("cluster: malformed query dropped", "node_id=%s", origin);
        return;
    }
    if (round == 1) {
        size_t clients, rooms;
        hub_reg_counts(&clients, &rooms);
        head_t h = { qid, 1, clients, 0, 1 };
        uint8_t buf[OPS_HEAD_MAX];
        hub_cluster_send(HUB_CL_REPLY, origin, buf, head_put(buf, &h));
        return;
    }
    if (limit > OPS_SLICE_MAX)
        limit = OPS_SLICE_MAX;
    if (post_job((int)(next_worker++ % (unsigned)S->nworkers), origin, 0, qid, offset, limit) != 0)
        hub_log_warn("api clients: a query from another node dropped (busy or out of memory)",
                     "node_id=%s", origin);
}

/* ---- the asking side ------------------------------------------------------------- */

enum { N_DONE = 0, N_WAIT, N_MISSING };

typedef struct {
    char id[72];
    int self;
    int state;
    uint64_t count;      /* its clients, as the count round said */
    uint64_t off, want;  /* the slice of its list the page needs */
    cJSON **recs;        /* want of them, by index in the slice */
} qnode_t;

/* GET /api/clients from a worker; after the bus thread took it, it also
 * holds the answer's spare: an error body that always fits. */
typedef struct {
    hub_inbox_msg_t base;
    hub_worker_t *w;         /* the asking worker */
    uint64_t conn_id;
    hub_ops_done_fn done;
    void *ctx;               /* the caller's, freed by done */
    size_t offset, limit;
    int status;
    size_t len;
    char body[];             /* the answer's (OPS_SPARE bytes when allocated as a spare) */
} ask_msg_t;

typedef struct {
    uint64_t id;
    ask_msg_t *ask;          /* owned */
    int round;               /* 1 counts, 2 slices */
    uint64_t t0;             /* bus loop ms at the start */
    size_t waiting;          /* nodes in N_WAIT */
    size_t bytes;            /* reply bytes taken */
    size_t nnodes;
    qnode_t *nodes;          /* ordered by node id */
} query_t;

/* Bus thread. */
static struct {
    query_t *q[HUB_OPS_QUERIES_MAX];
    uint64_t next_id;
    uv_timer_t timer;
    int timer_ready;
} Q;

static void run_answer(void *owner, hub_inbox_msg_t *m)
{
    ask_msg_t *a = (ask_msg_t *)m;
    a->done(owner, a->conn_id, a->ctx, a->status, a->body, a->len);
    free(a);
}

/* Any thread: sends a (taken) back to its worker; frees it and the
 * caller's ctx when the worker has stopped. */
static void send_answer(ask_msg_t *a)
{
    a->base.run = run_answer;
    if (hub_inbox_post(&a->w->inbox, &a->base) != 0) {
        free(a->ctx);
        free(a);
    }
}

/* Sends a back with an error answer (fits in its spare body). */
static void answer_error(ask_msg_t *a, int status, const char *code, const char *message)
{
    a->status = status;
    a->len = hub_http_error_body(a->body, OPS_SPARE, code, message);
    send_answer(a);
}

static void query_free(query_t *q)
{
    for (size_t i = 0; i < q->nnodes; i++) {
        for (uint64_t k = 0; q->nodes[i].recs && k < q->nodes[i].want; k++)
            cJSON_Delete(q->nodes[i].recs[k]);
        free(q->nodes[i].recs);
    }
    free(q->nodes);
    free(q->ask);
    free(q);
}

static void node_missing(query_t *q, qnode_t *nd)
{
    if (nd->state == N_WAIT)
        q->waiting--;
    nd->state = N_MISSING;
    for (uint64_t k = 0; nd->recs && k < nd->want; k++) {
        cJSON_Delete(nd->recs[k]);
        nd->recs[k] = NULL;
    }
}

/* Puts the round's question to nd. */
static void ask_node(query_t *q, qnode_t *nd)
{
    if (q->round == 1 && nd->self) {
        size_t clients, rooms;
        hub_reg_counts(&clients, &rooms);
        nd->count = clients;
        nd->state = N_DONE;
        return;
    }
    nd->state = N_WAIT;
    q->waiting++;
    if (nd->self) {
        if (post_job(q->ask->w->index, nd->id, 1, q->id, nd->off, nd->want) != 0)
            node_missing(q, nd);
        return;
    }
    uint8_t buf[OPS_HEAD_MAX];
    size_t n = field_put_u64(buf, 0, sizeof(buf), q->id);
    n = field_put_u64(buf, n, sizeof(buf), (uint64_t)q->round);
    n = field_put_u64(buf, n, sizeof(buf), q->round == 2 ? nd->off : 0);
    n = field_put_u64(buf, n, sizeof(buf), q->round == 2 ? nd->want : 0);
    hub_cluster_send(HUB_CL_QUERY, nd->id, buf, n);
}

/* The answer: the page from the nodes in order, and the missing nodes. */
static void finish(query_t *q)
{
    for (size_t i = 0; i < HUB_ARRAY_LEN(Q.q); i++)
        if (Q.q[i] == q)
            Q.q[i] = NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON *tot = o ? cJSON_AddNumberToObject(o, "total_clients", 0) : NULL;
    cJSON *clients = o ? cJSON_AddArrayToObject(o, "clients") : NULL;
    cJSON *missing = o ? cJSON_AddArrayToObject(o, "missing_nodes") : NULL;
    double total = 0;
    size_t listed = 0;
    int ok = tot != NULL && clients != NULL && missing != NULL;
    for (size_t i = 0; i < q->nnodes && ok; i++) {
        qnode_t *nd = &q->nodes[i];
        if (nd->state == N_MISSING) {
            ok = add(missing, NULL, cJSON_CreateString(nd->id));
            continue;
        }
        total += (double)nd->count;
        for (uint64_t k = 0; k < nd->want && ok; k++) {
            if (nd->recs[k] == NULL)
                continue; /* that client left between the rounds */
            ok = add(clients, NULL, nd->recs[k]);
            nd->recs[k] = NULL;
            listed++;
        }
    }
    if (ok)
        cJSON_SetNumberValue(tot, total);
    char *s = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    ask_msg_t *a = q->ask, *big = NULL;
    q->ask = NULL;
    size_t len = s ? strlen(s) : 0;
    if (s != NULL && (big = malloc(sizeof(*big) + len + 1)) != NULL) {
        memcpy(big, a, sizeof(*big));
        memcpy(big->body, s, len + 1);
        big->status = 200;
        big->len = len;
        free(a);
        send_answer(big);
    } else {
        answer_error(a, 500, "internal", "out of memory");
    }
    cJSON_free(s);
    hub_log_debug("api clients gathered", "nodes=%zu listed=%zu total=%.0f ms=%llu", q->nnodes,
                  listed, total,
                  (unsigned long long)(uv_now(hub_cluster_loop()) - q->t0));
    query_free(q);
}

/* The part of one node's list that the page [offset, offset + limit) of
 * the whole list needs, when that node's count clients follow before
 * others: *off and *want in its own list. Returns 1, or 0 when it needs
 * none. */
static int slice_of(uint64_t offset, uint64_t limit, uint64_t before, uint64_t count,
                    uint64_t *off, uint64_t *want)
{
    uint64_t a = before, b = before + count, hi = offset + limit;
    uint64_t s = offset > a ? offset : a, e = hi < b ? hi : b;
    if (s >= e)
        return 0;
    *off = s - a;
    *want = e - s;
    return 1;
}

/* The round is over (every node answered, or its deadline passed): on to
 * the slices, or the answer. */
static void advance(query_t *q)
{
    if (q->round == 1) {
        q->round = 2;
        uint64_t before = 0;
        for (size_t i = 0; i < q->nnodes; i++) {
            qnode_t *nd = &q->nodes[i];
            if (nd->state != N_DONE)
                continue;
            int some = slice_of(q->ask->offset, q->ask->limit, before, nd->count, &nd->off,
                                &nd->want);
            before += nd->count;
            if (!some)
                continue;
            if ((nd->recs = calloc((size_t)nd->want, sizeof(*nd->recs))) == NULL) {
                nd->want = 0;
                node_missing(q, nd);
                continue;
            }
            ask_node(q, nd);
        }
        if (q->waiting > 0)
            return;
    }
    finish(q);
}

static void on_timer(uv_timer_t *t);

/* Sets the timer to the nearest deadline of the queries in progress. */
static void rearm(void)
{
    uv_loop_t *loop = hub_cluster_loop();
    uint64_t now = uv_now(loop), next = UINT64_MAX;
    for (size_t i = 0; i < HUB_ARRAY_LEN(Q.q); i++) {
        const query_t *q = Q.q[i];
        if (q == NULL)
            continue;
        uint64_t d = q->t0 + (q->round == 1 ? HUB_OPS_COUNT_MS : HUB_OPS_DEADLINE_MS);
        if (d < next)
            next = d;
    }
    if (!Q.timer_ready) {
        if (next == UINT64_MAX || uv_timer_init(loop, &Q.timer) != 0)
            return;
        Q.timer_ready = 1;
    }
    if (next == UINT64_MAX)
        uv_timer_stop(&Q.timer);
    else
        uv_timer_start(&Q.timer, on_timer, next > now ? next - now : 0, 0);
}

static void on_timer(uv_timer_t *t)
{
    uint64_t now = uv_now(t->loop);
    for (size_t i = 0; i < HUB_ARRAY_LEN(Q.q); i++) {
        query_t *q = Q.q[i];
        if (q == NULL ||
            now < q->t0 + (q->round == 1 ? HUB_OPS_COUNT_MS : HUB_OPS_DEADLINE_MS))
            continue;
        for (size_t k = 0; k < q->nnodes; k++)
            if (q->nodes[k].state == N_WAIT) {
                hub_log_info("api clients: a node did not answer in time",
                             "node_id=%s round=%d", q->nodes[k].id, q->round);
                node_missing(q, &q->nodes[k]);
            }
        advance(q);
    }
    rearm();
}

static int node_cmp(const void *a, const void *b)
{
    return strcmp(((const qnode_t *)a)->id, ((const qnode_t *)b)->id);
}

/* Bus thread: a worker's GET /api/clients. */
static void run_ask(void *owner, hub_inbox_msg_t *m)
{
    HUB_UNUSED(owner);
    ask_msg_t *a = (ask_msg_t *)m;
    if (stopped) { /* queued behind the stop */
        answer_error(a, 503, "unavailable", "the node is stopping");
        return;
    }
    size_t slot = HUB_ARRAY_LEN(Q.q);
    for (size_t i = 0; i < HUB_ARRAY_LEN(Q.q) && slot == HUB_ARRAY_LEN(Q.q); i++)
        if (Q.q[i] == NULL)
            slot = i;
    if (slot == HUB_ARRAY_LEN(Q.q)) {
        answer_error(a, 503, "unavailable", "too many client queries at once, retry");
        return;
    }
    hub_cluster_node_t *nv = calloc(OPS_NODES_MAX, sizeof(*nv));
    query_t *q = calloc(1, sizeof(*q));
    size_t nn = nv ? hub_cluster_nodes(nv, OPS_NODES_MAX) : 0;
    if (nn > OPS_NODES_MAX)
        nn = OPS_NODES_MAX;
    if (q == NULL || nn == 0 || (q->nodes = calloc(nn, sizeof(*q->nodes))) == NULL) {
        free(nv);
        free(q);
        answer_error(a, 500, "internal", "out of memory");
        return;
    }
    if (Q.next_id == 0) /* ids a reply to this node's previous run cannot match */
        Q.next_id = hub_now_ms() * 1000;
    q->id = ++Q.next_id;
    q->ask = a;
    q->round = 1;
    q->t0 = uv_now(hub_cluster_loop());
    q->nnodes = nn;
    for (size_t i = 0; i < nn; i++) {
        memcpy(q->nodes[i].id, nv[i].node_id, sizeof(q->nodes[i].id));
        q->nodes[i].id[sizeof(q->nodes[i].id) - 1] = '\0';
        q->nodes[i].self = nv[i].self;
    }
    free(nv);
    qsort(q->nodes, nn, sizeof(*q->nodes), node_cmp);
    Q.q[slot] = q;
    for (size_t i = 0; i < nn; i++)
        ask_node(q, &q->nodes[i]);
    if (q->waiting == 0)
        advance(q);
    rearm();
}

/* Bus thread: a reply from origin (another node, or this one's own slice). */
static void on_reply(const char *origin, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    head_t h;
    if (head_get(&p, end, &h) != 0) {
        hub_log_warn("cluster: malformed reply dropped", "node_id=%s", origin);
        return;
    }
    query_t *q = NULL;
    for (size_t i = 0; i < HUB_ARRAY_LEN(Q.q) && q == NULL; i++)
        if (Q.q[i] != NULL && Q.q[i]->id == h.qid)
            q = Q.q[i];
    if (q == NULL || (int)h.round != q->round)
        return; /* late: that query or round is over */
    qnode_t *nd = NULL;
    for (size_t i = 0; i < q->nnodes && nd == NULL; i++)
        if (q->nodes[i].state == N_WAIT && strcmp(q->nodes[i].id, origin) == 0)
            nd = &q->nodes[i];
    if (nd == NULL)
        return;
    if (n > OPS_QUERY_BYTES - q->bytes) {
        hub_log_warn("api clients: answers too large, a node left out", "node_id=%s", origin);
        node_missing(q, nd);
    } else if (q->round == 1) {
        q->bytes += n;
        nd->count = h.count;
        nd->state = N_DONE;
        q->waiting--;
    } else {
        q->bytes += n;
        for (uint64_t i = h.at; p < end; i++) {
            cJSON *r = record_json(&p, end, nd->id);
            if (r == NULL) {
                hub_log_warn("cluster: malformed client list, a node left out",
                             "node_id=%s", origin);
                node_missing(q, nd);
                break;
            }
            if (i < nd->want && nd->recs[i] == NULL)
                nd->recs[i] = r;
            else
                cJSON_Delete(r);
        }
        if (nd->state == N_WAIT && h.last) {
            nd->state = N_DONE;
            q->waiting--;
        }
    }
    if (q->waiting == 0)
        advance(q);
    rearm();
}

int hub_ops_clients(hub_worker_t *w, uint64_t conn_id, size_t offset, size_t limit,
                    hub_ops_done_fn done, void *ctx)
{
    if (!hub_cluster_enabled())
        return HUB_ECLOSED;
    ask_msg_t *a = calloc(1, sizeof(*a) + OPS_SPARE);
    if (a == NULL)
        return HUB_ENOMEM;
    a->base.run = run_ask;
    a->w = w;
    a->conn_id = conn_id;
    a->done = done;
    a->ctx = ctx;
    a->offset = offset;
    a->limit = limit < OPS_SLICE_MAX ? limit : OPS_SLICE_MAX;
    int rc = hub_cluster_post(&a->base);
    if (rc != 0)
        free(a);
    return rc;
}

/* ---- from the bus ---------------------------------------------------------------- */

void hub_ops_on_bus(int kind, const char *origin, const char *arg, const uint8_t *p, size_t n)
{
    if (S == NULL || stopped)
        return;
    switch (kind) {
    case HUB_CL_ROOM_DEL:
        on_room_del(origin, arg);
        break;
    case HUB_CL_QUERY:
        on_query(origin, p, n);
        break;
    case HUB_CL_REPLY:
        on_reply(origin, p, n);
        break;
    default:
        break;
    }
}

void hub_ops_bus_stop(void)
{
    stopped = 1;
    for (size_t i = 0; i < HUB_ARRAY_LEN(Q.q); i++) {
        query_t *q = Q.q[i];
        if (q == NULL)
            continue;
        Q.q[i] = NULL;
        answer_error(q->ask, 503, "unavailable", "the node is stopping");
        q->ask = NULL;
        query_free(q);
    }
    if (Q.timer_ready) {
        uv_timer_stop(&Q.timer);
        uv_close((uv_handle_t *)&Q.timer, NULL);
        Q.timer_ready = 0;
    }
}
