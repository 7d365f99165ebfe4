/* client_id_test.c: client ids ("<node_id>-<hex conn id>"). What
 * hub_client_id_format writes, hub_client_id_parse reads back; anything
 * else (another node's id, upper-case or non-hex digits, too many or no
 * digits, a prefix of the node id) parses to 0. */
#include <inttypes.h>
#include <stdlib.h>

#include "conn.h"
#include "harness.h"
#include "server.h"

static hub_server_t srv;

static uint64_t parse(const char *s)
{
    return hub_client_id_parse(&srv, s, strlen(s));
}

TEST(round_trip)
{
    static const uint64_t ids[] = {
        1, 9, 10, 15, 16, 255, 0x1000000001ull, (1ull << 40) | 7, 0xfedcba9876543210ull,
        UINT64_MAX,
    };
    char buf[HUB_CLIENT_ID_MAX];
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        size_t n = hub_client_id_format(&srv, ids[i], buf, sizeof(buf));
        ASSERT_EQ(n, strlen(buf));
        ASSERT(hub_client_id_parse(&srv, buf, n) == ids[i]);
    }
    /* every hex digit in every position */
    uint64_t x = 0x0123456789abcdefull;
    for (int r = 0; r < 16; r++, x = x << 4 | x >> 60) {
        size_t n = hub_client_id_format(&srv, x, buf, sizeof(buf));
        ASSERT(hub_client_id_parse(&srv, buf, n) == x);
    }
}

TEST(what_parses)
{
    ASSERT(parse("gohub-ab12-1") == 1);
    ASSERT(parse("gohub-ab12-0") == 0);
    ASSERT(parse("gohub-ab12-00ff") == 0xff); /* leading zeros are read */
    ASSERT(parse("gohub-ab12-ffffffffffffffff") == UINT64_MAX);
    ASSERT(parse("gohub-ab12-09afAF") == 0);   /* upper case */
    ASSERT(parse("gohub-ab12-1g") == 0);
    ASSERT(parse("gohub-ab12-1/") == 0);       /* bytes next to the digits */
    ASSERT(parse("gohub-ab12-1:") == 0);
    ASSERT(parse("gohub-ab12-1`") == 0);
    ASSERT(parse("gohub-ab12-1@") == 0);
    ASSERT(parse("gohub-ab12-1 ") == 0);
    ASSERT(parse("gohub-ab12-\xff" "1") == 0);
    ASSERT(parse("gohub-ab12-10000000000000000") == 0); /* 17 digits */
    ASSERT(parse("gohub-ab12-") == 0);
    ASSERT(parse("gohub-ab12") == 0);
    ASSERT(parse("gohub-ab1-1") == 0);  /* another node */
    ASSERT(parse("gohub-ab123-1") == 0);
    ASSERT(parse("gohub_ab12-1") == 0);
    ASSERT(parse("gohub-ab12_1") == 0);
    ASSERT(parse("gohub-ab12--1") == 0);
    ASSERT(parse("") == 0);
    /* a NUL inside is not a digit */
    ASSERT(hub_client_id_parse(&srv, "gohub-ab12-1\0" "2", 14) == 0);
    ASSERT(hub_client_id_parse(&srv, "gohub-ab12-12", 12) == 1); /* len bounds it */
}

/* The rule, a byte at a time: "<node id>-" then 1 to 16 of [0-9a-f]. */
static uint64_t reference(const char *node, const char *s, size_t len)
{
    size_t nl = strlen(node);
    if (len <= nl + 1 || len > nl + 17 || memcmp(s, node, nl) != 0 || s[nl] != '-')
        return 0;
    uint64_t id = 0;
    for (size_t i = nl + 1; i < len; i++) {
        char ch = s[i];
        int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (v < 0)
            return 0;
        id = id << 4 | (uint64_t)v;
    }
    return id;
}

/* Node ids of several lengths (the parser reads whole words when the id
 * is long enough, a copy when not), digit strings of every length, and
 * every byte value planted at every position, against the reference. */
TEST(matches_the_rule)
{
    static const char *nodes[] = { "n", "ab-1", "gohub-7", "gohub-ab12cd34", "node.eu-west-1.x" };
    static const char hexd[] = "0123456789abcdef";
    uint64_t x = 0x9e3779b97f4a7c15ull;
    char s[128];
    /* each node id measured on each call, then with its length cached as
     * the server caches it */
    for (size_t ni = 0; ni < 2 * sizeof(nodes) / sizeof(nodes[0]); ni++) {
        const char *node = nodes[ni / 2];
        snprintf(srv.node_id, sizeof(srv.node_id), "%s", node);
        size_t nl = strlen(node);
        srv.node_id_len = ni % 2 ? nl : 0;
        for (size_t k = 0; k <= 18; k++) {
            for (int round = 0; round < 40; round++) {
                memcpy(s, node, nl);
                s[nl] = '-';
                for (size_t i = 0; i < k; i++) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    s[nl + 1 + i] = hexd[x & 15];
                }
                size_t len = nl + 1 + k;
                if (hub_client_id_parse(&srv, s, len) != reference(node, s, len))
                    FAILF("node %s: %.*s", node, (int)len, s);
                if (round == 0) {
                    /* every byte at every digit position */
                    for (size_t pos = nl + 1; pos < len; pos++) {
                        char keep = s[pos];
                        for (int b = 0; b < 256; b++) {
                            s[pos] = (char)b;
                            if (hub_client_id_parse(&srv, s, len) != reference(node, s, len))
                                FAILF("node %s, byte 0x%02x at %zu", node, b, pos);
                        }
                        s[pos] = keep;
                    }
                }
            }
        }
    }
    snprintf(srv.node_id, sizeof(srv.node_id), "gohub-ab12");
    srv.node_id_len = 0;
}

int main(void)
{
    memset(&srv, 0, sizeof(srv));
    snprintf(srv.node_id, sizeof(srv.node_id), "gohub-ab12");
    RUN(round_trip);
    RUN(what_parses);
    RUN(matches_the_rule);
    HARNESS_MAIN_END();
}
