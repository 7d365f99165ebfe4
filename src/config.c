/* config.c: the configuration loader. Owns the key table (one row per setting:
 * dotted path, type, field, default, range, help) and everything driven by it:
 * defaults, the YAML file walk, GOHUB_* environment overrides, value parsing
 * and the key reference dump. Called only by the main thread at boot, before
 * any worker starts; the resulting hub_config_t is read-only afterwards. */
#include "common.h"
#include "config.h"
#include "log.h"
#include "registry.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define MS_S  1000LL
#define MS_M  (60 * MS_S)
#define MS_H  (60 * MS_M)
#define KIB   1024LL
#define MIB   (1024 * KIB)
#define GIB   (1024 * MIB)

#define FILE_MAX_BYTES (4 * 1024 * 1024) /* a config file larger than this is a mistake */
#define REASON_MAX     384
#define PATH_MAX_CHARS 128
#define QUOTE_MAX      80                /* longest value echoed back in a message */

typedef enum {
    KT_INT,      /* int64 in [min, max]; stored in a 4- or 8-byte integer field */
    KT_DURATION, /* milliseconds in [min, max]; stored like KT_INT */
    KT_SIZE,     /* bytes in [min, max]; stored like KT_INT */
    KT_BOOL,     /* stored in a bool or int field */
    KT_ENUM,     /* index into choices; stored in an int field */
    KT_STRING,   /* owned char * */
    KT_LIST      /* hub_strlist_t of owned strings */
} key_type_t;

/* An extra rule for a string value (or each list item): returns NULL if s is
 * acceptable, else the phrase that completes "expected ...". */
typedef const char *(*check_fn)(const char *s);

typedef struct {
    const char *path;           /* dotted key, e.g. "server.addr" */
    key_type_t type;
    size_t offset;              /* offsetof the field in hub_config_t */
    size_t size;                /* sizeof the field */
    const char *def;            /* default, in the same syntax as a value */
    int64_t min, max;           /* KT_INT / KT_DURATION (ms) / KT_SIZE (bytes) */
    const char *const *choices; /* KT_ENUM: NULL-terminated, index = stored value */
    check_fn check;             /* KT_STRING / KT_LIST items: extra rule, or NULL */
    const char *help;           /* one line for the key reference; no '|' */
    int reload;                 /* applied by a config reload (else restart-only) */
    const char *alias_env;      /* second reference system's variable, or NULL */
} key_desc_t;

static const char *check_addr(const char *s);
static const char *check_addr_opt(const char *s);
static const char *check_alg(const char *s);
static const char *check_node_id(const char *s);
static const char *check_nonempty(const char *s);
static const char *check_room_id(const char *s);

/* The enum choices are stored as their index, so they must follow log.h. */
_Static_assert(HUB_LOG_DEBUG == 0 && HUB_LOG_INFO == 1 && HUB_LOG_WARN == 2 &&
               HUB_LOG_ERROR == 3, "log_levels[] must follow the HUB_LOG_* order");
_Static_assert(HUB_LOG_JSON == 0 && HUB_LOG_TEXT == 1,
               "log_formats[] must follow HUB_LOG_JSON, HUB_LOG_TEXT");
static const char *const log_levels[] = { "debug", "info", "warn", "error", NULL };
static const char *const log_formats[] = { "json", "text", NULL };
_Static_assert(HUB_BUS_TYPE_NOOP == 0 && HUB_BUS_TYPE_REDIS == 1 && HUB_BUS_TYPE_NATS == 2,
               "bus_types[] must follow HUB_BUS_TYPE_*");
static const char *const bus_types[] = { "noop", "redis", "nats", NULL };

#define FIELD(f) offsetof(hub_config_t, f), sizeof(((hub_config_t *)0)->f)

/* The key table. Adding a setting is one row here plus its field in config.h. */
static const key_desc_t keys[] = {
    /* path, type, field, default, min, max, choices, check, help, reload, alias env */
    { "server.addr", KT_STRING, FIELD(server_addr), ":8080", 0, 0, NULL, check_addr,
      "listen address host:port; :port = all IPv4 addresses; [::1]:8080 for IPv6", 0,
      "WEBSOCKET_PORT" },
    { "server.workers", KT_INT, FIELD(server_workers), "0", 0, 256, NULL, NULL,
      "worker threads; 0 = number of CPUs", 0, NULL },
    { "server.node_id", KT_STRING, FIELD(server_node_id), "", 0, 0, NULL, check_node_id,
      "node id (up to 64 of A-Z a-z 0-9 . _ -); empty = generated at start", 0, NULL },
    { "server.header_timeout", KT_DURATION, FIELD(header_timeout_ms), "10s",
      100, 1 * MS_H, NULL, NULL,
      "deadline for a complete HTTP request head, else 408", 0, NULL },
    { "server.ping_interval", KT_DURATION, FIELD(ping_interval_ms), "25s",
      100, 1 * MS_H, NULL, NULL, "server WebSocket ping period", 0, NULL },
    { "server.pong_timeout", KT_DURATION, FIELD(pong_timeout_ms), "10s",
      100, 1 * MS_H, NULL, NULL, "close a connection whose pong is this late", 0, NULL },
    { "server.shutdown_timeout", KT_DURATION, FIELD(shutdown_timeout_ms), "10s",
      0, 10 * MS_M, NULL, NULL, "how long SIGTERM waits for connections to drain", 0, NULL },
    { "server.close_timeout", KT_DURATION, FIELD(close_timeout_ms), "3s",
      100, 1 * MS_M, NULL, NULL,
      "close-handshake and lingering-close grace before a hard TCP close", 0, NULL },
    { "server.allowed_origins", KT_LIST, FIELD(allowed_origins), "", 0, 0, NULL,
      check_nonempty, "allowed Origin values for /ws; empty = any origin", 1, NULL },
    { "limits.max_connections", KT_INT, FIELD(max_connections), "0", 0, 10000000, NULL,
      NULL, "WebSocket connections per process; 0 = as many as the fd limit allows", 0, NULL },
    { "limits.max_message_bytes", KT_SIZE, FIELD(max_message_bytes), "64KiB",
      16, 64 * MIB, NULL, NULL, "inbound message cap (close 1009)", 0, NULL },
    { "limits.max_outbound_bytes", KT_SIZE, FIELD(max_outbound_bytes), "1MiB",
      4 * KIB, 1 * GIB, NULL, NULL, "queued outbound bytes per connection (close 1013)", 1, NULL },
    { "limits.max_request_line", KT_SIZE, FIELD(max_request_line), "8KiB",
      256, 1 * MIB, NULL, NULL, "HTTP request line cap (414)", 0, NULL },
    { "limits.max_header_bytes", KT_SIZE, FIELD(max_header_bytes), "16KiB",
      1 * KIB, 1 * MIB, NULL, NULL, "HTTP header block cap (431)", 0, NULL },
    { "limits.max_body_bytes", KT_SIZE, FIELD(max_body_bytes), "1MiB",
      0, 64 * MIB, NULL, NULL, "HTTP request body cap (413)", 0, NULL },
    { "limits.messages_per_second", KT_INT, FIELD(messages_per_second), "100", 0, 10000000,
      NULL, NULL, "messages one connection may send per second (error 1005); 0 = unlimited",
      1, NULL },
    { "limits.messages_burst", KT_INT, FIELD(messages_burst), "200", 1, 10000000, NULL, NULL,
      "messages a connection may send at once above its per-second rate", 1, NULL },
    { "limits.rate_limit_close_after", KT_INT, FIELD(rate_limit_close_after), "100", 0,
      10000000, NULL, NULL,
      "rate-limited messages within 10 s that close the connection with 1008; 0 = never", 1,
      NULL },
    { "limits.connections_per_second_per_ip", KT_INT, FIELD(connections_per_second_per_ip),
      "0", 0, 10000000, NULL, NULL,
      "WebSocket upgrades per second from one IP address (429); 0 = unlimited", 1, NULL },
    { "log.level", KT_ENUM, FIELD(log_level), "info", 0, 0, log_levels, NULL,
      "minimum level logged", 1, NULL },
    { "log.format", KT_ENUM, FIELD(log_format), "json", 0, 0, log_formats, NULL,
      "log line format", 0, NULL },
    { "lua.path", KT_STRING, FIELD(lua_path), "lua", 0, 0, NULL, check_nonempty,
      "directory of permissions.lua, hooks.lua, handlers/ and lib/", 0, NULL },
    { "lua.time_limit_ms", KT_INT, FIELD(lua_time_limit_ms), "200", 10, 60000, NULL, NULL,
      "a handler running longer is stopped (error 1004)", 0, NULL },
    { "lua.max_memory_mb", KT_INT, FIELD(lua_max_memory_mb), "64", 1, 4096, NULL, NULL,
      "memory cap of each worker's Lua state (allocation beyond it fails: error 1003)", 0, NULL },
    { "lua.jit", KT_BOOL, FIELD(lua_jit), "false", 0, 0, NULL, NULL,
      "JIT-compile handlers (the time limit cannot stop a loop inside a compiled trace)", 0, NULL },
    { "lua.watch", KT_BOOL, FIELD(lua_watch), "true", 0, 0, NULL, NULL,
      "reload the Lua code when a file under lua.path changes", 0, NULL },
    { "lua.reload_debounce", KT_DURATION, FIELD(lua_reload_debounce_ms), "100ms", 10,
      10 * MS_S, NULL, NULL, "quiet time after the last file change before a reload", 0, NULL },
    { "rooms.auto_create", KT_BOOL, FIELD(rooms_auto_create), "true", 0, 0, NULL, NULL,
      "join_room creates a missing room, deleted again when its last member leaves", 1, NULL },
    { "rooms.default_max_clients", KT_INT, FIELD(rooms_default_max_clients), "0", 0,
      10000000, NULL, NULL, "max_clients of rooms created without one; 0 = unlimited", 1, NULL },
    { "rooms.predefined", KT_LIST, FIELD(rooms_predefined), "", 0, 0, NULL, check_room_id,
      "rooms created at start (they stay until deleted)", 1, NULL },
    { "rooms.presence_events", KT_BOOL, FIELD(rooms_presence_events), "true", 0, 0, NULL,
      NULL, "members get member_joined / member_left", 1, NULL },
    { "rooms.members_only_send", KT_BOOL, FIELD(rooms_members_only_send), "true", 0, 0,
      NULL, NULL, "room_message requires membership of the room", 1, NULL },
    { "rooms.echo_to_sender", KT_BOOL, FIELD(rooms_echo_to_sender), "false", 0, 0, NULL,
      NULL, "room_message is also delivered to its sender", 1, NULL },
    { "rooms.max_rooms_per_client", KT_INT, FIELD(rooms_max_per_client), "128", 0, 1000000,
      NULL, NULL, "rooms one connection may be in; 0 = unlimited", 1, NULL },
    { "auth.enabled", KT_BOOL, FIELD(auth_enabled), "false", 0, 0, NULL, NULL,
      "verify JWTs (handshake ?token= or Authorization, and authenticate); off = all anonymous",
      1, NULL },
    { "auth.secret_key", KT_STRING, FIELD(auth_secret_key), "", 0, 0, NULL, NULL,
      "HMAC secret for HS256/384/512 tokens", 1, "CENTRIFUGO_TOKEN_HMAC_SECRET_KEY" },
    { "auth.public_key_file", KT_STRING, FIELD(auth_public_key_file), "", 0, 0, NULL, NULL,
      "PEM public key file for RS256/384/512 or ES256/384/512 tokens", 1, NULL },
    { "auth.algorithms", KT_LIST, FIELD(auth_algorithms), "", 0, 0, NULL, check_alg,
      "accepted token algorithms; empty = HS256 with secret_key, RS256 and ES256 with public_key_file",
      1, NULL },
    { "auth.require_exp", KT_BOOL, FIELD(auth_require_exp), "true", 0, 0, NULL, NULL,
      "refuse tokens without a numeric exp claim", 1, NULL },
    { "auth.issuer", KT_STRING, FIELD(auth_issuer), "", 0, 0, NULL, NULL,
      "required iss claim; empty = not checked", 1, NULL },
    { "auth.audience", KT_STRING, FIELD(auth_audience), "", 0, 0, NULL, NULL,
      "required aud claim (string or array containing it); empty = not checked", 1, NULL },
    { "auth.leeway", KT_DURATION, FIELD(auth_leeway_ms), "30s", 0, 5 * MS_M, NULL, NULL,
      "clock skew allowed on exp and nbf", 1, NULL },
    { "auth.max_token_bytes", KT_SIZE, FIELD(auth_max_token_bytes), "4KiB", 256, 64 * KIB,
      NULL, NULL, "longer tokens are refused before decoding", 1, NULL },
    { "auth.allow_anonymous", KT_BOOL, FIELD(auth_allow_anonymous), "true", 0, 0, NULL, NULL,
      "with auth on, connections without a token are let in (else HTTP 401)", 1, NULL },
    { "auth.anonymous_permissions", KT_LIST, FIELD(anonymous_permissions),
      "join:room,leave:room,send:message,create:room", 0, 0, NULL, check_nonempty,
      "permissions of a connection without a token", 1, NULL },
    { "http.addr", KT_STRING, FIELD(http_addr), "", 0, 0, NULL, check_addr_opt,
      "separate listen address for /api/* and /health; empty = on server.addr", 0,
      "HTTP_PORT" },
    { "http.api_key", KT_STRING, FIELD(http_api_key), "", 0, 0, NULL, NULL,
      "key for /api/* (Bearer or X-API-Key); empty = /api/* answers loopback peers only", 1,
      NULL },
    { "http.cors_origins", KT_LIST, FIELD(http_cors_origins), "", 0, 0, NULL, check_nonempty,
      "browser origins allowed to call /api/* (\"*\" = any); empty = no CORS headers", 1, NULL },
    { "metrics.enabled", KT_BOOL, FIELD(metrics_enabled), "true", 0, 0, NULL, NULL,
      "serve Prometheus metrics on /metrics", 0, NULL },
    { "metrics.addr", KT_STRING, FIELD(metrics_addr), "", 0, 0, NULL, check_addr_opt,
      "separate listen address for /metrics, e.g. :2112; empty = on server.addr", 0,
      "METRICS_PORT" },
    { "cluster.enabled", KT_BOOL, FIELD(cluster_enabled), "false", 0, 0, NULL, NULL,
      "join a cluster through cluster.bus_type", 0, NULL },
    { "cluster.bus_type", KT_ENUM, FIELD(cluster_bus_type), "noop", 0, 0, bus_types, NULL,
      "the bus between nodes (noop = single node)", 0, NULL },
    { "cluster.node_id", KT_STRING, FIELD(cluster_node_id), "", 0, 0, NULL, check_node_id,
      "this node's id (same rules as server.node_id, which it must agree with); empty = generated",
      0, NULL },
    { "cluster.redis.addrs", KT_LIST, FIELD(redis_addrs), "127.0.0.1:6379", 0, 0, NULL,
      check_nonempty, "Redis server: host:port or redis://[:password@]host:port (the first is used)",
      0, "REDIS_URL" },
    { "cluster.redis.key_prefix", KT_STRING, FIELD(redis_key_prefix), "gohub", 0, 0, NULL,
      check_nonempty, "prefix of every Redis channel gohub uses", 0, NULL },
    { "cluster.redis.password", KT_STRING, FIELD(redis_password), "", 0, 0, NULL, NULL,
      "Redis AUTH password (or in the redis:// address)", 0, NULL },
    { "cluster.nats.urls", KT_LIST, FIELD(nats_urls), "nats://127.0.0.1:4222", 0, 0, NULL,
      check_nonempty, "NATS servers", 0, NULL },
    { "cluster.nats.stream_name", KT_STRING, FIELD(nats_stream_name), "GOHUB", 0, 0, NULL,
      check_nonempty, "JetStream stream (and subject prefix) of gohub's messages", 0, NULL },
    { "cluster.nats.use_jetstream", KT_BOOL, FIELD(nats_use_jetstream), "false", 0, 0, NULL,
      NULL, "publish through JetStream: a node briefly away gets what it missed", 0, NULL },
    { "cluster.nats.message_retention", KT_DURATION, FIELD(nats_message_retention_ms), "1m",
      1 * MS_S, 24 * MS_H, NULL, NULL, "how long JetStream keeps messages for nodes that were away",
      0, NULL },
    { "cluster.connect_timeout", KT_DURATION, FIELD(cluster_connect_timeout_ms), "2s", 100,
      1 * MS_M, NULL, NULL, "bus connection attempt timeout", 0, NULL },
    { "cluster.reconnect_max_backoff", KT_DURATION, FIELD(cluster_reconnect_max_backoff_ms),
      "5s", 100, 5 * MS_M, NULL, NULL, "longest wait between bus reconnect attempts", 0, NULL },
    { "cluster.publish_buffer", KT_SIZE, FIELD(cluster_publish_buffer), "1MiB", 0, 1 * GIB,
      NULL, NULL, "bytes of publishes kept while the bus is down (beyond: dropped, counted)", 0,
      NULL },
    { "cluster.heartbeat_interval", KT_DURATION, FIELD(cluster_heartbeat_ms), "2s", 100,
      1 * MS_M, NULL, NULL, "how often a node announces itself", 0, NULL },
    { "cluster.node_timeout", KT_DURATION, FIELD(cluster_node_timeout_ms), "7s", 300,
      10 * MS_M, NULL, NULL, "a node silent this long is dead: its clients leave every room", 0,
      NULL },
};

/* ---- small helpers ---------------------------------------------------- */

/* Writes the formatted message into err (if any) as exactly one line: any
 * control character, including newlines from user values, becomes a space. */
static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    for (char *p = err; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
}

/* Copies s into out for echoing inside quotes, cut at QUOTE_MAX chars. */
static const char *quote(char *out, size_t n, const char *s)
{
    size_t len = strlen(s);
    if (len > QUOTE_MAX)
        snprintf(out, n, "%.*s...", QUOTE_MAX, s);
    else
        snprintf(out, n, "%s", s);
    return out;
}

static const key_desc_t *find_key(const char *path)
{
    for (size_t i = 0; i < HUB_ARRAY_LEN(keys); i++)
        if (strcmp(keys[i].path, path) == 0)
            return &keys[i];
    return NULL;
}

/* True if path names a section: some key starts with "path.". */
static bool is_section(const char *path)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < HUB_ARRAY_LEN(keys); i++)
        if (strncmp(keys[i].path, path, n) == 0 && keys[i].path[n] == '.')
            return true;
    return false;
}

/* "server.allowed_origins" -> "GOHUB_SERVER_ALLOWED_ORIGINS". */
static void env_name(const key_desc_t *k, char *out, size_t n)
{
    size_t j = (size_t)snprintf(out, n, "GOHUB_");
    for (const char *p = k->path; *p && j + 1 < n; p++)
        out[j++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    out[j] = '\0';
}

static void *field(hub_config_t *cfg, const key_desc_t *k)
{
    return (char *)cfg + k->offset;
}

static void list_clear(hub_strlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* Replaces *l with copies of items[0..n). Returns 0, or HUB_ENOMEM with *l
 * as it was. */
static int list_set(hub_strlist_t *l, const char *const *items, size_t n)
{
    hub_strlist_t copy = { NULL, 0 };
    if (n > 0 && (copy.items = calloc(n, sizeof(char *))) == NULL)
        return HUB_ENOMEM;
    for (; copy.n < n; copy.n++) {
        if ((copy.items[copy.n] = strdup(items[copy.n])) == NULL) {
            list_clear(&copy);
            return HUB_ENOMEM;
        }
    }
    list_clear(l);
    *l = copy;
    return 0;
}

/* ---- value syntax ----------------------------------------------------- */

/* Formats a duration in ms with the largest unit that divides it exactly. */
static void fmt_duration(char *out, size_t n, int64_t ms)
{
    if (ms == 0)
        snprintf(out, n, "0s");
    else if (ms % MS_H == 0)
        snprintf(out, n, "%lldh", (long long)(ms / MS_H));
    else if (ms % MS_M == 0)
        snprintf(out, n, "%lldm", (long long)(ms / MS_M));
    else if (ms % MS_S == 0)
        snprintf(out, n, "%llds", (long long)(ms / MS_S));
    else
        snprintf(out, n, "%lldms", (long long)ms);
}

/* Formats a byte count with the largest binary unit that divides it exactly. */
static void fmt_size(char *out, size_t n, int64_t b)
{
    if (b != 0 && b % GIB == 0)
        snprintf(out, n, "%lldGiB", (long long)(b / GIB));
    else if (b != 0 && b % MIB == 0)
        snprintf(out, n, "%lldMiB", (long long)(b / MIB));
    else if (b != 0 && b % KIB == 0)
        snprintf(out, n, "%lldKiB", (long long)(b / KIB));
    else
        snprintf(out, n, "%lld", (long long)b);
}

static void fmt_number(const key_desc_t *k, char *out, size_t n, int64_t v)
{
    if (k->type == KT_DURATION)
        fmt_duration(out, n, v);
    else if (k->type == KT_SIZE)
        fmt_size(out, n, v);
    else
        snprintf(out, n, "%lld", (long long)v);
}

/* Fills out with "min..max" in the key's own units. */
static void fmt_range(const key_desc_t *k, char *out, size_t n)
{
    char lo[32], hi[32];
    fmt_number(k, lo, sizeof(lo), k->min);
    fmt_number(k, hi, sizeof(hi), k->max);
    snprintf(out, n, "%s..%s", lo, hi);
}

/* Fills buf with k's enum choices as "a, b, c". */
static const char *choices_text(const key_desc_t *k, char *buf, size_t n)
{
    size_t j = 0;
    buf[0] = '\0';
    for (size_t i = 0; k->choices[i] && j < n; i++)
        j += (size_t)snprintf(buf + j, n - j, "%s%s", i ? ", " : "", k->choices[i]);
    return buf;
}

/* The phrase after "expected " for a value of k's type; buf holds it when
 * it has to be built. */
static const char *expected(const key_desc_t *k, char *buf, size_t n)
{
    char list[96];
    switch (k->type) {
    case KT_INT:      return "an integer";
    case KT_DURATION: return "a duration like 10s or 500ms";
    case KT_SIZE:     return "a size like 64KiB";
    case KT_BOOL:     return "true or false";
    case KT_STRING:   return "a string";
    case KT_LIST:     return "a list";
    case KT_ENUM:
        snprintf(buf, n, "one of %s", choices_text(k, list, sizeof(list)));
        return buf;
    }
    return "a value";
}

/* Parses [+-]digits into *v. Returns 0, -1 (syntax) or -2 (overflow). */
static int parse_int(const char *s, int64_t *v)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (*p == '\0')
        return -1;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
            return -1;
    errno = 0;
    long long x = strtoll(s, NULL, 10);
    if (errno == ERANGE)
        return -2;
    *v = x;
    return 0;
}

/* Parses "<digits>[.<digits>](ms|s|m|h)" into milliseconds, rounding a
 * fraction of a millisecond to nearest. Returns 0, -1 (syntax) or -2
 * (too large to be any sane duration). */
static int parse_duration(const char *s, int64_t *ms)
{
    const char *p = s;
    int64_t whole = 0, frac = 0, frac_scale = 1;
    bool big = false;

    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++) {
        if (whole > 1000000000000LL) /* 1e12 of any unit overflows nothing below */
            big = true;
        else
            whole = whole * 10 + (*p - '0');
    }
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        for (; isdigit((unsigned char)*p); p++) {
            if (frac_scale < 1000000000LL) { /* digits past 1e-9 cannot matter */
                frac = frac * 10 + (*p - '0');
                frac_scale *= 10;
            }
        }
    }
    int64_t unit;
    if (strcmp(p, "ms") == 0)
        unit = 1;
    else if (strcmp(p, "s") == 0)
        unit = MS_S;
    else if (strcmp(p, "m") == 0)
        unit = MS_M;
    else if (strcmp(p, "h") == 0)
        unit = MS_H;
    else
        return -1;
    if (big)
        return -2;
    *ms = whole * unit + (frac * unit + frac_scale / 2) / frac_scale;
    return 0;
}

/* Parses "<digits>[K|KB|KiB|M|MB|MiB|G|GB|GiB]" (suffix case-insensitive,
 * every unit a power of 1024) into bytes. Returns 0, -1 (syntax) or -2
 * (overflow). */
static int parse_size(const char *s, int64_t *bytes)
{
    static const struct { const char *suffix; int64_t mult; } units[] = {
        { "", 1 },
        { "k", KIB }, { "kb", KIB }, { "kib", KIB },
        { "m", MIB }, { "mb", MIB }, { "mib", MIB },
        { "g", GIB }, { "gb", GIB }, { "gib", GIB },
    };
    const char *p = s;
    int64_t n = 0;
    bool big = false;

    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++) {
        if (n > (INT64_MAX / GIB) / 10)
            big = true;
        else
            n = n * 10 + (*p - '0');
    }
    for (size_t i = 0; i < HUB_ARRAY_LEN(units); i++) {
        if (strcasecmp(p, units[i].suffix) == 0) {
            if (big)
                return -2;
            *bytes = n * units[i].mult;
            return 0;
        }
    }
    return -1;
}

static int parse_bool(const char *s, bool *b)
{
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < HUB_ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *b = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *b = false;
            return 0;
        }
    }
    return -1;
}

/* Stores v into k's integer field, which is 4 bytes (int or uint32_t) or 8
 * bytes (int64_t or uint64_t). v has already been range-checked. */
static void store_number(hub_config_t *cfg, const key_desc_t *k, int64_t v)
{
    void *p = field(cfg, k);
    if (k->size == sizeof(uint64_t)) {
        uint64_t u = (uint64_t)v;
        memcpy(p, &u, sizeof(u));
    } else {
        hub_assert(k->size == sizeof(uint32_t));
        hub_assert(k->min >= INT32_MIN && k->max <= (int64_t)UINT32_MAX);
        if (v < 0) {
            int32_t s = (int32_t)v;
            memcpy(p, &s, sizeof(s));
        } else {
            uint32_t u = (uint32_t)v;
            memcpy(p, &u, sizeof(u));
        }
    }
}

/* Says "out of memory" in reason; returns HUB_ENOMEM. */
static int out_of_memory(char *reason, size_t rlen)
{
    snprintf(reason, rlen, "out of memory");
    return HUB_ENOMEM;
}

/* Parses text as a value of k's (non-list) type and stores it in cfg.
 * Returns 0, -1 with reason set to "expected ..., got '...'" or "... is
 * out of range ...", or HUB_ENOMEM (reason "out of memory"). */
static int set_scalar(hub_config_t *cfg, const key_desc_t *k, const char *text,
                      char *reason, size_t rlen)
{
    char q[QUOTE_MAX + 8], ebuf[128], range[80];
    int64_t v = 0;
    int rc;

    switch (k->type) {
    case KT_INT:
    case KT_DURATION:
    case KT_SIZE:
        rc = k->type == KT_INT ? parse_int(text, &v)
             : k->type == KT_DURATION ? parse_duration(text, &v)
             : parse_size(text, &v);
        if (rc == -1) {
            snprintf(reason, rlen, "expected %s, got '%s'", expected(k, ebuf, sizeof(ebuf)),
                     quote(q, sizeof(q), text));
            return -1;
        }
        if (rc == -2 || v < k->min || v > k->max) {
            fmt_range(k, range, sizeof(range));
            snprintf(reason, rlen, "%s is out of range %s", quote(q, sizeof(q), text), range);
            return -1;
        }
        store_number(cfg, k, v);
        return 0;
    case KT_BOOL: {
        bool b;
        if (parse_bool(text, &b) != 0) {
            snprintf(reason, rlen, "expected true or false, got '%s'", quote(q, sizeof(q), text));
            return -1;
        }
        if (k->size == sizeof(bool)) {
            memcpy(field(cfg, k), &b, sizeof(b));
        } else {
            hub_assert(k->size == sizeof(int));
            int i = b;
            memcpy(field(cfg, k), &i, sizeof(i));
        }
        return 0;
    }
    case KT_ENUM:
        hub_assert(k->size == sizeof(int));
        for (int i = 0; k->choices[i]; i++) {
            if (strcmp(text, k->choices[i]) == 0) {
                memcpy(field(cfg, k), &i, sizeof(i));
                return 0;
            }
        }
        snprintf(reason, rlen, "expected %s, got '%s'", expected(k, ebuf, sizeof(ebuf)),
                 quote(q, sizeof(q), text));
        return -1;
    case KT_STRING: {
        const char *want = k->check ? k->check(text) : NULL;
        if (want) {
            snprintf(reason, rlen, "expected %s, got '%s'", want, quote(q, sizeof(q), text));
            return -1;
        }
        char *copy = strdup(text);
        if (copy == NULL)
            return out_of_memory(reason, rlen);
        char **sp = field(cfg, k);
        free(*sp);
        *sp = copy;
        return 0;
    }
    case KT_LIST:
        break;
    }
    hub_assert(!"set_scalar called for a list key");
    return -1;
}

/* Checks one list item against k's rule. Returns 0 or -1 with reason. */
static int check_item(const key_desc_t *k, const char *item, char *reason, size_t rlen)
{
    char q[QUOTE_MAX + 8];
    const char *want = k->check ? k->check(item) : NULL;
    if (want) {
        snprintf(reason, rlen, "expected %s, got '%s'", want, quote(q, sizeof(q), item));
        return -1;
    }
    return 0;
}

/* Replaces k's list with items[0..n) (copied; already checked). Returns 0
 * or HUB_ENOMEM with reason set. */
static int store_list(hub_config_t *cfg, const key_desc_t *k, const char *const *items,
                      size_t n, char *reason, size_t rlen)
{
    if (list_set(field(cfg, k), items, n) != 0)
        return out_of_memory(reason, rlen);
    return 0;
}

/* Moves *s past leading blanks and cuts trailing blanks (spaces, tabs) in
 * place. */
static void trim(char **s)
{
    char *p = *s;
    while (*p == ' ' || *p == '\t')
        p++;
    char *e = p + strlen(p);
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    *s = p;
}

/* Applies a value written as text (a default or an environment variable):
 * scalars parse as their type; a list is comma-separated with items trimmed,
 * and an empty or blank text is the empty list. Returns 0, or -1 or
 * HUB_ENOMEM with reason set. */
static int set_text(hub_config_t *cfg, const key_desc_t *k, const char *text,
                    char *reason, size_t rlen)
{
    if (k->type != KT_LIST)
        return set_scalar(cfg, k, text, reason, rlen);

    char *copy = strdup(text);
    if (copy == NULL)
        return out_of_memory(reason, rlen);
    char *all = copy;
    size_t n = 0;
    trim(&all);
    if (*all != '\0') {
        n = 1;
        for (const char *p = all; *p; p++)
            n += *p == ',';
    }
    const char **items = malloc((n ? n : 1) * sizeof(char *));
    if (items == NULL) {
        free(copy);
        return out_of_memory(reason, rlen);
    }
    char *p = all;
    for (size_t i = 0; i < n; i++) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        char *item = p;
        trim(&item);
        items[i] = item;
        p = comma ? comma + 1 : p + strlen(p);
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char sub[REASON_MAX - 32]; /* room for the "item N: " prefix */
        if (check_item(k, items[i], sub, sizeof(sub)) != 0) {
            snprintf(reason, rlen, "item %zu: %s", i + 1, sub);
            rc = -1;
        }
    }
    if (rc == 0)
        rc = store_list(cfg, k, items, n, reason, rlen);
    free(items);
    free(copy);
    return rc;
}

/* ---- per-key rules ---------------------------------------------------- */

static const char *check_addr(const char *s)
{
    char host[256];
    int port;
    if (hub_config_parse_addr(s, host, sizeof(host), &port) != 0)
        return "host:port like :8080, 127.0.0.1:8080 or [::1]:8080";
    return NULL;
}

static const char *check_addr_opt(const char *s)
{
    return s[0] == '\0' ? NULL : check_addr(s);
}

/* The JWT algorithms gohub verifies (libjwt 1.10 names). */
static const char *const jwt_algs[] = { "HS256", "HS384", "HS512", "RS256", "RS384",
                                        "RS512", "ES256", "ES384", "ES512", NULL };

static const char *check_alg(const char *s)
{
    for (size_t i = 0; jwt_algs[i]; i++)
        if (strcmp(s, jwt_algs[i]) == 0)
            return NULL;
    return "one of HS256 HS384 HS512 RS256 RS384 RS512 ES256 ES384 ES512";
}

static const char *check_node_id(const char *s)
{
    size_t n = strlen(s);
    if (n > 64)
        return "at most 64 characters of A-Z a-z 0-9 . _ -";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != '-')
            return "at most 64 characters of A-Z a-z 0-9 . _ -";
    }
    return NULL;
}

/* Room ids follow the registry's rule (they may become bus subjects). */
static const char *check_room_id(const char *s)
{
    return hub_reg_valid_room_id(s, strlen(s)) ? NULL
                                              : "a room id: 1 to 128 of A-Z a-z 0-9 _ - : . @";
}

static const char *check_nonempty(const char *s)
{
    return *s ? NULL : "a non-empty string";
}

/* ---- YAML ------------------------------------------------------------- */

typedef struct {
    const char *file;
    yaml_document_t *doc;
    hub_config_t *cfg;
    char *err;
    size_t errlen;
} yaml_walk_t;

static size_t line_of(const yaml_node_t *n)
{
    return n->start_mark.line + 1;
}

static const char *node_kind(const yaml_node_t *n)
{
    return n->type == YAML_MAPPING_NODE ? "a mapping"
           : n->type == YAML_SEQUENCE_NODE ? "a sequence" : "a scalar";
}

/* True for a plain scalar YAML reads as null: empty, ~, null. */
static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = (const char *)n->data.scalar.value;
    return *s == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

/* Returns the scalar's text, or NULL (error reported for key k, or for the
 * key node itself when k is NULL) if it holds a NUL byte. */
static const char *scalar_text(yaml_walk_t *w, const yaml_node_t *n, const key_desc_t *k)
{
    const char *s = (const char *)n->data.scalar.value;
    if (strlen(s) != n->data.scalar.length) {
        if (k)
            set_err(w->err, w->errlen, "%s:%zu: %s: value contains a NUL byte", w->file,
                    line_of(n), k->path);
        else
            set_err(w->err, w->errlen, "%s:%zu: key contains a NUL byte", w->file,
                    line_of(n));
        return NULL;
    }
    return s;
}

/* Reports "FILE:LINE: key: reason" at node n's line; returns -1. */
static int value_err(yaml_walk_t *w, const key_desc_t *k, const yaml_node_t *n,
                     const char *reason)
{
    set_err(w->err, w->errlen, "%s:%zu: %s: %s", w->file, line_of(n), k->path, reason);
    return -1;
}

/* Applies the YAML value v to the leaf key k; keyline is the line of the
 * key, used when v has the wrong shape. Scalar errors point at the scalar,
 * list item errors at the item. Returns 0 or -1 with w->err set. */
static int apply_node(yaml_walk_t *w, const key_desc_t *k, size_t keyline, yaml_node_t *v)
{
    char reason[REASON_MAX], ebuf[128];

    if (v->type == YAML_MAPPING_NODE ||
        (v->type == YAML_SEQUENCE_NODE && k->type != KT_LIST)) {
        set_err(w->err, w->errlen, "%s:%zu: %s: expected %s, got %s", w->file, keyline,
                k->path, expected(k, ebuf, sizeof(ebuf)), node_kind(v));
        return -1;
    }
    if (v->type == YAML_SCALAR_NODE) {
        const char *text = scalar_text(w, v, k);
        if (text == NULL)
            return -1;
        if (k->type != KT_LIST) {
            if (set_scalar(w->cfg, k, text, reason, sizeof(reason)) != 0)
                return value_err(w, k, v, reason);
            return 0;
        }
        if (is_null(v)) {
            if (store_list(w->cfg, k, NULL, 0, reason, sizeof(reason)) != 0)
                return value_err(w, k, v, reason);
            return 0;
        }
        if (check_item(k, text, reason, sizeof(reason)) != 0 ||
            store_list(w->cfg, k, &text, 1, reason, sizeof(reason)) != 0)
            return value_err(w, k, v, reason);
        return 0;
    }

    /* a sequence for a list key */
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    const char **items = malloc((n ? n : 1) * sizeof(char *));
    if (items == NULL)
        return value_err(w, k, v, "out of memory");
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = yaml_document_get_node(w->doc, v->data.sequence.items.start[i]);
        if (it->type != YAML_SCALAR_NODE) {
            set_err(w->err, w->errlen, "%s:%zu: %s: expected a list of strings, got %s",
                    w->file, line_of(it), k->path, node_kind(it));
            free(items);
            return -1;
        }
        items[i] = scalar_text(w, it, k);
        if (items[i] == NULL) {
            free(items);
            return -1;
        }
        if (check_item(k, items[i], reason, sizeof(reason)) != 0) {
            free(items);
            return value_err(w, k, it, reason);
        }
    }
    int rc = store_list(w->cfg, k, items, n, reason, sizeof(reason));
    free(items);
    return rc != 0 ? value_err(w, k, v, reason) : 0;
}

/* Applies the mapping m whose keys live under prefix ("" at top level):
 * each key is a leaf from the table or a section holding a nested mapping.
 * Rejects duplicate, dotted, non-scalar and unknown keys. Returns 0 or -1
 * with w->err set. */
static int apply_mapping(yaml_walk_t *w, yaml_node_t *m, const char *prefix)
{
    yaml_node_pair_t *pairs = m->data.mapping.pairs.start;
    size_t n = (size_t)(m->data.mapping.pairs.top - pairs);

    for (size_t i = 0; i < n; i++) {
        yaml_node_t *kn = yaml_document_get_node(w->doc, pairs[i].key);
        yaml_node_t *vn = yaml_document_get_node(w->doc, pairs[i].value);
        size_t line = line_of(kn);
        char path[PATH_MAX_CHARS + 1];

        if (kn->type != YAML_SCALAR_NODE) {
            set_err(w->err, w->errlen, "%s:%zu: expected a key name, got %s", w->file, line,
                    node_kind(kn));
            return -1;
        }
        const char *name = scalar_text(w, kn, NULL);
        if (name == NULL)
            return -1;
        snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", name);

        for (size_t j = 0; j < i; j++) {
            yaml_node_t *prev = yaml_document_get_node(w->doc, pairs[j].key);
            if (prev->type == YAML_SCALAR_NODE &&
                strcmp((const char *)prev->data.scalar.value, name) == 0) {
                set_err(w->err, w->errlen, "%s:%zu: duplicate key '%s'", w->file, line, path);
                return -1;
            }
        }
        if (strchr(name, '.') != NULL) {
            set_err(w->err, w->errlen,
                    "%s:%zu: unknown key '%s' (write nested mappings, not dotted keys)",
                    w->file, line, path);
            return -1;
        }

        const key_desc_t *k = find_key(path);
        if (k != NULL) {
            if (apply_node(w, k, line, vn) != 0)
                return -1;
        } else if (is_section(path)) {
            if (vn->type == YAML_MAPPING_NODE) {
                if (apply_mapping(w, vn, path) != 0)
                    return -1;
            } else if (!is_null(vn)) { /* "server:" with nothing under it is fine */
                set_err(w->err, w->errlen, "%s:%zu: %s: expected a mapping of %s.* keys, got %s",
                        w->file, line, path, path, node_kind(vn));
                return -1;
            }
        } else {
            set_err(w->err, w->errlen, "%s:%zu: unknown key '%s'", w->file, line, path);
            return -1;
        }
    }
    return 0;
}

/* Reads the whole file into a NUL-terminated heap buffer. Returns 0 or -1
 * with err set ("FILE: cannot open: ..."). */
static int read_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (buf == NULL) {
        set_err(err, errlen, "%s: out of memory", path);
        fclose(f);
        return -1;
    }
    for (;;) {
        if (len + 1 == cap) {
            if (cap >= FILE_MAX_BYTES) {
                set_err(err, errlen, "%s: file is larger than %d bytes", path, FILE_MAX_BYTES);
                goto fail;
            }
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                set_err(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - 1 - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) {
                set_err(err, errlen, "%s: cannot read: %s", path, strerror(errno));
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;
fail:
    fclose(f);
    free(buf);
    return -1;
}

/* Reports a libyaml parser failure as "FILE:LINE: YAML syntax error: ...". */
static void yaml_fail(const yaml_parser_t *p, const char *file, const char *buf, char *err,
                      size_t errlen)
{
    size_t line = p->problem_mark.line + 1;
    if (p->error == YAML_READER_ERROR) { /* reader errors carry a byte offset only */
        line = 1;
        for (size_t i = 0; i < p->problem_offset && buf[i]; i++)
            line += buf[i] == '\n';
    }
    if (p->error == YAML_MEMORY_ERROR)
        set_err(err, errlen, "%s: out of memory while parsing YAML", file);
    else
        set_err(err, errlen, "%s:%zu: YAML syntax error: %s", file, line,
                p->problem ? p->problem : "unknown error");
}

/* Applies the YAML file at path to cfg. Returns 0 or -1 with err set. */
static int apply_file(hub_config_t *cfg, const char *path, char *err, size_t errlen)
{
    char *buf;
    size_t len;
    if (read_file(path, &buf, &len, err, errlen) != 0)
        return -1;

    yaml_parser_t parser;
    yaml_document_t doc, extra;
    int rc = -1;
    if (!yaml_parser_initialize(&parser)) {
        set_err(err, errlen, "%s: out of memory", path);
        free(buf);
        return -1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_fail(&parser, path, buf, err, errlen);
        goto out_parser;
    }

    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root != NULL && !is_null(root)) {
        if (root->type != YAML_MAPPING_NODE) {
            set_err(err, errlen, "%s:%zu: the top level must be a mapping, got %s", path,
                    line_of(root), node_kind(root));
            goto out_doc;
        }
        yaml_walk_t w = { path, &doc, cfg, err, errlen };
        if (apply_mapping(&w, root, "") != 0)
            goto out_doc;
    }

    /* a second document ("---") would be silently ignored: refuse it */
    if (!yaml_parser_load(&parser, &extra)) {
        yaml_fail(&parser, path, buf, err, errlen);
        goto out_doc;
    }
    yaml_node_t *root2 = yaml_document_get_root_node(&extra);
    if (root2 != NULL)
        set_err(err, errlen, "%s:%zu: expected a single YAML document", path,
                line_of(root2));
    else
        rc = 0;
    yaml_document_delete(&extra);
out_doc:
    yaml_document_delete(&doc);
out_parser:
    yaml_parser_delete(&parser);
    free(buf);
    return rc;
}

/* ---- environment ------------------------------------------------------ */

/* Applies one variable to k. For an alias of an address key, a bare port
 * (WEBSOCKET_PORT=8080) means ":8080". Returns 0 or -1 + err. */
static int apply_var(hub_config_t *cfg, const key_desc_t *k, const char *name,
                     const char *v, int alias, char *err, size_t errlen)
{
    char reason[REASON_MAX], port[16];
    if (alias && (k->check == check_addr || k->check == check_addr_opt)) {
        size_t n = strlen(v);
        if (n > 0 && n < sizeof(port) - 1 && strspn(v, "0123456789") == n) {
            snprintf(port, sizeof(port), ":%s", v);
            v = port;
        }
    }
    if (set_text(cfg, k, v, reason, sizeof(reason)) != 0) {
        set_err(err, errlen, "env %s: %s", name, reason);
        return -1;
    }
    return 0;
}

/* Applies the second reference system's variables, then every GOHUB_<KEY>
 * variable that is set (so GOHUB_* wins). Returns 0 or -1 + err. */
static int apply_env(hub_config_t *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < HUB_ARRAY_LEN(keys); i++) {
        const char *alias = keys[i].alias_env;
        const char *v = alias ? getenv(alias) : NULL;
        if (v != NULL && apply_var(cfg, &keys[i], alias, v, 1, err, errlen) != 0)
            return -1;
    }
    for (size_t i = 0; i < HUB_ARRAY_LEN(keys); i++) {
        char name[PATH_MAX_CHARS + 8];
        env_name(&keys[i], name, sizeof(name));
        const char *v = getenv(name);
        if (v != NULL && apply_var(cfg, &keys[i], name, v, 0, err, errlen) != 0)
            return -1;
    }
    return 0;
}

/* Rules that span keys; errors name the file (path, or NULL for none).
 * Returns 0 or -1 + err. */
static int check_cross(const hub_config_t *cfg, const char *path, char *err, size_t errlen)
{
    const char *at = path ? path : "config", *sep = ": ";
    if (cfg->cluster_node_id[0] && cfg->server_node_id[0] &&
        strcmp(cfg->cluster_node_id, cfg->server_node_id) != 0) {
        set_err(err, errlen, "%s%scluster.node_id: differs from server.node_id (set one)", at,
                sep);
        return -1;
    }
    if (cfg->cluster_node_timeout_ms <= 2 * cfg->cluster_heartbeat_ms) {
        set_err(err, errlen, "%s%scluster.node_timeout: must be more than twice "
                "cluster.heartbeat_interval", at, sep);
        return -1;
    }
    if (!cfg->auth_enabled)
        return 0;
    int hs = cfg->auth_secret_key[0] != '\0', pk = cfg->auth_public_key_file[0] != '\0';
    if (!hs && !pk) {
        set_err(err, errlen, "%s%sauth.enabled: needs auth.secret_key or auth.public_key_file",
                at, sep);
        return -1;
    }
    for (size_t i = 0; i < cfg->auth_algorithms.n; i++) {
        const char *a = cfg->auth_algorithms.items[i];
        if (a[0] == 'H' ? !hs : !pk) {
            set_err(err, errlen, "%s%sauth.algorithms: %s needs %s", at, sep, a,
                    a[0] == 'H' ? "auth.secret_key" : "auth.public_key_file");
            return -1;
        }
    }
    return 0;
}

/* ---- public ----------------------------------------------------------- */

hub_config_t *hub_config_load(const char *path, char *err, size_t errlen)
{
    hub_config_t *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < HUB_ARRAY_LEN(keys); i++) {
        char reason[REASON_MAX];
        int rc = set_text(cfg, &keys[i], keys[i].def, reason, sizeof(reason));
        if (rc == HUB_ENOMEM) {
            set_err(err, errlen, "out of memory");
            goto fail;
        }
        if (rc != 0) {
            fprintf(stderr, "gohub: bad default for %s: %s\n", keys[i].path, reason);
            hub_assert(!"config key table has an invalid default");
        }
    }
    if (path != NULL && apply_file(cfg, path, err, errlen) != 0)
        goto fail;
    if (apply_env(cfg, err, errlen) != 0)
        goto fail;
    /* per-key rules were checked as each value was applied, so each error
     * names its origin */
    if (check_cross(cfg, path, err, errlen) != 0)
        goto fail;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    return cfg;
fail:
    hub_config_free(cfg);
    return NULL;
}

void hub_config_free(hub_config_t *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < HUB_ARRAY_LEN(keys); i++) {
        if (keys[i].type == KT_STRING)
            free(*(char **)field(cfg, &keys[i]));
        else if (keys[i].type == KT_LIST)
            list_clear(field(cfg, &keys[i]));
    }
    free(cfg);
}

/* True when k's value is the same in a and b. */
static bool same_value(const hub_config_t *a, const hub_config_t *b, const key_desc_t *k)
{
    const void *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
    if (k->type == KT_STRING)
        return strcmp(*(char *const *)fa, *(char *const *)fb) == 0;
    if (k->type != KT_LIST)
        return memcmp(fa, fb, k->size) == 0;
    const hub_strlist_t *la = fa, *lb = fb;
    if (la->n != lb->n)
        return false;
    for (size_t i = 0; i < la->n; i++)
        if (strcmp(la->items[i], lb->items[i]) != 0)
            return false;
    return true;
}

/* Replaces k's value in dst with a copy of src's. Returns 0 or HUB_ENOMEM
 * (dst keeps its own value). */
static int copy_value(hub_config_t *dst, const hub_config_t *src, const key_desc_t *k)
{
    void *fd = field(dst, k);
    const void *fs = (const char *)src + k->offset;
    if (k->type == KT_STRING) {
        char *v = strdup(*(char *const *)fs);
        if (v == NULL)
            return HUB_ENOMEM;
        free(*(char **)fd);
        *(char **)fd = v;
        return 0;
    }
    if (k->type != KT_LIST) {
        memcpy(fd, fs, k->size);
        return 0;
    }
    const hub_strlist_t *ls = fs;
    return list_set(fd, (const char *const *)ls->items, ls->n);
}

hub_config_t *hub_config_reload(const hub_config_t *old, const char *path, char *err,
                                size_t errlen, char *kept, size_t keptlen)
{
    size_t j = 0;
    if (kept != NULL && keptlen > 0)
        kept[0] = '\0';
    hub_config_t *cfg = hub_config_load(path, err, errlen);
    if (cfg == NULL)
        return NULL;
    for (size_t i = 0; i < HUB_ARRAY_LEN(keys); i++) {
        const key_desc_t *k = &keys[i];
        if (k->reload || same_value(old, cfg, k))
            continue;
        if (copy_value(cfg, old, k) != 0) {
            set_err(err, errlen, "out of memory");
            hub_config_free(cfg);
            return NULL;
        }
        if (kept != NULL && j + 1 < keptlen)
            j += (size_t)snprintf(kept + j, keptlen - j, "%s%s", j ? " " : "", k->path);
    }
    /* restart-only values came back from old: re-check the rules that span
     * keys on the mix */
    if (check_cross(cfg, path, err, errlen) != 0) {
        hub_config_free(cfg);
        return NULL;
    }
    return cfg;
}

int hub_config_key_reloadable(const char *path)
{
    const key_desc_t *k = find_key(path);
    return k != NULL && k->reload;
}

void hub_config_dump_keys(FILE *out)
{
    fprintf(out, "| key | env | type | default | reload | meaning |\n");
    fprintf(out, "|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < HUB_ARRAY_LEN(keys); i++) {
        const key_desc_t *k = &keys[i];
        char name[PATH_MAX_CHARS + 8], type[160], range[80], def[96];
        env_name(k, name, sizeof(name));
        switch (k->type) {
        case KT_INT:
        case KT_DURATION:
        case KT_SIZE:
            fmt_range(k, range, sizeof(range));
            snprintf(type, sizeof(type), "%s %s",
                     k->type == KT_INT ? "int" : k->type == KT_DURATION ? "duration" : "size",
                     range);
            break;
        case KT_BOOL:
            snprintf(type, sizeof(type), "bool");
            break;
        case KT_ENUM: {
            char list[96];
            snprintf(type, sizeof(type), "enum: %s", choices_text(k, list, sizeof(list)));
            break;
        }
        case KT_STRING:
            snprintf(type, sizeof(type), "string");
            break;
        case KT_LIST:
            snprintf(type, sizeof(type), "list of strings");
            break;
        }
        if (k->type == KT_LIST)
            snprintf(def, sizeof(def), "`[%s]`", k->def);
        else if (k->def[0] == '\0')
            snprintf(def, sizeof(def), "`\"\"`");
        else
            snprintf(def, sizeof(def), "`%s`", k->def);
        char env[PATH_MAX_CHARS + 48];
        if (k->alias_env)
            snprintf(env, sizeof(env), "`%s`, `%s`", name, k->alias_env);
        else
            snprintf(env, sizeof(env), "`%s`", name);
        fprintf(out, "| `%s` | %s | %s | %s | %s | %s |\n", k->path, env, type, def,
                k->reload ? "live" : "restart", k->help);
    }
}

int hub_config_parse_addr(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *h, *hend, *p;

    if (addr == NULL || host == NULL || hostlen == 0 || port == NULL)
        return HUB_EINVAL;
    if (addr[0] == '[') { /* "[v6addr]:port" */
        hend = strchr(addr, ']');
        if (hend == NULL || hend == addr + 1 || hend[1] != ':')
            return HUB_EINVAL;
        h = addr + 1;
        p = hend + 2;
        for (const char *c = h; c < hend; c++)
            if (!isxdigit((unsigned char)*c) && *c != ':' && *c != '.' && *c != '%' &&
                !isalnum((unsigned char)*c) && *c != '_' && *c != '-')
                return HUB_EINVAL;
        if (memchr(h, ':', (size_t)(hend - h)) == NULL)
            return HUB_EINVAL;
    } else {
        const char *colon = strrchr(addr, ':');
        if (colon == NULL || memchr(addr, ':', (size_t)(colon - addr)) != NULL)
            return HUB_EINVAL; /* no port, or an IPv6 address without brackets */
        h = addr;
        hend = colon;
        p = colon + 1;
        if (hend == h || (hend - h == 1 && *h == '*')) {
            h = "0.0.0.0";
            hend = h + strlen(h);
        } else {
            for (const char *c = h; c < hend; c++)
                if (!isalnum((unsigned char)*c) && *c != '.' && *c != '-' && *c != '_')
                    return HUB_EINVAL;
        }
    }

    size_t plen = strlen(p);
    if (plen == 0 || plen > 5)
        return HUB_EINVAL;
    long v = 0;
    for (const char *c = p; *c; c++) {
        if (!isdigit((unsigned char)*c))
            return HUB_EINVAL;
        v = v * 10 + (*c - '0');
    }
    if (v > 65535)
        return HUB_EINVAL;

    size_t hl = (size_t)(hend - h);
    if (hl >= hostlen)
        return HUB_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)v;
    return 0;
}
