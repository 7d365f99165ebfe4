/* handshake_test.c: unit tests for SHA-1 (FIPS 180-4 vectors), base64
 * (RFC 4648 vectors and strict decoding), and the RFC 6455 opening
 * handshake: hub_handshake_accept, hub_handshake_check on requests parsed
 * by hub_http_*, and the 101 response. */
#include "harness.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "common.h"
#include "config.h"
#include "handshake.h"
#include "http.h"
#include "sha1.h"

/* ---- SHA-1 ---- */

static void to_hex(const uint8_t *d, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
    out[2 * n] = '\0';
}

static void sha1_hex(const void *data, size_t len, char out[41])
{
    hub_sha1_t s;
    uint8_t d[20];
    hub_sha1_init(&s);
    hub_sha1_update(&s, data, len);
    hub_sha1_final(&s, d);
    to_hex(d, 20, out);
}

TEST(sha1_fips_vectors)
{
    char hex[41];
    sha1_hex("abc", 3, hex);
    ASSERT_STREQ(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    sha1_hex("", 0, hex);
    ASSERT_STREQ(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    const char *m56 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    ASSERT_EQ(strlen(m56), 56);
    sha1_hex(m56, 56, hex);
    ASSERT_STREQ(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    /* FIPS 180-2 appendix: the 112-byte two-block message */
    const char *m112 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                       "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    sha1_hex(m112, 112, hex);
    ASSERT_STREQ(hex, "a49b2446a02c645bf419f995b67091253a04a259");
}

TEST(sha1_million_a_uneven_chunks)
{
    static uint8_t a[1000000];
    memset(a, 'a', sizeof(a));
    static const size_t steps[] = { 1, 63, 64, 65, 7, 1000, 55, 56, 57, 4096, 3 };
    hub_sha1_t s;
    hub_sha1_init(&s);
    size_t off = 0, k = 0;
    while (off < sizeof(a)) {
        size_t n = steps[k++ % HUB_ARRAY_LEN(steps)];
        if (n > sizeof(a) - off)
            n = sizeof(a) - off;
        hub_sha1_update(&s, a + off, n);
        off += n;
    }
    uint8_t d[20];
    char hex[41];
    hub_sha1_final(&s, d);
    to_hex(d, 20, hex);
    ASSERT_STREQ(hex, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    /* and in one call */
    sha1_hex(a, sizeof(a), hex);
    ASSERT_STREQ(hex, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

/* Lengths around the padding boundary: byte-wise updates match one update. */
TEST(sha1_padding_boundaries)
{
    uint8_t buf[130];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    for (size_t len = 50; len <= 130; len++) {
        char one[41], many[41];
        sha1_hex(buf, len, one);
        hub_sha1_t s;
        uint8_t d[20];
        hub_sha1_init(&s);
        for (size_t i = 0; i < len; i++)
            hub_sha1_update(&s, buf + i, 1);
        hub_sha1_final(&s, d);
        to_hex(d, 20, many);
        if (strcmp(one, many) != 0)
            FAILF("len %zu: %s != %s", len, one, many);
    }
    /* 55/56/64 bytes of 'a' (known values) */
    memset(buf, 'a', sizeof(buf));
    char hex[41];
    sha1_hex(buf, 55, hex);
    ASSERT_STREQ(hex, "c1c8bbdc22796e28c0e15163d20899b65621d65a");
    sha1_hex(buf, 56, hex);
    ASSERT_STREQ(hex, "c2db330f6083854c99d4b5bfb6e8f29f201be699");
    sha1_hex(buf, 64, hex);
    ASSERT_STREQ(hex, "0098ba824b5c16427bd7a1122a5a442a25ec644d");
}

/* ---- base64 ---- */

static const struct { const char *plain, *enc; } b64_vectors[] = {
    { "", "" },         { "f", "Zg==" },         { "fo", "Zm8=" },       { "foo", "Zm9v" },
    { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
};

TEST(base64_encode_rfc4648)
{
    for (size_t i = 0; i < HUB_ARRAY_LEN(b64_vectors); i++) {
        char out[16];
        memset(out, 'X', sizeof(out));
        size_t n = hub_base64_encode((const uint8_t *)b64_vectors[i].plain,
                                     strlen(b64_vectors[i].plain), out);
        ASSERT_EQ(n, strlen(b64_vectors[i].enc));
        ASSERT_STREQ(out, b64_vectors[i].enc);
    }
}

TEST(base64_decode_rfc4648)
{
    for (size_t i = 0; i < HUB_ARRAY_LEN(b64_vectors); i++) {
        uint8_t out[16];
        const char *e = b64_vectors[i].enc;
        int n = hub_base64_decode(e, strlen(e), out, sizeof(out));
        ASSERT_EQ(n, (int)strlen(b64_vectors[i].plain));
        ASSERT_MEMEQ(out, b64_vectors[i].plain, (size_t)n);
    }
}

TEST(base64_roundtrip_all_bytes)
{
    uint8_t in[256], back[256];
    for (int i = 0; i < 256; i++)
        in[i] = (uint8_t)(255 - i);
    char enc[4 * ((256 + 2) / 3) + 1];
    for (size_t len = 0; len <= 256; len += 17) {
        size_t n = hub_base64_encode(in, len, enc);
        ASSERT_EQ(n, 4 * ((len + 2) / 3));
        ASSERT_EQ(strlen(enc), n);
        int m = hub_base64_decode(enc, n, back, sizeof(back));
        ASSERT_EQ(m, (int)len);
        ASSERT_MEMEQ(back, in, len);
    }
}

TEST(base64_decode_rejects)
{
    static const char *const bad[] = {
        "Z",        "Zg",        "Zg=",       "Zm9vY",     "Zm9vYg=", /* not a multiple of 4 */
        "Zm9*",     "Zm 9",      "Zm9v\n",    "Zm-_",      "Zm9\x80", /* bad characters */
        "Zg=a",     "Zg==Zg==",  "Z=g=",      "Z===",      "====",    /* data / '=' misplaced */
        "=Zm9",     "Zm9v=Zm9",
        "Zh==",     "Zm9=",      "Zm/=",      "Zg=A",     /* non-canonical padding bits */
    };
    for (size_t i = 0; i < HUB_ARRAY_LEN(bad); i++) {
        uint8_t out[16];
        int n = hub_base64_decode(bad[i], strlen(bad[i]), out, sizeof(out));
        if (n != -1)
            FAILF("\"%s\" decoded to %d bytes", bad[i], n);
    }
    uint8_t out[4];
    ASSERT_EQ(hub_base64_decode("Zg==", 4, out, sizeof(out)), 1);
    ASSERT_EQ(out[0], 'f');
    ASSERT_EQ(hub_base64_decode("Zm8=", 4, out, sizeof(out)), 2);
}

TEST(base64_decode_output_overflow)
{
    uint8_t out[8];
    memset(out, 0xEE, sizeof(out));
    ASSERT_EQ(hub_base64_decode("Zm9vYmFy", 8, out, 5), -1);
    ASSERT_EQ(out[5], 0xEE); /* nothing written past the capacity */
    ASSERT_EQ(hub_base64_decode("Zm9vYmFy", 8, out, 6), 6);
    ASSERT_EQ(hub_base64_decode("Zm9vYg==", 8, out, 3), -1);
    ASSERT_EQ(hub_base64_decode("Zm9vYg==", 8, out, 4), 4);
    ASSERT_EQ(hub_base64_decode("Zg==", 4, out, 0), -1);
    ASSERT_EQ(hub_base64_decode("", 0, out, 0), 0);
}

/* ---- accept ---- */

TEST(accept_rfc6455_example)
{
    char acc[HUB_WS_ACCEPT_LEN + 1];
    memset(acc, 'X', sizeof(acc));
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    hub_handshake_accept(key, strlen(key), acc);
    ASSERT_EQ(strlen(acc), HUB_WS_ACCEPT_LEN);
    ASSERT_STREQ(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    /* only keylen bytes of the key are used */
    char longer[64];
    snprintf(longer, sizeof(longer), "%sTRAILING", key);
    hub_handshake_accept(longer, strlen(key), acc);
    ASSERT_STREQ(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

/* ---- hub_handshake_check on parsed requests ---- */

static const hub_http_limits_t lim = { 8192, 16384, 65536 };
static const hub_strlist_t no_origins = { NULL, 0 };

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
/* RFC 6455 section 1.3; also hashlib: b64(sha1(KEY + GUID)) */
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* Parses text as one whole request and runs hub_handshake_check. Returns its
 * status, or -1 when the text did not parse into a complete request. */
static int check(const char *text, const hub_strlist_t *origins, char accept[29])
{
    hub_http_t *h = hub_http_new(&lim);
    if (h == NULL)
        return -1;
    size_t consumed = 0;
    int status = 0;
    const char *reason = NULL;
    int rc = hub_http_feed(h, text, strlen(text), &consumed, &status, &reason);
    int res = -1;
    if (rc == HUB_HTTP_DONE && consumed == strlen(text)) {
        const char *why = NULL;
        accept[0] = '\0';
        res = hub_handshake_check(hub_http_request(h), origins, accept, &why);
        if (res != 101 && (why == NULL || why[0] == '\0'))
            res = -2; /* a refusal must say why */
    }
    hub_http_free(h);
    return res;
}

/* A request with the usual lines; "%s" slots replace chosen lines. */
static int check_with(const char *method_line, const char *host, const char *upgrade,
                      const char *connection, const char *version, const char *key,
                      const char *extra, const hub_strlist_t *origins, char accept[29])
{
    char buf[2048];
    snprintf(buf, sizeof(buf), "%s\r\n%s%s%s%s%s%s\r\n", method_line, host, upgrade,
             connection, version, key, extra);
    return check(buf, origins, accept);
}

#define L_GET "GET /ws HTTP/1.1"
#define L_HOST "Host: server.example.com\r\n"
#define L_UP "Upgrade: websocket\r\n"
#define L_CONN "Connection: Upgrade\r\n"
#define L_VER "Sec-WebSocket-Version: 13\r\n"
#define L_KEY "Sec-WebSocket-Key: " KEY "\r\n"

/* The standard request with extra lines appended. */
static int check_std(const char *extra, const hub_strlist_t *origins, char accept[29])
{
    return check_with(L_GET, L_HOST, L_UP, L_CONN, L_VER, L_KEY, extra, origins, accept);
}

TEST(check_valid)
{
    char acc[29];
    ASSERT_EQ(check_std("", &no_origins, acc), 101);
    ASSERT_STREQ(acc, ACCEPT);
    /* the RFC 6455 sample request, with Origin and subprotocol offers */
    const char *rfc = "GET /chat HTTP/1.1\r\n"
                      "Host: server.example.com\r\n"
                      "Upgrade: websocket\r\n"
                      "Connection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Origin: http://example.com\r\n"
                      "Sec-WebSocket-Protocol: chat, superchat\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n";
    memset(acc, 0, sizeof(acc));
    ASSERT_EQ(check(rfc, &no_origins, acc), 101);
    ASSERT_STREQ(acc, ACCEPT);
}

TEST(check_case_insensitive_tokens)
{
    char acc[29];
    ASSERT_EQ(check_with(L_GET, L_HOST, "Upgrade: WebSocket\r\n", "Connection: keep-alive, Upgrade\r\n",
                         L_VER, L_KEY, "", &no_origins, acc),
              101);
    ASSERT_STREQ(acc, ACCEPT);
    ASSERT_EQ(check_with(L_GET, L_HOST, "upgrade: WEBSOCKET\r\n", "connection: upgrade\r\n",
                         "sec-websocket-version: 13\r\n", "sec-websocket-key: " KEY "\r\n", "",
                         &no_origins, acc),
              101);
    ASSERT_STREQ(acc, ACCEPT);
}

TEST(check_key_errors)
{
    char acc[29];
    /* missing */
    ASSERT_EQ(check_with(L_GET, L_HOST, L_UP, L_CONN, L_VER, "", "", &no_origins, acc), 400);
    /* too short */
    ASSERT_EQ(check_with(L_GET, L_HOST, L_UP, L_CONN, L_VER, "Sec-WebSocket-Key: abc\r\n", "",
                         &no_origins, acc),
              400);
    /* 24 characters that are not base64 */
    ASSERT_EQ(check_with(L_GET, L_HOST, L_UP, L_CONN, L_VER,
                         "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!!!\r\n", "", &no_origins,
                         acc),
              400);
    ASSERT_EQ(check_with(L_GET, L_HOST, L_UP, L_CONN, L_VER,
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=A\r\n", "", &no_origins,
                         acc),
              400);
    /* 15 bytes (20 chars), 17 bytes (24 chars, one '='), 18 bytes (24, none) */
    uint8_t raw[18];
    char k[40], line[80];
    memset(raw, 0x5A, sizeof(raw));
    static const size_t sizes[] = { 15, 17, 18 };
    for (size_t i = 0; i < HUB_ARRAY_LEN(sizes); i++) {
        hub_base64_encode(raw, sizes[i], k);
        snprintf(line, sizeof(line), "Sec-WebSocket-Key: %s\r\n", k);
        int st = check_with(L_GET, L_HOST, L_UP, L_CONN, L_VER, line, "", &no_origins, acc);
        if (st != 400)
            FAILF("%zu-byte key %s: %d", sizes[i], k, st);
    }
    /* the same key sent twice */
    ASSERT_EQ(check_std(L_KEY, &no_origins, acc), 400);
    /* a 16-byte key works, whatever its bytes */
    hub_base64_encode(raw, 16, k);
    snprintf(line, sizeof(line), "Sec-WebSocket-Key: %s\r\n", k);
    ASSERT_EQ(check_with(L_GET, L_HOST, L_UP, L_CONN, L_VER, line, "", &no_origins, acc), 101);
    char want[29];
    hub_handshake_accept(k, strlen(k), want);
    ASSERT_STREQ(acc, want);
}

TEST(check_version)
{
    char acc[29];
    ASSERT_EQ(check_with(L_GET, L_HOST, L_UP, L_CONN, "Sec-WebSocket-Version: 8\r\n", L_KEY, "",
                         &no_origins, acc),
              426);
    ASSERT_EQ(check_with(L_GET, L_HOST, L_UP, L_CONN, "", L_KEY, "", &no_origins, acc), 426);
    ASSERT_EQ(check_with(L_GET, L_HOST, L_UP, L_CONN, "Sec-WebSocket-Version: 13, 8\r\n", L_KEY,
                         "", &no_origins, acc),
              426);
    ASSERT_EQ(check_std("Sec-WebSocket-Version: 13\r\n", &no_origins, acc), 426);
}

TEST(check_method_and_version)
{
    char acc[29];
    ASSERT_EQ(check_with("POST /ws HTTP/1.1", L_HOST, L_UP, L_CONN, L_VER, L_KEY,
                         "Content-Length: 0\r\n", &no_origins, acc),
              405);
    ASSERT_EQ(check_with("GET /ws HTTP/1.0", L_HOST, L_UP, L_CONN, L_VER, L_KEY, "", &no_origins,
                         acc),
              400);
}

TEST(check_host)
{
    char acc[29];
    ASSERT_EQ(check_with(L_GET, "", L_UP, L_CONN, L_VER, L_KEY, "", &no_origins, acc), 400);
    ASSERT_EQ(check_std("Host: other.example.com\r\n", &no_origins, acc), 400);
}

TEST(check_no_body_allowed)
{
    char acc[29];
    ASSERT_EQ(check_std("Content-Length: 0\r\n", &no_origins, acc), 400);
    int st = check(L_GET "\r\n" L_HOST L_UP L_CONN L_VER L_KEY
                         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                   &no_origins, acc);
    ASSERT_EQ(st, 400);
}

TEST(check_upgrade_connection)
{
    char acc[29];
    ASSERT_EQ(check_with(L_GET, L_HOST, "", L_CONN, L_VER, L_KEY, "", &no_origins, acc), 400);
    ASSERT_EQ(check_with(L_GET, L_HOST, "Upgrade: h2c\r\n", L_CONN, L_VER, L_KEY, "",
                         &no_origins, acc),
              400);
    ASSERT_EQ(check_with(L_GET, L_HOST, L_UP, "", L_VER, L_KEY, "", &no_origins, acc), 400);
    ASSERT_EQ(check_with(L_GET, L_HOST, L_UP, "Connection: keep-alive\r\n", L_VER, L_KEY, "",
                         &no_origins, acc),
              400);
    ASSERT_EQ(check_with(L_GET, L_HOST, L_UP, "Connection: upgrade2\r\n", L_VER, L_KEY, "",
                         &no_origins, acc),
              400);
}

TEST(check_origins)
{
    char acc[29];
    char *items[] = { (char *)"https://a.example", (char *)"https://b.example" };
    hub_strlist_t list = { items, 2 };
    ASSERT_EQ(check_std("Origin: https://evil.example\r\n", &list, acc), 403);
    ASSERT_EQ(check_std("Origin: https://a.example.evil\r\n", &list, acc), 403);
    ASSERT_EQ(check_std("Origin: https://A.example\r\n", &list, acc), 403);
    ASSERT_EQ(check_std("Origin: https://b.example\r\n", &list, acc), 101);
    ASSERT_STREQ(acc, ACCEPT);
    ASSERT_EQ(check_std("Origin: https://a.example\r\n", &list, acc), 101);
    ASSERT_EQ(check_std("", &list, acc), 101); /* no Origin: a non-browser client */
    ASSERT_STREQ(acc, ACCEPT);
    ASSERT_EQ(check_std("Origin: https://a.example\r\nOrigin: https://evil.example\r\n", &list,
                        acc),
              403);
    /* an empty list allows any Origin */
    ASSERT_EQ(check_std("Origin: https://evil.example\r\n", &no_origins, acc), 101);
    ASSERT_STREQ(acc, ACCEPT);
}

TEST(response_101)
{
    char out[256];
    size_t n = hub_handshake_response(ACCEPT, out, sizeof(out));
    ASSERT_EQ(n, strlen(out));
    const char *sl = "HTTP/1.1 101 Switching Protocols\r\n";
    ASSERT_MEMEQ(out, sl, strlen(sl));
    ASSERT(strstr(out, "\r\nSec-WebSocket-Accept: " ACCEPT "\r\n") != NULL);
    ASSERT(strcasestr(out, "\r\nUpgrade: websocket\r\n") != NULL);
    ASSERT(strcasestr(out, "\r\nConnection: Upgrade\r\n") != NULL);
    ASSERT(strcasestr(out, "Sec-WebSocket-Extensions") == NULL);
    ASSERT(strcasestr(out, "Sec-WebSocket-Protocol") == NULL);
    ASSERT(n >= 4 && memcmp(out + n - 4, "\r\n\r\n", 4) == 0);
    ASSERT(strstr(out, "\r\n\r\n") == out + n - 4);
    ASSERT(n < 160); /* the documented capacity suffices */
}

/* The full path: parse, check, respond; the accept in the response matches
 * the RFC example. */
TEST(response_from_parsed_request)
{
    char acc[29];
    ASSERT_EQ(check_std("Sec-WebSocket-Extensions: permessage-deflate\r\n"
                        "Sec-WebSocket-Protocol: chat\r\n",
                        &no_origins, acc),
              101);
    char out[160];
    size_t n = hub_handshake_response(acc, out, sizeof(out));
    ASSERT(n > 0 && n < sizeof(out));
    ASSERT(strstr(out, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != NULL);
    ASSERT(strcasestr(out, "Sec-WebSocket-Extensions") == NULL);
    ASSERT(strcasestr(out, "Sec-WebSocket-Protocol") == NULL);
}

int main(void)
{
    RUN(sha1_fips_vectors);
    RUN(sha1_million_a_uneven_chunks);
    RUN(sha1_padding_boundaries);
    RUN(base64_encode_rfc4648);
    RUN(base64_decode_rfc4648);
    RUN(base64_roundtrip_all_bytes);
    RUN(base64_decode_rejects);
    RUN(base64_decode_output_overflow);
    RUN(accept_rfc6455_example);
    RUN(check_valid);
    RUN(check_case_insensitive_tokens);
    RUN(check_key_errors);
    RUN(check_version);
    RUN(check_method_and_version);
    RUN(check_host);
    RUN(check_no_body_allowed);
    RUN(check_upgrade_connection);
    RUN(check_origins);
    RUN(response_101);
    RUN(response_from_parsed_request);
    HARNESS_MAIN_END();
}
