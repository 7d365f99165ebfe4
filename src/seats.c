/* seats.c: see seats.h. */
#include "seats.h"

void hub_seats_on_bus(int kind, const char *origin, const uint8_t *p, size_t n)
{
    HUB_UNUSED(kind);
    HUB_UNUSED(origin);
    HUB_UNUSED(p);
    HUB_UNUSED(n);
}

void hub_seats_bus_stop(void)
{
}
