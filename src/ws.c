/* ws.c: wslay glue for the WebSocket phase, and the per-worker pool of wslay
 * slots. Worker thread only.
 *
 * wslay reads ahead (up to its 4 KiB buffer) across frame boundaries, so a
 * slot that goes back to the pool could carry bytes of another frame. We
 * therefore parse each inbound frame header ourselves and hand wslay exactly
 * one frame at a time: when a frame ends, wslay's buffer is empty and, if no
 * fragmented message is open and nothing waits in its send queue, the slot
 * is clean and goes back to the pool. An idle connection holds no slot. */
#include "ws.h"

#include <string.h>
#include <wslay/wslay.h>

#include "config.h"
#include "conn.h"
#include "frame.h"
#include "log.h"
#include "routes.h"
#include "server.h"
#include "utf8.h"
#include "worker.h"

#define POOL_KEEP 256         /* idle slots kept per worker */
#define MSG_KEEP (16 * 1024)  /* a pooled slot keeps at most this much buffer */
#define CTRL_BUF 512

struct hub_ws_slot_s {
    wslay_event_context_ptr ctx;
    hub_conn_t *c;
    hub_ws_slot_t *next;          /* pool link */
    hub_ws_pool_t *pool;
    const uint8_t *feed;          /* bytes offered to wslay's recv_callback */
    size_t feed_len;
    uint8_t *msg;                 /* the data message being reassembled */
    size_t msg_len, msg_cap;
    uint8_t msg_op;
    uint8_t frame_is_data;
    uint8_t in_wslay;             /* inside wslay_event_recv/send */
    uint8_t release_later;        /* hub_ws_release() called from a callback */
    size_t ctrl_len;              /* wslay's control-frame bytes not yet queued */
    uint8_t ctrl[CTRL_BUF];
};

struct hub_ws_pool_s {
    hub_ws_slot_t *free;
    size_t nfree;
    uint32_t max_message;
    uint8_t *unmasked;            /* HUB_READ_BUF bytes for whole_message, once used */
};

hub_ws_pool_t *hub_ws_pool_new(uint32_t max_message)
{
    hub_ws_pool_t *p = calloc(1, sizeof(*p));
    if (p != NULL)
        p->max_message = max_message;
    return p;
}

static void slot_free(hub_ws_slot_t *s)
{
    wslay_event_context_free(s->ctx);
    free(s->msg);
    free(s);
}

void hub_ws_pool_free(hub_ws_pool_t *p)
{
    if (p == NULL)
        return;
    while (p->free) {
        hub_ws_slot_t *s = p->free;
        p->free = s->next;
        slot_free(s);
    }
    free(p->unmasked);
    free(p);
}

/* ---- wslay callbacks --------------------------------------------------- */

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *ud)
{
    HUB_UNUSED(flags);
    hub_ws_slot_t *s = ud;
    if (s->feed_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < s->feed_len ? len : s->feed_len;
    memcpy(buf, s->feed, n);
    s->feed += n;
    s->feed_len -= n;
    return (ssize_t)n;
}

/* Moves the control bytes wslay produced onto the connection's queue as one
 * frame. Close frames are exempt from the outbound limit; pongs are not. */
static void ctrl_flush(hub_ws_slot_t *s)
{
    if (s->ctrl_len == 0)
        return;
    hub_frame_t *f = hub_frame_copy(s->ctrl, s->ctrl_len);
    int is_close = (s->ctrl[0] & 0x0F) == HUB_WS_OP_CLOSE;
    s->ctrl_len = 0;
    if (f == NULL) {
        hub_conn_abort(s->c);
        return;
    }
    if (is_close) {
        hub_conn_send_raw(s->c, f);
    } else {
        hub_conn_send(s->c, f);
        hub_frame_release(f);
    }
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    HUB_UNUSED(ctx);
    HUB_UNUSED(flags);
    hub_ws_slot_t *s = ud;
    /* wslay only ever sends control frames here (<= 127 bytes each); keep
     * whole frames together: flush before a header that would not fit */
    if (s->ctrl_len + len > CTRL_BUF)
        ctrl_flush(s);
    if (len > CTRL_BUF) { /* cannot happen for control frames; never split */
        hub_frame_t *f = hub_frame_copy(data, len);
        if (f == NULL)
            return -1;
        hub_conn_send_raw(s->c, f);
        return (ssize_t)len;
    }
    memcpy(s->ctrl + s->ctrl_len, data, len);
    s->ctrl_len += len;
    return (ssize_t)len;
}

static void on_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *ud)
{
    HUB_UNUSED(ctx);
    hub_ws_slot_t *s = ud;
    s->frame_is_data = arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME ||
                       arg->opcode == WSLAY_CONTINUATION_FRAME;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
        s->msg_len = 0;
        s->msg_op = arg->opcode;
    }
}

static void on_frame_chunk(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_chunk_arg *arg, void *ud)
{
    hub_ws_slot_t *s = ud;
    if (!s->frame_is_data || arg->data_length == 0)
        return;
    if (s->msg_len + arg->data_length > s->msg_cap) {
        size_t cap = s->msg_cap ? s->msg_cap : 1024;
        while (cap < s->msg_len + arg->data_length)
            cap *= 2;
        uint8_t *nm = realloc(s->msg, cap);
        if (nm == NULL) {
            wslay_event_shutdown_read(ctx);
            hub_conn_abort(s->c);
            return;
        }
        s->msg = nm;
        s->msg_cap = cap;
    }
    memcpy(s->msg + s->msg_len, arg->data, arg->data_length);
    s->msg_len += arg->data_length;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *ud)
{
    HUB_UNUSED(ctx);
    hub_ws_slot_t *s = ud;
    hub_conn_t *c = s->c;
    if (c->state != HUB_CONN_WS || (c->flags & HUB_CONN_F_CLOSED))
        return;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
    case WSLAY_BINARY_FRAME:
        hub_conn_on_message(c, s->msg_op, s->msg, s->msg_len);
        s->msg_len = 0;
        break;
    case WSLAY_PONG:
        if (c->flags & HUB_CONN_F_PING) {
            c->flags &= (uint16_t)~HUB_CONN_F_PING;
            c->timer_ms = uv_now(&c->w->loop) + c->w->cfg->ping_interval_ms;
        }
        break;
    default:
        break; /* ping: wslay queued the pong; close: wslay queued the reply */
    }
}

static const struct wslay_event_callbacks callbacks = {
    recv_cb, send_cb, NULL, on_frame_start, on_frame_chunk, NULL, on_msg,
};

/* ---- slots ------------------------------------------------------------- */

static hub_ws_slot_t *borrow(hub_conn_t *c)
{
    if (c->ws != NULL)
        return c->ws;
    hub_ws_pool_t *p = c->w->ws_pool;
    hub_ws_slot_t *s = p->free;
    if (s != NULL) {
        p->free = s->next;
        p->nfree--;
    } else {
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return NULL;
        if (wslay_event_context_server_init(&s->ctx, &callbacks, s) != 0) {
            free(s);
            return NULL;
        }
        wslay_event_config_set_no_buffering(s->ctx, 1);
        /* our own header check enforces the limit first; this is a backstop */
        wslay_event_config_set_max_recv_msg_length(s->ctx, p->max_message);
        s->pool = p;
    }
    s->c = c;
    s->next = NULL;
    s->msg_len = 0;
    s->ctrl_len = 0;
    s->release_later = 0;
    wslay_event_set_error(s->ctx, 0);
    c->ws = s;
    return s;
}

/* A slot is clean when wslay holds no partial frame, no open message and no
 * queued output, and has not started a close. */
static int slot_clean(const hub_ws_slot_t *s, const hub_conn_t *c)
{
    return c->frame_left == 0 && !(c->flags & HUB_CONN_F_INMSG) &&
           wslay_event_get_read_enabled(s->ctx) && wslay_event_get_write_enabled(s->ctx) &&
           wslay_event_get_queued_msg_count(s->ctx) == 0 && s->ctrl_len == 0;
}

void hub_ws_release(hub_conn_t *c)
{
    hub_ws_slot_t *s = c->ws;
    if (s == NULL)
        return;
    if (s->in_wslay) {
        s->release_later = 1;
        return;
    }
    hub_ws_pool_t *p = s->pool;
    int clean = c->state == HUB_CONN_WS && slot_clean(s, c);
    c->ws = NULL;
    s->c = NULL;
    if (!clean || p->nfree >= POOL_KEEP) {
        slot_free(s);
        return;
    }
    if (s->msg_cap > MSG_KEEP) {
        free(s->msg);
        s->msg = NULL;
        s->msg_cap = 0;
    }
    s->next = p->free;
    p->free = s;
    p->nfree++;
}

/* ---- input ------------------------------------------------------------- */

void hub_ws_start(hub_conn_t *c)
{
    hub_mc_add(&c->w->metrics.conns_opened, 1);
    c->state = HUB_CONN_WS;
    c->frame_left = 0;
    c->msg_bytes = 0;
    c->stash_len = 0;
    /* the first ping comes after half to all of ping_interval, spread by
     * the connection id: clients that connected together (a restart, a
     * load test) must not all be pinged, and answer, in the same tick. Ten
     * thousand pings at once stalled the worker for ~100 ms. Later pings
     * follow each pong by ping_interval, so the spread stays. */
    uint64_t half = c->w->cfg->ping_interval_ms / 2;
    uint64_t spread = half ? ((c->id * 0x9E3779B97F4A7C15ull) >> 32) % (half + 1) : 0;
    c->timer_ms = uv_now(&c->w->loop) + half + spread;
}

/* Judges a complete frame header before wslay sees it: the checks that must
 * happen before any payload is read. Returns 0 to go on, or closes c. */
static int check_header(hub_conn_t *c, const hub_ws_hdr_t *h)
{
    const hub_config_t *cfg = c->w->cfg;
    if (!h->masked || h->rsv != 0 || (h->payload_len >> 63)) {
        hub_conn_close(c, 1002, "protocol error");
        return -1;
    }
    int data = h->opcode == HUB_WS_OP_TEXT || h->opcode == HUB_WS_OP_BINARY ||
               h->opcode == HUB_WS_OP_CONT;
    if (!data)
        return 0; /* control and reserved opcodes: wslay decides */
    int in_msg = (c->flags & HUB_CONN_F_INMSG) != 0;
    if ((h->opcode == HUB_WS_OP_CONT) != in_msg) {
        hub_conn_close(c, 1002, "protocol error");
        return -1;
    }
    if (h->opcode == HUB_WS_OP_BINARY && c->route == HUB_ROUTE_WS) {
        hub_conn_close(c, 1003, "binary messages are not supported");
        return -1;
    }
    if (h->opcode != HUB_WS_OP_CONT)
        c->msg_bytes = 0;
    if (h->payload_len > cfg->max_message_bytes ||
        c->msg_bytes + h->payload_len > cfg->max_message_bytes) {
        hub_log_debug("message too big", "conn=%llu", (unsigned long long)c->id);
        hub_conn_close(c, 1009, "message too big");
        return -1;
    }
    c->msg_bytes += h->payload_len;
    if (h->fin)
        c->flags &= (uint16_t)~HUB_CONN_F_INMSG;
    else
        c->flags |= HUB_CONN_F_INMSG;
    return 0;
}

/* Hands up to n bytes of the current frame to wslay. Returns the bytes
 * consumed, or -1 when c left the WebSocket phase (closed or closing). */
static ssize_t feed(hub_conn_t *c, const uint8_t *p, size_t n)
{
    hub_ws_slot_t *s = borrow(c);
    if (s == NULL) {
        hub_conn_abort(c);
        return -1;
    }
    s->feed = p;
    s->feed_len = n;
    /* while in_wslay is set, a close triggered by a callback or by queueing
     * (slow consumer) defers the slot's release to the end of this call */
    s->in_wslay = 1;
    int r = wslay_event_recv(s->ctx);
    if (r == 0)
        r = wslay_event_send(s->ctx);
    ctrl_flush(s);
    s->in_wslay = 0;
    size_t used = n - s->feed_len;
    s->feed_len = 0;
    if (r != 0) {
        /* our callbacks never fail, so this is a framing violation that
         * wslay met below the message layer (e.g. a 126-byte ping) */
        if (r == WSLAY_ERR_NOMEM)
            hub_conn_abort(c);
        else
            hub_conn_close(c, 1002, "protocol error");
        return -1;
    }
    if (!wslay_event_get_read_enabled(s->ctx)) {
        /* wslay replied to a close, or failed the connection with its own
         * close frame (1002, 1007, 1009), already queued by ctrl_flush */
        if (c->close_code == 0)
            c->close_code = wslay_event_get_close_received(s->ctx)
                                ? wslay_event_get_status_code_received(s->ctx)
                                : wslay_event_get_status_code_sent(s->ctx);
        hub_conn_linger(c);
        return -1;
    }
    if (s->release_later || c->state != HUB_CONN_WS) {
        hub_ws_release(c);
        return -1;
    }
    c->frame_left -= used;
    if (c->frame_left == 0 && slot_clean(s, c))
        hub_ws_release(c);
    return (ssize_t)used;
}

/* The common case without wslay: a whole single-frame text (or binary)
 * message in the bytes at hand, on a connection that has no slot (so
 * nothing of an earlier frame or control reply is pending). The header
 * already passed check_header. Unmasks into the pool's buffer, checks what
 * wslay would check (minimal length encoding, UTF-8 of text) and hands the
 * message on. Returns the bytes used, 0 when the frame is not one for this
 * path (wslay takes it), or -1 when c was closed. */
static ssize_t whole_message(hub_conn_t *c, const uint8_t *p, size_t n, const hub_ws_hdr_t *h)
{
    size_t hl = h->header_len, len = (size_t)h->payload_len;
    if (!h->fin || (h->opcode != HUB_WS_OP_TEXT && h->opcode != HUB_WS_OP_BINARY) ||
        c->ws != NULL || len > n - hl || len > HUB_READ_BUF)
        return 0;
    /* RFC 6455 5.2: the minimal number of bytes must encode the length;
     * wslay fails the connection otherwise, so let it */
    if ((hl == 8 && len < 126) || (hl == 14 && len < 65536))
        return 0;
    hub_ws_pool_t *pool = c->w->ws_pool;
    if (pool->unmasked == NULL && (pool->unmasked = malloc(HUB_READ_BUF)) == NULL) {
        hub_conn_abort(c);
        return -1;
    }
    uint8_t *out = pool->unmasked;
    const uint8_t *in = p + hl, *key = p + hl - 4;
    uint32_t k32;
    memcpy(&k32, key, 4);
    uint64_t k64 = (uint64_t)k32 << 32 | k32;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, in + i, 8);
        v ^= k64;
        memcpy(out + i, &v, 8);
    }
    for (; i < len; i++)
        out[i] = in[i] ^ key[i & 3];
    if (h->opcode == HUB_WS_OP_TEXT && !hub_utf8_valid(out, len)) {
        hub_conn_close(c, 1007, "invalid UTF-8");
        return -1;
    }
    hub_conn_on_message(c, h->opcode, out, len);
    return (ssize_t)(hl + len);
}

void hub_ws_input(hub_conn_t *c, const uint8_t *p, size_t n)
{
    while (n > 0 && c->state == HUB_CONN_WS && !(c->flags & HUB_CONN_F_CLOSED)) {
        if (c->frame_left == 0) {
            hub_ws_hdr_t h;
            size_t hl;
            if (c->stash_len > 0) {
                /* complete the stashed header from the new bytes */
                size_t add = HUB_WS_MAX_HEADER - c->stash_len;
                if (add > n)
                    add = n;
                uint8_t tmp[HUB_WS_MAX_HEADER];
                memcpy(tmp, c->stash, c->stash_len);
                memcpy(tmp + c->stash_len, p, add);
                hl = hub_ws_parse_header(tmp, c->stash_len + add, &h);
                if (hl == 0) {
                    memcpy(c->stash + c->stash_len, p, add);
                    c->stash_len = (uint8_t)(c->stash_len + add);
                    return;
                }
                if (check_header(c, &h) != 0)
                    return;
                c->frame_left = h.payload_len + hl;
                /* give wslay the stashed bytes; the rest of the header and
                 * the payload follow from p on the next turn */
                size_t k = c->stash_len;
                c->stash_len = 0;
                if (feed(c, tmp, k) < 0)
                    return;
                continue;
            }
            hl = hub_ws_parse_header(p, n, &h);
            if (hl == 0) {
                memcpy(c->stash, p, n);
                c->stash_len = (uint8_t)n;
                return;
            }
            if (check_header(c, &h) != 0)
                return;
            ssize_t whole = whole_message(c, p, n, &h);
            if (whole < 0)
                return;
            if (whole > 0) {
                p += whole;
                n -= (size_t)whole;
                continue;
            }
            c->frame_left = h.payload_len + hl;
        }
        size_t give = n;
        if (give > c->frame_left)
            give = (size_t)c->frame_left;
        ssize_t used = feed(c, p, give);
        if (used < 0)
            return;
        p += used;
        n -= (size_t)used;
        if ((size_t)used < give)
            return; /* wslay stopped reading: it is closing */
    }
}
