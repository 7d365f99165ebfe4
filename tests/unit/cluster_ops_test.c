/* cluster_ops_test.c: the codec of the cluster's client queries (fields,
 * replies cut into parts, records read back as JSON) and the paging of one
 * page over the nodes' lists. It includes src/cluster_ops.c to reach its
 * static functions; every global symbol of cluster_ops.o is then defined
 * here, so the linker never pulls cluster_ops.o from libgohub.a. */
#include "../../src/cluster_ops.c"

#include "harness.h"

TEST(fields_round_trip_any_bytes)
{
    uint8_t buf[256];
    static const char odd[] = "12:ab \"x\" 3:cd";
    size_t n = hub_cluster_field_put(buf, 0, sizeof(buf), odd, strlen(odd));
    n = n ? field_put_u64(buf, n, sizeof(buf), UINT64_MAX) : 0;
    n = n ? field_put_u64(buf, n, sizeof(buf), 0) : 0;
    ASSERT(n > 0);
    const uint8_t *p = buf, *end = buf + n;
    char out[64];
    uint64_t v;
    ASSERT(field_get_str(&p, end, out, sizeof(out)) == 0);
    ASSERT_STREQ(out, odd);
    ASSERT(field_get_u64(&p, end, &v) == 0);
    ASSERT(v == UINT64_MAX);
    ASSERT(field_get_u64(&p, end, &v) == 0);
    ASSERT(v == 0);
    ASSERT(p == end);
    ASSERT_EQ(field_size(3), 5);
    ASSERT_EQ(field_size(10), 13);
    ASSERT_EQ(field_size(strlen(odd)), n - 23 - 3); /* the numbers: "20:" + 20, "1:0" */
}

/* Each string, as bytes, must not parse as the field kind given. */
TEST(malformed_fields_are_refused)
{
    static const char *bad[] = {
        "", ":", "3", "3:ab", "a:1", "-1:a", "12345678901:x", "01x:", " 1:a", "0:",
    };
    for (size_t i = 0; i < HUB_ARRAY_LEN(bad); i++) {
        const uint8_t *p = (const uint8_t *)bad[i], *end = p + strlen(bad[i]);
        char out[64];
        if (field_get_str(&p, end, out, sizeof(out)) == 0)
            FAILF("field %zu \"%s\" parsed", i, bad[i]);
    }
    static const char *bad_num[] = {
        "0:", "1:x", "21:111111111111111111111", "20:18446744073709551616", "2:-1", "3:1 2",
    };
    for (size_t i = 0; i < HUB_ARRAY_LEN(bad_num); i++) {
        const uint8_t *p = (const uint8_t *)bad_num[i], *end = p + strlen(bad_num[i]);
        uint64_t v;
        if (field_get_u64(&p, end, &v) == 0)
            FAILF("number %zu \"%s\" parsed as %llu", i, bad_num[i], (unsigned long long)v);
    }
    char out[4];
    const uint8_t *p = (const uint8_t *)"4:abcd";
    ASSERT(field_get_str(&p, p + 6, out, sizeof(out)) != 0); /* does not fit with its NUL */
    p = (const uint8_t *)"3:abc";
    ASSERT(field_get_str(&p, p + 5, out, sizeof(out)) == 0);
    ASSERT_STREQ(out, "abc");
}

TEST(headers_check_round_and_last)
{
    uint8_t buf[OPS_HEAD_MAX];
    head_t h = { UINT64_MAX, 2, UINT64_MAX, UINT64_MAX, 1 }, g;
    size_t n = head_put(buf, &h);
    ASSERT(n > 0 && n <= OPS_HEAD_MAX);
    const uint8_t *p = buf;
    ASSERT(head_get(&p, buf + n, &g) == 0);
    ASSERT(memcmp(&h, &g, sizeof(h)) == 0);
    head_t bad[] = { { 1, 3, 0, 0, 0 }, { 1, 0, 0, 0, 0 }, { 1, 1, 0, 0, 2 } };
    for (size_t i = 0; i < HUB_ARRAY_LEN(bad); i++) {
        n = head_put(buf, &bad[i]);
        p = buf;
        if (head_get(&p, buf + n, &g) == 0)
            FAILF("header %zu parsed", i);
    }
}

/* The messages one answer was cut into. */
typedef struct {
    uint8_t *msg[64];
    size_t len[64];
    size_t n;
} sink_t;

static void sink_emit(void *arg, const uint8_t *p, size_t n)
{
    sink_t *s = arg;
    if (s->n < HUB_ARRAY_LEN(s->msg) && (s->msg[s->n] = malloc(n)) != NULL) {
        memcpy(s->msg[s->n], p, n);
        s->len[s->n++] = n;
    }
}

static void sink_free(sink_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->msg[i]);
}

#define MANY_ROOMS 3000 /* more than one message holds (~1,480 of 130 bytes) */

TEST(an_answer_is_cut_into_parts_and_read_back_in_order)
{
    static char room_ids[MANY_ROOMS][130];
    static char *rooms[MANY_ROOMS];
    for (int i = 0; i < MANY_ROOMS; i++) {
        /* 128-byte room ids: the longest there are */
        snprintf(room_ids[i], sizeof(room_ids[i]), "%0128d", i);
        rooms[i] = room_ids[i];
    }
    uint8_t *buf = malloc(OPS_HEAD_MAX + OPS_PART_MAX);
    ASSERT(buf != NULL);
    sink_t sink = { 0 };
    parts_t pt = { .head = { 77, 2, 1234, 0, 0 }, .buf = buf, .emit = sink_emit, .arg = &sink };
    const int nclients = 1000;
    for (int i = 0; i < nclients; i++) {
        char cid[64], uid[64];
        snprintf(cid, sizeof(cid), "node-a.1-%x", i);
        /* user ids may hold any byte, the field separator included */
        snprintf(uid, sizeof(uid), "u:%d \"q\" 9:", i);
        size_t nr = i == 500 ? MANY_ROOMS : (size_t)(i % 7);
        parts_add(&pt, cid, uid, 1700000000000ULL + (uint64_t)i, rooms, nr);
    }
    parts_flush(&pt, 1);
    free(buf);
    ASSERT_EQ(pt.cut, 1);
    ASSERT(sink.n >= 2);
    int seen = 0;
    for (size_t m = 0; m < sink.n; m++) {
        if (sink.len[m] > OPS_HEAD_MAX + OPS_PART_MAX)
            FAILF("message %zu has %zu bytes", m, sink.len[m]);
        const uint8_t *p = sink.msg[m], *end = p + sink.len[m];
        head_t h;
        ASSERT(head_get(&p, end, &h) == 0);
        ASSERT(h.qid == 77 && h.round == 2 && h.count == 1234);
        ASSERT_EQ(h.at, seen);
        ASSERT_EQ(h.last, m + 1 == sink.n);
        while (p < end) {
            cJSON *r = record_json(&p, end, "node-a.1");
            if (r == NULL)
                FAILF("record %d unreadable", seen);
            char cid[64], uid[64];
            snprintf(cid, sizeof(cid), "node-a.1-%x", seen);
            snprintf(uid, sizeof(uid), "u:%d \"q\" 9:", seen);
            const cJSON *rs = cJSON_GetObjectItem(r, "rooms");
            int nr = cJSON_GetArraySize(rs);
            int ok = strcmp(cJSON_GetObjectItem(r, "client_id")->valuestring, cid) == 0 &&
                     strcmp(cJSON_GetObjectItem(r, "user_id")->valuestring, uid) == 0 &&
                     strcmp(cJSON_GetObjectItem(r, "node_id")->valuestring, "node-a.1") == 0 &&
                     cJSON_GetObjectItem(r, "connected_at")->valuedouble ==
                         1700000000000.0 + seen;
            if (seen == 500)
                ok = ok && nr > 1000 && nr < MANY_ROOMS; /* cut to one message */
            else
                ok = ok && nr == seen % 7;
            for (int k = 0; k < nr && ok; k++)
                ok = strcmp(cJSON_GetArrayItem(rs, k)->valuestring, rooms[k]) == 0;
            cJSON_Delete(r);
            if (!ok)
                FAILF("record %d differs", seen);
            seen++;
        }
    }
    ASSERT_EQ(seen, nclients);
    sink_free(&sink);
}

TEST(an_empty_answer_is_one_last_message)
{
    uint8_t *buf = malloc(OPS_HEAD_MAX + OPS_PART_MAX);
    ASSERT(buf != NULL);
    sink_t sink = { 0 };
    parts_t pt = { .head = { 5, 2, 0, 0, 0 }, .buf = buf, .emit = sink_emit, .arg = &sink };
    parts_flush(&pt, 1);
    free(buf);
    ASSERT_EQ(sink.n, 1);
    const uint8_t *p = sink.msg[0];
    head_t h;
    ASSERT(head_get(&p, p + sink.len[0], &h) == 0);
    ASSERT(h.last == 1 && h.at == 0 && p == sink.msg[0] + sink.len[0]);
    sink_free(&sink);
}

/* Every cut and every changed byte of a valid record is refused or read
 * within bounds (ASan checks the bounds). */
TEST(broken_records_are_refused)
{
    static const char *rooms[] = { "lobby", "a.b:c@d" };
    uint8_t rec[512];
    size_t n = hub_cluster_field_put(rec, 0, sizeof(rec), "n1-1f", 5);
    n = hub_cluster_field_put(rec, n, sizeof(rec), "alice", 5);
    n = field_put_u64(rec, n, sizeof(rec), 1700000000123ULL);
    n = field_put_u64(rec, n, sizeof(rec), 2);
    n = hub_cluster_field_put(rec, n, sizeof(rec), rooms[0], strlen(rooms[0]));
    n = hub_cluster_field_put(rec, n, sizeof(rec), rooms[1], strlen(rooms[1]));
    ASSERT(n > 0);
    const uint8_t *p = rec;
    cJSON *r = record_json(&p, rec + n, "n1");
    ASSERT(r != NULL && p == rec + n);
    cJSON_Delete(r);
    for (size_t cut = 0; cut < n; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1); /* exactly cut bytes: ASan sees any overread */
        memcpy(copy, rec, cut);
        p = copy;
        r = record_json(&p, copy + cut, "n1");
        free(copy);
        if (r != NULL)
            FAILF("a record cut to %zu bytes parsed", cut);
    }
    unsigned seed = 3;
    for (int i = 0; i < 20000; i++) {
        uint8_t *copy = malloc(n);
        memcpy(copy, rec, n);
        copy[rand_r(&seed) % n] = (uint8_t)rand_r(&seed);
        p = copy;
        r = record_json(&p, copy + n, "n1");
        if (r != NULL && !(p > copy && p <= copy + n))
            FAILF("a changed record read past its end");
        cJSON_Delete(r);
        free(copy);
    }
    /* a room id outside the rule, and a room count larger than the rooms */
    n = hub_cluster_field_put(rec, 0, sizeof(rec), "n1-1f", 5);
    n = hub_cluster_field_put(rec, n, sizeof(rec), "alice", 5);
    n = field_put_u64(rec, n, sizeof(rec), 1);
    size_t at_count = n;
    n = field_put_u64(rec, n, sizeof(rec), 1);
    n = hub_cluster_field_put(rec, n, sizeof(rec), "a room", 6);
    p = rec;
    ASSERT(record_json(&p, rec + n, "n1") == NULL);
    n = field_put_u64(rec, at_count, sizeof(rec), 3);
    n = hub_cluster_field_put(rec, n, sizeof(rec), "x", 1);
    p = rec;
    ASSERT(record_json(&p, rec + n, "n1") == NULL);
}

/* The slices of every node, in node order, are exactly the page. */
TEST(a_page_is_cut_across_the_nodes_lists)
{
    unsigned seed = 11;
    for (int round = 0; round < 2000; round++) {
        uint64_t counts[6], total = 0;
        size_t nn = 1 + (size_t)(rand_r(&seed) % 6);
        for (size_t i = 0; i < nn; i++) {
            counts[i] = (uint64_t)(rand_r(&seed) % 5 == 0 ? 0 : rand_r(&seed) % 40);
            total += counts[i];
        }
        uint64_t offset = (uint64_t)(rand_r(&seed) % (total + 10));
        uint64_t limit = (uint64_t)(rand_r(&seed) % 50);
        /* the page's global positions, as the slices give them */
        uint64_t got = 0, before = 0, next = offset;
        for (size_t i = 0; i < nn; i++) {
            uint64_t off = 99999, want = 99999;
            if (slice_of(offset, limit, before, counts[i], &off, &want)) {
                if (before + off != next || off + want > counts[i] || want == 0)
                    FAILF("node %zu: slice %llu+%llu, expected to start at %llu", i,
                          (unsigned long long)off, (unsigned long long)want,
                          (unsigned long long)(next - before));
                next += want;
                got += want;
            }
            before += counts[i];
        }
        uint64_t expect = offset >= total ? 0 : (total - offset < limit ? total - offset : limit);
        if (got != expect)
            FAILF("offset %llu limit %llu total %llu: %llu listed, want %llu",
                  (unsigned long long)offset, (unsigned long long)limit,
                  (unsigned long long)total, (unsigned long long)got,
                  (unsigned long long)expect);
    }
}

int main(void)
{
    RUN(fields_round_trip_any_bytes);
    RUN(malformed_fields_are_refused);
    RUN(headers_check_round_and_last);
    RUN(an_answer_is_cut_into_parts_and_read_back_in_order);
    RUN(an_empty_answer_is_one_last_message);
    RUN(broken_records_are_refused);
    RUN(a_page_is_cut_across_the_nodes_lists);
    HARNESS_MAIN_END();
}
