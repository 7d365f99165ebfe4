/* hmap_test.c: the id map against a reference array under random inserts and
 * deletes (backward-shift deletion is easy to get wrong), and the string map. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "hmap.h"

#define KEYS 4000

TEST(idmap_random_ops_match_reference)
{
    static void *ref[KEYS + 1];
    memset(ref, 0, sizeof(ref));
    hub_idmap_t m;
    hub_idmap_init(&m);
    srand(7);
    for (int step = 0; step < 200000; step++) {
        uint64_t k = 1 + (uint64_t)(rand() % KEYS);
        void *v = (void *)(uintptr_t)(step + 1);
        if (rand() % 3 == 0) {
            void *got = hub_idmap_del(&m, k);
            ASSERT(got == ref[k]);
            ref[k] = NULL;
        } else {
            ASSERT_EQ(hub_idmap_put(&m, k, v), 0);
            ref[k] = v;
        }
        if (step % 997 == 0) {
            size_t n = 0;
            for (uint64_t i = 1; i <= KEYS; i++) {
                ASSERT(hub_idmap_get(&m, i) == ref[i]);
                n += ref[i] != NULL;
            }
            ASSERT_EQ(m.n, n);
        }
    }
    hub_idmap_free(&m);
}

TEST(strmap_put_get_del_iterate)
{
    hub_strmap_t m;
    hub_strmap_init(&m);
    char key[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "room-%d", i);
        ASSERT_EQ(hub_strmap_put(&m, key, (void *)(uintptr_t)(i + 1)), 0);
    }
    ASSERT_EQ(m.n, 1000);
    ASSERT(hub_strmap_get(&m, "room-500") == (void *)501);
    ASSERT(hub_strmap_get(&m, "room-1000") == NULL);
    ASSERT(hub_strmap_del(&m, "room-500") == (void *)501);
    ASSERT(hub_strmap_get(&m, "room-500") == NULL);
    size_t it, seen = 0;
    for (hub_strmap_entry_t *e = hub_strmap_first(&m, &it); e; e = hub_strmap_next(&m, e, &it))
        seen++;
    ASSERT_EQ(seen, 999);
    hub_strmap_free(&m);
}

/* getn finds exactly the key its bytes spell: not a prefix, not a longer
 * key, whatever follows the span. */
TEST(strmap_getn_by_span)
{
    hub_strmap_t m;
    hub_strmap_init(&m);
    ASSERT(hub_strmap_getn(&m, "x", 1) == NULL); /* empty map */
    char key[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "room_%d", i);
        ASSERT_EQ(hub_strmap_put(&m, key, (void *)(uintptr_t)(i + 1)), 0);
    }
    ASSERT_EQ(hub_strmap_put(&m, "room", (void *)1000), 0);
    for (int i = 0; i < 200; i++) {
        int n = snprintf(key, sizeof(key), "room_%d\"tail", i);
        ASSERT(hub_strmap_getn(&m, key, (size_t)n - 5) == (void *)(uintptr_t)(i + 1));
        ASSERT(hub_strmap_getn(&m, key, (size_t)n) == NULL);
        /* one byte short: room_12 -> room_1, room_7 -> room_ (no key) */
        void *shorter = i >= 10 ? (void *)(uintptr_t)(i / 10 + 1) : NULL;
        ASSERT(hub_strmap_getn(&m, key, (size_t)n - 6) == shorter);
    }
    ASSERT(hub_strmap_getn(&m, "room_", 4) == (void *)1000);
    ASSERT(hub_strmap_getn(&m, "room_", 5) == NULL);
    ASSERT(hub_strmap_getn(&m, "", 0) == NULL);
    ASSERT_EQ(hub_strmap_put(&m, "", (void *)7), 0);
    ASSERT(hub_strmap_getn(&m, "abc", 0) == (void *)7);
    hub_strmap_free(&m);
}

int main(void)
{
    RUN(idmap_random_ops_match_reference);
    RUN(strmap_put_get_del_iterate);
    RUN(strmap_getn_by_span);
    HARNESS_MAIN_END();
}
