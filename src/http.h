/* http.h: HTTP/1.1 request head parsing (llhttp, strict mode) and response
 * formatting. Owns a per-connection parse state while the connection is in
 * its HTTP phase. No libuv here: pure functions, called by the worker that
 * owns the connection. */
#ifndef HUB_HTTP_H
#define HUB_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define HUB_HTTP_MAX_HEADERS 100

typedef struct {
    uint32_t off, len; /* into hub_http_req_t.buf */
} hub_span_t;

typedef struct {
    hub_span_t name, value;
} hub_http_header_t;

enum { HUB_HTTP_GET = 1, HUB_HTTP_HEAD, HUB_HTTP_POST, HUB_HTTP_PUT, HUB_HTTP_DELETE,
       HUB_HTTP_OTHER };

/* A parsed request. Spans point into buf, valid until the next
 * hub_http_feed() or hub_http_reset() on the same parser. */
typedef struct {
    const char *buf;
    int method;              /* HUB_HTTP_* */
    const char *method_name; /* "GET", ... */
    int http_major, http_minor;
    hub_span_t url, path, query;
    size_t nheaders;
    hub_http_header_t headers[HUB_HTTP_MAX_HEADERS];
    int keep_alive;          /* the client wants the connection kept open */
    int upgrade;             /* llhttp saw Connection: upgrade + Upgrade */
    const char *body;        /* NULL when empty */
    size_t body_len;
} hub_http_req_t;

typedef struct {
    uint32_t max_request_line;
    uint32_t max_header_bytes;
    uint32_t max_body_bytes;
} hub_http_limits_t;

typedef struct hub_http_s hub_http_t;

/* Allocates a parser with the given limits (copied). NULL on ENOMEM. */
hub_http_t *hub_http_new(const hub_http_limits_t *lim);
void hub_http_free(hub_http_t *h);

/* Prepares h for the next request on a keep-alive connection. */
void hub_http_reset(hub_http_t *h);

/* Returns 1 once any byte of the current request has arrived. */
int hub_http_started(const hub_http_t *h);

enum { HUB_HTTP_NEED_MORE = 0, HUB_HTTP_DONE = 1 };

/* Feeds len bytes. Returns HUB_HTTP_NEED_MORE when every byte was taken and
 * the request is still incomplete; HUB_HTTP_DONE when a whole request is
 * ready (see hub_http_request), with *consumed = bytes of data that belong
 * to it (the rest belongs to the next request or, after an upgrade, to the
 * WebSocket); or a negative HUB_E* with *status set to the HTTP status to
 * answer (400, 413, 414, 431) and *reason to a static text. */
int hub_http_feed(hub_http_t *h, const char *data, size_t len, size_t *consumed, int *status,
                  const char **reason);

/* The request completed by the last HUB_HTTP_DONE. */
const hub_http_req_t *hub_http_request(const hub_http_t *h);

/* Finds header name (case-insensitive). Returns the first value span, or a
 * span with len 0 and off UINT32_MAX when absent; *count gets the number of
 * occurrences when count != NULL. */
hub_span_t hub_http_header(const hub_http_req_t *r, const char *name, int *count);

/* 1 if the span exists (off != UINT32_MAX). */
static inline int hub_span_present(hub_span_t s)
{
    return s.off != UINT32_MAX;
}

/* 1 when the comma-separated list in span has token (case-insensitive,
 * surrounding blanks ignored). */
int hub_http_has_token(const hub_http_req_t *r, hub_span_t list, const char *token);

/* 1 when span equals s exactly (case-sensitive). */
int hub_span_eq(const hub_http_req_t *r, hub_span_t span, const char *s);

/* Formats a complete response. extra_headers is "" or lines each ending in
 * "\r\n". body may be NULL when body_len is 0; head_only omits the body but
 * keeps Content-Length (HEAD). Returns a malloc'd buffer (caller frees) and
 * its length in *outlen, or NULL on ENOMEM. */
char *hub_http_format(int status, const char *extra_headers, const char *content_type,
                      const char *body, size_t body_len, int keep_alive, int head_only,
                      size_t *outlen);

/* The reason phrase for status ("OK", "Not Found", ...). */
const char *hub_http_status_text(int status);

/* Formats the JSON error body {"error":{"code":"<word>","message":"<text>"}}
 * into buf with the message escaped; a message too long for buf is
 * shortened, never the document. Returns the length (0 and "" when even an
 * empty message does not fit). */
size_t hub_http_error_body(char *buf, size_t buflen, const char *code, const char *message);

#endif
