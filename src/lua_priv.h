/* lua_priv.h: internals shared by the Lua files (lua_vm.c, lua_api.c,
 * lua_json.c) and nobody else: the VM structure and Lua-stack helpers. The
 * rest of gohub sees only lua_vm.h. Worker thread (owner of the VM). */
#ifndef HUB_LUA_PRIV_H
#define HUB_LUA_PRIV_H

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "common.h"
#include "hmap.h"
#include "lua_vm.h"

#define HUB_VM_SMALL 256          /* largest block size vm_alloc caches */
#define HUB_VM_CACHE (256 * 1024) /* bytes of freed blocks it keeps at most */
#define HUB_VM_CLASSES ((HUB_VM_SMALL + 7) / 16 + 1)
#define HUB_VM_RESERVE 8192       /* see vm_alloc_slow (lua_vm.c) */

/* A growable output buffer (malloc'd; the owner frees p). */
typedef struct {
    char *p;
    size_t len, cap;
} hub_lua_buf_t;

/* A message handler: lua.path/handlers/<type>.lua, a module M. */
#define HUB_RAW_MAX 8             /* names in a handler's M.raw */
#define HUB_RAW_NAME 64           /* bytes per name, NUL included */
typedef struct {
    int fn_ref;                   /* M.handle (registry) */
    int mtype;                    /* its metrics label (HUB_MT_*) */
    int wants_msg;                /* M.handle takes a third parameter (msg) */
    size_t nraw;                  /* M.raw: data members passed as raw JSON */
    char raw[HUB_RAW_MAX][HUB_RAW_NAME];
} hub_handler_t;

struct hub_vm_s {
    lua_State *L;             /* the thread running now: main, or a handler's coroutine */
    lua_State *main;          /* the state itself (closed with the VM) */
    lua_State *co;            /* the coroutine the next message runs in, or NULL */
    int co_ref;               /* its registry anchor */
    lua_State *running;       /* the handler coroutine inside lua_resume, or NULL */
    int yieldable;            /* running may wait (not inside a nested pcall) */
    hub_worker_t *w;          /* NULL for the --lua-api dump state */
    size_t mem, mem_limit;    /* bytes in use / cap (capped allocator) */
    uint32_t gen;             /* generation: conns' lua_ref are valid only for it */
    int traceback_ref;        /* debug.traceback, kept before debug is removed */
    hub_strmap_t handlers;    /* message type → hub_handler_t (malloc'd) */
    int getinfo_ref;          /* debug.getinfo (read_handler reads nparams) */
    int policy_ref;           /* table: [1] = permissions.can, once loaded */
    int hooks_ref;            /* hooks table, or LUA_NOREF */
    int null_ref;             /* gohub.json.null */
    int array_mt_ref;         /* metatable marking JSON arrays */
    int raw_mt_ref;           /* metatable of raw-JSON values */
    int box_mt_ref;           /* metatable of boxes (lua_api.c: C memory the collector frees) */
    const void *null_ptr, *array_mt_ptr, *raw_mt_ptr; /* the same, by address */
    int config_ref;           /* gohub.config */
    char *lua_path;           /* copy of lua.path */
    int dispatch_ref;         /* the function a message's coroutine runs (boot) */
    char *scratch;            /* decoder buffer for escaped strings (grows) */
    hub_lua_buf_t out;        /* encoder buffer for replies and publishes */
    size_t scratch_cap;
    /* small blocks the state freed, kept for its next allocations (vm_alloc):
     * per size class up to HUB_VM_SMALL bytes, HUB_VM_CACHE bytes in all */
    void *small[HUB_VM_CLASSES];
    size_t small_bytes;
    /* blocks for lua_newstate when malloc fails (vm_alloc, lua_vm.c) */
    char *reserve;            /* HUB_VM_RESERVE bytes; NULL once unneeded */
    size_t reserve_used;
    int creating;             /* inside lua_newstate */
    /* the message being handled (gohub.raw, logs) */
    hub_conn_t *cur;
    const struct hub_json_env_s *env; /* its member spans */
    const char *cur_type;
    struct dispatch_s *dispatching; /* the message run_message is to prepare */
};

/* What the envelope decoder learned about a message besides `data` (all
 * spans point into the message text). */
#define HUB_JSON_MEMBERS 16
typedef struct {
    const char *key, *val;    /* key without quotes; value as sent */
    size_t key_len, val_len;
} hub_env_member_t;

typedef struct hub_json_env_s {
    const char *err;          /* why the text was refused */
    int not_object;           /* valid JSON, but not an object */
    const char *id, *type, *data; /* message_id, message_type, data (NULL: absent) */
    size_t id_len, type_len, data_len;
    int type_is_string;
    int has_nul;              /* a string contains \u0000 */
    const hub_handler_t *info; /* message_type's handler; NULL: none */
    const char *info_type;    /* the message_type span info was looked up for */
    int overflow;             /* data had members not recorded below */
    size_t nmembers;          /* data's members, when data is an object */
    hub_env_member_t members[HUB_JSON_MEMBERS]; /* must stay last */
} hub_json_env_t;

/* The VM owning L (the allocator's user data). */
hub_vm_t *hub_vm_of(lua_State *L);

/* Registers the gohub module as package.preload.gohub. */
void hub_lua_open_gohub(hub_vm_t *vm);

/* Pushes c's client table (creating it on first use in this VM). */
void hub_lua_push_client(hub_vm_t *vm, hub_conn_t *c);

/* Decodes the JSON text s..s+n and pushes its Lua value (arrays get the
 * array marker, null is gohub.json.null). Returns 0 (stack +1) or -1 with
 * a reason in *err (stack unchanged). May raise a Lua memory error. */
int hub_lua_decode(hub_vm_t *vm, const char *s, size_t n, const char **err);

/* Decodes a message envelope: pushes the value of its `data` member (an
 * empty table when absent) and records the spans of message_id,
 * message_type and data's members in env, and env->info for message_type.
 * Members the handler lists in M.raw are checked but not decoded: they
 * arrive as raw-JSON values. Returns 0 (stack +1) or -1 with env->err
 * (stack unchanged). May raise a Lua memory error. */
int hub_lua_decode_envelope(hub_vm_t *vm, const char *s, size_t n, hub_json_env_t *env);

/* data's member key as recorded by the envelope decoder (the last one of
 * that name), or NULL (absent, or not recorded: see env->overflow). */
const hub_env_member_t *hub_json_env_member(const hub_json_env_t *env, const char *key);

/* Encodes the value at idx as JSON text into out (from its start; grown
 * as needed, NUL-terminated): out->p..out->p+out->len. Returns 0, or -1
 * with a reason in err (cycles/depth, bad keys, NaN). Nothing in it runs
 * Lua code, so a VM-wide buffer is safe until the caller's next Lua call. */
int hub_lua_encode(hub_vm_t *vm, int idx, hub_lua_buf_t *out, char *err, size_t errlen);

/* The VM's encode buffer, for results copied out before any Lua runs
 * again; hub_vm_buf_done trims it back when a big value grew it. */
#define HUB_VM_BUF_KEEP (64 * 1024)
static inline void hub_vm_buf_done(hub_lua_buf_t *b)
{
    if (b->cap > HUB_VM_BUF_KEEP) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
    b->len = 0;
}

/* The handler named by the message_type span t..t+n (quotes included, as
 * sent), or NULL (no such handler, or not a plain name). */
const hub_handler_t *hub_vm_handler(hub_vm_t *vm, const char *t, size_t n);

/* Pushes a raw-JSON value holding the text s..s+n: a userdata with the
 * raw metatable (emitted verbatim by the encoder; tostring gives the text). */
void hub_lua_push_raw(lua_State *L, const char *s, size_t n);

/* Calls the function below nargs arguments under the time limit, with a
 * traceback handler. Returns the lua_pcall status; on error the message is
 * on the stack (one value). *timed_out tells a time-limit stop. */
int hub_vm_pcall(hub_vm_t *vm, int nargs, int nres, int *timed_out);

/* What gohub.rooms.join returns for the registry's answer rc to joining
 * conn_id to room: on success member_joined goes out and hooks.on_join
 * runs. Pushes the results on L (which may be a parked coroutine; hooks
 * run on vm->L) and returns how many. */
int hub_lua_join_result(hub_vm_t *vm, lua_State *L, uint64_t conn_id, const char *room, int rc);

/* Called by gohub.rooms.join for a join that needs a seat from the room's
 * owner (HUB_ESEAT): parks the running handler until the answer (lua_vm.c;
 * the join happens then) and yields; where the handler cannot wait (a
 * hook, a nested call, a coroutine of its own) returns nil, "unavailable". */
int hub_vm_wait_seat(hub_vm_t *vm, lua_State *L, uint64_t conn_id, const char *room,
                     uint32_t max);

/* Runs hooks.<name>(client, extra...) if present; errors are logged. */
void hub_vm_hook(hub_vm_t *vm, hub_conn_t *c, const char *name, const char *room, int code);

#endif
