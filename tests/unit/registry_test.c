/* registry_test.c: the client listing the HTTP API pages through: order by
 * connection time (then id), offset and limit at and past the ends, each
 * client's user id and rooms, and the client and room counts. */
#include <string.h>
#include <time.h>

#include "harness.h"
#include "registry.h"

static void sleep_ms(long ms)
{
    struct timespec ts = { 0, ms * 1000000L };
    nanosleep(&ts, NULL);
}

/* conn ids 1..n added in that order, a few ms apart, on alternating workers */
static void add_clients(int n)
{
    for (int i = 1; i <= n; i++) {
        hub_reg_client_add((uint64_t)i, i % 2, i == 2 ? "alice" : NULL);
        sleep_ms(2);
    }
}

TEST(pages_in_connection_order)
{
    hub_reg_init(2);
    add_clients(5);
    hub_client_info_t *v;
    size_t n, total;
    uint64_t seen[5];
    size_t k = 0;
    for (size_t off = 0; off < 6; off += 2) {
        ASSERT_EQ(hub_reg_client_list(off, 2, &v, &n, &total), 0);
        ASSERT_EQ(total, 5);
        ASSERT_EQ(n, off == 4 ? 1 : 2);
        for (size_t i = 0; i < n; i++) {
            if (k > 0 && v[i].connected_at < v[0].connected_at)
                FAILF("page not ordered");
            seen[k++] = v[i].conn_id;
        }
        hub_reg_clients_free(v, n);
    }
    ASSERT_EQ(k, 5);
    for (size_t i = 0; i < 5; i++)
        ASSERT_EQ(seen[i], i + 1);
    hub_reg_free();
}

TEST(past_the_end_and_limit_zero)
{
    hub_reg_init(2);
    add_clients(3);
    hub_client_info_t *v = (hub_client_info_t *)1;
    size_t n = 99, total = 0;
    ASSERT_EQ(hub_reg_client_list(3, 10, &v, &n, &total), 0);
    ASSERT(v == NULL);
    ASSERT_EQ(n, 0);
    ASSERT_EQ(total, 3);
    ASSERT_EQ(hub_reg_client_list(0, 0, &v, &n, &total), 0);
    ASSERT(v == NULL);
    ASSERT_EQ(n, 0);
    ASSERT_EQ(hub_reg_client_list((size_t)-1, (size_t)-1, &v, &n, &total), 0);
    ASSERT_EQ(n, 0);
    hub_reg_free();
    /* an empty registry */
    hub_reg_init(1);
    ASSERT_EQ(hub_reg_client_list(0, 10, &v, &n, &total), 0);
    ASSERT_EQ(total, 0);
    ASSERT_EQ(n, 0);
    hub_reg_free();
}

TEST(details_and_counts)
{
    hub_reg_init(2);
    add_clients(3);
    ASSERT_EQ(hub_reg_room_create("made", "Made", 0, 0, NULL), 0);
    ASSERT(hub_reg_room_join("made", 2, 0, 0, 0, NULL) > 0);
    ASSERT(hub_reg_room_join("auto", 2, 1, 0, 0, NULL) > 0);
    ASSERT(hub_reg_room_join("auto", 3, 1, 0, 0, NULL) > 0);
    size_t clients, rooms;
    hub_reg_counts(&clients, &rooms);
    ASSERT_EQ(clients, 3);
    ASSERT_EQ(rooms, 2);

    hub_client_info_t *v;
    size_t n, total;
    ASSERT_EQ(hub_reg_client_list(1, 1, &v, &n, &total), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(v[0].conn_id, 2);
    ASSERT_EQ(v[0].worker, 0);
    ASSERT_STREQ(v[0].user_id, "alice");
    ASSERT_EQ(v[0].nrooms, 2);
    int made = 0, autor = 0;
    for (size_t i = 0; i < v[0].nrooms; i++) {
        made += strcmp(v[0].rooms[i], "made") == 0;
        autor += strcmp(v[0].rooms[i], "auto") == 0;
    }
    ASSERT(made == 1 && autor == 1);
    ASSERT(v[0].connected_at > 1600000000000ULL); /* ms since the epoch */
    hub_reg_clients_free(v, n);

    ASSERT_EQ(hub_reg_client_list(0, 1, &v, &n, &total), 0);
    ASSERT(v[0].user_id == NULL); /* anonymous */
    ASSERT_EQ(v[0].nrooms, 0);
    hub_reg_clients_free(v, n);

    /* a client that leaves disappears from the listing and the counts; the
     * auto-created room it held alone with another member stays */
    char **left;
    uint8_t *deleted;
    size_t nleft;
    hub_reg_client_remove(2, &left, &deleted, &nleft);
    hub_reg_strv_free(left, nleft);
    free(deleted);
    hub_reg_counts(&clients, &rooms);
    ASSERT_EQ(clients, 2);
    ASSERT_EQ(rooms, 2);
    ASSERT_EQ(hub_reg_client_list(0, 10, &v, &n, &total), 0);
    ASSERT_EQ(total, 2);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(v[0].conn_id, 1);
    ASSERT_EQ(v[1].conn_id, 3);
    hub_reg_clients_free(v, n);
    hub_reg_free();
}

int main(void)
{
    RUN(pages_in_connection_order);
    RUN(past_the_end_and_limit_zero);
    RUN(details_and_counts);
    HARNESS_MAIN_END();
}
