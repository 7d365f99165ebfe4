/* floor.c: gohub-floor, the calibration point ("the floor") of `make bench`:
 * about the least a WebSocket room server can do per delivery on this kernel.
 *
 * One thread, one level-triggered epoll loop, plain libc. It speaks the
 * subset of gohub's /ws protocol that gohub-bench and hub_smoke.py use, with
 * the replies of scripts/bench/ws_hub.js (the Node peer):
 *
 *   join_room    {room_id}          -> room_joined {room_id, status, member_count}
 *   leave_room   {room_id}          -> room_left {room_id, status}
 *   room_message {room_id, content} -> every other member: room_message
 *                                      {room_id, content, sender_id, timestamp}
 *                                      (ack {request_id} to the sender when message_id != 0)
 *   ping         {ts?}              -> pong {ts, server_ts, rtt}
 *   lookup       {key}              -> found {value}   (k1..k1000 -> 1..1000)
 *   anything else                   -> error 1006
 *
 * Requests are not parsed as JSON: each field is found by string search (the
 * first `"key":` anywhere in the text), and `content` is copied verbatim. A
 * room message's frame is built once and handed to one send() per recipient;
 * what a socket does not take is queued on that connection and flushed on
 * EPOLLOUT (never dropped, no limit). No heartbeat, no rate limits, no
 * per-message deflate; binary messages are refused (close 1003), messages
 * over 64 KiB too (1009).
 *
 *   gohub-floor [--host 127.0.0.1] [--port 8090]
 */
#include "bench.h" /* bench_ws_accept (sha1.c) */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_PAYLOAD (64 * 1024) /* gohub's limits.max_message_bytes, ws_hub.js's maxPayload */
#define HS_MAX 8192             /* longest HTTP upgrade request head */
#define SCRATCH (256 * 1024)    /* carry-over (< 64 KiB + 14) + one read */
#define ROOM_BUCKETS 4096       /* fixed: the bench uses 100 rooms */
#define MAX_ROOM_ID 128

typedef struct {
    uint8_t *p;
    size_t off, len, cap; /* live bytes: p[off..len) */
} buf_t;

typedef struct room room_t;
typedef struct conn conn_t;

struct conn {
    int fd;
    unsigned id;      /* sender_id "anon-c<id>", like ws_hub.js */
    int upgraded;     /* the 101 went out: frames follow */
    int want_out;     /* EPOLLOUT armed */
    int dead;         /* closing: skipped, freed after the current batch */
    uint8_t frag_op;  /* opcode of a fragmented message being assembled */
    buf_t in;         /* carry-over: an incomplete request head or frame */
    buf_t out;        /* bytes the socket has not taken yet */
    buf_t frag;       /* fragmented message assembly */
    room_t **rooms;   /* rooms joined (usually one) */
    size_t nrooms, caprooms;
    conn_t *prev, *next; /* all connections */
    conn_t *next_dead;
};

struct room {
    room_t *next; /* hash chain */
    size_t idlen;
    conn_t **m;   /* members */
    size_t n, cap;
    char id[];    /* as sent: JSON string contents, escapes kept */
};

static int ep;
static room_t *rooms[ROOM_BUCKETS];
static conn_t *conns, *dead;
static uint8_t *scratch;
static buf_t fb; /* the outgoing frame being built */
static unsigned next_client_id = 1;
static unsigned long long next_message_id = 1;
static unsigned long long n_accepted, n_messages, n_sends, n_queued;

/* ---- small helpers -------------------------------------------------------- */

static void die(const char *what)
{
    fprintf(stderr, "gohub-floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL)
        die("out of memory");
    return p;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void buf_reserve(buf_t *b, size_t extra)
{
    if (b->off > 0 && b->len + extra > b->cap) { /* compact first */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + extra <= b->cap)
        return;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + extra)
        nc *= 2;
    b->p = xrealloc(b->p, nc);
    b->cap = nc;
}

static void buf_put(buf_t *b, const void *s, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void buf_drop(buf_t *b, size_t n)
{
    b->off += n;
    if (b->off == b->len)
        b->off = b->len = 0;
}

static void buf_free(buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- output --------------------------------------------------------------- */

static void conn_kill(conn_t *c)
{
    if (!c->dead) {
        c->dead = 1;
        c->next_dead = dead;
        dead = c;
    }
}

static void ep_out(conn_t *c, int on)
{
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        die("epoll_ctl");
    c->want_out = on;
}

/* one send() when nothing is queued; the rest (or all) is queued */
static void conn_send(conn_t *c, const void *p, size_t n)
{
    if (c->dead)
        return;
    n_sends++;
    if (c->out.len == 0) {
        ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);
        if (k == (ssize_t)n)
            return;
        if (k < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                conn_kill(c);
                return;
            }
            k = 0;
        }
        p = (const uint8_t *)p + k;
        n -= (size_t)k;
    }
    n_queued++;
    buf_put(&c->out, p, n);
    if (!c->want_out)
        ep_out(c, 1);
}

static void on_writable(conn_t *c)
{
    while (c->out.len > 0) {
        ssize_t k = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                conn_kill(c);
            return;
        }
        buf_drop(&c->out, (size_t)k);
    }
    ep_out(c, 0);
}

/* The frame buffer: the payload is written from offset 10, then the header
 * right before it, so a frame is one contiguous block. */
static void fb_begin(void)
{
    fb.off = 0;
    fb.len = 10;
    buf_reserve(&fb, 512);
}

__attribute__((format(printf, 1, 2))) static void fb_fmt(const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = fb.cap - fb.len;
        int n = vsnprintf((char *)fb.p + fb.len, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            die("vsnprintf");
        if ((size_t)n < room) {
            fb.len += (size_t)n;
            return;
        }
        buf_reserve(&fb, (size_t)n + 1);
    }
}

/* the finished text frame (FIN, opcode 1, unmasked) */
static const uint8_t *fb_frame(size_t *flen)
{
    size_t n = fb.len - 10, hl = n < 126 ? 2 : n <= 0xFFFF ? 4 : 10;
    uint8_t *h = fb.p + 10 - hl;
    h[0] = 0x81;
    if (n < 126) {
        h[1] = (uint8_t)n;
    } else if (n <= 0xFFFF) {
        h[1] = 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    }
    *flen = hl + n;
    return h;
}

/* the envelope of ws_hub.js: {message_id, message_type, data, timestamp[, request_id]} */
static void reply_begin(const char *type)
{
    fb_begin();
    fb_fmt("{\"message_id\":%llu,\"message_type\":\"%s\",\"data\":{", next_message_id++, type);
}

static void reply_end(conn_t *c, long long rid)
{
    fb_fmt("},\"timestamp\":%lld", now_ms());
    if (rid > 0)
        fb_fmt(",\"request_id\":%lld", rid);
    fb_fmt("}");
    size_t n;
    const uint8_t *f = fb_frame(&n);
    conn_send(c, f, n);
}

static void reply_error(conn_t *c, int code, const char *msg, long long rid)
{
    reply_begin("error");
    fb_fmt("\"code\":%d,\"message\":\"%s\",\"request_id\":%lld", code, msg, rid);
    reply_end(c, rid);
}

static void send_control(conn_t *c, int op, const uint8_t *p, size_t n)
{
    uint8_t f[2 + 125];
    if (n > 125)
        n = 125;
    f[0] = (uint8_t)(0x80 | op);
    f[1] = (uint8_t)n;
    memcpy(f + 2, p, n);
    conn_send(c, f, 2 + n);
}

static void close_with(conn_t *c, int code)
{
    uint8_t b[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    send_control(c, 0x8, b, 2);
    conn_kill(c);
}

/* ---- rooms ---------------------------------------------------------------- */

static room_t **room_slot(const char *id, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)id[i]) * 16777619u;
    room_t **s = &rooms[h % ROOM_BUCKETS];
    while (*s != NULL && ((*s)->idlen != n || memcmp((*s)->id, id, n) != 0))
        s = &(*s)->next;
    return s;
}

static room_t *room_get(const char *id, size_t n, int create)
{
    room_t **s = room_slot(id, n);
    if (*s == NULL && create) {
        room_t *r = calloc(1, sizeof(room_t) + n);
        if (r == NULL)
            die("out of memory");
        memcpy(r->id, id, n);
        r->idlen = n;
        *s = r;
    }
    return *s;
}

static int is_member(const conn_t *c, const room_t *r)
{
    for (size_t i = 0; i < c->nrooms; i++)
        if (c->rooms[i] == r)
            return 1;
    return 0;
}

static void room_add(room_t *r, conn_t *c)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 8;
        r->m = xrealloc(r->m, r->cap * sizeof(*r->m));
    }
    r->m[r->n++] = c;
    if (c->nrooms == c->caprooms) {
        c->caprooms = c->caprooms ? 2 * c->caprooms : 1;
        c->rooms = xrealloc(c->rooms, c->caprooms * sizeof(*c->rooms));
    }
    c->rooms[c->nrooms++] = r;
}

/* linear in the room's size: leaving is rare next to delivering */
static void room_remove(room_t *r, conn_t *c)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->m[i] == c) {
            r->m[i] = r->m[--r->n];
            break;
        }
    for (size_t i = 0; i < c->nrooms; i++)
        if (c->rooms[i] == r) {
            c->rooms[i] = c->rooms[--c->nrooms];
            break;
        }
    if (r->n == 0) { /* an empty room is gone, as in ws_hub.js */
        *room_slot(r->id, r->idlen) = r->next;
        free(r->m);
        free(r);
    }
}

/* ---- request fields, by string search ------------------------------------- */

static const uint8_t *skip_ws(const uint8_t *s, const uint8_t *e)
{
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n'))
        s++;
    return s;
}

/* the closing quote of the string that opens at s, NULL if unterminated */
static const uint8_t *string_end(const uint8_t *s, const uint8_t *e)
{
    for (s++; s < e; s++) {
        if (*s == '\\')
            s++;
        else if (*s == '"')
            return s;
    }
    return NULL;
}

/* the value of the first `"key": value` in p (qkey includes the quotes) */
static const uint8_t *find_value(const uint8_t *p, const uint8_t *e, const char *qkey)
{
    size_t kl = strlen(qkey);
    const uint8_t *s = p;
    while (s < e && (s = memmem(s, (size_t)(e - s), qkey, kl)) != NULL) {
        const uint8_t *v = skip_ws(s + kl, e);
        if (v < e && *v == ':')
            return skip_ws(v + 1, e);
        s += kl;
    }
    return NULL;
}

/* just past the JSON value that starts at v (brackets balanced, strings
 * skipped), NULL when it does not end inside p */
static const uint8_t *value_end(const uint8_t *v, const uint8_t *e)
{
    int depth = 0;
    for (const uint8_t *s = v; s < e; s++) {
        switch (*s) {
        case '"':
            s = string_end(s, e);
            if (s == NULL)
                return NULL;
            if (depth == 0)
                return s + 1;
            break;
        case '{':
        case '[':
            depth++;
            break;
        case '}':
        case ']':
            if (depth == 0)
                return s > v ? s : NULL;
            if (--depth == 0)
                return s + 1;
            break;
        case ',':
        case ' ':
        case '\t':
        case '\r':
        case '\n':
            if (depth == 0)
                return s > v ? s : NULL;
            break;
        default:
            break;
        }
    }
    return NULL;
}

/* a string field's contents (escapes kept); 0 if found */
static int get_string(const uint8_t *p, const uint8_t *e, const char *qkey, const char **s, size_t *n)
{
    const uint8_t *v = find_value(p, e, qkey), *end;
    if (v == NULL || v >= e || *v != '"' || (end = string_end(v, e)) == NULL)
        return -1;
    *s = (const char *)v + 1;
    *n = (size_t)(end - v - 1);
    return 0;
}

/* a non-negative integer field, -1 if absent or not one */
static long long get_uint(const uint8_t *p, const uint8_t *e, const char *qkey)
{
    const uint8_t *v = find_value(p, e, qkey);
    long long x = 0;
    int digits = 0;
    for (; v != NULL && v < e && *v >= '0' && *v <= '9' && digits < 18; v++, digits++)
        x = x * 10 + (*v - '0');
    if (digits == 0 || (v < e && (*v == '.' || *v == 'e' || *v == 'E' || (*v >= '0' && *v <= '9'))))
        return -1;
    return x;
}

/* ---- handlers ------------------------------------------------------------- */

typedef struct {
    const uint8_t *p, *e; /* the request text */
    long long rid;        /* message_id when > 0, else 0 */
} req_t;

/* the room_id field (0), or an error reply (-1) */
static int get_room_id(conn_t *c, const req_t *q, const char **id, size_t *n)
{
    if (get_string(q->p, q->e, "\"room_id\"", id, n) != 0 || *n == 0 || *n > MAX_ROOM_ID) {
        reply_error(c, 1001, "room_id must be a string", q->rid);
        return -1;
    }
    return 0;
}

static void on_join(conn_t *c, const req_t *q)
{
    const char *id;
    size_t n;
    if (get_room_id(c, q, &id, &n) != 0)
        return;
    room_t *r = room_get(id, n, 1);
    if (is_member(c, r)) {
        reply_error(c, 3004, "already in room", q->rid);
        return;
    }
    room_add(r, c);
    reply_begin("room_joined");
    fb_fmt("\"room_id\":\"%.*s\",\"status\":\"joined\",\"member_count\":%zu", (int)n, id, r->n);
    reply_end(c, q->rid);
}

static void on_leave(conn_t *c, const req_t *q)
{
    const char *id;
    size_t n;
    if (get_room_id(c, q, &id, &n) != 0)
        return;
    room_t *r = room_get(id, n, 0);
    if (r == NULL || !is_member(c, r)) {
        reply_error(c, 3003, "not in room", q->rid);
        return;
    }
    room_remove(r, c);
    reply_begin("room_left");
    fb_fmt("\"room_id\":\"%.*s\",\"status\":\"left\"", (int)n, id);
    reply_end(c, q->rid);
}

/* the fan-out: one frame, one send() per other member */
static void on_room_message(conn_t *c, const req_t *q)
{
    const char *id;
    size_t n;
    if (get_room_id(c, q, &id, &n) != 0)
        return;
    const uint8_t *cv = find_value(q->p, q->e, "\"content\"");
    const uint8_t *ce = cv != NULL ? value_end(cv, q->e) : NULL;
    if (ce == NULL) {
        reply_error(c, 1001, "content is required", q->rid);
        return;
    }
    room_t *r = room_get(id, n, 0);
    if (r == NULL) {
        reply_error(c, 3000, "room not found", q->rid);
        return;
    }
    if (!is_member(c, r)) {
        reply_error(c, 3003, "not in room", q->rid);
        return;
    }
    long long now = now_ms();
    fb_begin();
    fb_fmt("{\"message_id\":%llu,\"message_type\":\"room_message\",\"data\":{\"room_id\":\"%.*s\","
           "\"content\":",
           next_message_id++, (int)n, id);
    buf_put(&fb, cv, (size_t)(ce - cv));
    fb_fmt(",\"sender_id\":\"anon-c%u\",\"timestamp\":%lld},\"timestamp\":%lld}", c->id, now, now);
    size_t flen;
    const uint8_t *f = fb_frame(&flen);
    for (size_t i = 0; i < r->n; i++)
        if (r->m[i] != c)
            conn_send(r->m[i], f, flen);
    if (q->rid > 0) {
        reply_begin("ack");
        fb_fmt("\"request_id\":%lld", q->rid);
        reply_end(c, q->rid);
    }
}

static void on_ping(conn_t *c, const req_t *q)
{
    long long now = now_ms();
    const uint8_t *v = find_value(q->p, q->e, "\"ts\"");
    const uint8_t *ve = v != NULL ? value_end(v, q->e) : NULL;
    if (ve == NULL) { /* no ts */
        reply_begin("pong");
        fb_fmt("\"ts\":null,\"server_ts\":%lld,\"rtt\":0", now);
        reply_end(c, q->rid);
        return;
    }
    char num[40], *end;
    size_t n = (size_t)(ve - v);
    double ts = 0;
    if (n < sizeof(num)) {
        memcpy(num, v, n);
        num[n] = '\0';
        ts = strtod(num, &end);
    }
    if (n >= sizeof(num) || !(*v == '-' || (*v >= '0' && *v <= '9')) || *end != '\0') {
        reply_error(c, 1001, "ts must be a number", q->rid);
        return;
    }
    double rtt = (double)now - ts;
    reply_begin("pong");
    fb_fmt("\"ts\":%s,\"server_ts\":%lld,\"rtt\":", num, now);
    if (rtt > -9e15 && rtt < 9e15 && rtt == (double)(long long)rtt)
        fb_fmt("%lld", (long long)rtt);
    else
        fb_fmt("%.17g", rtt);
    reply_end(c, q->rid);
}

/* the bench's custom handler: k1..k1000 -> 1..1000, anything else null */
static void on_lookup(conn_t *c, const req_t *q)
{
    const char *k;
    size_t n;
    long v = 0;
    if (get_string(q->p, q->e, "\"key\"", &k, &n) == 0 && n >= 2 && n <= 5 && k[0] == 'k' &&
        k[1] != '0') {
        for (size_t i = 1; i < n && v >= 0; i++)
            v = k[i] >= '0' && k[i] <= '9' ? v * 10 + (k[i] - '0') : -1;
    }
    reply_begin("found");
    if (v >= 1 && v <= 1000)
        fb_fmt("\"value\":%ld", v);
    else
        fb_fmt("\"value\":null");
    reply_end(c, q->rid);
}

static void on_text(conn_t *c, const uint8_t *p, size_t len)
{
    static const struct {
        const char *type;
        void (*fn)(conn_t *, const req_t *);
    } handlers[] = {{"room_message", on_room_message}, {"ping", on_ping}, {"join_room", on_join},
                    {"leave_room", on_leave},          {"lookup", on_lookup}};
    n_messages++;
    req_t q = {.p = p, .e = p + len};
    long long id = get_uint(p, q.e, "\"message_id\"");
    q.rid = id > 0 ? id : 0;
    const char *t;
    size_t tn;
    if (get_string(p, q.e, "\"message_type\"", &t, &tn) != 0) {
        reply_error(c, 1001, "message_type must be a string", q.rid);
        return;
    }
    for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
        if (strlen(handlers[i].type) == tn && memcmp(handlers[i].type, t, tn) == 0) {
            handlers[i].fn(c, &q);
            return;
        }
    reply_error(c, 1006, "unknown message type", q.rid);
}

/* ---- WebSocket framing ---------------------------------------------------- */

static void on_frame(conn_t *c, int fin, int op, const uint8_t *p, size_t n)
{
    switch (op) {
    case 0x8: /* close: echo the code, then drop the socket */
        send_control(c, 0x8, p, n >= 2 ? 2 : 0);
        conn_kill(c);
        return;
    case 0x9:
        send_control(c, 0xA, p, n);
        return;
    case 0xA:
        return;
    case 0x1:
        if (c->frag_op != 0)
            break;
        if (fin) {
            on_text(c, p, n);
            return;
        }
        c->frag_op = 0x1;
        buf_put(&c->frag, p, n);
        return;
    case 0x0:
        if (c->frag_op == 0)
            break;
        if (c->frag.len + n > MAX_PAYLOAD) {
            close_with(c, 1009);
            return;
        }
        buf_put(&c->frag, p, n);
        if (fin) {
            on_text(c, c->frag.p, c->frag.len);
            c->frag_op = 0;
            c->frag.len = 0;
        }
        return;
    case 0x2:
        close_with(c, 1003); /* binary data, as ws_hub.js */
        return;
    default:
        break;
    }
    close_with(c, 1002);
}

/* Parses the complete frames in b (unmasking in place); returns the bytes
 * consumed. An incomplete frame at the end is left for the next read. */
static size_t parse_frames(conn_t *c, uint8_t *b, size_t len)
{
    size_t off = 0;
    while (!c->dead && len - off >= 2) {
        uint8_t b0 = b[off], b1 = b[off + 1];
        uint64_t n = b1 & 0x7f;
        size_t hl = 2;
        if ((b1 & 0x80) == 0 || (b0 & 0x70) != 0) { /* unmasked, or RSV bits */
            close_with(c, 1002);
            break;
        }
        if (n == 126) {
            if (len - off < 4)
                break;
            n = (uint64_t)b[off + 2] << 8 | b[off + 3];
            hl = 4;
        } else if (n == 127) {
            if (len - off < 10)
                break;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | b[off + 2 + i];
            hl = 10;
        }
        if (n > MAX_PAYLOAD) {
            close_with(c, 1009);
            break;
        }
        hl += 4; /* the mask */
        if (len - off < hl + n)
            break;
        uint8_t *p = b + off + hl;
        const uint8_t *m = p - 4;
        for (size_t i = 0; i < n; i++)
            p[i] ^= m[i & 3];
        off += hl + (size_t)n;
        on_frame(c, b0 & 0x80, b0 & 0x0f, p, (size_t)n);
    }
    return off;
}

/* The upgrade request in b: answers 101 and returns the head's length, 0
 * while incomplete; on a bad request answers 400 and kills the connection. */
static size_t handshake(conn_t *c, const uint8_t *b, size_t len)
{
    static const char hname[] = "sec-websocket-key:";
    const uint8_t *end = memmem(b, len, "\r\n\r\n", 4);
    if (end == NULL && len < HS_MAX)
        return 0;
    const uint8_t *key = NULL, *ke = NULL;
    if (end != NULL && len >= 4 && memcmp(b, "GET ", 4) == 0) {
        for (const uint8_t *s = b; s < end; s++) {
            if (*s != '\n' || strncasecmp((const char *)s + 1, hname, sizeof(hname) - 1) != 0)
                continue;
            key = skip_ws(s + sizeof(hname), end);
            for (ke = key; ke < end && *ke != '\r' && *ke != ' ' && *ke != '\t';)
                ke++;
            break;
        }
    }
    if (key == NULL || ke == key || ke - key > 64) {
        static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        conn_send(c, bad, sizeof(bad) - 1);
        conn_kill(c);
        return len;
    }
    char acc[29], resp[160];
    bench_ws_accept((const char *)key, (size_t)(ke - key), acc);
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     acc);
    conn_send(c, resp, (size_t)n);
    c->upgraded = 1;
    return (size_t)(end - b) + 4;
}

/* One recv into the scratch buffer after the carried-over bytes; whatever
 * is complete is handled in place, the incomplete tail is carried over. */
static void on_readable(conn_t *c)
{
    size_t carry = c->in.len - c->in.off;
    if (carry)
        memcpy(scratch, c->in.p + c->in.off, carry);
    ssize_t k = recv(c->fd, scratch + carry, SCRATCH - carry, 0);
    if (k <= 0) {
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        conn_kill(c);
        return;
    }
    size_t len = carry + (size_t)k, used = 0;
    if (!c->upgraded)
        used = handshake(c, scratch, len);
    if (c->upgraded && !c->dead)
        used += parse_frames(c, scratch + used, len - used);
    c->in.off = c->in.len = 0;
    if (!c->dead && used < len)
        buf_put(&c->in, scratch + used, len - used);
}

/* ---- connections ---------------------------------------------------------- */

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                perror("gohub-floor: accept");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_t *c = calloc(1, sizeof(*c));
        if (c == NULL)
            die("out of memory");
        c->fd = fd;
        c->id = next_client_id++;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
            die("epoll_ctl");
        c->next = conns;
        if (conns != NULL)
            conns->prev = c;
        conns = c;
        n_accepted++;
    }
}

static void conn_free(conn_t *c)
{
    while (c->nrooms > 0)
        room_remove(c->rooms[c->nrooms - 1], c);
    close(c->fd);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->frag);
    free(c->rooms);
    free(c);
}

/* the connections killed during a batch of events go only after it, so no
 * room's member list changes under a fan-out loop */
static void reap(void)
{
    while (dead != NULL) {
        conn_t *c = dead;
        dead = c->next_dead;
        conn_free(c);
    }
}

/* ---- main ----------------------------------------------------------------- */

static int listen_on(const char *host, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "gohub-floor: --host must be an IPv4 address\n");
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        die("bind");
    if (listen(fd, 4096) != 0) /* gohub's and ws_hub.js's backlog */
        die("listen");
    return fd;
}

static void usage(void)
{
    fputs("usage: gohub-floor [--host 127.0.0.1] [--port 8090]\n", stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 8090;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
            host = argv[++i];
        else
            usage();
    }
    if (port <= 0 || port > 65535)
        usage();

    struct rlimit rl; /* 10,000 clients and more: the soft fd limit up to the hard one */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    sigset_t sigs; /* SIGTERM and SIGINT arrive as events: a clean exit */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    int lfd = listen_on(host, port);
    ep = epoll_create1(EPOLL_CLOEXEC);
    scratch = malloc(SCRATCH);
    if (sfd < 0 || ep < 0 || scratch == NULL)
        die("setup");
    /* the listener and the signalfd are told apart by their data.ptr */
    static int tag_listen, tag_signal;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_listen};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.ptr = &tag_signal;
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
    printf("gohub-floor listening on %s:%d (pid %d)\n", host, port, (int)getpid());
    fflush(stdout);

    struct epoll_event evs[256];
    for (int stop = 0; !stop;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &tag_listen) {
                on_accept(lfd);
                continue;
            }
            if (p == &tag_signal) {
                stop = 1;
                continue;
            }
            conn_t *c = p;
            if (!c->dead && (evs[i].events & EPOLLOUT))
                on_writable(c);
            if (!c->dead && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                on_readable(c);
        }
        reap();
    }
    fprintf(stderr,
            "gohub-floor: %llu connections, %llu messages in, %llu frames out, %llu of them queued "
            "(the socket did not take all at once)\n",
            n_accepted, n_messages, n_sends, n_queued);
    while (conns != NULL)
        conn_free(conns);
    buf_free(&fb);
    free(scratch);
    close(lfd);
    close(sfd);
    close(ep);
    return 0;
}
