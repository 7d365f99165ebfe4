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

typedef struct {
    hub_vm_t *vm;
    char *err;
    size_t errlen;
} enc_t;

/* 1 when the table at idx has metatable ref. */
static int has_mt(lua_State *L, int idx, int ref)
{
    if (!lua_getmetatable(L, idx))
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    int eq = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return eq;
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

static cJSON *enc(enc_t *e, int idx, int depth)
{
    lua_State *L = e->vm->L;
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    if (depth > MAX_DEPTH) {
        snprintf(e->err, e->errlen, "value nested too deeply (or a cycle)");
        return NULL;
    }
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return cJSON_CreateNull();
    case LUA_TBOOLEAN:
        return cJSON_CreateBool(lua_toboolean(L, idx));
    case LUA_TNUMBER: {
        double d = lua_tonumber(L, idx);
        if (!isfinite(d)) {
            snprintf(e->err, e->errlen, "cannot encode NaN or infinity");
            return NULL;
        }
        return cJSON_CreateNumber(d);
    }
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        if (memchr(s, '\0', n) != NULL) {
            snprintf(e->err, e->errlen, "cannot encode a string containing NUL");
            return NULL;
        }
        return cJSON_CreateString(s);
    }
    case LUA_TTABLE:
        break;
    default:
        snprintf(e->err, e->errlen, "cannot encode a %s", luaL_typename(L, idx));
        return NULL;
    }
    luaL_checkstack(L, 6, "JSON encode");
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->vm->null_ref);
    int is_null = lua_rawequal(L, -1, idx);
    lua_pop(L, 1);
    if (is_null)
        return cJSON_CreateNull();
    if (has_mt(L, idx, e->vm->raw_mt_ref)) {
        lua_rawgeti(L, idx, 1);
        const char *raw = lua_tostring(L, -1);
        cJSON *r = cJSON_CreateRaw(raw ? raw : "null");
        lua_pop(L, 1);
        return r;
    }
    int n = has_mt(L, idx, e->vm->array_mt_ref) ? (int)lua_objlen(L, idx) : seq_len(L, idx);
    if (n > 0 || (n == 0 && has_mt(L, idx, e->vm->array_mt_ref))) {
        cJSON *arr = cJSON_CreateArray();
        for (int i = 1; arr && i <= n; i++) {
            lua_rawgeti(L, idx, i);
            cJSON *v = enc(e, -1, depth + 1);
            lua_pop(L, 1);
            if (v == NULL) {
                cJSON_Delete(arr);
                return NULL;
            }
            cJSON_AddItemToArray(arr, v);
        }
        return arr;
    }
    cJSON *obj = cJSON_CreateObject();
    lua_pushnil(L);
    while (obj && lua_next(L, idx)) {
        /* stack: key value */
        char numkey[32];
        const char *k;
        if (lua_type(L, -2) == LUA_TSTRING) {
            k = lua_tostring(L, -2);
        } else if (lua_type(L, -2) == LUA_TNUMBER) {
            snprintf(numkey, sizeof(numkey), "%.14g", lua_tonumber(L, -2));
            k = numkey;
        } else {
            snprintf(e->err, e->errlen, "cannot encode a table key of type %s",
                     luaL_typename(L, -2));
            lua_pop(L, 2);
            cJSON_Delete(obj);
            return NULL;
        }
        cJSON *v = enc(e, -1, depth + 1);
        lua_pop(L, 1);
        if (v == NULL) {
            lua_pop(L, 1);
            cJSON_Delete(obj);
            return NULL;
        }
        cJSON_AddItemToObject(obj, k, v);
    }
    return obj;
}

int hub_lua_encode(hub_vm_t *vm, int idx, char **out, size_t *len, char *err, size_t errlen)
{
    enc_t e = { vm, err, errlen };
    err[0] = '\0';
    cJSON *j = enc(&e, idx, 0);
    if (j == NULL) {
        if (!err[0])
            snprintf(err, errlen, "out of memory");
        return -1;
    }
    *out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (*out == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *len = strlen(*out);
    return 0;
}
