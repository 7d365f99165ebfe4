/* seats.c: see seats.h. Everything here runs on the bus thread, except
 * hub_seats_ask and hub_seats_free (workers), which post to it.
 *
 * Asking, for this node's clients: one ask_t per waiting join. It goes to
 * the room's owner (hub_cluster_owner: this node or another); a tick sends
 * it again when the owner has not answered within ATTEMPT_MS (it may have
 * died: the others pick a new owner once they drop it) or answered "retry"
 * (it is not the owner in its own view: still settling, or the nodes'
 * views of who is alive differ for a moment), and answers the worker
 * HUB_SEAT_TIMEOUT at the ask's deadline. A duplicate or late answer finds
 * no ask and is dropped.
 *
 * Owning: per room, the seats granted and not yet seen as members (grant
 * set, each expiring after GRANT_MS unless the member's join is seen or the
 * asker frees it). A room's count is its members on every node
 * (hub_cluster_room_total) plus those grants, and every decision for a room
 * is taken here, one at a time, so a room is never granted more than
 * max_clients seats however the joins race. Granting is idempotent: the
 * same client asking again (a re-sent ask) gets its seat again. */
#include "seats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "hmap.h"
#include "inbox.h"
#include "log.h"
#include "lua_vm.h"
#include "worker.h"

#define ATTEMPT_MS 500     /* an owner silent this long is asked again */
#define RETRY_MS   100     /* after "retry", or while no node can own yet */
#define GRANT_MS   10000   /* a granted seat not seen as a member is freed */
#define TICK_MS    50
#define ASKS_MAX   65536   /* waiting joins on this node; beyond, TIMEOUT at once */

/* A join of this node waiting for a seat. */
typedef struct ask_s {
    struct ask_s *prev, *next; /* the list the tick walks */
    uint64_t req;              /* request id: the key in asks */
    hub_worker_t *w;
    uint64_t conn_id;          /* the connection whose handler waits */
    uint64_t seat_id;          /* the connection the seat is for */
    uint32_t ticket;
    uint32_t max;
    uint64_t deadline_ms;  /* bus loop time it gives up */
    uint64_t next_ms;      /* bus loop time it is (re)sent */
    char cid[HUB_CLIENT_ID_MAX];
    char room[];
} ask_t;

static hub_idmap_t asks;     /* request id -> ask_t (owned), also on ask_list */
static ask_t *ask_list;
static uint64_t next_req;
static hub_strmap_t grants;  /* room id -> hub_strmap_t * of client id -> expiry (uintptr) */
static uv_timer_t tick;
static int tick_on;

/* ---- to the worker ---------------------------------------------------------- */

typedef struct {
    hub_inbox_msg_t base;
    uint64_t conn_id, seat_id;
    uint32_t ticket;
    int verdict;
    char room[];
} answer_msg_t;

static void run_answer(void *owner, hub_inbox_msg_t *m)
{
    answer_msg_t *am = (answer_msg_t *)m;
    hub_vm_seat_answer(owner, am->conn_id, am->seat_id, am->room, am->ticket, am->verdict);
    free(am);
}

/* Answers ask a (and frees it: the caller has removed it from asks). */
static void answer(ask_t *a, int verdict)
{
    size_t rl = strlen(a->room) + 1;
    answer_msg_t *m = malloc(sizeof(*m) + rl);
    if (m != NULL) {
        memcpy(m->room, a->room, rl);
        m->base.run = run_answer;
        m->conn_id = a->conn_id;
        m->seat_id = a->seat_id;
        m->ticket = a->ticket;
        m->verdict = verdict;
        if (hub_inbox_post(&a->w->inbox, &m->base) != 0)
            free(m);
    }
    /* without memory for the answer the handler waits for its deadline in
     * the worker (lua_vm.c also bounds the wait) */
    free(a);
}

/* ---- owning ----------------------------------------------------------------- */

static void grants_drop(const char *room, hub_strmap_t *g)
{
    hub_strmap_del(&grants, room);
    hub_strmap_free(g);
    free(g);
}

/* Forgets room's grants that expired or whose client is now a member;
 * returns how many are left (g may be freed then). */
static uint32_t grants_prune(const char *room, hub_strmap_t *g, uint64_t now)
{
    size_t it;
    for (hub_strmap_entry_t *e = hub_strmap_first(g, &it); e;) {
        hub_strmap_entry_t *next = hub_strmap_next(g, e, &it);
        if ((uint64_t)(uintptr_t)e->val <= now || hub_cluster_is_member(room, e->key))
            hub_strmap_del(g, e->key);
        e = next;
    }
    uint32_t n = (uint32_t)g->n;
    if (n == 0)
        grants_drop(room, g);
    return n;
}

/* The owner's decision on a seat in room for client cid. */
static int decide(const char *room, const char *cid, uint32_t max)
{
    uint64_t now = uv_now(hub_cluster_loop());
    if (hub_cluster_is_member(room, cid))
        return HUB_SEAT_OK; /* the join itself answers already_member */
    hub_strmap_t *g = hub_strmap_get(&grants, room);
    uint32_t pending = g ? grants_prune(room, g, now) : 0;
    g = pending ? g : NULL;
    uintptr_t until = (uintptr_t)(now + GRANT_MS);
    if (g != NULL && hub_strmap_get(g, cid) != NULL) {
        hub_strmap_put(g, cid, (void *)until); /* asked again: the same seat */
        return HUB_SEAT_OK;
    }
    if (hub_cluster_room_total(room) + pending >= max)
        return HUB_SEAT_FULL;
    if (g == NULL) {
        if ((g = malloc(sizeof(*g))) == NULL)
            return HUB_SEAT_TIMEOUT;
        hub_strmap_init(g);
        if (hub_strmap_put(&grants, room, g) != 0) {
            free(g);
            return HUB_SEAT_TIMEOUT;
        }
    }
    if (hub_strmap_put(g, cid, (void *)until) != 0) {
        if (g->n == 0)
            grants_drop(room, g);
        return HUB_SEAT_TIMEOUT; /* out of memory: the asker tries again */
    }
    return HUB_SEAT_OK;
}

static void grant_forget(const char *room, const char *cid)
{
    hub_strmap_t *g = hub_strmap_get(&grants, room);
    if (g != NULL && hub_strmap_del(g, cid) != NULL && g->n == 0)
        grants_drop(room, g);
}

void hub_seats_joined(const char *room, const char *client_id)
{
    grant_forget(room, client_id);
}

/* ---- asking ----------------------------------------------------------------- */

static int ask_add(ask_t *a)
{
    if (hub_idmap_put(&asks, a->req, a) != 0)
        return HUB_ENOMEM;
    a->prev = NULL;
    a->next = ask_list;
    if (ask_list)
        ask_list->prev = a;
    ask_list = a;
    return 0;
}

static void ask_remove(ask_t *a)
{
    hub_idmap_del(&asks, a->req);
    if (a->prev)
        a->prev->next = a->next;
    else
        ask_list = a->next;
    if (a->next)
        a->next->prev = a->prev;
}

static void tick_start(void);

/* Sends ask a (request id req) to the room's owner, or decides it here.
 * Returns 1 when a was answered (and freed; the caller removes it). */
static int ask_send(ask_t *a, uint64_t now)
{
    char owner[80];
    int who = hub_cluster_owner(a->room, owner, sizeof(owner));
    if (who == 1) {
        int v = decide(a->room, a->cid, a->max);
        if (v != HUB_SEAT_TIMEOUT) {
            answer(a, v);
            return 1;
        }
        a->next_ms = now + RETRY_MS;
        return 0;
    }
    if (who == 0) {
        a->next_ms = now + RETRY_MS; /* nobody can own yet: this node is settling */
        return 0;
    }
    uint8_t buf[512];
    char num[24], rid[24];
    size_t n = hub_cluster_field_put(buf, 0, sizeof(buf), a->room, strlen(a->room));
    n = n ? hub_cluster_field_put(buf, n, sizeof(buf), a->cid, strlen(a->cid)) : 0;
    snprintf(num, sizeof(num), "%u", a->max);
    n = n ? hub_cluster_field_put(buf, n, sizeof(buf), num, strlen(num)) : 0;
    snprintf(rid, sizeof(rid), "%llu", (unsigned long long)a->req);
    n = n ? hub_cluster_field_put(buf, n, sizeof(buf), rid, strlen(rid)) : 0;
    if (n > 0)
        hub_cluster_send(HUB_CL_SEAT_ASK, owner, buf, n);
    a->next_ms = now + ATTEMPT_MS;
    return 0;
}

static void on_tick(uv_timer_t *t)
{
    HUB_UNUSED(t);
    uint64_t now = uv_now(hub_cluster_loop());
    for (ask_t *a = ask_list, *next; a; a = next) {
        next = a->next;
        if (now >= a->deadline_ms) {
            hub_log_warn("cluster: no seat answer from the room's owner", "room=%s client_id=%s",
                         a->room, a->cid);
            ask_remove(a);
            answer(a, HUB_SEAT_TIMEOUT);
        } else if (now >= a->next_ms) {
            ask_remove(a); /* ask_send may answer and free it */
            if (!ask_send(a, now) && ask_add(a) != 0)
                answer(a, HUB_SEAT_TIMEOUT);
        }
    }
    size_t it;
    /* expired grants of rooms nobody asks about any more */
    static uint64_t last_sweep;
    if (now - last_sweep >= 1000) {
        last_sweep = now;
        for (hub_strmap_entry_t *e = hub_strmap_first(&grants, &it); e;) {
            hub_strmap_entry_t *next = hub_strmap_next(&grants, e, &it);
            grants_prune(e->key, e->val, now);
            e = next;
        }
    }
    if (asks.n == 0 && grants.n == 0) {
        uv_timer_stop(&tick);
    }
}

static void tick_start(void)
{
    if (!tick_on) {
        uv_timer_init(hub_cluster_loop(), &tick);
        hub_idmap_init(&asks);
        hub_strmap_init(&grants);
        tick_on = 1;
    }
    if (!uv_is_active((uv_handle_t *)&tick))
        uv_timer_start(&tick, on_tick, TICK_MS, TICK_MS);
}

typedef struct {
    hub_inbox_msg_t base;
    hub_worker_t *w;
    uint64_t conn_id, seat_id;
    uint32_t ticket, max;
    uint64_t wait_ms;
    char room[];
} ask_msg_t;

static void run_ask(void *owner, hub_inbox_msg_t *m)
{
    HUB_UNUSED(owner);
    ask_msg_t *am = (ask_msg_t *)m;
    size_t rl = strlen(am->room) + 1;
    ask_t *a = malloc(sizeof(*a) + rl);
    if (a == NULL) {
        free(am);
        return; /* the worker's own bound ends the wait */
    }
    tick_start();
    uint64_t now = uv_now(hub_cluster_loop());
    a->w = am->w;
    a->conn_id = am->conn_id;
    a->seat_id = am->seat_id;
    a->ticket = am->ticket;
    a->max = am->max;
    a->deadline_ms = now + am->wait_ms;
    hub_client_id_format(am->w->srv, am->seat_id, a->cid, sizeof(a->cid));
    memcpy(a->room, am->room, rl);
    free(am);
    a->req = ++next_req;
    if (asks.n >= ASKS_MAX) {
        answer(a, HUB_SEAT_TIMEOUT);
        return;
    }
    if (ask_send(a, now))
        return;
    if (ask_add(a) != 0)
        answer(a, HUB_SEAT_TIMEOUT);
}

int hub_seats_ask(hub_worker_t *w, uint64_t conn_id, uint64_t seat_id, const char *room,
                  uint32_t max, uint32_t ticket)
{
    size_t rl = strlen(room) + 1;
    ask_msg_t *m = malloc(sizeof(*m) + rl);
    if (m == NULL)
        return HUB_ENOMEM;
    m->base.run = run_ask;
    m->w = w;
    m->conn_id = conn_id;
    m->seat_id = seat_id;
    m->ticket = ticket;
    m->max = max;
    m->wait_ms = hub_seats_wait_ms(w->cfg);
    memcpy(m->room, room, rl);
    int rc = hub_cluster_post(&m->base);
    if (rc != 0)
        free(m);
    return rc;
}

uint64_t hub_seats_wait_ms(const hub_config_t *cfg)
{
    /* long enough for a dead owner to be dropped by every node and a new
     * one to take over */
    return (uint64_t)cfg->cluster_node_timeout_ms + cfg->cluster_heartbeat_ms + 2000;
}

typedef struct {
    hub_inbox_msg_t base;
    char cid[HUB_CLIENT_ID_MAX];
    char room[];
} free_msg_t;

static void run_free(void *owner, hub_inbox_msg_t *m)
{
    HUB_UNUSED(owner);
    free_msg_t *fm = (free_msg_t *)m;
    char node[80];
    int who = hub_cluster_owner(fm->room, node, sizeof(node));
    if (who == 1 && tick_on) {
        grant_forget(fm->room, fm->cid);
    } else if (who == 2) {
        uint8_t buf[512];
        size_t n = hub_cluster_field_put(buf, 0, sizeof(buf), fm->room, strlen(fm->room));
        n = n ? hub_cluster_field_put(buf, n, sizeof(buf), fm->cid, strlen(fm->cid)) : 0;
        if (n > 0)
            hub_cluster_send(HUB_CL_SEAT_FREE, node, buf, n);
    }
    free(fm);
}

void hub_seats_free(hub_worker_t *w, const char *room, uint64_t conn_id)
{
    size_t rl = strlen(room) + 1;
    free_msg_t *m = malloc(sizeof(*m) + rl);
    if (m == NULL)
        return; /* the grant expires by itself */
    m->base.run = run_free;
    hub_client_id_format(w->srv, conn_id, m->cid, sizeof(m->cid));
    memcpy(m->room, room, rl);
    if (hub_cluster_post(&m->base) != 0)
        free(m);
}

/* ---- from the bus --------------------------------------------------------- */

void hub_seats_on_bus(int kind, const char *origin, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    char room[300], cid[HUB_CLIENT_ID_MAX], num[24], rid[24];
    tick_start();
    if (kind == HUB_CL_SEAT_ASK) {
        if (hub_cluster_field_get(&p, end, room, sizeof(room)) ||
            hub_cluster_field_get(&p, end, cid, sizeof(cid)) ||
            hub_cluster_field_get(&p, end, num, sizeof(num)) ||
            hub_cluster_field_get(&p, end, rid, sizeof(rid)))
            goto bad;
        char owner[80];
        uint32_t max = (uint32_t)strtoul(num, NULL, 10);
        int v = hub_cluster_owner(room, owner, sizeof(owner)) == 1 && max > 0
                    ? decide(room, cid, max)
                    : HUB_SEAT_TIMEOUT; /* not the owner here: ask again */
        const char *verdict = v == HUB_SEAT_OK ? "o" : v == HUB_SEAT_FULL ? "f" : "r";
        uint8_t buf[64];
        size_t k = hub_cluster_field_put(buf, 0, sizeof(buf), rid, strlen(rid));
        k = k ? hub_cluster_field_put(buf, k, sizeof(buf), verdict, 1) : 0;
        if (k > 0)
            hub_cluster_send(HUB_CL_SEAT_ANS, origin, buf, k);
    } else if (kind == HUB_CL_SEAT_ANS) {
        if (hub_cluster_field_get(&p, end, rid, sizeof(rid)) ||
            hub_cluster_field_get(&p, end, num, sizeof(num)))
            goto bad;
        uint64_t req = strtoull(rid, NULL, 10);
        ask_t *a = hub_idmap_get(&asks, req);
        if (a == NULL)
            return; /* answered already, or given up */
        if (num[0] == 'r') {
            a->next_ms = uv_now(hub_cluster_loop()) + RETRY_MS;
            return;
        }
        ask_remove(a);
        answer(a, num[0] == 'o' ? HUB_SEAT_OK : HUB_SEAT_FULL);
    } else if (kind == HUB_CL_SEAT_FREE) {
        if (hub_cluster_field_get(&p, end, room, sizeof(room)) ||
            hub_cluster_field_get(&p, end, cid, sizeof(cid)))
            goto bad;
        grant_forget(room, cid);
    }
    return;
bad:
    hub_log_warn("cluster: malformed seat message dropped", "origin=%s kind=%c", origin, kind);
}

void hub_seats_bus_stop(void)
{
    if (!tick_on)
        return;
    for (ask_t *a = ask_list, *next; a; a = next) {
        next = a->next;
        free(a); /* the workers are gone: nobody to answer */
    }
    ask_list = NULL;
    hub_idmap_free(&asks);
    size_t it;
    for (hub_strmap_entry_t *e = hub_strmap_first(&grants, &it); e;
         e = hub_strmap_next(&grants, e, &it)) {
        hub_strmap_free(e->val);
        free(e->val);
    }
    hub_strmap_free(&grants);
    uv_close((uv_handle_t *)&tick, NULL);
    tick_on = 0;
    next_req = 0;
}
