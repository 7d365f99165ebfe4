/* jsonscan.h: byte-level scanning of JSON text that cJSON already accepted:
 * the exact source span of an object member (for byte-for-byte passthrough
 * and exact integer checks) and detection of escaped NUL characters (cJSON
 * silently cuts strings there). Pure; any thread. */
#ifndef HUB_JSONSCAN_H
#define HUB_JSONSCAN_H

#include <stddef.h>

/* Finds the first member named key (unescaped names only) of the object
 * whose text starts at p (leading blanks allowed). Sets *vs and *vl to the
 * value's source text. Returns 1 when found, else 0. */
int hub_json_member(const char *p, size_t n, const char *key, const char **vs, size_t *vl);

/* 1 when a string in the text contains the escape \u0000. */
int hub_json_has_nul(const char *p, size_t n);

/* 1 when p..p+n is only JSON whitespace. */
int hub_json_blank(const char *p, size_t n);

/* 1 when p..p+n is exactly one JSON value (RFC 8259, strict: no leading
 * zeros, no "1.", no raw control bytes in strings, no blanks beyond space,
 * tab, CR and LF) in valid UTF-8 (no overlong forms, no surrogates), with
 * blanks around it and at most HUB_JSON_MAX_DEPTH nested arrays and
 * objects. cJSON accepts more than this; text that passes here can be
 * passed through to any JSON parser byte for byte. */
#define HUB_JSON_MAX_DEPTH 512
int hub_json_valid(const char *p, size_t n);

#endif
