/* http_test.c: unit tests for the HTTP/1.1 request parser (hub_http_*) on
 * llhttp: complete and split requests, pipelining, upgrade boundaries,
 * bodies, size limits (single feed and small chunks), malformed input,
 * header lookup and token lists, and response / error body formatting. */
#include "harness.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "http.h"

static const hub_http_limits_t big_lim = { 8192, 16384, 65536 };
static const hub_http_limits_t small_lim = { 256, 1024, 100 };

/* 1 when span holds exactly s. */
static int span_is(const hub_http_req_t *r, hub_span_t sp, const char *s)
{
    return hub_span_eq(r, sp, s);
}

/* Feeds text in chunks of chunk bytes (0 = all at once) until the parser
 * answers something other than NEED_MORE. Returns the last feed's result;
 * *fed gets the bytes offered so far, *status the error status. */
static int feed_chunks(hub_http_t *h, const char *data, size_t len, size_t chunk, size_t *fed,
                       int *status)
{
    size_t off = 0, consumed = 0;
    const char *reason = NULL;
    int rc = HUB_HTTP_NEED_MORE;
    *status = 0;
    if (chunk == 0)
        chunk = len;
    while (off < len) {
        size_t n = len - off < chunk ? len - off : chunk;
        rc = hub_http_feed(h, data + off, n, &consumed, status, &reason);
        off += n;
        if (rc != HUB_HTTP_NEED_MORE)
            break;
        if (consumed != n)
            return -999999;
    }
    if (fed)
        *fed = off;
    if (rc < 0 && reason == NULL)
        return -999998; /* an error must come with a reason */
    return rc;
}

/* Parses one whole request text at once with lim; returns the result. */
static int parse_all(hub_http_t *h, const char *text, int *status)
{
    return feed_chunks(h, text, strlen(text), 0, NULL, status);
}

/* Returns the status of a request that must be rejected, or 0 when it was
 * not rejected with a negative code. */
static int reject_status(const hub_http_limits_t *lim, const char *data, size_t len,
                         size_t chunk)
{
    hub_http_t *h = hub_http_new(lim);
    int status = 0;
    size_t fed = 0;
    int rc = feed_chunks(h, data, len, chunk, &fed, &status);
    hub_http_free(h);
    return rc < 0 && rc > -999998 ? status : 0;
}

/* ---- complete requests ---- */

TEST(simple_get)
{
    const char *req = "GET /a/b?x=1&y HTTP/1.1\r\n"
                      "Host: example.com\r\n"
                      "X-Custom: hello world\r\n"
                      "\r\n";
    hub_http_t *h = hub_http_new(&big_lim);
    ASSERT(h != NULL);
    ASSERT_EQ(hub_http_started(h), 0);
    size_t consumed = 0;
    int status = 0;
    const char *reason = NULL;
    int rc = hub_http_feed(h, req, strlen(req), &consumed, &status, &reason);
    int started = hub_http_started(h);
    const hub_http_req_t *r = hub_http_request(h);
    int ok = rc == HUB_HTTP_DONE && consumed == strlen(req) && started &&
             r->method == HUB_HTTP_GET && strcmp(r->method_name, "GET") == 0 &&
             r->http_major == 1 && r->http_minor == 1 && span_is(r, r->url, "/a/b?x=1&y") &&
             span_is(r, r->path, "/a/b") && span_is(r, r->query, "x=1&y") &&
             r->nheaders == 2 && span_is(r, r->headers[0].name, "Host") &&
             span_is(r, r->headers[0].value, "example.com") &&
             span_is(r, r->headers[1].name, "X-Custom") &&
             span_is(r, r->headers[1].value, "hello world") && r->keep_alive == 1 &&
             r->upgrade == 0 && r->body == NULL && r->body_len == 0;
    int cnt = -1;
    hub_span_t host = hub_http_header(r, "hOsT", &cnt);
    int host_ok = cnt == 1 && span_is(r, host, "example.com");
    hub_span_t xc = hub_http_header(r, "x-custom", NULL);
    int xc_ok = span_is(r, xc, "hello world");
    hub_span_t missing = hub_http_header(r, "X-Missing", &cnt);
    int miss_ok = cnt == 0 && !hub_span_present(missing) && missing.off == UINT32_MAX &&
                  missing.len == 0;
    hub_http_free(h);
    ASSERT(ok);
    ASSERT(host_ok);
    ASSERT(xc_ok);
    ASSERT(miss_ok);
}

TEST(no_query_path)
{
    hub_http_t *h = hub_http_new(&big_lim);
    int status;
    int rc = parse_all(h, "GET /plain HTTP/1.1\r\nHost: a\r\n\r\n", &status);
    const hub_http_req_t *r = hub_http_request(h);
    int ok = rc == HUB_HTTP_DONE && span_is(r, r->path, "/plain") && r->query.len == 0;
    hub_http_free(h);
    ASSERT(ok);
}

TEST(empty_query_after_mark)
{
    hub_http_t *h = hub_http_new(&big_lim);
    int status;
    int rc = parse_all(h, "GET /p? HTTP/1.1\r\nHost: a\r\n\r\n", &status);
    const hub_http_req_t *r = hub_http_request(h);
    int ok = rc == HUB_HTTP_DONE && span_is(r, r->path, "/p") && r->query.len == 0;
    hub_http_free(h);
    ASSERT(ok);
}

TEST(methods)
{
    static const struct { const char *m; int id; } cases[] = {
        { "HEAD", HUB_HTTP_HEAD },     { "DELETE", HUB_HTTP_DELETE },
        { "OPTIONS", HUB_HTTP_OTHER }, { "PUT", HUB_HTTP_PUT },
    };
    for (size_t i = 0; i < HUB_ARRAY_LEN(cases); i++) {
        char buf[128];
        snprintf(buf, sizeof(buf), "%s / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                 cases[i].m);
        hub_http_t *h = hub_http_new(&big_lim);
        int status;
        int rc = parse_all(h, buf, &status);
        const hub_http_req_t *r = hub_http_request(h);
        int ok = rc == HUB_HTTP_DONE && r->method == cases[i].id &&
                 strcmp(r->method_name, cases[i].m) == 0;
        hub_http_free(h);
        if (!ok)
            FAILF("method %s", cases[i].m);
    }
}

TEST(keep_alive_rules)
{
    static const struct { const char *req; int ka; } cases[] = {
        { "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1 },
        { "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 0 },
        { "GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n", 0 },
        { "GET / HTTP/1.0\r\nHost: a\r\n\r\n", 0 },
        { "GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", 1 },
    };
    for (size_t i = 0; i < HUB_ARRAY_LEN(cases); i++) {
        hub_http_t *h = hub_http_new(&big_lim);
        int status;
        int rc = parse_all(h, cases[i].req, &status);
        const hub_http_req_t *r = hub_http_request(h);
        int ka = r->keep_alive, minor = r->http_minor;
        hub_http_free(h);
        if (rc != HUB_HTTP_DONE || ka != cases[i].ka)
            FAILF("case %zu: rc %d keep_alive %d (minor %d), want %d", i, rc, ka, minor,
                  cases[i].ka);
    }
}

/* An empty header value must not swallow the next header's name. */
TEST(empty_header_value)
{
    hub_http_t *h = hub_http_new(&big_lim);
    int status;
    int rc = parse_all(h, "GET / HTTP/1.1\r\nX-Empty:\r\nHost: a\r\nX-B: \r\n\r\n", &status);
    const hub_http_req_t *r = hub_http_request(h);
    int cnt_e = -1, cnt_h = -1, cnt_b = -1;
    hub_span_t e = hub_http_header(r, "X-Empty", &cnt_e);
    hub_span_t host = hub_http_header(r, "Host", &cnt_h);
    hub_span_t b = hub_http_header(r, "X-B", &cnt_b);
    int ok = rc == HUB_HTTP_DONE && r->nheaders == 3 && cnt_e == 1 && e.len == 0 &&
             cnt_h == 1 && span_is(r, host, "a") && cnt_b == 1 && b.len == 0;
    size_t nh = r->nheaders;
    hub_http_free(h);
    if (!ok)
        FAILF("rc %d nheaders %zu cnt X-Empty %d Host %d X-B %d", rc, nh, cnt_e, cnt_h, cnt_b);
}

TEST(duplicate_headers_counted)
{
    hub_http_t *h = hub_http_new(&big_lim);
    int status;
    int rc = parse_all(h, "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n", &status);
    const hub_http_req_t *r = hub_http_request(h);
    int cnt = 0;
    hub_span_t v = hub_http_header(r, "X-A", &cnt);
    int ok = rc == HUB_HTTP_DONE && cnt == 2 && span_is(r, v, "1");
    hub_http_free(h);
    ASSERT(ok);
}

/* ---- split feeds ---- */

static const char split_req[] = "GET /chat?room=1 HTTP/1.1\r\n"
                                "Host: server.example.com\r\n"
                                "X-Long-Header-Name: some longer value here\r\n"
                                "Connection: close\r\n"
                                "\r\n";

/* Checks the request parsed from split_req. */
static int split_req_ok(const hub_http_req_t *r)
{
    int cnt = 0;
    hub_span_t x = hub_http_header(r, "x-long-header-name", &cnt);
    return r->method == HUB_HTTP_GET && span_is(r, r->path, "/chat") &&
           span_is(r, r->query, "room=1") && r->nheaders == 3 &&
           span_is(r, r->headers[0].name, "Host") &&
           span_is(r, r->headers[0].value, "server.example.com") &&
           span_is(r, r->headers[1].name, "X-Long-Header-Name") && cnt == 1 &&
           span_is(r, x, "some longer value here") &&
           span_is(r, r->headers[2].value, "close") && r->keep_alive == 0;
}

TEST(byte_at_a_time)
{
    hub_http_t *h = hub_http_new(&big_lim);
    size_t len = strlen(split_req);
    int bad = -1;
    int last_rc = 0;
    size_t last_consumed = 0;
    for (size_t i = 0; i < len; i++) {
        size_t consumed = 99;
        int status = 0;
        const char *reason = NULL;
        int rc = hub_http_feed(h, split_req + i, 1, &consumed, &status, &reason);
        if (i + 1 < len) {
            if (rc != HUB_HTTP_NEED_MORE || consumed != 1) {
                bad = (int)i;
                break;
            }
        } else {
            last_rc = rc;
            last_consumed = consumed;
        }
    }
    int ok = bad < 0 && last_rc == HUB_HTTP_DONE && last_consumed == 1 &&
             split_req_ok(hub_http_request(h));
    hub_http_free(h);
    if (bad >= 0)
        FAILF("byte %d not taken as NEED_MORE", bad);
    ASSERT(ok);
}

/* Splits at every position: the header name and value cut in two feeds. */
TEST(two_feeds_every_split)
{
    size_t len = strlen(split_req);
    for (size_t cut = 1; cut < len; cut++) {
        hub_http_t *h = hub_http_new(&big_lim);
        size_t c1 = 0, c2 = 0;
        int status = 0;
        const char *reason = NULL;
        int rc1 = hub_http_feed(h, split_req, cut, &c1, &status, &reason);
        int rc2 = hub_http_feed(h, split_req + cut, len - cut, &c2, &status, &reason);
        int ok = rc1 == HUB_HTTP_NEED_MORE && c1 == cut && rc2 == HUB_HTTP_DONE &&
                 c2 == len - cut && split_req_ok(hub_http_request(h));
        hub_http_free(h);
        if (!ok)
            FAILF("split at %zu: rc1 %d rc2 %d", cut, rc1, rc2);
    }
}

/* ---- request boundaries ---- */

TEST(pipelined)
{
    const char *a = "GET /first HTTP/1.1\r\nHost: a\r\n\r\n";
    const char *b = "GET /second?q HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n";
    char buf[256];
    snprintf(buf, sizeof(buf), "%s%s", a, b);
    size_t len = strlen(buf);
    hub_http_t *h = hub_http_new(&big_lim);
    size_t consumed = 0;
    int status = 0;
    const char *reason = NULL;
    int rc = hub_http_feed(h, buf, len, &consumed, &status, &reason);
    const hub_http_req_t *r = hub_http_request(h);
    int ok1 = rc == HUB_HTTP_DONE && consumed == strlen(a) && span_is(r, r->path, "/first") &&
              r->keep_alive == 1 && r->nheaders == 1;
    size_t c1 = consumed;
    hub_http_reset(h);
    int started_after_reset = hub_http_started(h);
    rc = hub_http_feed(h, buf + c1, len - c1, &consumed, &status, &reason);
    r = hub_http_request(h);
    int cnt = 0;
    hub_span_t host = hub_http_header(r, "host", &cnt);
    int ok2 = rc == HUB_HTTP_DONE && consumed == strlen(b) && span_is(r, r->path, "/second") &&
              span_is(r, r->query, "q") && r->keep_alive == 0 && cnt == 1 &&
              span_is(r, host, "b");
    hub_http_free(h);
    if (!ok1)
        FAILF("first: consumed %zu want %zu", c1, strlen(a));
    ASSERT_EQ(started_after_reset, 0);
    ASSERT(ok2);
}

TEST(upgrade_leaves_frame_bytes)
{
    const char *head = "GET /ws HTTP/1.1\r\n"
                       "Host: a\r\n"
                       "Upgrade: websocket\r\n"
                       "Connection: Upgrade\r\n"
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n"
                       "\r\n";
    static const char frame[] = "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    char buf[512];
    size_t hl = strlen(head);
    memcpy(buf, head, hl);
    memcpy(buf + hl, frame, sizeof(frame) - 1);
    size_t len = hl + sizeof(frame) - 1;
    hub_http_t *h = hub_http_new(&big_lim);
    size_t consumed = 0;
    int status = 0;
    const char *reason = NULL;
    int rc = hub_http_feed(h, buf, len, &consumed, &status, &reason);
    const hub_http_req_t *r = hub_http_request(h);
    int up = r->upgrade;
    int ok = rc == HUB_HTTP_DONE && span_is(r, r->path, "/ws") && r->body_len == 0;
    hub_http_free(h);
    ASSERT(ok);
    ASSERT_EQ(up, 1);
    ASSERT_EQ(consumed, hl);
}

/* The head arrives in pieces and the last piece carries frame bytes too. */
TEST(upgrade_split_then_frame_bytes)
{
    const char *head = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\n\r\n";
    size_t hl = strlen(head);
    char buf[256];
    memcpy(buf, head, hl);
    memcpy(buf + hl, "\x81\x80\x01\x02\x03\x04", 6);
    hub_http_t *h = hub_http_new(&big_lim);
    size_t c1 = 0, c2 = 0;
    int status = 0;
    const char *reason = NULL;
    int rc1 = hub_http_feed(h, buf, 20, &c1, &status, &reason);
    int rc2 = hub_http_feed(h, buf + 20, hl + 6 - 20, &c2, &status, &reason);
    int up = hub_http_request(h)->upgrade;
    hub_http_free(h);
    ASSERT_EQ(rc1, HUB_HTTP_NEED_MORE);
    ASSERT_EQ(c1, 20);
    ASSERT_EQ(rc2, HUB_HTTP_DONE);
    ASSERT_EQ(up, 1);
    ASSERT_EQ(c2, hl - 20);
}

/* ---- bodies ---- */

TEST(post_content_length_body)
{
    const char *req = "POST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n"
                      "hello world";
    hub_http_t *h = hub_http_new(&big_lim);
    int status;
    int rc = parse_all(h, req, &status);
    const hub_http_req_t *r = hub_http_request(h);
    int ok = rc == HUB_HTTP_DONE && r->method == HUB_HTTP_POST && r->body_len == 11 &&
             r->body != NULL && memcmp(r->body, "hello world", 11) == 0;
    hub_http_free(h);
    ASSERT(ok);
}

TEST(post_body_byte_at_a_time)
{
    const char *req = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabcde";
    hub_http_t *h = hub_http_new(&big_lim);
    int status;
    size_t fed;
    int rc = feed_chunks(h, req, strlen(req), 1, &fed, &status);
    const hub_http_req_t *r = hub_http_request(h);
    int ok = rc == HUB_HTTP_DONE && fed == strlen(req) && r->body_len == 5 &&
             memcmp(r->body, "abcde", 5) == 0;
    hub_http_free(h);
    ASSERT(ok);
}

TEST(chunked_body)
{
    const char *req = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5\r\nhello\r\n"
                      "1;ext=1\r\n \r\n"
                      "a\r\n0123456789\r\n"
                      "0\r\n\r\n";
    for (size_t chunk = 0; chunk <= 7; chunk += 7) {
        hub_http_t *h = hub_http_new(&big_lim);
        int status;
        size_t fed;
        int rc = feed_chunks(h, req, strlen(req), chunk, &fed, &status);
        const hub_http_req_t *r = hub_http_request(h);
        int ok = rc == HUB_HTTP_DONE && r->body_len == 16 && r->body != NULL &&
                 memcmp(r->body, "hello 0123456789", 16) == 0;
        hub_http_free(h);
        if (!ok)
            FAILF("chunk size %zu: rc %d", chunk, rc);
    }
}

/* A body-carrying request followed by another: the body is not reused. */
TEST(body_then_pipelined_get)
{
    const char *a = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz";
    const char *b = "GET /n HTTP/1.1\r\nHost: a\r\n\r\n";
    char buf[256];
    snprintf(buf, sizeof(buf), "%s%s", a, b);
    hub_http_t *h = hub_http_new(&big_lim);
    size_t consumed;
    int status;
    const char *reason;
    int rc1 = hub_http_feed(h, buf, strlen(buf), &consumed, &status, &reason);
    int ok1 = rc1 == HUB_HTTP_DONE && consumed == strlen(a) &&
              hub_http_request(h)->body_len == 3;
    size_t c1 = consumed;
    hub_http_reset(h);
    int rc2 = hub_http_feed(h, buf + c1, strlen(buf) - c1, &consumed, &status, &reason);
    const hub_http_req_t *r = hub_http_request(h);
    int ok2 = rc2 == HUB_HTTP_DONE && r->body == NULL && r->body_len == 0 &&
              span_is(r, r->path, "/n");
    hub_http_free(h);
    ASSERT(ok1);
    ASSERT(ok2);
}

/* ---- limits ---- */

static const size_t chunk_sizes[] = { 0, 1, 7, 64 };

TEST(limit_long_url)
{
    char req[1024];
    memcpy(req, "GET /", 5);
    memset(req + 5, 'a', 400);
    strcpy(req + 405, " HTTP/1.1\r\nHost: a\r\n\r\n");
    for (size_t i = 0; i < HUB_ARRAY_LEN(chunk_sizes); i++) {
        int st = reject_status(&small_lim, req, strlen(req), chunk_sizes[i]);
        if (st != 414)
            FAILF("chunk %zu: status %d, want 414", chunk_sizes[i], st);
    }
}

TEST(limit_url_just_fits)
{
    /* a request line of well under 256 bytes is fine */
    char req[512];
    memcpy(req, "GET /", 5);
    memset(req + 5, 'a', 200);
    strcpy(req + 205, " HTTP/1.1\r\nHost: a\r\n\r\n");
    hub_http_t *h = hub_http_new(&small_lim);
    int status;
    int rc = parse_all(h, req, &status);
    hub_http_free(h);
    ASSERT_EQ(rc, HUB_HTTP_DONE);
}

TEST(limit_huge_header_value)
{
    char req[4096];
    int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
    memset(req + n, 'v', 2000);
    strcpy(req + n + 2000, "\r\n\r\n");
    for (size_t i = 0; i < HUB_ARRAY_LEN(chunk_sizes); i++) {
        int st = reject_status(&small_lim, req, strlen(req), chunk_sizes[i]);
        if (st != 431)
            FAILF("chunk %zu: status %d, want 431", chunk_sizes[i], st);
    }
}

TEST(limit_huge_header_name)
{
    char req[4096];
    int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\nX-");
    memset(req + n, 'n', 2000);
    strcpy(req + n + 2000, ": v\r\n\r\n");
    for (size_t i = 0; i < HUB_ARRAY_LEN(chunk_sizes); i++) {
        int st = reject_status(&small_lim, req, strlen(req), chunk_sizes[i]);
        if (st != 431)
            FAILF("chunk %zu: status %d, want 431", chunk_sizes[i], st);
    }
}

TEST(limit_too_many_headers)
{
    char req[4096];
    int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 150; i++)
        n += snprintf(req + n, sizeof(req) - (size_t)n, "X: 1\r\n");
    n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
    /* 150 * 6 bytes stays under max_header_bytes: the count limit answers */
    ASSERT(150 * 6 < 1024);
    for (size_t i = 0; i < HUB_ARRAY_LEN(chunk_sizes); i++) {
        int st = reject_status(&small_lim, req, (size_t)n, chunk_sizes[i]);
        if (st != 431)
            FAILF("chunk %zu: status %d, want 431", chunk_sizes[i], st);
    }
}

TEST(limit_exactly_max_headers_ok)
{
    char req[4096];
    int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\n");
    for (int i = 0; i < HUB_HTTP_MAX_HEADERS; i++)
        n += snprintf(req + n, sizeof(req) - (size_t)n, "X: 1\r\n");
    n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
    hub_http_t *h = hub_http_new(&small_lim);
    int status;
    int rc = parse_all(h, req, &status);
    size_t nh = hub_http_request(h)->nheaders;
    hub_http_free(h);
    ASSERT_EQ(rc, HUB_HTTP_DONE);
    ASSERT_EQ(nh, HUB_HTTP_MAX_HEADERS);
}

TEST(limit_content_length_too_big)
{
    const char *req = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n";
    for (size_t i = 0; i < HUB_ARRAY_LEN(chunk_sizes); i++) {
        int st = reject_status(&small_lim, req, strlen(req), chunk_sizes[i]);
        if (st != 413)
            FAILF("chunk %zu: status %d, want 413", chunk_sizes[i], st);
    }
}

TEST(limit_content_length_at_max_ok)
{
    char req[512];
    int n = snprintf(req, sizeof(req), "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n");
    memset(req + n, 'b', 100);
    hub_http_t *h = hub_http_new(&small_lim);
    int status;
    size_t fed;
    int rc = feed_chunks(h, req, (size_t)n + 100, 0, &fed, &status);
    size_t bl = hub_http_request(h)->body_len;
    hub_http_free(h);
    ASSERT_EQ(rc, HUB_HTTP_DONE);
    ASSERT_EQ(bl, 100);
}

TEST(limit_chunked_body_too_big)
{
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        n += snprintf(req + n, sizeof(req) - (size_t)n, "28\r\n");
        memset(req + n, 'c', 40);
        n += 40;
        n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
    }
    n += snprintf(req + n, sizeof(req) - (size_t)n, "0\r\n\r\n");
    for (size_t i = 0; i < HUB_ARRAY_LEN(chunk_sizes); i++) {
        int st = reject_status(&small_lim, req, (size_t)n, chunk_sizes[i]);
        if (st != 413)
            FAILF("chunk %zu: status %d, want 413", chunk_sizes[i], st);
    }
}

/* Endless input with no end of line/headers: the parser must give up within
 * its limits instead of buffering without bound. */
TEST(limit_no_unbounded_buffering)
{
    static char junk[100000];
    const size_t cap = 256 + 1024 + 100 + 64;
    /* an endless URL */
    memcpy(junk, "GET /", 5);
    memset(junk + 5, 'u', sizeof(junk) - 5);
    for (size_t c = 1; c <= 64; c *= 4) {
        hub_http_t *h = hub_http_new(&small_lim);
        int status;
        size_t fed = 0;
        int rc = feed_chunks(h, junk, sizeof(junk), c, &fed, &status);
        hub_http_free(h);
        if (rc >= 0 || status != 414 || fed > cap)
            FAILF("url chunk %zu: rc %d status %d after %zu bytes", c, rc, status, fed);
    }
    /* an endless header value */
    int n = snprintf(junk, sizeof(junk), "GET / HTTP/1.1\r\nX: ");
    memset(junk + n, 'h', sizeof(junk) - (size_t)n);
    for (size_t c = 1; c <= 64; c *= 4) {
        hub_http_t *h = hub_http_new(&small_lim);
        int status;
        size_t fed = 0;
        int rc = feed_chunks(h, junk, sizeof(junk), c, &fed, &status);
        hub_http_free(h);
        if (rc >= 0 || status != 431 || fed > cap)
            FAILF("header chunk %zu: rc %d status %d after %zu bytes", c, rc, status, fed);
    }
    /* endless whitespace in the request line, where no callback runs */
    memset(junk, ' ', sizeof(junk));
    memcpy(junk, "GET /", 5);
    {
        hub_http_t *h = hub_http_new(&small_lim);
        int status;
        size_t fed = 0;
        int rc = feed_chunks(h, junk, sizeof(junk), 16, &fed, &status);
        hub_http_free(h);
        if (rc >= 0 || fed > cap)
            FAILF("spaces: rc %d status %d after %zu bytes", rc, status, fed);
    }
}

/* ---- malformed input ---- */

/* Feeds a malformed request whole and byte by byte; returns the first
 * chunking (0 = whole, 1 = bytewise) that is not rejected with 400, or -1. */
static int malformed_check(const char *req, size_t len, int *rc_out, int *status_out)
{
    for (size_t c = 0; c <= 1; c++) {
        hub_http_t *h = hub_http_new(&big_lim);
        int status = 0;
        size_t fed = 0;
        int rc = feed_chunks(h, req, len, c, &fed, &status);
        hub_http_free(h);
        if (rc >= 0 || status != 400) {
            *rc_out = rc;
            *status_out = status;
            return (int)c;
        }
    }
    return -1;
}

#define MALFORMED(name, lit)                                                   \
    TEST(name)                                                                 \
    {                                                                          \
        int rc_ = 0, st_ = 0;                                                  \
        int c_ = malformed_check(lit, sizeof(lit) - 1, &rc_, &st_);            \
        if (c_ >= 0)                                                           \
            FAILF("not rejected with 400 (chunk %d): rc %d status %d", c_,     \
                  rc_, st_);                                                   \
    }

MALFORMED(malformed_cl_and_te, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
MALFORMED(malformed_two_content_lengths, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                                         "Content-Length: 2\r\n\r\nab")
MALFORMED(malformed_nul_in_value, "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n")
MALFORMED(malformed_cr_in_value, "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n")
/* obs-fold: a header line starting with a blank continues the previous one */
MALFORMED(malformed_obs_fold, "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n")
MALFORMED(malformed_first_header_leading_space, "GET / HTTP/1.1\r\n Host: a\r\n\r\n")
MALFORMED(malformed_bare_lf, "GET / HTTP/1.1\nHost: a\n\n")
MALFORMED(malformed_bare_lf_in_headers, "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n")
MALFORMED(malformed_space_before_colon, "GET / HTTP/1.1\r\nHost : a\r\n\r\n")
MALFORMED(malformed_space_before_colon_cl, "POST / HTTP/1.1\r\nHost: a\r\n"
                                           "Content-Length : 5\r\n\r\nabcde")
MALFORMED(malformed_tls_garbage, "\x16\x03\x01\x02\x00")
MALFORMED(malformed_bad_version, "GET / HTTP/9.9\r\nHost: a\r\n\r\n")
MALFORMED(malformed_bad_chunk_size, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked"
                                    "\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
MALFORMED(malformed_bad_content_length, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x"
                                        "\r\n\r\nab")

/* After an error, the reason is a non-empty static text. */
TEST(error_reports_reason)
{
    hub_http_t *h = hub_http_new(&big_lim);
    size_t consumed = 7;
    int status = 0;
    const char *reason = NULL;
    int rc = hub_http_feed(h, "\x16\x03\x01\x02\x00", 5, &consumed, &status, &reason);
    hub_http_free(h);
    ASSERT(rc < 0);
    ASSERT_EQ(status, 400);
    ASSERT(reason != NULL && reason[0] != '\0');
}

/* ---- tokens and spans ---- */

/* Wraps text as the buffer of a request; the span covers all of it. */
static int has_token(const char *text, const char *token)
{
    static hub_http_req_t r;
    memset(&r, 0, sizeof(r));
    r.buf = text;
    hub_span_t sp = { 0, (uint32_t)strlen(text) };
    return hub_http_has_token(&r, sp, token);
}

TEST(has_token_cases)
{
    ASSERT_EQ(has_token("upgrade", "upgrade"), 1);
    ASSERT_EQ(has_token("Upgrade", "upgrade"), 1);
    ASSERT_EQ(has_token("keep-alive, Upgrade", "UPGRADE"), 1);
    ASSERT_EQ(has_token("keep-alive, Upgrade", "keep-alive"), 1);
    ASSERT_EQ(has_token("  upgrade  ", "upgrade"), 1);
    ASSERT_EQ(has_token("\tupgrade\t", "upgrade"), 1);
    ASSERT_EQ(has_token("a ,\t upgrade \t, b", "upgrade"), 1);
    ASSERT_EQ(has_token(",,upgrade,,", "upgrade"), 1);
    ASSERT_EQ(has_token(", , upgrade", "upgrade"), 1);
    ASSERT_EQ(has_token("foo,upgrade", "upgrade"), 1);
    ASSERT_EQ(has_token("upgrade2", "upgrade"), 0);
    ASSERT_EQ(has_token("xupgrade", "upgrade"), 0);
    ASSERT_EQ(has_token("upgrade2, keep-alive", "upgrade"), 0);
    ASSERT_EQ(has_token("up grade", "upgrade"), 0);
    ASSERT_EQ(has_token("upgrad", "upgrade"), 0);
    ASSERT_EQ(has_token("upgrade", "upgrade2"), 0);
    ASSERT_EQ(has_token("", "upgrade"), 0);
    ASSERT_EQ(has_token(" , ,", "upgrade"), 0);
    ASSERT_EQ(has_token("websocket/13", "websocket"), 0);
}

TEST(has_token_absent_span_and_subspan)
{
    static hub_http_req_t r;
    memset(&r, 0, sizeof(r));
    const char *text = "upgrade2";
    r.buf = text;
    hub_span_t absent = { UINT32_MAX, 0 };
    ASSERT_EQ(hub_http_has_token(&r, absent, "upgrade"), 0);
    /* the span ends before the '2': the token is read only inside it */
    hub_span_t sub = { 0, 7 };
    ASSERT_EQ(hub_http_has_token(&r, sub, "upgrade"), 1);
    hub_span_t empty = { 0, 0 };
    ASSERT_EQ(hub_http_has_token(&r, empty, "upgrade"), 0);
}

TEST(span_eq)
{
    static hub_http_req_t r;
    memset(&r, 0, sizeof(r));
    r.buf = "13, 8";
    hub_span_t all = { 0, 5 }, first = { 0, 2 }, absent = { UINT32_MAX, 0 };
    ASSERT_EQ(hub_span_eq(&r, all, "13"), 0);
    ASSERT_EQ(hub_span_eq(&r, first, "13"), 1);
    ASSERT_EQ(hub_span_eq(&r, first, "1"), 0);
    ASSERT_EQ(hub_span_eq(&r, absent, ""), 0);
    r.buf = "Abc";
    hub_span_t abc = { 0, 3 };
    ASSERT_EQ(hub_span_eq(&r, abc, "abc"), 0); /* case-sensitive */
}

/* ---- formatting ---- */

/* 1 when the n bytes at p contain s. */
static int contains(const char *p, size_t n, const char *s)
{
    return memmem(p, n, s, strlen(s)) != NULL;
}

TEST(format_full_response)
{
    size_t len = 0;
    char *out = hub_http_format(200, "X-A: 1\r\nX-B: two\r\n", "text/plain", "hello", 5, 1, 0,
                                &len);
    ASSERT(out != NULL);
    const char *sl = "HTTP/1.1 200 OK\r\n";
    int ok = len > 30 && memcmp(out, sl, strlen(sl)) == 0 &&
             contains(out, len, "\r\nContent-Length: 5\r\n") &&
             contains(out, len, "\r\nConnection: keep-alive\r\n") &&
             contains(out, len, "\r\nContent-Type: text/plain\r\n") &&
             contains(out, len, "\r\nX-A: 1\r\n") && contains(out, len, "\r\nX-B: two\r\n") &&
             memcmp(out + len - 9, "\r\n\r\nhello", 9) == 0 &&
             !contains(out, len, "Connection: close");
    /* the head ends at the first blank line, right before the body */
    const char *blank = memmem(out, len, "\r\n\r\n", 4);
    int head_ok = blank != NULL && (size_t)(blank - out) + 4 == len - 5;
    free(out);
    ASSERT(ok);
    ASSERT(head_ok);
}

TEST(format_close_no_body)
{
    size_t len = 0;
    char *out = hub_http_format(404, "", NULL, NULL, 0, 0, 0, &len);
    ASSERT(out != NULL);
    const char *sl = "HTTP/1.1 404 Not Found\r\n";
    int ok = memcmp(out, sl, strlen(sl)) == 0 && contains(out, len, "\r\nContent-Length: 0\r\n") &&
             contains(out, len, "\r\nConnection: close\r\n") &&
             !contains(out, len, "keep-alive") && !contains(out, len, "Content-Type") &&
             memcmp(out + len - 4, "\r\n\r\n", 4) == 0 &&
             memmem(out, len, "\r\n\r\n", 4) == out + len - 4;
    free(out);
    ASSERT(ok);
}

TEST(format_head_only)
{
    size_t len = 0;
    char *out = hub_http_format(200, NULL, "application/json", "{\"a\":1}", 7, 1, 1, &len);
    ASSERT(out != NULL);
    int ok = contains(out, len, "\r\nContent-Length: 7\r\n") &&
             memcmp(out + len - 4, "\r\n\r\n", 4) == 0 && !contains(out, len, "{\"a\":1}") &&
             memmem(out, len, "\r\n\r\n", 4) == out + len - 4;
    free(out);
    ASSERT(ok);
}

TEST(format_status_texts)
{
    static const struct { int st; const char *line; } cases[] = {
        { 101, "HTTP/1.1 101 Switching Protocols\r\n" },
        { 400, "HTTP/1.1 400 Bad Request\r\n" },
        { 413, "HTTP/1.1 413 Content Too Large\r\n" },
        { 414, "HTTP/1.1 414 URI Too Long\r\n" },
        { 426, "HTTP/1.1 426 Upgrade Required\r\n" },
        { 431, "HTTP/1.1 431 Request Header Fields Too Large\r\n" },
        { 503, "HTTP/1.1 503 Service Unavailable\r\n" },
    };
    for (size_t i = 0; i < HUB_ARRAY_LEN(cases); i++) {
        size_t len = 0;
        char *out = hub_http_format(cases[i].st, "", NULL, NULL, 0, 0, 0, &len);
        if (out == NULL)
            FAILF("status %d: NULL", cases[i].st);
        int ok = len > strlen(cases[i].line) &&
                 memcmp(out, cases[i].line, strlen(cases[i].line)) == 0;
        free(out);
        if (!ok)
            FAILF("status %d line", cases[i].st);
    }
    ASSERT_STREQ(hub_http_status_text(200), "OK");
}

TEST(error_body)
{
    char buf[256];
    size_t n = hub_http_error_body(buf, sizeof(buf), "bad_request", "request line too long");
    const char *want = "{\"error\":{\"code\":\"bad_request\",\"message\":\"request line too long\"}}";
    ASSERT_STREQ(buf, want);
    ASSERT_EQ(n, strlen(want));
    /* never a cut JSON document: too small for any body gives "" */
    char small[10];
    n = hub_http_error_body(small, sizeof(small), "bad_request", "x");
    ASSERT_EQ(n, 0);
    ASSERT_STREQ(small, "");
    /* quotes and control bytes in the message are escaped */
    n = hub_http_error_body(buf, sizeof(buf), "reload_failed", "x.lua:1: '\"' expected\n");
    ASSERT_STREQ(buf, "{\"error\":{\"code\":\"reload_failed\",\"message\":"
                      "\"x.lua:1: '\\\"' expected\\u000a\"}}");
    ASSERT_EQ(n, strlen(buf));
    /* a long message is shortened, the document stays whole */
    char msg[400];
    memset(msg, 'm', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = '\0';
    char mid[120];
    n = hub_http_error_body(mid, sizeof(mid), "x", msg);
    ASSERT(n > 40 && n < sizeof(mid));
    ASSERT_EQ(strlen(mid), n);
    ASSERT_MEMEQ(mid + n - 4, "m\"}}", 4);
}

int main(void)
{
    RUN(simple_get);
    RUN(no_query_path);
    RUN(empty_query_after_mark);
    RUN(methods);
    RUN(keep_alive_rules);
    RUN(empty_header_value);
    RUN(duplicate_headers_counted);
    RUN(byte_at_a_time);
    RUN(two_feeds_every_split);
    RUN(pipelined);
    RUN(upgrade_leaves_frame_bytes);
    RUN(upgrade_split_then_frame_bytes);
    RUN(post_content_length_body);
    RUN(post_body_byte_at_a_time);
    RUN(chunked_body);
    RUN(body_then_pipelined_get);
    RUN(limit_long_url);
    RUN(limit_url_just_fits);
    RUN(limit_huge_header_value);
    RUN(limit_huge_header_name);
    RUN(limit_too_many_headers);
    RUN(limit_exactly_max_headers_ok);
    RUN(limit_content_length_too_big);
    RUN(limit_content_length_at_max_ok);
    RUN(limit_chunked_body_too_big);
    RUN(limit_no_unbounded_buffering);
    RUN(malformed_cl_and_te);
    RUN(malformed_two_content_lengths);
    RUN(malformed_nul_in_value);
    RUN(malformed_cr_in_value);
    RUN(malformed_obs_fold);
    RUN(malformed_first_header_leading_space);
    RUN(malformed_bare_lf);
    RUN(malformed_bare_lf_in_headers);
    RUN(malformed_space_before_colon);
    RUN(malformed_space_before_colon_cl);
    RUN(malformed_tls_garbage);
    RUN(malformed_bad_version);
    RUN(malformed_bad_chunk_size);
    RUN(malformed_bad_content_length);
    RUN(error_reports_reason);
    RUN(has_token_cases);
    RUN(has_token_absent_span_and_subspan);
    RUN(span_eq);
    RUN(format_full_response);
    RUN(format_close_no_body);
    RUN(format_head_only);
    RUN(format_status_texts);
    RUN(error_body);
    HARNESS_MAIN_END();
}
