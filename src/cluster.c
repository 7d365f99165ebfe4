/* cluster.c: see cluster.h. The bus thread owns the transport, the subject
 * table and the dedupe windows; the node table is shared with workers under
 * a mutex (they ask whether a node is alive and list the nodes).
 *
 * A bus message is a header line then the frame bytes:
 *   "GH1 <kind> <origin> <epoch hex> <seq> <mtype> <arg length>\n<arg><frame>"
 * origin is the sender's node id, epoch a random number drawn at its start
 * (a restarted node is a new identity even with the same id), seq numbers
 * the sender's messages on that subject (consecutive within a burst; see
 * next_seq), mtype is the frame's metrics label. Receivers keep a dedupe
 * window per (origin, subject): each subject may arrive on its own path (a
 * JetStream consumer per subject catches up on its own), so one origin-wide
 * window would call a lagging subject's messages too old.
 *
 * The membership directory (kinds C D J L m on "ctl"): each node announces
 * its rooms and their members as they change, and its whole list to a node
 * it sees join, so every node keeps, per live node, that node's rooms and
 * members (bounded per node). Fields of those payloads are
 * "<decimal length>:<bytes>", so any byte may appear in a name or user id.
 * When a node leaves (goodbye, timeout, restart) or deletes a room, its
 * members are buried: after the node lock is released, this node's members
 * of those rooms get member_left for each of them. */
#include "cluster.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "bus.h"
#include "cluster_ops.h"
#include "config.h"
#include "conn.h"
#include "fanout.h"
#include "frame.h"
#include "hmap.h"
#include "inbox.h"
#include "jsonscan.h"
#include "log.h"
#include "metrics.h"
#include "msg.h"
#include "registry.h"
#include "seats.h"
#include "server.h"

#define WINDOW_WORDS 16                 /* dedupe window: 1,024 sequence numbers */
#define WINDOW_BITS  (WINDOW_WORDS * 64)
#define MAX_NODES    1024               /* a node table larger than this is an attack */
#define HEADER_MAX   512
#define REMOTE_ROOMS_MAX   65536    /* per node: more rooms from one node are dropped, counted */
#define REMOTE_MEMBERS_MAX 262144   /* per node: members likewise */
#define NAME_MAX_BYTES     1024     /* a longer room name crosses the bus as the room id */

/* A room of another node as it announced it. */
typedef struct {
    char *name;
    uint32_t max_clients;
    hub_strmap_t members;        /* client id -> user id (malloc'd; "" = anonymous) */
} rroom_t;

/* A room whose remote members left (their node died or deleted it): told
 * to the local members after the node lock is released. */
typedef struct dead_s {
    struct dead_s *next;
    rroom_t *room;               /* owned */
    char id[];
} dead_t;

/* What a node has seen of one origin's subject: sequences are per (origin
 * epoch, subject), because each subject may reach us on its own path (a
 * JetStream consumer per subject catches up on its own). */
typedef struct {
    uint64_t max_seq;            /* highest sequence seen */
    uint64_t seen[WINDOW_WORDS]; /* bit i: max_seq - 1 - i was seen */
    uint64_t last_ms;            /* bus loop time it last moved */
} window_t;

/* The sequence this node gives its next message on one subject. */
typedef struct {
    uint64_t seq;
    uint64_t last_ms;
} counter_t;

#define STREAM_IDLE_MS   (2 * 60 * 1000) /* a receiver forgets an idle window */
#define COUNTER_IDLE_MS  (3 * 60 * 1000) /* a sender forgets later, see next_seq */

/* The dedupe windows of a node that was dropped, kept for a while: a node
 * away longer than cluster.node_timeout (a partition, a long bus outage)
 * comes back with the same identity, and JetStream may redeliver what it
 * had already delivered. */
typedef struct {
    char id[72];
    uint64_t epoch;
    uint64_t until_ms;           /* forgotten after this bus loop time */
    hub_strmap_t windows;        /* owned, as in node_t */
} grave_t;

#define GRAVES       64          /* dropped nodes remembered at most */
#define GRAVE_MS     (10 * 60 * 1000)

typedef struct {
    char id[72];
    uint64_t epoch;
    uint64_t prev_epoch;         /* the identity it had before it restarted; 0 = none */
    uint64_t last_ms;            /* bus loop time of its last message */
    uint32_t clients;
    hub_strmap_t windows;        /* subject -> window_t (owned): dedupe per stream */
    hub_strmap_t users;          /* user ids connected to it (values unused) */
    hub_strmap_t rooms;          /* room id -> rroom_t (owned) */
    size_t nmembers;             /* entries in all its rooms */
    uint64_t dropped;            /* directory entries refused (caps) */
} node_t;

struct hub_bus_s {
    hub_server_t *srv;
    /* from the boot config (cluster.* keys need a restart; a reload frees
     * the snapshot, so nothing here may keep a pointer to it) */
    uint32_t heartbeat_ms, node_timeout_ms;
    int presence_events;
    const hub_bus_transport_t *tr;
    void *impl;
    uv_thread_t thread;
    uv_loop_t loop;
    hub_inbox_t inbox;
    uv_timer_t beat, sweep;
    atomic_int state;
    uint64_t up_since_ms;        /* bus loop time the bus last connected; 0 = down */
    uint64_t epoch;
    hub_strmap_t counters;       /* subject -> counter_t (owned) */
    uint64_t last_trim_ms;
    hub_strmap_t subjects;       /* subject -> use count (intptr_t) */
    uv_mutex_t nodes_mu;         /* guards nodes (workers read it) */
    node_t *nodes;
    size_t nnodes;
    int snapshot_due;            /* a node appeared: tell it our users and rooms */
    char snapshot_ask[72];       /* a node we met after its snapshot: ask it for one */
    dead_t *dead;                /* bus thread: buried rooms, see flush_dead */
    grave_t graves[GRAVES];      /* guarded by nodes_mu; epoch 0 = free */
    hub_ratelog_t shared_id_log;     /* warnings at most every 10 s (bus thread) */
    hub_ratelog_t drop_log;
    hub_ratelog_t malformed_log;
    int ever_up;                 /* the bus has connected once: later connects are reconnects */
    int stopping;
};

static hub_bus_t *B; /* set by hub_cluster_start, cleared by stop */
static _Thread_local int on_bus_thread;

/* ---- subjects ------------------------------------------------------------- */

/* Appends id with '.' as '~'; returns the new length or 0 on overflow. */
static size_t put_id(char *out, size_t j, size_t outlen, const char *id)
{
    for (const char *p = id; *p; p++) {
        if (j + 1 >= outlen)
            return 0;
        out[j++] = *p == '.' ? '~' : *p;
    }
    out[j] = '\0';
    return j;
}

static int node_addressed(int kind)
{
    return kind == HUB_CL_SEAT_ASK || kind == HUB_CL_SEAT_ANS || kind == HUB_CL_SEAT_FREE ||
           kind == HUB_CL_QUERY || kind == HUB_CL_REPLY;
}

size_t hub_cluster_subject(int kind, const char *arg, char *out, size_t outlen)
{
    int ctl = kind == HUB_CL_BEAT || kind == HUB_CL_BYE || kind == HUB_CL_USER_ON ||
              kind == HUB_CL_USER_OFF || kind == HUB_CL_USERS || kind == HUB_CL_ROOM_ON ||
              kind == HUB_CL_ROOM_OFF || kind == HUB_CL_JOIN || kind == HUB_CL_LEAVE ||
              kind == HUB_CL_ROOMS || kind == HUB_CL_SNAP_ASK || kind == HUB_CL_ROOM_DEL;
    const char *fixed = kind == HUB_CL_ALL ? "all" : kind == HUB_CL_USER ? "user" : ctl ? "ctl" : NULL;
    if (fixed != NULL) {
        int n = snprintf(out, outlen, "%s", fixed);
        return n > 0 && (size_t)n < outlen ? (size_t)n : 0;
    }
    const char *pre = kind == HUB_CL_ROOM                              ? "room."
                      : kind == HUB_CL_CONN || node_addressed(kind) ? "node."
                                                                    : NULL;
    if (pre == NULL || arg == NULL || outlen < 6)
        return 0;
    size_t j = (size_t)snprintf(out, outlen, "%s", pre);
    if (node_addressed(kind))
        return put_id(out, j, outlen, arg);
    if (kind == HUB_CL_CONN) {
        /* a client id is "<node id>-<hex>": the subject names the node */
        const char *dash = strrchr(arg, '-');
        char node[72];
        size_t nl = dash ? (size_t)(dash - arg) : 0;
        if (nl == 0 || nl >= sizeof(node))
            return 0;
        memcpy(node, arg, nl);
        node[nl] = '\0';
        return put_id(out, j, outlen, node);
    }
    return put_id(out, j, outlen, arg);
}

/* ---- messages from workers --------------------------------------------- */

typedef struct {
    hub_inbox_msg_t base;
    int kind;
    uint8_t mtype;
    size_t arglen, len;
    uint8_t bytes[];   /* arg, then the frame */
} pub_msg_t;

/* A room's or a user's local use went up or down (run_use, run_user). */
typedef struct {
    hub_inbox_msg_t base;
    int delta;
    char name[];
} use_msg_t;

typedef struct {
    hub_inbox_msg_t base;
} stop_msg_t;


/* Bus thread: numbers and sends one message. */
/* The next sequence number on subject, or 0 when out of memory. Within a
 * burst they are consecutive; a counter idle for COUNTER_IDLE_MS is
 * forgotten (rooms come and go) and restarts from the wall clock in
 * microseconds, which is past anything it gave before, while receivers
 * forgot the window already (STREAM_IDLE_MS is shorter). */
static uint64_t next_seq(hub_bus_t *b, const char *subject)
{
    uint64_t now = uv_now(&b->loop);
    counter_t *c = hub_strmap_get(&b->counters, subject);
    if (c == NULL) {
        if ((c = malloc(sizeof(*c))) == NULL)
            return 0;
        c->seq = hub_now_ms() * 1000;
        if (hub_strmap_put(&b->counters, subject, c) != 0) {
            free(c);
            return 0;
        }
    }
    c->last_ms = now;
    return ++c->seq;
}

static void counters_free(hub_bus_t *b)
{
    hub_strmap_free_values(&b->counters);
}

/* Forgets counters idle for COUNTER_IDLE_MS (at most once a minute). */
static void trim_counters(hub_bus_t *b, uint64_t now)
{
    if (now - b->last_trim_ms < 60000)
        return;
    b->last_trim_ms = now;
    size_t it;
    for (hub_strmap_entry_t *e = hub_strmap_first(&b->counters, &it); e;) {
        counter_t *c = e->val;
        hub_strmap_entry_t *next = hub_strmap_next(&b->counters, e, &it);
        if (now - c->last_ms > COUNTER_IDLE_MS) {
            free(hub_strmap_del(&b->counters, e->key));
        }
        e = next;
    }
}

static void send_now(hub_bus_t *b, int kind, uint8_t mtype, const char *arg, size_t arglen,
                     const uint8_t *p, size_t n)
{
    char subject[300], argz[300];
    if (arglen >= sizeof(argz))
        return;
    memcpy(argz, arg, arglen);
    argz[arglen] = '\0';
    if (hub_cluster_subject(kind, argz, subject, sizeof(subject)) == 0)
        return;
    char head[HEADER_MAX], msg_id[128];
    uint64_t seq = next_seq(b, subject);
    if (seq == 0) {
        hub_bus_transport_dropped(b, "out_of_memory");
        return;
    }
    int hl = snprintf(head, sizeof(head), "GH1 %c %s %llx %llu %u %zu\n", kind, b->srv->node_id,
                      (unsigned long long)b->epoch, (unsigned long long)seq, mtype, arglen);
    /* unique in the cluster and at most 128 bytes: the subject as a hash */
    uint64_t h = 1469598103934665603ULL;
    for (const char *c = subject; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    snprintf(msg_id, sizeof(msg_id), "%s-%llx-%llx-%llu", b->srv->node_id,
             (unsigned long long)b->epoch, (unsigned long long)h, (unsigned long long)seq);
    if (hl <= 0 || (size_t)hl >= sizeof(head))
        return;
    size_t total = (size_t)hl + arglen + n;
    uint8_t *buf = malloc(total);
    if (buf == NULL) {
        hub_bus_transport_dropped(b, "out_of_memory");
        return;
    }
    memcpy(buf, head, (size_t)hl);
    if (arglen > 0)
        memcpy(buf + hl, arg, arglen);
    if (n > 0) /* heartbeats carry no frame: p may be NULL */
        memcpy(buf + hl + arglen, p, n);
    b->tr->publish(b->impl, subject, buf, total, msg_id);
    hub_mc_add(&hub_metrics_bus()->bus_published, 1);
    free(buf);
}

static void run_pub(void *owner, hub_inbox_msg_t *m)
{
    hub_bus_t *b = owner;
    pub_msg_t *pm = (pub_msg_t *)m;
    if (!b->stopping)
        send_now(b, pm->kind, pm->mtype, (const char *)pm->bytes, pm->arglen,
                 pm->bytes + pm->arglen, pm->len);
    if (pm->kind == HUB_CL_JOIN) { /* a local join: a seat this node granted is taken */
        char room[300], cid[HUB_CLIENT_ID_MAX];
        const uint8_t *p = pm->bytes + pm->arglen;
        if (pm->arglen < sizeof(room) &&
            hub_cluster_field_get(&p, p + pm->len, cid, sizeof(cid)) == 0) {
            memcpy(room, pm->bytes, pm->arglen);
            room[pm->arglen] = '\0';
            hub_seats_joined(room, cid);
        }
    }
    free(pm);
}

/* Bus thread: counts one more (or one less) use of subject. */
static void use_subject(hub_bus_t *b, const char *subject, int delta)
{
    intptr_t n = (intptr_t)hub_strmap_get(&b->subjects, subject) + delta;
    if (n <= 0) {
        if (hub_strmap_del(&b->subjects, subject) != NULL)
            b->tr->unsubscribe(b->impl, subject);
        return;
    }
    int fresh = hub_strmap_get(&b->subjects, subject) == NULL;
    if (hub_strmap_put(&b->subjects, subject, (void *)n) != 0) {
        hub_log_error("cluster: out of memory subscribing", "subject=%s", subject);
        return;
    }
    if (fresh)
        b->tr->subscribe(b->impl, subject);
}

static void run_use(void *owner, hub_inbox_msg_t *m)
{
    hub_bus_t *b = owner;
    use_msg_t *um = (use_msg_t *)m;
    char subject[300];
    if (!b->stopping && hub_cluster_subject(HUB_CL_ROOM, um->name, subject, sizeof(subject)))
        use_subject(b, subject, um->delta);
    free(um);
}

static void run_user(void *owner, hub_inbox_msg_t *m)
{
    hub_bus_t *b = owner;
    use_msg_t *um = (use_msg_t *)m;
    if (!b->stopping)
        send_now(b, um->delta > 0 ? HUB_CL_USER_ON : HUB_CL_USER_OFF, 0, um->name,
                 strlen(um->name), NULL, 0);
    free(um);
}

/* Bus thread: every local user id, in messages of up to 32 KiB. */
static void send_snapshot(hub_bus_t *b)
{
    char **ids;
    size_t n = hub_reg_users(&ids);
    size_t cap = 32768, len = 0;
    uint8_t *buf = malloc(cap);
    for (size_t i = 0; buf != NULL && i <= n; i++) {
        size_t l = i < n ? strlen(ids[i]) : 0;
        if (i == n || len + l + 1 > cap) {
            if (len > 0 || (i == n && n == 0))
                send_now(b, HUB_CL_USERS, 0, "", 0, buf, len);
            len = 0;
        }
        if (i < n && l + 1 <= cap) {
            memcpy(buf + len, ids[i], l);
            buf[len + l] = '\n';
            len += l + 1;
        }
    }
    free(buf);
    hub_reg_strv_free(ids, n);
}

/* ---- the membership directory -------------------------------------------------- */

size_t hub_cluster_field_put(uint8_t *buf, size_t len, size_t cap, const char *s, size_t n)
{
    char num[24];
    int k = snprintf(num, sizeof(num), "%zu:", n);
    if (k <= 0 || len + (size_t)k + n > cap)
        return 0;
    memcpy(buf + len, num, (size_t)k);
    if (n > 0)
        memcpy(buf + len + k, s, n);
    return len + (size_t)k + n;
}

int hub_cluster_field_get(const uint8_t **p, const uint8_t *end, char *out, size_t outlen)
{
    const uint8_t *q = *p;
    size_t n = 0;
    while (q < end && *q >= '0' && *q <= '9' && n < 1000000)
        n = n * 10 + (size_t)(*q++ - '0');
    if (q == *p || q >= end || *q != ':')
        return -1;
    q++;
    if ((size_t)(end - q) < n || n >= outlen)
        return -1;
    memcpy(out, q, n);
    out[n] = '\0';
    *p = q + n;
    return 0;
}

static void rroom_free(rroom_t *r)
{
    hub_strmap_free_values(&r->members);
    free(r->name);
    free(r);
}

static void note_drop(node_t *nd, const char *what)
{
    if (nd->dropped++ == 0)
        hub_log_warn("cluster: membership directory full for a node: dropping entries",
                     "node_id=%s what=%s", nd->id, what);
}

/* nd's room id, created (name = id, unlimited) when create is set. NULL
 * when absent, at the cap or out of memory. Caller holds nodes_mu. */
static rroom_t *rroom_get(node_t *nd, const char *id, int create)
{
    rroom_t *r = hub_strmap_get(&nd->rooms, id);
    if (r != NULL || !create)
        return r;
    if (nd->rooms.n >= REMOTE_ROOMS_MAX) {
        note_drop(nd, "room");
        return NULL;
    }
    if ((r = calloc(1, sizeof(*r))) == NULL)
        return NULL;
    hub_strmap_init(&r->members);
    if ((r->name = strdup(id)) == NULL || hub_strmap_put(&nd->rooms, id, r) != 0) {
        free(r->name);
        free(r);
        return NULL;
    }
    return r;
}

static void rroom_set(rroom_t *r, const char *name, const char *max)
{
    char *n = strdup(name);
    if (n != NULL) {
        free(r->name);
        r->name = n;
    }
    r->max_clients = (uint32_t)strtoul(max, NULL, 10);
}

/* Adds or updates member cid of r (nd's). Caller holds nodes_mu. */
static void member_put(node_t *nd, rroom_t *r, const char *cid, const char *uid)
{
    char *old = hub_strmap_get(&r->members, cid);
    if (old == NULL && nd->nmembers >= REMOTE_MEMBERS_MAX) {
        note_drop(nd, "member");
        return;
    }
    char *u = strdup(uid);
    if (u == NULL || hub_strmap_put(&r->members, cid, u) != 0) {
        free(u);
        return;
    }
    if (old != NULL)
        free(old);
    else
        nd->nmembers++;
}

static void member_del(node_t *nd, rroom_t *r, const char *cid)
{
    char *u = hub_strmap_del(&r->members, cid);
    if (u != NULL) {
        free(u);
        nd->nmembers--;
    }
}

/* Takes r (removed from its node by the caller): its members are told
 * gone by flush_dead. Bus thread. */
static void bury(hub_bus_t *b, const char *id, rroom_t *r)
{
    size_t l = strlen(id) + 1;
    dead_t *d = r->members.n > 0 ? malloc(sizeof(*d) + l) : NULL;
    if (d == NULL) {
        rroom_free(r);
        return;
    }
    memcpy(d->id, id, l);
    d->room = r;
    d->next = b->dead;
    b->dead = d;
}

/* Empties nd's directory: its members are buried (bury_them) or just
 * forgotten (a snapshot replaces them). Caller holds nodes_mu. */
static void rooms_clear(hub_bus_t *b, node_t *nd, int bury_them)
{
    size_t it;
    for (hub_strmap_entry_t *e = hub_strmap_first(&nd->rooms, &it); e;
         e = hub_strmap_next(&nd->rooms, e, &it)) {
        if (bury_them)
            bury(b, e->key, e->val);
        else
            rroom_free(e->val);
    }
    hub_strmap_free(&nd->rooms);
    hub_strmap_init(&nd->rooms);
    nd->nmembers = 0;
}

/* Applies one record-free delta (C D J L) from nd. Caller holds nodes_mu. */
static void apply_delta(hub_bus_t *b, node_t *nd, int kind, const char *room, const uint8_t *p,
                        size_t n)
{
    const uint8_t *end = p + n;
    char a[NAME_MAX_BYTES + 1], c[HUB_USER_ID_MAX + 8];
    rroom_t *r;
    switch (kind) {
    case HUB_CL_ROOM_ON:
        if (hub_cluster_field_get(&p, end, a, sizeof(a)) == 0 &&
            hub_cluster_field_get(&p, end, c, sizeof(c)) == 0 &&
            (r = rroom_get(nd, room, 1)) != NULL)
            rroom_set(r, a, c);
        break;
    case HUB_CL_ROOM_OFF:
        if ((r = hub_strmap_del(&nd->rooms, room)) != NULL) {
            nd->nmembers -= r->members.n;
            bury(b, room, r);
        }
        break;
    case HUB_CL_JOIN:
        if (hub_cluster_field_get(&p, end, a, sizeof(a)) == 0 &&
            hub_cluster_field_get(&p, end, c, sizeof(c)) == 0 &&
            (r = rroom_get(nd, room, 1)) != NULL) {
            member_put(nd, r, a, c);
            hub_seats_joined(room, a); /* a seat this node granted is taken */
        }
        break;
    case HUB_CL_LEAVE:
        if (hub_cluster_field_get(&p, end, a, sizeof(a)) == 0 &&
            (r = rroom_get(nd, room, 0)) != NULL)
            member_del(nd, r, a);
        break;
    default:
        break;
    }
}

/* Applies a snapshot message from nd: 'R' and 'M' records; the first
 * message of a snapshot (arg "1") replaces what nd had. Caller holds
 * nodes_mu. */
static void apply_rooms(hub_bus_t *b, node_t *nd, const char *arg, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    char room[300], a[NAME_MAX_BYTES + 1], c[HUB_USER_ID_MAX + 8];
    if (arg[0] == '1')
        rooms_clear(b, nd, 0);
    while (p < end) {
        int tag = *p++;
        rroom_t *r;
        if ((tag != 'R' && tag != 'M') || hub_cluster_field_get(&p, end, room, sizeof(room)) != 0 ||
            hub_cluster_field_get(&p, end, a, sizeof(a)) != 0 ||
            hub_cluster_field_get(&p, end, c, sizeof(c)) != 0) {
            hub_log_warn("cluster: malformed room snapshot dropped", "node_id=%s", nd->id);
            return;
        }
        if ((r = rroom_get(nd, room, 1)) == NULL)
            continue;
        if (tag == 'R')
            rroom_set(r, a, c);
        else
            member_put(nd, r, a, c);
    }
}

/* Bus thread: every local room and member, in messages of up to 32 KiB;
 * the first carries arg "1" (even when there is nothing to tell). */
static void send_rooms_snapshot(hub_bus_t *b)
{
    hub_room_info_t *v;
    size_t n = hub_reg_room_list(&v);
    size_t cap = 32768, len = 0;
    int first = 1;
    uint8_t *buf = malloc(cap), rec[2048];
    for (size_t i = 0; buf != NULL && i < n; i++) {
        hub_member_t *m = NULL;
        size_t k = 0;
        if (v[i].member_count > 0 && hub_reg_room_members(v[i].id, &m, &k) != 0)
            k = 0;
        for (size_t j = 0; j <= k; j++) {
            /* j == 0: the room; then its members m[j - 1] */
            char field[HUB_USER_ID_MAX + 8];
            const char *id = v[i].id;
            size_t rl = 1;
            rec[0] = j == 0 ? 'R' : 'M';
            rl = hub_cluster_field_put(rec, rl, sizeof(rec), id, strlen(id));
            if (j == 0) {
                const char *name = strlen(v[i].name) <= NAME_MAX_BYTES ? v[i].name : id;
                int fl = snprintf(field, sizeof(field), "%u", v[i].max_clients);
                rl = rl ? hub_cluster_field_put(rec, rl, sizeof(rec), name, strlen(name)) : 0;
                rl = rl ? hub_cluster_field_put(rec, rl, sizeof(rec), field, (size_t)fl) : 0;
            } else {
                size_t cl = hub_client_id_format(b->srv, m[j - 1].conn_id, field, sizeof(field));
                const char *uid = m[j - 1].user_id ? m[j - 1].user_id : "";
                rl = rl ? hub_cluster_field_put(rec, rl, sizeof(rec), field, cl) : 0;
                rl = rl ? hub_cluster_field_put(rec, rl, sizeof(rec), uid, strlen(uid)) : 0;
            }
            if (rl == 0)
                continue;
            if (len + rl > cap) {
                send_now(b, HUB_CL_ROOMS, 0, first ? "1" : "", first ? 1 : 0, buf, len);
                first = 0;
                len = 0;
            }
            memcpy(buf + len, rec, rl);
            len += rl;
        }
        hub_reg_members_free(m, k);
    }
    if (buf != NULL && (len > 0 || first))
        send_now(b, HUB_CL_ROOMS, 0, first ? "1" : "", first ? 1 : 0, buf, len);
    free(buf);
    hub_reg_rooms_free(v, n);
}

/* Bus thread, without nodes_mu: member_left {room_id, client_id, user_id}
 * from a dead room to this node's members of that room. */
static void send_left(hub_bus_t *b, const char *room, const char *cid, const char *uid)
{
    char anon[HUB_USER_ID_MAX + 8];
    if (*uid == '\0') {
        snprintf(anon, sizeof(anon), "anon-%s", cid);
        uid = anon;
    }
    hub_frame_t *f = hub_fanout_presence_frame("member_left", room, cid, uid);
    if (f == NULL)
        return;
    hub_fanout_remote(b->srv, HUB_CL_ROOM, room, f->data, f->len, f->kind);
    hub_frame_release(f);
}

/* Bus thread, without nodes_mu: tells and frees the buried rooms. */
static void flush_dead(hub_bus_t *b)
{
    dead_t *d = b->dead;
    b->dead = NULL;
    while (d != NULL) {
        dead_t *next = d->next;
        if (!b->stopping && b->presence_events &&
            hub_reg_room_visit(d->id, -1, 0, NULL, NULL, NULL) > 0) {
            size_t it;
            for (hub_strmap_entry_t *e = hub_strmap_first(&d->room->members, &it); e;
                 e = hub_strmap_next(&d->room->members, e, &it))
                send_left(b, d->id, e->key, e->val);
        }
        rroom_free(d->room);
        free(d);
        d = next;
    }
}

/* ---- public, any thread ----------------------------------------------------- */

int hub_cluster_enabled(void)
{
    return B != NULL;
}

int hub_cluster_state(void)
{
    return B ? atomic_load(&B->state) : HUB_BUS_DISABLED;
}

void hub_cluster_publish(int kind, const char *arg, const hub_frame_t *f)
{
    if (B == NULL)
        return;
    size_t al = arg ? strlen(arg) : 0;
    pub_msg_t *m = malloc(sizeof(*m) + al + f->len);
    if (m == NULL) {
        hub_log_warn("cluster: publish dropped (out of memory)", "");
        return;
    }
    m->base.run = run_pub;
    m->kind = kind;
    m->mtype = f->kind;
    m->arglen = al;
    m->len = f->len;
    if (al)
        memcpy(m->bytes, arg, al);
    memcpy(m->bytes + al, f->data, f->len);
    if (hub_inbox_post(&B->inbox, &m->base) != 0)
        free(m);
}

void hub_cluster_send(int kind, const char *arg, const void *p, size_t n)
{
    if (B == NULL)
        return;
    size_t al = strlen(arg);
    if (on_bus_thread) {
        send_now(B, kind, 0, arg, al, p, n);
        return;
    }
    pub_msg_t *m = malloc(sizeof(*m) + al + n);
    if (m == NULL) {
        hub_log_warn("cluster: message dropped (out of memory)", "kind=%c", kind);
        return;
    }
    m->base.run = run_pub;
    m->kind = kind;
    m->mtype = 0;
    m->arglen = al;
    m->len = n;
    memcpy(m->bytes, arg, al);
    if (n > 0)
        memcpy(m->bytes + al, p, n);
    if (hub_inbox_post(&B->inbox, &m->base) != 0)
        free(m);
}

int hub_cluster_post(hub_inbox_msg_t *m)
{
    return B != NULL ? hub_inbox_post(&B->inbox, m) : HUB_ECLOSED;
}

uv_loop_t *hub_cluster_loop(void)
{
    return B ? &B->loop : NULL;
}

/* The rendezvous score of node id for key: a 64-bit hash of both. */
static uint64_t owner_score(const char *id, const char *key)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *c = id; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL; /* a separator no id holds */
    for (const char *c = key; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    h ^= h >> 33; /* FNV's low bits mix poorly: finish like splitmix64 */
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

int hub_cluster_owner(const char *key, char *out, size_t outlen)
{
    hub_bus_t *b = B;
    uint64_t now = uv_now(&b->loop);
    const char *self = b->srv->node_id, *best = NULL;
    uint64_t best_score = 0;
    /* this node owns only once it has surely heard every live node (their
     * heartbeats) since its bus came up; the others own from the first
     * message we hear, which is never earlier than they begin to */
    if (b->up_since_ms != 0 && now - b->up_since_ms >= b->heartbeat_ms + 1000) {
        best = self;
        best_score = owner_score(self, key);
    }
    uv_mutex_lock(&b->nodes_mu);
    for (size_t i = 0; i < b->nnodes; i++) {
        uint64_t sc = owner_score(b->nodes[i].id, key);
        if (best == NULL || sc > best_score ||
            (sc == best_score && strcmp(b->nodes[i].id, best) > 0)) {
            best = b->nodes[i].id;
            best_score = sc;
        }
    }
    int rc = best == NULL ? 0 : best == self ? 1 : 2;
    if (best != NULL)
        snprintf(out, outlen, "%s", best);
    uv_mutex_unlock(&b->nodes_mu);
    return rc;
}

/* Posts a use change of name to the bus thread, run by run. */
static void post_use(void (*run)(void *, hub_inbox_msg_t *), const char *name, int delta)
{
    if (B == NULL)
        return;
    size_t l = strlen(name) + 1;
    use_msg_t *m = malloc(sizeof(*m) + l);
    if (m == NULL)
        return;
    m->base.run = run;
    m->delta = delta;
    memcpy(m->name, name, l);
    if (hub_inbox_post(&B->inbox, &m->base) != 0)
        free(m);
}

void hub_cluster_room_use(const char *room_id, int delta)
{
    post_use(run_use, room_id, delta);
}

void hub_cluster_user_use(const char *user_id, int delta)
{
    post_use(run_user, user_id, delta);
}

void hub_cluster_room_event(int kind, const char *room_id, uint64_t conn_id, const char *user_id,
                            const char *name, uint32_t max_clients)
{
    if (B == NULL)
        return;
    char cid[HUB_CLIENT_ID_MAX], num[16];
    const char *f1 = NULL, *f2 = NULL;
    size_t l1 = 0, l2 = 0;
    if (kind == HUB_CL_ROOM_ON) {
        f1 = name && strlen(name) <= NAME_MAX_BYTES ? name : room_id;
        l1 = strlen(f1);
        f2 = num;
        l2 = (size_t)snprintf(num, sizeof(num), "%u", max_clients);
    } else if (kind == HUB_CL_JOIN || kind == HUB_CL_LEAVE) {
        f1 = cid;
        l1 = hub_client_id_format(B->srv, conn_id, cid, sizeof(cid));
        if (kind == HUB_CL_JOIN) {
            f2 = user_id ? user_id : "";
            l2 = strlen(f2);
        }
    }
    size_t al = strlen(room_id), cap = l1 + l2 + 48;
    pub_msg_t *m = malloc(sizeof(*m) + al + cap);
    if (m == NULL) {
        hub_log_warn("cluster: membership delta dropped (out of memory)", "room=%s", room_id);
        return;
    }
    m->base.run = run_pub;
    m->kind = kind;
    m->mtype = 0;
    m->arglen = al;
    memcpy(m->bytes, room_id, al);
    size_t n = 0;
    if (f1 != NULL)
        n = hub_cluster_field_put(m->bytes + al, n, cap, f1, l1);
    if (f2 != NULL)
        n = hub_cluster_field_put(m->bytes + al, n, cap, f2, l2);
    m->len = n;
    if (hub_inbox_post(&B->inbox, &m->base) != 0)
        free(m);
}

size_t hub_cluster_room_members(const char *room_id, hub_cluster_member_t **out)
{
    *out = NULL;
    if (B == NULL)
        return 0;
    size_t n = 0, total = 0;
    uv_mutex_lock(&B->nodes_mu);
    for (size_t i = 0; i < B->nnodes; i++) {
        rroom_t *r = hub_strmap_get(&B->nodes[i].rooms, room_id);
        total += r ? r->members.n : 0;
    }
    hub_cluster_member_t *v = total ? calloc(total, sizeof(*v)) : NULL;
    for (size_t i = 0; v != NULL && i < B->nnodes; i++) {
        rroom_t *r = hub_strmap_get(&B->nodes[i].rooms, room_id);
        size_t it;
        for (hub_strmap_entry_t *e = r ? hub_strmap_first(&r->members, &it) : NULL; e;
             e = hub_strmap_next(&r->members, e, &it)) {
            const char *uid = e->val;
            size_t ul = *uid ? strlen(uid) + 1 : strlen(e->key) + 6;
            v[n].client_id = strdup(e->key);
            v[n].user_id = malloc(ul);
            if (v[n].user_id != NULL)
                snprintf(v[n].user_id, ul, "%s%s", *uid ? "" : "anon-", *uid ? uid : e->key);
            if (v[n].client_id == NULL || v[n].user_id == NULL) {
                free(v[n].client_id);
                free(v[n].user_id);
                continue;
            }
            n++;
        }
    }
    uv_mutex_unlock(&B->nodes_mu);
    if (n == 0) {
        free(v);
        v = NULL;
    }
    *out = v;
    return n;
}

void hub_cluster_members_free(hub_cluster_member_t *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i].client_id);
        free(v[i].user_id);
    }
    free(v);
}

uint32_t hub_cluster_room_count(const char *room_id)
{
    if (B == NULL)
        return 0;
    size_t n = 0;
    uv_mutex_lock(&B->nodes_mu);
    for (size_t i = 0; i < B->nnodes; i++) {
        rroom_t *r = hub_strmap_get(&B->nodes[i].rooms, room_id);
        n += r ? r->members.n : 0;
    }
    uv_mutex_unlock(&B->nodes_mu);
    return (uint32_t)n;
}

uint32_t hub_cluster_room_total(const char *room_id)
{
    hub_room_info_t info;
    uint32_t n = 0;
    if (hub_reg_room_get(room_id, &info) == 0) {
        n = info.member_count;
        hub_reg_info_free(&info);
    }
    return n + hub_cluster_room_count(room_id);
}

int hub_cluster_is_member(const char *room_id, const char *client_id)
{
    if (B == NULL)
        return 0;
    uint64_t conn = hub_client_id_parse(B->srv, client_id, strlen(client_id));
    if (conn != 0)
        return hub_reg_room_is_member(room_id, conn) == 1;
    int found = 0;
    uv_mutex_lock(&B->nodes_mu);
    for (size_t i = 0; !found && i < B->nnodes; i++) {
        rroom_t *r = hub_strmap_get(&B->nodes[i].rooms, room_id);
        found = r != NULL && hub_strmap_get(&r->members, client_id) != NULL;
    }
    uv_mutex_unlock(&B->nodes_mu);
    return found;
}

int hub_cluster_room_info(const char *room_id, hub_room_info_t *out)
{
    if (B == NULL)
        return 0;
    int found = 0;
    memset(out, 0, sizeof(*out));
    uv_mutex_lock(&B->nodes_mu);
    for (size_t i = 0; i < B->nnodes; i++) {
        rroom_t *r = hub_strmap_get(&B->nodes[i].rooms, room_id);
        if (r == NULL)
            continue;
        if (!found) {
            out->name = strdup(r->name);
            out->max_clients = r->max_clients;
        }
        found = 1;
        out->member_count += (uint32_t)r->members.n;
    }
    uv_mutex_unlock(&B->nodes_mu);
    if (found && (out->id = strdup(room_id)) == NULL) {
        hub_reg_info_free(out);
        return 0;
    }
    if (found && out->name == NULL && (out->name = strdup(room_id)) == NULL) {
        hub_reg_info_free(out);
        return 0;
    }
    return found;
}

size_t hub_cluster_rooms_merge(hub_room_info_t **v, size_t n)
{
    if (B == NULL)
        return n;
    hub_strmap_t index; /* room id -> its position + 1 */
    hub_strmap_init(&index);
    for (size_t i = 0; i < n; i++)
        hub_strmap_put(&index, (*v)[i].id, (void *)(uintptr_t)(i + 1));
    size_t cap = n;
    uv_mutex_lock(&B->nodes_mu);
    for (size_t i = 0; i < B->nnodes; i++) {
        size_t it;
        for (hub_strmap_entry_t *e = hub_strmap_first(&B->nodes[i].rooms, &it); e;
             e = hub_strmap_next(&B->nodes[i].rooms, e, &it)) {
            rroom_t *r = e->val;
            uintptr_t at = (uintptr_t)hub_strmap_get(&index, e->key);
            if (at != 0) {
                (*v)[at - 1].member_count += (uint32_t)r->members.n;
                continue;
            }
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 16;
                hub_room_info_t *nv = realloc(*v, nc * sizeof(*nv));
                if (nv == NULL)
                    break;
                *v = nv;
                cap = nc;
            }
            hub_room_info_t *ri = &(*v)[n];
            ri->id = strdup(e->key);
            ri->name = strdup(r->name);
            ri->max_clients = r->max_clients;
            ri->member_count = (uint32_t)r->members.n;
            if (ri->id == NULL || ri->name == NULL ||
                hub_strmap_put(&index, e->key, (void *)(uintptr_t)(n + 1)) != 0) {
                hub_reg_info_free(ri);
                continue;
            }
            n++;
        }
    }
    uv_mutex_unlock(&B->nodes_mu);
    hub_strmap_free(&index);
    return n;
}

int hub_cluster_user_remote(const char *user_id)
{
    if (B == NULL)
        return 0;
    int found = 0;
    uv_mutex_lock(&B->nodes_mu);
    for (size_t i = 0; i < B->nnodes && !found; i++)
        found = hub_strmap_get(&B->nodes[i].users, user_id) != NULL;
    uv_mutex_unlock(&B->nodes_mu);
    return found;
}

int hub_cluster_node_alive(const char *node_id, size_t len)
{
    if (B == NULL)
        return 0;
    if (strlen(B->srv->node_id) == len && memcmp(B->srv->node_id, node_id, len) == 0)
        return 1;
    int alive = 0;
    uv_mutex_lock(&B->nodes_mu);
    for (size_t i = 0; i < B->nnodes && !alive; i++)
        alive = strlen(B->nodes[i].id) == len && memcmp(B->nodes[i].id, node_id, len) == 0;
    uv_mutex_unlock(&B->nodes_mu);
    return alive;
}

int hub_cluster_client_reachable(const char *client_id)
{
    const char *dash = client_id ? strrchr(client_id, '-') : NULL;
    if (B == NULL || dash == NULL || dash == client_id || dash[1] == '\0')
        return 0;
    size_t nl = (size_t)(dash - client_id);
    if (strlen(B->srv->node_id) == nl && memcmp(B->srv->node_id, client_id, nl) == 0)
        return 0; /* ours: the caller already knows it is not here */
    return hub_cluster_node_alive(client_id, nl);
}

size_t hub_cluster_nodes(hub_cluster_node_t *out, size_t max)
{
    if (B == NULL)
        return 0;
    size_t n = 0;
    if (max > 0) {
        snprintf(out[0].node_id, sizeof(out[0].node_id), "%s", B->srv->node_id);
        out[0].clients = (uint32_t)atomic_load(&B->srv->ws_connections);
        out[0].self = 1;
    }
    n = 1;
    uv_mutex_lock(&B->nodes_mu);
    for (size_t i = 0; i < B->nnodes; i++, n++) {
        if (n < max) {
            memcpy(out[n].node_id, B->nodes[i].id, sizeof(out[n].node_id));
            out[n].clients = B->nodes[i].clients;
            out[n].self = 0;
        }
    }
    uv_mutex_unlock(&B->nodes_mu);
    return n;
}

/* ---- inbound, bus thread ------------------------------------------------------ */

static void windows_free(node_t *nd);

/* Moves nd's windows to the graveyard (the oldest grave makes room).
 * Caller holds nodes_mu. */
static void grave_keep(hub_bus_t *b, node_t *nd, uint64_t now)
{
    grave_t *g = &b->graves[0];
    for (int i = 0; i < GRAVES; i++) {
        if (b->graves[i].epoch == 0) {
            g = &b->graves[i];
            break;
        }
        if (b->graves[i].until_ms < g->until_ms)
            g = &b->graves[i];
    }
    if (g->epoch != 0) {
        node_t old;
        old.windows = g->windows;
        windows_free(&old);
    }
    memcpy(g->id, nd->id, sizeof(g->id));
    g->epoch = nd->epoch;
    g->until_ms = now + GRAVE_MS;
    g->windows = nd->windows; /* moved */
    hub_strmap_init(&nd->windows);
}

/* Gives nd back the windows of its own earlier record, if buried. Caller
 * holds nodes_mu. */
static void grave_restore(hub_bus_t *b, node_t *nd)
{
    for (int i = 0; i < GRAVES; i++) {
        grave_t *g = &b->graves[i];
        if (g->epoch == nd->epoch && strcmp(g->id, nd->id) == 0) {
            windows_free(nd);
            nd->windows = g->windows;
            g->epoch = 0;
            return;
        }
    }
}

/* Forgets graves past their time (every one when now is UINT64_MAX).
 * Caller holds nodes_mu. */
static void graves_trim(hub_bus_t *b, uint64_t now)
{
    for (int i = 0; i < GRAVES; i++) {
        grave_t *g = &b->graves[i];
        if (g->epoch != 0 && (now == UINT64_MAX || now > g->until_ms)) {
            node_t old;
            old.windows = g->windows;
            windows_free(&old);
            g->epoch = 0;
        }
    }
}

/* The node record for (id, epoch), created when new (*created = 1). NULL
 * when the table is full, or (*stale = 1) when (id, epoch) is the identity
 * the node had before its last restart: a late message of the old run, or
 * a second process with the same node_id, which would otherwise make the
 * node restart back and forth, each time emptying its rooms. A restarted
 * node's members of the old identity are buried. Caller holds nodes_mu. */
static node_t *node_get(hub_bus_t *b, const char *id, uint64_t epoch, int *created, int *stale)
{
    *created = 0;
    *stale = 0;
    for (size_t i = 0; i < b->nnodes; i++) {
        node_t *nd = &b->nodes[i];
        if (strcmp(nd->id, id) != 0)
            continue;
        if (nd->prev_epoch != 0 && epoch == nd->prev_epoch) {
            *stale = 1;
            return NULL;
        }
        if (nd->epoch != epoch) {
            /* restarted: a new identity under the same id */
            hub_log_info("cluster: node restarted", "node_id=%s", id);
            uint64_t prev = nd->epoch;
            hub_strmap_free(&nd->users);
            windows_free(nd);
            rooms_clear(b, nd, 1);
            memset(nd, 0, sizeof(*nd));
            snprintf(nd->id, sizeof(nd->id), "%s", id);
            nd->epoch = epoch;
            nd->prev_epoch = prev;
            hub_strmap_init(&nd->users);
            hub_strmap_init(&nd->rooms);
            hub_strmap_init(&nd->windows);
            b->snapshot_due = 1;
            *created = 1;
        }
        return nd;
    }
    if (b->nnodes >= MAX_NODES)
        return NULL;
    node_t *v = realloc(b->nodes, (b->nnodes + 1) * sizeof(*v));
    if (v == NULL)
        return NULL;
    b->nodes = v;
    node_t *nd = &v[b->nnodes++];
    memset(nd, 0, sizeof(*nd));
    snprintf(nd->id, sizeof(nd->id), "%s", id);
    nd->epoch = epoch;
    hub_strmap_init(&nd->users);
    hub_strmap_init(&nd->rooms);
    hub_strmap_init(&nd->windows);
    grave_restore(b, nd);
    b->snapshot_due = 1;
    *created = 1;
    hub_log_info("cluster: node joined", "node_id=%s nodes=%zu", id, b->nnodes + 1);
    return nd;
}

static void node_remove(hub_bus_t *b, size_t i, const char *why)
{
    hub_log_info("cluster: node left", "node_id=%s reason=%s nodes=%zu", b->nodes[i].id, why,
                 b->nnodes);
    hub_strmap_free(&b->nodes[i].users);
    grave_keep(b, &b->nodes[i], uv_now(&b->loop));
    rooms_clear(b, &b->nodes[i], 1); /* its members leave every room: flush_dead */
    hub_strmap_free(&b->nodes[i].rooms);
    b->nodes[i] = b->nodes[--b->nnodes];
}

/* Records seq in w; returns 1 when it is new, 0 for a duplicate (or one
 * too old to tell). */
static int window_fresh(window_t *w, uint64_t seq)
{
    if (seq > w->max_seq) {
        uint64_t shift = seq - w->max_seq;
        if (w->max_seq != 0 && shift <= WINDOW_BITS) {
            /* bit i+shift <- bit i; then mark the old max (bit shift-1) */
            uint64_t ws = shift / 64, bs = shift % 64;
            for (int i = WINDOW_WORDS - 1; i >= 0; i--) {
                uint64_t lo = (uint64_t)i >= ws ? w->seen[i - ws] : 0;
                uint64_t lo2 = (uint64_t)i >= ws + 1 ? w->seen[i - ws - 1] : 0;
                w->seen[i] = bs ? (lo << bs) | (lo2 >> (64 - bs)) : lo;
            }
            uint64_t bit = shift - 1;
            w->seen[bit / 64] |= 1ULL << (bit % 64);
        } else {
            memset(w->seen, 0, sizeof(w->seen));
        }
        w->max_seq = seq;
        return 1;
    }
    if (seq == w->max_seq || w->max_seq - seq > WINDOW_BITS)
        return 0;
    uint64_t bit = w->max_seq - seq - 1;
    uint64_t mask = 1ULL << (bit % 64);
    if (w->seen[bit / 64] & mask)
        return 0;
    w->seen[bit / 64] |= mask;
    return 1;
}

/* Records seq of nd's subject; 1 when new. Caller holds nodes_mu. */
static int seq_fresh(node_t *nd, const char *subject, uint64_t seq, uint64_t now)
{
    window_t *w = hub_strmap_get(&nd->windows, subject);
    if (w == NULL) {
        if ((w = calloc(1, sizeof(*w))) == NULL)
            return 1; /* out of memory: deliver rather than lose */
        if (hub_strmap_put(&nd->windows, subject, w) != 0) {
            free(w);
            return 1;
        }
    }
    w->last_ms = now;
    return window_fresh(w, seq);
}

/* Frees nd's windows (node record going away). */
static void windows_free(node_t *nd)
{
    hub_strmap_free_values(&nd->windows);
}

/* Forgets nd's windows idle for STREAM_IDLE_MS. */
static void windows_trim(node_t *nd, uint64_t now)
{
    size_t it;
    for (hub_strmap_entry_t *e = hub_strmap_first(&nd->windows, &it); e;) {
        hub_strmap_entry_t *next = hub_strmap_next(&nd->windows, e, &it);
        window_t *w = e->val;
        if (now - w->last_ms > STREAM_IDLE_MS)
            free(hub_strmap_del(&nd->windows, e->key));
        e = next;
    }
}

/* Adds the '\n'-separated user ids of a snapshot to nd's set. */
static void add_users(node_t *nd, const char *p, size_t n)
{
    const char *end = p + n;
    char id[300];
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = (size_t)((nl ? nl : end) - p);
        if (l > 0 && l < sizeof(id)) {
            memcpy(id, p, l);
            id[l] = '\0';
            hub_strmap_put(&nd->users, id, nd);
        }
        p += l + 1;
    }
}

/* Parses the unsigned decimal or hex number at *p up to a space. */
static int parse_num(const char **p, const char *end, int base, uint64_t *out)
{
    uint64_t v = 0;
    const char *s = *p;
    for (; *p < end && **p != ' ' && **p != '\n'; (*p)++) {
        char c = **p;
        int d = c >= '0' && c <= '9' ? c - '0'
                : base == 16 && c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                     : -1;
        if (d < 0 || v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
            return -1;
        v = v * (uint64_t)base + (uint64_t)d;
    }
    if (*p == s || *p >= end)
        return -1;
    (*p)++; /* the separator */
    *out = v;
    return 0;
}

/* Counts a dropped bus message under reason; why goes to the log, one line
 * per 10 s for all of them (a bus down under traffic drops thousands a
 * second: the counter has every one). */
static void dropped(hub_bus_t *b, int reason, const char *why)
{
    hub_mc_add(&hub_metrics_bus()->bus_dropped[reason], 1);
    uint64_t n = hub_ratelog_hit(&b->drop_log, uv_now(&b->loop));
    if (n)
        hub_log_warn("cluster: bus messages dropped", "reason=%s count=%llu", why,
                     (unsigned long long)n);
}

/* Two processes configured with one node_id look, to everyone else, like
 * one node restarting back and forth, and their client ids collide. Counted
 * and logged as an error (hub_ratelog_hit); not logged in the first node_timeout
 * after the bus (re)connects, when JetStream may hand back messages of a
 * run that has ended. */
static void shared_id_dropped(hub_bus_t *b, const char *id, const char *what)
{
    hub_mc_add(&hub_metrics_bus()->bus_dropped[HUB_BD_NODE_ID_CONFLICT], 1);
    uint64_t now = uv_now(&b->loop);
    if (b->up_since_ms == 0 || now - b->up_since_ms < b->node_timeout_ms ||
        !hub_ratelog_hit(&b->shared_id_log, now))
        return;
    hub_log_error("cluster: node_id used by two processes", "node_id=%s what=%s", id, what);
}

void hub_bus_transport_message(hub_bus_t *b, const char *subject, size_t slen, const uint8_t *p,
                               size_t n)
{
    char subj[300];
    if (slen == 0 || slen >= sizeof(subj))
        goto bad;
    memcpy(subj, subject, slen);
    subj[slen] = '\0';
    const char *s = (const char *)p, *end = s + n;
    uint64_t epoch, seq, mtype, arglen;
    if (n < 8 || memcmp(s, "GH1 ", 4) != 0 || s[5] != ' ')
        goto bad;
    int kind = s[4];
    const char *q = s + 6, *origin = q;
    while (q < end && *q != ' ')
        q++;
    size_t ol = (size_t)(q - origin);
    if (q >= end || ol == 0 || ol >= sizeof(((node_t *)0)->id))
        goto bad;
    q++;
    if (parse_num(&q, end, 16, &epoch) || parse_num(&q, end, 10, &seq) ||
        parse_num(&q, end, 10, &mtype) || parse_num(&q, end, 10, &arglen) || q[-1] != '\n' ||
        arglen >= 300 || (uint64_t)(end - q) < arglen)
        goto bad;
    char id[72], arg[300];
    memcpy(id, origin, ol);
    id[ol] = '\0';
    memcpy(arg, q, arglen);
    arg[arglen] = '\0';
    const uint8_t *frame = (const uint8_t *)q + arglen;
    size_t flen = (size_t)(end - q) - arglen;
    if (strcmp(id, b->srv->node_id) == 0) {
        /* our own echo; or our node_id with another epoch: another process
         * configured with this node's id, or this node's previous run
         * (JetStream hands back what it had not acknowledged). Its clients'
         * ids are ours, so it can never be a peer. */
        if (epoch != b->epoch)
            shared_id_dropped(b, id, "messages from another process with this node's own "
                                     "node_id (or from this node's previous run) are ignored");
        return;
    }

    /* a message for clients goes to them as it is: it must be one text frame
     * of strict UTF-8 JSON, or one bad message would break their streams.
     * Judged before the node table sees it: a malformed message neither
     * counts as received nor keeps its sender alive. */
    const uint8_t *json;
    size_t jlen;
    if ((kind == HUB_CL_ROOM || kind == HUB_CL_ALL || kind == HUB_CL_CONN || kind == HUB_CL_USER) &&
        (!hub_ws_is_text_frame(frame, flen, &json, &jlen) ||
         !hub_json_valid((const char *)json, jlen)))
        goto bad;

    uv_mutex_lock(&b->nodes_mu);
    int created, stale;
    node_t *nd = node_get(b, id, epoch, &created, &stale);
    if (stale) {
        uv_mutex_unlock(&b->nodes_mu);
        shared_id_dropped(b, id, "messages from the identity this node had before it "
                                 "restarted are ignored");
        return;
    }
    int fresh = nd != NULL && seq_fresh(nd, subj, seq, uv_now(&b->loop));
    /* met through something else than its snapshot (which starts with its
     * users): it sent that before we listened, so ask again */
    int ask = created && fresh && kind != HUB_CL_USERS && kind != HUB_CL_BYE;
    if (nd != NULL)
        hub_mc_add(fresh ? &hub_metrics_bus()->bus_received
                         : &hub_metrics_bus()->bus_dropped[HUB_BD_DUPLICATE], 1);
    if (nd != NULL && fresh) {
        nd->last_ms = uv_now(&b->loop);
        if (kind == HUB_CL_BEAT)
            nd->clients = (uint32_t)strtoul(arg, NULL, 10);
        else if (kind == HUB_CL_USER_ON)
            hub_strmap_put(&nd->users, arg, nd); /* a set: the value is unused */
        else if (kind == HUB_CL_USER_OFF)
            hub_strmap_del(&nd->users, arg);
        else if (kind == HUB_CL_USERS)
            add_users(nd, (const char *)frame, flen);
        else if (kind == HUB_CL_ROOM_ON || kind == HUB_CL_ROOM_OFF || kind == HUB_CL_JOIN ||
                 kind == HUB_CL_LEAVE)
            apply_delta(b, nd, kind, arg, frame, flen);
        else if (kind == HUB_CL_ROOMS)
            apply_rooms(b, nd, arg, frame, flen);
        else if (kind == HUB_CL_SNAP_ASK && strcmp(arg, b->srv->node_id) == 0)
            b->snapshot_due = 1;
        else if (kind == HUB_CL_BYE)
            node_remove(b, (size_t)(nd - b->nodes), "goodbye");
    }
    int snapshot = b->snapshot_due;
    b->snapshot_due = 0;
    uv_mutex_unlock(&b->nodes_mu);
    if (nd == NULL) /* MAX_NODES others known already (or, rarely, no memory for one) */
        dropped(b, HUB_BD_TOO_MANY_NODES, "too many nodes: no room for a new one");
    flush_dead(b);
    if (ask)
        send_now(b, HUB_CL_SNAP_ASK, 0, id, strlen(id), NULL, 0);
    if (snapshot) {
        send_snapshot(b);
        send_rooms_snapshot(b);
    }
    if (!fresh)
        return; /* a duplicate, or no room for its node (counted above) */
    switch (kind) {
    case HUB_CL_ROOM:
    case HUB_CL_ALL:
    case HUB_CL_CONN:
    case HUB_CL_USER:
        hub_fanout_remote(b->srv, kind, arg, frame, flen, (uint8_t)mtype);
        break;
    case HUB_CL_SEAT_ASK:
    case HUB_CL_SEAT_ANS:
    case HUB_CL_SEAT_FREE:
        if (strcmp(arg, b->srv->node_id) == 0)
            hub_seats_on_bus(kind, id, frame, flen);
        break;
    case HUB_CL_QUERY:
    case HUB_CL_REPLY:
        if (strcmp(arg, b->srv->node_id) == 0)
            hub_ops_on_bus(kind, id, arg, frame, flen);
        break;
    case HUB_CL_ROOM_DEL:
        hub_ops_on_bus(kind, id, arg, frame, flen);
        break;
    default:
        break;
    }
    return;
bad:
    hub_mc_add(&hub_metrics_bus()->bus_dropped[HUB_BD_MALFORMED], 1);
    /* a broken or hostile peer can send them by the thousand: one line per
     * 10 s, the counter has every one */
    uint64_t count = hub_ratelog_hit(&b->malformed_log, uv_now(&b->loop));
    if (count)
        hub_log_warn("cluster: malformed bus message dropped", "bytes=%zu count=%llu", n,
                     (unsigned long long)count);
}

/* The metric label of a transport's reason text (bus_redis.c and bus_nats.c
 * pass static strings: "publish buffer full", "no_memory", "slow consumer",
 * "redis_error", "publish failed", ...). */
static int drop_reason(const char *why)
{
    if (strstr(why, "buffer"))
        return HUB_BD_BUFFER_FULL;
    if (strstr(why, "memory"))
        return HUB_BD_OUT_OF_MEMORY;
    if (strstr(why, "slow"))
        return HUB_BD_SLOW_CONSUMER;
    return HUB_BD_BUS_ERROR;
}

void hub_bus_transport_dropped(hub_bus_t *b, const char *why)
{
    dropped(b, drop_reason(why), why);
}

void hub_bus_transport_state(hub_bus_t *b, int connected)
{
    int was = atomic_exchange(&b->state, connected ? HUB_BUS_CONNECTED : HUB_BUS_DOWN);
    if (!connected)
        b->up_since_ms = 0;
    else if (was != HUB_BUS_CONNECTED)
        b->up_since_ms = uv_now(&b->loop) | 1; /* never 0 */
    if (connected && was != HUB_BUS_CONNECTED) {
        if (b->ever_up)
            hub_mc_add(&hub_metrics_bus()->bus_reconnects, 1);
        b->ever_up = 1;
        hub_log_info("cluster: bus connected", "bus=%s subjects=%zu", b->tr->name,
                     b->subjects.n);
        size_t it;
        for (hub_strmap_entry_t *e = hub_strmap_first(&b->subjects, &it); e;
             e = hub_strmap_next(&b->subjects, e, &it))
            b->tr->subscribe(b->impl, e->key);
    } else if (!connected && was == HUB_BUS_CONNECTED) {
        hub_log_warn("cluster: bus down: serving local traffic, reconnecting", "bus=%s",
                     b->tr->name);
    }
}

/* ---- timers ----------------------------------------------------------------- */

static void on_beat(uv_timer_t *t)
{
    hub_bus_t *b = t->data;
    char n[24];
    int l = snprintf(n, sizeof(n), "%ld", atomic_load(&b->srv->ws_connections));
    send_now(b, HUB_CL_BEAT, 0, n, (size_t)l, NULL, 0);
}

static void on_sweep(uv_timer_t *t)
{
    hub_bus_t *b = t->data;
    uint64_t now = uv_now(&b->loop);
    int trim = now - b->last_trim_ms >= 60000;
    uv_mutex_lock(&b->nodes_mu);
    for (size_t i = 0; i < b->nnodes;) {
        if (now - b->nodes[i].last_ms > b->node_timeout_ms) {
            node_remove(b, i, "timeout");
            continue;
        }
        if (trim)
            windows_trim(&b->nodes[i], now);
        i++;
    }
    if (trim)
        graves_trim(b, now);
    uv_mutex_unlock(&b->nodes_mu);
    trim_counters(b, now);
    flush_dead(b);
}

/* ---- thread ----------------------------------------------------------------- */

static void run_stop(void *owner, hub_inbox_msg_t *m)
{
    hub_bus_t *b = owner;
    free(m);
    /* goodbye first, so the others drop this node now, not at the timeout */
    send_now(b, HUB_CL_BYE, 0, "", 0, NULL, 0);
    b->stopping = 1;
    hub_seats_bus_stop();
    hub_ops_bus_stop();
    uv_timer_stop(&b->beat);
    uv_timer_stop(&b->sweep);
    uv_close((uv_handle_t *)&b->beat, NULL);
    uv_close((uv_handle_t *)&b->sweep, NULL);
    b->tr->close(b->impl);
    b->impl = NULL;
    hub_inbox_close(&b->inbox, NULL);
}

static void bus_main(void *arg)
{
    hub_bus_t *b = arg;
    on_bus_thread = 1;
    hub_metrics_bind(hub_metrics_bus()); /* what the registry counts here */
    uv_run(&b->loop, UV_RUN_DEFAULT);
}

int hub_cluster_start(hub_server_t *srv)
{
    const hub_config_t *cfg = srv->cfg;
    if (!cfg->cluster_enabled || cfg->cluster_bus_type == HUB_BUS_TYPE_NOOP)
        return 0;
    hub_bus_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return HUB_ENOMEM;
    b->srv = srv;
    b->heartbeat_ms = cfg->cluster_heartbeat_ms;
    b->node_timeout_ms = cfg->cluster_node_timeout_ms;
    b->presence_events = cfg->rooms_presence_events;
    b->tr = cfg->cluster_bus_type == HUB_BUS_TYPE_REDIS ? &hub_bus_redis : &hub_bus_nats;
    atomic_init(&b->state, HUB_BUS_DOWN);
    if (uv_random(NULL, NULL, &b->epoch, sizeof(b->epoch), 0, NULL) != 0)
        b->epoch = uv_hrtime() ^ ((uint64_t)srv->start_ms << 20);
    hub_strmap_init(&b->subjects);
    hub_strmap_init(&b->counters);
    uv_mutex_init(&b->nodes_mu);
    uv_loop_init(&b->loop);
    hub_inbox_init(&b->inbox, &b->loop, b);
    uv_timer_init(&b->loop, &b->beat);
    uv_timer_init(&b->loop, &b->sweep);
    b->beat.data = b->sweep.data = b;
    int rc = b->tr->open(b, &b->loop, cfg, &b->impl);
    if (rc != 0) {
        hub_log_error("cluster: bad bus configuration", "bus=%s", b->tr->name);
        uv_close((uv_handle_t *)&b->beat, NULL);
        uv_close((uv_handle_t *)&b->sweep, NULL);
        hub_inbox_close(&b->inbox, NULL);
        uv_run(&b->loop, UV_RUN_DEFAULT);
        uv_loop_close(&b->loop);
        hub_inbox_destroy(&b->inbox);
        uv_mutex_destroy(&b->nodes_mu);
        hub_strmap_free(&b->subjects);
        counters_free(b);
        free(b);
        return rc;
    }
    /* subjects every node listens on for its whole life */
    char subject[300];
    use_subject(b, "all", 1);
    use_subject(b, "user", 1);
    use_subject(b, "ctl", 1);
    char cid[96];
    snprintf(cid, sizeof(cid), "%s-0", srv->node_id);
    if (hub_cluster_subject(HUB_CL_CONN, cid, subject, sizeof(subject)))
        use_subject(b, subject, 1);
    uv_timer_start(&b->beat, on_beat, 0, cfg->cluster_heartbeat_ms);
    uv_timer_start(&b->sweep, on_sweep, 1000, 1000);
    B = b;
    if (uv_thread_create(&b->thread, bus_main, b) != 0) {
        B = NULL;
        hub_log_error("cluster: cannot start the bus thread", "");
        return HUB_ENOMEM;
    }
    hub_log_info("cluster: started", "bus=%s node_id=%s epoch=%llx", b->tr->name,
                 srv->node_id, (unsigned long long)b->epoch);
    return 0;
}

void hub_cluster_stop(void)
{
    hub_bus_t *b = B;
    if (b == NULL)
        return;
    stop_msg_t *m = malloc(sizeof(*m));
    if (m != NULL) {
        m->base.run = run_stop;
        if (hub_inbox_post(&b->inbox, &m->base) != 0)
            free(m);
    }
    uv_thread_join(&b->thread);
    B = NULL;
    uv_loop_close(&b->loop);
    hub_inbox_destroy(&b->inbox);
    uv_mutex_destroy(&b->nodes_mu);
    hub_strmap_free(&b->subjects);
    counters_free(b);
    graves_trim(b, UINT64_MAX);
    for (size_t i = 0; i < b->nnodes; i++) {
        hub_strmap_free(&b->nodes[i].users);
        windows_free(&b->nodes[i]);
        rooms_clear(b, &b->nodes[i], 0);
        hub_strmap_free(&b->nodes[i].rooms);
    }
    flush_dead(b); /* stopping: frees without telling */
    free(b->nodes);
    free(b);
}
