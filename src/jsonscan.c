/* jsonscan.c: see jsonscan.h. The text was validated by cJSON first, so the
 * scanner only needs to find boundaries; it still never reads past n. */
#include "jsonscan.h"

#include <ctype.h>
#include <string.h>

#include "utf8.h"

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at the opening quote; returns just past the closing one, or NULL. */
static const char *skip_string(const char *p, const char *e)
{
    for (p++; p < e;) {
        const char *q = memchr(p, '"', (size_t)(e - p));
        if (q == NULL)
            return NULL;
        /* the quote is escaped when an odd number of backslashes precede it */
        size_t bs = 0;
        while (q - bs > p && q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        if (bs % 2 == 0)
            return q + 1;
        p = q + 1;
    }
    return NULL;
}

static const char *skip_value(const char *p, const char *e)
{
    p = skip_ws(p, e);
    if (p >= e)
        return NULL;
    if (*p == '"')
        return skip_string(p, e);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < e) {
            if (*p == '"') {
                if ((p = skip_string(p, e)) == NULL)
                    return NULL;
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if ((*p == '}' || *p == ']') && --depth == 0)
                return p + 1;
            p++;
        }
        return NULL;
    }
    while (p < e && *p != ',' && *p != '}' && *p != ']' && !isspace((unsigned char)*p))
        p++;
    return p;
}

int hub_json_member(const char *p, size_t n, const char *key, const char **vs, size_t *vl)
{
    const char *e = p + n;
    size_t kl = strlen(key);
    p = skip_ws(p, e);
    if (p >= e || *p != '{')
        return 0;
    p++;
    for (;;) {
        p = skip_ws(p, e);
        if (p >= e || *p != '"')
            return 0;
        const char *ks = p + 1, *kend = skip_string(p, e);
        if (kend == NULL)
            return 0;
        int match = (size_t)(kend - 1 - ks) == kl && memcmp(ks, key, kl) == 0;
        p = skip_ws(kend, e);
        if (p >= e || *p != ':')
            return 0;
        const char *v = skip_ws(p + 1, e), *vend = skip_value(v, e);
        if (vend == NULL)
            return 0;
        if (match) {
            *vs = v;
            *vl = (size_t)(vend - v);
            return 1;
        }
        p = skip_ws(vend, e);
        if (p >= e || *p != ',')
            return 0;
        p++;
    }
}

int hub_json_has_nul(const char *p, size_t n)
{
    /* no backslash, no escape: the common case costs one memchr */
    if (memchr(p, '\\', n) == NULL)
        return 0;
    const char *e = p + n;
    int in_str = 0;
    for (; p < e; p++) {
        if (!in_str) {
            in_str = *p == '"';
            continue;
        }
        if (*p == '"') {
            in_str = 0;
        } else if (*p == '\\' && p + 1 < e) {
            if (p[1] == 'u' && p + 5 < e && memcmp(p + 2, "0000", 4) == 0)
                return 1;
            p++; /* the escaped character */
        }
    }
    return 0;
}

int hub_json_blank(const char *p, size_t n)
{
    return skip_ws(p, p + n) == p + n;
}

/* ---- strict validation ---------------------------------------------------- */

/* p at the opening quote; returns just past the closing one, or NULL. */
static const char *valid_string(const unsigned char *p, const unsigned char *e)
{
    for (p++; p < e;) {
        unsigned c = *p;
        if (c == '"')
            return (const char *)p + 1;
        if (c < 0x20)
            return NULL;
        if (c == '\\') {
            if (++p >= e)
                return NULL;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (p + i >= e || !isxdigit(p[i]))
                        return NULL;
                p += 5;
            } else if (*p != '\0' && strchr("\"\\/bfnrt", *p) != NULL) {
                p++;
            } else {
                return NULL;
            }
            continue;
        }
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t len = hub_utf8_seq(p, e);
        if (len == 0)
            return NULL;
        p += len;
    }
    return NULL;
}

static const unsigned char *digits(const unsigned char *p, const unsigned char *e)
{
    const unsigned char *s = p;
    while (p < e && *p >= '0' && *p <= '9')
        p++;
    return p > s ? p : NULL;
}

static const char *valid_number(const unsigned char *p, const unsigned char *e)
{
    if (*p == '-')
        p++;
    if (p < e && *p == '0')
        p++;
    else if ((p = p < e && *p >= '1' && *p <= '9' ? digits(p, e) : NULL) == NULL)
        return NULL;
    if (p < e && *p == '.' && (p = digits(p + 1, e)) == NULL)
        return NULL;
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if ((p = digits(p, e)) == NULL)
            return NULL;
    }
    return (const char *)p;
}

static const char *valid_literal(const char *p, const char *e, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(e - p) >= n && memcmp(p, lit, n) == 0 ? p + n : NULL;
}

/* One value at p (no leading blanks); returns just past it, or NULL. The
 * nesting is bounded by HUB_JSON_MAX_DEPTH, so the recursion is too. */
static const char *valid_value(const char *p, const char *e, int depth)
{
    if (p >= e)
        return NULL;
    const unsigned char *u = (const unsigned char *)p, *ue = (const unsigned char *)e;
    switch (*p) {
    case '"':
        return valid_string(u, ue);
    case 't':
        return valid_literal(p, e, "true");
    case 'f':
        return valid_literal(p, e, "false");
    case 'n':
        return valid_literal(p, e, "null");
    case '{':
    case '[': {
        char close = *p == '{' ? '}' : ']';
        if (depth >= HUB_JSON_MAX_DEPTH)
            return NULL;
        p = skip_ws(p + 1, e);
        if (p < e && *p == close)
            return p + 1;
        for (;;) {
            if (close == '}') {
                if (p >= e || *p != '"' ||
                    (p = valid_string((const unsigned char *)p, ue)) == NULL)
                    return NULL;
                p = skip_ws(p, e);
                if (p >= e || *p != ':')
                    return NULL;
                p = skip_ws(p + 1, e);
            }
            if ((p = valid_value(p, e, depth + 1)) == NULL)
                return NULL;
            p = skip_ws(p, e);
            if (p < e && *p == close)
                return p + 1;
            if (p >= e || *p != ',')
                return NULL;
            p = skip_ws(p + 1, e);
        }
    }
    default:
        return *p == '-' || (*p >= '0' && *p <= '9') ? valid_number(u, ue) : NULL;
    }
}

int hub_json_valid(const char *p, size_t n)
{
    const char *e = p + n;
    p = valid_value(skip_ws(p, e), e, 0);
    return p != NULL && skip_ws(p, e) == e;
}
