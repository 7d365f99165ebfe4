/* log.c: structured log lines. Any thread; each line is assembled in a stack
 * buffer and emitted with a single write(2), so lines never interleave. */
#include "log.h"

#include <math.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

/* set by a reload on the main thread while workers log: atomic (relaxed:
 * a line logged at the old level during the switch is fine) */
static _Atomic int g_level = HUB_LOG_INFO;
static _Atomic int g_format = HUB_LOG_JSON;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void hub_log_setup(int level, int format)
{
    atomic_store_explicit(&g_level, level, memory_order_relaxed);
    atomic_store_explicit(&g_format, format, memory_order_relaxed);
}

int hub_log_enabled(int level)
{
    return level >= atomic_load_explicit(&g_level, memory_order_relaxed);
}

int hub_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

typedef struct {
    int json;                 /* the format, read once per line */
    char buf[LINE_MAX_BYTES];
    size_t len;
} line_t;

static void put(line_t *l, const char *s, size_t n)
{
    size_t room = sizeof(l->buf) - 2 - l->len; /* keep room for "}\n" */
    if (n > room)
        n = room;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_(line_t *l, const char *s)
{
    put(l, s, strlen(s));
}

/* Appends s as a JSON string body (no quotes): escapes quotes, backslashes
 * and control bytes; other bytes pass through. */
static void put_json_escaped(line_t *l, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            put(l, esc, 2);
        } else if (ch < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", ch);
            put(l, esc, 6);
        } else {
            put(l, (const char *)&s[i], 1);
        }
    }
}

static void put_value(line_t *l, const char *v, size_t n, int numeric)
{
    if (l->json) {
        if (numeric) {
            put(l, v, n);
        } else {
            put(l, "\"", 1);
            put_json_escaped(l, v, n);
            put(l, "\"", 1);
        }
        return;
    }
    int quote = n == 0 || memchr(v, ' ', n) != NULL || memchr(v, '"', n) != NULL;
    if (quote) {
        put(l, "\"", 1);
        put_json_escaped(l, v, n);
        put(l, "\"", 1);
    } else {
        put(l, v, n);
    }
}

static void put_key(line_t *l, const char *k, size_t n)
{
    if (l->json) {
        put(l, ",\"", 2);
        put_json_escaped(l, k, n);
        put(l, "\":", 2);
    } else {
        put(l, " ", 1);
        put(l, k, n);
        put(l, "=", 1);
    }
}

/* Formats one conversion starting at *pp (just past '%') from ap into out.
 * Returns the value length, sets *numeric; advances *pp past the conversion. */
static size_t format_conv(const char **pp, va_list *ap, char *out, size_t outsz,
                          const char **strp, int *numeric)
{
    const char *p = *pp;
    int lcount = 0, zflag = 0, prec_str = 0, prec = -1;
    *numeric = 1;
    *strp = out;
    if (p[0] == '.' && p[1] == '*') {
        prec_str = 1;
        p += 2;
    } else if (p[0] == '.') {
        for (prec = 0, p++; *p >= '0' && *p <= '9' && prec < 100; p++)
            prec = prec * 10 + (*p - '0');
    }
    while (*p == 'l') {
        lcount++;
        p++;
    }
    if (*p == 'z') {
        zflag = 1;
        p++;
    }
    char conv = *p;
    if (conv)
        p++;
    *pp = p;
    int n = 0;
    switch (conv) {
    case 's': {
        *numeric = 0;
        if (prec_str) {
            int len = va_arg(*ap, int);
            const char *s = va_arg(*ap, const char *);
            *strp = s ? s : "(null)";
            return s ? (size_t)(len < 0 ? 0 : len) : 6;
        }
        const char *s = va_arg(*ap, const char *);
        *strp = s ? s : "(null)";
        return strlen(*strp);
    }
    case 'd':
    case 'i':
        if (zflag)
            n = snprintf(out, outsz, "%zd", va_arg(*ap, ssize_t));
        else if (lcount >= 2)
            n = snprintf(out, outsz, "%lld", va_arg(*ap, long long));
        else if (lcount == 1)
            n = snprintf(out, outsz, "%ld", va_arg(*ap, long));
        else
            n = snprintf(out, outsz, "%d", va_arg(*ap, int));
        break;
    case 'u':
    case 'x':
        if (conv == 'x')
            *numeric = 0;
        if (zflag)
            n = snprintf(out, outsz, conv == 'x' ? "%zx" : "%zu", va_arg(*ap, size_t));
        else if (lcount >= 2)
            n = snprintf(out, outsz, conv == 'x' ? "%llx" : "%llu",
                         va_arg(*ap, unsigned long long));
        else if (lcount == 1)
            n = snprintf(out, outsz, conv == 'x' ? "%lx" : "%lu", va_arg(*ap, unsigned long));
        else
            n = snprintf(out, outsz, conv == 'x' ? "%x" : "%u", va_arg(*ap, unsigned));
        break;
    case 'g':
    case 'f': {
        double v = va_arg(*ap, double);
        *numeric = isfinite(v);
        if (prec >= 0)
            n = snprintf(out, outsz, conv == 'f' ? "%.*f" : "%.*g", prec, v);
        else
            n = snprintf(out, outsz, conv == 'f' ? "%f" : "%g", v);
        break;
    }
    default:
        *numeric = 0;
        n = snprintf(out, outsz, "?");
        break;
    }
    return n < 0 ? 0 : ((size_t)n >= outsz ? outsz - 1 : (size_t)n);
}

static int key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
}

/* Writes the value at *pp, up to the next space: literal bytes and
 * conversions, each conversion taking its argument from ap, so arguments
 * stay in step whatever the format holds ("addr=%s:%d" is one string). A
 * value that is one numeric conversion stays a JSON number. Advances *pp. */
static void put_field_value(line_t *l, const char **pp, va_list *ap)
{
    char val[512], tmp[64];
    size_t len = 0;
    const char *p = *pp;
    int first = 1;
    while (*p && *p != ' ') {
        const char *s;
        size_t n;
        int numeric = 0;
        if (*p == '%' && p[1] != '%') {
            p++;
            n = format_conv(&p, ap, tmp, sizeof(tmp), &s, &numeric);
        } else { /* a literal byte; "%%" is one '%' */
            s = p;
            n = 1;
            p += *p == '%' ? 2 : 1;
        }
        if (first && (*p == '\0' || *p == ' ')) { /* one piece: no copy */
            put_value(l, s, n, numeric);
            *pp = p;
            return;
        }
        first = 0;
        if (n > sizeof(val) - len)
            n = sizeof(val) - len;
        memcpy(val + len, s, n);
        len += n;
    }
    *pp = p;
    put_value(l, val, len, 0);
}

void hub_log(int level, const char *msg, const char *kvfmt, ...)
{
    if (!hub_log_enabled(level))
        return;
    line_t l;
    l.len = 0;
    l.json = atomic_load_explicit(&g_format, memory_order_relaxed) == HUB_LOG_JSON;

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[40];
    size_t tl = strftime(ts, sizeof(ts) - 6, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof(ts) - tl, ".%03uZ", (unsigned)(tv.tv_usec / 1000) % 1000u);
    const char *lvl = level_names[level < 0 ? 0 : (level > 3 ? 3 : level)];

    if (l.json) {
        puts_(&l, "{\"time\":\"");
        puts_(&l, ts);
        puts_(&l, "\",\"level\":\"");
        puts_(&l, lvl);
        puts_(&l, "\",\"msg\":\"");
        put_json_escaped(&l, msg, strlen(msg));
        puts_(&l, "\"");
    } else {
        char up[8];
        size_t i = 0;
        for (; lvl[i] && i < sizeof(up) - 1; i++)
            up[i] = (char)(lvl[i] - 'a' + 'A');
        up[i] = '\0';
        puts_(&l, ts);
        puts_(&l, " ");
        puts_(&l, up);
        puts_(&l, " ");
        puts_(&l, msg);
    }

    va_list ap;
    va_start(ap, kvfmt);
    const char *p = kvfmt ? kvfmt : "";
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *k = p;
        while (key_char(*p))
            p++;
        if (*p == '=' && p > k) {
            put_key(&l, k, (size_t)(p - k));
            p++;
        } else { /* malformed key: the token is logged as a value of "?" */
            p = k;
            put_key(&l, "?", 1);
        }
        put_field_value(&l, &p, &ap);
    }
    va_end(ap);

    if (l.json)
        l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    ssize_t w = write(STDERR_FILENO, l.buf, l.len);
    (void)w;
}

uint64_t hub_ratelog_hit(hub_ratelog_t *r, uint64_t now_ms)
{
    r->events++;
    if (r->last_ms != 0 && now_ms - r->last_ms < 10000)
        return 0;
    r->last_ms = now_ms;
    uint64_t n = r->events;
    r->events = 0;
    return n;
}
