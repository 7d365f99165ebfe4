/* utf8.h: well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates,
 * nothing past U+10FFFF). Pure; any thread. */
#ifndef HUB_UTF8_H
#define HUB_UTF8_H

#include <stddef.h>

/* Length (2 to 4) of the well-formed sequence whose lead byte, at p (p < e),
 * is not ASCII; 0 when it is not one (a bad lead byte, a bad or missing
 * continuation, an overlong form, a surrogate, past U+10FFFF). */
size_t hub_utf8_seq(const unsigned char *p, const unsigned char *e);

/* 1 when p..p+n is well-formed UTF-8. ASCII runs go 8 bytes at a time. */
int hub_utf8_valid(const unsigned char *p, size_t n);

#endif
