/* cluster_test.c: the bus core's dedupe (a window per origin and subject)
 * and subject naming. It includes src/cluster.c to reach the static window
 * functions; every global symbol of cluster.o is then defined here, so the
 * linker never pulls cluster.o from libgohub.a. */
#include "../../src/cluster.c"

#include "harness.h"

/* A reference: the set of sequences seen, and the highest. */
TEST(window_matches_a_reference_set)
{
    window_t w;
    memset(&w, 0, sizeof(w));
    static uint8_t seen[20000];
    memset(seen, 0, sizeof(seen));
    uint64_t max = 0;
    unsigned seed = 7;
    for (int i = 0; i < 200000; i++) {
        /* mostly forward, sometimes a replay from the recent past */
        uint64_t s;
        if (max == 0 || rand_r(&seed) % 3)
            s = max + 1 + (uint64_t)(rand_r(&seed) % 70);
        else
            s = max > 1500 ? max - (uint64_t)(rand_r(&seed) % 1500) : 1 + (uint64_t)(rand_r(&seed) % max);
        if (s >= sizeof(seen))
            break;
        int want;
        if (s > max)
            want = 1;
        else if (max - s > WINDOW_BITS || s == max)
            want = 0; /* too old to tell counts as seen */
        else
            want = !seen[s];
        int got = window_fresh(&w, s);
        if (got != want)
            FAILF("seq %llu (max %llu): got %d want %d", (unsigned long long)s,
                  (unsigned long long)max, got, want);
        if (got)
            seen[s] = 1;
        if (s > max)
            max = s;
    }
}

TEST(subjects_have_their_own_windows)
{
    node_t nd;
    memset(&nd, 0, sizeof(nd));
    hub_strmap_init(&nd.windows);
    /* "ctl" runs far ahead (heartbeats) while a room's consumer catches up
     * on a backlog: every first delivery is fresh */
    for (uint64_t s = 1; s <= 5000; s++)
        ASSERT(seq_fresh(&nd, "ctl", 1000000 + s, 1));
    for (uint64_t s = 1; s <= 3000; s++)
        ASSERT(seq_fresh(&nd, "room.a", s, 2));
    /* a redelivery within the window is a duplicate */
    ASSERT(!seq_fresh(&nd, "room.a", 2500, 3));
    ASSERT(!seq_fresh(&nd, "ctl", 1004999, 3));
    /* the same numbers on another subject are new */
    ASSERT(seq_fresh(&nd, "room.b", 2500, 3));
    ASSERT_EQ(nd.windows.n, 3);
    /* idle windows are forgotten */
    windows_trim(&nd, 3 + STREAM_IDLE_MS + 1);
    ASSERT_EQ(nd.windows.n, 0);
    windows_free(&nd);
}

static void node_init(node_t *nd, const char *id, uint64_t epoch)
{
    memset(nd, 0, sizeof(*nd));
    snprintf(nd->id, sizeof(nd->id), "%s", id);
    nd->epoch = epoch;
    hub_strmap_init(&nd->windows);
}

TEST(a_dropped_node_keeps_its_windows_for_a_while)
{
    static hub_bus_t b; /* zeroed: only the graves are used */
    node_t nd, again;
    node_init(&nd, "node2", 77);
    for (uint64_t s = 1; s <= 100; s++)
        ASSERT(seq_fresh(&nd, "room.a", s, 1));
    grave_keep(&b, &nd, 1000);   /* dropped after the node timeout */
    ASSERT_EQ(nd.windows.n, 0);
    node_init(&again, "node2", 77);
    grave_restore(&b, &again);   /* back with the same identity */
    ASSERT(!seq_fresh(&again, "room.a", 50, 2)); /* a redelivery: still a duplicate */
    ASSERT(seq_fresh(&again, "room.a", 101, 2));
    /* a restarted node (new epoch) starts clean */
    node_t other;
    node_init(&other, "node2", 78);
    grave_restore(&b, &other);
    ASSERT(seq_fresh(&other, "room.a", 50, 2));
    windows_free(&other);
    /* more dropped nodes than graves: the oldest go, nothing leaks (ASan) */
    for (int i = 0; i < GRAVES + 10; i++) {
        node_t n;
        char id[16];
        snprintf(id, sizeof(id), "n%d", i);
        node_init(&n, id, 1);
        ASSERT(seq_fresh(&n, "ctl", 1, 1));
        grave_keep(&b, &n, 2000 + (uint64_t)i);
        windows_free(&n);
    }
    /* graves 0-9 made room for 64-73; 10-14 are past their time at +15 */
    graves_trim(&b, 2000 + GRAVE_MS + 15);
    int kept = 0;
    for (int i = 0; i < GRAVES; i++)
        kept += b.graves[i].epoch != 0;
    ASSERT_EQ(kept, GRAVES - 5);
    graves_trim(&b, UINT64_MAX);
    windows_free(&again);
}

TEST(subjects_never_leave_their_lane)
{
    char out[300];
    ASSERT(hub_cluster_subject(HUB_CL_ROOM, "a.b", out, sizeof(out)) > 0);
    ASSERT(strcmp(out, "room.a~b") == 0);
    ASSERT(hub_cluster_subject(HUB_CL_CONN, "node.1-2a", out, sizeof(out)) > 0);
    ASSERT(strcmp(out, "node.node~1") == 0);
    ASSERT(hub_cluster_subject(HUB_CL_ALL, NULL, out, sizeof(out)) > 0);
    ASSERT(strcmp(out, "all") == 0);
    ASSERT(hub_cluster_subject(HUB_CL_BEAT, "3", out, sizeof(out)) > 0);
    ASSERT(strcmp(out, "ctl") == 0);
    ASSERT(hub_cluster_subject(HUB_CL_CONN, "nodash", out, sizeof(out)) == 0);
    ASSERT(hub_cluster_subject(HUB_CL_ROOM, "x", out, 4) == 0); /* does not fit */
}

int main(void)
{
    RUN(window_matches_a_reference_set);
    RUN(subjects_have_their_own_windows);
    RUN(a_dropped_node_keeps_its_windows_for_a_while);
    RUN(subjects_never_leave_their_lane);
    HARNESS_MAIN_END();
}
