/* frame_test.c: unit tests for refcounted frames and RFC 6455 frame headers:
 * header lengths and exact bytes at the 7/16/64-bit boundaries, complete
 * server frames, close frames, and parsing of (masked) client headers. */
#include "harness.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "frame.h"

/* ---- refcounting ---- */

TEST(alloc_ref_release)
{
    hub_frame_t *f = hub_frame_alloc(10);
    ASSERT(f != NULL);
    ASSERT_EQ(f->refcnt, 1);
    ASSERT_EQ(f->len, 10);
    memset(f->data, 0xAB, 10); /* all 10 bytes are writable (ASan) */
    hub_frame_t *g = hub_frame_ref(f);
    ASSERT(g == f);
    ASSERT_EQ(f->refcnt, 2);
    hub_frame_release(f);
    ASSERT_EQ(f->refcnt, 1); /* still alive: ASan would flag a use after free */
    ASSERT_EQ(f->data[9], 0xAB);
    hub_frame_release(g); /* frees; a leak or double free is an ASan error */
    hub_frame_release(NULL);
}

TEST(alloc_zero_and_copy)
{
    hub_frame_t *z = hub_frame_alloc(0);
    ASSERT(z != NULL);
    ASSERT_EQ(z->len, 0);
    ASSERT_EQ(z->refcnt, 1);
    hub_frame_release(z);
    hub_frame_t *c = hub_frame_copy("hello", 5);
    ASSERT(c != NULL);
    ASSERT_EQ(c->len, 5);
    ASSERT_EQ(c->refcnt, 1);
    ASSERT_MEMEQ(c->data, "hello", 5);
    hub_frame_release(c);
    hub_frame_t *e = hub_frame_copy(NULL, 0);
    ASSERT(e != NULL);
    ASSERT_EQ(e->len, 0);
    hub_frame_release(e);
}

TEST(many_refs)
{
    hub_frame_t *f = hub_frame_copy("x", 1);
    ASSERT(f != NULL);
    for (int i = 0; i < 1000; i++)
        hub_frame_ref(f);
    ASSERT_EQ(f->refcnt, 1001);
    for (int i = 0; i < 1000; i++)
        hub_frame_release(f);
    ASSERT_EQ(f->refcnt, 1);
    ASSERT_EQ(f->data[0], 'x');
    hub_frame_release(f);
}

/* ---- header encoding ---- */

TEST(header_len_boundaries)
{
    ASSERT_EQ(hub_ws_header_len(0), 2);
    ASSERT_EQ(hub_ws_header_len(1), 2);
    ASSERT_EQ(hub_ws_header_len(125), 2);
    ASSERT_EQ(hub_ws_header_len(126), 4);
    ASSERT_EQ(hub_ws_header_len(127), 4);
    ASSERT_EQ(hub_ws_header_len(65535), 4);
    ASSERT_EQ(hub_ws_header_len(65536), 10);
    ASSERT_EQ(hub_ws_header_len(UINT32_MAX), 10);
    ASSERT_EQ(hub_ws_header_len(UINT64_MAX >> 1), 10);
}

TEST(write_header_bytes)
{
    static const struct {
        int op;
        uint64_t len;
        size_t n;
        uint8_t bytes[10];
    } cases[] = {
        { HUB_WS_OP_TEXT, 0, 2, { 0x81, 0x00 } },
        { HUB_WS_OP_BINARY, 5, 2, { 0x82, 0x05 } },
        { HUB_WS_OP_TEXT, 125, 2, { 0x81, 0x7D } },
        { HUB_WS_OP_TEXT, 126, 4, { 0x81, 0x7E, 0x00, 0x7E } },
        { HUB_WS_OP_BINARY, 300, 4, { 0x82, 0x7E, 0x01, 0x2C } },
        { HUB_WS_OP_TEXT, 65535, 4, { 0x81, 0x7E, 0xFF, 0xFF } },
        { HUB_WS_OP_TEXT, 65536, 10, { 0x81, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00 } },
        { HUB_WS_OP_BINARY, 0x0102030405060708ull, 10,
          { 0x82, 0x7F, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08 } },
        { HUB_WS_OP_PING, 0, 2, { 0x89, 0x00 } },
        { HUB_WS_OP_PONG, 3, 2, { 0x8A, 0x03 } },
        { HUB_WS_OP_CLOSE, 2, 2, { 0x88, 0x02 } },
        { HUB_WS_OP_CONT, 1, 2, { 0x80, 0x01 } },
    };
    for (size_t i = 0; i < HUB_ARRAY_LEN(cases); i++) {
        uint8_t out[12];
        memset(out, 0xCC, sizeof(out));
        size_t n = hub_ws_write_header(out, cases[i].op, cases[i].len);
        if (n != cases[i].n || n != hub_ws_header_len(cases[i].len))
            FAILF("case %zu: length %zu, want %zu", i, n, cases[i].n);
        if (memcmp(out, cases[i].bytes, n) != 0)
            FAILF("case %zu: bytes differ", i);
        if (out[n] != 0xCC)
            FAILF("case %zu: wrote past the header", i);
    }
}

/* ---- complete frames ---- */

TEST(frame_ws_small)
{
    hub_frame_t *f = hub_frame_ws(HUB_WS_OP_TEXT, "Hello", 5);
    ASSERT(f != NULL);
    ASSERT_EQ(f->refcnt, 1);
    ASSERT_EQ(f->len, 7);
    static const uint8_t want[] = { 0x81, 0x05, 'H', 'e', 'l', 'l', 'o' };
    ASSERT_MEMEQ(f->data, want, 7);
    hub_frame_release(f);
    f = hub_frame_ws(HUB_WS_OP_PING, NULL, 0);
    ASSERT(f != NULL);
    ASSERT_EQ(f->len, 2);
    ASSERT_EQ(f->data[0], 0x89);
    ASSERT_EQ(f->data[1], 0x00);
    hub_frame_release(f);
}

TEST(frame_ws_boundaries)
{
    static const size_t sizes[] = { 125, 126, 65535, 65536, 70000 };
    static uint8_t payload[70000];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 31 + 7);
    for (size_t i = 0; i < HUB_ARRAY_LEN(sizes); i++) {
        size_t n = sizes[i];
        hub_frame_t *f = hub_frame_ws(HUB_WS_OP_BINARY, payload, n);
        ASSERT(f != NULL);
        size_t hl = hub_ws_header_len(n);
        uint8_t hdr[10];
        hub_ws_write_header(hdr, HUB_WS_OP_BINARY, n);
        int ok = f->len == hl + n && memcmp(f->data, hdr, hl) == 0 &&
                 memcmp(f->data + hl, payload, n) == 0;
        /* the server's own header parses back to the same frame */
        hub_ws_hdr_t h;
        size_t ph = hub_ws_parse_header(f->data, f->len, &h);
        int parse_ok = ph == hl && h.header_len == hl && h.payload_len == n && h.fin == 1 &&
                       h.masked == 0 && h.opcode == HUB_WS_OP_BINARY && h.rsv == 0;
        hub_frame_release(f);
        if (!ok)
            FAILF("size %zu: frame bytes", n);
        if (!parse_ok)
            FAILF("size %zu: parse back", n);
    }
}

/* ---- close frames ---- */

TEST(close_frame_code_and_reason)
{
    hub_frame_t *f = hub_frame_ws_close(1000, "bye");
    ASSERT(f != NULL);
    static const uint8_t want[] = { 0x88, 0x05, 0x03, 0xE8, 'b', 'y', 'e' };
    ASSERT_EQ(f->len, sizeof(want));
    ASSERT_MEMEQ(f->data, want, sizeof(want));
    hub_frame_release(f);

    f = hub_frame_ws_close(4001, NULL);
    ASSERT(f != NULL);
    static const uint8_t want2[] = { 0x88, 0x02, 0x0F, 0xA1 };
    ASSERT_EQ(f->len, sizeof(want2));
    ASSERT_MEMEQ(f->data, want2, sizeof(want2));
    hub_frame_release(f);

    f = hub_frame_ws_close(1011, "");
    ASSERT(f != NULL);
    ASSERT_EQ(f->len, 4);
    ASSERT_EQ(f->data[2], 0x03);
    ASSERT_EQ(f->data[3], 0xF3);
    hub_frame_release(f);
}

TEST(close_frame_reason_truncated)
{
    char reason[300];
    for (size_t i = 0; i < sizeof(reason) - 1; i++)
        reason[i] = (char)('a' + i % 26);
    reason[sizeof(reason) - 1] = '\0';
    hub_frame_t *f = hub_frame_ws_close(1009, reason);
    ASSERT(f != NULL);
    ASSERT_EQ(f->len, 2 + 125);
    ASSERT_EQ(f->data[0], 0x88);
    ASSERT_EQ(f->data[1], 125); /* a control payload fits in 7 bits */
    ASSERT_EQ(f->data[2], 0x03);
    ASSERT_EQ(f->data[3], 0xF1);
    ASSERT_MEMEQ(f->data + 4, reason, 123);
    hub_frame_release(f);

    /* exactly 123 bytes: kept whole; 124: cut to 123 */
    reason[123] = '\0';
    f = hub_frame_ws_close(1000, reason);
    ASSERT(f != NULL);
    ASSERT_EQ(f->len, 127);
    ASSERT_MEMEQ(f->data + 4, reason, 123);
    hub_frame_release(f);
    reason[123] = 'x';
    reason[124] = '\0';
    f = hub_frame_ws_close(1000, reason);
    ASSERT(f != NULL);
    ASSERT_EQ(f->len, 127);
    ASSERT_EQ(f->data[1], 125);
    hub_frame_release(f);
    reason[122] = '\0';
    f = hub_frame_ws_close(1000, reason);
    ASSERT(f != NULL);
    ASSERT_EQ(f->len, 126);
    ASSERT_EQ(f->data[1], 124);
    hub_frame_release(f);
}

/* ---- parsing client headers ---- */

/* Checks that every proper prefix of hdr[0..hl) is reported incomplete and
 * the whole header (plus trailing bytes) parses to hl. */
static int prefixes_incomplete(const uint8_t *buf, size_t hl)
{
    for (size_t n = 0; n < hl; n++) {
        hub_ws_hdr_t h;
        memset(&h, 0, sizeof(h));
        if (hub_ws_parse_header(buf, n, &h) != 0)
            return (int)n + 1;
    }
    return 0;
}

TEST(parse_masked_7bit)
{
    /* RFC 6455 5.7: a masked "Hello" */
    static const uint8_t f[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f,
                                 0x9f, 0x4d, 0x51, 0x58 };
    hub_ws_hdr_t h;
    memset(&h, 0xFF, sizeof(h));
    ASSERT_EQ(hub_ws_parse_header(f, sizeof(f), &h), 6);
    ASSERT_EQ(h.fin, 1);
    ASSERT_EQ(h.rsv, 0);
    ASSERT_EQ(h.opcode, HUB_WS_OP_TEXT);
    ASSERT_EQ(h.masked, 1);
    ASSERT_EQ(h.header_len, 6);
    ASSERT_EQ(h.payload_len, 5);
    ASSERT_EQ(hub_ws_parse_header(f, 6, &h), 6); /* header alone is enough */
    int bad = prefixes_incomplete(f, 6);
    if (bad)
        FAILF("prefix of %d bytes not reported incomplete", bad - 1);
}

TEST(parse_masked_16bit)
{
    uint8_t f[8] = { 0x82, 0xFE, 0x01, 0x00, 0xA1, 0xA2, 0xA3, 0xA4 };
    hub_ws_hdr_t h;
    ASSERT_EQ(hub_ws_parse_header(f, sizeof(f), &h), 8);
    ASSERT_EQ(h.fin, 1);
    ASSERT_EQ(h.opcode, HUB_WS_OP_BINARY);
    ASSERT_EQ(h.masked, 1);
    ASSERT_EQ(h.header_len, 8);
    ASSERT_EQ(h.payload_len, 256);
    int bad = prefixes_incomplete(f, 8);
    if (bad)
        FAILF("prefix of %d bytes not reported incomplete", bad - 1);
    f[2] = 0xFF;
    f[3] = 0xFF;
    ASSERT_EQ(hub_ws_parse_header(f, sizeof(f), &h), 8);
    ASSERT_EQ(h.payload_len, 65535);
    f[2] = 0x00;
    f[3] = 0x7E;
    ASSERT_EQ(hub_ws_parse_header(f, sizeof(f), &h), 8);
    ASSERT_EQ(h.payload_len, 126);
}

TEST(parse_masked_64bit)
{
    uint8_t f[14] = { 0x02, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
                      0x00, 0x11, 0x22, 0x33, 0x44 };
    hub_ws_hdr_t h;
    ASSERT_EQ(hub_ws_parse_header(f, sizeof(f), &h), 14);
    ASSERT_EQ(h.fin, 0);
    ASSERT_EQ(h.opcode, HUB_WS_OP_BINARY);
    ASSERT_EQ(h.masked, 1);
    ASSERT_EQ(h.header_len, 14);
    ASSERT_EQ(h.payload_len, 65536);
    int bad = prefixes_incomplete(f, 14);
    if (bad)
        FAILF("prefix of %d bytes not reported incomplete", bad - 1);
    /* most significant bit set (invalid per RFC): reported as is */
    static const uint8_t big[14] = { 0x82, 0xFF, 0x80, 0x01, 0x02, 0x03, 0x04,
                                     0x05, 0x06, 0x07, 0, 0, 0, 0 };
    ASSERT_EQ(hub_ws_parse_header(big, sizeof(big), &h), 14);
    ASSERT(h.payload_len == 0x8001020304050607ull);
    static const uint8_t max[14] = { 0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                     0xFF, 0xFF, 0xFF, 0, 0, 0, 0 };
    ASSERT_EQ(hub_ws_parse_header(max, sizeof(max), &h), 14);
    ASSERT(h.payload_len == UINT64_MAX);
}

TEST(parse_unmasked)
{
    static const uint8_t f2[] = { 0x89, 0x03 };
    hub_ws_hdr_t h;
    ASSERT_EQ(hub_ws_parse_header(f2, 2, &h), 2);
    ASSERT_EQ(h.masked, 0);
    ASSERT_EQ(h.opcode, HUB_WS_OP_PING);
    ASSERT_EQ(h.payload_len, 3);
    ASSERT_EQ(h.header_len, 2);
    ASSERT_EQ(hub_ws_parse_header(f2, 1, &h), 0);
    static const uint8_t f4[] = { 0x81, 0x7E, 0x12, 0x34 };
    ASSERT_EQ(hub_ws_parse_header(f4, 4, &h), 4);
    ASSERT_EQ(h.payload_len, 0x1234);
    ASSERT_EQ(hub_ws_parse_header(f4, 3, &h), 0);
    static const uint8_t f10[] = { 0x81, 0x7F, 0, 0, 0, 0, 0, 0x01, 0, 0 };
    ASSERT_EQ(hub_ws_parse_header(f10, 10, &h), 10);
    ASSERT_EQ(h.payload_len, 65536);
    ASSERT_EQ(hub_ws_parse_header(f10, 9, &h), 0);
}

TEST(parse_flags)
{
    static const struct {
        uint8_t b0;
        uint8_t fin, rsv, op;
    } cases[] = {
        { 0x81, 1, 0, 0x1 }, { 0x01, 0, 0, 0x1 }, { 0x00, 0, 0, 0x0 }, { 0x80, 1, 0, 0x0 },
        { 0xC1, 1, 4, 0x1 }, { 0xA2, 1, 2, 0x2 }, { 0x91, 1, 1, 0x1 }, { 0xF8, 1, 7, 0x8 },
        { 0x7F, 0, 7, 0xF }, { 0x8A, 1, 0, 0xA }, { 0x83, 1, 0, 0x3 },
    };
    for (size_t i = 0; i < HUB_ARRAY_LEN(cases); i++) {
        uint8_t f[6] = { cases[i].b0, 0x80, 1, 2, 3, 4 };
        hub_ws_hdr_t h;
        memset(&h, 0xEE, sizeof(h));
        size_t n = hub_ws_parse_header(f, sizeof(f), &h);
        if (n != 6 || h.fin != cases[i].fin || h.rsv != cases[i].rsv ||
            h.opcode != cases[i].op || h.masked != 1 || h.payload_len != 0)
            FAILF("byte 0x%02x: n %zu fin %d rsv %d op %d masked %d", cases[i].b0, n, h.fin,
                  h.rsv, h.opcode, h.masked);
    }
}

/* Reads a stream of back-to-back masked frames by header length. */
TEST(parse_stream_walk)
{
    uint8_t buf[512];
    size_t off = 0;
    static const size_t lens[] = { 0, 5, 125, 126, 200 };
    for (size_t i = 0; i < HUB_ARRAY_LEN(lens); i++) {
        uint8_t hdr[10];
        size_t hl = hub_ws_write_header(hdr, HUB_WS_OP_TEXT, lens[i]);
        hdr[1] |= 0x80;
        memcpy(buf + off, hdr, hl);
        off += hl;
        memcpy(buf + off, "\x01\x02\x03\x04", 4);
        off += 4;
        memset(buf + off, 'p', lens[i]);
        off += lens[i];
    }
    size_t pos = 0;
    for (size_t i = 0; i < HUB_ARRAY_LEN(lens); i++) {
        hub_ws_hdr_t h;
        size_t hl = hub_ws_parse_header(buf + pos, off - pos, &h);
        if (hl == 0 || h.payload_len != lens[i] || !h.masked)
            FAILF("frame %zu: hl %zu len %llu", i, hl, (unsigned long long)h.payload_len);
        pos += hl + (size_t)h.payload_len;
    }
    ASSERT_EQ(pos, off);
}

int main(void)
{
    RUN(alloc_ref_release);
    RUN(alloc_zero_and_copy);
    RUN(many_refs);
    RUN(header_len_boundaries);
    RUN(write_header_bytes);
    RUN(frame_ws_small);
    RUN(frame_ws_boundaries);
    RUN(close_frame_code_and_reason);
    RUN(close_frame_reason_truncated);
    RUN(parse_masked_7bit);
    RUN(parse_masked_16bit);
    RUN(parse_masked_64bit);
    RUN(parse_unmasked);
    RUN(parse_flags);
    RUN(parse_stream_walk);
    HARNESS_MAIN_END();
}
