/* hist.c: fixed log-bucket histogram (see bench.h for the layout). */
#include "bench.h"

#include <string.h>

void bench_hist_reset(bench_hist_t *h)
{
    memset(h, 0, sizeof(*h));
}

void bench_hist_merge(bench_hist_t *dst, const bench_hist_t *src)
{
    for (uint32_t i = 0; i < HIST_N; i++)
        dst->b[i] += src->b[i];
    dst->count += src->count;
    if (src->max > dst->max)
        dst->max = src->max;
}

/* [lo, hi] of bucket i */
static void bucket_range(uint32_t i, uint64_t *lo, uint64_t *hi)
{
    if (i < HIST_SUB) {
        *lo = *hi = i;
        return;
    }
    uint32_t shift = i / HIST_SUB - 1;
    uint64_t mant = HIST_SUB + i % HIST_SUB;
    *lo = mant << shift;
    *hi = ((mant + 1) << shift) - 1;
}

uint64_t bench_hist_quantile(const bench_hist_t *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t cum = 0;
    for (uint32_t i = 0; i < HIST_N; i++) {
        cum += h->b[i];
        if (cum >= rank) {
            uint64_t lo, hi;
            bucket_range(i, &lo, &hi);
            uint64_t mid = lo + (hi - lo) / 2;
            return mid > h->max ? h->max : mid;
        }
    }
    return h->max;
}
