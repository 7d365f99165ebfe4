/* bus_redis.c: the Redis pub/sub transport of the cluster bus (bus.h), on
 * hiredis 0.14 async. Every function runs on the bus thread, on the loop
 * given to open(). The process ignores SIGPIPE (server.c): hiredis writes
 * with write(2), and a killed server would otherwise kill the node.
 *
 * Two connections, because a subscribed Redis connection accepts nothing
 * but (UN)SUBSCRIBE: "pub" sends PUBLISH, "sub" holds the subscriptions.
 * Channel = cluster.redis.key_prefix + "." + subject. Address: the first
 * of cluster.redis.addrs (or REDIS_URL), "host[:port]", "[v6]:port" or
 * "redis://[[user]:password@]host[:port][/db]"; no TLS, no unix sockets.
 * The libuv glue is ours, not hiredis' adapters/libuv.h, which loses
 * refused connects and connection resets (see "libuv glue").
 *
 * hiredis 0.14 neither reconnects nor times out a connect, so each
 * connection is a small state machine driven by one uv_timer:
 *
 *   IDLE --timer--> [RESOLVING: uv_getaddrinfo, names only] --> CONNECTING
 *     --connected--> HANDSHAKE (AUTH, or PING without a password)
 *     --reply OK--> READY
 *   any failure, timeout (cluster.connect_timeout over CONNECTING and
 *   HANDSHAKE; name lookups are bounded by the resolver's own timeouts)
 *   or disconnect --> IDLE, retry after 100 ms doubling to
 *   cluster.reconnect_max_backoff, minus up to 20 % jitter, forever.
 *
 * State: the transport starts down and says nothing until it is up. It
 * calls hub_bus_transport_state(bus, 1) once both connections are READY
 * (AUTH or PING answered) and the sub connection's SUBSCRIBE of every
 * remembered subject is confirmed, and state(bus, 0) as soon as either
 * connection drops (only after a state(1)).
 *
 * Subscriptions are remembered: subscribe()/unsubscribe() update the set
 * of wanted subjects whatever the connection state (and are idempotent),
 * and each (re)connect subscribes the whole set before the transport
 * reports up. The core's own resubscribe after state(1) then finds every
 * subject present and is a no-op. Inbound messages on a channel not in the
 * set (in flight across an UNSUBSCRIBE, or foreign) are ignored.
 *
 * Publishes: one FIFO queue plus an in-flight window. A publish goes to
 * hiredis at once when the transport is up, nothing is queued and the
 * bytes not yet acknowledged by PUBLISH replies stay within the window
 * (max(cluster.publish_buffer, 64 KiB)); otherwise it is queued while the
 * queue holds at most cluster.publish_buffer bytes, and dropped beyond
 * ("buffer_full"). The queue drains in order once the transport is up
 * (so this node's own subscriptions are back before its buffered
 * publishes go out) and as replies open the window. So a stopped
 * (SIGSTOP) or stalled server makes this transport hold at most window +
 * publish_buffer bytes, however long it stalls. Publishes in flight when
 * a connection drops are neither resent (no duplicates) nor counted:
 * pub/sub is at-most-once. Bytes are counted as channel + payload.
 */
#include "bus.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "config.h"
#include "hmap.h"
#include "log.h"
#include "pct.h"

#define REDIS_DEFAULT_PORT  6379
#define REDIS_BACKOFF_MIN_MS 100
/* Least in-flight window, so cluster.publish_buffer = 0 (no buffering while
 * down) still lets a connected node pipeline its publishes. */
#define REDIS_MIN_WINDOW    (64 * 1024)
/* Longest subject accepted; the core's subjects are a few dozen bytes. */
#define REDIS_SUBJECT_MAX   1024
/* Channels per SUBSCRIBE command when resubscribing. */
#define REDIS_SUB_BATCH     256

enum { RC_IDLE = 0, RC_RESOLVING, RC_CONNECTING, RC_HANDSHAKE, RC_READY };

typedef struct redis_tr_s redis_tr_t;

/* One Redis connection and its reconnect machinery. */
typedef struct {
    redis_tr_t *t;
    const char *name;           /* "pub" | "sub", for logs */
    int state;                  /* RC_* */
    redisAsyncContext *ac;      /* owned while CONNECTING..READY, else NULL;
                                 * ac->data points back here while owned */
    uv_timer_t timer;           /* IDLE: retry delay; CONNECTING, HANDSHAKE: deadline */
    uv_getaddrinfo_t gai;       /* in flight while RESOLVING (gai_busy) */
    int gai_busy;
    uint32_t backoff_ms;        /* base of the next retry delay */
    unsigned failures;          /* consecutive failed attempts (log throttling) */
} redis_conn_t;

/* A publish waiting in the queue: channel bytes then payload bytes. */
typedef struct redis_pub_s {
    struct redis_pub_s *next;
    size_t clen, n;
    char data[];
} redis_pub_t;

struct redis_tr_s {
    hub_bus_t *bus;
    uv_loop_t *loop;
    char host[256];             /* name or numeric address, no brackets */
    int host_numeric;           /* no resolution needed */
    int port;
    char *user, *pass;          /* owned; NULL when absent (AUTH [user] pass) */
    char *prefix;               /* owned: key_prefix + "." */
    size_t plen;
    uint32_t connect_timeout_ms, max_backoff_ms;
    uint64_t buf_cap, window;
    redis_conn_t pub, sub;
    hub_strmap_t subjects;      /* wanted subjects (keys); values are &subject_mark */
    size_t sync_pending;        /* SUBSCRIBE confirmations due since sub became READY */
    int synced;                 /* sub READY and every remembered subject confirmed */
    int up;                     /* last state reported to the core */
    redis_pub_t *qhead, **qtail;/* owned FIFO of publishes not yet given to hiredis */
    uint64_t qbytes;
    uint64_t inflight;          /* bytes given to hiredis, reply not yet seen */
    uint64_t rng;
    int closing;
    int open_handles;           /* timers and getaddrinfo requests not yet finished */
};

static char subject_mark;

static void conn_start(redis_conn_t *c);
static void conn_down(redis_conn_t *c);
static void pump(redis_tr_t *t);

/* ---- small helpers ----------------------------------------------------------- */

static uint32_t rnd(redis_tr_t *t)
{
    /* xorshift64*: jitter only, no need for quality */
    t->rng ^= t->rng >> 12;
    t->rng ^= t->rng << 25;
    t->rng ^= t->rng >> 27;
    return (uint32_t)((t->rng * 0x2545F4914F6CDD1DULL) >> 32);
}

/* The retry delay: the current base minus up to 20 % (so it never exceeds
 * cluster.reconnect_max_backoff), then the base doubles up to the max. */
static uint64_t next_delay(redis_conn_t *c)
{
    redis_tr_t *t = c->t;
    uint32_t d = c->backoff_ms;
    uint64_t delay = d - rnd(t) % (d / 5 + 1);
    uint64_t nb = (uint64_t)d * 2;
    c->backoff_ms = nb > t->max_backoff_ms ? t->max_backoff_ms : (uint32_t)nb;
    return delay;
}

static void queue_free(redis_tr_t *t)
{
    redis_pub_t *m = t->qhead;
    while (m) {
        redis_pub_t *next = m->next;
        free(m);
        m = next;
    }
    t->qhead = NULL;
    t->qtail = &t->qhead;
    t->qbytes = 0;
}

/* ---- address parsing ------------------------------------------------------------ */

/* Percent-decodes s[0..n) into a new string (*out, owned by the caller).
 * Returns 0, HUB_EINVAL for a bad escape or %00, or HUB_ENOMEM. */
static int pct_decode(const char *s, size_t n, char **out)
{
    char *d = malloc(n + 1);
    if (d == NULL)
        return HUB_ENOMEM;
    size_t len = hub_pct_decode(s, n, d, n + 1);
    if (len == (size_t)-1 || memchr(d, '\0', len) != NULL) {
        free(d);
        return HUB_EINVAL;
    }
    *out = d;
    return 0;
}

static int parse_port(const char *s, size_t n, int *port)
{
    long v = 0;
    if (n == 0 || n > 5)
        return HUB_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return HUB_EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return HUB_EINVAL;
    *port = (int)v;
    return 0;
}

/* Parses "host[:port]" or "[v6addr][:port]" at s[0..n) into t->host and
 * t->port (default 6379). *why gets the reason on HUB_EINVAL. */
static int parse_hostport(redis_tr_t *t, const char *s, size_t n, const char **why)
{
    const char *h = s, *portp = NULL;
    size_t hlen;
    if (n > 0 && s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        if (rb == NULL) {
            *why = "unterminated '[' in an IPv6 address";
            return HUB_EINVAL;
        }
        h = s + 1;
        hlen = (size_t)(rb - h);
        const char *after = rb + 1, *end = s + n;
        if (after < end) {
            if (*after != ':') {
                *why = "expected ':port' after ']'";
                return HUB_EINVAL;
            }
            portp = after + 1;
        }
        if (hlen == 0 || hlen >= sizeof(t->host)) {
            *why = "bad IPv6 address";
            return HUB_EINVAL;
        }
        memcpy(t->host, h, hlen);
        t->host[hlen] = '\0';
        unsigned char a6[16];
        if (inet_pton(AF_INET6, t->host, a6) != 1) {
            *why = "bad IPv6 address";
            return HUB_EINVAL;
        }
        t->host_numeric = 1;
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon && memchr(colon + 1, ':', n - (size_t)(colon + 1 - s))) {
            *why = "an IPv6 address needs brackets, as in [::1]:6379";
            return HUB_EINVAL;
        }
        hlen = colon ? (size_t)(colon - s) : n;
        if (colon)
            portp = colon + 1;
        if (hlen == 0) {
            *why = "empty host";
            return HUB_EINVAL;
        }
        if (hlen >= sizeof(t->host)) {
            *why = "host name too long";
            return HUB_EINVAL;
        }
        for (size_t i = 0; i < hlen; i++) {
            unsigned char ch = (unsigned char)h[i];
            if (!isalnum(ch) && ch != '-' && ch != '.' && ch != '_') {
                *why = "bad character in host name";
                return HUB_EINVAL;
            }
        }
        memcpy(t->host, h, hlen);
        t->host[hlen] = '\0';
        unsigned char a4[4];
        t->host_numeric = inet_pton(AF_INET, t->host, a4) == 1;
    }
    t->port = REDIS_DEFAULT_PORT;
    if (portp && parse_port(portp, (size_t)(s + n - portp), &t->port) != 0) {
        *why = "bad port (1-65535)";
        return HUB_EINVAL;
    }
    return 0;
}

/* Parses cluster.redis.addrs[0]: "host:port", "[v6]:port", or
 * "redis://[[user]:password@]host[:port][/db]" (user and password
 * percent-decoded; the db number is accepted and ignored: pub/sub is not
 * per database). Fills t->host, port, user, pass. */
static int parse_addr(redis_tr_t *t, const char *s, const char **why)
{
    size_t n = strlen(s);
    if (n == 0) {
        *why = "empty address";
        return HUB_EINVAL;
    }
    if (strncmp(s, "redis://", 8) != 0) {
        if (strstr(s, "://")) {
            *why = strncmp(s, "rediss://", 9) == 0 ? "TLS (rediss://) is not supported"
                                                   : "unknown scheme (expected redis://)";
            return HUB_EINVAL;
        }
        if (strpbrk(s, "@/?# ")) {
            *why = "expected host:port or redis://[:password@]host:port";
            return HUB_EINVAL;
        }
        return parse_hostport(t, s, n, why);
    }
    const char *p = s + 8, *end = s + n, *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    const char *hp = at ? at + 1 : p;
    if (strpbrk(hp, "?# ")) {
        *why = "query, fragment or blank in the redis:// address";
        return HUB_EINVAL;
    }
    const char *slash = memchr(hp, '/', (size_t)(end - hp));
    const char *hend = slash ? slash : end;
    if (slash) {
        for (const char *q = slash + 1; q < end; q++)
            if (*q < '0' || *q > '9') {
                *why = "bad database number after '/'";
                return HUB_EINVAL;
            }
    }
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon == NULL) {
            *why = "no password before '@' (use redis://:password@host:port)";
            return HUB_EINVAL;
        }
        int rc = 0;
        if (colon > p)
            rc = pct_decode(p, (size_t)(colon - p), &t->user);
        if (rc == 0)
            rc = pct_decode(colon + 1, (size_t)(at - colon - 1), &t->pass);
        if (rc == HUB_ENOMEM)
            return rc;
        if (rc != 0) {
            *why = "bad %-escape in the user or password";
            return HUB_EINVAL;
        }
        if (t->pass[0] == '\0') {
            *why = "empty password";
            return HUB_EINVAL;
        }
    }
    return parse_hostport(t, hp, (size_t)(hend - hp), why);
}

/* ---- libuv glue ------------------------------------------------------------------ */

/* hiredis' own adapters/libuv.h (0.14) ignores a poll callback with an
 * error status. libuv reports POLLERR that way (UV_EBADF, handle stopped),
 * and POLLERR is what a refused connect or a connection reset (RST: a
 * server killed with unread bytes in its socket) produce: with that
 * adapter hiredis never learns about them, and the connection hangs
 * "connected" forever. This glue is the adapter with the fix hiredis 1.x
 * made: on an error status, run the handlers of the events we wait for,
 * and hiredis finds the socket error itself (read/SO_ERROR) and
 * disconnects. It also frees its state when uv_poll_init fails. */
typedef struct {
    redisAsyncContext *ac; /* NULL once hiredis has cleaned up */
    uv_poll_t poll;
    int events;            /* UV_READABLE | UV_WRITABLE wanted by hiredis */
} redis_ev_t;

static void ev_update(redis_ev_t *e);

static void on_poll(uv_poll_t *h, int status, int events)
{
    redis_ev_t *e = h->data;
    int ev = status < 0 ? e->events : events;
    /* e stays valid through both calls: cleanup only closes the handle */
    if (e->ac && (ev & UV_READABLE))
        redisAsyncHandleRead(e->ac);
    if (e->ac && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(e->ac);
    /* libuv stopped the handle; if hiredis found nothing wrong and still
     * waits for events, keep polling rather than stall */
    if (status < 0 && e->ac)
        ev_update(e);
}

static void ev_update(redis_ev_t *e)
{
    if (e->events)
        uv_poll_start(&e->poll, e->events, on_poll);
    else
        uv_poll_stop(&e->poll);
}

static void ev_add_read(void *priv)
{
    redis_ev_t *e = priv;
    e->events |= UV_READABLE;
    ev_update(e);
}

static void ev_del_read(void *priv)
{
    redis_ev_t *e = priv;
    e->events &= ~UV_READABLE;
    ev_update(e);
}

static void ev_add_write(void *priv)
{
    redis_ev_t *e = priv;
    e->events |= UV_WRITABLE;
    ev_update(e);
}

static void ev_del_write(void *priv)
{
    redis_ev_t *e = priv;
    e->events &= ~UV_WRITABLE;
    ev_update(e);
}

static void on_ev_closed(uv_handle_t *h)
{
    free(h->data);
}

/* hiredis is freeing the context: the poll handle goes with it, freed by
 * its close callback (the loop still has to run it). */
static void ev_cleanup(void *priv)
{
    redis_ev_t *e = priv;
    e->ac = NULL;
    uv_close((uv_handle_t *)&e->poll, on_ev_closed);
}

/* Attaches ac to loop. Returns 0 or a HUB_E* (then nothing is attached). */
static int ev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    redis_ev_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return HUB_ENOMEM;
    int rc = uv_poll_init(loop, &e->poll, ac->c.fd);
    if (rc < 0) {
        free(e);
        return rc;
    }
    e->ac = ac;
    e->poll.data = e;
    ac->ev.data = e;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return 0;
}

/* ---- connections ---------------------------------------------------------------- */

static void on_timer(uv_timer_t *h);

/* Schedules the next attempt of c after the backoff delay. */
static void conn_schedule(redis_conn_t *c)
{
    if (c->t->closing)
        return;
    c->state = RC_IDLE;
    c->failures++;
    uv_timer_start(&c->timer, on_timer, next_delay(c), 0);
}

/* Logs a failed attempt: a warning for the first of a down period, debug
 * afterwards, so a long outage does not flood the log. */
static void log_failure(redis_conn_t *c, const char *why, const char *detail)
{
    redis_tr_t *t = c->t;
    if (c->failures == 0)
        hub_log_warn("redis bus: connection failed, retrying", "conn=%s host=%s port=%d why=%s "
                     "detail=%s", c->name, t->host, t->port, why, detail ? detail : "");
    else
        hub_log_debug("redis bus: connection failed, retrying", "conn=%s host=%s port=%d "
                      "why=%s detail=%s attempt=%u", c->name, t->host, t->port, why,
                      detail ? detail : "", c->failures + 1);
}

/* Tears down c's context from our side (a timer, a reply callback or
 * close()): detaches it so hiredis' remaining callbacks (NULL replies,
 * disconnect) find no owner, then frees it; inside a reply callback hiredis
 * defers the free until the callback returns. Never call this from the
 * connect or disconnect callbacks. */
static void conn_free_ac(redis_conn_t *c)
{
    redisAsyncContext *ac = c->ac;
    if (ac == NULL)
        return;
    c->ac = NULL;
    ac->data = NULL;
    redisAsyncFree(ac);
}

/* c failed at our initiative: free its context, report, retry. */
static void conn_fail(redis_conn_t *c, const char *why, const char *detail)
{
    log_failure(c, why, detail);
    conn_free_ac(c);
    conn_down(c);
}

/* c is no longer usable (its context is already gone or detached). Resets
 * what depended on it, tells the core when the transport was up, and
 * schedules the next attempt. May call into the core, which may call
 * close(): nothing of t but its fields is touched afterwards. */
static void conn_down(redis_conn_t *c)
{
    redis_tr_t *t = c->t;
    uv_timer_stop(&c->timer);
    int was_ready = c->state == RC_READY;
    c->state = RC_IDLE;
    if (c == &t->pub) {
        t->inflight = 0; /* hiredis has dropped the unacknowledged commands */
    } else {
        t->synced = 0;
        t->sync_pending = 0;
    }
    if (was_ready)
        c->backoff_ms = REDIS_BACKOFF_MIN_MS;
    if (t->up) {
        t->up = 0;
        hub_log_warn("redis bus: down, reconnecting", "conn=%s host=%s port=%d", c->name, t->host,
                     t->port);
        hub_bus_transport_state(t->bus, 0);
    }
    conn_schedule(c);
}

/* Reports up once both connections are READY and subscriptions confirmed,
 * then drains the publish queue. */
static void maybe_up(redis_tr_t *t)
{
    if (t->up || t->closing || t->pub.state != RC_READY || t->sub.state != RC_READY ||
        !t->synced)
        return;
    t->up = 1;
    hub_log_info("redis bus: connected", "host=%s port=%d subjects=%zu queued_bytes=%llu",
                 t->host, t->port, t->subjects.n, (unsigned long long)t->qbytes);
    hub_bus_transport_state(t->bus, 1);
    pump(t); /* no-op if the core closed us */
}

static void on_sub_reply(redisAsyncContext *ac, void *r, void *privdata);

/* Sends SUBSCRIBE for names[0..n) (subjects) on the READY sub connection.
 * Returns 0 or HUB_ENOMEM. */
static int send_subscribe(redis_tr_t *t, const char *cmd, const char *const *names, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += t->plen + strlen(names[i]);
    const char **argv = malloc((n + 1) * sizeof(*argv));
    size_t *lens = malloc((n + 1) * sizeof(*lens));
    char *buf = malloc(total + 1);
    int rc = HUB_ENOMEM;
    if (argv == NULL || lens == NULL || buf == NULL)
        goto out;
    argv[0] = cmd;
    lens[0] = strlen(cmd);
    char *w = buf;
    for (size_t i = 0; i < n; i++) {
        size_t sl = strlen(names[i]);
        memcpy(w, t->prefix, t->plen);
        memcpy(w + t->plen, names[i], sl);
        argv[i + 1] = w;
        lens[i + 1] = t->plen + sl;
        w += t->plen + sl;
    }
    /* REDIS_ERR: UNSUBSCRIBE on a connection not yet subscribed (nothing
     * to undo) or a context being freed (it is resubscribed on reconnect). */
    redisAsyncCommandArgv(t->sub.ac, on_sub_reply, NULL, (int)(n + 1), argv, lens);
    rc = 0;
out:
    free(argv);
    free(lens);
    free(buf);
    return rc;
}

/* The sub connection became READY: subscribe every remembered subject. */
static void resubscribe(redis_tr_t *t)
{
    const char *names[REDIS_SUB_BATCH];
    size_t n = 0, it;
    t->synced = 0;
    t->sync_pending = t->subjects.n;
    for (hub_strmap_entry_t *e = hub_strmap_first(&t->subjects, &it); e;
         e = hub_strmap_next(&t->subjects, e, &it)) {
        names[n++] = e->key;
        if (n == REDIS_SUB_BATCH) {
            if (send_subscribe(t, "SUBSCRIBE", names, n) != 0)
                goto nomem;
            n = 0;
        }
    }
    if (n && send_subscribe(t, "SUBSCRIBE", names, n) != 0)
        goto nomem;
    if (t->sync_pending == 0)
        t->synced = 1;
    return;
nomem:
    /* the deadline is stopped; retry the whole connection later */
    conn_fail(&t->sub, "out of memory subscribing", NULL);
}

static void on_handshake(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_conn_t *c = ac->data;
    redisReply *reply = r;
    HUB_UNUSED(privdata);
    if (c == NULL || reply == NULL || c->state != RC_HANDSHAKE)
        return; /* torn down */
    redis_tr_t *t = c->t;
    if (reply->type == REDIS_REPLY_ERROR) {
        /* wrong or missing password (or LOADING): logged as an error once
         * per down period, retried like any failure */
        if (c->failures == 0)
            hub_log_error("redis bus: server refused the connection", "conn=%s host=%s port=%d "
                          "reply=%s auth=%s", c->name, t->host, t->port, reply->str,
                          t->pass ? "yes" : "no");
        else
            hub_log_debug("redis bus: server refused the connection", "conn=%s reply=%s "
                          "attempt=%u", c->name, reply->str, c->failures + 1);
        conn_free_ac(c); /* deferred by hiredis until this callback returns */
        conn_down(c);
        return;
    }
    uv_timer_stop(&c->timer);
    c->state = RC_READY;
    c->failures = 0;
    c->backoff_ms = REDIS_BACKOFF_MIN_MS;
    if (c == &t->sub)
        resubscribe(t);
    maybe_up(t);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redis_conn_t *c = cac->data;
    if (c == NULL)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context when this returns */
        c->ac = NULL;
        log_failure(c, "connect", cac->errstr);
        conn_down(c);
        return;
    }
    redisAsyncContext *ac = c->ac;
    redis_tr_t *t = c->t;
    /* detects a peer that vanished without a FIN (host down, partition) */
    redisEnableKeepAlive(&ac->c);
    c->state = RC_HANDSHAKE;
    /* AUTH proves the password; PING proves the server answers (and says
     * NOAUTH when it wants a password). A failure to queue (no memory)
     * is left to the deadline: the context cannot be freed in here. */
    if (t->pass) {
        const char *argv[3] = { "AUTH", t->user ? t->user : t->pass, t->pass };
        int argc = t->user ? 3 : 2;
        redisAsyncCommandArgv(ac, on_handshake, NULL, argc, argv, NULL);
    } else {
        redisAsyncCommand(ac, on_handshake, NULL, "PING");
    }
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    redis_conn_t *c = cac->data;
    HUB_UNUSED(status);
    if (c == NULL)
        return;
    /* hiredis frees the context when this returns; failures is 0 if c
     * was READY, so losing a working connection always logs a warning */
    c->ac = NULL;
    log_failure(c, "disconnected", cac->errstr[0] ? cac->errstr : "closed by the server");
    conn_down(c);
}

/* Starts a TCP connection to the numeric address ip. */
static void conn_connect(redis_conn_t *c, const char *ip)
{
    redis_tr_t *t = c->t;
    redisAsyncContext *ac = redisAsyncConnect(ip, t->port);
    if (ac == NULL) {
        log_failure(c, "connect", "out of memory");
        conn_schedule(c);
        return;
    }
    if (ac->err) {
        log_failure(c, "connect", ac->errstr);
        redisAsyncFree(ac);
        conn_schedule(c);
        return;
    }
    if (ev_attach(ac, t->loop) != 0) {
        log_failure(c, "connect", "cannot attach to the loop");
        redisAsyncFree(ac);
        conn_schedule(c);
        return;
    }
    ac->data = c;
    c->ac = ac;
    c->state = RC_CONNECTING;
    /* order matters: the connect callback arms the write event */
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisAsyncSetConnectCallback(ac, on_connect);
    uv_timer_start(&c->timer, on_timer, t->connect_timeout_ms, 0);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    redis_conn_t *c = hub_container_of(req, redis_conn_t, gai);
    redis_tr_t *t = c->t;
    c->gai_busy = 0;
    t->open_handles--;
    if (t->closing) {
        uv_freeaddrinfo(res);
        if (t->open_handles == 0)
            free(t);
        return;
    }
    /* IPv4 first, as hiredis does: a name with both families usually
     * means a server listening on 127.0.0.1 */
    const struct addrinfo *pick = NULL;
    for (const struct addrinfo *a = status == 0 ? res : NULL; a; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
        if (a->ai_family == AF_INET6 && pick == NULL)
            pick = a;
    }
    char ip[INET6_ADDRSTRLEN] = "";
    if (pick && pick->ai_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)(const void *)pick->ai_addr, ip, sizeof(ip));
    else if (pick)
        uv_ip6_name((const struct sockaddr_in6 *)(const void *)pick->ai_addr, ip, sizeof(ip));
    uv_freeaddrinfo(res);
    if (ip[0] == '\0') {
        log_failure(c, "resolve", status < 0 ? uv_strerror(status) : "no address");
        conn_schedule(c);
        return;
    }
    conn_connect(c, ip);
}

/* Starts an attempt: resolve the name first unless it is numeric. */
static void conn_start(redis_conn_t *c)
{
    redis_tr_t *t = c->t;
    if (t->host_numeric) {
        conn_connect(c, t->host);
        return;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = uv_getaddrinfo(t->loop, &c->gai, on_resolved, t->host, NULL, &hints);
    if (rc < 0) {
        log_failure(c, "resolve", uv_strerror(rc));
        conn_schedule(c);
        return;
    }
    c->state = RC_RESOLVING;
    c->gai_busy = 1;
    t->open_handles++;
}

static void on_timer(uv_timer_t *h)
{
    redis_conn_t *c = h->data;
    switch (c->state) {
    case RC_IDLE:
        conn_start(c);
        break;
    case RC_CONNECTING:
    case RC_HANDSHAKE:
        conn_fail(c, "timeout", c->state == RC_CONNECTING ? "connect" : "no reply to AUTH/PING");
        break;
    default:
        break;
    }
}

/* ---- publish ---------------------------------------------------------------------- */

static void on_pub_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_conn_t *c = ac->data;
    redisReply *reply = r;
    /* NULL reply: the connection is going away (hiredis runs these before
     * the disconnect callback); the publish may or may not have reached
     * the server, so it is neither resent nor counted, and nothing more
     * may be sent on this context. conn_down() resets inflight. */
    if (c == NULL || reply == NULL)
        return;
    redis_tr_t *t = c->t;
    uint64_t cost = (uintptr_t)privdata;
    t->inflight = t->inflight > cost ? t->inflight - cost : 0;
    if (reply->type == REDIS_REPLY_ERROR) {
        hub_log_warn("redis bus: PUBLISH refused", "reply=%s", reply->str);
        hub_bus_transport_dropped(t->bus, "redis_error");
    }
    pump(t);
}

/* Hands one publish to hiredis; counts it in flight. */
static void send_publish(redis_tr_t *t, const char *ch, size_t clen, const void *p, size_t n)
{
    const char *argv[3] = { "PUBLISH", ch, p };
    size_t lens[3] = { 7, clen, n };
    uint64_t cost = clen + n;
    if (redisAsyncCommandArgv(t->pub.ac, on_pub_reply, (void *)(uintptr_t)cost, 3, argv, lens) !=
        REDIS_OK) {
        hub_bus_transport_dropped(t->bus, "redis_error");
        return;
    }
    t->inflight += cost;
}

static int window_open(const redis_tr_t *t, uint64_t cost)
{
    return t->inflight == 0 || t->inflight + cost <= t->window;
}

/* Drains the queue in order while the transport is up and the window
 * allows. */
static void pump(redis_tr_t *t)
{
    while (t->up && !t->closing && t->qhead) {
        redis_pub_t *m = t->qhead;
        if (!window_open(t, m->clen + m->n))
            return;
        t->qhead = m->next;
        if (t->qhead == NULL)
            t->qtail = &t->qhead;
        t->qbytes -= m->clen + m->n;
        send_publish(t, m->data, m->clen, m->data + m->clen, m->n);
        free(m);
    }
}

/* msg_id is ignored: Redis has no server-side dedupe, and this transport
 * never sends a message twice. */
static void tr_publish(void *impl, const char *subject, const uint8_t *p, size_t n,
                       const char *msg_id)
{
    redis_tr_t *t = impl;
    HUB_UNUSED(msg_id);
    if (t->closing)
        return;
    size_t slen = strlen(subject), clen = t->plen + slen;
    uint64_t cost = clen + n;
    if (t->up && t->qhead == NULL && window_open(t, cost)) {
        char stack[512];
        char *ch = clen <= sizeof(stack) ? stack : malloc(clen);
        if (ch == NULL) {
            hub_bus_transport_dropped(t->bus, "no_memory");
            return;
        }
        memcpy(ch, t->prefix, t->plen);
        memcpy(ch + t->plen, subject, slen);
        send_publish(t, ch, clen, p, n);
        if (ch != stack)
            free(ch);
        return;
    }
    if (t->qbytes + cost > t->buf_cap) {
        hub_bus_transport_dropped(t->bus, "buffer_full");
        return;
    }
    redis_pub_t *m = malloc(sizeof(*m) + clen + n);
    if (m == NULL) {
        hub_bus_transport_dropped(t->bus, "no_memory");
        return;
    }
    m->next = NULL;
    m->clen = clen;
    m->n = n;
    memcpy(m->data, t->prefix, t->plen);
    memcpy(m->data + t->plen, subject, slen);
    if (n)
        memcpy(m->data + clen, p, n);
    *t->qtail = m;
    t->qtail = &m->next;
    t->qbytes += cost;
}

/* ---- subscribe -------------------------------------------------------------------- */

static int elem_is(const redisReply *e, const char *s)
{
    size_t n = strlen(s);
    return e->type == REDIS_REPLY_STRING && e->len == n && strncasecmp(e->str, s, n) == 0;
}

/* Every reply of the sub connection once subscribed: confirmations and
 * messages (hiredis routes them by channel; one callback serves all). */
static void on_sub_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_conn_t *c = ac->data;
    redisReply *reply = r;
    HUB_UNUSED(privdata);
    if (c == NULL || reply == NULL)
        return; /* torn down */
    redis_tr_t *t = c->t;
    if (reply->type == REDIS_REPLY_ERROR) {
        hub_log_warn("redis bus: subscription error", "reply=%s", reply->str);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
        return;
    const redisReply *kind = reply->element[0], *ch = reply->element[1];
    if (elem_is(kind, "message")) {
        const redisReply *body = reply->element[2];
        if (ch->type != REDIS_REPLY_STRING || body->type != REDIS_REPLY_STRING ||
            ch->len <= t->plen || ch->len - t->plen > REDIS_SUBJECT_MAX ||
            memcmp(ch->str, t->prefix, t->plen) != 0)
            return;
        char subject[REDIS_SUBJECT_MAX + 1];
        size_t slen = ch->len - t->plen;
        memcpy(subject, ch->str + t->plen, slen);
        subject[slen] = '\0';
        if (hub_strmap_get(&t->subjects, subject) == NULL)
            return; /* unsubscribed meanwhile */
        hub_bus_transport_message(t->bus, subject, slen, (const uint8_t *)body->str, body->len);
    } else if (elem_is(kind, "subscribe")) {
        if (t->sync_pending > 0 && --t->sync_pending == 0) {
            t->synced = 1;
            maybe_up(t);
        }
    }
}

static void tr_subscribe(void *impl, const char *subject)
{
    redis_tr_t *t = impl;
    if (t->closing)
        return;
    size_t slen = strlen(subject);
    if (slen == 0 || slen > REDIS_SUBJECT_MAX) {
        hub_log_warn("redis bus: subject refused", "bytes=%zu", slen);
        return;
    }
    if (hub_strmap_get(&t->subjects, subject))
        return;
    if (hub_strmap_put(&t->subjects, subject, &subject_mark) != 0) {
        hub_log_error("redis bus: out of memory subscribing", "subject=%s", subject);
        return;
    }
    if (t->sub.state == RC_READY && send_subscribe(t, "SUBSCRIBE", &subject, 1) != 0) {
        /* the set has it: the next reconnect subscribes it */
        hub_log_error("redis bus: out of memory subscribing", "subject=%s", subject);
        conn_fail(&t->sub, "out of memory subscribing", NULL);
    }
}

static void tr_unsubscribe(void *impl, const char *subject)
{
    redis_tr_t *t = impl;
    if (t->closing || hub_strmap_del(&t->subjects, subject) == NULL)
        return;
    /* Messages still in flight are filtered out by the set. On a failure
     * to send, the connection keeps a useless subscription until its
     * next reconnect: harmless. */
    if (t->sub.state == RC_READY)
        send_subscribe(t, "UNSUBSCRIBE", &subject, 1);
}

/* ---- open / close ----------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    redis_tr_t *t = h->data;
    if (--t->open_handles == 0)
        free(t);
}

static void conn_init(redis_tr_t *t, redis_conn_t *c, const char *name)
{
    c->t = t;
    c->name = name;
    c->state = RC_IDLE;
    c->backoff_ms = REDIS_BACKOFF_MIN_MS;
    uv_timer_init(t->loop, &c->timer);
    c->timer.data = c;
    t->open_handles++;
}

/* Frees what open() allocated before the timers exist. */
static void tr_free_config(redis_tr_t *t)
{
    free(t->user);
    free(t->pass);
    free(t->prefix);
    t->user = t->pass = t->prefix = NULL;
}

static int tr_open(hub_bus_t *bus, uv_loop_t *loop, const hub_config_t *cfg, void **impl)
{
    redis_tr_t *t = calloc(1, sizeof(*t));
    const char *why = NULL, *key = "cluster.redis.addrs";
    int rc;
    if (t == NULL)
        return HUB_ENOMEM;
    t->bus = bus;
    t->loop = loop;
    t->qtail = &t->qhead;
    hub_strmap_init(&t->subjects);
    if (cfg->redis_addrs.n == 0 || cfg->redis_addrs.items[0] == NULL) {
        why = "no address";
        rc = HUB_EINVAL;
        goto err;
    }
    rc = parse_addr(t, cfg->redis_addrs.items[0], &why);
    if (rc != 0)
        goto err;
    if (t->pass == NULL && cfg->redis_password && cfg->redis_password[0]) {
        t->pass = strdup(cfg->redis_password);
        if (t->pass == NULL) {
            rc = HUB_ENOMEM;
            goto err;
        }
    }
    const char *kp = cfg->redis_key_prefix;
    if (kp == NULL || kp[0] == '\0' || strlen(kp) > 256) {
        key = "cluster.redis.key_prefix";
        why = "must be 1 to 256 bytes";
        rc = HUB_EINVAL;
        goto err;
    }
    t->plen = strlen(kp) + 1;
    t->prefix = malloc(t->plen + 1);
    if (t->prefix == NULL) {
        rc = HUB_ENOMEM;
        goto err;
    }
    memcpy(t->prefix, kp, t->plen - 1);
    t->prefix[t->plen - 1] = '.';
    t->prefix[t->plen] = '\0';
    t->connect_timeout_ms = cfg->cluster_connect_timeout_ms ? cfg->cluster_connect_timeout_ms
                                                            : 2000;
    t->max_backoff_ms = cfg->cluster_reconnect_max_backoff_ms;
    if (t->max_backoff_ms < REDIS_BACKOFF_MIN_MS)
        t->max_backoff_ms = REDIS_BACKOFF_MIN_MS;
    t->buf_cap = cfg->cluster_publish_buffer;
    t->window = t->buf_cap > REDIS_MIN_WINDOW ? t->buf_cap : REDIS_MIN_WINDOW;
    t->rng = uv_hrtime() ^ (uintptr_t)t ^ 0x9E3779B97F4A7C15ULL;
    if (t->rng == 0)
        t->rng = 1;

    conn_init(t, &t->pub, "pub");
    conn_init(t, &t->sub, "sub");
    hub_log_info("redis bus: connecting", "host=%s port=%d auth=%s prefix=%s", t->host, t->port,
                 t->pass ? "yes" : "no", kp);
    conn_start(&t->pub);
    conn_start(&t->sub);
    *impl = t;
    return 0;
err:
    if (rc == HUB_EINVAL)
        hub_log_error("redis bus: bad configuration", "key=%s reason=%s", key, why);
    tr_free_config(t);
    hub_strmap_free(&t->subjects);
    free(t);
    return rc;
}

static void tr_close(void *impl)
{
    redis_tr_t *t = impl;
    if (t == NULL || t->closing)
        return;
    t->closing = 1;
    t->up = 0;
    redis_conn_t *cs[2] = { &t->pub, &t->sub };
    for (int i = 0; i < 2; i++) {
        redis_conn_t *c = cs[i];
        conn_free_ac(c); /* its callbacks find no owner and return */
        c->state = RC_IDLE;
        if (c->gai_busy)
            uv_cancel((uv_req_t *)&c->gai); /* on_resolved still runs and frees */
        c->timer.data = t; /* on_handle_closed finds t through it */
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    }
    queue_free(t);
    hub_strmap_free(&t->subjects);
    tr_free_config(t);
}

const hub_bus_transport_t hub_bus_redis = {
    .name = "redis",
    .open = tr_open,
    .publish = tr_publish,
    .subscribe = tr_subscribe,
    .unsubscribe = tr_unsubscribe,
    .close = tr_close,
};
