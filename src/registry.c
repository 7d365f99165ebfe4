/* registry.c: rooms, clients and users shared by all workers, under one
 * mutex. Every function locks for its whole duration and copies out what it
 * returns, so no caller ever holds a pointer into the registry. */
#include "registry.h"

#include <string.h>
#include <uv.h>

#include "cluster.h"
#include "hmap.h"
#include "metrics.h"
#include "msg.h"

typedef struct {
    uint64_t *ids;
    uint32_t n, cap;
} idvec_t;

typedef struct room_s {
    char *id;
    char *name;
    uint32_t max_clients;
    uint32_t count;
    uint8_t auto_created;
    idvec_t pw[];      /* members per worker */
} room_t;

typedef struct {
    uint64_t conn_id;
    int worker;
    char *user_id;
    uint64_t connected_at; /* ms since the epoch, when it was registered */
    room_t **rooms;
    uint32_t nrooms, cap;
} client_t;

static struct {
    uv_mutex_t mu;
    int nworkers;
    hub_strmap_t rooms;   /* id → room_t */
    hub_idmap_t clients;  /* conn id → client_t */
    hub_strmap_t users;   /* user id → idvec_t (connection ids) */
} R;

static int idvec_push(idvec_t *v, uint64_t id)
{
    if (v->n == v->cap) {
        uint32_t cap = v->cap ? v->cap * 2 : 4;
        uint64_t *n = realloc(v->ids, cap * sizeof(*n));
        if (n == NULL)
            return HUB_ENOMEM;
        v->ids = n;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return 0;
}

static int idvec_remove(idvec_t *v, uint64_t id)
{
    for (uint32_t i = 0; i < v->n; i++) {
        if (v->ids[i] == id) {
            v->ids[i] = v->ids[--v->n];
            return 1;
        }
    }
    return 0;
}

static int idvec_has(const idvec_t *v, uint64_t id)
{
    for (uint32_t i = 0; i < v->n; i++)
        if (v->ids[i] == id)
            return 1;
    return 0;
}

/* The bytes of a room id: A-Z a-z 0-9 _ - : . @ (ASCII; gohub never sets
 * a locale, so isalnum meant these). */
static const uint8_t room_id_byte[256] = {
    ['-'] = 1, ['.'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, [':'] = 1, ['@'] = 1, ['A'] = 1, ['B'] = 1,
    ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1,
    ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['_'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1,
    ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1,
    ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1,
    ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

int hub_reg_valid_room_id(const char *s, size_t len)
{
    if (len == 0 || len > 128)
        return 0;
    unsigned ok = 1;
    for (size_t i = 0; i < len; i++) /* no early exit: ids are short and valid */
        ok &= room_id_byte[(unsigned char)s[i]];
    return (int)ok;
}

int hub_reg_init(int nworkers)
{
    memset(&R, 0, sizeof(R));
    R.nworkers = nworkers;
    hub_strmap_init(&R.rooms);
    hub_idmap_init(&R.clients);
    hub_strmap_init(&R.users);
    return uv_mutex_init(&R.mu);
}

static void room_free(room_t *r)
{
    for (int i = 0; i < R.nworkers; i++)
        free(r->pw[i].ids);
    free(r->id);
    free(r->name);
    free(r);
}

void hub_reg_free(void)
{
    size_t it;
    for (hub_strmap_entry_t *e = hub_strmap_first(&R.rooms, &it); e;
         e = hub_strmap_next(&R.rooms, e, &it))
        room_free(e->val);
    hub_strmap_free(&R.rooms);
    for (size_t i = 0; i < R.clients.cap; i++) {
        client_t *c = R.clients.vals[i];
        if (R.clients.keys[i] && c) {
            free(c->user_id);
            free(c->rooms);
            free(c);
        }
    }
    hub_idmap_free(&R.clients);
    for (hub_strmap_entry_t *e = hub_strmap_first(&R.users, &it); e;
         e = hub_strmap_next(&R.users, e, &it)) {
        idvec_t *v = e->val;
        free(v->ids);
        free(v);
    }
    hub_strmap_free(&R.users);
    uv_mutex_destroy(&R.mu);
}

/* ---- clients ----------------------------------------------------------- */

/* Adds conn_id to user_id's connections (lock held). 0 or HUB_ENOMEM. */
static int user_add_locked(const char *user_id, uint64_t conn_id)
{
    idvec_t *v = hub_strmap_get(&R.users, user_id);
    if (v == NULL) {
        if ((v = calloc(1, sizeof(*v))) == NULL)
            return HUB_ENOMEM;
        if (hub_strmap_put(&R.users, user_id, v) != 0) {
            free(v);
            return HUB_ENOMEM;
        }
    }
    if (idvec_push(v, conn_id) != 0) {
        if (v->n == 0) {
            hub_strmap_del(&R.users, user_id);
            free(v);
        }
        return HUB_ENOMEM;
    }
    if (v->n == 1)
        hub_cluster_user_use(user_id, +1); /* the other nodes' directories */
    return 0;
}

/* Removes conn_id from user_id's connections (lock held); the user goes
 * away with its last connection. */
static void user_remove_locked(const char *user_id, uint64_t conn_id)
{
    idvec_t *v = hub_strmap_get(&R.users, user_id);
    if (v == NULL)
        return;
    idvec_remove(v, conn_id);
    if (v->n == 0) {
        hub_cluster_user_use(user_id, -1);
        hub_strmap_del(&R.users, user_id);
        free(v->ids);
        free(v);
    }
}

int hub_reg_client_add(uint64_t conn_id, int worker, const char *user_id)
{
    client_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return HUB_ENOMEM;
    c->conn_id = conn_id;
    c->worker = worker;
    c->connected_at = hub_now_ms();
    if (user_id && (c->user_id = strdup(user_id)) == NULL) {
        free(c);
        return HUB_ENOMEM;
    }
    uv_mutex_lock(&R.mu);
    int r = hub_idmap_put(&R.clients, conn_id, c);
    if (r == 0 && user_id && (r = user_add_locked(user_id, conn_id)) != 0)
        hub_idmap_del(&R.clients, conn_id); /* c is freed below */
    uv_mutex_unlock(&R.mu);
    if (r != 0) {
        free(c->user_id);
        free(c);
    }
    return r;
}

/* Removes conn_id from room r (lock held). Returns 1 when r was deleted. */
static int leave_locked(room_t *r, client_t *c)
{
    if (!idvec_remove(&r->pw[c->worker], c->conn_id))
        return 0;
    hub_mc_add(&hub_metrics_here()->room_leaves, 1);
    hub_cluster_room_event(HUB_CL_LEAVE, r->id, c->conn_id, NULL, NULL, 0);
    if (--r->count == 0)
        hub_cluster_room_use(r->id, -1); /* no local member left: unsubscribe */
    for (uint32_t i = 0; i < c->nrooms; i++) {
        if (c->rooms[i] == r) {
            c->rooms[i] = c->rooms[--c->nrooms];
            break;
        }
    }
    if (r->count == 0 && r->auto_created) {
        hub_cluster_room_event(HUB_CL_ROOM_OFF, r->id, 0, NULL, NULL, 0);
        hub_strmap_del(&R.rooms, r->id);
        room_free(r);
        return 1;
    }
    return 0;
}

size_t hub_reg_client_remove(uint64_t conn_id, char ***rooms, uint8_t **deleted, size_t *n)
{
    *rooms = NULL;
    *deleted = NULL;
    *n = 0;
    uv_mutex_lock(&R.mu);
    client_t *c = hub_idmap_del(&R.clients, conn_id);
    if (c == NULL) {
        uv_mutex_unlock(&R.mu);
        return 0;
    }
    size_t k = 0, unlisted = c->nrooms;
    if (c->nrooms > 0) {
        *rooms = calloc(c->nrooms, sizeof(char *));
        *deleted = calloc(c->nrooms, 1);
        if (*rooms == NULL || *deleted == NULL) { /* the client still leaves */
            free(*rooms);
            free(*deleted);
            *rooms = NULL;
            *deleted = NULL;
        }
    }
    while (c->nrooms > 0) {
        room_t *r = c->rooms[c->nrooms - 1];
        char *id = *rooms ? strdup(r->id) : NULL;
        int gone = leave_locked(r, c);
        if (id != NULL) {
            (*rooms)[k] = id;
            (*deleted)[k] = (uint8_t)gone;
            k++;
        }
    }
    *n = k;
    unlisted -= k;
    if (c->user_id)
        user_remove_locked(c->user_id, conn_id);
    uv_mutex_unlock(&R.mu);
    free(c->user_id);
    free(c->rooms);
    free(c);
    return unlisted;
}

int hub_reg_client_set_user(uint64_t conn_id, const char *user_id)
{
    char *dup = NULL;
    if (user_id && (dup = strdup(user_id)) == NULL)
        return HUB_ENOMEM;
    uv_mutex_lock(&R.mu);
    int rc = 0;
    client_t *c = hub_idmap_get(&R.clients, conn_id);
    if (c == NULL)
        rc = HUB_EOFFLINE;
    else if (dup != NULL)
        rc = user_add_locked(dup, conn_id); /* first: a failure changes nothing */
    if (rc == 0) {
        /* removes one entry: staying the same user keeps the one just added */
        if (c->user_id)
            user_remove_locked(c->user_id, conn_id);
        char *old = c->user_id;
        c->user_id = dup;
        dup = old;
        for (uint32_t i = 0; i < c->nrooms; i++) /* the other nodes' member lists */
            hub_cluster_room_event(HUB_CL_JOIN, c->rooms[i]->id, conn_id, c->user_id, NULL, 0);
    }
    uv_mutex_unlock(&R.mu);
    free(dup);
    return rc;
}

int hub_reg_client_user(uint64_t conn_id, char *buf, size_t len)
{
    uv_mutex_lock(&R.mu);
    client_t *c = hub_idmap_get(&R.clients, conn_id);
    int has = c != NULL && c->user_id != NULL;
    if (has)
        snprintf(buf, len, "%s", c->user_id);
    uv_mutex_unlock(&R.mu);
    return has;
}

int hub_reg_client_worker(uint64_t conn_id)
{
    uv_mutex_lock(&R.mu);
    client_t *c = hub_idmap_get(&R.clients, conn_id);
    int w = c ? c->worker : -1;
    uv_mutex_unlock(&R.mu);
    return w;
}

size_t hub_reg_users(char ***out)
{
    uv_mutex_lock(&R.mu);
    size_t n = 0, it;
    *out = calloc(R.users.n ? R.users.n : 1, sizeof(char *));
    for (hub_strmap_entry_t *e = hub_strmap_first(&R.users, &it); *out && e;
         e = hub_strmap_next(&R.users, e, &it))
        if (((*out)[n] = strdup(e->key)) != NULL)
            n++;
    uv_mutex_unlock(&R.mu);
    return n;
}

size_t hub_reg_user_conns(const char *user_id, hub_member_t *out, size_t max)
{
    uv_mutex_lock(&R.mu);
    idvec_t *v = hub_strmap_get(&R.users, user_id);
    size_t n = v ? v->n : 0;
    for (size_t i = 0; i < n && i < max; i++) {
        client_t *c = hub_idmap_get(&R.clients, v->ids[i]);
        out[i].conn_id = v->ids[i];
        out[i].worker = c ? c->worker : -1;
        out[i].user_id = NULL;
    }
    uv_mutex_unlock(&R.mu);
    return n;
}

size_t hub_reg_client_rooms(uint64_t conn_id, char ***out)
{
    *out = NULL;
    uv_mutex_lock(&R.mu);
    client_t *c = hub_idmap_get(&R.clients, conn_id);
    size_t n = 0;
    if (c && c->nrooms && (*out = calloc(c->nrooms, sizeof(char *))) != NULL) {
        for (uint32_t i = 0; i < c->nrooms; i++)
            if (((*out)[n] = strdup(c->rooms[i]->id)) != NULL)
                n++;
    }
    uv_mutex_unlock(&R.mu);
    return n;
}

typedef struct {
    uint64_t at, id;
} client_key_t;

static int client_key_cmp(const void *a, const void *b)
{
    const client_key_t *x = a, *y = b;
    if (x->at != y->at)
        return x->at < y->at ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Fills ci from c (lock held). 0 or HUB_ENOMEM (ci is then half-filled:
 * the caller frees it with the rest). */
static int client_info_of(const client_t *c, hub_client_info_t *ci)
{
    ci->conn_id = c->conn_id;
    ci->worker = c->worker;
    ci->connected_at = c->connected_at;
    if (c->user_id && (ci->user_id = strdup(c->user_id)) == NULL)
        return HUB_ENOMEM;
    if (c->nrooms == 0)
        return 0;
    if ((ci->rooms = calloc(c->nrooms, sizeof(char *))) == NULL)
        return HUB_ENOMEM;
    for (uint32_t i = 0; i < c->nrooms; i++, ci->nrooms++)
        if ((ci->rooms[i] = strdup(c->rooms[i]->id)) == NULL)
            return HUB_ENOMEM;
    return 0;
}

int hub_reg_client_list(size_t offset, size_t limit, hub_client_info_t **out, size_t *n,
                        size_t *total)
{
    *out = NULL;
    *n = 0;
    /* pass 1: the sort keys of every client, copied under the lock */
    uv_mutex_lock(&R.mu);
    size_t k = 0;
    *total = R.clients.n;
    client_key_t *keys = *total ? malloc(*total * sizeof(*keys)) : NULL;
    for (size_t i = 0; keys && i < R.clients.cap; i++) {
        const client_t *c = R.clients.vals[i];
        if (R.clients.keys[i] && c)
            keys[k++] = (client_key_t){ c->connected_at, c->conn_id };
    }
    uv_mutex_unlock(&R.mu);
    if (*total && keys == NULL)
        return HUB_ENOMEM;
    /* sorted without the lock: a page is stable while nobody connects */
    if (k > 1)
        qsort(keys, k, sizeof(*keys), client_key_cmp);
    size_t want = offset < k ? k - offset : 0;
    if (want > limit)
        want = limit;
    if (want == 0) {
        free(keys);
        return 0;
    }
    hub_client_info_t *v = calloc(want, sizeof(*v));
    if (v == NULL) {
        free(keys);
        return HUB_ENOMEM;
    }
    /* pass 2: the page's details; a client that left in between is skipped */
    int rc = 0;
    uv_mutex_lock(&R.mu);
    for (size_t i = 0; i < want && rc == 0; i++) {
        const client_t *c = hub_idmap_get(&R.clients, keys[offset + i].id);
        if (c != NULL)
            rc = client_info_of(c, &v[(*n)++]);
    }
    uv_mutex_unlock(&R.mu);
    free(keys);
    if (rc != 0) {
        hub_reg_clients_free(v, *n);
        *n = 0;
        return rc;
    }
    *out = v;
    return 0;
}

void hub_reg_clients_free(hub_client_info_t *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i].user_id);
        hub_reg_strv_free(v[i].rooms, v[i].nrooms);
    }
    free(v);
}

void hub_reg_counts(size_t *clients, size_t *rooms)
{
    uv_mutex_lock(&R.mu);
    *clients = R.clients.n;
    *rooms = R.rooms.n;
    uv_mutex_unlock(&R.mu);
}

/* ---- rooms ------------------------------------------------------------- */

static int info_of(const room_t *r, hub_room_info_t *out)
{
    out->id = strdup(r->id);
    out->name = strdup(r->name);
    out->max_clients = r->max_clients;
    out->member_count = r->count;
    if (out->id == NULL || out->name == NULL) {
        hub_reg_info_free(out);
        return HUB_ENOMEM;
    }
    return 0;
}

static room_t *room_new(const char *id, const char *name, uint32_t max, int auto_created)
{
    room_t *r = calloc(1, sizeof(*r) + (size_t)R.nworkers * sizeof(idvec_t));
    if (r == NULL)
        return NULL;
    r->id = strdup(id);
    r->name = strdup(name && *name ? name : id);
    r->max_clients = max;
    r->auto_created = (uint8_t)auto_created;
    if (r->id == NULL || r->name == NULL || hub_strmap_put(&R.rooms, id, r) != 0) {
        free(r->id);
        free(r->name);
        free(r);
        return NULL;
    }
    hub_cluster_room_event(HUB_CL_ROOM_ON, r->id, 0, NULL, r->name, r->max_clients);
    return r;
}

int hub_reg_room_create(const char *id, const char *name, uint32_t max_clients,
                        int auto_created, hub_room_info_t *out)
{
    hub_room_info_t remote = { 0 };
    uv_mutex_lock(&R.mu);
    int rc = 0;
    room_t *r = hub_strmap_get(&R.rooms, id);
    /* a room another node of the cluster has exists too (lock order:
     * registry, then the cluster's node table) */
    if (r != NULL || (!auto_created && hub_cluster_room_info(id, &remote)))
        rc = HUB_EEXIST;
    else if ((r = room_new(id, name, max_clients, auto_created)) == NULL)
        rc = HUB_ENOMEM;
    else if (out)
        rc = info_of(r, out);
    uv_mutex_unlock(&R.mu);
    hub_reg_info_free(&remote);
    return rc;
}

int hub_reg_room_delete(const char *id, hub_member_t **members, size_t *n)
{
    *members = NULL;
    *n = 0;
    uv_mutex_lock(&R.mu);
    room_t *r = hub_strmap_get(&R.rooms, id);
    if (r == NULL) {
        uv_mutex_unlock(&R.mu);
        return HUB_ENOTFOUND;
    }
    hub_mc_add(&hub_metrics_here()->room_leaves, r->count);
    hub_cluster_room_event(HUB_CL_ROOM_OFF, r->id, 0, NULL, NULL, 0); /* with its members */
    if (r->count > 0) {
        *members = calloc(r->count, sizeof(hub_member_t));
        hub_cluster_room_use(r->id, -1);
    }
    size_t k = 0;
    for (int w = 0; w < R.nworkers; w++) {
        for (uint32_t i = 0; i < r->pw[w].n; i++) {
            client_t *c = hub_idmap_get(&R.clients, r->pw[w].ids[i]);
            if (c == NULL)
                continue;
            for (uint32_t j = 0; j < c->nrooms; j++) {
                if (c->rooms[j] == r) {
                    c->rooms[j] = c->rooms[--c->nrooms];
                    break;
                }
            }
            if (*members) {
                (*members)[k].conn_id = c->conn_id;
                (*members)[k].worker = w;
                (*members)[k].user_id = c->user_id ? strdup(c->user_id) : NULL;
                k++;
            }
        }
    }
    *n = k;
    hub_strmap_del(&R.rooms, id);
    room_free(r);
    uv_mutex_unlock(&R.mu);
    return 0;
}

int hub_reg_room_join(const char *id, uint64_t conn_id, int auto_create, uint32_t default_max,
                      uint32_t max_per_client, uint32_t *seat_max)
{
    int rc;
    hub_room_info_t remote = { 0 };
    uv_mutex_lock(&R.mu);
    client_t *c = hub_idmap_get(&R.clients, conn_id);
    room_t *r = hub_strmap_get(&R.rooms, id);
    /* a room that exists only on other nodes is joined here as they
     * announced it (lock order: registry, then the cluster's node table) */
    int elsewhere = c != NULL && r == NULL && hub_cluster_room_info(id, &remote);
    uint32_t max = r ? r->max_clients : elsewhere ? remote.max_clients : default_max;
    int cluster = hub_cluster_enabled();
    if (c == NULL) {
        rc = HUB_EOFFLINE;
    } else if (r == NULL && !auto_create && !elsewhere) {
        rc = HUB_ENOTFOUND;
    } else if (r != NULL && idvec_has(&r->pw[c->worker], conn_id)) {
        rc = HUB_EALREADY;
    } else if (!cluster && max && (r ? r->count : 0) >= max) {
        rc = HUB_EROOMFULL;
    } else if (max_per_client && c->nrooms >= max_per_client) {
        rc = HUB_ETOOMANY;
    } else if (cluster && max && seat_max != NULL) {
        *seat_max = max; /* the owner counts every node's members */
        rc = HUB_ESEAT;
    } else {
        if (r == NULL)
            r = room_new(id, elsewhere ? remote.name : NULL, max, 1);
        rc = HUB_ENOMEM;
        if (r != NULL && idvec_push(&r->pw[c->worker], conn_id) == 0) {
            if (c->nrooms == c->cap) {
                uint32_t cap = c->cap ? c->cap * 2 : 4;
                room_t **nr = realloc(c->rooms, cap * sizeof(*nr));
                if (nr == NULL) {
                    idvec_remove(&r->pw[c->worker], conn_id);
                    goto out;
                }
                c->rooms = nr;
                c->cap = cap;
            }
            c->rooms[c->nrooms++] = r;
            rc = (int)++r->count;
            if (rc == 1)
                hub_cluster_room_use(r->id, +1); /* the first local member: subscribe */
            hub_cluster_room_event(HUB_CL_JOIN, r->id, conn_id, c->user_id, NULL, 0);
            hub_mc_add(&hub_metrics_here()->room_joins, 1);
        }
    }
out:
    if (rc < 0 && r != NULL && r->count == 0 && r->auto_created) {
        hub_cluster_room_event(HUB_CL_ROOM_OFF, r->id, 0, NULL, NULL, 0);
        hub_strmap_del(&R.rooms, r->id);
        room_free(r);
    }
    uv_mutex_unlock(&R.mu);
    hub_reg_info_free(&remote);
    return rc;
}

int hub_reg_room_leave(const char *id, uint64_t conn_id, int *deleted)
{
    *deleted = 0;
    uv_mutex_lock(&R.mu);
    int rc = 0;
    room_t *r = hub_strmap_get(&R.rooms, id);
    client_t *c = hub_idmap_get(&R.clients, conn_id);
    if (r == NULL)
        rc = HUB_ENOTFOUND;
    else if (c == NULL || !idvec_has(&r->pw[c->worker], conn_id))
        rc = HUB_ENOTMEMBER;
    else
        *deleted = leave_locked(r, c);
    uv_mutex_unlock(&R.mu);
    return rc;
}

int hub_reg_room_get(const char *id, hub_room_info_t *out)
{
    uv_mutex_lock(&R.mu);
    room_t *r = hub_strmap_get(&R.rooms, id);
    int rc = r ? info_of(r, out) : HUB_ENOTFOUND;
    uv_mutex_unlock(&R.mu);
    return rc;
}

size_t hub_reg_room_list(hub_room_info_t **out)
{
    uv_mutex_lock(&R.mu);
    size_t n = 0, it;
    *out = R.rooms.n ? calloc(R.rooms.n, sizeof(hub_room_info_t)) : NULL;
    if (*out) {
        for (hub_strmap_entry_t *e = hub_strmap_first(&R.rooms, &it); e;
             e = hub_strmap_next(&R.rooms, e, &it))
            if (info_of(e->val, &(*out)[n]) == 0)
                n++;
    }
    uv_mutex_unlock(&R.mu);
    return n;
}

int hub_reg_room_members(const char *id, hub_member_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    uv_mutex_lock(&R.mu);
    room_t *r = hub_strmap_get(&R.rooms, id);
    if (r == NULL) {
        uv_mutex_unlock(&R.mu);
        return HUB_ENOTFOUND;
    }
    if (r->count && (*out = calloc(r->count, sizeof(hub_member_t))) != NULL) {
        for (int w = 0; w < R.nworkers; w++) {
            for (uint32_t i = 0; i < r->pw[w].n; i++) {
                client_t *c = hub_idmap_get(&R.clients, r->pw[w].ids[i]);
                hub_member_t *m = &(*out)[(*n)++];
                m->conn_id = r->pw[w].ids[i];
                m->worker = w;
                m->user_id = c && c->user_id ? strdup(c->user_id) : NULL;
            }
        }
    }
    uv_mutex_unlock(&R.mu);
    return 0;
}

int hub_reg_room_is_member(const char *id, uint64_t conn_id)
{
    /* the client's rooms (a few) rather than the room's members (maybe
     * thousands): joins, leaves and deletes keep both lists in step */
    uv_mutex_lock(&R.mu);
    client_t *c = hub_idmap_get(&R.clients, conn_id);
    int yes = 0;
    for (uint32_t i = 0; c != NULL && i < c->nrooms && !yes; i++)
        yes = strcmp(c->rooms[i]->id, id) == 0;
    uv_mutex_unlock(&R.mu);
    return yes;
}

int hub_reg_room_visit(const char *id, int worker, uint64_t exclude,
                       void (*fn)(uint64_t, void *), void *arg, uint32_t *per_worker)
{
    uv_mutex_lock(&R.mu);
    room_t *r = hub_strmap_get(&R.rooms, id);
    if (r == NULL) {
        uv_mutex_unlock(&R.mu);
        return HUB_ENOTFOUND;
    }
    if (per_worker)
        for (int w = 0; w < R.nworkers; w++)
            per_worker[w] = r->pw[w].n;
    if (fn && worker >= 0 && worker < R.nworkers) {
        idvec_t *v = &r->pw[worker];
        for (uint32_t i = 0; i < v->n; i++)
            fn(v->ids[i], arg);
    }
    int count = (int)r->count;
    if (exclude != 0) {
        client_t *c = hub_idmap_get(&R.clients, exclude);
        count -= c != NULL && idvec_has(&r->pw[c->worker], exclude);
    }
    uv_mutex_unlock(&R.mu);
    return count;
}

void hub_reg_info_free(hub_room_info_t *r)
{
    if (r == NULL)
        return;
    free(r->id);
    free(r->name);
    r->id = r->name = NULL;
}

void hub_reg_rooms_free(hub_room_info_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        hub_reg_info_free(&v[i]);
    free(v);
}

void hub_reg_members_free(hub_member_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].user_id);
    free(v);
}

void hub_reg_strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}
