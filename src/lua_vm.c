/* lua_vm.c: the per-worker LuaJIT state: capped allocator, sandbox, module
 * loader (text only, under lua.path), handler loading and shape checks, the
 * protected call with its time limit, the /ws dispatch with the protocol's
 * reply rule (each message in a coroutine), and handlers that wait for a
 * seat (parked with what their connection sends meanwhile). Worker thread,
 * except hub_vm_watchdog (main) and hub_vm_new (any thread; the VM is then
 * owned by one worker). */
#include "lua_vm.h"

#include <dirent.h>
#include <errno.h>
#include <luajit.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "fanout.h"
#include "frame.h"
#include "jsonscan.h"
#include "log.h"
#include "lua_priv.h"
#include "metrics.h"
#include "msg.h"
#include "registry.h"
#include "seats.h"
#include "server.h"
#include "worker.h"

#define MAX_MODULE_BYTES (1024 * 1024)

hub_vm_t *hub_vm_of(lua_State *L)
{
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

/* The capped allocator: runaway memory becomes LUA_ERRMEM inside pcall.
 *
 * Most of a message's allocations are small (its tables, strings, the
 * reply) and the collector frees them in bursts, past glibc's per-size
 * thread cache: blocks of up to HUB_VM_SMALL bytes are therefore rounded up
 * to a size class and, when freed, kept on that class's list for the
 * state's next allocations (HUB_VM_CACHE bytes at most; the state has one
 * thread, so no locks). Lua passes each block's size on free and realloc,
 * which names its class. (The ASan build keeps the cache too: every block
 * is malloc'd at its class's size, so a block handed to the wrong class
 * would overflow where the sanitizer sees it.) */
/* Class c holds blocks of 16c + 8 bytes: what a glibc chunk of 16(c + 1)
 * bytes gives, so the rounding costs no memory that malloc would not
 * have taken anyway. */
static size_t small_class(size_t size)
{
    return (size + 7) >> 4;
}

static size_t class_size(size_t c)
{
    return (c << 4) + 8;
}

/* A kept block of class c, or NULL when the class has none. */
static inline void *cache_take(hub_vm_t *vm, size_t c)
{
    void **head = (void **)vm->small[c];
    if (head != NULL) {
        vm->small[c] = *head;
        vm->small_bytes -= class_size(c);
    }
    return head;
}

/* Keeps p, a block of class c, for a later allocation; 0 when the cache
 * is full (the caller frees it). */
static inline int cache_put(hub_vm_t *vm, void *p, size_t c)
{
    size_t cs = class_size(c);
    if (vm->small_bytes + cs > HUB_VM_CACHE)
        return 0;
    *(void **)p = vm->small[c];
    vm->small[c] = p;
    vm->small_bytes += cs;
    return 1;
}

/* LuaJIT 2.1 crashes when an allocation fails inside lua_newstate before
 * its string table exists (LuaJIT issue #1248: freeing the partial state
 * sweeps the table that is not there). So while a state is created, an
 * allocation that malloc refuses is cut from vm->reserve, taken just
 * before; the first ones, which need ~3 KB, cannot fail then. Blocks from
 * the reserve live until the VM is freed: they may be cached and reused,
 * but never reach free() or realloc(). */
static int in_reserve(const hub_vm_t *vm, const void *p)
{
    return vm->reserve != NULL && (const char *)p >= vm->reserve &&
           (const char *)p < vm->reserve + HUB_VM_RESERVE;
}

static void *reserve_take(hub_vm_t *vm, size_t size)
{
    /* a small block may be cached, then reused for any size of its class */
    size_t n = size <= HUB_VM_SMALL ? class_size(small_class(size)) : size;
    n = (n + 15) & ~(size_t)15; /* malloc's alignment */
    if (vm->reserve == NULL || n > HUB_VM_RESERVE - vm->reserve_used)
        return NULL;
    void *p = vm->reserve + vm->reserve_used;
    vm->reserve_used += n;
    return p;
}

static void sys_free(hub_vm_t *vm, void *p)
{
    if (!in_reserve(vm, p))
        free(p);
}

static void *block_new(hub_vm_t *vm, size_t size)
{
    if (size <= HUB_VM_SMALL) {
        size_t c = small_class(size);
        void *p = cache_take(vm, c);
        return p != NULL ? p : malloc(class_size(c));
    }
    return malloc(size);
}

static void block_free(hub_vm_t *vm, void *p, size_t size)
{
    if (size > HUB_VM_SMALL || !cache_put(vm, p, small_class(size)))
        sys_free(vm, p);
}

static void small_free_all(hub_vm_t *vm)
{
    for (size_t c = 0; c < HUB_VM_CLASSES; c++) {
        while (vm->small[c] != NULL) {
            void *p = vm->small[c];
            vm->small[c] = *(void **)p;
            sys_free(vm, p);
        }
    }
    vm->small_bytes = 0;
}

/* Everything vm_alloc's two fast paths do not handle (mallocs, frees past
 * the cache, reallocs, the cap). Kept out of line so that the fast paths
 * make no call. */
static __attribute__((noinline)) void *vm_alloc_slow(hub_vm_t *vm, void *ptr, size_t osize,
                                                     size_t nsize)
{
    if (nsize == 0) {
        if (ptr != NULL)
            block_free(vm, ptr, osize);
        vm->mem -= osize;
        return NULL;
    }
    if (nsize > osize && vm->mem + (nsize - osize) > vm->mem_limit)
        return NULL;
    void *p;
    if (ptr == NULL) {
        p = block_new(vm, nsize); /* most calls are fresh allocations */
        if (p == NULL && vm->creating)
            p = reserve_take(vm, nsize);
    } else if (osize > HUB_VM_SMALL && nsize > HUB_VM_SMALL && !in_reserve(vm, ptr)) {
        p = realloc(ptr, nsize);
    } else if (osize <= HUB_VM_SMALL && nsize <= HUB_VM_SMALL &&
               small_class(osize) == small_class(nsize)) {
        p = ptr; /* the block is big enough already */
    } else if ((p = block_new(vm, nsize)) != NULL) {
        memcpy(p, ptr, osize < nsize ? osize : nsize);
        block_free(vm, ptr, osize);
    }
    if (p != NULL)
        vm->mem = vm->mem - osize + nsize;
    return p;
}

static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    hub_vm_t *vm = ud;
    if (ptr == NULL)
        osize = 0;
    /* the usual calls (the collector freeing a small block, a fresh small
     * allocation while its class has a kept block), inlined */
    if (nsize == 0 && ptr != NULL && osize <= HUB_VM_SMALL) {
        if (cache_put(vm, ptr, small_class(osize))) {
            vm->mem -= osize;
            return NULL;
        }
    } else if (ptr == NULL && nsize != 0 && nsize <= HUB_VM_SMALL &&
               vm->mem + nsize <= vm->mem_limit) {
        void *p = cache_take(vm, small_class(nsize));
        if (p != NULL) {
            vm->mem += nsize;
            return p;
        }
    }
    return vm_alloc_slow(vm, ptr, osize, nsize);
}

static int on_panic(lua_State *L)
{
    const char *m = lua_tostring(L, -1);
    hub_log_error("lua panic (unprotected error)", "reason=%s", m ? m : "?");
    abort();
}

int hub_vm_check_runtime(char *err, size_t errlen)
{
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        snprintf(err, errlen, "cannot create a Lua state");
        return -1;
    }
    luaL_openlibs(L);
    int ok = luaL_dostring(L, "return require('ffi').abi('gc64')") == 0 && lua_toboolean(L, -1);
    lua_close(L);
    if (!ok) {
        snprintf(err, errlen, "LuaJIT is not a GC64 build: the per-state memory cap needs one");
        return -1;
    }
    return 0;
}

/* ---- loading ----------------------------------------------------------- */

/* Reads a whole file (at most MAX_MODULE_BYTES). NULL with errno set. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = malloc(MAX_MODULE_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_MODULE_BYTES + 1, f) : 0;
    fclose(f);
    if (buf == NULL || n > MAX_MODULE_BYTES) {
        free(buf);
        errno = EFBIG;
        return NULL;
    }
    *len = n;
    return buf;
}

/* package.loaders[2]: finds lua.path/<name with dots as slashes>.lua and
 * loads it as text only (never bytecode). Stack: in name; out loader or msg. */
static int lua_searcher(lua_State *L)
{
    hub_vm_t *vm = hub_vm_of(L);
    size_t n;
    const char *name = luaL_checklstring(L, 1, &n);
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || (ch == '.' && i > 0 && i + 1 < n && name[i - 1] != '.'))) {
            lua_pushfstring(L, "\n\tinvalid module name '%s'", name);
            return 1;
        }
    }
    char path[1024];
    int pl = snprintf(path, sizeof(path), "%s/", vm->lua_path);
    for (size_t i = 0; i < n && (size_t)pl + 5 < sizeof(path); i++)
        path[pl++] = name[i] == '.' ? '/' : name[i];
    snprintf(path + pl, sizeof(path) - (size_t)pl, ".lua");
    size_t len;
    char *buf = read_file(path, &len);
    if (buf == NULL) {
        lua_pushfstring(L, "\n\tno file '%s'", path);
        return 1;
    }
    char chunk[1100];
    snprintf(chunk, sizeof(chunk), "@%s", path);
    int rc = luaL_loadbufferx(L, buf, len, chunk, "t");
    free(buf);
    if (rc != 0)
        return lua_error(L); /* the message names file and line */
    return 1;
}

/* load/loadstring for handlers: text chunks only, optional environment.
 * Stack: in chunk [, name [, env]]; out function | nil, err. */
static int lua_load_text(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *name = luaL_optstring(L, 2, "=(load)");
    if (luaL_loadbufferx(L, s, n, name, "t") != 0) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (lua_istable(L, 3)) {
        lua_pushvalue(L, 3);
        lua_setfenv(L, -2);
    }
    return 1;
}

/* The sandbox, applied once the libraries are open (see the README). */
static const char bootstrap[] =
    "local load_text, searcher = ...\n"
    "local G = _G\n"
    "local os_time, os_clock, os_date = os.time, os.clock, os.date\n"
    "local cg = collectgarbage\n"
    "G.io, G.debug, G.dofile, G.loadfile, G.module, G.jit = nil, nil, nil, nil, nil, nil\n"
    "G.os = { time = os_time, clock = os_clock, date = os_date }\n"
    "G.string.dump = nil\n"
    "G.load = function(chunk, name, mode, env)\n"
    "  if type(chunk) ~= 'string' then return nil, 'load: only string chunks' end\n"
    "  return load_text(chunk, name, env)\n"
    "end\n"
    "G.loadstring = function(s, name) return load_text(s, name) end\n"
    "G.collectgarbage = function(opt, arg)\n"
    "  if opt == nil or opt == 'collect' or opt == 'count' or opt == 'step' then\n"
    "    return cg(opt, arg)\n"
    "  end\n"
    "  error(\"collectgarbage('\" .. tostring(opt) .. \"') is not allowed\", 2)\n"
    "end\n"
    "local loaded, preload = package.loaded, package.preload\n"
    "loaded.io, loaded.debug, loaded.jit, loaded.os, loaded.ffi = nil, nil, nil, G.os, nil\n"
    "preload.ffi = nil\n"
    "package.loadlib, package.cpath, package.path = nil, '', ''\n"
    "local loaders = package.loaders\n"
    "for i = #loaders, 1, -1 do loaders[i] = nil end\n"
    "loaders[1] = function(name)\n"
    "  local f = preload[name]\n"
    "  if f then return f end\n"
    "  return \"\\n\\tno field package.preload['\" .. name .. \"']\"\n"
    "end\n"
    "loaders[2] = searcher\n"
    "setmetatable(G, { __newindex = function(_, k)\n"
    "  error(\"assignment to undeclared global '\" .. tostring(k) .. \"' (use local)\", 2)\n"
    "end })\n";

static void open_lib(lua_State *L, lua_CFunction f, const char *name)
{
    lua_pushcfunction(L, f);
    lua_pushstring(L, name);
    lua_call(L, 1, 0);
}

/* Copies the first line of the error at the top of the stack into err. */
static void take_error(lua_State *L, char *err, size_t errlen)
{
    const char *m = lua_tostring(L, -1);
    if (m == NULL)
        m = "(error object is not a string)";
    size_t n = strcspn(m, "\n");
    snprintf(err, errlen, "%.*s", (int)n, m);
}

/* require(name) under the traceback handler; leaves the result on the
 * stack. Returns 0 or -1 with the reason in err (the full traceback is
 * logged). */
static int require_module(hub_vm_t *vm, const char *name, char *err, size_t errlen)
{
    lua_State *L = vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->traceback_ref);
    lua_getglobal(L, "require");
    lua_pushstring(L, name);
    int rc = lua_pcall(L, 1, 1, -3);
    lua_remove(L, -2); /* the traceback handler */
    if (rc != 0) {
        take_error(L, err, errlen);
        hub_log_error("lua load failed", "module=%s error=%s", name,
                      lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

static int run_message(lua_State *L);

/* The bytes of a handler name: A-Z a-z 0-9 _ */
static const uint8_t name_byte[256] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
    ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,
    ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1,
    ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['_'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,
    ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,
    ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,
    ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static int valid_handler_name(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return 0;
    unsigned ok = 1;
    for (size_t i = 0; i < n; i++) /* names are short: no early exit */
        ok &= name_byte[(unsigned char)s[i]];
    return (int)ok;
}

typedef char handler_name_t[65]; /* valid_handler_name: 1 to 64 bytes */

static int cmp_name(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Registers handler name, whose module table is at mod and handle
 * function at fn, with what dispatch needs to know: whether handle takes a
 * third parameter (the msg table is built only then: a function of two
 * fixed parameters cannot see it) and M.raw, the data members it takes as
 * raw JSON. Returns 0, or -1 with err. */
static int read_handler(hub_vm_t *vm, const char *dir, const char *name, int mod, int fn,
                        char *err, size_t errlen)
{
    lua_State *L = vm->L;
    hub_handler_t *info = calloc(1, sizeof(*info));
    if (info == NULL || hub_strmap_put(&vm->handlers, name, info) != 0) {
        free(info);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    lua_pushvalue(L, fn);
    info->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    info->mtype = hub_metrics_type(name, strlen(name));
    info->wants_msg = 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->getinfo_ref);
    lua_pushvalue(L, fn);
    lua_pushliteral(L, "u");
    if (lua_pcall(L, 2, 1, 0) == 0 && lua_istable(L, -1)) {
        lua_getfield(L, -1, "nparams");
        lua_getfield(L, -2, "isvararg");
        if (lua_type(L, -2) == LUA_TNUMBER && lua_tointeger(L, -2) < 3 && !lua_toboolean(L, -1))
            info->wants_msg = 0;
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    lua_pushliteral(L, "raw");
    lua_rawget(L, mod);
    int bad = 0;
    if (lua_istable(L, -1)) {
        size_t n = lua_objlen(L, -1);
        bad = n > HUB_RAW_MAX;
        for (size_t i = 0; i < n && !bad; i++) {
            lua_rawgeti(L, -1, (int)i + 1);
            size_t kl;
            const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &kl) : NULL;
            bad = k == NULL || kl == 0 || kl >= HUB_RAW_NAME || memchr(k, '\0', kl) != NULL;
            if (!bad)
                memcpy(info->raw[info->nraw++], k, kl + 1);
            lua_pop(L, 1);
        }
    } else {
        bad = !lua_isnil(L, -1);
    }
    lua_pop(L, 1);
    if (bad) {
        snprintf(err, errlen, "%s/%s.lua: raw must be a list of up to %d data member names "
                 "(1 to %d bytes each)", dir, name, HUB_RAW_MAX, HUB_RAW_NAME - 1);
        return -1;
    }
    return 0;
}

const hub_handler_t *hub_vm_handler(hub_vm_t *vm, const char *t, size_t n)
{
    if (n < 2 || t[0] != '"' || !valid_handler_name(t + 1, n - 2))
        return NULL;
    return hub_strmap_getn(&vm->handlers, t + 1, n - 2); /* a valid name has no NUL */
}

/* Loads every lua.path/handlers/<name>.lua into vm->handlers. */
static int load_handlers(hub_vm_t *vm, char *err, size_t errlen)
{
    lua_State *L = vm->L;
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/handlers", vm->lua_path);
    /* the names live in a userdata, taken before the directory is opened:
     * a memory error in the Lua calls below (they raise) leaves nothing
     * to free */
    enum { MAX_HANDLERS = 1024 };
    handler_name_t *names = lua_newuserdata(L, MAX_HANDLERS * sizeof(handler_name_t));
    int names_at = lua_gettop(L);
    DIR *d = opendir(dir);
    if (d == NULL) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        lua_settop(L, names_at - 1);
        return -1;
    }
    size_t nn = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && nn < MAX_HANDLERS) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".lua") != 0)
            continue;
        if (!valid_handler_name(de->d_name, l - 4)) {
            hub_log_warn("ignoring handler file with an invalid name", "file=%s/%s", dir,
                         de->d_name);
            continue;
        }
        memcpy(names[nn], de->d_name, l - 4);
        names[nn++][l - 4] = '\0';
    }
    closedir(d);
    qsort(names, nn, sizeof(handler_name_t), cmp_name);
    int rc = 0;
    for (size_t i = 0; i < nn && rc == 0; i++) {
        char mod[128];
        snprintf(mod, sizeof(mod), "handlers.%s", names[i]);
        if (require_module(vm, mod, err, errlen) != 0) {
            rc = -1;
            break;
        }
        if (lua_istable(L, -1))
            lua_getfield(L, -1, "handle");
        else
            lua_pushnil(L);
        if (!lua_isfunction(L, -1)) {
            snprintf(err, errlen,
                     "%s/%s.lua: a handler module must return a table with a handle function",
                     dir, names[i]);
            lua_pop(L, 2);
            rc = -1;
            break;
        }
        int top = lua_gettop(L);
        if (read_handler(vm, dir, names[i], top - 1, top, err, errlen) != 0) {
            lua_pop(L, 2);
            rc = -1;
            break;
        }
        lua_pop(L, 2);
    }
    lua_settop(L, names_at - 1);
    return rc;
}

/* Stack discipline of a protected boot: everything below runs in
 * lua_cpcall so no Lua API error can escape unprotected. */
typedef struct {
    hub_vm_t *vm;
    char *err;
    size_t errlen;
    int failed;
} boot_t;

static int boot(lua_State *L)
{
    boot_t *b = lua_touserdata(L, 1);
    hub_vm_t *vm = b->vm;
    const hub_config_t *cfg = vm->w ? vm->w->cfg : NULL;
    lua_settop(L, 0);
    open_lib(L, luaopen_base, "");
    open_lib(L, luaopen_package, LUA_LOADLIBNAME);
    open_lib(L, luaopen_table, LUA_TABLIBNAME);
    open_lib(L, luaopen_string, LUA_STRLIBNAME);
    open_lib(L, luaopen_math, LUA_MATHLIBNAME);
    open_lib(L, luaopen_bit, LUA_BITLIBNAME);
    open_lib(L, luaopen_os, LUA_OSLIBNAME);
    open_lib(L, luaopen_debug, LUA_DBLIBNAME);
    open_lib(L, luaopen_jit, LUA_JITLIBNAME);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | (cfg && cfg->lua_jit ? LUAJIT_MODE_ON
                                                                      : LUAJIT_MODE_OFF));
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    vm->traceback_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "getinfo");
    vm->getinfo_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    /* a message runs in a coroutine, so a handler can wait (a seat in a
     * room, seats.h); it must not yield across a C function, so the C part
     * (decode, checks, lookup) returns the call for Lua to make */
    static const char runner[] = "local prepare = ...\n"
                                 "return function()\n"
                                 "  local data, fn, client, msg = prepare()\n"
                                 "  if fn then return fn(client, data, msg) end\n"
                                 "end\n";
    if (luaL_loadbuffer(L, runner, sizeof(runner) - 1, "=gohub.dispatch") != 0)
        return lua_error(L);
    lua_pushcfunction(L, run_message);
    lua_call(L, 1, 1);
    vm->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    hub_lua_open_gohub(vm);
    if (luaL_loadbuffer(L, bootstrap, sizeof(bootstrap) - 1, "=gohub.sandbox") != 0)
        return lua_error(L);
    lua_pushcfunction(L, lua_load_text);
    lua_pushcfunction(L, lua_searcher);
    lua_call(L, 2, 0);
    if (vm->w == NULL)
        return 0; /* the --lua-api state needs no user code */

    if (require_module(vm, "permissions", b->err, b->errlen) != 0)
        goto fail;
    if (lua_istable(L, -1))
        lua_getfield(L, -1, "can");
    else
        lua_pushnil(L);
    if (!lua_isfunction(L, -1)) {
        snprintf(b->err, b->errlen, "%s/permissions.lua: must return a table with a can function",
                 vm->lua_path);
        goto fail;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->policy_ref); /* gohub.can calls policy[1] */
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
    lua_pop(L, 2);

    char path[1100];
    struct stat st;
    snprintf(path, sizeof(path), "%s/hooks.lua", vm->lua_path);
    if (stat(path, &st) == 0) {
        if (require_module(vm, "hooks", b->err, b->errlen) != 0)
            goto fail;
        if (!lua_istable(L, -1)) {
            snprintf(b->err, b->errlen, "%s: must return a table", path);
            goto fail;
        }
        vm->hooks_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    if (load_handlers(vm, b->err, b->errlen) != 0)
        goto fail;
    return 0;
fail:
    b->failed = 1;
    return 0;
}

static int full_gc(lua_State *L)
{
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}

#define GC_HEADROOM (64 * 1024) /* over the cap, for full_collect's own allocations */

/* A full collection (after a memory error: to give the memory back). The
 * collector allocates too (its string table), so it runs protected: a
 * memory error in it must not escape unprotected (a panic, which aborts).
 * lua_cpcall allocates a closure, and the state is usually at its cap
 * here, so the cap is raised a little for the call. */
static void full_collect(hub_vm_t *vm, lua_State *L)
{
    size_t limit = vm->mem_limit;
    vm->mem_limit = limit + GC_HEADROOM;
    if (lua_cpcall(L, full_gc, NULL) != 0)
        lua_pop(L, 1);
    vm->mem_limit = limit;
}

hub_vm_t *hub_vm_new(hub_worker_t *w, uint32_t gen, char *err, size_t errlen)
{
    const hub_config_t *cfg = w ? w->cfg : NULL;
    hub_vm_t *vm = calloc(1, sizeof(*vm));
    if (vm == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    vm->w = w;
    vm->gen = gen;
    vm->mem_limit = cfg ? (size_t)cfg->lua_max_memory_mb << 20 : (size_t)64 << 20;
    vm->lua_path = strdup(cfg ? cfg->lua_path : "lua");
    vm->policy_ref = vm->hooks_ref = vm->co_ref = LUA_NOREF;
    vm->getinfo_ref = LUA_NOREF;
    hub_strmap_init(&vm->handlers);
    struct stat st;
    if (w != NULL && (stat(vm->lua_path, &st) != 0 || !S_ISDIR(st.st_mode))) {
        char cwd[512];
        snprintf(err, errlen, "lua.path '%s' is not a directory (working directory %s)",
                 vm->lua_path, getcwd(cwd, sizeof(cwd)) ? cwd : "?");
        hub_vm_free(vm);
        return NULL;
    }
    vm->reserve = malloc(HUB_VM_RESERVE);
    if (vm->reserve != NULL) {
        vm->creating = 1;
        vm->L = lua_newstate(vm_alloc, vm);
        vm->creating = 0;
        if (vm->reserve_used == 0) {
            free(vm->reserve);
            vm->reserve = NULL;
        }
    }
    if (vm->L == NULL || vm->lua_path == NULL) {
        /* hub_vm_check_runtime found a GC64 build at start */
        snprintf(err, errlen, "out of memory (creating a Lua state)");
        hub_vm_free(vm);
        return NULL;
    }
    vm->main = vm->L;
    lua_atpanic(vm->L, on_panic);
    boot_t b = { vm, err, errlen, 0 };
    int rc = lua_cpcall(vm->L, boot, &b);
    if (rc != 0 || b.failed) {
        if (rc != 0)
            take_error(vm->L, err, errlen);
        hub_vm_free(vm);
        return NULL;
    }
    lua_settop(vm->L, 0);
    full_collect(vm, vm->L);
    return vm;
}

void hub_vm_free(hub_vm_t *vm)
{
    if (vm == NULL)
        return;
    if (vm->main)
        lua_close(vm->main);
    small_free_all(vm);
    free(vm->reserve);
    hub_strmap_free_values(&vm->handlers);
    free(vm->out.p);
    free(vm->lua_path);
    free(vm->scratch);
    free(vm);
}

/* ---- calls ------------------------------------------------------------- */

static void timeout_hook(lua_State *L, lua_Debug *ar)
{
    HUB_UNUSED(ar);
    /* the hook stays armed until C regains control, so a pcall inside the
     * handler cannot swallow the stop: the next instruction raises again */
    luaL_error(L, "time limit exceeded");
}

void hub_vm_watchdog(hub_worker_t *w)
{
    uv_mutex_lock(&w->lua_mu);
    uint64_t limit = w->lua_limit_ns;
    /* a stop the hook could not deliver: only a loop inside a JIT-compiled
     * trace (LuaJIT checks no hooks there) keeps running this long */
    uint64_t hard = limit * 10 > 2000000000ULL ? limit * 10 : 2000000000ULL;
    /* the clock is read under the lock: read before it, a call that began
     * in between would look older than time itself (unsigned wrap) */
    uint64_t now_ns = uv_hrtime();
    if (w->lua_active != NULL && now_ns > w->lua_enter_ns &&
        now_ns - w->lua_enter_ns > limit) {
        if (!w->lua_hooked) {
            /* LuaJIT allows setting a hook from another thread (luajit.c
             * does it from a signal handler); it is seen at the next
             * interpreted instruction */
            lua_sethook(w->lua_active, timeout_hook, LUA_MASKCOUNT, 1);
            w->lua_hooked = 1;
        } else if (now_ns - w->lua_enter_ns > hard) {
            /* a silently hung worker would strand its clients forever: fail
             * loudly so the supervisor restarts the process */
            hub_log_error("worker stuck in a Lua handler past the hard limit: aborting",
                          "worker=%d running_ms=%llu jit=%d", w->index,
                          (unsigned long long)((now_ns - w->lua_enter_ns) / 1000000),
                          w->lua_jit);
            abort();
        }
    }
    uv_mutex_unlock(&w->lua_mu);
}

static _Thread_local int call_depth;

void hub_vm_watch_config(hub_worker_t *w)
{
    uv_mutex_lock(&w->lua_mu);
    w->lua_limit_ns = (uint64_t)w->cfg->lua_time_limit_ms * 1000000ULL;
    w->lua_jit = w->cfg->lua_jit;
    uv_mutex_unlock(&w->lua_mu);
}

/* The watchdog's view of the outermost Lua call of worker w: L runs from
 * now (watch_begin) until watch_end, which returns 1 when the time limit's
 * hook was armed meanwhile (and disarms it). */
static void watch_begin(hub_worker_t *w, lua_State *L)
{
    uv_mutex_lock(&w->lua_mu);
    w->lua_active = L;
    w->lua_enter_ns = uv_hrtime();
    uv_mutex_unlock(&w->lua_mu);
}

static int watch_end(hub_worker_t *w, lua_State *L)
{
    uv_mutex_lock(&w->lua_mu);
    w->lua_active = NULL;
    int hooked = w->lua_hooked;
    w->lua_hooked = 0;
    uv_mutex_unlock(&w->lua_mu);
    if (hooked)
        lua_sethook(L, NULL, 0, 0); /* LuaJIT's hook is one for all threads */
    return hooked;
}

int hub_vm_pcall(hub_vm_t *vm, int nargs, int nres, int *timed_out)
{
    lua_State *L = vm->L;
    hub_worker_t *w = vm->w;
    int fidx = lua_gettop(L) - nargs;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->traceback_ref);
    lua_insert(L, fidx);
    int outer = w != NULL && call_depth == 0;
    if (outer)
        watch_begin(w, L);
    call_depth++;
    int yieldable = vm->yieldable; /* nothing waits across this C call */
    vm->yieldable = 0;
    int rc = lua_pcall(L, nargs, nres, fidx);
    vm->yieldable = yieldable;
    call_depth--;
    int hooked = outer && watch_end(w, L);
    lua_remove(L, fidx);
    *timed_out = hooked && rc != 0;
    if (rc == LUA_ERRMEM)
        full_collect(vm, L);
    return rc;
}

/* A hook called from C (connection and room events). Looking it up and
 * pushing its arguments allocate too, so the whole call runs inside
 * lua_cpcall: a memory error there fails the hook like one inside it,
 * instead of escaping unprotected (a panic, which aborts). */
typedef struct {
    hub_vm_t *vm;
    hub_conn_t *c;
    const char *name;
    const char *room; /* the room argument, or NULL */
    int code;         /* in: the close code argument (0 = none); out: on_connect's refusal */
    char *reason;     /* on_connect: gets the refusal's reason (rlen bytes); else NULL */
    size_t rlen;
} hook_call_t;

static int run_hook(lua_State *L)
{
    hook_call_t *h = lua_touserdata(L, 1);
    hub_vm_t *vm = h->vm; /* vm->L is L: call_hook runs this on it */
    int arg = h->code;
    h->code = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->hooks_ref);
    lua_getfield(L, -1, h->name);
    if (!lua_isfunction(L, -1))
        return 0;
    lua_remove(L, -2);
    int base = lua_gettop(L); /* the hook; its results start here */
    hub_lua_push_client(vm, h->c);
    int nargs = 1;
    if (h->room) {
        lua_pushstring(L, h->room);
        nargs++;
    } else if (arg) {
        lua_pushinteger(L, arg);
        nargs++;
    }
    int to;
    if (hub_vm_pcall(vm, nargs, h->reason ? 3 : 0, &to) != 0)
        return lua_error(L); /* the hook's error, logged by call_hook */
    if (h->reason && lua_type(L, base) == LUA_TBOOLEAN && !lua_toboolean(L, base)) {
        int code = lua_isnumber(L, base + 1) ? (int)lua_tointeger(L, base + 1) : 1008;
        h->code = hub_ws_close_code_sendable(code) ? code : 1008;
        snprintf(h->reason, h->rlen, "%s",
                 lua_isstring(L, base + 2) ? lua_tostring(L, base + 2) : "refused");
    }
    return 0;
}

static int call_hook(hook_call_t *h)
{
    if (h->vm == NULL || h->vm->hooks_ref == LUA_NOREF)
        return 0;
    lua_State *L = h->vm->L;
    if (lua_cpcall(L, run_hook, h) != 0) {
        hub_log_error("lua hook failed", "hook=%s error=%s", h->name,
                      lua_tostring(L, -1) ? lua_tostring(L, -1) : "(non-string error)");
        lua_pop(L, 1);
        h->code = 0;
    }
    return h->code;
}

void hub_vm_hook(hub_vm_t *vm, hub_conn_t *c, const char *name, const char *room, int code)
{
    hook_call_t h = { vm, c, name, room, code, NULL, 0 };
    call_hook(&h);
}

/* ---- dispatch ---------------------------------------------------------- */

static const char *default_text(int code)
{
    switch (code) {
    case 1001: return "invalid format";
    case 1002: return "invalid message id";
    case 1003: return "server error";
    case 1004: return "timeout";
    case 1005: return "rate limited";
    case 1006: return "unknown message type";
    case 2000: return "unauthorized";
    case 2001: return "forbidden";
    case 2002: return "token expired";
    case 2003: return "invalid token";
    case 3000: return "room not found";
    case 3001: return "room already exists";
    case 3002: return "room full";
    case 3003: return "not in room";
    case 3004: return "already in room";
    case 4000: return "client not found";
    case 4001: return "client offline";
    case 4002: return "message too large";
    default:   return "unknown error";
    }
}

static void send_error(hub_conn_t *c, int code, const char *message, int64_t rid,
                       const char *details)
{
    hub_metrics_error(&c->w->metrics, code);
    hub_frame_t *f = hub_msg_error(code, message ? message : default_text(code), rid, details);
    if (f == NULL) {
        hub_conn_close(c, 1011, "out of memory");
        return;
    }
    hub_conn_send(c, f);
    hub_frame_release(f);
}

static void send_reply(hub_conn_t *c, const char *type, const char *data, size_t len,
                       int64_t rid)
{
    hub_frame_t *f = hub_msg_frame(type, data, len, 0, rid > 0 ? rid : HUB_NO_REQUEST);
    if (f == NULL) {
        hub_conn_close(c, 1011, "out of memory");
        return;
    }
    hub_conn_send(c, f);
    hub_frame_release(f);
}

/* Turns the handler's results (stack top-nres+1 .. top) into the reply. */
static void reply_from_results(hub_vm_t *vm, hub_conn_t *c, int base, int64_t rid)
{
    lua_State *L = vm->L;
    int nres = lua_gettop(L) - base;
    int t1 = nres >= 1 ? lua_type(L, base + 1) : LUA_TNONE;
    if (t1 == LUA_TSTRING) {
        char err[128];
        vm->out.len = 0; /* no data: {} */
        if (nres >= 2 && !lua_isnil(L, base + 2) &&
            hub_lua_encode(vm, base + 2, &vm->out, err, sizeof(err)) != 0) {
            hub_vm_buf_done(&vm->out);
            hub_log_error("handler reply cannot be encoded", "handler=%s error=%s",
                          vm->cur_type, err);
            send_error(c, 1003, NULL, rid, NULL);
            return;
        }
        send_reply(c, lua_tostring(L, base + 1), vm->out.p, vm->out.len, rid);
        hub_vm_buf_done(&vm->out);
        return;
    }
    if (t1 == LUA_TNONE || (t1 == LUA_TNIL && (nres < 2 || lua_isnil(L, base + 2))) ||
        (t1 == LUA_TBOOLEAN && lua_toboolean(L, base + 1))) {
        if (rid > 0) {
            char ack[48] = "{\"request_id\":";
            size_t n = sizeof("{\"request_id\":") - 1;
            n += hub_msg_u64(ack + n, (uint64_t)rid);
            ack[n++] = '}';
            send_reply(c, "ack", ack, n, rid);
        }
        return;
    }
    if (t1 == LUA_TNIL && lua_type(L, base + 2) == LUA_TNUMBER) {
        int code = (int)lua_tointeger(L, base + 2);
        const char *msg = nres >= 3 ? lua_tostring(L, base + 3) : NULL;
        char err[128];
        const char *details = NULL;
        if (nres >= 4 && !lua_isnil(L, base + 4) &&
            hub_lua_encode(vm, base + 4, &vm->out, err, sizeof(err)) == 0)
            details = vm->out.p;
        send_error(c, code, msg, rid, details);
        hub_vm_buf_done(&vm->out);
        return;
    }
    hub_log_error("handler returned an invalid result", "handler=%s first=%s", vm->cur_type,
                  lua_typename(L, t1));
    send_error(c, 1003, NULL, rid, NULL);
}

/* A message_id must be written as plain digits (JSON has no leading zeros)
 * with a value of at most 2^53, so it is exact in every client's numbers. */
static int exact_id(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 16)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > (uint64_t)HUB_EXACT_MAX)
        return 0;
    *out = (int64_t)v;
    return 1;
}

void hub_vm_refuse(hub_conn_t *c, const uint8_t *p, size_t n, int code, const char *message)
{
    const char *raw;
    size_t rawlen;
    int64_t rid = 0;
    if (!hub_json_member((const char *)p, n, "message_id", &raw, &rawlen) ||
        !exact_id(raw, rawlen, &rid))
        rid = 0;
    send_error(c, code, message, rid, NULL);
}

/* One message on its way through Lua. The C part (run_message, under the
 * coroutine) decodes the envelope and finds the handler; a message refused
 * before its handler runs leaves the error in code. A handler that waits
 * (hub_vm_wait_seat) takes a copy of this with it, text included. */
typedef struct dispatch_s {
    hub_vm_t *vm;
    hub_conn_t *c;
    const char *text;
    size_t n;
    int code;                 /* protocol error to answer; 0 = the handler ran */
    const char *message;
    int64_t rid;
    uint64_t t0;              /* when it arrived (the handled-time metric) */
    char type[65];            /* handler name, once known */
    int mtype;                /* its metrics label (HUB_MT_*) */
    hub_json_env_t env;
} dispatch_t;

static int refuse(dispatch_t *d, int code, const char *message)
{
    d->code = code;
    d->message = message;
    return 0;
}

/* Decodes and checks vm->dispatching, the message dispatch_one set just
 * before resuming (only the dispatch runner can call this), and returns
 * the call to make: data, handler, client, msg ({type, id}) (data first:
 * the decoder left it there, so nothing on the stack moves); nothing when
 * it is refused (d->code). Runs in the message's coroutine, so a memory
 * error while decoding is caught like one in the handler. */
static int run_message(lua_State *L)
{
    hub_vm_t *vm = hub_vm_of(L);
    dispatch_t *d = vm->dispatching; /* set by dispatch_one just before */
    hub_assert(d != NULL);
    vm->dispatching = NULL;
    hub_json_env_t *env = &d->env;
    if (hub_lua_decode_envelope(vm, d->text, d->n, env) != 0)
        return refuse(d, 1001, env->not_object ? "message must be a JSON object"
                                               : "message is not valid JSON");
    /* stack: d, data. A message_id is judged on its text: plain digits
     * (no exponent or fraction) up to 2^53 */
    if (env->id != NULL && !exact_id(env->id, env->id_len, &d->rid)) {
        d->rid = 0;
        return refuse(d, 1002, "message_id must be an integer from 0 to 2^53");
    }
    if (env->type == NULL || !env->type_is_string)
        return refuse(d, 1001, "message_type must be a string");
    /* a valid name needs no escapes: an escaped spelling (or one with
     * \u0000) of a handler name is not that handler */
    const char *tn = env->type + 1;
    size_t tl = env->type_len - 2;
    const hub_handler_t *h = env->info; /* found by the decoder */
    d->mtype = h ? h->mtype : HUB_MT_OTHER;
    if (h != NULL || valid_handler_name(tn, tl)) { /* a handler's name is valid */
        if (h == NULL)
            d->mtype = hub_metrics_type(tn, tl);
        memcpy(d->type, tn, tl);
        d->type[tl] = '\0';
    }
    if (h == NULL)
        return refuse(d, 1006, "unknown message type");
    if (env->has_nul)
        return refuse(d, 1001, "strings must not contain NUL (\\u0000)");
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->fn_ref); /* data, fn */
    hub_lua_push_client(vm, d->c);                /* data, fn, client */
    if (h->wants_msg) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, d->type);
        lua_setfield(L, -2, "type");
        lua_pushnumber(L, (lua_Number)d->rid);
        lua_setfield(L, -2, "id");
    } else {
        lua_pushnil(L);
    }
    vm->cur = d->c;
    vm->env = env;
    vm->cur_type = d->type;
    return 4;
}

/* ---- waiting handlers -------------------------------------------------- */

/* A message that arrived while its connection's handler waits. */
typedef struct qmsg_s {
    struct qmsg_s *next;
    size_t n;
    uint8_t p[];
} qmsg_t;

#define WAIT_QUEUE_MSGS  256          /* more queued than this pauses reading */
#define WAIT_QUEUE_BYTES (1u << 20)

/* A connection's parked handler and what came in meanwhile (c->wait).
 * Lives while a handler is parked or messages are queued. */
struct hub_wait_s {
    int co_ref;               /* the parked coroutine's anchor; LUA_NOREF = none */
    lua_State *co;
    uint32_t gen;             /* generation of the VM it is parked in */
    uint32_t ticket;          /* matches the answer to this wait */
    uint64_t join_id;         /* the connection the seat is for */
    char *room;               /* owned */
    char *text;               /* owned copy of the message; d's spans point here */
    dispatch_t d;
    qmsg_t *head, *tail;
    size_t queued, queued_bytes;
};

static void wait_release_co(hub_wait_t *wt, hub_vm_t *vm)
{
    /* a VM replaced by a reload is gone with its coroutines */
    if (wt->co_ref != LUA_NOREF && vm != NULL && vm->gen == wt->gen)
        luaL_unref(vm->main, LUA_REGISTRYINDEX, wt->co_ref);
    wt->co_ref = LUA_NOREF;
    wt->co = NULL;
    free(wt->room);
    free(wt->text);
    wt->room = wt->text = NULL;
}

static void wait_free(hub_conn_t *c, hub_vm_t *vm)
{
    hub_wait_t *wt = c->wait;
    if (wt == NULL)
        return;
    wait_release_co(wt, vm);
    for (qmsg_t *q = wt->head, *next; q; q = next) {
        next = q->next;
        free(q);
    }
    free(wt);
    c->wait = NULL;
}

/* Runs the message's coroutine: the watchdog's time limit applies as to a
 * pcall. vm->L is co meanwhile, so the gohub functions work on its stack. */
static int vm_resume(hub_vm_t *vm, lua_State *co, int nargs, int *timed_out)
{
    watch_begin(vm->w, co);
    call_depth++;
    vm->L = vm->running = co;
    vm->yieldable = 1;
    int rc = lua_resume(co, nargs);
    vm->yieldable = 0;
    vm->L = vm->main;
    vm->running = NULL;
    call_depth--;
    int hooked = watch_end(vm->w, vm->main);
    *timed_out = hooked && rc != 0 && rc != LUA_YIELD;
    return rc;
}

static int new_coroutine(lua_State *L)
{
    hub_vm_t *vm = lua_touserdata(L, 1);
    vm->co = lua_newthread(L);
    vm->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* The coroutine the next message runs in: the VM keeps one and reuses it
 * once a handler returns normally (a failed or parked one is replaced).
 * NULL when memory is short (the allocation is protected: the memory cap
 * must not panic the process). */
static lua_State *vm_coroutine(hub_vm_t *vm)
{
    if (vm->co == NULL && lua_cpcall(vm->main, new_coroutine, vm) != 0) {
        lua_pop(vm->main, 1);
        vm->co = NULL;
        vm->co_ref = LUA_NOREF;
        full_collect(vm, vm->main);
    }
    return vm->co;
}

typedef struct {
    lua_State *co;
    const char *msg, *handler, *client_id, *memory;
} failure_t;

/* Logs a handler's failure with the coroutine's traceback (protected:
 * building it allocates). */
static int log_failure(lua_State *L)
{
    failure_t *f = lua_touserdata(L, 1);
    luaL_traceback(L, f->co, f->msg, 0);
    hub_log_error("handler failed", "handler=%s client_id=%s memory=%s error=%s", f->handler,
                  f->client_id, f->memory, lua_tostring(L, -1));
    return 0;
}

static void vm_drop_coroutine(hub_vm_t *vm)
{
    if (vm->co_ref != LUA_NOREF)
        luaL_unref(vm->main, LUA_REGISTRYINDEX, vm->co_ref);
    vm->co_ref = LUA_NOREF;
    vm->co = NULL;
}

/* Copies d's message text into wt and moves d's spans to the copy, so
 * gohub.raw works after the wait. Returns 0 or HUB_ENOMEM. */
static int wait_keep_text(hub_wait_t *wt, const dispatch_t *d)
{
    wt->text = malloc(d->n ? d->n : 1);
    if (wt->text == NULL)
        return HUB_ENOMEM;
    memcpy(wt->text, d->text, d->n);
    wt->d = *d;
    wt->d.text = wt->text;
    hub_json_env_t *e = &wt->d.env;
#define HUB_REBASE(ptr) ((ptr) = (ptr) ? wt->text + ((ptr) - d->text) : NULL)
    HUB_REBASE(e->id);
    HUB_REBASE(e->type);
    HUB_REBASE(e->data);
    for (size_t i = 0; i < e->nmembers && i < HUB_JSON_MEMBERS; i++) {
        HUB_REBASE(e->members[i].key);
        HUB_REBASE(e->members[i].val);
    }
#undef HUB_REBASE
    return 0;
}

/* The message_id of a message whose handler call failed before
 * run_message read it (memory ran out while decoding): found by a scan
 * that allocates nothing (the first message_id, where run_message takes the
 * last), so that the client can still match the 1003 to its request. */
static int64_t scanned_id(const dispatch_t *d)
{
    const char *vs;
    size_t vl;
    int64_t id;
    if (d->rid == 0 && d->text != NULL && hub_json_member(d->text, d->n, "message_id", &vs, &vl) &&
        exact_id(vs, vl, &id))
        return id;
    return d->rid;
}

/* After co ran (rc from vm_resume): the reply, an error, or, when the
 * handler parked, nothing yet. d is the message (on the C stack the first
 * time, in c->wait after a wait). */
static void finish(hub_vm_t *vm, hub_conn_t *c, lua_State *co, int rc, int timed_out,
                   dispatch_t *d, int resumed)
{
    hub_wait_t *wt = c->wait;
    if (rc == LUA_YIELD && wt != NULL && wt->co == co) {
        if (wt->text == NULL && wait_keep_text(wt, d) != 0) {
            /* the answer finds nobody waiting and gives the seat back */
            wait_release_co(wt, vm);
            if (wt->head == NULL)
                wait_free(c, vm);
            vm_drop_coroutine(vm);
            send_error(c, 1003, NULL, d->rid, NULL);
            goto done;
        }
        if (co == vm->co) { /* the parked coroutine keeps its anchor */
            wt->co_ref = vm->co_ref;
            vm->co_ref = LUA_NOREF;
            vm->co = NULL;
        }
        vm->cur = NULL;
        vm->env = NULL;
        vm->cur_type = NULL;
        return; /* hub_vm_seat_answer resumes it */
    }
    const char *tname = d->type[0] ? d->type : "?";
    vm->L = co; /* the results are on co's stack */
    if (rc == 0) {
        if (d->code != 0)
            send_error(c, d->code, d->message, d->rid, NULL);
        else if (!(c->flags & HUB_CONN_F_CLOSED))
            reply_from_results(vm, c, 0, d->rid);
        lua_settop(co, 0);
    } else if (timed_out) {
        hub_log_warn("handler stopped at the time limit", "handler=%s limit_ms=%d", tname,
                     vm->w->cfg->lua_time_limit_ms);
        send_error(c, 1004, "handler timed out", d->rid, NULL);
    } else {
        d->rid = scanned_id(d);
        const char *m = rc == LUA_YIELD ? "yielded outside gohub (coroutine.yield at the top "
                                          "of a handler)"
                                        : lua_tostring(co, -1);
        char cid[HUB_CLIENT_ID_MAX];
        hub_conn_client_id(c, cid, sizeof(cid));
        failure_t f = { co, m ? m : "(non-string error)", tname, cid,
                        rc == LUA_ERRMEM ? "exhausted" : "ok" };
        /* out of memory, a traceback would fail too: the coroutine holds
         * what exhausted it until it is dropped below */
        if (rc == LUA_ERRMEM || lua_cpcall(vm->main, log_failure, &f) != 0) {
            if (rc != LUA_ERRMEM)
                lua_pop(vm->main, 1);
            hub_log_error("handler failed", "handler=%s client_id=%s memory=%s error=%s", tname,
                          cid, f.memory, f.msg);
        }
        lua_settop(co, 0);
        send_error(c, 1003, NULL, d->rid, NULL);
    }
    vm->L = vm->main;
    if (resumed)
        wait_release_co(wt, vm); /* it ran to its end after a wait */
    else if (rc != 0)
        vm_drop_coroutine(vm); /* dead (or yielded): the next message gets a new one */
    if (rc == LUA_ERRMEM)
        full_collect(vm, vm->main);
done:
    vm->cur = NULL;
    vm->env = NULL;
    vm->cur_type = NULL;
    hub_metrics_handled(&vm->w->metrics, d->mtype, uv_hrtime() - d->t0);
}

static void dispatch_one(hub_vm_t *vm, hub_conn_t *c, const uint8_t *p, size_t n)
{
    dispatch_t d;
    d.vm = vm;
    d.c = c;
    d.text = (const char *)p;
    d.n = n;
    d.code = 0;
    d.message = NULL;
    d.rid = 0;
    d.t0 = uv_hrtime();
    d.type[0] = '\0';
    d.mtype = HUB_MT_INVALID;
    lua_State *co = vm_coroutine(vm);
    if (co == NULL) {
        hub_log_error("handler not run: Lua memory exhausted", "conn=%llu",
                      (unsigned long long)c->id);
        hub_vm_refuse(c, p, n, 1003, NULL);
        return;
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, vm->dispatch_ref);
    vm->dispatching = &d; /* run_message takes it: no lightuserdata to push */
    int timed_out;
    int rc = vm_resume(vm, co, 0, &timed_out);
    finish(vm, c, co, rc, timed_out, &d, 0);
}

/* Runs what was queued behind a wait that ended, in order, until the queue
 * is empty or a handler waits again; frees the wait when nothing is left. */
static void wait_drain(hub_conn_t *c)
{
    hub_wait_t *wt;
    while ((wt = c->wait) != NULL && wt->co_ref == LUA_NOREF && wt->head != NULL &&
           !(c->flags & HUB_CONN_F_CLOSED)) {
        qmsg_t *q = wt->head;
        wt->head = q->next;
        if (wt->head == NULL)
            wt->tail = NULL;
        wt->queued--;
        wt->queued_bytes -= q->n;
        dispatch_one(c->w->vm, c, q->p, q->n);
        free(q);
    }
    if (wt != NULL && wt->co_ref == LUA_NOREF && wt->head == NULL)
        wait_free(c, c->w->vm);
    if ((c->flags & HUB_CONN_F_WAITING) &&
        (c->wait == NULL ||
         (c->wait->queued < WAIT_QUEUE_MSGS && c->wait->queued_bytes < WAIT_QUEUE_BYTES)))
        hub_conn_resume(c);
}

void hub_vm_dispatch(hub_vm_t *vm, hub_conn_t *c, const uint8_t *p, size_t n)
{
    hub_wait_t *wt = c->wait;
    if (hub_likely(wt == NULL)) {
        dispatch_one(vm, c, p, n);
        return;
    }
    /* a handler of this connection waits: keep the order */
    qmsg_t *q = malloc(sizeof(*q) + n);
    if (q == NULL) {
        hub_conn_close(c, 1011, "out of memory");
        return;
    }
    q->next = NULL;
    q->n = n;
    memcpy(q->p, p, n);
    if (wt->tail)
        wt->tail->next = q;
    else
        wt->head = q;
    wt->tail = q;
    wt->queued++;
    wt->queued_bytes += n;
    if (wt->queued >= WAIT_QUEUE_MSGS || wt->queued_bytes >= WAIT_QUEUE_BYTES)
        hub_conn_pause(c); /* TCP pushes back until the wait ends */
}

int hub_vm_wait_seat(hub_vm_t *vm, lua_State *L, uint64_t conn_id, const char *room,
                     uint32_t max)
{
    hub_conn_t *c = vm->cur;
    /* only the handler's own coroutine can wait, not a hook, a nested call
     * or a coroutine of the handler's */
    if (c == NULL || !vm->yieldable || L != vm->running || vm->w == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, "unavailable");
        return 2;
    }
    hub_wait_t *wt = c->wait;
    if (wt == NULL) {
        if ((wt = c->wait = calloc(1, sizeof(*wt))) == NULL) {
            lua_pushnil(L);
            lua_pushstring(L, "out_of_memory");
            return 2;
        }
        wt->co_ref = LUA_NOREF;
    }
    free(wt->room); /* a second wait of the same handler */
    wt->room = strdup(room);
    wt->ticket = ++vm->w->wait_tickets;
    if (wt->room == NULL || hub_seats_ask(vm->w, c->id, conn_id, room, max, wt->ticket) != 0) {
        free(wt->room);
        wt->room = NULL;
        if (wt->head == NULL && wt->co_ref == LUA_NOREF)
            wait_free(c, vm);
        lua_pushnil(L);
        lua_pushstring(L, "unavailable");
        return 2;
    }
    wt->co = L;
    wt->gen = vm->gen;
    wt->join_id = conn_id;
    return lua_yield(L, 0);
}

typedef struct {
    hub_vm_t *vm;
    lua_State *co;
    hub_wait_t *wt;
    int rc;                   /* the registry's answer, or HUB_EROOMFULL / HUB_ESEAT */
    int nres;
} answer_t;

/* Pushes gohub.rooms.join's results on the parked coroutine, protected:
 * strings and the hooks may allocate. */
static int push_answer(lua_State *L)
{
    answer_t *a = lua_touserdata(L, 1);
    a->nres = hub_lua_join_result(a->vm, a->co, a->wt->join_id, a->wt->room, a->rc);
    return 0;
}

void hub_vm_seat_answer(hub_worker_t *w, uint64_t conn_id, uint64_t seat_id, const char *room,
                        uint32_t ticket, int verdict)
{
    hub_conn_t *c = hub_worker_conn(w, conn_id);
    hub_wait_t *wt = c ? c->wait : NULL;
    if (wt == NULL || wt->co == NULL || wt->ticket != ticket || (c->flags & HUB_CONN_F_CLOSED)) {
        /* the connection or its handler is gone: the seat goes back */
        if (verdict == HUB_SEAT_OK)
            hub_seats_free(w, room, seat_id);
        return;
    }
    hub_vm_t *vm = w->vm;
    if (vm->gen != wt->gen) {
        /* a reload replaced the code the handler was running */
        if (verdict == HUB_SEAT_OK)
            hub_seats_free(w, room, seat_id);
        hub_log_warn("a waiting handler was dropped by a code reload", "handler=%s",
                     wt->d.type);
        send_error(c, 1003, "handler interrupted by a code reload", wt->d.rid, NULL);
        wait_release_co(wt, vm);
        wait_drain(c);
        return;
    }
    lua_State *co = wt->co;
    wt->co = NULL; /* set again if the handler waits again */
    if (verdict == HUB_SEAT_OK) {
        int rc = hub_reg_room_join(wt->room, wt->join_id, w->cfg->rooms_auto_create,
                                   w->cfg->rooms_default_max_clients,
                                   w->cfg->rooms_max_per_client, NULL);
        if (rc < 0)
            hub_seats_free(w, wt->room, wt->join_id);
        verdict = rc; /* what push_answer turns into gohub.rooms.join's results */
    } else {
        verdict = verdict == HUB_SEAT_FULL ? HUB_EROOMFULL : HUB_ESEAT;
    }
    answer_t a = { vm, co, wt, verdict, 0 };
    int top = lua_gettop(co);
    if (lua_cpcall(vm->main, push_answer, &a) != 0) {
        lua_pop(vm->main, 1); /* out of memory: the join returns nothing */
        lua_settop(co, top);
        a.nres = 0;
    }
    int nres = a.nres;
    vm->cur = c;
    vm->env = &wt->d.env;
    vm->cur_type = wt->d.type;
    wt->d.vm = vm;
    int timed_out;
    int rc = vm_resume(vm, co, nres, &timed_out);
    dispatch_t d = wt->d; /* finish may free what wt holds */
    finish(vm, c, co, rc, timed_out, &d, !(rc == LUA_YIELD && wt->co == co));
    wait_drain(c);
}

/* ---- connection events ------------------------------------------------- */

int hub_vm_on_connect(hub_vm_t *vm, hub_conn_t *c, char *reason, size_t rlen)
{
    hook_call_t h = { vm, c, "on_connect", NULL, 0, reason, rlen };
    return call_hook(&h);
}

void hub_vm_on_close(hub_vm_t *vm, hub_conn_t *c)
{
    hub_worker_t *w = c->w;
    wait_free(c, vm); /* a seat granted later goes back (hub_vm_seat_answer) */
    char **rooms;
    uint8_t *deleted;
    size_t n;
    size_t unlisted = hub_reg_client_remove(c->id, &rooms, &deleted, &n);
    if (unlisted > 0)
        hub_log_error("out of memory: rooms left without member_left or on_leave",
                      "conn=%llu rooms=%zu", (unsigned long long)c->id, unlisted);
    char uid[HUB_USER_ID_MAX];
    hub_conn_user_id(c, uid, sizeof(uid));
    for (size_t i = 0; i < n; i++) {
        /* at shutdown every member is leaving: nobody to tell */
        /* a room deleted here with its last local member may still have
         * members on other nodes */
        if (w->cfg->rooms_presence_events && (!deleted[i] || hub_cluster_enabled()) &&
            !w->stopping)
            hub_fanout_presence(w, "member_left", rooms[i], c->id, uid);
        hub_vm_hook(vm, c, "on_leave", rooms[i], 0);
    }
    hub_reg_strv_free(rooms, n);
    free(deleted);
    /* 1006: the TCP connection ended without a close frame either way;
     * 1005 (no status) is what a close frame without a code means */
    int code = c->close_code == 0 ? 1006 : c->close_code;
    hub_vm_hook(vm, c, "on_disconnect", NULL, code);
    if (vm != NULL && c->lua_ref != LUA_NOREF && c->lua_gen == vm->gen)
        luaL_unref(vm->L, LUA_REGISTRYINDEX, c->lua_ref);
    c->lua_ref = LUA_NOREF;
}

/* ---- gohub -t -------------------------------------------------------------- */

int hub_vm_check_code(const hub_config_t *cfg, char *err, size_t errlen)
{
    /* a worker-shaped context without a loop: enough for module top-level
     * code that calls gohub.* (rooms go to a throwaway registry) */
    hub_server_t srv;
    hub_worker_t w;
    memset(&srv, 0, sizeof(srv));
    memset(&w, 0, sizeof(w));
    srv.cfg = (hub_config_t *)(uintptr_t)cfg;
    srv.nworkers = 1;
    srv.workers = &w;
    snprintf(srv.node_id, sizeof(srv.node_id), "check");
    w.srv = &srv;
    w.cfg = cfg;
    hub_idmap_init(&w.byid);
    hub_strmap_init(&w.counters);
    if (hub_vm_check_runtime(err, errlen) != 0 || hub_reg_init(1) != 0)
        return -1;
    hub_vm_t *vm = hub_vm_new(&w, 1, err, errlen);
    int rc = vm != NULL ? 0 : -1;
    hub_vm_free(vm);
    hub_reg_free();
    hub_strmap_free_values(&w.counters);
    hub_idmap_free(&w.byid);
    return rc;
}

/* ---- API listing --------------------------------------------------------- */

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int hub_vm_dump_api(FILE *out)
{
    char err[256];
    hub_vm_t *vm = hub_vm_new(NULL, 0, err, sizeof(err));
    if (vm == NULL) {
        fprintf(stderr, "gohub: %s\n", err);
        return -1;
    }
    lua_State *L = vm->L;
    lua_getglobal(L, "require");
    lua_pushstring(L, "gohub");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        hub_vm_free(vm);
        return -1;
    }
    char *names[256];
    size_t nn = 0;
    lua_pushnil(L);
    while (lua_next(L, -2) && nn < 250) {
        const char *k = lua_tostring(L, -2);
        if (lua_istable(L, -1) && (strcmp(k, "rooms") == 0 || strcmp(k, "json") == 0)) {
            lua_pushnil(L);
            while (lua_next(L, -2) && nn < 250) {
                char buf[128];
                snprintf(buf, sizeof(buf), "%s.%s", k, lua_tostring(L, -2));
                if ((names[nn] = strdup(buf)) != NULL)
                    nn++;
                lua_pop(L, 1);
            }
        } else {
            if ((names[nn] = strdup(k)) != NULL)
                nn++;
        }
        lua_pop(L, 1);
    }
    qsort(names, nn, sizeof(char *), cmp_cstr);
    for (size_t i = 0; i < nn; i++) {
        fprintf(out, "%s\n", names[i]);
        free(names[i]);
    }
    hub_vm_free(vm);
    return 0;
}
