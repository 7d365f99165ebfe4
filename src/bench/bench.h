/* bench.h: gohub-bench, a WebSocket load generator (shares no code with the
 * server). Contract: the command line and the JSON line described in the
 * bench documentation; see main.c for the modes. */
#ifndef GOHUB_BENCH_H
#define GOHUB_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ---- clock ------------------------------------------------------------ */

static inline int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- sha1.c: SHA-1, base64, Sec-WebSocket-Accept ---------------------- */

void bench_sha1(const void *data, size_t len, uint8_t out[20]);
/* writes 4*ceil(len/3) characters plus a NUL; returns the length */
size_t bench_base64(const uint8_t *in, size_t len, char *out);
/* accept value for a 24-character key: base64(sha1(key + GUID)), 28 chars + NUL */
void bench_ws_accept(const char *key, size_t keylen, char out[29]);

/* ---- hist.c: mergeable log-bucket latency histogram (ns) ---------------
 * Values below 64 ns are exact; above, 64 sub-buckets per power of two
 * (relative error < 1.6%), up to 2^40 ns (~18 min). Fixed size, so the
 * children send theirs to the parent as plain arrays and the parent adds. */

#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_EXP 40
#define HIST_N (HIST_SUB * (HIST_MAX_EXP - HIST_SUB_BITS + 2))

typedef struct {
    uint64_t count;
    uint64_t max;
    uint64_t b[HIST_N];
} bench_hist_t;

static inline uint32_t bench_hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (uint32_t)v;
    if (v >= (1ULL << HIST_MAX_EXP))
        return HIST_N - 1;
    uint32_t e = 63u - (uint32_t)__builtin_clzll(v); /* >= HIST_SUB_BITS */
    uint32_t shift = e - HIST_SUB_BITS;
    uint32_t mant = (uint32_t)(v >> shift); /* in [64, 128) */
    return (shift + 1) * HIST_SUB + (mant - HIST_SUB);
}

static inline void bench_hist_add(bench_hist_t *h, int64_t v)
{
    uint64_t u = v < 0 ? 0 : (uint64_t)v;
    h->b[bench_hist_index(u)]++;
    h->count++;
    if (u > h->max)
        h->max = u;
}

void bench_hist_reset(bench_hist_t *h);
void bench_hist_merge(bench_hist_t *dst, const bench_hist_t *src);
/* value (ns) at quantile q in [0,1]: the middle of the bucket holding it */
uint64_t bench_hist_quantile(const bench_hist_t *h, double q);

/* ---- options ---------------------------------------------------------- */

enum { MODE_HOLD = 1, MODE_FANOUT, MODE_ECHO };

#define BENCH_MAX_PORTS 64
#define BENCH_MAX_PIDS 64

typedef struct {
    int mode;
    char host[256];
    int port;                       /* = ports[0] */
    int ports[BENCH_MAX_PORTS];     /* --ports: several servers (cluster nodes) */
    int nports;
    int pub_port;                   /* fanout: publishers all on this port (0 = spread) */
    char path[512];
    int pid;                        /* = pids[0] */
    int pids[BENCH_MAX_PIDS];       /* --pid A,B,...: RSS and CPU summed over them */
    int npids;
    char label[256];
    uint32_t src_first, src_last; /* host byte order */
    int procs;                    /* 0 = automatic */
    int quiet;
    long conns;
    long rooms;
    double hold_s;
    long publishers;
    double rate;
    double duration, warmup;
    int step, refine;             /* --step; --refine: bisections after the first failing step */
    double step_factor, p99_limit_ms;
    long window;
    char type[128];
} bench_opts_t;

/* ---- worker (client process) ------------------------------------------ */

enum { ROLE_SUB = 1, ROLE_PUB, ROLE_ECHO };

typedef struct {
    int role;
    int child_id;
    uint32_t first, count; /* global connection indices [first, first+count) */
    uint32_t rooms;        /* > 0: connection i joins room-(i % rooms) */
    uint32_t publishers;   /* fanout: K, to size the per-subscriber seq table */
    uint32_t max_inflight; /* handshakes (and joins) in flight */
} bench_worker_cfg_t;

enum { CMD_GO = 1, CMD_REPORT, CMD_EXIT };

typedef struct {
    uint32_t cmd;
    uint32_t step;
    int64_t t_start, t_end; /* measured window, CLOCK_MONOTONIC ns */
    double rate;            /* fanout: total messages/s across all publishers */
} bench_cmd_t;

enum { REP_READY = 1, REP_STATS };

/* child -> parent, followed by nextra uint64 values (per room: subscribers
 * connected in a READY report of a subscriber child, messages sent in the
 * window in a STATS report of the publisher child) */
typedef struct {
    uint32_t type;
    uint32_t nextra;
    uint64_t connected, failed, retried, dropped;
    int64_t t_first_connect, t_last_101, t_last_ready;
    uint64_t sent, sent_total;
    uint64_t delivered, gaps, reordered, other;
    uint64_t replies, errors;
    uint64_t frames_total; /* every text/binary message received, any window */
    uint64_t recvs_total;  /* recv() calls that returned data */
    uint64_t wakeups_total; /* epoll_wait calls that returned events */
    int64_t cpu_ns;        /* this process's user+system CPU so far */
    char first_error[96];
    bench_hist_t hist;   /* latency: kernel arrival stamp - ts (fanout), reply - send (echo) */
    bench_hist_t uhist;  /* fanout: user-space receive time - ts (includes client delays) */
} bench_report_t;

/* the target port of connection `idx`: with several ports, each room's
 * members go round-robin over them (member k of room r, idx = r + k*rooms,
 * to ports[(r + k) % nports]), so every room spans every server and every
 * server gets the same share; without rooms, idx % nports */
static inline int bench_port_of(const bench_opts_t *o, uint32_t idx, uint32_t rooms)
{
    if (o->nports <= 1)
        return o->port;
    uint32_t k = rooms ? idx % rooms + idx / rooms : idx;
    return o->ports[k % (uint32_t)o->nports];
}

int bench_worker_main(const bench_opts_t *o, const bench_worker_cfg_t *wc, int cmd_fd, int rep_fd);

#endif
