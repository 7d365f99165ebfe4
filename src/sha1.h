/* sha1.h: SHA-1 (FIPS 180-4), used only for Sec-WebSocket-Accept.
 * Pure functions; any thread. */
#ifndef HUB_SHA1_H
#define HUB_SHA1_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[5];
    uint64_t total;    /* bytes hashed so far */
    uint8_t block[64];
    size_t used;       /* bytes in block */
} hub_sha1_t;

void hub_sha1_init(hub_sha1_t *s);
void hub_sha1_update(hub_sha1_t *s, const void *data, size_t len);
void hub_sha1_final(hub_sha1_t *s, uint8_t out[20]);

#endif
