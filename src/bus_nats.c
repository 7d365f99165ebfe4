/* bus_nats.c: the NATS transport of the cluster bus (nats.c 3.4), with
 * optional JetStream persistence.
 *
 * Threads. nats.c runs its own threads (socket reader, flusher, reconnect,
 * message delivery, connection-event callbacks) and delivers every callback
 * on one of them, with or without its libuv adapter: the adapter only moves
 * socket I/O to the loop, and it cannot attach a connection that first
 * connects from nats.c's retry thread (cluster.nats server down at start).
 * So the adapter is not used, and a transport runs three kinds of code:
 *
 *   bus loop thread (open/publish/subscribe/unsubscribe/close, on_events):
 *       never calls into nats.c (publishes, JetStream API requests and even
 *       the first connect can block); it posts commands to the I/O thread
 *       and is the only thread that calls hub_bus_transport_*().
 *   I/O thread (io_main), one per transport: owns the natsConnection, the
 *       JetStream context and the subject -> subscription map; runs every
 *       nats.c call, blocking ones included, in command order.
 *   nats.c threads (on_msg, on_disconnected, ...): copy what they need into
 *       an event and post it to the loop (a mutex list + uv_async_t), or
 *       raise a flag for the I/O thread. They never touch transport state
 *       other than those two queues.
 *
 * Queues are bounded: publishes waiting for the I/O thread by
 * cluster.publish_buffer (plus a small hand-off slack while the bus is up),
 * nats.c's reconnect buffer by cluster.publish_buffer, inbound messages
 * waiting for the loop by tune.inbound_cap bytes. Beyond a bound a message is
 * dropped and counted through hub_bus_transport_dropped().
 *
 * Order: commands run in the order the loop posted them, except that a
 * publish may run before a SUB/UNSUB/ACK posted after it (never after one
 * posted before it), so a subscribe followed by a publish from this node is
 * seen by the server in that order. Inbound messages of one subscription
 * reach the core in arrival order.
 *
 * Subjects on the wire are stream_name + "." + subject; the prefix is
 * stripped on delivery.
 *
 * JetStream (cluster.nats.use_jetstream). After every (re)connect the I/O
 * thread creates or updates the stream stream_name over stream_name + ".>"
 * (file storage, MaxAge = message_retention, duplicate window =
 * min(retention, 2 min)), then reports the bus up. Publishes wait in the
 * I/O thread's queue while the stream is not ready and then go out as plain
 * NATS publishes with a Nats-Msg-Id header (the core's msg_id), so the
 * server stores a re-published message once. Each subscribed subject is a
 * durable push consumer with explicit acks, DeliverNew, MaxDeliver 5,
 * AckWait 2 s, MaxAckPending 1,000 and InactiveThreshold = retention; its name is derived from this node's id,
 * a per-process nonce and the subject. The consumer survives a lost
 * connection and a transport close()/open() in the same process, so a node
 * away for less than the retention gets what it missed; a restarted
 * process (a new node identity) starts fresh, and the server deletes the
 * abandoned consumers after the retention. unsubscribe() deletes the
 * consumer. A message is acked after hub_bus_transport_message() returned;
 * redeliveries (an ack lost with a killed server, AckWait passed, a message
 * dropped as slow consumer) are deduplicated by the core.
 *
 * close() stops the I/O thread, which closes the connection and waits for
 * nats.c's closed callback and for every subscription's completion
 * callback, so no nats.c thread can touch the transport afterwards. The
 * process should call nats_Close() once at exit (nats.c's global threads).
 */
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <nats/nats.h>

#include "bus.h"
#include "config.h"
#include "hmap.h"
#include "log.h"

/* Limits that are not configuration keys. Tests may lower them. */
static struct {
    size_t inbound_cap;        /* bytes of received messages waiting for the loop */
    int max_pending_msgs;      /* nats.c's per-subscription queue (slow consumer) */
    size_t handoff_slack;      /* extra publish-queue bytes while the bus is up */
    uint32_t close_wait_ms;    /* how long close() waits for nats.c's threads */
    uint32_t sub_retry_ms;     /* retry of failed JetStream subscribes/deletes */
    int64_t max_deliver;       /* JetStream MaxDeliver */
    uint32_t ack_wait_ms;      /* JetStream AckWait (the server's default is 30 s) */
    int64_t max_ack_pending;   /* JetStream MaxAckPending, below the core's window */
    int64_t max_pending_acks;  /* JetStream publishes awaiting the stream's ack */
    uint32_t consumer_heartbeat_ms; /* JetStream idle heartbeat of each consumer */
} tune = { 64u << 20, 65536, 256u << 10, 10000, 1000, 5, 2000, 1000, 65536, 2000 };

#define MSG_ID_MAX 128
#define MSG_ID_HDR "Nats-Msg-Id"
/* bytes a Nats-Msg-Id header adds besides the id: "NATS/1.0\r\n" +
 * "Nats-Msg-Id: " + "\r\n\r\n" */
#define MSG_ID_OVERHEAD 31
#define DUP_WINDOW_MAX_MS (120u * 1000u)
#define LINK_CHECK_MS 1000 /* how often the I/O thread looks at the connection's status */

enum { CMD_PUB = 1, CMD_SUB, CMD_UNSUB, CMD_ACK };
enum { EV_STATE = 1, EV_MSG, EV_DROPPED };

/* A request from the loop to the I/O thread; one allocation. */
typedef struct cmd_s {
    struct cmd_s *next;
    int type;
    size_t cost;           /* bytes counted against the publish queue (PUB) */
    size_t n;              /* payload bytes (PUB) */
    const uint8_t *data;   /* into text (PUB) */
    const char *msg_id;    /* into text, or NULL (PUB) */
    char text[];           /* PUB: wire subject; SUB/UNSUB: subject; ACK: reply */
} cmd_t;

typedef struct {
    cmd_t *head, *tail;
} cmd_list_t;

/* Something for the loop; one allocation. */
typedef struct ev_s {
    struct ev_s *next;
    int type;
    int connected;         /* EV_STATE */
    uint64_t count;        /* EV_DROPPED */
    const char *why;       /* EV_DROPPED: a static string */
    size_t slen, n;        /* EV_MSG */
    const uint8_t *data;   /* EV_MSG, into text */
    const char *reply;     /* EV_MSG with JetStream: the ack subject, into text */
    char text[];           /* EV_MSG: subject as subscribed */
} ev_t;

/* One subscribed subject (I/O thread only). */
typedef struct {
    natsSubscription *sub; /* NULL while pending (not connected, stream not ready) */
    int wanted;            /* the core subscribed it */
    int need_delete;       /* JetStream: its consumer still has to be deleted */
    int warned;            /* a failure was logged once */
    int64_t dropped_seen;  /* nats.c's slow-consumer drops already reported */
    /* JetStream: the stream time (ns) this node has everything up to: the
     * newest message it acked, or its consumer's creation; 0 = unknown */
    int64_t since_ns;
    int resume;            /* recreate the consumer from since_ns, not "new" */
    uint32_t gen;          /* consumers made for it after server restarts */
    char durable[64];
} sub_entry_t;

typedef struct {
    /* immutable after open */
    hub_bus_t *bus;
    uv_loop_t *loop;
    char *prefix;          /* stream_name + "." */
    size_t prefix_len;
    char *stream;
    int js;
    uint32_t retention_ms;
    uint32_t connect_timeout_ms;
    uint32_t max_backoff_ms;
    uint64_t publish_buffer;
    char *node_key;        /* cluster/server node id, may be "" */
    uint64_t node_hash;    /* durable names: node id + process nonce */

    /* loop thread only */
    uv_async_t async;
    int reported;          /* last state given to the core */
    int closing;

    /* events to the loop (any thread) */
    uv_mutex_t ev_mu;
    ev_t *ev_head, *ev_tail;
    size_t ev_bytes;
    uint64_t ev_slow_drops;
    int ev_closed;

    /* commands to the I/O thread (any thread) */
    uv_mutex_t cmd_mu;
    uv_cond_t cmd_cond;
    cmd_list_t ctl;        /* SUB / UNSUB / ACK, never held back */
    cmd_list_t pub;        /* PUB, held while the JetStream stream is not ready */
    size_t pub_bytes;
    int stop;
    int link_changed;      /* nats.c (re)connected or disconnected */
    int link_lost;         /* nats.c disconnected (maybe reconnected since) */
    int slow_flag;         /* nats.c reported a slow consumer */
    int nats_open;         /* connections whose closed callback is still due */
    int live_subs;         /* subscriptions whose completion callback is due */
    atomic_int js_ready;   /* JetStream stream ready (read by publish()) */
    atomic_llong max_payload;

    /* I/O thread only */
    uv_thread_t thread;
    natsOptions *opts;
    natsConnection *nc;
    jsCtx *jsc;
    hub_strmap_t subs;     /* subject -> sub_entry_t (owned) */
    int ready;             /* JetStream stream ensured since the last connect */
    uint64_t retry_at;     /* ms (uv_hrtime); 0 = nothing to retry */
    uint32_t retry_backoff;
    uint64_t poll_at;      /* ms; 0 = not polling slow-consumer drops */
    int idle_polls;
    int connect_warned;
    char server_id[64];    /* the server of the last JetStream check ("" = none yet) */
    int linked;            /* connected, and consumers checked since (acks count) */
    int published_async;   /* a JetStream publish was made on this context */
    uint64_t check_at;     /* next look at the connection's status (check_link) */
    int last_status;       /* the status handle_link last acted on; -1 = none */
    int leaked;            /* nats.c did not let go in time: never freed */
} nats_t;

/* ---- small helpers -------------------------------------------------------- */

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
#define FNV_INIT 0xcbf29ce484222325ULL

/* A random value drawn once per process: consumers of a restarted process
 * (a new node) never resume those of the previous one. */
static uv_once_t nonce_once = UV_ONCE_INIT;
static uint64_t process_nonce;

static void make_nonce(void)
{
    uint64_t v = 0;
    if (uv_random(NULL, NULL, &v, sizeof(v), 0, NULL) != 0)
        v = uv_hrtime() ^ ((uint64_t)uv_os_getpid() << 32);
    process_nonce = v;
}

/* Stream names may not contain '.', '*', '>', path separators or blanks. */
static int stream_name_ok(const char *s)
{
    if (s == NULL || *s == '\0' || strlen(s) > 64)
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c >= 0x7f || c == '.' || c == '*' || c == '>' || c == '/' ||
            c == '\\')
            return 0;
    }
    return 1;
}

/* [nats://|tls://][user[:pass]@]host[:port], host a name, IPv4 or [IPv6]. */
static int url_ok(const char *u)
{
    if (u == NULL)
        return 0;
    const char *p = strstr(u, "://");
    if (p) {
        size_t sl = (size_t)(p - u);
        if (!((sl == 4 && strncmp(u, "nats", 4) == 0) || (sl == 3 && strncmp(u, "tls", 3) == 0)))
            return 0;
        u = p + 3;
    }
    const char *at = strrchr(u, '@');
    if (at)
        u = at + 1;
    for (p = u; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '/' || (unsigned char)*p >= 0x7f)
            return 0;
    const char *port = NULL;
    if (*u == '[') {
        const char *e = strchr(u, ']');
        if (e == NULL || e == u + 1)
            return 0;
        if (e[1] == ':')
            port = e + 2;
        else if (e[1] != '\0')
            return 0;
    } else {
        const char *c = strchr(u, ':');
        if (c == u)
            return 0;
        if (c) {
            if (strchr(c + 1, ':'))
                return 0;
            port = c + 1;
        }
        if (*u == '\0')
            return 0;
    }
    if (port) {
        if (*port == '\0' || strlen(port) > 5)
            return 0;
        long v = 0;
        for (p = port; *p; p++) {
            if (*p < '0' || *p > '9')
                return 0;
            v = v * 10 + (*p - '0');
        }
        if (v < 1 || v > 65535)
            return 0;
    }
    return 1;
}

static int msg_id_ok(const char *id)
{
    size_t n = 0;
    for (; id[n]; n++)
        if ((unsigned char)id[n] <= ' ' || (unsigned char)id[n] >= 0x7f || n >= MSG_ID_MAX)
            return 0;
    return n > 0;
}

/* ---- events to the loop ------------------------------------------------------ */

/* Appends ev (taken over) and rings the loop; dropped after close(). */
static void ev_post(nats_t *t, ev_t *ev)
{
    ev->next = NULL;
    uv_mutex_lock(&t->ev_mu);
    if (t->ev_closed) {
        uv_mutex_unlock(&t->ev_mu);
        free(ev);
        return;
    }
    if (t->ev_tail)
        t->ev_tail->next = ev;
    else
        t->ev_head = ev;
    t->ev_tail = ev;
    uv_async_send(&t->async);
    uv_mutex_unlock(&t->ev_mu);
}

static void post_dropped(nats_t *t, const char *why, uint64_t count)
{
    if (count == 0)
        return;
    ev_t *ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return; /* out of memory: the count is lost, nothing else */
    ev->type = EV_DROPPED;
    ev->why = why;
    ev->count = count;
    ev_post(t, ev);
}

static void post_state_down(nats_t *t)
{
    ev_t *ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return;
    ev->type = EV_STATE;
    ev->connected = 0;
    ev_post(t, ev);
}

/* I/O thread: reports the bus up if nats.c is connected right now. The
 * check and the append happen under ev_mu, and on_disconnected appends its
 * "down" under ev_mu after nats.c changed the status, so the last state
 * event always matches the connection. */
static void post_state_up(nats_t *t)
{
    ev_t *ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return;
    ev->type = EV_STATE;
    ev->connected = 1;
    uv_mutex_lock(&t->ev_mu);
    int up = !t->ev_closed && natsConnection_Status(t->nc) == NATS_CONN_STATUS_CONNECTED;
    if (up) {
        if (t->ev_tail)
            t->ev_tail->next = ev;
        else
            t->ev_head = ev;
        t->ev_tail = ev;
        uv_async_send(&t->async);
    }
    uv_mutex_unlock(&t->ev_mu);
    if (!up)
        free(ev);
}

/* ---- commands to the I/O thread ---------------------------------------------- */

static void cmd_append(cmd_list_t *l, cmd_t *c)
{
    c->next = NULL;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

static void cmd_free_list(cmd_t *c)
{
    while (c) {
        cmd_t *next = c->next;
        free(c);
        c = next;
    }
}

/* Queues a SUB / UNSUB / ACK command carrying text (an ACK: the reply
 * subject, then after its NUL the subject the message came on). */
static void post_ctl(nats_t *t, int type, const char *text, size_t len, const char *text2)
{
    size_t len2 = text2 ? strlen(text2) + 1 : 0;
    cmd_t *c = malloc(sizeof(*c) + len + 1 + len2);
    if (c == NULL) {
        hub_log_error("nats: out of memory queueing a command", "type=%d", type);
        return;
    }
    memset(c, 0, sizeof(*c));
    c->type = type;
    memcpy(c->text, text, len);
    c->text[len] = '\0';
    if (text2)
        memcpy(c->text + len + 1, text2, len2);
    uv_mutex_lock(&t->cmd_mu);
    cmd_append(&t->ctl, c);
    uv_cond_signal(&t->cmd_cond);
    uv_mutex_unlock(&t->cmd_mu);
}

/* ---- nats.c callbacks (nats.c threads) ----------------------------------------- */

static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    nats_t *t = closure;
    HUB_UNUSED(nc);
    HUB_UNUSED(sub);
    const char *subj = natsMsg_GetSubject(m);
    const char *data = natsMsg_GetData(m);
    int dlen = natsMsg_GetDataLength(m);
    const char *reply = t->js ? natsMsg_GetReply(m) : NULL;
    size_t n = dlen > 0 ? (size_t)dlen : 0;
    if (subj == NULL || strncmp(subj, t->prefix, t->prefix_len) != 0 ||
        subj[t->prefix_len] == '\0') {
        natsMsg_Destroy(m);
        return; /* not ours (cannot happen with our subscriptions) */
    }
    subj += t->prefix_len;
    size_t slen = strlen(subj);
    size_t rlen = reply ? strlen(reply) : 0;
    ev_t *ev = malloc(sizeof(*ev) + slen + 1 + n + (reply ? rlen + 1 : 0));
    if (ev != NULL) {
        memset(ev, 0, sizeof(*ev));
        ev->type = EV_MSG;
        ev->slen = slen;
        ev->n = n;
        memcpy(ev->text, subj, slen + 1);
        uint8_t *d = (uint8_t *)ev->text + slen + 1;
        if (n)
            memcpy(d, data, n);
        ev->data = d;
        if (reply) {
            char *r = (char *)d + n;
            memcpy(r, reply, rlen + 1);
            ev->reply = r;
        }
    }
    natsMsg_Destroy(m);

    size_t cost = slen + n;
    uv_mutex_lock(&t->ev_mu);
    if (t->ev_closed) {
        uv_mutex_unlock(&t->ev_mu);
        free(ev);
        return;
    }
    if (ev == NULL || t->ev_bytes + cost > tune.inbound_cap) {
        /* the loop is behind (or no memory): drop, count, do not ack (a
         * JetStream message is redelivered after AckWait) */
        t->ev_slow_drops++;
        free(ev);
    } else {
        t->ev_bytes += cost;
        ev->next = NULL;
        if (t->ev_tail)
            t->ev_tail->next = ev;
        else
            t->ev_head = ev;
        t->ev_tail = ev;
    }
    uv_async_send(&t->async);
    uv_mutex_unlock(&t->ev_mu);
}

static void flag_link(nats_t *t, int lost)
{
    uv_mutex_lock(&t->cmd_mu);
    t->link_changed = 1;
    t->link_lost |= lost;
    uv_cond_signal(&t->cmd_cond);
    uv_mutex_unlock(&t->cmd_mu);
}

static void on_connected(natsConnection *nc, void *closure)
{
    HUB_UNUSED(nc);
    flag_link(closure, 0);
}

static void enqueue_pub(nats_t *t, const char *pfx, size_t pfx_len, const char *subject,
                        const uint8_t *p, size_t n, const char *msg_id);

/* A publish the stream refused. No responders (the stream is being
 * recreated, or JetStream is not up yet after a restart) and a missing
 * stream are passing: the message goes back to the queue, which holds it
 * until the stream is ready again, and the I/O thread checks the stream
 * (creating it if it is gone) as after a reconnect. Anything else loses
 * it. */
/* Puts m, a JetStream publish of ours, back in the publish queue; 0 when
 * it has no message id (not ours). */
static int requeue_pub(nats_t *t, natsMsg *m)
{
    const char *id = NULL;
    int n = natsMsg_GetDataLength(m);
    if (natsMsgHeader_Get(m, MSG_ID_HDR, &id) != NATS_OK || id == NULL || n < 0)
        return 0;
    enqueue_pub(t, "", 0, natsMsg_GetSubject(m), (const uint8_t *)natsMsg_GetData(m), (size_t)n,
                id);
    return 1;
}

static void on_pub_err(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    nats_t *t = closure;
    HUB_UNUSED(js);
    natsMsg *m = pae->Msg;
    if ((pae->Err == NATS_NO_RESPONDERS || pae->Err == NATS_TIMEOUT ||
         pae->ErrCode == JSStreamNotFoundErr) && requeue_pub(t, m)) {
        flag_link(t, 0);
        return;
    }
    hub_log_warn("nats: publish refused by the stream", "subject=%s error=%s code=%d",
                 natsMsg_GetSubject(m), pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err),
                 (int)pae->ErrCode);
    post_dropped(t, "publish refused by the stream", 1);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    nats_t *t = closure;
    HUB_UNUSED(nc);
    post_state_down(t);
    flag_link(t, 1);
}

static void on_nats_closed(natsConnection *nc, void *closure)
{
    nats_t *t = closure;
    HUB_UNUSED(nc);
    uv_mutex_lock(&t->cmd_mu);
    t->nats_open--;
    t->link_changed = 1; /* the I/O thread looks (see reopen) */
    uv_cond_signal(&t->cmd_cond);
    uv_mutex_unlock(&t->cmd_mu);
}

static void on_sub_complete(void *closure)
{
    nats_t *t = closure;
    uv_mutex_lock(&t->cmd_mu);
    t->live_subs--;
    uv_cond_signal(&t->cmd_cond);
    uv_mutex_unlock(&t->cmd_mu);
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    nats_t *t = closure;
    HUB_UNUSED(nc);
    if (err == NATS_SLOW_CONSUMER) {
        uv_mutex_lock(&t->cmd_mu);
        t->slow_flag = 1;
        uv_cond_signal(&t->cmd_cond);
        uv_mutex_unlock(&t->cmd_mu);
        return;
    }
    if (err == NATS_MISSED_HEARTBEAT) {
        /* a consumer went silent (deleted, or the stream with it): the
         * I/O thread checks the consumers as after a reconnect */
        hub_log_warn("nats: JetStream consumer silent, checking", "subject=%s",
                     sub ? natsSubscription_GetSubject(sub) : "-");
        flag_link(t, 0);
        return;
    }
    hub_log_warn("nats: asynchronous error", "error=%s subject=%s", natsStatus_GetText(err),
                 sub ? natsSubscription_GetSubject(sub) : "-");
}

/* 100 ms doubling up to max_backoff (the closure is that value, not a
 * pointer: nats.c's reconnect thread may call this until the connection is
 * destroyed), minus up to a quarter of jitter. */
static int64_t on_reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
    static _Thread_local uint64_t seed;
    uint64_t max = (uint64_t)(uintptr_t)closure;
    uint64_t d = 100;
    HUB_UNUSED(nc);
    for (int i = 1; i < attempts && d < max; i++)
        d *= 2;
    if (d > max)
        d = max;
    if (seed == 0)
        seed = uv_hrtime() | 1;
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return (int64_t)(d - seed % (d / 4 + 1));
}

/* ---- I/O thread ------------------------------------------------------------------ */

static void schedule_retry(nats_t *t, uint32_t ms)
{
    uint64_t at = now_ms() + ms;
    if (t->retry_at == 0 || at < t->retry_at)
        t->retry_at = at;
}

static void set_ready(nats_t *t, int ready)
{
    t->ready = ready;
    atomic_store(&t->js_ready, ready);
}

/* The stream timestamp (ns) in a JetStream ack subject, 0 if none:
 * $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>, or
 * with <domain>.<account hash> after ACK and a token at the end. */
static int64_t ack_timestamp(const char *reply)
{
    const char *tok[13];
    int n = 0;
    for (const char *p = reply; n < 13; n++) {
        tok[n] = p;
        p = strchr(p, '.');
        if (p == NULL) {
            n++;
            break;
        }
        p++;
    }
    int at = n == 9 ? 7 : n >= 11 && n <= 12 ? 9 : -1;
    if (at < 0 || strncmp(reply, "$JS.ACK.", 8) != 0)
        return 0;
    int64_t v = 0;
    for (const char *p = tok[at]; *p >= '0' && *p <= '9'; p++) {
        if (v > (INT64_MAX - 9) / 10)
            return 0;
        v = v * 10 + (*p - '0');
    }
    return v;
}

/* After acking a message of subject: its entry has everything up to the
 * message's stream time. Not between a disconnect and the check of the
 * consumers after the reconnect: a restarted server may deliver through a
 * consumer whose state skips messages, and those must not move since_ns
 * past the skipped ones (an ack of an older message lost meanwhile costs a
 * redelivery the core drops). */
static void note_acked(nats_t *t, const char *reply, const char *subject)
{
    if (!t->linked)
        return;
    sub_entry_t *e = hub_strmap_get(&t->subs, subject);
    int64_t ts = ack_timestamp(reply);
    if (e != NULL && e->wanted && ts > e->since_ns)
        e->since_ns = ts;
}

static void track_sub(nats_t *t, sub_entry_t *e)
{
    natsSubscription_SetPendingLimits(e->sub, tune.max_pending_msgs,
                                      tune.max_pending_msgs > INT_MAX / 1024
                                          ? INT_MAX
                                          : tune.max_pending_msgs * 1024);
    e->dropped_seen = 0;
    if (natsSubscription_SetOnCompleteCB(e->sub, on_sub_complete, t) == NATS_OK) {
        uv_mutex_lock(&t->cmd_mu);
        t->live_subs++;
        uv_mutex_unlock(&t->cmd_mu);
    }
}

/* Drops e's subscription (its completion callback comes later). */
static void drop_sub(sub_entry_t *e)
{
    if (e->sub == NULL)
        return;
    natsSubscription_Unsubscribe(e->sub);
    natsSubscription_Destroy(e->sub);
    e->sub = NULL;
}

static int wire_subject(nats_t *t, const char *subject, char *buf, size_t len)
{
    int w = snprintf(buf, len, "%s%s", t->prefix, subject);
    return w > 0 && (size_t)w < len;
}

/* e's durable consumer name: node (with the process nonce), subject and,
 * after server restarts, the generation. */
static void name_durable(const nats_t *t, sub_entry_t *e, const char *subject, uint32_t gen)
{
    uint64_t h = fnv1a(FNV_INIT, subject, strlen(subject));
    int n = snprintf(e->durable, sizeof(e->durable), "gohub_%016llx_%016llx",
                     (unsigned long long)t->node_hash, (unsigned long long)h);
    if (gen)
        snprintf(e->durable + n, sizeof(e->durable) - (size_t)n, "_%u", gen);
}

/* JetStream: deletes e's consumer; 1 when it is gone. */
static int delete_consumer(nats_t *t, sub_entry_t *e)
{
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteConsumer(t->jsc, t->stream, e->durable, NULL, &jerr);
    hub_log_debug("nats: delete consumer", "durable=%s status=%s code=%d", e->durable,
                  natsStatus_GetText(s), (int)jerr);
    if (s == NATS_OK || s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr)
        return 1;
    return 0;
}

static void try_subscribe(nats_t *t, const char *subject, sub_entry_t *e)
{
    char wire[1024];
    natsStatus s;
    if (!wire_subject(t, subject, wire, sizeof(wire))) {
        hub_log_error("nats: subject too long", "subject=%s", subject);
        return;
    }
    if (!t->js) {
        s = natsConnection_Subscribe(&e->sub, t->nc, wire, on_msg, t);
    } else {
        if (e->need_delete) {
            if (!delete_consumer(t, e))
                return;
            e->need_delete = 0;
        }
        char desc[256];
        snprintf(desc, sizeof(desc), "gohub node %s subject %s", t->node_key, subject);
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = t->connect_timeout_ms;
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = t->stream;
        so.ManualAck = true;
        so.Config.Durable = e->durable;
        so.Config.Description = desc;
        so.Config.DeliverPolicy = js_DeliverNew;
        if (e->resume && e->since_ns > 0) {
            /* recreated (see resync_subs): from the first message after
             * the newest one this node has; the core drops what it saw */
            so.Config.DeliverPolicy = js_DeliverByStartTime;
            so.Config.OptStartTime = e->since_ns + 1;
        }
        so.Config.AckPolicy = js_AckExplicit;
        so.Config.MaxDeliver = tune.max_deliver;
        /* a message the server delivered but the node never got (the
         * server was killed with it in its write buffer) comes back after
         * AckWait: 2 s, not the server's 30 s */
        so.Config.AckWait = (int64_t)tune.ack_wait_ms * 1000000;
        /* bounds how far behind the newest delivery a redelivery can be,
         * so it stays inside the core's 1,024-message dedupe window */
        so.Config.MaxAckPending = tune.max_ack_pending;
        so.Config.InactiveThreshold = (int64_t)t->retention_ms * 1000000;
        /* the server's idle heartbeats tell a consumer that is gone (nats.c
         * reports missed ones: on_error) */
        so.Config.Heartbeat = (int64_t)tune.consumer_heartbeat_ms * 1000000;
        jsErrCode jerr = 0;
        s = js_Subscribe(&e->sub, t->jsc, wire, on_msg, t, &jo, &so, &jerr);
        if (s != NATS_OK && !e->warned) {
            hub_log_warn("nats: JetStream subscribe failed, retrying", "subject=%s error=%s code=%d",
                         subject, nats_GetLastError(NULL), (int)jerr);
            e->warned = 1;
        }
    }
    hub_log_debug("nats: subscribe", "subject=%s durable=%s status=%s", subject,
                  t->js ? e->durable : "-", natsStatus_GetText(s));
    if (s != NATS_OK) {
        e->sub = NULL;
        return;
    }
    e->warned = 0;
    e->resume = 0;
    track_sub(t, e);
}

/* 1 when the connection is to another server than at the last JetStream
 * check (a restart makes a new server id). */
static int server_changed(nats_t *t)
{
    char id[sizeof(t->server_id)] = "";
    if (natsConnection_GetConnectedServerId(t->nc, id, sizeof(id)) != NATS_OK || !id[0])
        return 0;
    int changed = t->server_id[0] && strcmp(id, t->server_id) != 0;
    memcpy(t->server_id, id, sizeof(id));
    return changed;
}

/* Brings every entry in line with what the core wants (subscribed, or its
 * consumer deleted). verify: JetStream, check existing consumers after a
 * (re)connect. A consumer that is gone (the stream was recreated, or it
 * expired during a long outage) is created again. After a server restart
 * every consumer is recreated: a server killed with writes unflushed comes
 * back with a shorter stream and reuses its sequence numbers, while a
 * consumer's saved state can be past them; it would skip the new messages
 * until the stream caught up (nats-server 2.9 does not correct this).
 * Either way the new consumer starts after the newest message this node
 * has (since_ns). Schedules a retry while something is left pending. */
static void resync_subs(nats_t *t, int verify)
{
    size_t i;
    int pending = 0;
    hub_strmap_entry_t *it, *next;
    int restarted = verify && t->js && server_changed(t);
    for (it = hub_strmap_first(&t->subs, &i); it; it = next) {
        next = hub_strmap_next(&t->subs, it, &i);
        sub_entry_t *e = it->val;
        if (e->wanted && e->sub && verify && t->js) {
            jsConsumerInfo *ci = NULL;
            jsErrCode jerr = 0;
            natsStatus s = js_GetConsumerInfo(&ci, t->jsc, t->stream, e->durable, NULL, &jerr);
            if (s == NATS_OK && ci != NULL && e->since_ns == 0)
                e->since_ns = ci->Created; /* nothing acked yet */
            jsConsumerInfo_Destroy(ci);
            int gone = s != NATS_OK && (s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr);
            if (gone || restarted) {
                hub_log_info(gone ? "nats: JetStream consumer gone, recreating"
                                  : "nats: server restarted, recreating the consumer",
                             "subject=%s since_ns=%lld", it->key, (long long)e->since_ns);
                drop_sub(e);
                e->resume = 1;
                if (restarted && !gone) {
                    /* the new consumer gets a new name: a restarting
                     * server may still be loading the old one, and
                     * subscribing by its name would bind to its state */
                    delete_consumer(t, e);
                    name_durable(t, e, it->key, ++e->gen);
                }
            }
        }
        if (e->wanted && e->sub == NULL)
            try_subscribe(t, it->key, e);
        if (!e->wanted && e->need_delete && delete_consumer(t, e))
            e->need_delete = 0;
        if (!e->wanted && !e->need_delete) {
            free(hub_strmap_del(&t->subs, it->key));
            continue;
        }
        if ((e->wanted && e->sub == NULL) || e->need_delete)
            pending = 1;
    }
    if (pending)
        schedule_retry(t, tune.sub_retry_ms);
}

/* JetStream: creates the stream or updates its config; 1 when it exists. */
static int ensure_stream(nats_t *t)
{
    char subj[128];
    const char *subjects[1] = { subj };
    snprintf(subj, sizeof(subj), "%s>", t->prefix);
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = t->stream;
    sc.Description = "gohub cluster bus";
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Retention = js_LimitsPolicy;
    sc.Discard = js_DiscardOld;
    sc.MaxAge = (int64_t)t->retention_ms * 1000000;
    uint32_t dup = t->retention_ms < DUP_WINDOW_MAX_MS ? t->retention_ms : DUP_WINDOW_MAX_MS;
    sc.Duplicates = (int64_t)dup * 1000000;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = t->connect_timeout_ms;

    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, t->jsc, &sc, &jo, &jerr);
    jsStreamInfo_Destroy(si);
    si = NULL;
    if (s == NATS_OK)
        return 1;
    if (jerr == JSStreamNameExistErr) {
        /* exists with another config (say, a new retention) */
        s = js_UpdateStream(&si, t->jsc, &sc, &jo, &jerr);
        jsStreamInfo_Destroy(si);
        if (s != NATS_OK)
            hub_log_warn("nats: JetStream stream exists, its config could not be updated",
                         "stream=%s error=%s code=%d", t->stream, nats_GetLastError(NULL),
                         (int)jerr);
        return 1; /* usable as it is */
    }
    hub_log_warn("nats: JetStream stream not ready, retrying", "stream=%s error=%s code=%d",
                 t->stream, nats_GetLastError(NULL), (int)jerr);
    return 0;
}

/* The connection state changed (or a retry is due): make the transport
 * match it and report the bus up when it is. */
/* After a (re)connect: publishes the server did not acknowledge on the
 * previous connection go again. A message written just before the server
 * died was lost with the socket; one the server stored is dropped by the
 * stream as a duplicate of its Msg-Id. */
/* Takes the JetStream publishes still awaiting the stream's ack out of the
 * context into out; 0 when there are none. */
static int take_unacked(nats_t *t, natsMsgList *out)
{
    /* libnats 3.4 crashes on a context that never published async */
    return t->jsc != NULL && t->published_async &&
           js_PublishAsyncGetPendingList(out, t->jsc) == NATS_OK;
}

/* Drops the connection: every subscription (entries stay), the JetStream
 * context and the connection itself. Their callbacks may still be due. */
static void destroy_connection(nats_t *t)
{
    size_t i;
    for (hub_strmap_entry_t *it = hub_strmap_first(&t->subs, &i); it;
         it = hub_strmap_next(&t->subs, it, &i)) {
        sub_entry_t *e = it->val;
        natsSubscription_Destroy(e->sub); /* closed already: no unsubscribe, consumers stay */
        e->sub = NULL;
    }
    jsCtx_Destroy(t->jsc);
    t->jsc = NULL;
    t->published_async = 0;
    natsConnection_Destroy(t->nc);
    t->nc = NULL;
}

static void resend_pending(nats_t *t)
{
    natsMsgList pending = { 0 };
    if (!take_unacked(t, &pending))
        return;
    int lost = 0;
    for (int i = 0; i < pending.Count; i++)
        if (js_PublishMsgAsync(t->jsc, &pending.Msgs[i], NULL) != NATS_OK)
            lost++;
    if (pending.Count)
        hub_log_info("nats: publishes not acknowledged before the reconnect sent again",
                     "count=%d failed=%d", pending.Count, lost);
    if (lost)
        post_dropped(t, "publish failed", (uint64_t)lost);
    natsMsgList_Destroy(&pending); /* and the messages not taken again */
}

static void reopen(nats_t *t);

static void handle_link(nats_t *t)
{
    if (t->nc == NULL)
        return;
    int status = natsConnection_Status(t->nc);
    t->last_status = status;
    if (status == NATS_CONN_STATUS_CLOSED) {
        reopen(t);
        return;
    }
    if (status != NATS_CONN_STATUS_CONNECTED) {
        t->linked = 0;
        if (t->js)
            set_ready(t, 0);
        return;
    }
    int64_t mp = natsConnection_GetMaxPayload(t->nc);
    if (mp > 0)
        atomic_store(&t->max_payload, (long long)mp);
    if (t->js) {
        if (!ensure_stream(t)) {
            set_ready(t, 0);
            t->retry_backoff = t->retry_backoff ? t->retry_backoff * 2 : 100;
            if (t->retry_backoff > t->max_backoff_ms)
                t->retry_backoff = t->max_backoff_ms;
            schedule_retry(t, t->retry_backoff);
            return;
        }
        t->retry_backoff = 0;
        set_ready(t, 1);
        resync_subs(t, 1);
        t->linked = 1;
        resend_pending(t);
    } else {
        resync_subs(t, 0);
    }
    hub_log_info("nats: bus connected", "stream=%s jetstream=%d", t->stream, t->js);
    post_state_up(t);
}

static void do_connect(nats_t *t)
{
    natsConnection *nc = NULL;
    natsStatus s = natsConnection_Connect(&nc, t->opts);
    if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
        /* not a reachability problem (nats.c retries those itself) */
        if (!t->connect_warned)
            hub_log_error("nats: cannot connect, retrying", "error=%s", nats_GetLastError(NULL));
        t->connect_warned = 1;
        schedule_retry(t, t->max_backoff_ms);
        return;
    }
    t->nc = nc;
    uv_mutex_lock(&t->cmd_mu);
    t->nats_open++; /* its closed callback is due */
    uv_mutex_unlock(&t->cmd_mu);
    if (t->js) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = t->connect_timeout_ms;
        jo.PublishAsync.ErrHandler = on_pub_err;
        jo.PublishAsync.ErrHandlerClosure = t;
        jo.PublishAsync.MaxPending = tune.max_pending_acks;
        jo.PublishAsync.StallWait = 1; /* then the publish counts as dropped */
        if (natsConnection_JetStream(&t->jsc, nc, &jo) != NATS_OK) {
            hub_log_error("nats: no JetStream context", "error=%s", nats_GetLastError(NULL));
            t->jsc = NULL;
        }
    }
    if (s == NATS_NOT_YET_CONNECTED)
        hub_log_warn("nats: bus not reachable, retrying in the background", "stream=%s",
                     t->stream);
    /* subscriptions asked for meanwhile: nats.c keeps them across reconnects */
    if (!t->js)
        resync_subs(t, 0);
    handle_link(t);
}

/* nats.c has given the connection up for good: it does on a server error
 * it does not retry, or when memory runs out as it starts to reconnect (its
 * callbacks, the disconnected and closed ones too, can then be lost, so the
 * I/O thread also looks at the status every LINK_CHECK_MS). The bus is
 * reported down; the connection and its subscriptions are dropped (the
 * subjects stay wanted, JetStream consumers stay on the server, publishes
 * still awaiting the stream's ack go back to the queue) and a new
 * connection is made after max_backoff, as the redis transport does. */
static void reopen(nats_t *t)
{
    const char *why = NULL;
    natsStatus s = natsConnection_GetLastError(t->nc, &why);
    hub_log_error("nats: connection closed for good, connecting again", "error=%s retry_ms=%u",
                  why && *why ? why : s != NATS_OK ? natsStatus_GetText(s) : "closed",
                  t->max_backoff_ms);
    post_state_down(t);
    t->linked = 0;
    set_ready(t, 0);
    natsMsgList pending = { 0 };
    if (take_unacked(t, &pending)) {
        int lost = 0;
        for (int i = 0; i < pending.Count; i++)
            lost += !requeue_pub(t, pending.Msgs[i]);
        if (lost)
            post_dropped(t, "publish failed", (uint64_t)lost);
        natsMsgList_Destroy(&pending);
    }
    destroy_connection(t);
    t->last_status = -1;
    schedule_retry(t, t->max_backoff_ms);
}

/* Every LINK_CHECK_MS: a status that changed without a callback (nats.c
 * loses them when memory runs out) is acted on as the callback would. */
static void check_link(nats_t *t)
{
    if (t->nc == NULL)
        return;
    int status = natsConnection_Status(t->nc);
    if (status == t->last_status)
        return;
    if (status != NATS_CONN_STATUS_CONNECTED && status != NATS_CONN_STATUS_CLOSED)
        post_state_down(t); /* on_disconnected's report */
    handle_link(t);
}

static void do_sub(nats_t *t, const char *subject)
{
    sub_entry_t *e = hub_strmap_get(&t->subs, subject);
    if (e && e->wanted)
        return; /* idempotent */
    if (e != NULL) { /* wanted again before its consumer was deleted: start afresh */
        e->since_ns = 0;
        e->resume = 0;
    }
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e == NULL || hub_strmap_put(&t->subs, subject, e) != 0) {
            free(e);
            hub_log_error("nats: out of memory subscribing", "subject=%s", subject);
            return;
        }
        name_durable(t, e, subject, 0);
    }
    e->wanted = 1;
    if (t->nc == NULL || (t->js && (!t->ready || t->jsc == NULL))) {
        if (t->nc == NULL)
            schedule_retry(t, t->max_backoff_ms);
        return; /* pending: subscribed once connected / ready */
    }
    try_subscribe(t, subject, e);
    if (e->sub == NULL)
        schedule_retry(t, tune.sub_retry_ms);
}

static void do_unsub(nats_t *t, const char *subject)
{
    sub_entry_t *e = hub_strmap_get(&t->subs, subject);
    if (e == NULL || !e->wanted)
        return; /* idempotent */
    e->wanted = 0;
    drop_sub(e);
    if (t->js && t->jsc) {
        e->need_delete = !(t->ready && delete_consumer(t, e));
        if (e->need_delete)
            schedule_retry(t, tune.sub_retry_ms);
    }
    if (!e->need_delete)
        free(hub_strmap_del(&t->subs, subject));
}

static void do_pub(nats_t *t, cmd_t *c)
{
    natsStatus s;
    if (t->nc == NULL) {
        post_dropped(t, "bus not connected", 1);
        return;
    }
    if (t->js && c->msg_id && t->jsc) {
        /* the stream acknowledges each message; nats.c keeps it until then
         * (see resend_pending), and the Msg-Id lets the stream drop a copy
         * it already has */
        natsMsg *m = NULL;
        s = natsMsg_Create(&m, c->text, NULL, (const char *)c->data, (int)c->n);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(m, MSG_ID_HDR, c->msg_id);
        if (s == NATS_OK)
            s = js_PublishMsgAsync(t->jsc, &m, NULL);
        natsMsg_Destroy(m); /* NULL once nats.c took it */
        t->published_async |= s == NATS_OK;
    } else {
        s = natsConnection_Publish(t->nc, c->text, c->data, (int)c->n);
    }
    if (s == NATS_OK)
        return;
    if (s == NATS_INSUFFICIENT_BUFFER)
        post_dropped(t, "publish buffer full", 1);
    else if (s == NATS_MAX_PAYLOAD)
        post_dropped(t, "payload over the server's max_payload", 1);
    else
        post_dropped(t, "publish failed", 1);
}

/* Reports nats.c's slow-consumer drops since the last poll. */
static void poll_dropped(nats_t *t)
{
    uint64_t total = 0;
    size_t i;
    for (hub_strmap_entry_t *it = hub_strmap_first(&t->subs, &i); it;
         it = hub_strmap_next(&t->subs, it, &i)) {
        sub_entry_t *e = it->val;
        int64_t d = 0;
        if (e->sub && natsSubscription_GetDropped(e->sub, &d) == NATS_OK && d > e->dropped_seen) {
            total += (uint64_t)(d - e->dropped_seen);
            e->dropped_seen = d;
        }
    }
    if (total) {
        hub_log_warn("nats: slow consumer, messages dropped", "count=%llu",
                     (unsigned long long)total);
        post_dropped(t, "slow consumer", total);
        t->idle_polls = 0;
    } else {
        t->idle_polls++;
    }
    t->poll_at = t->idle_polls >= 4 ? 0 : now_ms() + 250;
}

static void run_ctl(nats_t *t, cmd_t *c)
{
    for (; c; c = c->next) {
        switch (c->type) {
        case CMD_SUB:
            do_sub(t, c->text);
            break;
        case CMD_UNSUB:
            do_unsub(t, c->text);
            break;
        case CMD_ACK:
            if (t->nc)
                natsConnection_PublishString(t->nc, c->text, "+ACK");
            note_acked(t, c->text, c->text + strlen(c->text) + 1);
            break;
        default:
            break;
        }
    }
}

static void do_retry(nats_t *t)
{
    t->retry_at = 0;
    if (t->nc == NULL) {
        do_connect(t);
        return;
    }
    if (natsConnection_Status(t->nc) != NATS_CONN_STATUS_CONNECTED)
        return; /* the next (re)connect brings us back here */
    if (t->js && !t->ready)
        handle_link(t);
    else
        resync_subs(t, 0);
}

/* Waits (bounded) until nats.c's threads are done with t. */
static void wait_nats_done(nats_t *t)
{
    uint64_t deadline = now_ms() + tune.close_wait_ms;
    uv_mutex_lock(&t->cmd_mu);
    while (t->nats_open > 0 || t->live_subs > 0) {
        uint64_t now = now_ms();
        if (now >= deadline)
            break;
        uv_cond_timedwait(&t->cmd_cond, &t->cmd_mu, (deadline - now) * 1000000u);
    }
    if (t->nats_open > 0 || t->live_subs > 0) {
        t->leaked = 1;
        hub_log_error("nats: connection did not close in time, its memory is kept",
                      "open=%d live_subs=%d", t->nats_open, t->live_subs);
    }
    uv_mutex_unlock(&t->cmd_mu);
}

static void io_teardown(nats_t *t)
{
    if (t->nc) {
        if (natsConnection_Status(t->nc) == NATS_CONN_STATUS_CONNECTED)
            natsConnection_FlushTimeout(t->nc, t->connect_timeout_ms < 1000 ? t->connect_timeout_ms
                                                                             : 1000);
        natsConnection_Close(t->nc);
    }
    wait_nats_done(t);
    if (t->leaked)
        return;
    destroy_connection(t);
    hub_strmap_free_values(&t->subs);
}

static void io_main(void *arg)
{
    nats_t *t = arg;
    t->last_status = -1;
    do_connect(t);
    t->check_at = now_ms() + LINK_CHECK_MS;
    for (;;) {
        uv_mutex_lock(&t->cmd_mu);
        for (;;) {
            if (t->stop || t->ctl.head || t->link_changed || t->slow_flag)
                break;
            if (t->pub.head && (!t->js || t->ready))
                break;
            uint64_t due = t->retry_at;
            if (t->poll_at && (due == 0 || t->poll_at < due))
                due = t->poll_at;
            if (due == 0 || t->check_at < due)
                due = t->check_at;
            uint64_t now = now_ms();
            if (due && now >= due)
                break;
            if (due)
                uv_cond_timedwait(&t->cmd_cond, &t->cmd_mu, (due - now) * 1000000u);
            else
                uv_cond_wait(&t->cmd_cond, &t->cmd_mu);
        }
        int stop = t->stop, link = t->link_changed, slow = t->slow_flag;
        if (t->link_lost)
            t->linked = 0; /* until handle_link has checked the consumers */
        cmd_t *ctl = t->ctl.head, *pub = NULL;
        t->ctl.head = t->ctl.tail = NULL;
        t->link_changed = t->slow_flag = t->link_lost = 0;
        uv_mutex_unlock(&t->cmd_mu);

        if (link)
            handle_link(t);
        run_ctl(t, ctl);
        cmd_free_list(ctl);

        /* publishes after the link and subscriptions are in line: a
         * publish goes out only after every command queued before it (a
         * SUB posted meanwhile is run first, on the next turn); with
         * JetStream they stay queued until the stream is ready */
        uv_mutex_lock(&t->cmd_mu);
        if ((!t->js || t->ready || stop) && t->ctl.head == NULL) {
            pub = t->pub.head;
            t->pub.head = t->pub.tail = NULL;
            t->pub_bytes = 0;
        }
        uv_mutex_unlock(&t->cmd_mu);
        for (cmd_t *c = pub; c; c = c->next)
            if (!t->js || t->ready)
                do_pub(t, c);
        cmd_free_list(pub);
        if (slow) {
            t->idle_polls = 0;
            t->poll_at = now_ms();
        }
        uint64_t now = now_ms();
        if (t->poll_at && now >= t->poll_at)
            poll_dropped(t);
        if (stop)
            break;
        if (now >= t->check_at) {
            t->check_at = now + LINK_CHECK_MS;
            check_link(t);
        }
        if (t->retry_at && now >= t->retry_at)
            do_retry(t);
    }
    io_teardown(t);
}

/* ---- the loop side ----------------------------------------------------------- */

static void on_events(uv_async_t *h)
{
    nats_t *t = h->data;
    uv_mutex_lock(&t->ev_mu);
    ev_t *ev = t->ev_head;
    t->ev_head = t->ev_tail = NULL;
    t->ev_bytes = 0;
    uint64_t slow = t->ev_slow_drops;
    t->ev_slow_drops = 0;
    uv_mutex_unlock(&t->ev_mu);

    while (ev) {
        ev_t *next = ev->next;
        if (!t->closing) {
            switch (ev->type) {
            case EV_STATE:
                if (ev->connected != t->reported) {
                    t->reported = ev->connected;
                    if (!ev->connected)
                        hub_log_warn("nats: bus disconnected", "stream=%s", t->stream);
                    hub_bus_transport_state(t->bus, ev->connected);
                }
                break;
            case EV_MSG:
                hub_bus_transport_message(t->bus, ev->text, ev->slen, ev->data, ev->n);
                if (ev->reply && !t->closing)
                    post_ctl(t, CMD_ACK, ev->reply, strlen(ev->reply), ev->text);
                break;
            case EV_DROPPED:
                for (uint64_t i = 0; i < ev->count && !t->closing; i++)
                    hub_bus_transport_dropped(t->bus, ev->why);
                break;
            default:
                break;
            }
        }
        free(ev);
        ev = next;
    }
    if (slow && !t->closing) {
        hub_log_warn("nats: bus loop behind, inbound messages dropped", "count=%llu",
                     (unsigned long long)slow);
        for (uint64_t i = 0; i < slow && !t->closing; i++)
            hub_bus_transport_dropped(t->bus, "slow consumer");
    }
}

static void nats_free(nats_t *t)
{
    if (t == NULL)
        return;
    natsOptions_Destroy(t->opts);
    free(t->prefix);
    free(t->stream);
    free(t->node_key);
    free(t);
}

static void on_async_closed(uv_handle_t *h)
{
    nats_t *t = h->data;
    if (t->leaked)
        return; /* nats.c may still call back into t: kept on purpose */
    uv_mutex_destroy(&t->ev_mu);
    uv_mutex_destroy(&t->cmd_mu);
    uv_cond_destroy(&t->cmd_cond);
    nats_free(t);
}

static natsStatus build_options(nats_t *t, const hub_config_t *cfg)
{
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    if (s != NATS_OK)
        return s;
    t->opts = o;
    char name[160];
    snprintf(name, sizeof(name), "gohub %s", t->node_key[0] ? t->node_key : "node");
    int64_t ping = cfg->cluster_connect_timeout_ms < 1000 ? 1000 : cfg->cluster_connect_timeout_ms;
    int rbuf = cfg->cluster_publish_buffer == 0 ? 1
               : cfg->cluster_publish_buffer > INT_MAX ? INT_MAX
                                                       : (int)cfg->cluster_publish_buffer;
    if (s == NATS_OK)
        s = natsOptions_SetServers(o, (const char **)cfg->nats_urls.items, (int)cfg->nats_urls.n);
    if (s == NATS_OK)
        s = natsOptions_SetName(o, name);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(o, cfg->cluster_connect_timeout_ms);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(o, -1); /* forever: the default is 60 tries */
    if (s == NATS_OK)
        s = natsOptions_SetCustomReconnectDelay(o, on_reconnect_delay,
                                                (void *)(uintptr_t)t->max_backoff_ms);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(o, rbuf);
    if (s == NATS_OK)
        s = natsOptions_SetRetryOnFailedConnect(o, true, on_connected, t);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(o, on_disconnected, t);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(o, on_connected, t);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(o, on_nats_closed, t);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(o, on_error, t);
    if (s == NATS_OK) /* one shared delivery thread, not one per subject */
        s = natsOptions_UseGlobalMessageDelivery(o, true);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPendingMsgs(o, tune.max_pending_msgs);
    if (s == NATS_OK) /* a silent server is noticed within ~3 pings */
        s = natsOptions_SetPingInterval(o, ping);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPingsOut(o, 2);
    if (s == NATS_OK) /* a stalled server fails writes instead of blocking them */
        s = natsOptions_SetWriteDeadline(o, ping);
    return s;
}

static int nats_open(hub_bus_t *bus, uv_loop_t *loop, const hub_config_t *cfg, void **impl)
{
    *impl = NULL;
    if (!stream_name_ok(cfg->nats_stream_name)) {
        hub_log_error("nats: invalid cluster.nats.stream_name (no '.', '*', '>', '/', blanks)",
                      "stream=%s", cfg->nats_stream_name ? cfg->nats_stream_name : "");
        return HUB_ECONFIG;
    }
    if (cfg->nats_urls.n == 0 || cfg->nats_urls.n > INT_MAX)
        return HUB_ECONFIG;
    for (size_t i = 0; i < cfg->nats_urls.n; i++) {
        if (!url_ok(cfg->nats_urls.items[i])) {
            /* the index, not the URL: it may carry a password */
            hub_log_error("nats: invalid cluster.nats.urls entry", "index=%zu", i);
            return HUB_ECONFIG;
        }
    }
    uv_once(&nonce_once, make_nonce);

    nats_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return HUB_ENOMEM;
    const char *key = cfg->cluster_node_id && cfg->cluster_node_id[0] ? cfg->cluster_node_id
                      : cfg->server_node_id                            ? cfg->server_node_id
                                                                       : "";
    size_t sl = strlen(cfg->nats_stream_name);
    t->bus = bus;
    t->loop = loop;
    t->stream = strdup(cfg->nats_stream_name);
    t->prefix = malloc(sl + 2);
    t->node_key = strdup(key);
    if (t->stream == NULL || t->prefix == NULL || t->node_key == NULL) {
        nats_free(t);
        return HUB_ENOMEM;
    }
    memcpy(t->prefix, cfg->nats_stream_name, sl);
    t->prefix[sl] = '.';
    t->prefix[sl + 1] = '\0';
    t->prefix_len = sl + 1;
    t->js = cfg->nats_use_jetstream;
    t->retention_ms = cfg->nats_message_retention_ms;
    t->connect_timeout_ms = cfg->cluster_connect_timeout_ms;
    t->max_backoff_ms = cfg->cluster_reconnect_max_backoff_ms < 100
                            ? 100
                            : cfg->cluster_reconnect_max_backoff_ms;
    t->publish_buffer = cfg->cluster_publish_buffer;
    uint64_t h = fnv1a(FNV_INIT, key, strlen(key) + 1);
    t->node_hash = fnv1a(h, &process_nonce, sizeof(process_nonce));
    atomic_init(&t->js_ready, 0);
    atomic_init(&t->max_payload, 1 << 20); /* nats-server's default until we know */
    hub_strmap_init(&t->subs);

    natsStatus s = build_options(t, cfg);
    if (s != NATS_OK) {
        hub_log_error("nats: bad options", "error=%s", natsStatus_GetText(s));
        nats_free(t);
        return HUB_ECONFIG;
    }
    int err = uv_mutex_init(&t->ev_mu);
    if (err == 0 && (err = uv_mutex_init(&t->cmd_mu)) != 0)
        uv_mutex_destroy(&t->ev_mu);
    if (err == 0 && (err = uv_cond_init(&t->cmd_cond)) != 0) {
        uv_mutex_destroy(&t->ev_mu);
        uv_mutex_destroy(&t->cmd_mu);
    }
    if (err != 0) {
        nats_free(t);
        return err;
    }
    if ((err = uv_async_init(loop, &t->async, on_events)) != 0) {
        uv_mutex_destroy(&t->ev_mu);
        uv_mutex_destroy(&t->cmd_mu);
        uv_cond_destroy(&t->cmd_cond);
        nats_free(t);
        return err;
    }
    t->async.data = t;
    if ((err = uv_thread_create(&t->thread, io_main, t)) != 0) {
        uv_close((uv_handle_t *)&t->async, on_async_closed);
        return err;
    }
    *impl = t;
    return 0;
}

/* Queues a publish to pfx + subject for the I/O thread (any thread). */
static void enqueue_pub(nats_t *t, const char *pfx, size_t pfx_len, const char *subject,
                        const uint8_t *p, size_t n, const char *msg_id)
{
    size_t slen = strlen(subject);
    size_t idlen = msg_id ? strlen(msg_id) : 0;
    size_t hdr = msg_id ? idlen + MSG_ID_OVERHEAD : 0;
    if (n + hdr > (size_t)atomic_load(&t->max_payload) || n > INT_MAX) {
        post_dropped(t, "payload over the server's max_payload", 1);
        return;
    }
    size_t tlen = pfx_len + slen + 1 + (msg_id ? idlen + 1 : 0);
    cmd_t *c = malloc(sizeof(*c) + tlen + n);
    if (c == NULL) {
        post_dropped(t, "out of memory", 1);
        return;
    }
    memset(c, 0, sizeof(*c));
    c->type = CMD_PUB;
    memcpy(c->text, pfx, pfx_len);
    memcpy(c->text + pfx_len, subject, slen + 1);
    char *q = c->text + pfx_len + slen + 1;
    if (msg_id) {
        memcpy(q, msg_id, idlen + 1);
        c->msg_id = q;
        q += idlen + 1;
    }
    if (n)
        memcpy(q, p, n);
    c->data = (const uint8_t *)q;
    c->n = n;
    c->cost = n + slen + hdr;
    /* while a JetStream stream is not ready the queue is the outage buffer */
    size_t cap = t->publish_buffer > SIZE_MAX / 2 ? SIZE_MAX / 2 : (size_t)t->publish_buffer;
    if (!t->js || atomic_load(&t->js_ready))
        cap += tune.handoff_slack;
    uv_mutex_lock(&t->cmd_mu);
    if (t->pub_bytes + c->cost > cap) {
        uv_mutex_unlock(&t->cmd_mu);
        free(c);
        post_dropped(t, "publish buffer full", 1);
        return;
    }
    t->pub_bytes += c->cost;
    cmd_append(&t->pub, c);
    uv_cond_signal(&t->cmd_cond);
    uv_mutex_unlock(&t->cmd_mu);
}

static void nats_publish(void *impl, const char *subject, const uint8_t *p, size_t n,
                         const char *msg_id)
{
    nats_t *t = impl;
    if (t->closing)
        return;
    if (!t->js || (msg_id && !msg_id_ok(msg_id)))
        msg_id = NULL;
    enqueue_pub(t, t->prefix, t->prefix_len, subject, p, n, msg_id);
}

static void nats_subscribe(void *impl, const char *subject)
{
    nats_t *t = impl;
    if (!t->closing)
        post_ctl(t, CMD_SUB, subject, strlen(subject), NULL);
}

static void nats_unsubscribe(void *impl, const char *subject)
{
    nats_t *t = impl;
    if (!t->closing)
        post_ctl(t, CMD_UNSUB, subject, strlen(subject), NULL);
}

/* Blocks until the I/O thread has closed the connection (bounded by
 * tune.close_wait_ms plus one flush); t itself is freed by the async
 * handle's close callback. */
static void nats_close(void *impl)
{
    nats_t *t = impl;
    if (t == NULL)
        return;
    t->closing = 1;
    uv_mutex_lock(&t->cmd_mu);
    t->stop = 1;
    uv_cond_signal(&t->cmd_cond);
    uv_mutex_unlock(&t->cmd_mu);
    uv_thread_join(&t->thread);

    uv_mutex_lock(&t->ev_mu);
    t->ev_closed = 1;
    ev_t *ev = t->ev_head;
    t->ev_head = t->ev_tail = NULL;
    uv_mutex_unlock(&t->ev_mu);
    while (ev) {
        ev_t *next = ev->next;
        free(ev);
        ev = next;
    }
    cmd_free_list(t->ctl.head);
    cmd_free_list(t->pub.head);
    t->ctl.head = t->ctl.tail = t->pub.head = t->pub.tail = NULL;
    uv_close((uv_handle_t *)&t->async, on_async_closed);
}

const hub_bus_transport_t hub_bus_nats = {
    .name = "nats",
    .open = nats_open,
    .publish = nats_publish,
    .subscribe = nats_subscribe,
    .unsubscribe = nats_unsubscribe,
    .close = nats_close,
};
