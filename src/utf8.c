/* utf8.c: UTF-8 validation (see utf8.h). */
#include "utf8.h"

#include <stdint.h>
#include <string.h>

size_t hub_utf8_seq(const unsigned char *p, const unsigned char *e)
{
    /* the lead byte gives the length and the range of the second byte that
     * rules out overlong forms, surrogates and code points past U+10FFFF */
    unsigned c = *p, lo = 0x80, hi = 0xBF;
    size_t len;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if ((size_t)(e - p) < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return len;
}

size_t hub_utf8_prefix(const unsigned char *p, size_t n)
{
    const unsigned char *s = p, *e = p + n;
    while (p < e) {
        if (e - p >= 8) {
            uint64_t v;
            memcpy(&v, p, 8);
            if ((v & 0x8080808080808080ull) == 0) {
                p += 8;
                continue;
            }
        }
        if (*p < 0x80) {
            p++;
            continue;
        }
        size_t len = hub_utf8_seq(p, e);
        if (len == 0)
            break;
        p += len;
    }
    return (size_t)(p - s);
}

int hub_utf8_valid(const unsigned char *p, size_t n)
{
    return hub_utf8_prefix(p, n) == n;
}

size_t hub_utf8_clean(char *out, size_t cap, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *e = p + n;
    size_t o = 0;
    while (p < e) {
        size_t ok = hub_utf8_prefix(p, (size_t)(e - p)); /* well-formed: copied whole */
        if (ok > cap - o) { /* what fits, ending before a cut character */
            for (ok = cap - o; ok > 0 && (p[ok] & 0xC0) == 0x80; ok--)
                ;
            memcpy(out + o, p, ok);
            return o + ok;
        }
        memcpy(out + o, p, ok);
        o += ok;
        p += ok;
        if (p == e || cap - o < 3)
            break;
        memcpy(out + o, HUB_UTF8_REPLACEMENT, 3); /* the bad byte at p */
        o += 3;
        p++;
    }
    return o;
}
