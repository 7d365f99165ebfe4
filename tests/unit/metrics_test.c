/* metrics_test.c: the label sets, histogram bucketing, per-thread structs
 * and their sum, and the text exposition (format 0.0.4) checked line by
 * line with a small parser. */
#include "metrics.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "auth.h"
#include "harness.h"

/* Finds an exact line in text. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return 1;
    return 0;
}

static int count_prefix(const char *text, const char *prefix)
{
    int k = 0;
    size_t n = strlen(prefix);
    for (const char *p = text; *p;) {
        if (strncmp(p, prefix, n) == 0)
            k++;
        const char *nl = strchr(p, '\n');
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return k;
}

static char *format(const hub_metrics_snap_t *s, const char *node_id, size_t *len)
{
    hub_proc_stats_t p;
    memset(&p, 0, sizeof(p));
    p.cpu_seconds = 1.5;
    p.rss_bytes = 4096;
    p.open_fds = 9;
    p.max_fds = 1024;
    p.start_time = 1700000000.25;
    return hub_metrics_format(s, &p, "9.9.9", node_id, len);
}

/* ---- a strict reader of the exposition ----------------------------------- */

typedef struct {
    char name[128];
    char type[16];
    int help;
} fam_t;

/* Checks every line: comments are "# HELP name text" / "# TYPE name type"
 * (HELP first, once per family, before its samples); a sample is
 * name{label="value",...} value with a known family, escaped label
 * values, a numeric value, and no series twice. Returns NULL or the
 * problem. */
static const char *check_exposition(const char *text, size_t len, char *why, size_t wl)
{
    static fam_t fams[64];
    static char seen[1024][200];
    int nf = 0, ns = 0;
    if (len == 0 || text[len - 1] != '\n')
        return "does not end with a newline";
    const char *p = text;
    while (p < text + len) {
        const char *nl = memchr(p, '\n', (size_t)(text + len - p));
        char line[512];
        size_t ll = (size_t)(nl - p);
        if (ll >= sizeof(line))
            return "line too long";
        memcpy(line, p, ll);
        line[ll] = '\0';
        p = nl + 1;
        if (line[0] == '#') {
            char kw[8], name[128], rest[400];
            if (sscanf(line, "# %7s %127s %399[^\n]", kw, name, rest) != 3) {
                snprintf(why, wl, "bad comment: %s", line);
                return why;
            }
            fam_t *f = nf > 0 && strcmp(fams[nf - 1].name, name) == 0 ? &fams[nf - 1] : NULL;
            if (strcmp(kw, "HELP") == 0) {
                for (int i = 0; i < nf; i++)
                    if (strcmp(fams[i].name, name) == 0) {
                        snprintf(why, wl, "family twice: %s", name);
                        return why;
                    }
                f = &fams[nf++];
                snprintf(f->name, sizeof(f->name), "%s", name);
                f->type[0] = '\0';
                f->help = 1;
            } else if (strcmp(kw, "TYPE") == 0) {
                if (f == NULL || f->type[0]) {
                    snprintf(why, wl, "TYPE without HELP just before: %s", line);
                    return why;
                }
                if (strcmp(rest, "counter") && strcmp(rest, "gauge") && strcmp(rest, "histogram")) {
                    snprintf(why, wl, "bad type: %s", line);
                    return why;
                }
                snprintf(f->type, sizeof(f->type), "%.15s", rest);
            } else {
                snprintf(why, wl, "unknown comment: %s", line);
                return why;
            }
            continue;
        }
        /* a sample of the family declared last */
        if (nf == 0) {
            snprintf(why, wl, "sample before any family: %s", line);
            return why;
        }
        fam_t *f = &fams[nf - 1];
        size_t nl_ = strcspn(line, "{ ");
        char name[128];
        memcpy(name, line, nl_);
        name[nl_] = '\0';
        int ok = strcmp(name, f->name) == 0;
        if (!ok && strcmp(f->type, "histogram") == 0) {
            size_t fl = strlen(f->name);
            ok = strncmp(name, f->name, fl) == 0 &&
                 (!strcmp(name + fl, "_bucket") || !strcmp(name + fl, "_sum") ||
                  !strcmp(name + fl, "_count"));
        }
        if (!ok) {
            snprintf(why, wl, "sample %s outside its family %s", name, f->name);
            return why;
        }
        if (strcmp(f->type, "counter") == 0 && strlen(name) > 6 &&
            strcmp(name + strlen(name) - 6, "_total") != 0) {
            snprintf(why, wl, "counter without _total: %s", name);
            return why;
        }
        const char *q = line + nl_;
        if (*q == '{') {
            q++;
            while (*q != '}') {
                while ((*q >= 'a' && *q <= 'z') || *q == '_')
                    q++;
                if (q[0] != '=' || q[1] != '"') {
                    snprintf(why, wl, "bad label: %s", line);
                    return why;
                }
                q += 2;
                while (*q && *q != '"') {
                    if (*q == '\\') {
                        if (q[1] != '\\' && q[1] != '"' && q[1] != 'n') {
                            snprintf(why, wl, "bad escape: %s", line);
                            return why;
                        }
                        q++;
                    }
                    q++;
                }
                if (*q != '"') {
                    snprintf(why, wl, "unterminated label value: %s", line);
                    return why;
                }
                q++;
                if (*q == ',')
                    q++;
                else if (*q != '}') {
                    snprintf(why, wl, "bad label list: %s", line);
                    return why;
                }
            }
            q++;
        }
        if (*q != ' ') {
            snprintf(why, wl, "no value: %s", line);
            return why;
        }
        char *end;
        strtod(q + 1, &end);
        if (end == q + 1 || *end != '\0') {
            snprintf(why, wl, "bad value: %s", line);
            return why;
        }
        size_t sl = (size_t)(q - line);
        if (sl >= sizeof(seen[0]) || ns >= 1024)
            return "series key too long or too many series";
        for (int i = 0; i < ns; i++)
            if (strlen(seen[i]) == sl && memcmp(seen[i], line, sl) == 0) {
                snprintf(why, wl, "series twice: %s", line);
                return why;
            }
        memcpy(seen[ns], line, sl);
        seen[ns++][sl] = '\0';
    }
    return NULL;
}

/* ---- tests ------------------------------------------------------------------ */

TEST(type_labels_are_a_fixed_set)
{
    ASSERT_EQ(hub_metrics_type("ping", 4), HUB_MT_PING);
    ASSERT_EQ(hub_metrics_type("room_message", 12), HUB_MT_ROOM_MESSAGE);
    ASSERT_EQ(hub_metrics_type("error", 5), HUB_MT_ERROR);
    /* not NUL-terminated: the length decides */
    ASSERT_EQ(hub_metrics_type("pingpong", 4), HUB_MT_PING);
    ASSERT_EQ(hub_metrics_type("pin", 3), HUB_MT_OTHER);
    ASSERT_EQ(hub_metrics_type("pings", 5), HUB_MT_OTHER);
    ASSERT_EQ(hub_metrics_type("", 0), HUB_MT_OTHER);
    ASSERT_EQ(hub_metrics_type("other", 5), HUB_MT_OTHER);
    ASSERT_EQ(hub_metrics_type("invalid", 7), HUB_MT_OTHER); /* only the server says invalid */
    ASSERT_EQ(hub_metrics_type("my_custom_type", 14), HUB_MT_OTHER);
    for (int t = HUB_MT_PING; t < HUB_MT_OTHER; t++) {
        const char *n = hub_metrics_type_name(t);
        ASSERT_EQ(hub_metrics_type(n, strlen(n)), t);
    }
    ASSERT_STREQ(hub_metrics_type_name(HUB_MT_INVALID), "invalid");
    ASSERT_STREQ(hub_metrics_type_name(-1), "other");
    ASSERT_STREQ(hub_metrics_type_name(HUB_MT_COUNT), "other");
}

TEST(duration_buckets_use_upper_inclusive_bounds)
{
    hub_metrics_t *m = calloc(1, sizeof(*m));
    hub_metrics_handled(m, HUB_MT_PING, 50000);      /* exactly 50 us: le 0.00005 */
    hub_metrics_handled(m, HUB_MT_PING, 50001);      /* just above: le 0.0001 */
    hub_metrics_handled(m, HUB_MT_PING, 3000000000); /* 3 s: above every bound */
    ASSERT_EQ(hub_mc_get(&m->received[HUB_MT_PING]), 3);
    ASSERT_EQ(hub_mc_get(&m->dur_buckets[HUB_MT_PING][0]), 1);
    ASSERT_EQ(hub_mc_get(&m->dur_buckets[HUB_MT_PING][1]), 1);
    ASSERT_EQ(hub_mc_get(&m->dur_buckets[HUB_MT_PING][HUB_MD_BUCKETS]), 1);
    ASSERT_EQ(hub_mc_get(&m->dur_sum[HUB_MT_PING]), 3000100001ULL);
    hub_metrics_message_size(m, 0);
    hub_metrics_message_size(m, 64);
    hub_metrics_message_size(m, 65);
    hub_metrics_message_size(m, 2000000);
    ASSERT_EQ(hub_mc_get(&m->size_buckets[0]), 2);
    ASSERT_EQ(hub_mc_get(&m->size_buckets[1]), 1);
    ASSERT_EQ(hub_mc_get(&m->size_buckets[HUB_MS_BUCKETS]), 1);
    ASSERT_EQ(hub_mc_get(&m->size_sum), 2000129);
    free(m);
}

TEST(close_error_and_auth_labels_are_bounded)
{
    hub_metrics_t *m = calloc(1, sizeof(*m));
    hub_metrics_closed(m, 0);    /* no close frame: 1006 */
    hub_metrics_closed(m, 1006);
    hub_metrics_closed(m, 1013);
    hub_metrics_closed(m, 4001); /* an application code */
    hub_metrics_closed(m, 999);
    ASSERT_EQ(hub_mc_get(&m->conns_closed[HUB_MC_1006]), 2);
    ASSERT_EQ(hub_mc_get(&m->conns_closed[HUB_MC_1013]), 1);
    ASSERT_EQ(hub_mc_get(&m->conns_closed[HUB_MC_OTHER]), 2);
    hub_metrics_error(m, 1000);
    hub_metrics_error(m, 4002);
    hub_metrics_error(m, 4002);
    hub_metrics_error(m, 12345);
    ASSERT_EQ(hub_mc_get(&m->errors[0]), 1);
    ASSERT_EQ(hub_mc_get(&m->errors[HUB_ME_NCODES - 2]), 2);
    ASSERT_EQ(hub_mc_get(&m->errors[HUB_ME_NCODES - 1]), 1);
    hub_metrics_auth(m, 1, NULL);
    hub_metrics_auth(m, 0, "no_token");
    hub_metrics_auth(m, 0, "expired");
    hub_metrics_auth(m, 0, "internal");
    hub_metrics_auth(m, 0, "something new");
    hub_metrics_auth(m, 0, NULL);
    ASSERT_EQ(hub_mc_get(&m->auth_ok), 1);
    ASSERT_EQ(hub_mc_get(&m->auth_failed[0]), 1);
    ASSERT_EQ(hub_mc_get(&m->auth_failed[5]), 1);
    ASSERT_EQ(hub_mc_get(&m->auth_failed[HUB_MA_NREASONS - 2]), 1);
    ASSERT_EQ(hub_mc_get(&m->auth_failed[HUB_MA_NREASONS - 1]), 2);
    free(m);
}

/* auth.c's reason names are the label values, in enum order: a reason
 * added there without a label here would count as "other". */
TEST(every_auth_reason_has_its_own_label)
{
    ASSERT_EQ(HUB_AUTH_NREASONS - 1, HUB_MA_NREASONS - 1);
    for (int r = HUB_AUTH_OK + 1; r < HUB_AUTH_NREASONS; r++) {
        hub_metrics_t m;
        memset(&m, 0, sizeof(m));
        hub_metrics_auth(&m, 0, hub_auth_reason_name((hub_auth_reason_t)r));
        if (hub_mc_get(&m.auth_failed[r - 1]) != 1)
            FAILF("reason %d (%s) is not counted in slot %d", r,
                  hub_auth_reason_name((hub_auth_reason_t)r), r - 1);
    }
}

TEST(gauges_are_summed_across_workers)
{
    hub_metrics_t m;
    memset(&m, 0, sizeof(m));
    hub_mc_set(&m.queue_bytes, 100);
    hub_mc_set(&m.queue_bytes, 60); /* a gauge goes down too */
    hub_metrics_t n;
    memset(&n, 0, sizeof(n));
    hub_mc_set(&n.queue_bytes, 5);
    hub_metrics_snap_t *s = calloc(1, sizeof(*s));
    hub_metrics_accumulate(s, &m);
    hub_metrics_accumulate(s, &n);
    ASSERT_EQ(s->queue_bytes, 65);
    free(s);
}

static void *bound_elsewhere;
static void probe_thread(void *arg)
{
    HUB_UNUSED(arg);
    bound_elsewhere = hub_metrics_here();
}

TEST(each_thread_counts_into_its_own_struct)
{
    hub_metrics_t *m = calloc(1, sizeof(*m));
    ASSERT(hub_metrics_here() == hub_metrics_sink());
    hub_metrics_bind(m);
    ASSERT(hub_metrics_here() == m);
    uv_thread_t t;
    ASSERT_EQ(uv_thread_create(&t, probe_thread, NULL), 0);
    uv_thread_join(&t);
    ASSERT(bound_elsewhere == hub_metrics_sink()); /* not ours */
    hub_metrics_auth(NULL, 1, NULL);                /* NULL: this thread's struct */
    ASSERT_EQ(hub_mc_get(&m->auth_ok), 1);
    hub_metrics_bind(NULL);
    ASSERT(hub_metrics_here() == hub_metrics_sink());
    free(m);
}

/* Writers increment their own structs while a reader sums them: every sum
 * it sees is monotonic, and the last one is exact. */
#define RACE_N 200000
static hub_metrics_t race_m[2];
static void race_writer(void *arg)
{
    hub_metrics_t *m = arg;
    for (int i = 0; i < RACE_N; i++) {
        hub_mc_add(&m->room_joins, 1);
        hub_metrics_handled(m, HUB_MT_ROOM_MESSAGE, 1000);
    }
}

TEST(scrapes_during_updates_are_monotonic)
{
    memset(race_m, 0, sizeof(race_m));
    uv_thread_t a, b;
    ASSERT_EQ(uv_thread_create(&a, race_writer, &race_m[0]), 0);
    ASSERT_EQ(uv_thread_create(&b, race_writer, &race_m[1]), 0);
    hub_metrics_snap_t *s = calloc(1, sizeof(*s));
    uint64_t last = 0, last_dur = 0;
    for (int i = 0; i < 2000; i++) {
        memset(s, 0, sizeof(*s));
        hub_metrics_accumulate(s, &race_m[0]);
        hub_metrics_accumulate(s, &race_m[1]);
        if (s->room_joins < last || s->dur_buckets[HUB_MT_ROOM_MESSAGE][0] < last_dur) {
            free(s);
            FAILF("a scrape went backwards");
        }
        last = s->room_joins;
        last_dur = s->dur_buckets[HUB_MT_ROOM_MESSAGE][0];
    }
    uv_thread_join(&a);
    uv_thread_join(&b);
    memset(s, 0, sizeof(*s));
    hub_metrics_accumulate(s, &race_m[0]);
    hub_metrics_accumulate(s, &race_m[1]);
    ASSERT_EQ(s->room_joins, 2 * RACE_N);
    ASSERT_EQ(s->received[HUB_MT_ROOM_MESSAGE], 2 * RACE_N);
    ASSERT_EQ(s->dur_buckets[HUB_MT_ROOM_MESSAGE][0], 2 * RACE_N);
    ASSERT_EQ(s->dur_sum[HUB_MT_ROOM_MESSAGE], 2ULL * RACE_N * 1000);
    free(s);
}

TEST(exposition_of_a_fresh_node_is_well_formed)
{
    hub_metrics_snap_t *s = calloc(1, sizeof(*s));
    size_t len;
    char *text = format(s, "node-1", &len);
    ASSERT(text != NULL);
    char why[600];
    const char *bad = check_exposition(text, len, why, sizeof(why));
    if (bad) {
        free(text);
        free(s);
        FAILF("%s", bad);
    }
    /* counters with fixed label sets start at zero, all present */
    ASSERT(has_line(text, "gohub_connected_clients 0"));
    ASSERT(has_line(text, "gohub_messages_received_total{type=\"ping\"} 0"));
    ASSERT(has_line(text, "gohub_messages_received_total{type=\"invalid\"} 0"));
    ASSERT(has_line(text, "gohub_messages_sent_total{type=\"pong\"} 0"));
    ASSERT(has_line(text, "gohub_errors_total{code=\"1006\"} 0"));
    ASSERT(has_line(text, "gohub_errors_total{code=\"other\"} 0"));
    ASSERT(has_line(text, "gohub_connections_closed_total{code=\"1013\",reason=\"slow_consumer\"} 0"));
    ASSERT(has_line(text, "gohub_auth_failure_total{reason=\"bad_signature\"} 0"));
    ASSERT(has_line(text, "gohub_lua_reloads_total{result=\"failure\"} 0"));
    ASSERT(has_line(text, "gohub_message_size_bytes_bucket{le=\"+Inf\"} 0"));
    ASSERT(has_line(text, "gohub_message_size_bytes_count 0"));
    ASSERT(has_line(text, "process_start_time_seconds 1700000000.25"));
    ASSERT(has_line(text, "process_cpu_seconds_total 1.50"));
    ASSERT(has_line(text, "process_max_fds 1024"));
    ASSERT_EQ(count_prefix(text, "gohub_errors_total{"), HUB_ME_NCODES);
    ASSERT_EQ(count_prefix(text, "gohub_connections_closed_total{"), HUB_MC_NCODES);
    ASSERT_EQ(count_prefix(text, "gohub_auth_failure_total{"), HUB_MA_NREASONS);
    /* directions: requests and other/invalid in; server types and other out */
    ASSERT_EQ(count_prefix(text, "gohub_messages_received_total{"), 13);
    ASSERT_EQ(count_prefix(text, "gohub_messages_sent_total{"), 16);
    ASSERT(!has_line(text, "gohub_messages_received_total{type=\"pong\"} 0"));
    ASSERT(!has_line(text, "gohub_messages_sent_total{type=\"ping\"} 0"));
    /* no type handled yet: no duration series */
    ASSERT_EQ(count_prefix(text, "gohub_handler_duration_seconds_bucket"), 0);
    ASSERT(has_line(text, "# TYPE gohub_handler_duration_seconds histogram"));
    free(text);
    free(s);
}

TEST(exposition_carries_the_summed_values)
{
    hub_metrics_t *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    hub_metrics_handled(a, HUB_MT_PING, 40000);
    hub_metrics_handled(b, HUB_MT_PING, 110000);
    hub_metrics_handled(b, HUB_MT_OTHER, 7);
    hub_metrics_message_size(a, 100);
    hub_metrics_message_size(b, 5000);
    hub_mc_add(&a->received[HUB_MT_PONG], 2); /* a client sent "pong" */
    hub_mc_add(&b->sent[HUB_MT_PING], 1);     /* a handler sent "ping" */
    hub_mc_add(&a->sent[HUB_MT_NONE], 99);    /* HTTP / control frames: never shown */
    hub_metrics_closed(a, 1000);
    hub_metrics_closed(b, 1000);
    hub_metrics_error(b, 3003);
    hub_mc_add(&a->conns_opened, 3);
    hub_mc_add(&b->reloads_failed, 1);
    hub_mc_add(&b->bus_published, 5); /* b stands for the bus thread */
    hub_mc_add(&b->bus_received, 4);
    hub_mc_add(&b->bus_reconnects, 1);
    hub_mc_add(&b->bus_dropped[HUB_BD_BUFFER_FULL], 3);
    hub_mc_add(&b->bus_dropped[HUB_BD_NODE_ID_CONFLICT], 2);
    hub_metrics_snap_t *s = calloc(1, sizeof(*s));
    hub_metrics_accumulate(s, a);
    hub_metrics_accumulate(s, b);
    s->connected_clients = 7;
    s->rooms = 2;
    s->bus_up = 1;
    s->cluster_nodes = 3;
    size_t len;
    char *text = format(s, "we\"ird\\node\nid", &len);
    ASSERT(text != NULL);
    char why[600];
    const char *bad = check_exposition(text, len, why, sizeof(why));
    if (bad) {
        free(text);
        FAILF("%s", bad);
    }
    ASSERT(has_line(text, "gohub_info{version=\"9.9.9\",node_id=\"we\\\"ird\\\\node\\nid\"} 1"));
    ASSERT(has_line(text, "gohub_connected_clients 7"));
    ASSERT(has_line(text, "gohub_active_rooms 2"));
    ASSERT(has_line(text, "gohub_connections_opened_total 3"));
    ASSERT(has_line(text, "gohub_connections_closed_total{code=\"1000\",reason=\"normal\"} 2"));
    ASSERT(has_line(text, "gohub_messages_received_total{type=\"ping\"} 2"));
    ASSERT(has_line(text, "gohub_messages_received_total{type=\"other\"} 1"));
    ASSERT(has_line(text, "gohub_messages_received_total{type=\"pong\"} 2"));
    ASSERT(has_line(text, "gohub_messages_sent_total{type=\"ping\"} 1"));
    ASSERT(strstr(text, "type=\"\"") == NULL);
    ASSERT(has_line(text, "gohub_errors_total{code=\"3003\"} 1"));
    ASSERT(has_line(text, "gohub_lua_reloads_total{result=\"failure\"} 1"));
    ASSERT(has_line(text, "gohub_cluster_bus_up 1"));
    ASSERT(has_line(text, "gohub_cluster_nodes 3"));
    ASSERT(has_line(text, "gohub_cluster_messages_published_total 5"));
    ASSERT(has_line(text, "gohub_cluster_messages_received_total 4"));
    ASSERT(has_line(text, "gohub_cluster_reconnects_total 1"));
    ASSERT(has_line(text, "gohub_cluster_messages_dropped_total{reason=\"buffer_full\"} 3"));
    ASSERT(has_line(text, "gohub_cluster_messages_dropped_total{reason=\"node_id_conflict\"} 2"));
    ASSERT(has_line(text, "gohub_cluster_messages_dropped_total{reason=\"duplicate\"} 0"));
    ASSERT(has_line(text, "gohub_cluster_messages_dropped_total{reason=\"too_many_nodes\"} 0"));
    ASSERT_EQ(count_prefix(text, "gohub_cluster_messages_dropped_total{"), HUB_BD_NREASONS);
    /* cumulative buckets; _count equals +Inf; exact decimal seconds */
    ASSERT(has_line(text, "gohub_handler_duration_seconds_bucket{type=\"ping\",le=\"0.00005\"} 1"));
    ASSERT(has_line(text, "gohub_handler_duration_seconds_bucket{type=\"ping\",le=\"0.0001\"} 1"));
    ASSERT(has_line(text, "gohub_handler_duration_seconds_bucket{type=\"ping\",le=\"0.00025\"} 2"));
    ASSERT(has_line(text, "gohub_handler_duration_seconds_bucket{type=\"ping\",le=\"2.5\"} 2"));
    ASSERT(has_line(text, "gohub_handler_duration_seconds_bucket{type=\"ping\",le=\"+Inf\"} 2"));
    ASSERT(has_line(text, "gohub_handler_duration_seconds_sum{type=\"ping\"} 0.000150000"));
    ASSERT(has_line(text, "gohub_handler_duration_seconds_count{type=\"ping\"} 2"));
    ASSERT(has_line(text, "gohub_handler_duration_seconds_count{type=\"other\"} 1"));
    ASSERT_EQ(count_prefix(text, "gohub_handler_duration_seconds_bucket{type=\"ping\""),
              HUB_MD_BUCKETS + 1);
    ASSERT_EQ(count_prefix(text, "gohub_handler_duration_seconds_count"), 2);
    ASSERT(has_line(text, "gohub_message_size_bytes_bucket{le=\"64\"} 0"));
    ASSERT(has_line(text, "gohub_message_size_bytes_bucket{le=\"256\"} 1"));
    ASSERT(has_line(text, "gohub_message_size_bytes_bucket{le=\"16384\"} 2"));
    ASSERT(has_line(text, "gohub_message_size_bytes_sum 5100"));
    ASSERT(has_line(text, "gohub_message_size_bytes_count 2"));
    free(text);
    free(s);
    free(a);
    free(b);
}

TEST(proc_stats_describe_this_process)
{
    hub_proc_stats_t p;
    ASSERT_EQ(hub_proc_stats(&p), 0);
    ASSERT(p.rss_bytes > 0);
    ASSERT(p.vsize_bytes >= p.rss_bytes);
    ASSERT(p.open_fds >= 3); /* stdin, stdout, stderr */
    ASSERT(p.max_fds >= p.open_fds);
    ASSERT(p.cpu_seconds >= 0);
    double now = (double)time(NULL);
    if (!(p.start_time > now - 3600 && p.start_time <= now + 1))
        FAILF("start time %.2f is not within the last hour of %.0f", p.start_time, now);
    /* one more fd is seen */
    FILE *f = fopen("/proc/self/stat", "r");
    ASSERT(f != NULL);
    hub_proc_stats_t q;
    hub_proc_stats(&q);
    fclose(f);
    ASSERT_EQ(q.open_fds, p.open_fds + 1);
}

int main(void)
{
    RUN(type_labels_are_a_fixed_set);
    RUN(duration_buckets_use_upper_inclusive_bounds);
    RUN(close_error_and_auth_labels_are_bounded);
    RUN(every_auth_reason_has_its_own_label);
    RUN(gauges_are_summed_across_workers);
    RUN(each_thread_counts_into_its_own_struct);
    RUN(scrapes_during_updates_are_monotonic);
    RUN(exposition_of_a_fresh_node_is_well_formed);
    RUN(exposition_carries_the_summed_values);
    RUN(proc_stats_describe_this_process);
    HARNESS_MAIN_END();
}
