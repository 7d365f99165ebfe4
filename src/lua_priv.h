/* lua_priv.h: internals shared by the Lua files (lua_vm.c, lua_api.c,
 * lua_json.c) and nobody else: the VM structure and Lua-stack helpers. The
 * rest of gohub sees only lua_vm.h. Worker thread (owner of the VM). */
#ifndef HUB_LUA_PRIV_H
#define HUB_LUA_PRIV_H

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "common.h"
#include "lua_vm.h"

struct hub_vm_s {
    lua_State *L;
    hub_worker_t *w;          /* NULL for the --lua-api dump state */
    size_t mem, mem_limit;    /* bytes in use / cap (capped allocator) */
    uint32_t gen;             /* generation: conns' lua_ref are valid only for it */
    int traceback_ref;        /* debug.traceback, kept before debug is removed */
    int handlers_ref;         /* table: message type → handle function */
    int can_ref;              /* permissions.can */
    int hooks_ref;            /* hooks table, or LUA_NOREF */
    int null_ref;             /* gohub.json.null */
    int array_mt_ref;         /* metatable marking JSON arrays */
    int raw_mt_ref;           /* metatable of raw-JSON values */
    int config_ref;           /* gohub.config */
    char *lua_path;           /* copy of lua.path */
    /* the message being handled (gohub.raw, logs) */
    hub_conn_t *cur;
    const char *req;          /* raw message text */
    size_t req_len;
    const char *cur_type;
};

/* The VM owning L (the allocator's user data). */
hub_vm_t *hub_vm_of(lua_State *L);

/* Registers the gohub module as package.preload.gohub. */
void hub_lua_open_gohub(hub_vm_t *vm);

/* Pushes c's client table (creating it on first use in this VM). */
void hub_lua_push_client(hub_vm_t *vm, hub_conn_t *c);

/* Pushes the Lua value of a cJSON item (arrays get the array marker, null
 * is gohub.json.null). Stack: +1. */
void hub_lua_push_json(hub_vm_t *vm, const cJSON *item);

/* Encodes the value at idx as JSON text: *out is malloc'd (caller frees).
 * Returns 0, or -1 with a reason in err (cycles/depth, bad keys, NaN). */
int hub_lua_encode(hub_vm_t *vm, int idx, char **out, size_t *len, char *err, size_t errlen);

/* Calls the function below nargs arguments under the time limit, with a
 * traceback handler. Returns the lua_pcall status; on error the message is
 * on the stack (one value). *timed_out tells a time-limit stop. */
int hub_vm_pcall(hub_vm_t *vm, int nargs, int nres, int *timed_out);

/* Runs hooks.<name>(client, extra...) if present; errors are logged. */
void hub_vm_hook(hub_vm_t *vm, hub_conn_t *c, const char *name, const char *room, int code);

#endif
