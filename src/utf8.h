/* utf8.h: well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates,
 * nothing past U+10FFFF). Pure; any thread. */
#ifndef HUB_UTF8_H
#define HUB_UTF8_H

#include <stddef.h>

/* Length (2 to 4) of the well-formed sequence whose lead byte, at p (p < e),
 * is not ASCII; 0 when it is not one (a bad lead byte, a bad or missing
 * continuation, an overlong form, a surrogate, past U+10FFFF). */
size_t hub_utf8_seq(const unsigned char *p, const unsigned char *e);

/* Length of the longest well-formed prefix of p..p+n (n when all of it
 * is). ASCII runs go 8 bytes at a time. */
size_t hub_utf8_prefix(const unsigned char *p, size_t n);

/* 1 when p..p+n is well-formed UTF-8. */
int hub_utf8_valid(const unsigned char *p, size_t n);

/* U+FFFD, what a byte that starts no well-formed sequence becomes in what
 * gohub sends (as Go's encoding/json does): a text frame is always UTF-8. */
#define HUB_UTF8_REPLACEMENT "\xEF\xBF\xBD"

/* Copies s..s+n into out as well-formed UTF-8, each bad byte replaced by
 * U+FFFD, up to cap bytes without cutting a character; returns the bytes
 * written. */
size_t hub_utf8_clean(char *out, size_t cap, const char *s, size_t n);

#endif
