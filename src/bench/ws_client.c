/* ws_client.c: one client process = one epoll loop over its connections.
 *
 * RFC 6455 client: handshake with a random key and a checked
 * Sec-WebSocket-Accept, masked client frames, server frames parsed in place
 * (7/16/64-bit lengths, continuation frames assembled, pings answered, close
 * answered). The receive path does not allocate per message: a read goes
 * into one per-process scratch buffer; only the bytes of an incomplete
 * frame are carried over in a per-connection buffer that grows only when a
 * frame is larger than it.
 *
 * Roles: ROLE_SUB (hold and fanout subscribers), ROLE_PUB (fanout
 * publishers, paced by a 1 ms timerfd), ROLE_ECHO (closed loop). The parent
 * drives the process through a command pipe and reads fixed-size reports
 * from a report pipe. */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define SCRATCH_INIT (256 * 1024)
#define MAX_FRAME (64ULL * 1024 * 1024)
#define HS_MAX 8192
#define ATTEMPT_TIMEOUT_NS (15LL * 1000000000LL)
#define EV_CMD UINT32_MAX
#define EV_TIMER (UINT32_MAX - 1)

enum { ST_IDLE = 0, ST_CONNECTING, ST_HS, ST_JOIN, ST_READY, ST_DEAD };

typedef struct {
    int fd;
    uint8_t state;
    uint8_t tries;
    uint8_t frag_op; /* opcode of a fragmented message being assembled, 0 = none */
    uint8_t want_out;
    uint32_t idx; /* global index */
    uint32_t room;
    uint32_t plen, pcap; /* carry-over of an incomplete frame (or the HTTP reply) */
    uint8_t *pend;
    uint32_t wlen, wcap; /* output not yet accepted by the socket */
    uint8_t *wbuf;
    uint32_t flen, fcap; /* fragmented message assembly */
    uint8_t *fbuf;
    int64_t t_attempt;
    char key[25];
    uint32_t inflight; /* echo */
    uint64_t next_id;  /* echo */
} conn_t;

typedef struct {
    const bench_opts_t *o;
    const bench_worker_cfg_t *wc;
    int ep, cmd_fd, rep_fd, tfd;
    conn_t *c;
    uint32_t n;
    struct sockaddr_in dst;
    uint32_t nsrc;
    char hs_req[1024];
    size_t hs_prefix; /* request up to the Host header's port */
    /* connect phase */
    uint32_t next_start;
    uint32_t *retryq;
    uint32_t rq_head, rq_tail;
    uint32_t inflight;
    uint64_t nready, nfailed, nretried, ndropped, ndone;
    int64_t t_first_connect, t_last_101, t_last_ready;
    int ready_sent;
    char first_error[96];
    /* receive */
    uint8_t *scratch;
    size_t scap;
    uint64_t rng;
    /* measurement */
    int running;
    int64_t t_go, t_start, t_end;
    double rate;
    bench_hist_t hist, uhist;
    int rx_stamp;            /* subscribers: SO_TIMESTAMPNS on */
    int64_t real_minus_mono;
    int64_t t_user; /* user-space time of the current recv */ /* to convert the kernel's CLOCK_REALTIME stamps */
    int64_t batch_ns;        /* min time between epoll_waits while measuring (0 = off) */
    uint64_t delivered, gaps, reordered, other, replies, errors;
    uint64_t sent_win, sent_total;
    uint64_t frames_total, recvs_total, wakeups_total;
    uint64_t *room_sent;  /* pub: per room, sent in the window */
    uint64_t *lastseq;    /* sub: [conn][publisher slot] = last seq + 1 (0 = none) */
    uint32_t ppr;         /* publisher slots per room */
    uint64_t *pub_seq;    /* pub: next seq per publisher */
    uint64_t pub_due_sent;
    uint32_t pub_rr;
    int64_t *ring; /* echo: send time by message_id */
    uint32_t ring_mask;
} worker_t;

/* ---- small helpers ------------------------------------------------------ */

static uint64_t rnd64(worker_t *w)
{
    /* xorshift64*; seeded from getrandom-quality entropy in main */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void set_error(worker_t *w, const char *what, int err)
{
    if (w->first_error[0] == '\0')
        snprintf(w->first_error, sizeof(w->first_error), "%s%s%s", what, err ? ": " : "",
                 err ? strerror(err) : "");
}

static int grow(uint8_t **buf, uint32_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 256;
    while (nc < need)
        nc *= 2;
    if (nc > UINT32_MAX)
        return -1;
    uint8_t *nb = realloc(*buf, nc);
    if (nb == NULL)
        return -1;
    *buf = nb;
    *cap = (uint32_t)nc;
    return 0;
}

static int is_inflight(const conn_t *c)
{
    return c->state == ST_CONNECTING || c->state == ST_HS || c->state == ST_JOIN;
}

static void ep_set(worker_t *w, uint32_t ci, int out)
{
    conn_t *c = &w->c[ci];
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.u32 = ci};
    epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = (uint8_t)out;
}

static void conn_close_fd(conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->plen = c->wlen = c->flen = 0;
    c->frag_op = 0;
    c->want_out = 0;
}

static void maybe_ready_report(worker_t *w);

/* a connect/handshake/join attempt failed: retry once, then count it */
static void attempt_failed(worker_t *w, uint32_t ci, const char *why, int err)
{
    conn_t *c = &w->c[ci];
    set_error(w, why, err);
    conn_close_fd(c);
    w->inflight--;
    if (c->tries == 0) {
        c->tries = 1;
        c->state = ST_IDLE;
        w->nretried++;
        w->retryq[w->rq_tail++ % w->n] = ci;
    } else {
        c->state = ST_DEAD;
        w->nfailed++;
        w->ndone++;
    }
}

/* an established connection went away */
static void conn_lost(worker_t *w, uint32_t ci, const char *why, int err)
{
    conn_t *c = &w->c[ci];
    if (is_inflight(c)) {
        attempt_failed(w, ci, why, err);
        return;
    }
    if (c->state == ST_READY) {
        set_error(w, why, err);
        w->ndropped++;
    }
    conn_close_fd(c);
    c->state = ST_DEAD;
}

/* ---- output ---------------------------------------------------------- */

static int conn_write(worker_t *w, uint32_t ci, const uint8_t *buf, size_t len)
{
    conn_t *c = &w->c[ci];
    if (c->wlen == 0) {
        ssize_t k = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (k == (ssize_t)len)
            return 0;
        if (k < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
            k = 0;
        }
        buf += k;
        len -= (size_t)k;
    }
    if (grow(&c->wbuf, &c->wcap, (size_t)c->wlen + len) != 0)
        return -1;
    memcpy(c->wbuf + c->wlen, buf, len);
    c->wlen += (uint32_t)len;
    if (!c->want_out)
        ep_set(w, ci, 1);
    return 0;
}

static void on_writable_flush(worker_t *w, uint32_t ci)
{
    conn_t *c = &w->c[ci];
    while (c->wlen > 0) {
        ssize_t k = send(c->fd, c->wbuf, c->wlen, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            conn_lost(w, ci, "send", errno);
            return;
        }
        memmove(c->wbuf, c->wbuf + k, c->wlen - (size_t)k);
        c->wlen -= (uint32_t)k;
    }
    ep_set(w, ci, 0);
}

/* one masked client frame */
static int send_frame(worker_t *w, uint32_t ci, int op, const void *payload, size_t len)
{
    uint8_t stackbuf[1024];
    size_t hl = len < 126 ? 2 : len <= 0xFFFF ? 4 : 10;
    size_t total = hl + 4 + len;
    uint8_t *f = total <= sizeof(stackbuf) ? stackbuf : malloc(total);
    if (f == NULL)
        return -1;
    f[0] = (uint8_t)(0x80 | op);
    if (len < 126) {
        f[1] = (uint8_t)(0x80 | len);
    } else if (len <= 0xFFFF) {
        f[1] = 0x80 | 126;
        f[2] = (uint8_t)(len >> 8);
        f[3] = (uint8_t)len;
    } else {
        f[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            f[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    uint32_t mk = (uint32_t)rnd64(w);
    uint8_t m[4] = {(uint8_t)mk, (uint8_t)(mk >> 8), (uint8_t)(mk >> 16), (uint8_t)(mk >> 24)};
    memcpy(f + hl, m, 4);
    const uint8_t *p = payload;
    uint8_t *d = f + hl + 4;
    for (size_t i = 0; i < len; i++)
        d[i] = p[i] ^ m[i & 3];
    int r = conn_write(w, ci, f, total);
    if (f != stackbuf)
        free(f);
    return r;
}

static int send_text(worker_t *w, uint32_t ci, const char *s, size_t len)
{
    return send_frame(w, ci, 0x1, s, len);
}

/* ---- connect phase ---------------------------------------------------- */

/* the server port of a connection: fanout publishers all go to --pub-port
 * when given; otherwise see bench_port_of */
static int conn_port(const worker_t *w, const conn_t *c)
{
    if (w->wc->role == ROLE_PUB && w->o->pub_port)
        return w->o->pub_port;
    return bench_port_of(w->o, c->idx, w->wc->rooms);
}

static size_t build_handshake(worker_t *w, uint32_t ci, char *req, size_t cap)
{
    conn_t *c = &w->c[ci];
    uint8_t raw[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rnd64(w);
        memcpy(raw + i, &r, 8);
    }
    bench_base64(raw, 16, c->key);
    memcpy(req, w->hs_req, w->hs_prefix);
    int n = snprintf(req + w->hs_prefix, cap - w->hs_prefix,
                     ":%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
                     "%s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     conn_port(w, c), c->key);
    return w->hs_prefix + (size_t)n;
}

/* connect completed (EPOLLOUT): send the upgrade request */
static void send_handshake(worker_t *w, uint32_t ci)
{
    conn_t *c = &w->c[ci];
    char req[1200];
    size_t len = build_handshake(w, ci, req, sizeof(req));
    c->state = ST_HS;
    c->plen = 0;
    if (conn_write(w, ci, (const uint8_t *)req, len) != 0)
        attempt_failed(w, ci, "send handshake", errno);
}

static void start_conn(worker_t *w, uint32_t ci)
{
    conn_t *c = &w->c[ci];
    int64_t now = bench_now_ns();
    if (w->t_first_connect == 0)
        w->t_first_connect = now;
    c->t_attempt = now;
    c->state = ST_CONNECTING;
    c->plen = 0;
    w->inflight++;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        attempt_failed(w, ci, "socket", errno);
        return;
    }
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    if (w->rx_stamp)
        setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(w->o->src_first + c->idx % w->nsrc);
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
        attempt_failed(w, ci, "bind", errno);
        return;
    }
    w->dst.sin_port = htons((uint16_t)conn_port(w, c));
    if (connect(fd, (struct sockaddr *)&w->dst, sizeof(w->dst)) != 0 && errno != EINPROGRESS) {
        attempt_failed(w, ci, "connect", errno);
        return;
    }
    /* On loopback the TCP handshake has usually completed by the time
     * connect() returns: try the upgrade request right away, and wait for
     * EPOLLOUT only if the socket is not connected yet (EAGAIN). */
    char req[1200];
    size_t len = build_handshake(w, ci, req, sizeof(req));
    ssize_t k = send(fd, req, len, MSG_NOSIGNAL);
    uint32_t events = EPOLLIN;
    if (k == (ssize_t)len) {
        c->state = ST_HS;
    } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        events |= EPOLLOUT; /* still connecting */
    } else if (k < 0) {
        attempt_failed(w, ci, "connect", errno);
        return;
    } else { /* partial: queue the rest */
        c->state = ST_HS;
        if (grow(&c->wbuf, &c->wcap, len - (size_t)k) != 0) {
            attempt_failed(w, ci, "out of memory", 0);
            return;
        }
        memcpy(c->wbuf, req + k, len - (size_t)k);
        c->wlen = (uint32_t)(len - (size_t)k);
        events |= EPOLLOUT;
    }
    struct epoll_event ev = {.events = events, .data.u32 = ci};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        attempt_failed(w, ci, "epoll_ctl", errno);
        return;
    }
    c->want_out = (events & EPOLLOUT) != 0;
}

static void pump_connects(worker_t *w)
{
    uint32_t max = w->wc->max_inflight;
    while (w->inflight < max) {
        uint32_t ci;
        if (w->rq_head != w->rq_tail)
            ci = w->retryq[w->rq_head++ % w->n];
        else if (w->next_start < w->n)
            ci = w->next_start++;
        else
            break;
        start_conn(w, ci);
    }
}

static void conn_ready(worker_t *w, uint32_t ci)
{
    w->c[ci].state = ST_READY;
    w->inflight--;
    w->nready++;
    w->ndone++;
    w->t_last_ready = bench_now_ns();
}

static void send_join(worker_t *w, uint32_t ci)
{
    char msg[160];
    int n = snprintf(msg, sizeof(msg),
                     "{\"message_type\":\"join_room\",\"message_id\":1,\"data\":{\"room_id\":\"room-%u\"}}",
                     w->c[ci].room);
    w->c[ci].state = ST_JOIN;
    if (send_text(w, ci, msg, (size_t)n) != 0)
        attempt_failed(w, ci, "send join", errno);
}

static void check_timeouts(worker_t *w, int64_t now)
{
    for (uint32_t i = 0; i < w->n; i++)
        if (is_inflight(&w->c[i]) && now - w->c[i].t_attempt > ATTEMPT_TIMEOUT_NS)
            attempt_failed(w, i, "timeout", 0);
}

/* ---- scanning (no allocation) ---------------------------------------- */

static int scan_int(const uint8_t *p, size_t len, const char *key, size_t klen, int64_t *out)
{
    const uint8_t *k = memmem(p, len, key, klen);
    if (k == NULL)
        return -1;
    const uint8_t *s = k + klen, *e = p + len;
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    int neg = 0;
    if (s < e && *s == '-') {
        neg = 1;
        s++;
    }
    if (s >= e || *s < '0' || *s > '9')
        return -1;
    int64_t v = 0;
    while (s < e && *s >= '0' && *s <= '9')
        v = v * 10 + (*s++ - '0');
    *out = neg ? -v : v;
    return 0;
}

#define LIT(s) s, sizeof(s) - 1

/* ---- messages --------------------------------------------------------- */

static void echo_send(worker_t *w, uint32_t ci)
{
    conn_t *c = &w->c[ci];
    char msg[400];
    uint64_t id = c->next_id++;
    int64_t now = bench_now_ns();
    int n = snprintf(msg, sizeof(msg),
                     "{\"message_type\":\"%s\",\"message_id\":%llu,\"data\":{\"ts\":%lld,\"key\":\"k7\"}}",
                     w->o->type, (unsigned long long)id, (long long)now);
    w->ring[(size_t)ci * (w->ring_mask + 1) + (id & w->ring_mask)] = now;
    c->inflight++;
    if (send_text(w, ci, msg, (size_t)n) != 0)
        conn_lost(w, ci, "send", errno);
}

static void on_sub_message(worker_t *w, uint32_t ci, const uint8_t *p, size_t len, int64_t now)
{
    int64_t ts, seq, pub;
    if (memmem(p, len, LIT("\"room_message\"")) == NULL || scan_int(p, len, LIT("\"ts\":"), &ts) ||
        scan_int(p, len, LIT("\"seq\":"), &seq) || scan_int(p, len, LIT("\"pub\":"), &pub) ||
        seq < 0 || pub < 0) {
        w->other++;
        return;
    }
    int in_win = w->running && ts >= w->t_start && ts < w->t_end;
    uint32_t rooms = w->wc->rooms ? w->wc->rooms : 1;
    uint64_t slot = (uint64_t)pub / rooms;
    if (slot < w->ppr) {
        uint64_t *ls = &w->lastseq[(size_t)ci * w->ppr + slot];
        uint64_t s1 = (uint64_t)seq + 1;
        if (*ls != 0 && s1 <= *ls) {
            /* a duplicate, or older than one already received (then the
             * gap counted it as lost): not a new delivery, so a server
             * that repeats messages cannot inflate `delivered` */
            if (in_win)
                w->reordered++;
            return;
        }
        if (*ls != 0 && s1 > *ls + 1 && in_win)
            w->gaps += s1 - *ls - 1;
        *ls = s1;
    }
    if (in_win) {
        w->delivered++;
        bench_hist_add(&w->hist, now - ts);
        bench_hist_add(&w->uhist, w->t_user - ts);
    }
}

static void on_echo_message(worker_t *w, uint32_t ci, const uint8_t *p, size_t len, int64_t now)
{
    conn_t *c = &w->c[ci];
    int64_t id;
    if (scan_int(p, len, LIT("\"request_id\":"), &id) != 0 || id <= 0 ||
        (uint64_t)id >= c->next_id || c->next_id - (uint64_t)id > w->ring_mask + 1) {
        w->other++;
        return;
    }
    int err = memmem(p, len, LIT("\"message_type\":\"error\"")) != NULL;
    int64_t sent = w->ring[(size_t)ci * (w->ring_mask + 1) + ((uint64_t)id & w->ring_mask)];
    if (c->inflight > 0)
        c->inflight--;
    if (w->running && now >= w->t_start && now < w->t_end) {
        if (err) {
            w->errors++;
        } else {
            w->replies++;
            bench_hist_add(&w->hist, now - sent);
        }
    }
    if (w->running && now < w->t_end)
        echo_send(w, ci);
}

static void on_message(worker_t *w, uint32_t ci, const uint8_t *p, size_t len, int64_t now)
{
    conn_t *c = &w->c[ci];
    w->frames_total++;
    if (c->state == ST_JOIN) {
        if (memmem(p, len, LIT("\"room_joined\"")) != NULL)
            conn_ready(w, ci);
        else if (memmem(p, len, LIT("\"message_type\":\"error\"")) != NULL)
            attempt_failed(w, ci, "join_room answered with an error", 0);
        return;
    }
    if (c->state != ST_READY)
        return;
    switch (w->wc->role) {
    case ROLE_SUB:
        on_sub_message(w, ci, p, len, now);
        break;
    case ROLE_ECHO:
        on_echo_message(w, ci, p, len, now);
        break;
    default:
        break;
    }
}

/* returns 0, or -1 when the connection is gone */
static int on_frame(worker_t *w, uint32_t ci, int fin, int op, uint8_t *p, size_t len,
                    int64_t now)
{
    conn_t *c = &w->c[ci];
    switch (op) {
    case 0x8: { /* close: answer with the same code, then drop the socket */
        uint8_t code[2] = {0x03, 0xE8};
        if (len >= 2)
            memcpy(code, p, 2);
        send_frame(w, ci, 0x8, code, 2);
        conn_lost(w, ci, "server closed the connection", 0);
        return -1;
    }
    case 0x9:
        if (send_frame(w, ci, 0xA, p, len) != 0) {
            conn_lost(w, ci, "send pong", errno);
            return -1;
        }
        return 0;
    case 0xA:
        return 0;
    case 0x1:
    case 0x2:
        if (c->frag_op != 0) {
            conn_lost(w, ci, "protocol: new message inside a fragmented one", 0);
            return -1;
        }
        if (fin) {
            on_message(w, ci, p, len, now);
            return c->fd < 0 ? -1 : 0;
        }
        if (grow(&c->fbuf, &c->fcap, len) != 0) {
            conn_lost(w, ci, "out of memory", 0);
            return -1;
        }
        c->frag_op = (uint8_t)op;
        if (len)
            memcpy(c->fbuf, p, len);
        c->flen = (uint32_t)len;
        return 0;
    case 0x0:
        if (c->frag_op == 0) {
            conn_lost(w, ci, "protocol: continuation without a message", 0);
            return -1;
        }
        if (grow(&c->fbuf, &c->fcap, (size_t)c->flen + len) != 0) {
            conn_lost(w, ci, "out of memory", 0);
            return -1;
        }
        if (len)
            memcpy(c->fbuf + c->flen, p, len);
        c->flen += (uint32_t)len;
        if (fin) {
            c->frag_op = 0;
            on_message(w, ci, c->fbuf, c->flen, now);
            c->flen = 0;
            return c->fd < 0 ? -1 : 0;
        }
        return 0;
    default:
        conn_lost(w, ci, "protocol: unknown opcode", 0);
        return -1;
    }
}

/* Parses the complete frames in buf; returns the bytes consumed, or -1 when
 * the connection is gone. *need is set to the size of the incomplete frame
 * at the end when its header is complete (0 otherwise). */
static long parse_frames(worker_t *w, uint32_t ci, uint8_t *buf, size_t len, int64_t now,
                         size_t *need)
{
    size_t off = 0;
    *need = 0;
    while (len - off >= 2) {
        uint8_t b0 = buf[off], b1 = buf[off + 1];
        uint64_t plen = b1 & 0x7f;
        size_t hl = 2;
        if (plen == 126) {
            if (len - off < 4)
                break;
            plen = (uint64_t)buf[off + 2] << 8 | buf[off + 3];
            hl = 4;
        } else if (plen == 127) {
            if (len - off < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | buf[off + 2 + i];
            hl = 10;
        }
        int masked = (b1 & 0x80) != 0;
        if (masked)
            hl += 4;
        if (plen > MAX_FRAME) {
            conn_lost(w, ci, "protocol: frame too large", 0);
            return -1;
        }
        if (len - off < hl + plen) {
            if (len - off >= hl)
                *need = hl + (size_t)plen;
            break;
        }
        uint8_t *p = buf + off + hl;
        if (masked) { /* servers must not mask; unmask anyway */
            const uint8_t *m = p - 4;
            for (uint64_t i = 0; i < plen; i++)
                p[i] ^= m[i & 3];
        }
        off += hl + (size_t)plen;
        if (on_frame(w, ci, b0 & 0x80, b0 & 0x0f, p, (size_t)plen, now) != 0)
            return -1;
    }
    return (long)off;
}

/* the HTTP reply to the upgrade in buf; returns the header length, 0 if
 * incomplete, -1 if refused or wrong */
static long check_handshake(worker_t *w, uint32_t ci, const uint8_t *buf, size_t len)
{
    conn_t *c = &w->c[ci];
    const uint8_t *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL) {
        if (len >= HS_MAX)
            set_error(w, "handshake: reply head too long", 0);
        return len >= HS_MAX ? -1 : 0;
    }
    size_t hlen = (size_t)(end - buf) + 4;
    if (len < 12 || memcmp(buf, "HTTP/1.1 101", 12) != 0) {
        char line[64];
        size_t l = 0;
        while (l < len && l < sizeof(line) - 1 && buf[l] != '\r') {
            line[l] = (char)buf[l];
            l++;
        }
        line[l] = '\0';
        char msg[96];
        snprintf(msg, sizeof(msg), "handshake refused: %s", line);
        set_error(w, msg, 0);
        return -1;
    }
    char want[29];
    bench_ws_accept(c->key, strlen(c->key), want);
    /* "sec-websocket-accept:" at a line start, any case */
    static const char hname[] = "sec-websocket-accept:";
    const size_t hn = sizeof(hname) - 1;
    for (size_t i = 0; i + 1 + hn < hlen; i++) {
        if (buf[i] != '\n' || strncasecmp((const char *)buf + i + 1, hname, hn) != 0)
            continue;
        const uint8_t *v = buf + i + 1 + hn, *hend = buf + hlen;
        while (v < hend && (*v == ' ' || *v == '\t'))
            v++;
        if (v + 29 <= hend && memcmp(v, want, 28) == 0 &&
            (v[28] == '\r' || v[28] == ' ' || v[28] == '\t'))
            return (long)hlen;
        set_error(w, "handshake: wrong Sec-WebSocket-Accept", 0);
        return -1;
    }
    set_error(w, "handshake: no Sec-WebSocket-Accept", 0);
    return -1;
}

static void after_open(worker_t *w, uint32_t ci)
{
    w->t_last_101 = bench_now_ns();
    if (w->wc->rooms > 0 && w->wc->role != ROLE_ECHO)
        send_join(w, ci);
    else
        conn_ready(w, ci);
}

/* One recv into the scratch buffer (after the carried-over bytes), then
 * everything complete is parsed in place; the incomplete tail is kept. */
static void on_readable(worker_t *w, uint32_t ci)
{
    conn_t *c = &w->c[ci];
    size_t carry = c->plen;
    if (carry)
        memcpy(w->scratch, c->pend, carry);
    ssize_t k;
    int64_t kstamp = 0;
    if (w->rx_stamp) {
        union {
            char buf[CMSG_SPACE(sizeof(struct timespec)) * 2];
            struct cmsghdr align;
        } cb;
        struct iovec iov = {.iov_base = w->scratch + carry, .iov_len = w->scap - carry};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.buf,
                            .msg_controllen = sizeof(cb.buf)};
        k = recvmsg(c->fd, &mh, 0);
        if (k > 0)
            for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h != NULL; h = CMSG_NXTHDR(&mh, h))
                if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SO_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(h), sizeof(ts));
                    kstamp = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec - w->real_minus_mono;
                }
    } else {
        k = recv(c->fd, w->scratch + carry, w->scap - carry, 0);
    }
    if (k <= 0) {
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        conn_lost(w, ci, k == 0 ? "server closed the TCP connection" : "recv", k == 0 ? 0 : errno);
        return;
    }
    int64_t now = bench_now_ns();
    w->t_user = now;
    /* the kernel's arrival stamp, when sane (never later than now) */
    if (kstamp > 0 && kstamp <= now + 1000)
        now = kstamp < now ? kstamp : now;
    w->recvs_total++;
    size_t total = carry + (size_t)k, start = 0, need = 0;
    if (c->state == ST_HS) {
        long hl = check_handshake(w, ci, w->scratch, total);
        if (hl < 0) {
            attempt_failed(w, ci, "handshake", 0);
            return;
        }
        if (hl == 0) {
            need = total;
            goto keep;
        }
        start = (size_t)hl;
        after_open(w, ci);
        if (c->fd < 0)
            return;
    }
    long used = parse_frames(w, ci, w->scratch + start, total - start, now, &need);
    if (used < 0)
        return;
    start += (size_t)used;
keep:;
    size_t rest = total - start;
    if (rest && grow(&c->pend, &c->pcap, rest > need ? rest : need) != 0) {
        conn_lost(w, ci, "out of memory", 0);
        return;
    }
    if (rest)
        memcpy(c->pend, w->scratch + start, rest);
    c->plen = (uint32_t)rest;
    if (need + 65536 > w->scap) { /* a frame bigger than the scratch buffer */
        uint8_t *ns = realloc(w->scratch, need + 65536);
        if (ns != NULL) {
            w->scratch = ns;
            w->scap = need + 65536;
        }
    }
}

static void on_conn_event(worker_t *w, uint32_t ci, uint32_t events)
{
    conn_t *c = &w->c[ci];
    if (c->fd < 0)
        return;
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
            err = errno;
        if (err != 0) {
            attempt_failed(w, ci, "connect", err);
            return;
        }
        if (!(events & (EPOLLOUT | EPOLLIN)))
            return;
        ep_set(w, ci, 0);
        send_handshake(w, ci);
        return;
    }
    if (events & EPOLLOUT) {
        on_writable_flush(w, ci);
        if (c->fd < 0)
            return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        on_readable(w, ci);
}

/* ---- publisher pacing --------------------------------------------------- */

static void pub_tick(worker_t *w)
{
    if (!w->running || w->n == 0)
        return;
    int64_t now = bench_now_ns();
    if (now >= w->t_end) {
        w->running = 0;
        return;
    }
    uint64_t due = (uint64_t)((double)(now - w->t_go) * w->rate / 1e9);
    char msg[256];
    while (w->pub_due_sent < due) {
        /* round robin over the live publishers */
        uint32_t tries = 0, ci = w->pub_rr;
        while (w->c[ci].state != ST_READY && tries < w->n) {
            ci = (ci + 1) % w->n;
            tries++;
        }
        if (tries == w->n) {
            w->running = 0;
            return;
        }
        w->pub_rr = (ci + 1) % w->n;
        w->pub_due_sent++;
        conn_t *c = &w->c[ci];
        int64_t ts = bench_now_ns();
        uint64_t seq = w->pub_seq[ci]++;
        int n = snprintf(msg, sizeof(msg),
                         "{\"message_type\":\"room_message\",\"data\":{\"room_id\":\"room-%u\","
                         "\"content\":{\"ts\":%lld,\"seq\":%llu,\"pub\":%u}}}",
                         c->room, (long long)ts, (unsigned long long)seq, c->idx);
        w->sent_total++;
        if (ts >= w->t_start && ts < w->t_end) {
            w->sent_win++;
            w->room_sent[c->room]++;
        }
        if (send_text(w, ci, msg, (size_t)n) != 0)
            conn_lost(w, ci, "send", errno);
    }
}

/* ---- parent link -------------------------------------------------------- */

static int write_full(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t k = write(fd, p, len);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

static bench_report_t g_rep; /* 18 KB: static, not on the stack */

static int send_report(worker_t *w, uint32_t type)
{
    bench_report_t *r = &g_rep;
    memset(r, 0, offsetof(bench_report_t, hist));
    r->type = type;
    r->connected = w->nready;
    r->failed = w->nfailed;
    r->retried = w->nretried;
    r->dropped = w->ndropped;
    r->t_first_connect = w->t_first_connect;
    r->t_last_101 = w->t_last_101;
    r->t_last_ready = w->t_last_ready;
    r->sent = w->sent_win;
    r->sent_total = w->sent_total;
    r->delivered = w->delivered;
    r->gaps = w->gaps;
    r->reordered = w->reordered;
    r->other = w->other;
    r->replies = w->replies;
    r->errors = w->errors;
    r->frames_total = w->frames_total;
    r->recvs_total = w->recvs_total;
    r->wakeups_total = w->wakeups_total;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        r->cpu_ns = (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
                    (int64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
    memcpy(r->first_error, w->first_error, sizeof(r->first_error));
    r->hist = w->hist;
    r->uhist = w->uhist;
    uint32_t rooms = w->wc->rooms;
    uint64_t *extra = NULL;
    if (rooms > 0 && ((type == REP_READY && w->wc->role == ROLE_SUB) ||
                      (type == REP_STATS && w->wc->role == ROLE_PUB))) {
        r->nextra = rooms;
        if (type == REP_READY) {
            extra = calloc(rooms, sizeof(uint64_t));
            if (extra == NULL)
                return -1;
            for (uint32_t i = 0; i < w->n; i++)
                if (w->c[i].state == ST_READY)
                    extra[w->c[i].room]++;
        } else {
            extra = w->room_sent;
        }
    }
    int rc = write_full(w->rep_fd, r, sizeof(*r));
    if (rc == 0 && r->nextra)
        rc = write_full(w->rep_fd, extra, (size_t)r->nextra * sizeof(uint64_t));
    if (extra != NULL && extra != w->room_sent)
        free(extra);
    return rc;
}

static void maybe_ready_report(worker_t *w)
{
    if (!w->ready_sent && w->ndone == w->n) {
        w->ready_sent = 1;
        send_report(w, REP_READY);
    }
}

static void on_go(worker_t *w, const bench_cmd_t *cmd)
{
    w->t_go = bench_now_ns();
    w->t_start = cmd->t_start;
    w->t_end = cmd->t_end;
    w->rate = cmd->rate;
    w->delivered = w->gaps = w->reordered = w->other = w->replies = w->errors = 0;
    w->sent_win = 0;
    bench_hist_reset(&w->hist);
    bench_hist_reset(&w->uhist);
    if (w->room_sent != NULL)
        memset(w->room_sent, 0, (size_t)w->wc->rooms * sizeof(uint64_t));
    w->pub_due_sent = 0;
    w->running = 1;
    if (w->wc->role == ROLE_ECHO) {
        for (uint32_t i = 0; i < w->n; i++)
            for (long k = 0; k < w->o->window && w->c[i].state == ST_READY; k++)
                echo_send(w, i);
    }
}

/* returns 1 to exit */
static int on_cmd(worker_t *w)
{
    bench_cmd_t cmd;
    ssize_t k = read(w->cmd_fd, &cmd, sizeof(cmd));
    if (k < 0 && (errno == EINTR || errno == EAGAIN))
        return 0;
    if (k != (ssize_t)sizeof(cmd))
        return 1; /* parent gone */
    switch (cmd.cmd) {
    case CMD_GO:
        on_go(w, &cmd);
        return 0;
    case CMD_REPORT:
        return send_report(w, REP_STATS) != 0;
    default:
        return 1;
    }
}

/* ---- main loop ------------------------------------------------------------ */

static int64_t real_minus_mono(void)
{
    struct timespec r;
    int64_t m1 = bench_now_ns();
    clock_gettime(CLOCK_REALTIME, &r);
    int64_t m2 = bench_now_ns();
    return (int64_t)r.tv_sec * 1000000000LL + r.tv_nsec - (m1 + (m2 - m1) / 2);
}

static int64_t env_int(const char *name, int64_t dflt)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        return dflt;
    char *end;
    long long x = strtoll(v, &end, 10);
    return *end == '\0' && x >= 0 ? (int64_t)x : dflt;
}

int bench_worker_main(const bench_opts_t *o, const bench_worker_cfg_t *wc, int cmd_fd, int rep_fd)
{
    static worker_t W;
    worker_t *w = &W;
    w->o = o;
    w->wc = wc;
    w->cmd_fd = cmd_fd;
    w->rep_fd = rep_fd;
    w->n = wc->count;
    w->nsrc = o->src_last - o->src_first + 1;
    w->dst.sin_family = AF_INET;
    if (inet_pton(AF_INET, o->host, &w->dst.sin_addr) != 1)
        return 1;
    uint64_t seed = (uint64_t)bench_now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ULL;
    FILE *ur = fopen("/dev/urandom", "rb");
    if (ur != NULL) {
        if (fread(&seed, sizeof(seed), 1, ur) != 1)
            seed ^= (uint64_t)bench_now_ns();
        fclose(ur);
    }
    w->rng = seed ? seed : 1;
    /* fanout subscribers timestamp arrivals with the kernel's receive stamp
     * (GOHUB_BENCH_USER_CLOCK=1: user-space clock after recv instead), and
     * may cap their wakeups while measuring (GOHUB_BENCH_RX_BATCH_US) */
    if (wc->role == ROLE_SUB && o->mode == MODE_FANOUT) {
        w->rx_stamp = env_int("GOHUB_BENCH_USER_CLOCK", 0) == 0;
        w->batch_ns = env_int("GOHUB_BENCH_RX_BATCH_US", 500) * 1000;
    }
    w->real_minus_mono = real_minus_mono();

    /* the request up to the Host header's port (the rest: build_handshake) */
    int hp = snprintf(w->hs_req, sizeof(w->hs_req), "GET %s HTTP/1.1\r\nHost: %s", o->path, o->host);
    if (hp < 0 || (size_t)hp >= sizeof(w->hs_req) - 100)
        return 1;
    w->hs_prefix = (size_t)hp;

    w->c = calloc(w->n ? w->n : 1, sizeof(conn_t));
    w->retryq = calloc(w->n ? w->n : 1, sizeof(uint32_t));
    w->scap = SCRATCH_INIT;
    w->scratch = malloc(w->scap);
    if (w->c == NULL || w->retryq == NULL || w->scratch == NULL)
        return 1;
    for (uint32_t i = 0; i < w->n; i++) {
        w->c[i].fd = -1;
        w->c[i].idx = wc->first + i;
        w->c[i].room = wc->rooms ? (wc->first + i) % wc->rooms : 0;
        w->c[i].next_id = 1;
    }
    if (wc->role == ROLE_SUB && wc->rooms > 0) {
        w->ppr = wc->publishers ? (wc->publishers + wc->rooms - 1) / wc->rooms : 0;
        if (w->ppr) {
            w->lastseq = calloc((size_t)w->n * w->ppr, sizeof(uint64_t));
            if (w->lastseq == NULL)
                return 1;
        }
    }
    if (wc->role == ROLE_PUB) {
        w->room_sent = calloc(wc->rooms ? wc->rooms : 1, sizeof(uint64_t));
        w->pub_seq = calloc(w->n ? w->n : 1, sizeof(uint64_t));
        if (w->room_sent == NULL || w->pub_seq == NULL)
            return 1;
    }
    if (wc->role == ROLE_ECHO) {
        uint32_t rs = 1;
        while (rs < (uint32_t)o->window)
            rs <<= 1;
        w->ring_mask = rs - 1;
        w->ring = calloc((size_t)(w->n ? w->n : 1) * rs, sizeof(int64_t));
        if (w->ring == NULL)
            return 1;
    }

    w->ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->ep < 0)
        return 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = EV_CMD};
    epoll_ctl(w->ep, EPOLL_CTL_ADD, cmd_fd, &ev);
    w->tfd = -1;
    if (wc->role == ROLE_PUB) {
        w->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        struct itimerspec its = {.it_interval = {0, 1000000}, .it_value = {0, 1000000}};
        timerfd_settime(w->tfd, 0, &its, NULL);
        ev.events = EPOLLIN;
        ev.data.u32 = EV_TIMER;
        epoll_ctl(w->ep, EPOLL_CTL_ADD, w->tfd, &ev);
    }

    struct epoll_event evs[512];
    int64_t last_tcheck = bench_now_ns(), last_clock = last_tcheck, last_ret = 0;
    int last_n = 0;
    for (;;) {
        pump_connects(w);
        maybe_ready_report(w);
        if (w->batch_ns > 0 && w->running && last_n > 0 && last_n < 512) {
            int64_t wake = last_ret + w->batch_ns, now = bench_now_ns();
            if (now < wake) {
                struct timespec d = {.tv_sec = 0, .tv_nsec = (long)(wake - now)};
                nanosleep(&d, NULL);
            }
        }
        int n = epoll_wait(w->ep, evs, 512, 50);
        last_n = n;
        last_ret = bench_now_ns();
        if (last_ret - last_clock > 100000000LL) {
            last_clock = last_ret;
            w->real_minus_mono = real_minus_mono();
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        if (n > 0)
            w->wakeups_total++;
        for (int i = 0; i < n; i++) {
            uint32_t id = evs[i].data.u32;
            if (id == EV_CMD) {
                if (on_cmd(w))
                    return 0;
            } else if (id == EV_TIMER) {
                uint64_t exp;
                if (read(w->tfd, &exp, sizeof(exp)) < 0 && errno != EAGAIN)
                    return 1;
                pub_tick(w);
            } else {
                on_conn_event(w, id, evs[i].events);
            }
        }
        if (w->inflight > 0) {
            int64_t now = bench_now_ns();
            if (now - last_tcheck > 250000000LL) {
                last_tcheck = now;
                check_timeouts(w, now);
            }
        }
    }
}
