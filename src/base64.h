/* base64.h: standard base64 (RFC 4648 §4, with padding). Pure; any thread. */
#ifndef HUB_BASE64_H
#define HUB_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Encodes len bytes into out, which must hold 4*((len+2)/3)+1 bytes; writes
 * a NUL and returns the encoded length. */
size_t hub_base64_encode(const uint8_t *in, size_t len, char *out);

/* Decodes exactly one canonical padded base64 string of inlen characters
 * into out (capacity outcap). Returns the decoded length, or -1 when the
 * input is not canonical base64 or does not fit. */
int hub_base64_decode(const char *in, size_t inlen, uint8_t *out, size_t outcap);

#endif
