/* ratelimit_test.c: the GCRA limiter (burst, steady rate, recovery, rate 0)
 * and the per-IP table (separate addresses, IPv4/IPv6, bounded eviction). */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "harness.h"
#include "ratelimit.h"

/* Events allowed out of n tries at now_us. */
static int burst_at(uint64_t *tat, uint64_t now_us, uint32_t rate, uint32_t burst, int n)
{
    int ok = 0;
    for (int i = 0; i < n; i++)
        ok += hub_rl_allow(tat, now_us, rate, burst);
    return ok;
}

TEST(burst_then_refused)
{
    uint64_t tat = 0;
    ASSERT_EQ(burst_at(&tat, 5000000, 100, 200, 1000), 200);
}

TEST(steady_rate_is_allowed_forever)
{
    uint64_t tat = 0, t = 1000000;
    for (int i = 0; i < 10000; i++, t += 10000) /* exactly 100/s */
        ASSERT(hub_rl_allow(&tat, t, 100, 1));
}

TEST(faster_than_rate_with_burst_one_refuses_every_other)
{
    uint64_t tat = 0, t = 1000000;
    int ok = 0;
    for (int i = 0; i < 1000; i++, t += 5000) /* 200/s against 100/s */
        ok += hub_rl_allow(&tat, t, 100, 1);
    ASSERT_EQ(ok, 500);
}

TEST(refill_after_idle)
{
    uint64_t tat = 0;
    ASSERT_EQ(burst_at(&tat, 1000000, 10, 5, 100), 5);
    ASSERT_EQ(burst_at(&tat, 1000000 + 100000, 10, 5, 100), 1); /* 0.1 s: one more */
    ASSERT_EQ(burst_at(&tat, 1000000 + 10000000, 10, 5, 100), 5); /* idle: full again */
}

TEST(rate_zero_is_unlimited)
{
    uint64_t tat = 0;
    ASSERT_EQ(burst_at(&tat, 1, 0, 1, 100000), 100000);
    ASSERT_EQ(tat, 0);
}

TEST(rate_above_a_million_does_not_divide_by_zero)
{
    uint64_t tat = 0;
    ASSERT_EQ(burst_at(&tat, 1000000, 5000000, 3, 10), 3);
}

static struct sockaddr_in v4(const char *ip)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

TEST(ip_limit_is_per_address)
{
    struct sockaddr_in a = v4("10.1.0.1"), b = v4("10.1.0.2");
    uint64_t now = 7000000;
    int oka = 0, okb = 0;
    for (int i = 0; i < 50; i++) {
        oka += hub_rl_ip_allow((struct sockaddr *)&a, now, 20);
        okb += hub_rl_ip_allow((struct sockaddr *)&b, now, 20);
    }
    ASSERT_EQ(oka, 20);
    ASSERT_EQ(okb, 20);
    ASSERT(hub_rl_ip_allow((struct sockaddr *)&a, now + 1000000, 20)); /* a second later */
}

TEST(ip_limit_ipv6)
{
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof(a));
    a.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "2001:db8::7", &a.sin6_addr);
    int ok = 0;
    for (int i = 0; i < 10; i++)
        ok += hub_rl_ip_allow((struct sockaddr *)&a, 9000000, 3);
    ASSERT_EQ(ok, 3);
}

TEST(ip_table_survives_a_million_addresses)
{
    /* more addresses than slots: old ones are forgotten, nothing grows, and
     * every new address still gets its burst */
    uint64_t now = 20000000;
    for (uint32_t i = 0; i < 1000000; i++) {
        struct sockaddr_in a;
        memset(&a, 0, sizeof(a));
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(0x0b000000u + i);
        ASSERT(hub_rl_ip_allow((struct sockaddr *)&a, now, 5));
    }
}

int main(void)
{
    RUN(burst_then_refused);
    RUN(steady_rate_is_allowed_forever);
    RUN(faster_than_rate_with_burst_one_refuses_every_other);
    RUN(refill_after_idle);
    RUN(rate_zero_is_unlimited);
    RUN(rate_above_a_million_does_not_divide_by_zero);
    RUN(ip_limit_is_per_address);
    RUN(ip_limit_ipv6);
    RUN(ip_table_survives_a_million_addresses);
    HARNESS_MAIN_END();
}
