/* msg_test.c: the envelope writer. hub_msg_u64 prints every value the way
 * printf does (digit counts at every power of ten and of two, all small
 * values, pseudo-random ones); hub_json_quote escapes like the protocol
 * wants; hub_msg_frame lays the envelope out field by field. */
#include <inttypes.h>
#include <stdlib.h>

#include "frame.h"
#include "harness.h"
#include "metrics.h"
#include "msg.h"

/* 1 when hub_msg_u64(v) is exactly printf's "%" PRIu64. */
static int u64_ok(uint64_t v)
{
    char want[32], got[32];
    memset(got, 'x', sizeof(got));
    int wn = snprintf(want, sizeof(want), "%" PRIu64, v);
    size_t gn = hub_msg_u64(got, v);
    if (gn != (size_t)wn || memcmp(got, want, gn) != 0 || got[gn] != 'x') {
        printf("  hub_msg_u64(%s) wrote %.*s (%zu bytes)\n", want, (int)gn, got, gn);
        return 0;
    }
    return 1;
}

TEST(u64_small_values)
{
    for (uint64_t v = 0; v <= 100000; v++)
        ASSERT(u64_ok(v));
}

TEST(u64_around_powers_of_ten_and_two)
{
    uint64_t p = 1;
    for (int i = 0; i < 20; i++, p *= 10) {
        ASSERT(u64_ok(p - 1));
        ASSERT(u64_ok(p));
        ASSERT(u64_ok(p + 1));
        ASSERT(u64_ok(p * 9 + (p - 1))); /* 99..9 of the next length */
    }
    for (int b = 0; b < 64; b++) {
        uint64_t v = 1ull << b;
        ASSERT(u64_ok(v - 1));
        ASSERT(u64_ok(v));
        ASSERT(u64_ok(v + 1));
    }
    ASSERT(u64_ok(UINT64_MAX));
    ASSERT(u64_ok(UINT64_MAX - 1));
    ASSERT(u64_ok(1700000000000ull)); /* a timestamp in ms */
}

TEST(u64_pseudo_random)
{
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13; /* xorshift64 */
        x ^= x >> 7;
        x ^= x << 17;
        ASSERT(u64_ok(x));
        ASSERT(u64_ok(x >> (i % 64)));
    }
}

/* Quotes s (n bytes) into a roomy buffer and compares with want. */
static int quote_is(const char *s, size_t n, const char *want)
{
    char buf[256];
    size_t len = hub_json_quote(buf, 0, sizeof(buf), s, n);
    if (len == (size_t)-1 || len != strlen(want) || memcmp(buf, want, len) != 0) {
        printf("  quote of %zu bytes gave %.*s, want %s\n", n, len == (size_t)-1 ? 0 : (int)len,
               buf, want);
        return 0;
    }
    return 1;
}

TEST(json_quote_escapes)
{
    ASSERT(quote_is("", 0, "\"\""));
    ASSERT(quote_is("room_message", 12, "\"room_message\""));
    ASSERT(quote_is("a\"b\\c", 5, "\"a\\\"b\\\\c\""));
    ASSERT(quote_is("\n\x01\x1f", 3, "\"\\u000a\\u0001\\u001f\""));
    ASSERT(quote_is("nul\0x", 5, "\"nul\\u0000x\""));
    ASSERT(quote_is("h\xc3\xa9\x7f", 4, "\"h\xc3\xa9\x7f\""));
    /* what is sent is UTF-8: a bad byte, a surrogate, a cut sequence */
    ASSERT(quote_is("a\xff\"", 3, "\"a\xef\xbf\xbd\\\"\""));
    ASSERT(quote_is("\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""));
    ASSERT(quote_is("\xe2\x82", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\""));
}

TEST(json_quote_respects_cap)
{
    char buf[64];
    /* "abc" with quotes is 5 bytes: the writer wants room for an escape
     * after each byte, so it refuses a buffer that is merely exact */
    ASSERT_EQ(hub_json_quote(buf, 0, 1, "abc", 3), (size_t)-1);
    ASSERT_EQ(hub_json_quote(buf, 0, 5, "abc", 3), (size_t)-1);
    size_t len = hub_json_quote(buf, 0, sizeof(buf), "abc", 3);
    ASSERT_EQ(len, 5);
    /* appends after len */
    len = hub_json_quote(buf, len, sizeof(buf), "d", 1);
    ASSERT_EQ(len, 8);
    ASSERT_MEMEQ(buf, "\"abc\"\"d\"", 8);
    /* a string that fills the buffer never writes past cap */
    char big[200];
    memset(big, 'q', sizeof(big));
    memset(buf, 0, sizeof(buf));
    ASSERT_EQ(hub_json_quote(buf, 0, sizeof(buf) - 8, big, sizeof(big)), (size_t)-1);
    for (size_t i = sizeof(buf) - 8; i < sizeof(buf); i++)
        ASSERT_EQ(buf[i], 0);
}

/* The payload of frame f (a server frame: never masked). */
static const char *payload(const hub_frame_t *f, size_t *n)
{
    const uint8_t *d = f->data;
    size_t len = d[1] & 0x7f, h = 2;
    if (len == 126) {
        len = (size_t)d[2] << 8 | d[3];
        h = 4;
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | d[2 + i];
        h = 10;
    }
    *n = len;
    return (const char *)d + h;
}

TEST(frame_layout)
{
    size_t n;
    hub_frame_t *f = hub_msg_frame("room_message", "{\"a\":1}", 7, 42, HUB_NO_REQUEST);
    ASSERT(f != NULL);
    ASSERT_EQ(f->data[0], 0x81);
    ASSERT_EQ(f->kind, hub_metrics_type("room_message", 12));
    const char *p = payload(f, &n);
    const char *head = "{\"message_id\":42,\"message_type\":\"room_message\",\"data\":{\"a\":1},"
                       "\"timestamp\":";
    ASSERT(n > strlen(head) + 2);
    ASSERT_MEMEQ(p, head, strlen(head));
    /* a 13-digit millisecond timestamp, then the end */
    size_t digits = 0;
    while (strlen(head) + digits < n && p[strlen(head) + digits] >= '0' &&
           p[strlen(head) + digits] <= '9')
        digits++;
    ASSERT_EQ(digits, 13);
    ASSERT_EQ(strlen(head) + digits + 1, n);
    ASSERT_EQ(p[n - 1], '}');
    hub_frame_release(f);

    /* no data is {}, a request id is appended, the type is escaped */
    f = hub_msg_frame("a\"b", NULL, 0, 0, 7);
    ASSERT(f != NULL);
    p = payload(f, &n);
    head = "{\"message_id\":0,\"message_type\":\"a\\\"b\",\"data\":{},\"timestamp\":";
    ASSERT_MEMEQ(p, head, strlen(head));
    ASSERT(n > 16);
    ASSERT_MEMEQ(p + n - 16, ",\"request_id\":7}", 16);
    ASSERT_EQ(f->kind, HUB_MT_OTHER);
    hub_frame_release(f);

    /* a type too long for the header is refused */
    char longtype[600];
    memset(longtype, 't', sizeof(longtype) - 1);
    longtype[sizeof(longtype) - 1] = '\0';
    ASSERT(hub_msg_frame(longtype, NULL, 0, 1, HUB_NO_REQUEST) == NULL);
}

int main(void)
{
    RUN(u64_small_values);
    RUN(u64_around_powers_of_ten_and_two);
    RUN(u64_pseudo_random);
    RUN(json_quote_escapes);
    RUN(json_quote_respects_cap);
    RUN(frame_layout);
    HARNESS_MAIN_END();
}
