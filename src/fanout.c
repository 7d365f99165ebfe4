/* fanout.c: one frame to many connections across workers. Local recipients
 * get a reference to the caller's frame; each other worker with recipients
 * gets one inbox message holding a shared blob of the bytes. Worker thread
 * (the inbox handlers run on the receiving worker). */
#include "fanout.h"

#include <string.h>

#include "cluster.h"
#include "conn.h"
#include "frame.h"
#include "inbox.h"
#include "msg.h"
#include "registry.h"
#include "server.h"
#include "worker.h"

typedef struct {
    hub_worker_t *w;
    hub_frame_t *f;
    uint64_t exclude;
    int sent;
} visit_t;

static void send_to_id(uint64_t id, void *arg)
{
    visit_t *v = arg;
    if (id == v->exclude)
        return;
    hub_conn_t *c = hub_worker_conn(v->w, id);
    if (c != NULL && hub_conn_send(c, v->f) == 0)
        v->sent++;
}

/* ---- inbox messages ---------------------------------------------------- */

typedef struct {
    hub_inbox_msg_t base;
    hub_blob_t *blob;
    uint64_t exclude;
    char room[];
} room_msg_t;

typedef struct {
    hub_inbox_msg_t base;
    hub_blob_t *blob;
    uint64_t exclude;
} all_msg_t;

typedef struct {
    hub_inbox_msg_t base;
    hub_blob_t *blob;
    size_t n;
    uint64_t ids[];
} ids_msg_t;

typedef struct {
    hub_inbox_msg_t base;
    uint64_t conn_id;
    uint16_t code;
    char reason[124];
} close_msg_t;

static hub_frame_t *frame_of(hub_blob_t *b)
{
    hub_frame_t *f = hub_frame_copy(b->data, b->len);
    if (f != NULL)
        f->kind = b->kind;
    hub_blob_release(b);
    return f;
}

static void run_room(void *owner, hub_inbox_msg_t *m)
{
    room_msg_t *rm = (room_msg_t *)m;
    hub_frame_t *f = frame_of(rm->blob);
    if (f != NULL) {
        visit_t v = { owner, f, rm->exclude, 0 };
        hub_reg_room_visit(rm->room, ((hub_worker_t *)owner)->index, 0, send_to_id, &v, NULL);
        hub_frame_release(f);
    }
    free(rm);
}

static int send_all_local(hub_worker_t *w, hub_frame_t *f, uint64_t exclude)
{
    int sent = 0;
    for (hub_conn_t *c = w->conns; c != NULL; c = c->next)
        if (c->state == HUB_CONN_WS && c->id != exclude && hub_conn_send(c, f) == 0)
            sent++;
    return sent;
}

static void run_all(void *owner, hub_inbox_msg_t *m)
{
    all_msg_t *am = (all_msg_t *)m;
    hub_frame_t *f = frame_of(am->blob);
    if (f != NULL) {
        send_all_local(owner, f, am->exclude);
        hub_frame_release(f);
    }
    free(am);
}

static void run_ids(void *owner, hub_inbox_msg_t *m)
{
    ids_msg_t *im = (ids_msg_t *)m;
    hub_frame_t *f = frame_of(im->blob);
    if (f != NULL) {
        visit_t v = { owner, f, 0, 0 };
        for (size_t i = 0; i < im->n; i++)
            send_to_id(im->ids[i], &v);
        hub_frame_release(f);
    }
    free(im);
}

static void run_close(void *owner, hub_inbox_msg_t *m)
{
    close_msg_t *cm = (close_msg_t *)m;
    hub_conn_t *c = hub_worker_conn(owner, cm->conn_id);
    if (c != NULL)
        hub_conn_close(c, cm->code, cm->reason);
    free(cm);
}

static hub_inbox_t *inbox_of(hub_worker_t *w, int index)
{
    return &w->srv->workers[index].inbox;
}

/* Posts one message built by make(i, blob, arg) to each worker i with
 * want[i], all sharing one blob of the frame bytes p..p+n. A message that
 * cannot be built or posted (shutting down) gives its reference back. */
static void post_each(hub_server_t *srv, const uint8_t *p, size_t n, uint8_t mtype,
                      const int *want, hub_inbox_msg_t *(*make)(int, hub_blob_t *, void *),
                      void *arg)
{
    unsigned refs = 0;
    for (int i = 0; i < srv->nworkers; i++)
        refs += want[i] != 0;
    if (refs == 0)
        return;
    hub_blob_t *b = hub_blob_new(p, n, mtype, refs);
    if (b == NULL)
        return;
    for (int i = 0; i < srv->nworkers; i++) {
        if (!want[i])
            continue;
        hub_inbox_msg_t *m = make(i, b, arg);
        if (m == NULL || hub_inbox_post(&srv->workers[i].inbox, m) != 0) {
            free(m);
            hub_blob_release(b);
        }
    }
}

/* What a room or broadcast message is about. */
typedef struct {
    const char *room; /* NULL for a broadcast */
    uint64_t exclude;
} target_t;

static hub_inbox_msg_t *make_room(int i, hub_blob_t *b, void *arg)
{
    HUB_UNUSED(i);
    const target_t *t = arg;
    size_t rl = strlen(t->room) + 1;
    room_msg_t *m = malloc(sizeof(*m) + rl);
    if (m == NULL)
        return NULL;
    m->base.run = run_room;
    m->blob = b;
    m->exclude = t->exclude;
    memcpy(m->room, t->room, rl);
    return &m->base;
}

static hub_inbox_msg_t *make_all(int i, hub_blob_t *b, void *arg)
{
    HUB_UNUSED(i);
    const target_t *t = arg;
    all_msg_t *m = malloc(sizeof(*m));
    if (m == NULL)
        return NULL;
    m->base.run = run_all;
    m->blob = b;
    m->exclude = t->exclude;
    return &m->base;
}

typedef struct {
    const uint64_t *ids;
    const int *workers;
    size_t n;
} id_list_t;

static hub_inbox_msg_t *make_ids(int i, hub_blob_t *b, void *arg)
{
    id_list_t *l = arg;
    size_t k = 0;
    for (size_t j = 0; j < l->n; j++)
        k += l->workers[j] == i;
    ids_msg_t *m = malloc(sizeof(*m) + k * sizeof(uint64_t));
    if (m == NULL)
        return NULL;
    m->base.run = run_ids;
    m->blob = b;
    m->n = 0;
    for (size_t j = 0; j < l->n; j++)
        if (l->workers[j] == i)
            m->ids[m->n++] = l->ids[j];
    return &m->base;
}

/* ---- API --------------------------------------------------------------- */

int hub_fanout_room(hub_worker_t *w, const char *room_id, hub_frame_t *f, uint64_t exclude)
{
    int nw = w->srv->nworkers;
    uint32_t per_worker[256];
    visit_t v = { w, f, exclude, 0 };
    /* the members on other nodes, even when none is left here (a last
     * local member's member_left) */
    hub_cluster_publish(HUB_CL_ROOM, room_id, f);
    int total = hub_reg_room_visit(room_id, w->index, exclude, send_to_id, &v, per_worker);
    if (total < 0)
        return total;
    int want[256]; /* post_each reads the nw entries set here: no 1 KB to zero */
    for (int i = 0; i < nw; i++)
        want[i] = i != w->index && per_worker[i] > 0;
    target_t t = { room_id, exclude };
    post_each(w->srv, f->data, f->len, f->kind, want, make_room, &t);
    return total;
}

int hub_fanout_all(hub_worker_t *w, hub_frame_t *f, uint64_t exclude)
{
    int nw = w->srv->nworkers;
    hub_cluster_publish(HUB_CL_ALL, NULL, f);
    int want[256] = { 0 };
    for (int i = 0; i < nw; i++)
        want[i] = i != w->index;
    target_t t = { NULL, exclude };
    post_each(w->srv, f->data, f->len, f->kind, want, make_all, &t);
    return send_all_local(w, f, exclude);
}

void hub_fanout_ids(hub_worker_t *w, const uint64_t *ids, const int *workers, size_t n,
                    hub_frame_t *f)
{
    visit_t v = { w, f, 0, 0 };
    int want[256] = { 0 };
    for (size_t j = 0; j < n; j++) {
        if (workers[j] == w->index)
            send_to_id(ids[j], &v);
        else if (workers[j] >= 0)
            want[workers[j]] = 1;
    }
    id_list_t l = { ids, workers, n };
    post_each(w->srv, f->data, f->len, f->kind, want, make_ids, &l);
}

int hub_fanout_conn(hub_worker_t *w, uint64_t conn_id, hub_frame_t *f)
{
    int owner = hub_reg_client_worker(conn_id);
    if (owner < 0)
        return HUB_EOFFLINE;
    hub_fanout_ids(w, &conn_id, &owner, 1, f);
    return 0;
}

int hub_fanout_client(hub_worker_t *w, const char *client_id, size_t len, hub_frame_t *f)
{
    uint64_t id = hub_client_id_parse(w->srv, client_id, len);
    if (id != 0)
        return hub_fanout_conn(w, id, f);
    char cid[HUB_CLIENT_ID_MAX];
    if (len >= sizeof(cid))
        return HUB_EOFFLINE;
    memcpy(cid, client_id, len);
    cid[len] = '\0';
    if (!hub_cluster_client_reachable(cid))
        return HUB_EOFFLINE;
    hub_cluster_publish(HUB_CL_CONN, cid, f); /* another live node's client */
    return 0;
}

int hub_fanout_user(hub_worker_t *w, const char *user_id, hub_frame_t *f, int *forwarded)
{
    hub_member_t local[64];
    size_t n = hub_reg_user_conns(user_id, local, HUB_ARRAY_LEN(local));
    if (n > HUB_ARRAY_LEN(local))
        n = HUB_ARRAY_LEN(local); /* a user with more connections gets the first 64 */
    uint64_t ids[64];
    int workers[64];
    for (size_t i = 0; i < n; i++) {
        ids[i] = local[i].conn_id;
        workers[i] = local[i].worker;
    }
    hub_fanout_ids(w, ids, workers, n, f);
    *forwarded = hub_cluster_user_remote(user_id);
    if (*forwarded)
        hub_cluster_publish(HUB_CL_USER, user_id, f); /* its connections on other nodes */
    return (int)n;
}

/* The room_deleted {room_id} frame (the caller releases it), or NULL. */
static hub_frame_t *room_deleted_frame(const char *room_id)
{
    char data[300];
    size_t l = (size_t)snprintf(data, sizeof(data), "{\"room_id\":");
    l = hub_json_quote(data, l, sizeof(data) - 1, room_id, strlen(room_id));
    if (l == (size_t)-1)
        return NULL;
    data[l++] = '}';
    return hub_msg_frame("room_deleted", data, l, hub_msg_next_id(), HUB_NO_REQUEST);
}

/* Delivers room_deleted to the n members m: from worker w (NULL: any
 * other thread, through every worker's inbox). */
static int room_deleted_to(hub_server_t *srv, hub_worker_t *w, const char *room_id,
                           const hub_member_t *m, size_t n)
{
    if (n == 0)
        return 0;
    hub_frame_t *f = room_deleted_frame(room_id);
    uint64_t *ids = malloc(n * sizeof(*ids));
    int *workers = malloc(n * sizeof(*workers));
    int rc = HUB_ENOMEM;
    if (f != NULL && ids != NULL && workers != NULL) {
        int want[256] = { 0 };
        for (size_t i = 0; i < n; i++) {
            ids[i] = m[i].conn_id;
            workers[i] = m[i].worker;
            if (workers[i] >= 0 && workers[i] < srv->nworkers)
                want[workers[i]] = 1;
        }
        if (w != NULL) {
            hub_fanout_ids(w, ids, workers, n, f);
        } else {
            id_list_t l = { ids, workers, n };
            post_each(srv, f->data, f->len, f->kind, want, make_ids, &l);
        }
        rc = (int)n;
    }
    free(ids);
    free(workers);
    hub_frame_release(f);
    return rc;
}

int hub_fanout_room_deleted(hub_worker_t *w, const char *room_id, const hub_member_t *m,
                            size_t n)
{
    return room_deleted_to(w->srv, w, room_id, m, n);
}

int hub_fanout_room_deleted_remote(hub_server_t *srv, const char *room_id,
                                   const hub_member_t *m, size_t n)
{
    return room_deleted_to(srv, NULL, room_id, m, n);
}

hub_frame_t *hub_fanout_presence_frame(const char *type, const char *room, const char *cid,
                                      const char *user_id)
{
    char data[800]; /* a user id of quotes doubles */
    size_t l = (size_t)snprintf(data, sizeof(data), "{\"room_id\":");
    l = hub_json_quote(data, l, sizeof(data), room, strlen(room));
    if (l != (size_t)-1)
        l = hub_json_quote(data, l + (size_t)snprintf(data + l, sizeof(data) - l, ",\"client_id\":"),
                           sizeof(data), cid, strlen(cid));
    if (l != (size_t)-1)
        l = hub_json_quote(data, l + (size_t)snprintf(data + l, sizeof(data) - l, ",\"user_id\":"),
                           sizeof(data) - 1, user_id, strlen(user_id));
    if (l == (size_t)-1)
        return NULL;
    data[l++] = '}';
    return hub_msg_frame(type, data, l, hub_msg_next_id(), HUB_NO_REQUEST);
}

int hub_fanout_presence(hub_worker_t *w, const char *type, const char *room, uint64_t conn_id,
                        const char *user_id)
{
    char cid[HUB_CLIENT_ID_MAX];
    hub_client_id_format(w->srv, conn_id, cid, sizeof(cid));
    hub_frame_t *f = hub_fanout_presence_frame(type, room, cid, user_id);
    if (f == NULL)
        return HUB_ENOMEM;
    int n = hub_fanout_room(w, room, f, conn_id);
    hub_frame_release(f);
    return n;
}

int hub_fanout_close(hub_worker_t *w, uint64_t conn_id, uint16_t code, const char *reason)
{
    int owner = hub_reg_client_worker(conn_id);
    if (owner < 0)
        return HUB_EOFFLINE;
    if (owner == w->index) {
        hub_conn_t *c = hub_worker_conn(w, conn_id);
        if (c == NULL)
            return HUB_EOFFLINE;
        hub_conn_close(c, code, reason);
        return 0;
    }
    close_msg_t *m = malloc(sizeof(*m));
    if (m == NULL)
        return HUB_ENOMEM;
    m->base.run = run_close;
    m->conn_id = conn_id;
    m->code = code;
    snprintf(m->reason, sizeof(m->reason), "%s", reason ? reason : "");
    if (hub_inbox_post(inbox_of(w, owner), &m->base) != 0)
        free(m);
    return 0;
}

/* ---- from other nodes (the bus thread) --------------------------------- */

void hub_fanout_remote(hub_server_t *srv, int kind, const char *arg, const uint8_t *p, size_t n,
                       uint8_t mtype)
{
    int want[256] = { 0 };
    uint64_t ids[64];
    int workers[64];
    id_list_t l = { ids, workers, 0 };
    switch (kind) {
    case HUB_CL_ROOM: {
        uint32_t per_worker[256];
        if (hub_reg_room_visit(arg, -1, 0, NULL, NULL, per_worker) <= 0)
            return;
        for (int i = 0; i < srv->nworkers; i++)
            want[i] = per_worker[i] > 0;
        target_t t = { arg, 0 };
        post_each(srv, p, n, mtype, want, make_room, &t);
        return;
    }
    case HUB_CL_ALL: {
        for (int i = 0; i < srv->nworkers; i++)
            want[i] = 1;
        target_t t = { NULL, 0 };
        post_each(srv, p, n, mtype, want, make_all, &t);
        return;
    }
    case HUB_CL_CONN: {
        uint64_t id = hub_client_id_parse(srv, arg, strlen(arg));
        int owner = id ? hub_reg_client_worker(id) : -1;
        if (owner < 0)
            return;
        ids[0] = id;
        workers[0] = owner;
        l.n = 1;
        want[owner] = 1;
        post_each(srv, p, n, mtype, want, make_ids, &l);
        return;
    }
    case HUB_CL_USER: {
        hub_member_t local[64];
        size_t k = hub_reg_user_conns(arg, local, HUB_ARRAY_LEN(local));
        if (k > HUB_ARRAY_LEN(local))
            k = HUB_ARRAY_LEN(local);
        for (size_t j = 0; j < k; j++) {
            ids[j] = local[j].conn_id;
            workers[j] = local[j].worker;
            want[workers[j]] = 1;
        }
        l.n = k;
        post_each(srv, p, n, mtype, want, make_ids, &l);
        return;
    }
    default:
        return;
    }
}
