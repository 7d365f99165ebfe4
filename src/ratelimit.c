/* ratelimit.c: see ratelimit.h. GCRA: an event at t is allowed when the
 * theoretical arrival time tat is at most (burst - 1) intervals ahead of t;
 * an allowed event moves tat one interval (1/rate s) past max(tat, t). */
#include "ratelimit.h"

#include <netinet/in.h>
#include <pthread.h>
#include <string.h>

int hub_rl_allow(uint64_t *tat_us, uint64_t now_us, uint32_t rate, uint32_t burst)
{
    if (rate == 0)
        return 1;
    uint64_t interval = 1000000 / rate;
    if (interval == 0)
        interval = 1;
    uint64_t tat = *tat_us > now_us ? *tat_us : now_us;
    uint64_t tolerance = (uint64_t)(burst ? burst - 1 : 0) * interval;
    if (tat - now_us > tolerance)
        return 0;
    *tat_us = tat + interval;
    return 1;
}

/* ---- per IP ---------------------------------------------------------------- */

#define IP_SLOTS 4096 /* power of two */
#define IP_PROBE 8    /* slots looked at per address */

typedef struct {
    uint8_t addr[16]; /* IPv4 as ::ffff:a.b.c.d */
    uint64_t tat_us;  /* 0 = empty */
} ip_slot_t;

static ip_slot_t ip_table[IP_SLOTS];
static pthread_mutex_t ip_mu = PTHREAD_MUTEX_INITIALIZER;

static int ip_key(const struct sockaddr *sa, uint8_t key[16])
{
    if (sa->sa_family == AF_INET) {
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        memcpy(key, mapped, 12);
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 0;
    }
    return -1;
}

static uint32_t ip_hash(const uint8_t key[16])
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    return h;
}

int hub_rl_ip_allow(const struct sockaddr *sa, uint64_t now_us, uint32_t rate)
{
    uint8_t key[16];
    if (rate == 0 || ip_key(sa, key) != 0)
        return 1;
    uint32_t h = ip_hash(key);
    pthread_mutex_lock(&ip_mu);
    ip_slot_t *slot = NULL, *victim = NULL;
    for (uint32_t i = 0; i < IP_PROBE; i++) {
        ip_slot_t *s = &ip_table[(h + i) & (IP_SLOTS - 1)];
        if (s->tat_us != 0 && memcmp(s->addr, key, 16) == 0) {
            slot = s;
            break;
        }
        /* a slot whose tat has passed holds nothing a fresh one would not */
        if (victim == NULL || s->tat_us < victim->tat_us)
            victim = s;
    }
    if (slot == NULL) {
        slot = victim;
        memcpy(slot->addr, key, 16);
        slot->tat_us = 0;
    }
    int ok = hub_rl_allow(&slot->tat_us, now_us, rate, rate);
    pthread_mutex_unlock(&ip_mu);
    return ok;
}
