/* http.c: HTTP/1.1 request parsing on llhttp in strict mode (no lenient
 * flags), with hard caps on the request line, the header block and the body,
 * and response formatting. Called only by the worker owning the connection. */
#include "http.h"

#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "msg.h"

struct hub_http_s {
    llhttp_t parser;
    hub_http_limits_t lim;
    char *buf;            /* raw bytes of the current request */
    size_t len, cap;
    char *body;           /* decoded body bytes */
    size_t body_len, body_cap;
    uint32_t url_len;
    int line_done;        /* request line parsed */
    uint32_t line_end;    /* offset where the header block starts */
    int headers_done;
    int done;
    int last_was_value;   /* last header callback was a value */
    int err_status;
    const char *err_reason;
    hub_http_req_t req;
};

static llhttp_settings_t g_settings;
static int g_settings_ready;

static hub_http_t *of(llhttp_t *p)
{
    return p->data;
}

static uint32_t off_of(hub_http_t *h, const char *at)
{
    return (uint32_t)(at - h->buf);
}

static int fail(hub_http_t *h, int status, const char *reason)
{
    h->err_status = status;
    h->err_reason = reason;
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    hub_http_t *h = of(p);
    memset(&h->req, 0, sizeof(h->req));
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    hub_http_t *h = of(p);
    if (h->url_len == 0)
        h->req.url.off = off_of(h, at);
    h->url_len += (uint32_t)n;
    h->req.url.len = h->url_len;
    if (h->url_len + 16 > h->lim.max_request_line)
        return fail(h, 414, "request line too long");
    return 0;
}

static int on_url_complete(llhttp_t *p)
{
    hub_http_t *h = of(p);
    h->line_done = 1;
    h->line_end = h->req.url.off + h->req.url.len;
    return 0;
}

/* Checks the header-block cap against the furthest byte seen so far. */
static int check_header_bytes(hub_http_t *h, const char *at, size_t n)
{
    if (off_of(h, at) + n - h->line_end > h->lim.max_header_bytes)
        return fail(h, 431, "request header fields too large");
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    hub_http_t *h = of(p);
    hub_http_req_t *r = &h->req;
    if (check_header_bytes(h, at, n))
        return HPE_USER;
    /* RFC 9112 §5.1: no whitespace between the field name and the colon
     * (llhttp only rejects it for a few names) */
    if (memchr(at, ' ', n) != NULL || memchr(at, '\t', n) != NULL)
        return fail(h, 400, "whitespace in a header field name");
    if (r->nheaders > 0 && !h->last_was_value) { /* continuation of a split name */
        r->headers[r->nheaders - 1].name.len += (uint32_t)n;
        return 0;
    }
    if (r->nheaders == HUB_HTTP_MAX_HEADERS)
        return fail(h, 431, "too many header fields");
    hub_http_header_t *hd = &r->headers[r->nheaders++];
    hd->name.off = off_of(h, at);
    hd->name.len = (uint32_t)n;
    hd->value.off = off_of(h, at + n);
    hd->value.len = 0;
    h->last_was_value = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    hub_http_t *h = of(p);
    hub_http_req_t *r = &h->req;
    if (check_header_bytes(h, at, n))
        return HPE_USER;
    hub_http_header_t *hd = &r->headers[r->nheaders - 1];
    if (!h->last_was_value) {
        hd->value.off = off_of(h, at);
    } else if (off_of(h, at) != hd->value.off + hd->value.len) {
        /* a second, non-adjacent piece of one value is an obs-fold
         * continuation line, which llhttp 8.1 lets through even in strict
         * mode; RFC 9112 §5.2 allows rejecting it, and we do */
        return fail(h, 400, "obsolete line folding");
    }
    hd->value.len += (uint32_t)n;
    h->last_was_value = 1;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    hub_http_t *h = of(p);
    h->headers_done = 1;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > h->lim.max_body_bytes)
        return fail(h, 413, "request body too large");
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    hub_http_t *h = of(p);
    if (h->body_len + n > h->lim.max_body_bytes)
        return fail(h, 413, "request body too large");
    if (h->body_len + n > h->body_cap) {
        size_t cap = h->body_cap ? h->body_cap * 2 : 1024;
        while (cap < h->body_len + n)
            cap *= 2;
        char *nb = realloc(h->body, cap);
        if (nb == NULL)
            return fail(h, 500, "out of memory");
        h->body = nb;
        h->body_cap = cap;
    }
    memcpy(h->body + h->body_len, at, n);
    h->body_len += n;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    of(p)->done = 1;
    return HPE_PAUSED; /* stop here: one request at a time */
}

static void settings_init(void)
{
    if (g_settings_ready)
        return;
    llhttp_settings_init(&g_settings);
    g_settings.on_message_begin = on_message_begin;
    g_settings.on_url = on_url;
    g_settings.on_url_complete = on_url_complete;
    g_settings.on_header_field = on_header_field;
    g_settings.on_header_value = on_header_value;
    g_settings.on_headers_complete = on_headers_complete;
    g_settings.on_body = on_body;
    g_settings.on_message_complete = on_message_complete;
    g_settings_ready = 1;
}

hub_http_t *hub_http_new(const hub_http_limits_t *lim)
{
    settings_init();
    hub_http_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->lim = *lim;
    hub_http_reset(h);
    return h;
}

void hub_http_free(hub_http_t *h)
{
    if (h == NULL)
        return;
    free(h->buf);
    free(h->body);
    free(h);
}

void hub_http_reset(hub_http_t *h)
{
    llhttp_init(&h->parser, HTTP_REQUEST, &g_settings);
    h->parser.data = h;
    h->len = 0;
    h->body_len = 0;
    h->url_len = 0;
    h->line_done = 0;
    h->line_end = 0;
    h->headers_done = 0;
    h->done = 0;
    h->last_was_value = 0;
    h->err_status = 0;
    h->err_reason = NULL;
    memset(&h->req, 0, sizeof(h->req));
    /* a big buffer from an earlier request is not kept around */
    if (h->cap > 4096) {
        free(h->buf);
        h->buf = NULL;
        h->cap = 0;
    }
    if (h->body_cap > 4096) {
        free(h->body);
        h->body = NULL;
        h->body_cap = 0;
    }
}

int hub_http_started(const hub_http_t *h)
{
    return h->len > 0;
}

static int method_of(uint8_t m)
{
    switch (m) {
    case HTTP_GET:    return HUB_HTTP_GET;
    case HTTP_HEAD:   return HUB_HTTP_HEAD;
    case HTTP_POST:   return HUB_HTTP_POST;
    case HTTP_PUT:    return HUB_HTTP_PUT;
    case HTTP_DELETE: return HUB_HTTP_DELETE;
    default:          return HUB_HTTP_OTHER;
    }
}

/* Fills the request view once the parser paused at the end of a message. */
static void finish_request(hub_http_t *h)
{
    hub_http_req_t *r = &h->req;
    r->buf = h->buf;
    r->method = method_of(h->parser.method);
    r->method_name = llhttp_method_name((llhttp_method_t)h->parser.method);
    r->http_major = h->parser.http_major;
    r->http_minor = h->parser.http_minor;
    r->keep_alive = llhttp_should_keep_alive(&h->parser);
    r->upgrade = h->parser.upgrade;
    r->body = h->body_len ? h->body : NULL;
    r->body_len = h->body_len;
    r->path = r->url;
    r->query.off = r->url.off + r->url.len;
    r->query.len = 0;
    const char *q = memchr(h->buf + r->url.off, '?', r->url.len);
    if (q != NULL) {
        r->path.len = (uint32_t)(q - (h->buf + r->url.off));
        r->query.off = r->path.off + r->path.len + 1;
        r->query.len = r->url.len - r->path.len - 1;
    }
}

/* The status for a request that outgrew the buffer, by how far it got. */
static int overflow(hub_http_t *h, int *status, const char **reason)
{
    if (!h->line_done) {
        *status = 414;
        *reason = "request line too long";
    } else if (!h->headers_done) {
        *status = 431;
        *reason = "request header fields too large";
    } else {
        *status = 413;
        *reason = "request body too large";
    }
    return HUB_EPROTO;
}

int hub_http_feed(hub_http_t *h, const char *data, size_t len, size_t *consumed, int *status,
                  const char **reason)
{
    size_t limit = (size_t)h->lim.max_request_line + h->lim.max_header_bytes +
                   h->lim.max_body_bytes + 64;
    size_t take = len;
    *consumed = 0;
    if (h->len + take > limit)
        take = limit - h->len;
    if (h->len + take > h->cap) {
        size_t cap = h->cap ? h->cap : 1024;
        while (cap < h->len + take)
            cap *= 2;
        char *nb = realloc(h->buf, cap);
        if (nb == NULL) {
            *status = 500;
            *reason = "out of memory";
            return HUB_ENOMEM;
        }
        h->buf = nb;
        h->cap = cap;
    }
    memcpy(h->buf + h->len, data, take);
    const char *start = h->buf + h->len;
    h->len += take;

    llhttp_errno_t e = llhttp_execute(&h->parser, start, take);
    if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
        if (!h->done) { /* PAUSED_UPGRADE before message end cannot happen for requests */
            *status = 400;
            *reason = "bad request";
            return HUB_EPROTO;
        }
        *consumed = (size_t)(llhttp_get_error_pos(&h->parser) - start);
        finish_request(h);
        return HUB_HTTP_DONE;
    }
    if (h->err_status != 0) {
        /* one of our callbacks failed; llhttp may report it under its own
         * code (e.g. HPE_CB_HEADERS_COMPLETE), so trust our status */
        *status = h->err_status;
        *reason = h->err_reason;
        return HUB_EPROTO;
    }
    if (e != HPE_OK) {
        *status = 400;
        *reason = "bad request";
        return HUB_EPROTO;
    }
    /* incomplete: enforce the caps on what is still open */
    if (!h->line_done && h->len > h->lim.max_request_line)
        return overflow(h, status, reason);
    if (h->line_done && !h->headers_done && h->len - h->line_end > h->lim.max_header_bytes)
        return overflow(h, status, reason);
    if (take < len)
        return overflow(h, status, reason);
    *consumed = len;
    return HUB_HTTP_NEED_MORE;
}

const hub_http_req_t *hub_http_request(const hub_http_t *h)
{
    return &h->req;
}

hub_span_t hub_http_header(const hub_http_req_t *r, const char *name, int *count)
{
    hub_span_t found = { UINT32_MAX, 0 };
    size_t nlen = strlen(name);
    int n = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        const hub_http_header_t *hd = &r->headers[i];
        if (hd->name.len == nlen && strncasecmp(r->buf + hd->name.off, name, nlen) == 0) {
            if (n++ == 0)
                found = hd->value;
        }
    }
    if (count)
        *count = n;
    return found;
}

int hub_http_has_token(const hub_http_req_t *r, hub_span_t list, const char *token)
{
    if (!hub_span_present(list))
        return 0;
    size_t tlen = strlen(token);
    const char *p = r->buf + list.off, *end = p + list.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *s = p;
        while (p < end && *p != ',')
            p++;
        const char *e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - s) == tlen && strncasecmp(s, token, tlen) == 0)
            return 1;
    }
    return 0;
}

int hub_span_eq(const hub_http_req_t *r, hub_span_t span, const char *s)
{
    size_t n = strlen(s);
    return hub_span_present(span) && span.len == n && memcmp(r->buf + span.off, s, n) == 0;
}

const char *hub_http_status_text(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default:  return "Unknown";
    }
}

char *hub_http_format(int status, const char *extra_headers, const char *content_type,
                      const char *body, size_t body_len, int keep_alive, int head_only,
                      size_t *outlen)
{
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\n"
                     "Server: gohub/" GOHUB_VERSION "\r\n"
                     "%s%s%s"
                     "Content-Length: %zu\r\n"
                     "Connection: %s\r\n"
                     "%s\r\n",
                     status, hub_http_status_text(status),
                     content_type ? "Content-Type: " : "", content_type ? content_type : "",
                     content_type ? "\r\n" : "", body_len, keep_alive ? "keep-alive" : "close",
                     extra_headers ? extra_headers : "");
    if (n < 0 || (size_t)n >= sizeof(head))
        return NULL;
    size_t blen = head_only ? 0 : body_len;
    char *out = malloc((size_t)n + blen);
    if (out == NULL)
        return NULL;
    memcpy(out, head, (size_t)n);
    if (blen)
        memcpy(out + n, body, blen);
    *outlen = (size_t)n + blen;
    return out;
}

size_t hub_http_error_body(char *buf, size_t buflen, const char *code, const char *message)
{
    /* message may come from user code (a Lua load error): escape it, and
     * cut it rather than the JSON when it is too long */
    size_t mlen = strlen(message);
    for (;;) {
        size_t n = (size_t)snprintf(buf, buflen, "{\"error\":{\"code\":\"%s\",\"message\":", code);
        if (n < buflen) {
            n = hub_json_quote(buf, n, buflen - 3, message, mlen);
            if (n != (size_t)-1) {
                memcpy(buf + n, "}}", 3);
                return n + 2;
            }
        }
        if (mlen == 0) {
            buf[0] = '\0';
            return 0;
        }
        mlen = mlen > 16 ? mlen - 16 : 0;
    }
}
