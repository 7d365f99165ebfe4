/* lua_json.c: JSON ↔ Lua for handlers, on cJSON. Arrays decode to tables
 * carrying an array marker so they re-encode as arrays (also when empty);
 * JSON null is the gohub.json.null sentinel; a raw-JSON value (gohub.raw,
 * gohub.json.raw) is emitted verbatim, which is how `content` passes through
 * byte for byte. Worker thread (owner of the VM). */
#include <math.h>
#include <string.h>

#include "lua_priv.h"

#define MAX_DEPTH 128

void hub_lua_push_json(hub_vm_t *vm, const cJSON *item)
{
    lua_State *L = vm->L;
    luaL_checkstack(L, 4, "JSON too deep");
    if (cJSON_IsObject(item)) {
        lua_createtable(L, 0, cJSON_GetArraySize(item));
        for (const cJSON *e = item->child; e; e = e->next) {
            hub_lua_push_json(vm, e);
            lua_setfield(L, -2, e->string);
        }
    } else if (cJSON_IsArray(item)) {
        int n = cJSON_GetArraySize(item), i = 1;
        lua_createtable(L, n, 0);
        for (const cJSON *e = item->child; e; e = e->next) {
            hub_lua_push_json(vm, e);
            lua_rawseti(L, -2, i++);
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->array_mt_ref);
        lua_setmetatable(L, -2);
    } else if (cJSON_IsString(item)) {
        lua_pushstring(L, item->valuestring);
    } else if (cJSON_IsNumber(item)) {
        lua_pushnumber(L, item->valuedouble);
    } else if (cJSON_IsBool(item)) {
        lua_pushboolean(L, cJSON_IsTrue(item));
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->null_ref);
    }
}

/* The encoder writes JSON text straight from Lua values into a growing
 * buffer: no intermediate tree, integers without printf. */
typedef struct {
    hub_vm_t *vm;
    char *err;
    size_t errlen;
    char *buf;
    size_t len, cap;
} enc_t;

static int grow(enc_t *e, size_t need)
{
    if (e->len + need <= e->cap)
        return 0;
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

static int put(enc_t *e, const char *s, size_t n)
{
    if (grow(e, n) != 0)
        return -1;
    memcpy(e->buf + e->len, s, n);
    e->len += n;
    return 0;
}

static int put_string(enc_t *e, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (grow(e, n + 2) != 0)
        return -1;
    e->buf[e->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        /* copy the run of bytes that need no escape in one go */
        size_t j = i;
        while (j < n && (unsigned char)s[j] >= 0x20 && s[j] != '"' && s[j] != '\\')
            j++;
        if (j > i) {
            if (grow(e, j - i + 1) != 0)
                return -1;
            memcpy(e->buf + e->len, s + i, j - i);
            e->len += j - i;
            i = j;
            if (i == n)
                break;
        }
        unsigned char ch = (unsigned char)s[i];
        if (grow(e, 7) != 0)
            return -1;
        e->buf[e->len++] = '\\';
        switch (ch) {
        case '"': e->buf[e->len++] = '"'; break;
        case '\\': e->buf[e->len++] = '\\'; break;
        case '\n': e->buf[e->len++] = 'n'; break;
        case '\r': e->buf[e->len++] = 'r'; break;
        case '\t': e->buf[e->len++] = 't'; break;
        default:
            e->buf[e->len++] = 'u';
            e->buf[e->len++] = '0';
            e->buf[e->len++] = '0';
            e->buf[e->len++] = hex[ch >> 4];
            e->buf[e->len++] = hex[ch & 15];
        }
    }
    if (grow(e, 1) != 0)
        return -1;
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
    if (d == (double)(int64_t)d && d > -9007199254740992.0 && d < 9007199254740992.0) {
        int64_t v = (int64_t)d;
        uint64_t u = v < 0 ? (uint64_t)(-v) : (uint64_t)v;
        char *p = tmp + sizeof(tmp);
        do {
            *--p = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (v < 0)
            *--p = '-';
        return put(e, p, (size_t)(tmp + sizeof(tmp) - p));
    }
    n = (size_t)snprintf(tmp, sizeof(tmp), "%.15g", d);
    if (strtod(tmp, NULL) != d)
        n = (size_t)snprintf(tmp, sizeof(tmp), "%.17g", d);
    return put(e, tmp, n);
}

/* Returns n when the table at idx is a sequence 1..n with no other keys,
 * else -1. */
static int seq_len(lua_State *L, int idx)
{
    int n = (int)lua_objlen(L, idx), count = 0;
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

static int enc(enc_t *e, int idx, int depth)
{
    lua_State *L = e->vm->L;
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
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
    default:
        snprintf(e->err, e->errlen, "cannot encode a %s", luaL_typename(L, idx));
        return -1;
    }
    luaL_checkstack(L, 6, "JSON encode");
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->vm->null_ref);
    int is_null = lua_rawequal(L, -1, idx);
    lua_pop(L, 1);
    if (is_null)
        return put(e, "null", 4);
    int is_array = 0;
    if (lua_getmetatable(L, idx)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, e->vm->raw_mt_ref);
        if (lua_rawequal(L, -1, -2)) {
            lua_pop(L, 2);
            lua_rawgeti(L, idx, 1);
            size_t n;
            const char *raw = lua_tolstring(L, -1, &n);
            int rc = raw ? put(e, raw, n) : put(e, "null", 4);
            lua_pop(L, 1);
            return rc;
        }
        lua_pop(L, 1);
        lua_rawgeti(L, LUA_REGISTRYINDEX, e->vm->array_mt_ref);
        is_array = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    int n = is_array ? (int)lua_objlen(L, idx) : seq_len(L, idx);
    if (n > 0 || is_array) {
        if (put(e, "[", 1) != 0)
            return -1;
        for (int i = 1; i <= n; i++) {
            if (i > 1 && put(e, ",", 1) != 0)
                return -1;
            lua_rawgeti(L, idx, i);
            int rc = enc(e, -1, depth + 1);
            lua_pop(L, 1);
            if (rc != 0)
                return -1;
        }
        return put(e, "]", 1);
    }
    if (put(e, "{", 1) != 0)
        return -1;
    int first = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        /* stack: key value */
        int rc = first ? 0 : put(e, ",", 1);
        first = 0;
        if (rc == 0 && lua_type(L, -2) == LUA_TSTRING) {
            size_t kl;
            const char *k = lua_tolstring(L, -2, &kl);
            rc = put_string(e, k, kl);
        } else if (rc == 0 && lua_type(L, -2) == LUA_TNUMBER) {
            char numkey[32];
            int kl = snprintf(numkey, sizeof(numkey), "%.14g", lua_tonumber(L, -2));
            rc = put_string(e, numkey, (size_t)kl);
        } else if (rc == 0) {
            snprintf(e->err, e->errlen, "cannot encode a table key of type %s",
                     luaL_typename(L, -2));
            rc = -1;
        }
        if (rc == 0)
            rc = put(e, ":", 1);
        if (rc == 0)
            rc = enc(e, -1, depth + 1);
        lua_pop(L, 1);
        if (rc != 0) {
            lua_pop(L, 1);
            return -1;
        }
    }
    return put(e, "}", 1);
}

int hub_lua_encode(hub_vm_t *vm, int idx, char **out, size_t *len, char *err, size_t errlen)
{
    enc_t e = { vm, err, errlen, NULL, 0, 0 };
    err[0] = '\0';
    if (idx < 0)
        idx = lua_gettop(vm->L) + idx + 1;
    if (enc(&e, idx, 0) != 0 || grow(&e, 1) != 0) {
        free(e.buf);
        if (!err[0])
            snprintf(err, errlen, "out of memory");
        return -1;
    }
    e.buf[e.len] = '\0';
    *out = e.buf;
    *len = e.len;
    return 0;
}
