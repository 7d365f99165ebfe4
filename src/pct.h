/* pct.h: percent-decoding (RFC 3986 §2.1) of URL paths, query values and
 * the Redis URL. Pure, no dependencies (the transports' unit tests link it
 * alone); any thread. */
#ifndef HUB_PCT_H
#define HUB_PCT_H

#include <stddef.h>

/* Percent-decodes s[0..n) into dst (cap > 0 bytes, NUL-terminated; a
 * longer result is cut there). Returns the full decoded length, or
 * (size_t)-1 for a '%' not followed by two hex digits. '+' stays '+'. */
size_t hub_pct_decode(const char *s, size_t n, char *dst, size_t cap);

#endif
