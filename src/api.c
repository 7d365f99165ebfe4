/* api.c: the HTTP admin API. A request goes: CORS headers for its Origin →
 * path parsed into an endpoint and an id (percent-decoded) → OPTIONS
 * answered as a preflight → access check → method check (405 + Allow) →
 * the endpoint, which reads the registry and delivers through fanout.c.
 *
 * Deliveries go through fanout.c, which also publishes them on the cluster
 * bus. /api/stats lists the live nodes (with their heartbeat client
 * counts), rooms come from the cluster's membership directory, and
 * /api/clients and DELETE /api/rooms/{id} ask every node (cluster_ops.c).
 * Worker thread (the connection's owner). */
#include "api.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cluster.h"
#include "cluster_ops.h"
#include "config.h"
#include "conn.h"
#include "fanout.h"
#include "jsonscan.h"
#include "log.h"
#include "msg.h"
#include "pct.h"
#include "registry.h"
#include "routes.h"
#include "server.h"
#include "utf8.h"
#include "worker.h"

#define API_MAX_TYPE 128          /* longest message_type we send */
#define API_PAGE_DEFAULT 100      /* GET /api/clients without ?limit= */
#define API_PAGE_MAX 1000         /* larger ?limit= values are cut to this */
#define API_MAX_ORIGIN 256        /* longer Origin values are never echoed */

/* ---- access ------------------------------------------------------------ */

/* Constant-time comparison of p[0..n) with key: the time depends on the
 * lengths only, not on where the first difference is. */
static int key_matches(const char *p, size_t n, const char *key)
{
    size_t kl = strlen(key);
    unsigned diff = n != kl;
    for (size_t i = 0; i < n && i < kl; i++)
        diff |= (unsigned)(p[i] ^ key[i]);
    return diff == 0;
}

int hub_api_access(const char *key, const char *authorization, size_t alen,
                   const char *x_api_key, size_t xlen, int peer_is_loopback)
{
    if (key == NULL || key[0] == '\0')
        return peer_is_loopback ? 0 : 403;
    if (authorization && alen > 7 && strncasecmp(authorization, "Bearer ", 7) == 0 &&
        key_matches(authorization + 7, alen - 7, key))
        return 0;
    if (x_api_key && key_matches(x_api_key, xlen, key))
        return 0;
    return 401;
}

static int peer_is_loopback(hub_conn_t *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        /* ::1, or an IPv4 loopback peer on a dual-stack socket */
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}

/* An error answer; for HEAD without its body (a body after a HEAD answer
 * would be read as the start of the next response). */
static void send_error(hub_conn_t *c, const hub_http_req_t *r, int status, const char *code,
                       const char *message, const char *extra, int keep_alive)
{
    char body[256];
    size_t n = hub_http_error_body(body, sizeof(body), code, message);
    hub_routes_respond(c, status, extra, "application/json", body, n, keep_alive,
                       r->method == HUB_HTTP_HEAD);
}

int hub_api_allowed(hub_conn_t *c, const hub_http_req_t *r, const char *extra, int keep_alive)
{
    /* a browser names the page's origin: one not in http.cors_origins is
     * refused outright, or any web page could make a browser on this host
     * POST to a loopback-only API (a "simple" request needs no preflight) */
    char cors[API_MAX_ORIGIN + 96];
    if (!hub_api_cors(c, r, cors, sizeof(cors))) {
        send_error(c, r, 403, "forbidden", "origin not allowed by http.cors_origins", extra,
                   keep_alive);
        return 0;
    }
    hub_span_t a = hub_http_header(r, "Authorization", NULL);
    hub_span_t x = hub_http_header(r, "X-API-Key", NULL);
    const char *key = c->w->cfg->http_api_key;
    int status = hub_api_access(key, hub_span_present(a) ? r->buf + a.off : NULL, a.len,
                                hub_span_present(x) ? r->buf + x.off : NULL, x.len,
                                key[0] ? 0 : peer_is_loopback(c));
    if (status == 0)
        return 1;
    char hdr[768];
    if (status == 401) {
        snprintf(hdr, sizeof(hdr), "WWW-Authenticate: Bearer\r\n%s", extra);
        send_error(c, r, 401, "unauthorized", "missing or wrong API key", hdr, keep_alive);
    } else {
        send_error(c, r, 403, "forbidden", "set http.api_key to use the API from other hosts",
                   extra, keep_alive);
    }
    return 0;
}

/* ---- CORS ---------------------------------------------------------------- */

int hub_api_cors(const hub_conn_t *c, const hub_http_req_t *r, char *buf, size_t len)
{
    buf[0] = '\0';
    hub_span_t o = hub_http_header(r, "Origin", NULL);
    if (!hub_span_present(o))
        return 1;
    const hub_strlist_t *allowed = &c->w->cfg->http_cors_origins;
    for (size_t i = 0; i < allowed->n; i++) {
        const char *a = allowed->items[i];
        if (strcmp(a, "*") == 0) {
            /* any origin; "*" rather than an echo keeps the header short
             * whatever the client sent (Authorization still needs listing
             * in Allow-Headers, which the preflight does) */
            snprintf(buf, len, "Access-Control-Allow-Origin: *\r\n");
            return 1;
        }
        if (o.len <= API_MAX_ORIGIN && strlen(a) == o.len &&
            strncasecmp(a, r->buf + o.off, o.len) == 0) {
            snprintf(buf, len, "Access-Control-Allow-Origin: %.*s\r\nVary: Origin\r\n",
                     (int)o.len, r->buf + o.off);
            return 1;
        }
    }
    return 0;
}

/* ---- paths ----------------------------------------------------------------- */

enum {
    EP_BROADCAST,        /* /api/broadcast */
    EP_STATS,            /* /api/stats */
    EP_ROOMS,            /* /api/rooms */
    EP_ROOM,             /* /api/rooms/{id} */
    EP_ROOM_MESSAGES,    /* /api/rooms/{id}/messages */
    EP_CLIENTS,          /* /api/clients */
    EP_CLIENT,           /* /api/clients/{id} */
    EP_CLIENT_MESSAGES,  /* /api/clients/{id}/messages */
};

#define M_GET    0x1 /* and HEAD */
#define M_POST   0x2
#define M_DELETE 0x4

static const struct {
    unsigned methods;
    const char *allow; /* the Allow header's value */
} endpoints[] = {
    [EP_BROADCAST] = { M_POST, "POST, OPTIONS" },
    [EP_STATS] = { M_GET, "GET, HEAD, OPTIONS" },
    [EP_ROOMS] = { M_GET | M_POST, "GET, HEAD, POST, OPTIONS" },
    [EP_ROOM] = { M_GET | M_DELETE, "GET, HEAD, DELETE, OPTIONS" },
    [EP_ROOM_MESSAGES] = { M_POST, "POST, OPTIONS" },
    [EP_CLIENTS] = { M_GET, "GET, HEAD, OPTIONS" },
    [EP_CLIENT] = { M_DELETE, "DELETE, OPTIONS" },
    [EP_CLIENT_MESSAGES] = { M_POST, "POST, OPTIONS" },
};

/* Longest {id} segment kept after decoding: room ids have at most 128
 * bytes and client ids HUB_CLIENT_ID_MAX; anything longer is refused. */
#define API_MAX_ID 256

typedef struct {
    int ep;
    char id[API_MAX_ID + 1]; /* the decoded {id}, NUL-terminated */
    size_t id_len;           /* its length; API_MAX_ID + 1 when longer */
} api_path_t;

/* 1 when the decoded segment s (length n) is exactly name. */
static int seg_is(const char *s, size_t n, const char *name)
{
    return n == strlen(name) && memcmp(s, name, n) == 0;
}

/* Parses the path after "/api/" into out. Returns 0, 404 (no such
 * endpoint) or 400 (bad percent-encoding). */
static int parse_path(const char *p, size_t n, api_path_t *out)
{
    const char *seg[4];
    size_t len[4], k = 0;
    const char *e = p + n;
    while (k < 4) {
        const char *s = memchr(p, '/', (size_t)(e - p));
        seg[k] = p;
        len[k++] = (size_t)((s ? s : e) - p);
        if (s == NULL)
            break;
        p = s + 1;
    }
    if (k > 3)
        return 404;
    char first[16], last[16];
    size_t fl = 0, ll = 0;
    for (size_t i = 0; i < k; i++) {
        /* an empty segment ("/api/rooms/", "/api//rooms") names nothing */
        if (len[i] == 0)
            return 404;
        size_t d = i == 1   ? hub_pct_decode(seg[i], len[i], out->id, sizeof(out->id))
                   : i == 0 ? (fl = hub_pct_decode(seg[i], len[i], first, sizeof(first)))
                            : (ll = hub_pct_decode(seg[i], len[i], last, sizeof(last)));
        if (d == (size_t)-1)
            return 400;
        if (i == 1)
            out->id_len = d > API_MAX_ID ? API_MAX_ID + 1 : d;
    }
    int rooms = seg_is(first, fl, "rooms"), clients = seg_is(first, fl, "clients");
    if (k == 1)
        out->ep = seg_is(first, fl, "broadcast") ? EP_BROADCAST
                  : seg_is(first, fl, "stats")   ? EP_STATS
                  : rooms                        ? EP_ROOMS
                  : clients                      ? EP_CLIENTS
                                                 : -1;
    else if (k == 2)
        out->ep = rooms ? EP_ROOM : clients ? EP_CLIENT : -1;
    else
        out->ep = !seg_is(last, ll, "messages") ? -1
                  : rooms                      ? EP_ROOM_MESSAGES
                  : clients                    ? EP_CLIENT_MESSAGES
                                               : -1;
    return out->ep < 0 ? 404 : 0;
}

/* ---- one request ----------------------------------------------------------- */

typedef struct {
    hub_conn_t *c;
    hub_worker_t *w;
    const hub_http_req_t *r;
    int keep_alive;
    int head_only;           /* HEAD: the GET answer without its body */
    int oom;                 /* building the answer ran out of memory */
    char cors[API_MAX_ORIGIN + 96];
    api_path_t path;
    const char *body;        /* the request body (strict JSON once parsed) */
    size_t body_len;
    int body_has_nul;        /* the body holds a "\u0000" somewhere */
} api_req_t;

static void fail(api_req_t *q, int status, const char *code, const char *message,
                 const char *extra)
{
    char hdr[768];
    snprintf(hdr, sizeof(hdr), "%s%s", q->cors, extra ? extra : "");
    send_error(q->c, q->r, status, code, message, hdr, q->keep_alive);
}

static void respond(api_req_t *q, int status, const char *extra, const char *body, size_t n)
{
    char hdr[1024];
    snprintf(hdr, sizeof(hdr), "%sCache-Control: no-store\r\n%s", q->cors, extra ? extra : "");
    hub_routes_respond(q->c, status, hdr, "application/json", body, n, q->keep_alive,
                       q->head_only);
}

/* Sends doc (takes it) as the answer, or a 500 when it could not be built. */
static void respond_json(api_req_t *q, int status, const char *extra, cJSON *doc)
{
    char *s = doc && !q->oom ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    if (s == NULL) {
        fail(q, 500, "internal", "out of memory", NULL);
        return;
    }
    size_t n = strlen(s);
    if (hub_likely(hub_utf8_valid((const unsigned char *)s, n))) {
        respond(q, status, extra, s, n);
        cJSON_free(s);
        return;
    }
    /* cJSON copies string bytes as they are, and names and user ids that
     * other nodes announced may be any bytes: the answer is UTF-8 JSON all
     * the same (bad bytes can only be inside strings; each becomes U+FFFD) */
    char *clean = malloc(3 * n);
    if (clean == NULL) {
        cJSON_free(s);
        fail(q, 500, "internal", "out of memory", NULL);
        return;
    }
    respond(q, status, extra, clean, hub_utf8_clean(clean, 3 * n, s, n));
    free(clean);
    cJSON_free(s);
}

static void respond_ok(api_req_t *q)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    respond(q, 200, NULL, ok, sizeof(ok) - 1);
}

/* Adds item to parent (an object when key != NULL, else an array) and
 * returns it; on any failure (item or parent NULL: out of memory) records
 * q->oom, frees item and returns NULL. */
static cJSON *put(api_req_t *q, cJSON *parent, const char *key, cJSON *item)
{
    if (item == NULL || parent == NULL ||
        !(key ? cJSON_AddItemToObject(parent, key, item) : cJSON_AddItemToArray(parent, item))) {
        cJSON_Delete(item);
        q->oom = 1;
        return NULL;
    }
    return item;
}

static cJSON *room_json(api_req_t *q, const hub_room_info_t *r, uint32_t member_count)
{
    cJSON *o = cJSON_CreateObject();
    put(q, o, "id", cJSON_CreateString(r->id));
    put(q, o, "name", cJSON_CreateString(r->name));
    put(q, o, "member_count", cJSON_CreateNumber(member_count));
    put(q, o, "max_clients", cJSON_CreateNumber(r->max_clients));
    return o;
}

/* The client id and user id (anonymous: "anon-<client id>") of a
 * connection of this node (uid holds HUB_USER_ID_MAX). */
static void ids_of(api_req_t *q, uint64_t conn_id, const char *user_id, char *cid, char *uid)
{
    hub_client_id_format(q->w->srv, conn_id, cid, HUB_CLIENT_ID_MAX);
    if (user_id)
        snprintf(uid, HUB_USER_ID_MAX, "%s", user_id);
    else
        hub_anon_user_id(q->w->srv, conn_id, uid, HUB_USER_ID_MAX);
}

/* ---- request bodies -------------------------------------------------------- */

/* Parses the body as a JSON object. Returns the tree (the caller deletes
 * it) or NULL after answering 400. Only strict JSON in valid UTF-8 is taken
 * (hub_json_valid): parts of it are passed to WebSocket clients as they
 * are, and cJSON alone would let "01", "1." or raw control bytes through. */
static cJSON *parse_body(api_req_t *q)
{
    q->body = q->r->body;
    q->body_len = q->r->body_len;
    if (q->body == NULL || hub_json_blank(q->body, q->body_len)) {
        fail(q, 400, "bad_request", "a JSON object body is required", NULL);
        return NULL;
    }
    if (!hub_json_valid(q->body, q->body_len)) {
        fail(q, 400, "invalid_json", "the body is not valid JSON (RFC 8259, UTF-8)", NULL);
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(q->body, q->body_len);
    if (j == NULL) { /* valid, so only out of memory or cJSON's own depth cap */
        fail(q, 400, "invalid_json", "the body cannot be parsed", NULL);
        return NULL;
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        fail(q, 400, "bad_request", "the body must be a JSON object", NULL);
        return NULL;
    }
    q->body_has_nul = hub_json_has_nul(q->body, q->body_len);
    return j;
}

/* cJSON ends a string at an escaped NUL, so s (its value of the string
 * member key) could be a cut-off prefix. When the body holds "\u0000"
 * anywhere, s is trusted only if key's source text is found, has no NUL
 * and decodes to s. */
static int nul_free(const api_req_t *q, const char *key, const char *s)
{
    if (!q->body_has_nul)
        return 1;
    const char *v;
    size_t vl;
    if (!hub_json_member(q->body, q->body_len, key, &v, &vl) || hub_json_has_nul(v, vl))
        return 0;
    cJSON *j = cJSON_ParseWithLength(v, vl);
    int same = cJSON_IsString(j) && strcmp(j->valuestring, s) == 0;
    cJSON_Delete(j);
    return same;
}

/* The string member key of obj: *out = its value, or def when it is
 * absent or null. Returns 1, or 0 after answering 400 (not a string, a
 * NUL inside, or more than maxlen bytes when maxlen > 0). */
static int string_field(api_req_t *q, const cJSON *obj, const char *key, const char *def,
                        size_t maxlen, const char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    char msg[160];
    *out = def;
    if (v == NULL || cJSON_IsNull(v))
        return 1;
    if (!cJSON_IsString(v)) {
        snprintf(msg, sizeof(msg), "%s must be a string", key);
    } else if (!nul_free(q, key, v->valuestring)) {
        snprintf(msg, sizeof(msg), "%s must not contain NUL characters", key);
    } else if (maxlen && (v->valuestring[0] == '\0' || strlen(v->valuestring) > maxlen)) {
        snprintf(msg, sizeof(msg), "%s must be 1 to %zu bytes", key, maxlen);
    } else {
        *out = v->valuestring;
        return 1;
    }
    fail(q, 400, "bad_request", msg, NULL);
    return 0;
}

/* The JSON source text of member key (present in obj as item): the
 * body's own bytes when they can be found, so the value reaches clients
 * byte for byte; else (an escaped member name) cJSON's rendering, in
 * *owned, which the caller frees with cJSON_free. */
static int raw_field(api_req_t *q, const cJSON *item, const char *key, const char **raw,
                     size_t *len, char **owned)
{
    *owned = NULL;
    if (hub_json_member(q->body, q->body_len, key, raw, len))
        return 1;
    if ((*owned = cJSON_PrintUnformatted(item)) == NULL) {
        fail(q, 500, "internal", "out of memory", NULL);
        return 0;
    }
    *raw = *owned;
    *len = strlen(*owned);
    return 1;
}

/* A room id from the path: 1, or 0 after answering 400. */
static int path_room_id(api_req_t *q)
{
    if (q->path.id_len > API_MAX_ID || !hub_reg_valid_room_id(q->path.id, q->path.id_len)) {
        fail(q, 400, "invalid_room_id",
             "room ids are 1 to 128 of A-Z a-z 0-9 _ - : . @", NULL);
        return 0;
    }
    return 1;
}

/* The connection id of the path's client id, or 0 (not a client of this
 * node: with a cluster bus, the place to ask the other nodes). */
static uint64_t path_client(api_req_t *q)
{
    if (q->path.id_len > API_MAX_ID)
        return 0;
    return hub_client_id_parse(q->w->srv, q->path.id, q->path.id_len);
}

/* ---- deliveries ------------------------------------------------------------- */

/* The data of a message from the server:
 *   {["room_id":R,]"content":RAW,"sender_id":"server","timestamp":MS}
 * Returns a malloc'd text (its length in *len) or NULL on ENOMEM. */
static char *server_data(const char *room, const char *raw, size_t rawlen, size_t *len)
{
    size_t cap = rawlen + 3 * 128 + 96;
    char *d = malloc(cap);
    if (d == NULL)
        return NULL;
    size_t n = 0;
    d[n++] = '{';
    if (room) {
        memcpy(d + n, "\"room_id\":", 10);
        n = hub_json_quote(d, n + 10, cap, room, strlen(room));
        if (n == (size_t)-1) {
            free(d);
            return NULL;
        }
        d[n++] = ',';
    }
    memcpy(d + n, "\"content\":", 10);
    n += 10;
    memcpy(d + n, raw, rawlen);
    n += rawlen;
    n += (size_t)snprintf(d + n, cap - n, ",\"sender_id\":\"server\",\"timestamp\":%llu}",
                          (unsigned long long)hub_now_ms());
    *len = n;
    return d;
}

/* The envelope frame of type with data, or NULL after answering 413 (the
 * data is larger than limits.max_message_bytes: gohub never pushes a
 * message larger than it would take from a client) or 500. */
static hub_frame_t *envelope(api_req_t *q, const char *type, const char *data, size_t len)
{
    if (len > q->w->cfg->max_message_bytes) {
        fail(q, 413, "message_too_large", "the message is larger than limits.max_message_bytes",
             NULL);
        return NULL;
    }
    hub_frame_t *f = hub_msg_frame(type, data, len, hub_msg_next_id(), HUB_NO_REQUEST);
    if (f == NULL)
        fail(q, 500, "internal", "out of memory", NULL);
    return f;
}

/* ---- endpoints ---------------------------------------------------------------- */

/* The frame a POST body asks to send: {"<field>":<any>,"message_type"?}
 * (default_type when absent), its data built by server_data for room (NULL
 * = none). type gets the message type (API_MAX_TYPE + 1 bytes), *len the
 * data's length. NULL when an error was answered. */
static hub_frame_t *body_frame(api_req_t *q, const char *field, const char *default_type,
                               const char *room, char *type, size_t *len)
{
    cJSON *j = parse_body(q);
    if (j == NULL)
        return NULL;
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(j, field);
    const char *t, *raw;
    char *owned = NULL, *data = NULL;
    size_t rawlen;
    hub_frame_t *f = NULL;
    if (item == NULL) {
        char why[64];
        snprintf(why, sizeof(why), "%s is required", field);
        fail(q, 400, "bad_request", why, NULL);
    } else if (string_field(q, j, "message_type", default_type, API_MAX_TYPE, &t) &&
               raw_field(q, item, field, &raw, &rawlen, &owned)) {
        if ((data = server_data(room, raw, rawlen, len)) == NULL)
            fail(q, 500, "internal", "out of memory", NULL);
        else if ((f = envelope(q, t, data, *len)) != NULL)
            snprintf(type, API_MAX_TYPE + 1, "%s", t);
    }
    free(data);
    cJSON_free(owned);
    cJSON_Delete(j);
    return f;
}

/* POST /api/broadcast {"message":<any>,"message_type"?} */
static void broadcast(api_req_t *q)
{
    char type[API_MAX_TYPE + 1];
    size_t len;
    hub_frame_t *f = body_frame(q, "message", "broadcast", NULL, type, &len);
    if (f == NULL)
        return;
    hub_fanout_all(q->w, f, 0);
    hub_frame_release(f);
    size_t clients, rooms;
    hub_reg_counts(&clients, &rooms);
    hub_log_info("api broadcast", "type=%s bytes=%zu clients=%zu", type, len, clients);
    char body[96];
    int n = snprintf(body, sizeof(body), "{\"status\":\"ok\",\"delivered\":%zu}", clients);
    respond(q, 200, NULL, body, (size_t)n);
}

/* GET /api/stats */
static void stats(api_req_t *q)
{
    size_t clients, rooms;
    hub_reg_counts(&clients, &rooms);
    if (hub_cluster_enabled()) { /* rooms of every node, each counted once */
        hub_room_info_t *v;
        size_t n = hub_reg_room_list(&v);
        rooms = hub_cluster_rooms_merge(&v, n);
        hub_reg_rooms_free(v, rooms);
    }
    cJSON *o = cJSON_CreateObject();
    /* the nodes' client counts come from their heartbeats, the rooms from
     * the cluster's membership directory */
    hub_cluster_node_t nv[64];
    size_t nn = hub_cluster_nodes(nv, HUB_ARRAY_LEN(nv));
    if (nn > HUB_ARRAY_LEN(nv))
        nn = HUB_ARRAY_LEN(nv);
    double total = nn ? 0 : (double)clients;
    for (size_t i = 0; i < nn; i++)
        total += nv[i].self ? (double)clients : nv[i].clients;
    put(q, o, "client_count", cJSON_CreateNumber(total));
    put(q, o, "room_count", cJSON_CreateNumber((double)rooms));
    put(q, o, "node_count", cJSON_CreateNumber(nn ? (double)nn : 1));
    cJSON *nodes = put(q, o, "nodes", cJSON_CreateArray());
    for (size_t i = 0; i < (nn ? nn : 1); i++) {
        cJSON *node = put(q, nodes, NULL, cJSON_CreateObject());
        put(q, node, "node_id", cJSON_CreateString(nn ? nv[i].node_id : q->w->srv->node_id));
        put(q, node, "client_count",
            cJSON_CreateNumber(!nn || nv[i].self ? (double)clients : nv[i].clients));
    }
    put(q, o, "cluster_mode", cJSON_CreateBool(hub_cluster_enabled()));
    put(q, o, "timestamp", cJSON_CreateNumber((double)hub_now_ms()));
    respond_json(q, 200, NULL, o);
}

static int room_cmp(const void *a, const void *b)
{
    return strcmp(((const hub_room_info_t *)a)->id, ((const hub_room_info_t *)b)->id);
}

/* GET /api/rooms: every room of the cluster, ordered by id */
static void rooms_list(api_req_t *q)
{
    hub_room_info_t *v;
    size_t n = hub_reg_room_list(&v);
    n = hub_cluster_rooms_merge(&v, n);
    if (n > 1)
        qsort(v, n, sizeof(*v), room_cmp);
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n && !q->oom; i++)
        put(q, a, NULL, room_json(q, &v[i], v[i].member_count));
    hub_reg_rooms_free(v, n);
    respond_json(q, 200, NULL, a);
}

/* POST /api/rooms {"id","name"?,"max_clients"?} */
static void room_create(api_req_t *q)
{
    cJSON *j = parse_body(q);
    if (j == NULL)
        return;
    const char *id, *name;
    const cJSON *mc = cJSON_GetObjectItemCaseSensitive(j, "max_clients");
    double max = q->w->cfg->rooms_default_max_clients;
    if (!string_field(q, j, "id", NULL, 0, &id) || !string_field(q, j, "name", NULL, 0, &name))
        goto out;
    if (id == NULL || !hub_reg_valid_room_id(id, strlen(id))) {
        fail(q, 400, "invalid_room_id",
             "id is required: 1 to 128 of A-Z a-z 0-9 _ - : . @", NULL);
        goto out;
    }
    if (mc != NULL && !cJSON_IsNull(mc)) {
        max = cJSON_IsNumber(mc) ? mc->valuedouble : -1;
        if (!(max >= 0 && max <= HUB_ROOM_MAX_CLIENTS && max == (double)(uint32_t)max)) {
            fail(q, 400, "bad_request", "max_clients must be an integer from 0 to 10000000",
                 NULL);
            goto out;
        }
    }
    hub_room_info_t r;
    int rc = hub_reg_room_create(id, name, (uint32_t)max, 0, &r);
    if (rc == HUB_EEXIST) {
        fail(q, 409, "room_exists", "a room with this id exists", NULL);
        goto out;
    }
    if (rc != 0) {
        fail(q, 500, "internal", "out of memory", NULL);
        goto out;
    }
    hub_log_info("api room created", "room=%s max_clients=%u", r.id, r.max_clients);
    char loc[200];
    snprintf(loc, sizeof(loc), "Location: /api/rooms/%s\r\n", r.id); /* id chars are URL-safe */
    respond_json(q, 201, loc, room_json(q, &r, 0));
    hub_reg_info_free(&r);
out:
    cJSON_Delete(j);
}

/* GET /api/rooms/{id}: the room and its members on every node (a room
 * only other nodes have as they announced it) */
static void room_get(api_req_t *q)
{
    if (!path_room_id(q))
        return;
    hub_room_info_t r;
    hub_member_t *m = NULL;
    size_t n = 0;
    int here = hub_reg_room_get(q->path.id, &r) == 0;
    if (!here && !hub_cluster_room_info(q->path.id, &r)) {
        fail(q, 404, "room_not_found", "no such room", NULL);
        return;
    }
    if (here && hub_reg_room_members(q->path.id, &m, &n) != 0) { /* deleted in between */
        hub_reg_info_free(&r);
        fail(q, 404, "room_not_found", "no such room", NULL);
        return;
    }
    hub_cluster_member_t *rm;
    size_t rn = hub_cluster_room_members(q->path.id, &rm);
    /* several reads: the count is the listed members' */
    cJSON *o = room_json(q, &r, (uint32_t)(n + rn));
    cJSON *a = put(q, o, "members", cJSON_CreateArray());
    for (size_t i = 0; i < n && !q->oom; i++) {
        char cid[HUB_CLIENT_ID_MAX], uid[HUB_USER_ID_MAX];
        ids_of(q, m[i].conn_id, m[i].user_id, cid, uid);
        cJSON *e = put(q, a, NULL, cJSON_CreateObject());
        put(q, e, "client_id", cJSON_CreateString(cid));
        put(q, e, "user_id", cJSON_CreateString(uid));
    }
    for (size_t i = 0; i < rn && !q->oom; i++) {
        cJSON *e = put(q, a, NULL, cJSON_CreateObject());
        put(q, e, "client_id", cJSON_CreateString(rm[i].client_id));
        put(q, e, "user_id", cJSON_CreateString(rm[i].user_id));
    }
    hub_cluster_members_free(rm, rn);
    hub_reg_members_free(m, n);
    hub_reg_info_free(&r);
    respond_json(q, 200, NULL, o);
}

/* DELETE /api/rooms/{id}: the members get room_deleted; in a cluster on
 * every node, also when only other nodes have the room */
static void room_delete(api_req_t *q)
{
    if (!path_room_id(q))
        return;
    int n = hub_ops_room_delete(q->w, q->path.id);
    if (n < 0) {
        fail(q, 404, "room_not_found", "no such room", NULL);
        return;
    }
    hub_log_info("api room deleted", "room=%s members=%d", q->path.id, n);
    respond_ok(q);
}

/* POST /api/rooms/{id}/messages {"content":<any>,"message_type"?} */
static void room_message(api_req_t *q)
{
    if (!path_room_id(q))
        return;
    char type[API_MAX_TYPE + 1];
    size_t len;
    hub_frame_t *f = body_frame(q, "content", "room_message", q->path.id, type, &len);
    if (f == NULL)
        return;
    int sent = hub_fanout_room(q->w, q->path.id, f, 0);
    hub_frame_release(f);
    if (sent < 0) {
        fail(q, 404, "room_not_found", "no such room", NULL);
        return;
    }
    hub_log_debug("api room message", "room=%s type=%s members=%d", q->path.id, type, sent);
    respond_ok(q);
}

/* Parses a ?name=digits value: 1 and *out, or 0 when it is not a
 * non-negative integer below 10^9. */
static int query_uint(const char *s, size_t n, size_t *out)
{
    if (n == 0 || n > 9)
        return 0;
    size_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (size_t)(s[i] - '0');
    }
    *out = v;
    return 1;
}

/* What a GET /api/clients waiting for the cluster's answer needs then
 * (the request itself is gone by then). */
typedef struct {
    char cors[API_MAX_ORIGIN + 96];
    int head_only;
} api_wait_t;

/* hub_ops_done_fn: the cluster's answer for the waiting connection conn_id
 * (gone meanwhile: nothing to do). Takes ctx (an api_wait_t). The answer
 * closes the connection, as a reload's does: bytes pipelined behind a
 * waiting request are not kept. */
static void clients_answer(hub_worker_t *w, uint64_t conn_id, void *ctx, int status,
                           const char *body, size_t len)
{
    api_wait_t *a = ctx;
    hub_conn_t *c = hub_idmap_get(&w->byid, conn_id);
    if (c != NULL && c->state == HUB_CONN_HTTP && (c->flags & HUB_CONN_F_WAITING) &&
        !(c->flags & HUB_CONN_F_CLOSED)) {
        char hdr[1024];
        snprintf(hdr, sizeof(hdr), "%sCache-Control: no-store\r\n%s", a->cors,
                 status == 503 ? "Retry-After: 1\r\n" : "");
        hub_conn_resume(c);
        hub_routes_respond(c, status, hdr, "application/json", body, len, 0, a->head_only);
    }
    free(a);
}

/* GET /api/clients in a cluster: every live node's clients, ordered by
 * (node id, that node's order); the connection waits (reading nothing, no
 * header deadline) for cluster_ops.c's answer, at most its deadline. */
static void clients_cluster(api_req_t *q, size_t offset, size_t limit)
{
    api_wait_t *a = malloc(sizeof(*a));
    if (a == NULL) {
        fail(q, 500, "internal", "out of memory", NULL);
        return;
    }
    memcpy(a->cors, q->cors, sizeof(a->cors));
    a->head_only = q->head_only;
    /* the answer runs on this thread later, never within this call */
    if (hub_ops_clients(q->w, q->c->id, offset, limit, clients_answer, a) != 0) {
        free(a);
        fail(q, 503, "unavailable", "the cluster cannot be asked now", "Retry-After: 1\r\n");
        return;
    }
    q->c->timer_ms = UINT64_MAX;
    hub_conn_pause(q->c);
}

/* GET /api/clients?limit=&offset= */
static void clients_list(api_req_t *q)
{
    size_t limit = API_PAGE_DEFAULT, offset = 0;
    const char *p = q->r->buf + q->r->query.off, *e = p + q->r->query.len;
    while (p < e) {
        const char *amp = memchr(p, '&', (size_t)(e - p));
        const char *end = amp ? amp : e, *eq = memchr(p, '=', (size_t)(end - p));
        size_t kl = (size_t)((eq ? eq : end) - p);
        size_t *dst = kl == 5 && memcmp(p, "limit", 5) == 0    ? &limit
                      : kl == 6 && memcmp(p, "offset", 6) == 0 ? &offset
                                                               : NULL;
        if (dst != NULL && (eq == NULL || !query_uint(eq + 1, (size_t)(end - eq - 1), dst))) {
            fail(q, 400, "bad_request", "limit and offset must be non-negative integers", NULL);
            return;
        }
        p = end + (amp != NULL);
    }
    if (limit > API_PAGE_MAX)
        limit = API_PAGE_MAX;
    if (hub_cluster_enabled()) {
        clients_cluster(q, offset, limit);
        return;
    }
    hub_client_info_t *v;
    size_t n, total;
    if (hub_reg_client_list(offset, limit, &v, &n, &total) != 0) {
        fail(q, 500, "internal", "out of memory", NULL);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    put(q, o, "total_clients", cJSON_CreateNumber((double)total));
    cJSON *a = put(q, o, "clients", cJSON_CreateArray());
    for (size_t i = 0; i < n && !q->oom; i++) {
        char cid[HUB_CLIENT_ID_MAX], uid[HUB_USER_ID_MAX];
        ids_of(q, v[i].conn_id, v[i].user_id, cid, uid);
        cJSON *c = put(q, a, NULL, cJSON_CreateObject());
        put(q, c, "client_id", cJSON_CreateString(cid));
        put(q, c, "user_id", cJSON_CreateString(uid));
        put(q, c, "node_id", cJSON_CreateString(q->w->srv->node_id));
        cJSON *rooms = put(q, c, "rooms", cJSON_CreateArray());
        for (size_t k = 0; k < v[i].nrooms; k++)
            put(q, rooms, NULL, cJSON_CreateString(v[i].rooms[k]));
        put(q, c, "connected_at", cJSON_CreateNumber((double)v[i].connected_at));
    }
    hub_reg_clients_free(v, n);
    respond_json(q, 200, NULL, o);
}

/* DELETE /api/clients/{id}: closed with 1008 */
static void client_kick(api_req_t *q)
{
    uint64_t id = path_client(q);
    if (id == 0 || hub_fanout_close(q->w, id, 1008, "kicked") != 0) {
        fail(q, 404, "client_not_found", "no such client connected", NULL);
        return;
    }
    hub_log_info("api client kicked", "client_id=%s", q->path.id);
    respond_ok(q);
}

/* POST /api/clients/{id}/messages {"message_type","data"?} */
static void client_message(api_req_t *q)
{
    cJSON *j = parse_body(q);
    if (j == NULL)
        return;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "data");
    const char *type, *raw = "{}";
    char *owned = NULL;
    size_t rawlen = 2;
    hub_frame_t *f = NULL;
    if (!string_field(q, j, "message_type", NULL, API_MAX_TYPE, &type))
        goto out;
    if (type == NULL) {
        fail(q, 400, "bad_request", "message_type is required", NULL);
        goto out;
    }
    if (d != NULL && !raw_field(q, d, "data", &raw, &rawlen, &owned))
        goto out;
    if ((f = envelope(q, type, raw, rawlen)) == NULL)
        goto out;
    /* a client of this node, or of another live node (through the bus) */
    if (q->path.id_len > API_MAX_ID ||
        hub_fanout_client(q->w, q->path.id, q->path.id_len, f) != 0) {
        fail(q, 404, "client_not_found", "no such client connected", NULL);
        goto out;
    }
    respond_ok(q);
out:
    hub_frame_release(f);
    cJSON_free(owned);
    cJSON_Delete(j);
}

/* ---- dispatch ----------------------------------------------------------------- */

static unsigned method_bit(const hub_http_req_t *r)
{
    switch (r->method) {
    case HUB_HTTP_GET:
    case HUB_HTTP_HEAD:   return M_GET;
    case HUB_HTTP_POST:   return M_POST;
    case HUB_HTTP_DELETE: return M_DELETE;
    default:              return 0;
    }
}

/* OPTIONS: the methods of the endpoint; for a browser's preflight (an
 * allowed Origin) the CORS answer too. No credentials are needed (browsers
 * send none with a preflight). */
static void preflight(api_req_t *q, int origin_ok)
{
    const char *allow = endpoints[q->path.ep].allow;
    char hdr[1024];
    if (!origin_ok) {
        fail(q, 403, "forbidden", "origin not allowed by http.cors_origins", NULL);
        return;
    }
    int n = snprintf(hdr, sizeof(hdr), "%sAllow: %s\r\n", q->cors, allow);
    if (q->cors[0])
        snprintf(hdr + n, sizeof(hdr) - (size_t)n,
                 "Access-Control-Allow-Methods: %s\r\n"
                 "Access-Control-Allow-Headers: Authorization, X-API-Key, Content-Type\r\n"
                 "Access-Control-Max-Age: 600\r\n",
                 allow);
    hub_routes_respond(q->c, 200, hdr, NULL, NULL, 0, q->keep_alive, 0);
}

void hub_api_handle(hub_conn_t *c, const hub_http_req_t *r, int keep_alive)
{
    api_req_t q = { .c = c, .w = c->w, .r = r, .keep_alive = keep_alive };
    q.head_only = r->method == HUB_HTTP_HEAD;
    int origin_ok = hub_api_cors(c, r, q.cors, sizeof(q.cors));
    /* routes.c sends only paths under "/api/" here */
    int status = parse_path(r->buf + r->path.off + 5, r->path.len - 5, &q.path);
    int options = r->method == HUB_HTTP_OTHER && strcmp(r->method_name, "OPTIONS") == 0;
    if (options && status == 0) {
        preflight(&q, origin_ok);
        return;
    }
    if (!hub_api_allowed(c, r, q.cors, keep_alive))
        return;
    if (status != 0) {
        fail(&q, status, status == 404 ? "not_found" : "bad_request",
             status == 404 ? "no such endpoint" : "bad percent-encoding in the path", NULL);
        return;
    }
    unsigned m = method_bit(r);
    if (!(endpoints[q.path.ep].methods & m)) {
        char allow[96];
        snprintf(allow, sizeof(allow), "Allow: %s\r\n", endpoints[q.path.ep].allow);
        fail(&q, 405, "method_not_allowed", "method not allowed here", allow);
        return;
    }
    switch (q.path.ep) {
    case EP_BROADCAST:       broadcast(&q); break;
    case EP_STATS:           stats(&q); break;
    case EP_ROOMS:           m == M_GET ? rooms_list(&q) : room_create(&q); break;
    case EP_ROOM:            m == M_GET ? room_get(&q) : room_delete(&q); break;
    case EP_ROOM_MESSAGES:   room_message(&q); break;
    case EP_CLIENTS:         clients_list(&q); break;
    case EP_CLIENT:          client_kick(&q); break;
    case EP_CLIENT_MESSAGES: client_message(&q); break;
    default:                 hub_assert(!"unknown endpoint"); /* parse_path returns only these */
    }
}
