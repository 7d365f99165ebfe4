/* registry_test.c: the client listing the HTTP API pages through: order by
 * connection time (then id), offset and limit at and past the ends, each
 * client's user id and rooms, and the client and room counts; the room id
 * rule byte by byte; membership as joins, leaves, deletes and departures
 * change it. */
#include <stdlib.h>
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

/* Room ids: 1 to 128 of A-Z a-z 0-9 _ - : . @, every byte value tried in
 * the first, a middle and the last position. */
TEST(room_id_rule)
{
    char id[129];
    memset(id, 'a', sizeof(id));
    ASSERT(!hub_reg_valid_room_id(id, 0));
    ASSERT(hub_reg_valid_room_id(id, 1));
    ASSERT(hub_reg_valid_room_id(id, 128));
    ASSERT(!hub_reg_valid_room_id(id, 129));
    for (int b = 0; b < 256; b++) {
        int want = (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') ||
                   b == '_' || b == '-' || b == ':' || b == '.' || b == '@';
        size_t pos[] = { 0, 5, 9 };
        for (size_t k = 0; k < 3; k++) {
            memset(id, 'a', sizeof(id));
            id[pos[k]] = (char)b;
            if (hub_reg_valid_room_id(id, 10) != want)
                FAILF("byte 0x%02x at %zu: want %d", b, pos[k], want);
        }
    }
}

/* is_member follows joins, leaves, a room's deletion and a client's
 * departure, on both workers, and knows nothing of unknown ids. */
TEST(membership)
{
    hub_reg_init(2);
    add_clients(4);
    ASSERT(hub_reg_room_join("r1", 1, 1, 0, 0, NULL) > 0);
    ASSERT(hub_reg_room_join("r1", 2, 1, 0, 0, NULL) > 0);
    ASSERT(hub_reg_room_join("r2", 2, 1, 0, 0, NULL) > 0);
    ASSERT(hub_reg_room_join("r2", 3, 1, 0, 0, NULL) > 0);
    ASSERT(hub_reg_room_is_member("r1", 1));
    ASSERT(hub_reg_room_is_member("r1", 2));
    ASSERT(!hub_reg_room_is_member("r1", 3));
    ASSERT(!hub_reg_room_is_member("r1", 4));
    ASSERT(hub_reg_room_is_member("r2", 2));
    ASSERT(hub_reg_room_is_member("r2", 3));
    ASSERT(!hub_reg_room_is_member("r2", 1));
    ASSERT(!hub_reg_room_is_member("r3", 1));   /* no such room */
    ASSERT(!hub_reg_room_is_member("r1", 99));  /* no such client */
    ASSERT(!hub_reg_room_is_member("r", 1));    /* a prefix is another room */
    ASSERT(!hub_reg_room_is_member("r1x", 1));

    int deleted = -1;
    ASSERT_EQ(hub_reg_room_leave("r1", 2, &deleted), 0);
    ASSERT(!hub_reg_room_is_member("r1", 2));
    ASSERT(hub_reg_room_is_member("r2", 2));
    ASSERT(hub_reg_room_is_member("r1", 1));

    hub_member_t *m = NULL;
    size_t n = 0;
    ASSERT_EQ(hub_reg_room_delete("r2", &m, &n), 0);
    hub_reg_members_free(m, n);
    ASSERT(!hub_reg_room_is_member("r2", 2));
    ASSERT(!hub_reg_room_is_member("r2", 3));
    /* a new room of the same name starts empty */
    ASSERT(hub_reg_room_join("r2", 4, 1, 0, 0, NULL) > 0);
    ASSERT(!hub_reg_room_is_member("r2", 3));
    ASSERT(hub_reg_room_is_member("r2", 4));

    char **left;
    uint8_t *gone;
    size_t nleft;
    hub_reg_client_remove(1, &left, &gone, &nleft);
    hub_reg_strv_free(left, nleft);
    free(gone);
    ASSERT(!hub_reg_room_is_member("r1", 1));
    hub_reg_free();
}

int main(void)
{
    RUN(pages_in_connection_order);
    RUN(past_the_end_and_limit_zero);
    RUN(details_and_counts);
    RUN(room_id_rule);
    RUN(membership);
    HARNESS_MAIN_END();
}
