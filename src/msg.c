/* msg.c: envelope encoding straight into a WebSocket frame: the header is
 * sized from the payload length, so the JSON is written once, in place. */
#include "msg.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "metrics.h"
#include "utf8.h"

static atomic_uint_fast64_t next_id = 1;

uint64_t hub_msg_next_id(void)
{
    return atomic_fetch_add(&next_id, 1);
}

uint64_t hub_now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* Bytes a JSON string cannot hold as they are (controls, '"' and '\\'),
 * and those that must be checked first (non-ASCII: part of a UTF-8
 * sequence, or a bad byte). */
static const unsigned char json_special[256] = {
    [0x00] = 1, [0x01] = 1, [0x02] = 1, [0x03] = 1, [0x04] = 1, [0x05] = 1, [0x06] = 1,
    [0x07] = 1, [0x08] = 1, [0x09] = 1, [0x0a] = 1, [0x0b] = 1, [0x0c] = 1, [0x0d] = 1,
    [0x0e] = 1, [0x0f] = 1, [0x10] = 1, [0x11] = 1, [0x12] = 1, [0x13] = 1, [0x14] = 1,
    [0x15] = 1, [0x16] = 1, [0x17] = 1, [0x18] = 1, [0x19] = 1, [0x1a] = 1, [0x1b] = 1,
    [0x1c] = 1, [0x1d] = 1, [0x1e] = 1, [0x1f] = 1, ['"'] = 1, ['\\'] = 1,
    [0x80 ... 0xff] = 2,
};

size_t hub_json_quote(char *buf, size_t len, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (len + 2 > cap)
        return (size_t)-1;
    buf[len++] = '"';
    size_t i = 0;
    /* each byte takes at most six: while six per byte fit, plain bytes
     * need no bound check (the loop below refuses exactly where it did) */
    if (n <= (cap - len) / 6 && len + 6 * n + 1 <= cap)
        while (i < n && !json_special[(unsigned char)s[i]])
            buf[len++] = s[i++];
    for (; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (len + 6 + 1 > cap)
            return (size_t)-1;
        if (!json_special[ch]) {
            buf[len++] = (char)ch;
        } else if (ch >= 0x80) {
            /* well-formed sequences as they are, a bad byte as U+FFFD (three
             * bytes: within the six a byte may take) */
            size_t k = hub_utf8_seq((const unsigned char *)s + i, (const unsigned char *)s + n);
            if (k == 0) {
                memcpy(buf + len, HUB_UTF8_REPLACEMENT, 3);
                len += 3;
            } else {
                memcpy(buf + len, s + i, k);
                len += k;
                i += k - 1;
            }
        } else if (ch == '"' || ch == '\\') {
            buf[len++] = '\\';
            buf[len++] = (char)ch;
        } else {
            memcpy(buf + len, "\\u00", 4);
            buf[len + 4] = hex[ch >> 4];
            buf[len + 5] = hex[ch & 15];
            len += 6;
        }
    }
    buf[len++] = '"';
    return len;
}

/* "00" .. "99": two digits per division. */
static const char digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Decimal digits in v: the bit length gives it to within one
 * (1233 / 4096 ~ log10(2)), one comparison settles it. */
static size_t u64_digits(uint64_t v)
{
    static const uint64_t pow10[20] = {
        1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull,
        100000000ull, 1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull,
        10000000000000ull, 100000000000000ull, 1000000000000000ull, 10000000000000000ull,
        100000000000000000ull, 1000000000000000000ull, 10000000000000000000ull,
    };
    if (v == 0)
        return 1;
    size_t t = (size_t)(64 - __builtin_clzll(v)) * 1233 >> 12;
    return t + (v >= pow10[t]);
}

size_t hub_msg_u64(char *out, uint64_t v)
{
    /* written backwards from the last digit, two at a time (timestamps
     * and ids are 10 to 13 digits: half the divisions of one at a time) */
    size_t n = u64_digits(v);
    char *p = out + n;
    while (v >= 100) {
        size_t r = (size_t)(v % 100) * 2;
        v /= 100;
        p -= 2;
        p[0] = digit_pairs[r];
        p[1] = digit_pairs[r + 1];
    }
    if (v >= 10) {
        p[-2] = digit_pairs[v * 2];
        p[-1] = digit_pairs[v * 2 + 1];
    } else {
        p[-1] = (char)('0' + v);
    }
    return n;
}

static size_t put_lit(char *out, const char *s)
{
    size_t n = strlen(s);
    memcpy(out, s, n);
    return n;
}

hub_frame_t *hub_msg_frame(const char *type, const char *data, size_t data_len,
                           uint64_t message_id, int64_t request_id)
{
    char head[512], tail[96];
    size_t hl = put_lit(head, "{\"message_id\":");
    hl += hub_msg_u64(head + hl, message_id);
    hl += put_lit(head + hl, ",\"message_type\":");
    size_t type_len = strlen(type);
    int kind = hub_metrics_type(type, type_len);
    if (kind != HUB_MT_OTHER) { /* a protocol name: short, nothing to escape */
        head[hl++] = '"';
        memcpy(head + hl, type, type_len);
        hl += type_len;
        head[hl++] = '"';
    } else if ((hl = hub_json_quote(head, hl, sizeof(head) - 16, type, type_len)) == (size_t)-1) {
        return NULL;
    }
    memcpy(head + hl, ",\"data\":", 8);
    hl += 8;
    if (data == NULL || data_len == 0) {
        data = "{}";
        data_len = 2;
    }
    size_t tl = put_lit(tail, ",\"timestamp\":");
    tl += hub_msg_u64(tail + tl, hub_now_ms());
    if (request_id >= 0) {
        tl += put_lit(tail + tl, ",\"request_id\":");
        tl += hub_msg_u64(tail + tl, (uint64_t)request_id);
    }
    tail[tl++] = '}';
    size_t plen = hl + data_len + tl;
    size_t hdr = hub_ws_header_len(plen);
    hub_frame_t *f = hub_frame_alloc(hdr + plen);
    if (f == NULL)
        return NULL;
    f->kind = (uint8_t)kind;
    uint8_t *p = f->data + hub_ws_write_header(f->data, HUB_WS_OP_TEXT, plen);
    memcpy(p, head, hl);
    memcpy(p + hl, data, data_len);
    memcpy(p + hl + data_len, tail, tl);
    return f;
}

hub_frame_t *hub_msg_error(int code, const char *message, int64_t request_id,
                           const char *details)
{
    char body[1024];
    int64_t rid = request_id < 0 ? 0 : request_id;
    size_t n = (size_t)snprintf(body, sizeof(body), "{\"code\":%d,\"message\":", code);
    n = hub_json_quote(body, n, sizeof(body) - 64, message, strlen(message));
    if (n == (size_t)-1)
        return NULL;
    n += (size_t)snprintf(body + n, sizeof(body) - n, ",\"request_id\":%lld", (long long)rid);
    if (details == NULL) {
        body[n++] = '}';
        return hub_msg_frame("error", body, n, 0, rid);
    }
    /* details can be large: assemble in a heap buffer */
    size_t dl = strlen(details);
    char *big = malloc(n + 12 + dl + 2);
    if (big == NULL)
        return NULL;
    memcpy(big, body, n);
    memcpy(big + n, ",\"details\":", 11);
    memcpy(big + n + 11, details, dl);
    big[n + 11 + dl] = '}';
    hub_frame_t *f = hub_msg_frame("error", big, n + 12 + dl, 0, rid);
    free(big);
    return f;
}
