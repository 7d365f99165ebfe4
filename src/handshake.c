/* handshake.c: RFC 6455 §4.2.1 checks, in the order a client most needs to
 * hear about them, and the Sec-WebSocket-Accept computation. Pure. */
#include "handshake.h"

#include <stdio.h>
#include <string.h>

#include "base64.h"
#include "sha1.h"

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

void hub_handshake_accept(const char *key, size_t keylen, char accept[HUB_WS_ACCEPT_LEN + 1])
{
    hub_sha1_t s;
    uint8_t digest[20];
    hub_sha1_init(&s);
    hub_sha1_update(&s, key, keylen);
    hub_sha1_update(&s, ws_guid, sizeof(ws_guid) - 1);
    hub_sha1_final(&s, digest);
    hub_base64_encode(digest, sizeof(digest), accept);
}

static int origin_allowed(const hub_http_req_t *r, hub_span_t origin, const hub_strlist_t *list)
{
    for (size_t i = 0; i < list->n; i++)
        if (hub_span_eq(r, origin, list->items[i]))
            return 1;
    return 0;
}

int hub_handshake_check(const hub_http_req_t *r, const hub_strlist_t *origins,
                        char accept[HUB_WS_ACCEPT_LEN + 1], const char **reason)
{
    int n;
    if (r->method != HUB_HTTP_GET) {
        *reason = "WebSocket upgrade needs GET";
        return 405;
    }
    if (r->http_major < 1 || (r->http_major == 1 && r->http_minor < 1)) {
        *reason = "WebSocket upgrade needs HTTP/1.1";
        return 400;
    }
    hub_http_header(r, "Host", &n);
    if (n != 1) {
        *reason = "exactly one Host header is required";
        return 400;
    }
    hub_http_header(r, "Content-Length", &n);
    int te;
    hub_http_header(r, "Transfer-Encoding", &te);
    if (n || te || r->body_len) {
        *reason = "an upgrade request has no body";
        return 400;
    }
    if (!hub_http_has_token(r, hub_http_header(r, "Upgrade", NULL), "websocket")) {
        *reason = "missing Upgrade: websocket";
        return 400;
    }
    if (!hub_http_has_token(r, hub_http_header(r, "Connection", NULL), "upgrade")) {
        *reason = "missing Connection: Upgrade";
        return 400;
    }
    hub_span_t ver = hub_http_header(r, "Sec-WebSocket-Version", &n);
    if (n != 1 || !hub_span_eq(r, ver, "13")) {
        *reason = "unsupported WebSocket version (13 only)";
        return 426;
    }
    hub_span_t key = hub_http_header(r, "Sec-WebSocket-Key", &n);
    uint8_t raw[18];
    if (n != 1 || key.len != 24 ||
        hub_base64_decode(r->buf + key.off, key.len, raw, sizeof(raw)) != 16) {
        *reason = "Sec-WebSocket-Key must be base64 of 16 bytes, sent once";
        return 400;
    }
    hub_span_t origin = hub_http_header(r, "Origin", &n);
    if (origins->n > 0 && n > 0 && (n > 1 || !origin_allowed(r, origin, origins))) {
        *reason = "origin not allowed";
        return 403;
    }
    hub_handshake_accept(r->buf + key.off, key.len, accept);
    return 101;
}

size_t hub_handshake_response(const char accept[HUB_WS_ACCEPT_LEN + 1], char *out, size_t cap)
{
    int n = snprintf(out, cap,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    return n < 0 ? 0 : (size_t)n;
}
