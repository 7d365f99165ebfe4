/* pct.c: see pct.h. */
#include "pct.h"

static int hex_val(char ch)
{
    return ch >= '0' && ch <= '9'   ? ch - '0'
           : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
           : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                    : -1;
}

size_t hub_pct_decode(const char *s, size_t n, char *dst, size_t cap)
{
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            int hi = i + 2 < n ? hex_val(s[i + 1]) : -1;
            int lo = i + 2 < n ? hex_val(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return (size_t)-1;
            ch = (char)(hi << 4 | lo);
            i += 2;
        }
        if (out + 1 < cap)
            dst[out] = ch;
        out++;
    }
    dst[out < cap ? out : cap - 1] = '\0';
    return out;
}
