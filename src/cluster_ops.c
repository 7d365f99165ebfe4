/* cluster_ops.c: see cluster_ops.h. */
#include "cluster_ops.h"

#include "common.h"

void hub_ops_on_bus(int kind, const char *origin, const char *arg, const uint8_t *p, size_t n)
{
    HUB_UNUSED(kind);
    HUB_UNUSED(origin);
    HUB_UNUSED(arg);
    HUB_UNUSED(p);
    HUB_UNUSED(n);
}

void hub_ops_bus_stop(void)
{
}
