/* lua_json.c: JSON ↔ Lua for handlers, in one pass each way. Arrays decode to tables
 * carrying an array marker so they re-encode as arrays (also when empty);
 * JSON null is the gohub.json.null sentinel; a raw-JSON value (gohub.raw,
 * gohub.json.raw) is emitted verbatim, which is how `content` passes through
 * byte for byte. Worker thread (owner of the VM). */
#include <math.h>
#include <string.h>

#include "jsonscan.h"
#include "lua_priv.h"
#include "msg.h"
#include "utf8.h"

#define MAX_DEPTH 128

/* ---- decoder ------------------------------------------------------------ */

/* One pass over the text, straight to Lua values: strict RFC 8259 (no
 * leading zeros, no "1.", no raw control characters in strings, no lone
 * surrogates, no trailing commas), nesting up to DECODE_DEPTH. Strings
 * without escapes are pushed from the source bytes; escaped ones are
 * decoded into the VM's scratch buffer. Duplicate keys: the last one wins,
 * in the table and in the recorded spans alike. */

#define DECODE_DEPTH 1000 /* as cJSON's CJSON_NESTING_LIMIT */

typedef struct {
    hub_vm_t *vm;
    lua_State *L;
    const char *p, *end;
    const char *err;       /* first error, NULL while fine */
    hub_json_env_t *env;   /* spans to record, or NULL */
    int depth;
} dec_t;

static int dec_value(dec_t *d, int push);

/* The bytes of the word v (n bytes wide, as a uint64_t; ones is 0x01 in
 * each of them) that a JSON string cannot hold as they are: '"', '\\' or a
 * control. A byte below 0x20, or equal to '"' or '\\', sets its high bit
 * in the mask; exact as to whether any byte matches, and the lowest flagged
 * byte is a true match (borrows only travel upwards). */
static inline uint64_t special_bytes(uint64_t v, uint64_t ones)
{
    uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\');
    return (((v - ones * 0x20) & ~v) | ((q - ones) & ~q) | ((b - ones) & ~b)) & (ones * 0x80);
}

/* The first byte at or after p (before end) that a JSON string cannot hold
 * as it is; end when there is none. Eight bytes at a time. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "plain_run reads words little-endian"
#endif
static inline const char *plain_run(const char *p, const char *end)
{
    const uint64_t ones = 0x0101010101010101ull;
    while (end - p >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        uint64_t hit = special_bytes(v, ones);
        if (hit) /* the lowest flagged byte is a true match (little-endian) */
            return p + (__builtin_ctzll(hit) >> 3);
        p += 8;
    }
    while (p < end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
        p++;
    return p;
}

/* 1 when s..s+n is ASCII and none of it needs an escape in a JSON
 * string. Reads only inside the text: words of eight bytes (the last one
 * overlapping the one before), two overlapping words of four, or single
 * bytes. */
static inline int all_plain(const char *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull;
    if (n >= 8) {
        uint64_t v;
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&v, s + i, 8);
            if (special_bytes(v, ones) | (v & ones * 0x80))
                return 0;
        }
        memcpy(&v, s + n - 8, 8);
        return !(special_bytes(v, ones) | (v & ones * 0x80));
    }
    if (n >= 4) {
        uint32_t a, z;
        memcpy(&a, s, 4);
        memcpy(&z, s + n - 4, 4);
        return !(special_bytes(a, 0x01010101u) | special_bytes(z, 0x01010101u) |
                 ((a | z) & 0x80808080u));
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x80 || s[i] == '"' ||
            s[i] == '\\')
            return 0;
    return 1;
}

static inline void skip_blank(dec_t *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t'))
        d->p++;
}

static int dec_fail(dec_t *d, const char *why)
{
    if (d->err == NULL)
        d->err = why;
    return -1;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

/* Reads the 4 hex digits at p (bounds checked by the caller). */
static long hex4(const char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

static int scratch_reserve(hub_vm_t *vm, size_t n)
{
    if (n <= vm->scratch_cap)
        return 0;
    size_t cap = vm->scratch_cap ? vm->scratch_cap : 256;
    while (cap < n)
        cap *= 2;
    char *b = realloc(vm->scratch, cap);
    if (b == NULL)
        return -1;
    vm->scratch = b;
    vm->scratch_cap = cap;
    return 0;
}

static int dec_string_escaped(dec_t *d, const char *s, const char *q, int push, int *plain);

/* d->p at the opening quote. Pushes the string when push; sets *plain when
 * it had no escapes (its text is then exactly between the quotes). The
 * common case, no escape, is inlined; the rest is dec_string_escaped. */
static inline int dec_string(dec_t *d, int push, int *plain)
{
    const char *s = ++d->p, *q = plain_run(s, d->end);
    if (hub_likely(q < d->end && *q == '"')) {
        d->p = q + 1;
        if (plain)
            *plain = 1;
        if (push)
            lua_pushlstring(d->L, s, (size_t)(q - s));
        return 0;
    }
    return dec_string_escaped(d, s, q, push, plain);
}

/* dec_string past the first byte (at q, after s) that is not plain: an
 * escape, a control, or the end. */
static __attribute__((noinline)) int dec_string_escaped(dec_t *d, const char *s, const char *q,
                                                       int push, int *plain)
{
    if (plain)
        *plain = 0;
    /* escapes: the decoded text is never longer than the source */
    size_t o = (size_t)(q - s);
    if (push) {
        if (scratch_reserve(d->vm, (size_t)(d->end - s)) != 0)
            return dec_fail(d, "out of memory");
        memcpy(d->vm->scratch, s, o);
    }
    char *out = push ? d->vm->scratch : NULL;
    while (q < d->end) {
        unsigned char ch = (unsigned char)*q;
        if (ch == '"') {
            d->p = q + 1;
            if (push)
                lua_pushlstring(d->L, out, o);
            return 0;
        }
        if (ch < 0x20)
            return dec_fail(d, "control character in a string");
        if (ch != '\\') {
            if (out)
                out[o] = (char)ch;
            o++;
            q++;
            continue;
        }
        if (d->end - q < 2)
            break;
        char e = q[1];
        char c1 = 0;
        switch (e) {
        case '"': c1 = '"'; break;
        case '\\': c1 = '\\'; break;
        case '/': c1 = '/'; break;
        case 'b': c1 = '\b'; break;
        case 'f': c1 = '\f'; break;
        case 'n': c1 = '\n'; break;
        case 'r': c1 = '\r'; break;
        case 't': c1 = '\t'; break;
        case 'u': break;
        default: return dec_fail(d, "bad escape in a string");
        }
        if (e != 'u') {
            if (out)
                out[o] = c1;
            o++;
            q += 2;
            continue;
        }
        if (d->end - q < 6)
            break;
        long cp = hex4(q + 2);
        if (cp < 0)
            return dec_fail(d, "bad \\u escape");
        q += 6;
        if (cp >= 0xD800 && cp <= 0xDBFF) { /* a high surrogate needs its low half */
            long lo = d->end - q >= 6 && q[0] == '\\' && q[1] == 'u' ? hex4(q + 2) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF)
                return dec_fail(d, "lone surrogate in a string");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            q += 6;
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return dec_fail(d, "lone surrogate in a string");
        }
        if (cp == 0 && d->env)
            d->env->has_nul = 1;
        /* UTF-8: at most as long as the escape it replaces */
        char u[4];
        int un;
        if (cp < 0x80) {
            u[0] = (char)cp;
            un = 1;
        } else if (cp < 0x800) {
            u[0] = (char)(0xC0 | (cp >> 6));
            u[1] = (char)(0x80 | (cp & 0x3F));
            un = 2;
        } else if (cp < 0x10000) {
            u[0] = (char)(0xE0 | (cp >> 12));
            u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
            u[2] = (char)(0x80 | (cp & 0x3F));
            un = 3;
        } else {
            u[0] = (char)(0xF0 | (cp >> 18));
            u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
            u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
            u[3] = (char)(0x80 | (cp & 0x3F));
            un = 4;
        }
        if (out)
            memcpy(out + o, u, (size_t)un);
        o += (size_t)un;
    }
    return dec_fail(d, "unterminated string");
}

/* The first byte at or after p (before end) that is not an ASCII digit;
 * end when there is none. Eight bytes at a time: a byte below '0' borrows
 * (setting its top bit), one above '9' carries into its top bit when 0x46
 * is added, one from 0x80 up has it already; the lowest flagged byte is a
 * true one (borrows only travel upwards, little-endian). */
static inline const char *digit_run(const char *p, const char *end)
{
    const uint64_t ones = 0x0101010101010101ull, highs = ones * 0x80;
    while (end - p >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        uint64_t hit = ((v - ones * '0') | (v + ones * (0x7f - '9')) | v) & highs;
        if (hit)
            return p + (__builtin_ctzll(hit) >> 3);
        p += 8;
    }
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p;
}

static int dec_number(dec_t *d, int push)
{
    const char *s = d->p, *q = s;
    if (q < d->end && *q == '-')
        q++;
    if (q >= d->end || *q < '0' || *q > '9')
        return dec_fail(d, "bad number");
    if (*q == '0')
        q++;
    else
        q = digit_run(q, d->end);
    int simple = 1;
    if (q < d->end && *q == '.') {
        simple = 0;
        const char *f = ++q;
        while (q < d->end && *q >= '0' && *q <= '9')
            q++;
        if (q == f)
            return dec_fail(d, "bad number");
    }
    if (q < d->end && (*q == 'e' || *q == 'E')) {
        simple = 0;
        q++;
        if (q < d->end && (*q == '+' || *q == '-'))
            q++;
        const char *x = q;
        while (q < d->end && *q >= '0' && *q <= '9')
            q++;
        if (q == x)
            return dec_fail(d, "bad number");
    }
    d->p = q;
    if (!push)
        return 0;
    size_t n = (size_t)(q - s);
    int neg = *s == '-';
    if (simple && n - (size_t)neg <= 19) {
        /* fits a uint64, and converting one to double rounds to nearest,
         * exactly as strtod would */
        uint64_t v = 0;
        for (const char *c = s + neg; c < q; c++)
            v = v * 10 + (uint64_t)(*c - '0');
        lua_pushnumber(d->L, neg ? -(lua_Number)v : (lua_Number)v);
        return 0;
    }
    /* strtod needs a terminated copy: the text may end right after */
    char tmp[64];
    char *buf = n < sizeof(tmp) ? tmp : malloc(n + 1);
    if (buf == NULL)
        return dec_fail(d, "out of memory");
    memcpy(buf, s, n);
    buf[n] = '\0';
    lua_pushnumber(d->L, strtod(buf, NULL));
    if (buf != tmp)
        free(buf);
    return 0;
}

static int dec_literal(dec_t *d, const char *word, size_t n)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return dec_fail(d, "invalid literal");
    d->p += n;
    return 0;
}

/* 1 when key..key+kl is one of the handler's M.raw names. */
static int is_raw(const hub_handler_t *info, const char *key, size_t kl)
{
    for (size_t i = 0; info != NULL && i < info->nraw && kl < HUB_RAW_NAME; i++)
        if (memcmp(info->raw[i], key, kl) == 0 && info->raw[i][kl] == '\0')
            return 1;
    return 0;
}

/* d->p at '{'. With record (the envelope's data object), member spans are
 * recorded in d->env, and the members the handler takes raw (env->info)
 * are checked without being decoded, then pushed as raw-JSON values. */
static int dec_object(dec_t *d, int push, int record)
{
    lua_State *L = d->L;
    d->p++;
    if (push)
        lua_createtable(L, 0, 4);
    skip_blank(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        return 0;
    }
    for (;;) {
        skip_blank(d);
        if (d->p >= d->end || *d->p != '"')
            return dec_fail(d, "expected a member name");
        const char *ks = d->p + 1;
        int plain;
        if (dec_string(d, push, &plain) != 0)
            return -1;
        size_t kl = (size_t)(d->p - 1 - ks);
        skip_blank(d);
        if (d->p >= d->end || *d->p != ':')
            return dec_fail(d, "expected ':'");
        d->p++;
        skip_blank(d);
        const char *vs = d->p;
        int raw = push && record && plain && is_raw(d->env->info, ks, kl);
        if (dec_value(d, push && !raw) != 0)
            return -1;
        if (raw)
            hub_lua_push_raw(L, vs, (size_t)(d->p - vs));
        if (record && plain && d->env->nmembers < HUB_JSON_MEMBERS) {
            hub_env_member_t *m = &d->env->members[d->env->nmembers++];
            m->key = ks;
            m->key_len = kl;
            m->val = vs;
            m->val_len = (size_t)(d->p - vs);
        } else if (record) {
            d->env->overflow = 1;
        }
        if (push)
            lua_rawset(L, -3);
        skip_blank(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            continue;
        }
        if (d->p < d->end && *d->p == '}') {
            d->p++;
            return 0;
        }
        return dec_fail(d, "expected ',' or '}'");
    }
}

static int dec_array(dec_t *d, int push)
{
    lua_State *L = d->L;
    d->p++;
    if (push)
        lua_createtable(L, 0, 0);
    skip_blank(d);
    int i = 0;
    if (d->p < d->end && *d->p == ']') {
        d->p++;
    } else {
        for (;;) {
            skip_blank(d);
            if (dec_value(d, push) != 0)
                return -1;
            if (push)
                lua_rawseti(L, -2, ++i);
            skip_blank(d);
            if (d->p < d->end && *d->p == ',') {
                d->p++;
                continue;
            }
            if (d->p < d->end && *d->p == ']') {
                d->p++;
                break;
            }
            return dec_fail(d, "expected ',' or ']'");
        }
    }
    if (push) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, d->vm->array_mt_ref);
        lua_setmetatable(L, -2);
    }
    return 0;
}

static int dec_value(dec_t *d, int push)
{
    if (d->p >= d->end)
        return dec_fail(d, "unexpected end");
    switch (*d->p) {
    case '{':
    case '[': {
        if (++d->depth > DECODE_DEPTH)
            return dec_fail(d, "nested too deeply");
        if (push && !lua_checkstack(d->L, 4))
            return dec_fail(d, "nested too deeply");
        int r = *d->p == '{' ? dec_object(d, push, 0) : dec_array(d, push);
        d->depth--;
        return r;
    }
    case '"':
        return dec_string(d, push, NULL);
    case 't':
        if (dec_literal(d, "true", 4) != 0)
            return -1;
        if (push)
            lua_pushboolean(d->L, 1);
        return 0;
    case 'f':
        if (dec_literal(d, "false", 5) != 0)
            return -1;
        if (push)
            lua_pushboolean(d->L, 0);
        return 0;
    case 'n':
        if (dec_literal(d, "null", 4) != 0)
            return -1;
        if (push)
            lua_rawgeti(d->L, LUA_REGISTRYINDEX, d->vm->null_ref);
        return 0;
    default:
        return dec_number(d, push);
    }
}

/* Only blanks may follow the value. */
static int dec_end(dec_t *d)
{
    skip_blank(d);
    return d->p == d->end ? 0 : dec_fail(d, "text after the JSON value");
}

int hub_lua_decode(hub_vm_t *vm, const char *s, size_t n, const char **err)
{
    dec_t d = { vm, vm->L, s, s + n, NULL, NULL, 0 };
    int top = lua_gettop(vm->L);
    skip_blank(&d);
    if (dec_value(&d, 1) != 0 || dec_end(&d) != 0) {
        lua_settop(vm->L, top);
        *err = d.err;
        return -1;
    }
    return 0;
}

/* True when key..key+kl spells name. */
static int key_is(const char *key, size_t kl, const char *name, size_t nl)
{
    return kl == nl && memcmp(key, name, nl) == 0;
}

/* The handler data is decoded for: the message_type seen so far, or, when
 * data comes first, the first message_type in the text (a later one that
 * names another handler gets data decoded again). */
static const hub_handler_t *data_info(hub_vm_t *vm, hub_json_env_t *env, const char *s,
                                     size_t n)
{
    const char *t = env->type;
    size_t tl = env->type_len;
    if (t == NULL && !hub_json_member(s, n, "message_type", &t, &tl))
        return NULL;
    env->info_type = t;
    return hub_vm_handler(vm, t, tl);
}

int hub_lua_decode_envelope(hub_vm_t *vm, const char *s, size_t n, hub_json_env_t *env)
{
    lua_State *L = vm->L;
    memset(env, 0, offsetof(hub_json_env_t, members));
    dec_t d = { vm, L, s, s + n, NULL, env, 1 };
    int top = lua_gettop(L);
    skip_blank(&d);
    if (d.p >= d.end || *d.p != '{') {
        /* still tell "not JSON" from "not an object" */
        env->not_object = dec_value(&d, 0) == 0 && dec_end(&d) == 0;
        env->err = env->not_object ? "message must be a JSON object" : d.err;
        return -1;
    }
    d.p++;
    skip_blank(&d);
    int have_data = 0;
    if (d.p < d.end && *d.p == '}') {
        d.p++;
    } else {
        for (;;) {
            skip_blank(&d);
            if (d.p >= d.end || *d.p != '"') {
                dec_fail(&d, "expected a member name");
                goto bad;
            }
            const char *ks = d.p + 1;
            int plain;
            if (dec_string(&d, 0, &plain) != 0)
                goto bad;
            size_t kl = (size_t)(d.p - 1 - ks);
            skip_blank(&d);
            if (d.p >= d.end || *d.p != ':') {
                dec_fail(&d, "expected ':'");
                goto bad;
            }
            d.p++;
            skip_blank(&d);
            const char *vs = d.p;
            int r;
            if (plain && key_is(ks, kl, "data", 4)) {
                if (have_data)
                    lua_settop(L, top); /* a later "data" replaces it */
                env->nmembers = 0;
                env->overflow = 0;
                env->info = data_info(vm, env, s, n);
                if (d.p < d.end && *d.p == '{') {
                    if (!lua_checkstack(L, 4)) {
                        dec_fail(&d, "out of memory");
                        goto bad;
                    }
                    d.depth++;
                    r = dec_object(&d, 1, 1);
                    d.depth--;
                } else {
                    r = dec_value(&d, 1);
                }
                have_data = 1;
                env->data = vs;
            } else if (plain && key_is(ks, kl, "message_type", 12)) {
                env->type_is_string = d.p < d.end && *d.p == '"';
                r = dec_value(&d, 0);
                env->type = vs;
            } else if (plain && key_is(ks, kl, "message_id", 10)) {
                r = dec_value(&d, 0);
                env->id = vs;
            } else {
                r = dec_value(&d, 0);
            }
            if (r != 0)
                goto bad;
            size_t vl = (size_t)(d.p - vs);
            if (vs == env->data)
                env->data_len = vl;
            else if (vs == env->type)
                env->type_len = vl;
            else if (vs == env->id)
                env->id_len = vl;
            skip_blank(&d);
            if (d.p < d.end && *d.p == ',') {
                d.p++;
                continue;
            }
            if (d.p < d.end && *d.p == '}') {
                d.p++;
                break;
            }
            dec_fail(&d, "expected ',' or '}'");
            goto bad;
        }
    }
    if (dec_end(&d) != 0)
        goto bad;
    if (!have_data)
        lua_newtable(L);
    const hub_handler_t *info = env->info;
    if (env->type != env->info_type)
        info = env->type ? hub_vm_handler(vm, env->type, env->type_len) : NULL;
    if (have_data && info != env->info && *env->data == '{') {
        /* a message_type after data named another handler than the one
         * data was decoded for: decode it again for the right one */
        lua_settop(L, top);
        env->info = info;
        env->nmembers = 0;
        env->overflow = 0;
        dec_t again = { vm, L, env->data, env->data + env->data_len, NULL, env, 1 };
        if (dec_object(&again, 1, 1) != 0) {
            d.err = again.err; /* out of memory: the text was valid */
            goto bad;
        }
    }
    env->info = info;
    return 0;
bad:
    lua_settop(L, top);
    env->err = d.err;
    return -1;
}

const hub_env_member_t *hub_json_env_member(const hub_json_env_t *env, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = env->nmembers; i-- > 0;) /* the last one wins */
        if (key_is(env->members[i].key, env->members[i].key_len, key, kl))
            return &env->members[i];
    return NULL;
}

/* The encoder writes JSON text straight from Lua values into the caller's
 * growing buffer: no intermediate tree, integers without printf. */
typedef struct {
    hub_vm_t *vm;
    char *err;
    size_t errlen;
    char *buf;
    size_t len, cap;
} enc_t;

static int grow_slow(enc_t *e, size_t need)
{
    size_t cap = e->cap ? e->cap * 2 : 256;
    while (cap < e->len + need)
        cap *= 2;
    char *nb = realloc(e->buf, cap);
    if (nb == NULL) {
        snprintf(e->err, e->errlen, "out of memory");
        return -1;
    }
    e->buf = nb;
    e->cap = cap;
    return 0;
}

static inline int grow(enc_t *e, size_t need)
{
    return e->len + need <= e->cap ? 0 : grow_slow(e, need);
}

static int put(enc_t *e, const char *s, size_t n)
{
    if (grow(e, n) != 0)
        return -1;
    memcpy(e->buf + e->len, s, n);
    e->len += n;
    return 0;
}

static int put_string_escaped(enc_t *e, const char *s, size_t n);

/* s as a JSON string. Nearly always it is ASCII and nothing needs an
 * escape: one copy, inlined; the rest is put_string_escaped. What is sent
 * is always UTF-8: a byte of s that starts no well-formed sequence (a Lua
 * string is any bytes) becomes U+FFFD, as Go's encoding/json does. */
static inline int put_string(enc_t *e, const char *s, size_t n)
{
    /* room for the text as it is and the quotes; an escape grows it */
    if (grow(e, n + 2) != 0)
        return -1;
    if (hub_likely(all_plain(s, n))) {
        char *o = e->buf + e->len;
        o[0] = '"';
        memcpy(o + 1, s, n);
        o[n + 1] = '"';
        e->len += n + 2;
        return 0;
    }
    return put_string_escaped(e, s, n);
}

static __attribute__((noinline)) int put_string_escaped(enc_t *e, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    e->buf[e->len++] = '"';
    for (const char *p = s, *end = s + n; p < end;) {
        const char *run = plain_run(p, end);
        /* no escape in p..run (a well-formed sequence never holds one): as
         * UTF-8, each bad byte three bytes; then the rest and the quote */
        size_t k = (size_t)(run - p);
        if (grow(e, 3 * k + (size_t)(end - run) + 1) != 0)
            return -1;
        e->len += hub_utf8_clean(e->buf + e->len, 3 * k, p, k);
        if (run == end)
            break;
        /* one byte becomes up to six; the rest and the closing quote follow */
        if (grow(e, 6 + (size_t)(end - run)) != 0)
            return -1;
        unsigned char ch = (unsigned char)*run;
        char *o = e->buf + e->len;
        *o++ = '\\';
        switch (ch) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
        e->len = (size_t)(o - e->buf);
        p = run + 1;
    }
    e->buf[e->len++] = '"';
    return 0;
}

/* Integers (the common case: ids, counts, timestamps) print exactly and
 * cheaply; other numbers with the shortest of %.15g / %.17g that reads
 * back to the same double. */
static int put_number(enc_t *e, double d)
{
    if (!isfinite(d)) {
        snprintf(e->err, e->errlen, "cannot encode NaN or infinity");
        return -1;
    }
    char tmp[32];
    size_t n;
    if (d == (double)(int64_t)d && d > -(double)HUB_EXACT_MAX && d < (double)HUB_EXACT_MAX) {
        int64_t v = (int64_t)d;
        if (grow(e, 21) != 0) /* a sign and up to 20 digits, in place */
            return -1;
        if (v < 0)
            e->buf[e->len++] = '-';
        e->len += hub_msg_u64(e->buf + e->len, v < 0 ? (uint64_t)(-v) : (uint64_t)v);
        return 0;
    }
    n = (size_t)snprintf(tmp, sizeof(tmp), "%.15g", d);
    if (strtod(tmp, NULL) != d)
        n = (size_t)snprintf(tmp, sizeof(tmp), "%.17g", d);
    return put(e, tmp, n);
}

/* Returns n when the table at idx is a sequence 1..n with no other keys,
 * else -1. A table whose length is 0 is never a non-empty sequence, so it
 * is not walked: the caller encodes it as an object ({} when empty), which
 * is what a walk would have decided too. */
static int seq_len(lua_State *L, int idx)
{
    int n = (int)lua_objlen(L, idx), count = 0;
    if (n == 0)
        return -1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TNUMBER) {
            lua_pop(L, 1);
            return -1;
        }
        count++;
    }
    return count == n ? n : -1;
}

static inline int put_char(enc_t *e, char c)
{
    if (grow(e, 1) != 0)
        return -1;
    e->buf[e->len++] = c;
    return 0;
}

/* Encodes the value at idx (an absolute index). Leaves the stack as it
 * found it, also on failure. */
static int enc(enc_t *e, int idx, int depth)
{
    lua_State *L = e->vm->L;
    if (depth > MAX_DEPTH) {
        snprintf(e->err, e->errlen, "value nested too deeply (or a cycle)");
        return -1;
    }
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return put(e, "null", 4);
    case LUA_TBOOLEAN:
        return lua_toboolean(L, idx) ? put(e, "true", 4) : put(e, "false", 5);
    case LUA_TNUMBER:
        return put_number(e, lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return put_string(e, s, n);
    }
    case LUA_TTABLE:
        break;
    case LUA_TUSERDATA:
        if (lua_getmetatable(L, idx)) {
            const void *mt = lua_topointer(L, -1);
            lua_pop(L, 1);
            if (mt == e->vm->raw_mt_ptr) /* gohub.raw, gohub.json.raw, M.raw */
                return put(e, lua_touserdata(L, idx), lua_objlen(L, idx));
        }
        snprintf(e->err, e->errlen, "cannot encode a userdata");
        return -1;
    default:
        snprintf(e->err, e->errlen, "cannot encode a %s", luaL_typename(L, idx));
        return -1;
    }
    luaL_checkstack(L, 6, "JSON encode");
    /* the marker tables live as long as the state (registry), and LuaJIT
     * never moves objects: their addresses identify them */
    if (lua_topointer(L, idx) == e->vm->null_ptr)
        return put(e, "null", 4);
    int is_array = 0;
    if (lua_getmetatable(L, idx)) {
        is_array = lua_topointer(L, -1) == e->vm->array_mt_ptr;
        lua_pop(L, 1);
    }
    int top = lua_gettop(L); /* an element (or key, value) goes above it */
    int n = 0, more = 0;
    if (is_array) {
        n = (int)lua_objlen(L, idx);
    } else {
        /* the walk starts here: a table whose first key is not a number is
         * no sequence, so it is an object and needs no length; a first key
         * that is a number sends it through seq_len */
        lua_pushnil(L);
        more = lua_next(L, idx);
        if (more && lua_type(L, top + 1) == LUA_TNUMBER) {
            lua_settop(L, top);
            more = 0;
            n = seq_len(L, idx);
            if (n <= 0) { /* an object after all: walk it from the start */
                lua_pushnil(L);
                more = lua_next(L, idx);
            }
        }
    }
    if (n > 0 || is_array) {
        if (put_char(e, '[') != 0)
            return -1;
        for (int i = 1; i <= n; i++) {
            if (i > 1 && put_char(e, ',') != 0)
                return -1;
            lua_rawgeti(L, idx, i);
            int rc = enc(e, top + 1, depth + 1);
            lua_settop(L, top);
            if (rc != 0)
                return -1;
        }
        return put_char(e, ']');
    }
    if (put_char(e, '{') != 0) {
        lua_settop(L, top);
        return -1;
    }
    int first = 1;
    for (; more; more = lua_next(L, idx)) {
        /* stack: key (top + 1) value (top + 2) */
        int rc = first ? 0 : put_char(e, ',');
        first = 0;
        int kt = lua_type(L, top + 1);
        if (rc == 0 && kt == LUA_TSTRING) {
            size_t kl;
            const char *k = lua_tolstring(L, top + 1, &kl);
            rc = put_string(e, k, kl);
        } else if (rc == 0 && kt == LUA_TNUMBER) {
            char numkey[32];
            int kl = snprintf(numkey, sizeof(numkey), "%.14g", lua_tonumber(L, top + 1));
            rc = put_string(e, numkey, (size_t)kl);
        } else if (rc == 0) {
            snprintf(e->err, e->errlen, "cannot encode a table key of type %s",
                     luaL_typename(L, top + 1));
            rc = -1;
        }
        if (rc == 0)
            rc = put_char(e, ':');
        if (rc == 0)
            rc = enc(e, top + 2, depth + 1);
        if (rc != 0) {
            lua_settop(L, top);
            return -1;
        }
        lua_settop(L, top + 1); /* the key, for lua_next */
    }
    return put_char(e, '}');
}

int hub_lua_encode(hub_vm_t *vm, int idx, hub_lua_buf_t *out, char *err, size_t errlen)
{
    enc_t e = { vm, err, errlen, out->p, 0, out->cap };
    err[0] = '\0';
    if (idx < 0)
        idx = lua_gettop(vm->L) + idx + 1;
    int rc = enc(&e, idx, 0) == 0 && grow(&e, 1) == 0 ? 0 : -1;
    out->p = e.buf; /* grown or not, the caller's buffer */
    out->cap = e.cap;
    out->len = e.len;
    if (rc != 0) {
        if (!err[0])
            snprintf(err, errlen, "out of memory");
        return -1;
    }
    e.buf[e.len] = '\0';
    return 0;
}
