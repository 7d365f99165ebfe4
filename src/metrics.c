/* metrics.c: the fixed label sets, the per-thread counters' update
 * functions, /proc/self figures, and the Prometheus text exposition (format
 * 0.0.4) of a node's summed counters. See metrics.h for the threading
 * design. Update functions: the owning thread; the rest: any thread. */
#include "metrics.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bus.h"
#include "cluster.h"
#include "conn.h"
#include "log.h"
#include "registry.h"
#include "routes.h"
#include "server.h"
#include "worker.h"

_Thread_local hub_metrics_t *hub_metrics_tls;

/* Threads without a struct of their own share this one: their updates may
 * be lost to each other (load + store), which is harmless for a sink. */
static hub_metrics_t sink_metrics;
static hub_metrics_t main_metrics;
static hub_metrics_t bus_metrics;

hub_metrics_t *hub_metrics_sink(void)
{
    return &sink_metrics;
}

hub_metrics_t *hub_metrics_main(void)
{
    return &main_metrics;
}

hub_metrics_t *hub_metrics_bus(void)
{
    return &bus_metrics;
}

/* ---- label sets ---------------------------------------------------------- */

/* Which direction a type's series are always exposed for (zeros included);
 * in the other direction it appears once non-zero (a client may send any
 * name, a handler may send any type). */
#define DIR_IN 1  /* sent by clients */
#define DIR_OUT 2 /* sent by the server */
#define T(i, s, d) [i] = { s, sizeof(s) - 1, d }
static const struct {
    const char *s;
    size_t len;
    int dir;
} types[HUB_MT_COUNT] = {
    T(HUB_MT_NONE, "", 0),
    T(HUB_MT_PING, "ping", DIR_IN),
    T(HUB_MT_AUTHENTICATE, "authenticate", DIR_IN),
    T(HUB_MT_JOIN_ROOM, "join_room", DIR_IN),
    T(HUB_MT_LEAVE_ROOM, "leave_room", DIR_IN),
    T(HUB_MT_ROOM_MESSAGE, "room_message", DIR_IN | DIR_OUT),
    T(HUB_MT_DIRECT_MESSAGE, "direct_message", DIR_IN | DIR_OUT),
    T(HUB_MT_CREATE_ROOM, "create_room", DIR_IN),
    T(HUB_MT_DELETE_ROOM, "delete_room", DIR_IN),
    T(HUB_MT_LIST_ROOMS, "list_rooms", DIR_IN),
    T(HUB_MT_ROOM_MEMBERS, "room_members", DIR_IN | DIR_OUT),
    T(HUB_MT_BROADCAST, "broadcast", DIR_IN | DIR_OUT),
    T(HUB_MT_PONG, "pong", DIR_OUT),
    T(HUB_MT_AUTHENTICATED, "authenticated", DIR_OUT),
    T(HUB_MT_ROOM_JOINED, "room_joined", DIR_OUT),
    T(HUB_MT_ROOM_LEFT, "room_left", DIR_OUT),
    T(HUB_MT_ACK, "ack", DIR_OUT),
    T(HUB_MT_MEMBER_JOINED, "member_joined", DIR_OUT),
    T(HUB_MT_MEMBER_LEFT, "member_left", DIR_OUT),
    T(HUB_MT_ROOM_CREATED, "room_created", DIR_OUT),
    T(HUB_MT_ROOM_DELETED, "room_deleted", DIR_OUT),
    T(HUB_MT_ROOMS, "rooms", DIR_OUT),
    T(HUB_MT_ERROR, "error", DIR_OUT),
    T(HUB_MT_OTHER, "other", DIR_IN | DIR_OUT),
    T(HUB_MT_INVALID, "invalid", DIR_IN),
};
#undef T

int hub_metrics_type(const char *name, size_t len)
{
    /* runs once per frame: the length and the first and last bytes are
     * compared before the rest (several names share a length) */
    for (int i = HUB_MT_PING; i < HUB_MT_OTHER; i++)
        if (types[i].len == len && types[i].s[0] == name[0] &&
            types[i].s[len - 1] == name[len - 1] && memcmp(types[i].s, name, len) == 0)
            return i;
    return HUB_MT_OTHER;
}

const char *hub_metrics_type_name(int type)
{
    return type >= 0 && type < HUB_MT_COUNT ? types[type].s : "other";
}

static const struct {
    unsigned code;
    const char *reason;
} close_labels[HUB_MC_NCODES] = {
    [HUB_MC_1000] = { 1000, "normal" },
    [HUB_MC_1001] = { 1001, "going_away" },
    [HUB_MC_1002] = { 1002, "protocol_error" },
    [HUB_MC_1003] = { 1003, "unsupported_data" },
    [HUB_MC_1005] = { 1005, "no_status" },
    [HUB_MC_1006] = { 1006, "abnormal" },
    [HUB_MC_1007] = { 1007, "invalid_payload" },
    [HUB_MC_1008] = { 1008, "policy_violation" },
    [HUB_MC_1009] = { 1009, "message_too_big" },
    [HUB_MC_1011] = { 1011, "internal_error" },
    [HUB_MC_1013] = { 1013, "slow_consumer" },
    [HUB_MC_OTHER] = { 0, "other" },
};

/* The protocol's error codes (PROTOCOL.md "Errors"); the last slot is "other". */
static const int error_codes[HUB_ME_NCODES - 1] = {
    1000, 1001, 1002, 1003, 1004, 1005, 1006, 2000, 2001, 2002,
    2003, 3000, 3001, 3002, 3003, 3004, 4000, 4001, 4002,
};

/* hub_auth_reason_name's names (auth.h), HUB_AUTH_NO_TOKEN onwards; the
 * last slot is "other". */
static const char *const auth_reasons[HUB_MA_NREASONS] = {
    "no_token", "too_long", "malformed", "bad_alg", "bad_signature", "expired",
    "not_yet_valid", "missing_exp", "bad_issuer", "bad_audience", "bad_claims", "internal",
    "other",
};

/* Handler duration bounds: nanoseconds, and the same as le label text.
 * Handlers take tens of microseconds, so the low end is fine-grained. */
static const uint64_t dur_bounds_ns[HUB_MD_BUCKETS] = {
    50000,    100000,    250000,    500000,    1000000,   2500000,    5000000,    10000000,
    25000000, 50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000ULL,
};
static const char *const dur_le[HUB_MD_BUCKETS] = {
    "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
    "0.025",   "0.05",   "0.1",     "0.25",   "0.5",   "1",      "2.5",
};

/* Message size bounds in bytes: GoHub's gohub_message_size buckets (64 x 4^k
 * up to 256 KiB) and 1 MiB. */
static const uint64_t size_bounds[HUB_MS_BUCKETS] = {
    64, 256, 1024, 4096, 16384, 65536, 262144, 1048576,
};

/* ---- updates (owner thread) ---------------------------------------------- */

void hub_metrics_message_size(hub_metrics_t *m, size_t n)
{
    int b = 0;
    while (b < HUB_MS_BUCKETS && n > size_bounds[b])
        b++;
    hub_mc_add(&m->size_buckets[b], 1);
    hub_mc_add(&m->size_sum, n);
}

void hub_metrics_handled(hub_metrics_t *m, int type, uint64_t ns)
{
    hub_mc_add(&m->received[type], 1);
    int b = 0;
    while (b < HUB_MD_BUCKETS && ns > dur_bounds_ns[b])
        b++;
    hub_mc_add(&m->dur_buckets[type][b], 1);
    hub_mc_add(&m->dur_sum[type], ns);
}

void hub_metrics_closed(hub_metrics_t *m, unsigned code)
{
    if (code == 0)
        code = 1006;
    int i = 0;
    while (i < HUB_MC_OTHER && close_labels[i].code != code)
        i++;
    hub_mc_add(&m->conns_closed[i], 1);
}

void hub_metrics_error(hub_metrics_t *m, int code)
{
    int i = 0;
    while (i < HUB_ME_NCODES - 1 && error_codes[i] != code)
        i++;
    hub_mc_add(&m->errors[i], 1);
}

void hub_metrics_auth(hub_metrics_t *m, int ok, const char *reason)
{
    if (m == NULL)
        m = hub_metrics_here();
    if (ok) {
        hub_mc_add(&m->auth_ok, 1);
        return;
    }
    int i = 0;
    while (i < HUB_MA_NREASONS - 1 && (reason == NULL || strcmp(auth_reasons[i], reason) != 0))
        i++;
    hub_mc_add(&m->auth_failed[i], 1);
}

void hub_metrics_reload(int ok)
{
    hub_mc_add(ok ? &main_metrics.reloads_ok : &main_metrics.reloads_failed, 1);
}

/* ---- /proc/self ---------------------------------------------------------- */

/* Reads a small /proc file into buf (NUL-terminated). Returns its length
 * or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (ssize_t)n;
}

/* The boot time (seconds since the epoch) from /proc/stat's btime line.
 * Its "intr" line grows with the machine's interrupt count (kilobytes on
 * big hosts), so the file is read line by line; the value never changes,
 * so it is read once (a race only reads it twice). 0 when unknown. */
static unsigned long long boot_time(void)
{
    static _Atomic unsigned long long cached;
    unsigned long long v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v != 0)
        return v;
    FILE *f = fopen("/proc/stat", "re");
    if (f == NULL)
        return 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        if (strncmp(line, "btime ", 6) == 0) {
            v = strtoull(line + 6, NULL, 10);
            break;
        }
    }
    free(line);
    fclose(f);
    atomic_store_explicit(&cached, v, memory_order_relaxed);
    return v;
}

int hub_proc_stats(hub_proc_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    long tck = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    if (tck <= 0)
        tck = 100;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        out->max_fds = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        struct dirent *e;
        uint64_t n = 0;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                n++;
        closedir(d);
        out->open_fds = n > 0 ? n - 1 : 0; /* not the one opendir holds */
    }
    char buf[4096];
    unsigned long long btime = boot_time();
    if (read_small("/proc/self/stat", buf, sizeof(buf)) <= 0)
        return -1;
    /* the command name (field 2) may hold spaces and parentheses: fields
     * are counted from the last ')' */
    const char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
    long long rss = 0;
    int field = 2;
    for (const char *s = p + 1; *s; s++) {
        if (*s != ' ')
            continue;
        field++;
        const char *v = s + 1;
        switch (field) {
        case 14: utime = strtoull(v, NULL, 10); break;
        case 15: stime = strtoull(v, NULL, 10); break;
        case 22: start = strtoull(v, NULL, 10); break;
        case 23: vsize = strtoull(v, NULL, 10); break;
        case 24: rss = strtoll(v, NULL, 10); break;
        default: break;
        }
        if (field == 24)
            break;
    }
    out->cpu_seconds = (double)(utime + stime) / (double)tck;
    out->rss_bytes = rss > 0 && page > 0 ? (uint64_t)rss * (uint64_t)page : 0;
    out->vsize_bytes = vsize;
    if (btime)
        out->start_time = (double)btime + (double)start / (double)tck;
    return 0;
}

/* ---- the sum of many structs --------------------------------------------- */

static void acc(uint64_t *dst, const hub_mcounter_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += hub_mc_get(&src[i]);
}

void hub_metrics_accumulate(hub_metrics_snap_t *s, const hub_metrics_t *m)
{
    acc(&s->conns_opened, &m->conns_opened, 1);
    acc(s->conns_closed, m->conns_closed, HUB_MC_NCODES);
    acc(s->received, m->received, HUB_MT_COUNT);
    acc(s->sent, m->sent, HUB_MT_COUNT);
    acc(s->dropped, m->dropped, HUB_DROP_NREASONS);
    acc(&s->slow_consumers, &m->slow_consumers, 1);
    acc(&s->room_joins, &m->room_joins, 1);
    acc(&s->room_leaves, &m->room_leaves, 1);
    acc(s->errors, m->errors, HUB_ME_NCODES);
    acc(&s->auth_ok, &m->auth_ok, 1);
    acc(s->auth_failed, m->auth_failed, HUB_MA_NREASONS);
    acc(&s->reloads_ok, &m->reloads_ok, 1);
    acc(&s->reloads_failed, &m->reloads_failed, 1);
    acc(&s->queue_bytes, &m->queue_bytes, 1);
    acc(s->size_buckets, m->size_buckets, HUB_MS_BUCKETS + 1);
    acc(&s->size_sum, &m->size_sum, 1);
    for (int t = 0; t < HUB_MT_COUNT; t++)
        acc(s->dur_buckets[t], m->dur_buckets[t], HUB_MD_BUCKETS + 1);
    acc(s->dur_sum, m->dur_sum, HUB_MT_COUNT);
    acc(&s->bus_published, &m->bus_published, 1);
    acc(&s->bus_received, &m->bus_received, 1);
    acc(&s->bus_reconnects, &m->bus_reconnects, 1);
    acc(s->bus_dropped, m->bus_dropped, HUB_BD_NREASONS);
}

/* ---- text exposition ----------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf_t;

static void sb_reserve(sbuf_t *b, size_t more)
{
    if (b->oom || b->len + more < b->cap)
        return;
    size_t cap = b->cap ? b->cap : 16384;
    while (cap <= b->len + more)
        cap *= 2;
    char *np = realloc(b->p, cap);
    if (np == NULL) {
        b->oom = 1;
        return;
    }
    b->p = np;
    b->cap = cap;
}

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    sb_reserve(b, (size_t)n + 1);
    if (b->oom)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* A label value with \, " and newline escaped (the format's rule). */
static void sb_label_value(sbuf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            sb_printf(b, "\\\\");
        else if (*s == '"')
            sb_printf(b, "\\\"");
        else if (*s == '\n')
            sb_printf(b, "\\n");
        else
            sb_printf(b, "%c", *s);
    }
}

static void family(sbuf_t *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void scalar(sbuf_t *b, const char *name, const char *type, const char *help, uint64_t v)
{
    family(b, name, type, help);
    sb_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* Seconds from nanoseconds, exactly, as a decimal. */
static void sb_seconds(sbuf_t *b, uint64_t ns)
{
    sb_printf(b, "%llu.%09llu", (unsigned long long)(ns / 1000000000ULL),
              (unsigned long long)(ns % 1000000000ULL));
}

/* One histogram series: per-bucket counts made cumulative; _count is the
 * +Inf bucket, so the two always agree. labels is "" or `k="v",`. */
static void histogram(sbuf_t *b, const char *name, const char *labels, const uint64_t *buckets,
                      const char *const *le, const uint64_t *bounds, int nb, uint64_t sum,
                      int sum_is_ns)
{
    uint64_t cum = 0;
    for (int i = 0; i < nb; i++) {
        cum += buckets[i];
        if (le != NULL)
            sb_printf(b, "%s_bucket{%sle=\"%s\"} %llu\n", name, labels, le[i],
                      (unsigned long long)cum);
        else
            sb_printf(b, "%s_bucket{%sle=\"%llu\"} %llu\n", name, labels,
                      (unsigned long long)bounds[i], (unsigned long long)cum);
    }
    cum += buckets[nb];
    sb_printf(b, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
    /* the braces of _sum and _count: labels without the trailing comma */
    size_t ll = strlen(labels);
    if (ll > 0) {
        sb_printf(b, "%s_sum{%.*s} ", name, (int)(ll - 1), labels);
    } else {
        sb_printf(b, "%s_sum ", name);
    }
    if (sum_is_ns)
        sb_seconds(b, sum);
    else
        sb_printf(b, "%llu", (unsigned long long)sum);
    if (ll > 0)
        sb_printf(b, "\n%s_count{%.*s} %llu\n", name, (int)(ll - 1), labels,
                  (unsigned long long)cum);
    else
        sb_printf(b, "\n%s_count %llu\n", name, (unsigned long long)cum);
}

static void by_type(sbuf_t *b, const char *name, const char *help, const uint64_t *v, int dir)
{
    family(b, name, "counter", help);
    for (int t = HUB_MT_PING; t < HUB_MT_COUNT; t++)
        if ((types[t].dir & dir) || v[t] != 0)
            sb_printf(b, "%s{type=\"%s\"} %llu\n", name, types[t].s, (unsigned long long)v[t]);
}

static const char *const bus_drop_reasons[HUB_BD_NREASONS] = {
    [HUB_BD_BUFFER_FULL] = "buffer_full",       [HUB_BD_BUS_ERROR] = "bus_error",
    [HUB_BD_OUT_OF_MEMORY] = "out_of_memory",   [HUB_BD_SLOW_CONSUMER] = "slow_consumer",
    [HUB_BD_MALFORMED] = "malformed",           [HUB_BD_DUPLICATE] = "duplicate",
    [HUB_BD_NODE_ID_CONFLICT] = "node_id_conflict", [HUB_BD_TOO_MANY_NODES] = "too_many_nodes",
};

char *hub_metrics_format(const hub_metrics_snap_t *s, const hub_proc_stats_t *p,
                         const char *version, const char *node_id, size_t *len)
{
    sbuf_t b = { NULL, 0, 0, 0 };
    sb_reserve(&b, 1);

    family(&b, "gohub_info", "gauge", "gohub version and node id (the value is always 1).");
    sb_printf(&b, "gohub_info{version=\"");
    sb_label_value(&b, version);
    sb_printf(&b, "\",node_id=\"");
    sb_label_value(&b, node_id);
    sb_printf(&b, "\"} 1\n");

    scalar(&b, "gohub_connected_clients", "gauge", "Open WebSocket connections.",
           s->connected_clients);
    scalar(&b, "gohub_active_rooms", "gauge", "Rooms that exist on this node.", s->rooms);
    scalar(&b, "gohub_connections_opened_total", "counter",
           "WebSocket connections accepted (101 sent).", s->conns_opened);

    family(&b, "gohub_connections_closed_total", "counter",
           "WebSocket connections ended, by the first close code sent or received "
           "(1006: ended without a close frame).");
    for (int i = 0; i < HUB_MC_NCODES; i++) {
        if (i == HUB_MC_OTHER)
            sb_printf(&b, "gohub_connections_closed_total{code=\"other\",reason=\"other\"} %llu\n",
                      (unsigned long long)s->conns_closed[i]);
        else
            sb_printf(&b, "gohub_connections_closed_total{code=\"%u\",reason=\"%s\"} %llu\n",
                      close_labels[i].code, close_labels[i].reason,
                      (unsigned long long)s->conns_closed[i]);
    }

    by_type(&b, "gohub_messages_received_total",
            "Messages received from clients, by message_type (names outside the built-in "
            "set count as other; unreadable messages as invalid).",
            s->received, DIR_IN);
    by_type(&b, "gohub_messages_sent_total",
            "Messages queued to clients, one per recipient, by message_type.", s->sent, DIR_OUT);

    family(&b, "gohub_messages_dropped_total", "counter",
           "Outbound messages not delivered: queue_full (the connection went over "
           "limits.max_outbound_bytes) or closed (the connection was closing).");
    sb_printf(&b, "gohub_messages_dropped_total{reason=\"queue_full\"} %llu\n",
              (unsigned long long)s->dropped[HUB_DROP_QUEUE_FULL]);
    sb_printf(&b, "gohub_messages_dropped_total{reason=\"closed\"} %llu\n",
              (unsigned long long)s->dropped[HUB_DROP_CLOSED]);
    scalar(&b, "gohub_slow_consumer_closes_total", "counter",
           "Connections closed with 1013 because their outbound queue went over "
           "limits.max_outbound_bytes.",
           s->slow_consumers);
    scalar(&b, "gohub_outbound_queue_bytes", "gauge",
           "Bytes queued to clients and not yet written to the kernel (sampled by each "
           "worker's tick, at most 1 s old).",
           s->queue_bytes);

    scalar(&b, "gohub_room_joins_total", "counter", "Room joins.", s->room_joins);
    scalar(&b, "gohub_room_leaves_total", "counter",
           "Room memberships ended: leave_room, a disconnect, or the room deleted.",
           s->room_leaves);

    family(&b, "gohub_errors_total", "counter",
           "Error messages sent to clients, by protocol error code.");
    for (int i = 0; i < HUB_ME_NCODES; i++) {
        if (i == HUB_ME_NCODES - 1)
            sb_printf(&b, "gohub_errors_total{code=\"other\"} %llu\n",
                      (unsigned long long)s->errors[i]);
        else
            sb_printf(&b, "gohub_errors_total{code=\"%d\"} %llu\n", error_codes[i],
                      (unsigned long long)s->errors[i]);
    }

    scalar(&b, "gohub_auth_success_total", "counter",
           "Tokens accepted (at the handshake or by authenticate).", s->auth_ok);
    family(&b, "gohub_auth_failure_total", "counter", "Tokens refused, by reason.");
    for (int i = 0; i < HUB_MA_NREASONS; i++)
        sb_printf(&b, "gohub_auth_failure_total{reason=\"%s\"} %llu\n", auth_reasons[i],
                  (unsigned long long)s->auth_failed[i]);

    family(&b, "gohub_lua_reloads_total", "counter", "Lua code reloads, by result.");
    sb_printf(&b, "gohub_lua_reloads_total{result=\"success\"} %llu\n",
              (unsigned long long)s->reloads_ok);
    sb_printf(&b, "gohub_lua_reloads_total{result=\"failure\"} %llu\n",
              (unsigned long long)s->reloads_failed);

    family(&b, "gohub_message_size_bytes", "histogram",
           "Size of the messages received from clients (payload bytes).");
    histogram(&b, "gohub_message_size_bytes", "", s->size_buckets, NULL, size_bounds,
              HUB_MS_BUCKETS, s->size_sum, 0);

    family(&b, "gohub_handler_duration_seconds", "histogram",
           "Time to handle one received message (parse, Lua handler, reply queued), by "
           "message_type; types not seen yet are left out.");
    for (int t = HUB_MT_PING; t < HUB_MT_COUNT; t++) {
        uint64_t n = 0;
        for (int i = 0; i <= HUB_MD_BUCKETS; i++)
            n += s->dur_buckets[t][i];
        if (n == 0)
            continue;
        char labels[64];
        snprintf(labels, sizeof(labels), "type=\"%s\",", types[t].s);
        histogram(&b, "gohub_handler_duration_seconds", labels, s->dur_buckets[t], dur_le, NULL,
                  HUB_MD_BUCKETS, s->dur_sum[t], 1);
    }

    scalar(&b, "gohub_cluster_bus_up", "gauge",
           "1 while the cluster bus is connected; 0 while it is down, or with no cluster.",
           s->bus_up);
    scalar(&b, "gohub_cluster_nodes", "gauge",
           "Live nodes in this node's view of the cluster, itself included (0 with no cluster).",
           s->cluster_nodes);
    scalar(&b, "gohub_cluster_messages_published_total", "counter",
           "Messages this node handed to the cluster bus.", s->bus_published);
    scalar(&b, "gohub_cluster_messages_received_total", "counter",
           "Messages from other nodes taken from the cluster bus (duplicates and drops "
           "excluded).", s->bus_received);
    family(&b, "gohub_cluster_messages_dropped_total", "counter",
           "Cluster bus messages dropped, by reason.");
    for (int i = 0; i < HUB_BD_NREASONS; i++)
        sb_printf(&b, "gohub_cluster_messages_dropped_total{reason=\"%s\"} %llu\n",
                  bus_drop_reasons[i], (unsigned long long)s->bus_dropped[i]);
    scalar(&b, "gohub_cluster_reconnects_total", "counter",
           "Times the cluster bus connected again after being down.", s->bus_reconnects);

    family(&b, "process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.");
    sb_printf(&b, "process_cpu_seconds_total %.2f\n", p->cpu_seconds);
    scalar(&b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
           p->rss_bytes);
    scalar(&b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
           p->vsize_bytes);
    scalar(&b, "process_open_fds", "gauge", "Number of open file descriptors.", p->open_fds);
    scalar(&b, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
           p->max_fds);
    family(&b, "process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.");
    sb_printf(&b, "process_start_time_seconds %.2f\n", p->start_time);

    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* ---- the node's scrape --------------------------------------------------- */

char *hub_metrics_render(hub_server_t *srv, size_t *len)
{
    hub_metrics_snap_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    for (int i = 0; i < srv->nworkers; i++)
        hub_metrics_accumulate(s, &srv->workers[i].metrics);
    hub_metrics_accumulate(s, &main_metrics);
    hub_metrics_accumulate(s, &bus_metrics);
    s->bus_up = hub_cluster_state() == HUB_BUS_CONNECTED;
    s->cluster_nodes = hub_cluster_nodes(NULL, 0);
    long conns = atomic_load(&srv->ws_connections);
    s->connected_clients = conns > 0 ? (uint64_t)conns : 0;
    size_t clients, rooms;
    hub_reg_counts(&clients, &rooms);
    s->rooms = rooms;
    hub_proc_stats_t p;
    hub_proc_stats(&p);
    char *out = hub_metrics_format(s, &p, GOHUB_VERSION, srv->node_id, len);
    free(s);
    return out;
}

void hub_metrics_serve(hub_conn_t *c, const hub_http_req_t *r, int keep_alive)
{
    if (r->method != HUB_HTTP_GET && r->method != HUB_HTTP_HEAD) {
        hub_routes_error(c, 405, "method_not_allowed", "use GET", "Allow: GET, HEAD\r\n",
                         keep_alive);
        return;
    }
    size_t n = 0;
    char *body = hub_metrics_render(c->w->srv, &n);
    if (body == NULL) {
        hub_routes_error(c, 500, "internal", "out of memory", "", 0);
        return;
    }
    hub_routes_respond(c, 200, "Cache-Control: no-store\r\n",
                       "text/plain; version=0.0.4; charset=utf-8", body, n, keep_alive,
                       r->method == HUB_HTTP_HEAD);
    free(body);
}
