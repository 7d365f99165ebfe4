/* lua_api.c: the `gohub` module, the whole C API that handlers see (see the
 * README's reference). Connections are named by client id strings, never by
 * pointers. Runtime failures return nil, "reason"; wrong argument types
 * raise (luaL_check*: these may longjmp, so every check comes before any
 * allocation). Worker thread (owner of the VM). */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "auth.h"
#include "cluster.h"
#include "cluster_ops.h"
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
#include "server.h"
#include "utf8.h"
#include "worker.h"

#define HUB_LUA_MAY_RAISE(x) x /* marks calls that can longjmp out of C */

/* ---- helpers ------------------------------------------------------------- */

/* vm's worker; raises in the --lua-api dump state, which has none. */
static hub_worker_t *vm_worker(lua_State *L, hub_vm_t *vm)
{
    if (vm->w == NULL)
        luaL_error(L, "gohub: not available outside a worker");
    return vm->w;
}

static hub_worker_t *worker_of(lua_State *L)
{
    return vm_worker(L, hub_vm_of(L));
}

static int fail(lua_State *L, const char *reason)
{
    lua_pushnil(L);
    lua_pushstring(L, reason);
    return 2;
}

/* Returns the connection id of the client id at arg (0 if not ours). */
static uint64_t client_arg(lua_State *L, hub_vm_t *vm, int arg)
{
    size_t n;
    const char *s = HUB_LUA_MAY_RAISE(luaL_checklstring(L, arg, &n));
    return hub_client_id_parse(vm_worker(L, vm)->srv, s, n);
}

static uint64_t check_client(lua_State *L, int arg)
{
    return client_arg(L, hub_vm_of(L), arg);
}

static const char *check_room(lua_State *L, int arg, int *valid)
{
    size_t n;
    const char *s = HUB_LUA_MAY_RAISE(luaL_checklstring(L, arg, &n));
    *valid = hub_reg_valid_room_id(s, n);
    return s;
}

/* Encodes the value at idx and builds an envelope frame of type with a new
 * message id. Raises when the value cannot be encoded (a programmer error). */
static hub_frame_t *vm_build(lua_State *L, hub_vm_t *vm, const char *type, int idx)
{
    char err[160];
    vm->out.len = 0; /* nothing encoded: data {} */
    if (!lua_isnoneornil(L, idx) && hub_lua_encode(vm, idx, &vm->out, err, sizeof(err)) != 0)
        luaL_error(L, "gohub: cannot encode data: %s", err);
    hub_frame_t *f = hub_msg_frame(type, vm->out.p, vm->out.len, hub_msg_next_id(),
                                   HUB_NO_REQUEST);
    hub_vm_buf_done(&vm->out);
    if (f == NULL)
        luaL_error(L, "gohub: out of memory");
    return f;
}

static hub_frame_t *build(lua_State *L, const char *type, int idx)
{
    return vm_build(L, hub_vm_of(L), type, idx);
}

static void push_member(lua_State *L, hub_server_t *srv, uint64_t conn_id, const char *user_id)
{
    char cid[HUB_CLIENT_ID_MAX], anon[HUB_USER_ID_MAX];
    hub_client_id_format(srv, conn_id, cid, sizeof(cid));
    if (user_id == NULL) {
        hub_anon_user_id(srv, conn_id, anon, sizeof(anon));
        user_id = anon;
    }
    lua_createtable(L, 0, 2);
    lua_pushstring(L, cid);
    lua_setfield(L, -2, "client_id");
    lua_pushstring(L, user_id);
    lua_setfield(L, -2, "user_id");
}

static void push_room(lua_State *L, const hub_room_info_t *r)
{
    lua_createtable(L, 0, 4);
    lua_pushstring(L, r->id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, r->name);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, r->max_clients);
    lua_setfield(L, -2, "max_clients");
    lua_pushinteger(L, r->member_count);
    lua_setfield(L, -2, "member_count");
}

/* ---- boxes ---------------------------------------------------------------
 * A function that pushes Lua values from malloc'd C memory (a room list, a
 * member list) frees that memory at its end; a Lua error raised on the way
 * (out of memory, in any push) unwinds past that free. So such memory is
 * held in a box: a userdata pushed before the memory is taken, whose
 * payload the function fills in, that box_done frees at the end, and that
 * the collector frees instead when an error came first. */
typedef void (*box_free_t)(void *payload);

typedef struct {
    box_free_t free;
    int done;
    void *payload[]; /* pointer-aligned: the payloads hold pointers and sizes */
} box_t;

static void box_release(box_t *b)
{
    if (!b->done) {
        b->done = 1;
        b->free(b->payload);
    }
}

static int box_gc(lua_State *L)
{
    box_release(lua_touserdata(L, 1));
    return 0;
}

/* Pushes a box with size bytes of zeroed payload, freed by fn; returns the
 * payload. Raises (out of memory) before anything is owned. */
static void *box_new(lua_State *L, size_t size, box_free_t fn)
{
    box_t *b = lua_newuserdata(L, sizeof(box_t) + size);
    b->free = fn;
    b->done = 0;
    memset(b->payload, 0, size);
    lua_rawgeti(L, LUA_REGISTRYINDEX, hub_vm_of(L)->box_mt_ref);
    lua_setmetatable(L, -2);
    return b->payload;
}

/* Frees the payload now (the function's normal end). */
static void box_done(void *payload)
{
    box_release((box_t *)((char *)payload - offsetof(box_t, payload)));
}

static void box_free_info(void *p)
{
    hub_reg_info_free(p);
}

typedef struct {
    hub_room_info_t *v;
    size_t n;
} room_list_t;

static void box_free_rooms(void *p)
{
    room_list_t *l = p;
    hub_reg_rooms_free(l->v, l->n);
}

typedef struct {
    hub_member_t *m;
    size_t n;
    hub_cluster_member_t *rm;
    size_t rn;
} member_list_t;

static void box_free_members(void *p)
{
    member_list_t *l = p;
    hub_reg_members_free(l->m, l->n);
    hub_cluster_members_free(l->rm, l->rn);
}

typedef struct {
    char **v;
    size_t n;
} strv_t;

static void box_free_strv(void *p)
{
    strv_t *l = p;
    hub_reg_strv_free(l->v, l->n);
}

static void box_free_buf(void *p)
{
    free(((hub_lua_buf_t *)p)->p);
}

static void mark_array(lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, hub_vm_of(L)->array_mt_ref);
    lua_setmetatable(L, -2);
}

/* member_joined / member_left to a room, excluding the subject. The user
 * id of a connection on another worker comes from the registry. */
static void presence(hub_worker_t *w, const char *type, const char *room, uint64_t conn_id)
{
    if (!w->cfg->rooms_presence_events)
        return;
    char uid[HUB_USER_ID_MAX];
    hub_conn_t *c = hub_worker_conn(w, conn_id);
    if (c != NULL)
        hub_conn_user_id(c, uid, sizeof(uid));
    else if (!hub_reg_client_user(conn_id, uid, sizeof(uid)))
        hub_anon_user_id(w->srv, conn_id, uid, sizeof(uid));
    hub_fanout_presence(w, type, room, conn_id, uid);
}

/* ---- the client table ---------------------------------------------------- */

/* Pushes c's permissions as an array: the token's permissions claim, or
 * auth.anonymous_permissions for an anonymous connection and for a token
 * without that claim. Stack: +1. */
static void push_permissions(lua_State *L, const hub_conn_t *c)
{
    const hub_identity_t *id = c->ident;
    if (id != NULL && id->permissions != NULL) {
        lua_createtable(L, (int)id->npermissions, 0);
        for (size_t i = 0; i < id->npermissions; i++) {
            lua_pushstring(L, id->permissions[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
    } else {
        const hub_strlist_t *perms = &c->w->cfg->anonymous_permissions;
        lua_createtable(L, (int)perms->n, 0);
        for (size_t i = 0; i < perms->n; i++) {
            lua_pushstring(L, perms->items[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
    }
    mark_array(L);
}

/* Sets the identity fields of the client table on top of the stack from
 * c->ident: user_id, username (nil when none), authenticated, claims (the
 * verified token's payload; {} when anonymous), permissions. Stack: 0. */
static void set_identity_fields(hub_vm_t *vm, hub_conn_t *c)
{
    lua_State *L = vm->L;
    char uid[HUB_USER_ID_MAX];
    hub_conn_user_id(c, uid, sizeof(uid));
    lua_pushstring(L, uid);
    lua_setfield(L, -2, "user_id");
    if (c->ident != NULL && c->ident->username != NULL)
        lua_pushstring(L, c->ident->username);
    else
        lua_pushnil(L);
    lua_setfield(L, -2, "username");
    lua_pushboolean(L, c->ident != NULL);
    lua_setfield(L, -2, "authenticated");
    const char *err;
    if (c->ident == NULL ||
        hub_lua_decode(vm, c->ident->claims_json, c->ident->claims_len, &err) != 0)
        lua_newtable(L);
    lua_setfield(L, -2, "claims");
    push_permissions(L, c);
    lua_setfield(L, -2, "permissions");
}

void hub_lua_push_client(hub_vm_t *vm, hub_conn_t *c)
{
    lua_State *L = vm->L;
    if (c->lua_ref != LUA_NOREF && c->lua_gen == vm->gen) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->lua_ref);
        return;
    }
    char cid[HUB_CLIENT_ID_MAX];
    hub_conn_client_id(c, cid, sizeof(cid));
    lua_createtable(L, 0, 7);
    lua_pushstring(L, cid);
    lua_setfield(L, -2, "id");
    set_identity_fields(vm, c);
    lua_newtable(L);
    lua_setfield(L, -2, "ctx");
    lua_pushvalue(L, -1);
    c->lua_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    c->lua_gen = vm->gen;
}

/* ---- messaging ----------------------------------------------------------- */

/* gohub.send(client_id, type, data) → true | nil, "offline" */
static int l_send(lua_State *L)
{
    size_t n;
    const char *cid = HUB_LUA_MAY_RAISE(luaL_checklstring(L, 1, &n));
    const char *type = luaL_checkstring(L, 2);
    hub_frame_t *f = build(L, type, 3);
    int rc = hub_fanout_client(worker_of(L), cid, n, f);
    hub_frame_release(f);
    if (rc != 0)
        return fail(L, "offline");
    lua_pushboolean(L, 1);
    return 1;
}

/* gohub.send_user(user_id, type, data) → count | nil, "offline"; the count
 * is this node's connections (0 when only other nodes have the user) */
static int l_send_user(lua_State *L)
{
    size_t n;
    const char *uid = luaL_checklstring(L, 1, &n);
    const char *type = luaL_checkstring(L, 2);
    hub_worker_t *w = worker_of(L);
    hub_frame_t *f = build(L, type, 3);
    int count, forwarded = 0;
    if (n > 5 && memcmp(uid, "anon-", 5) == 0) {
        /* anon-<client id> names a connection only while it is anonymous
         * (tokens cannot carry such a user id: auth.c refuses them) */
        char had[2];
        uint64_t id = hub_client_id_parse(w->srv, uid + 5, n - 5);
        if (id != 0) {
            count = !hub_reg_client_user(id, had, sizeof(had)) &&
                            hub_fanout_conn(w, id, f) == 0
                        ? 1
                        : 0;
        } else {
            count = 0; /* another node's client, maybe */
            forwarded = hub_fanout_client(w, uid + 5, n - 5, f) == 0;
        }
    } else {
        count = hub_fanout_user(w, uid, f, &forwarded);
    }
    hub_frame_release(f);
    if (count == 0 && !forwarded)
        return fail(L, "offline");
    lua_pushinteger(L, count);
    return 1;
}

/* gohub.broadcast(type, data [, exclude_client_id]) → local recipients */
static int l_broadcast(lua_State *L)
{
    const char *type = luaL_checkstring(L, 1);
    uint64_t ex = lua_isnoneornil(L, 3) ? 0 : check_client(L, 3);
    hub_frame_t *f = build(L, type, 2);
    int n = hub_fanout_all(worker_of(L), f, ex);
    hub_frame_release(f);
    lua_pushinteger(L, n);
    return 1;
}

/* gohub.close(client_id [, code [, reason]]) → true | nil, "offline" */
static int l_close(lua_State *L)
{
    uint64_t id = check_client(L, 1);
    int code = (int)luaL_optinteger(L, 2, 1000);
    const char *reason = luaL_optstring(L, 3, "");
    if (!hub_ws_close_code_sendable(code))
        return luaL_argerror(L, 2, "not a close code that may be sent");
    if (id == 0 || hub_fanout_close(worker_of(L), id, (uint16_t)code, reason) != 0)
        return fail(L, "offline");
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- authentication -------------------------------------------------------- */

static int fail_code(lua_State *L, int code, const char *message)
{
    lua_pushnil(L);
    lua_pushinteger(L, code);
    lua_pushstring(L, message);
    return 3;
}

/* gohub.authenticate(client, token) → {user_id, username, permissions,
 * expires_at} | nil, code, message. client: a client table or a client id
 * on this worker (the handler's own client). On success the connection
 * takes the token's identity (registry, client table, expiry); on failure
 * it keeps the one it had. */
static int l_authenticate(lua_State *L)
{
    uint64_t id;
    if (lua_istable(L, 1)) {
        lua_getfield(L, 1, "id");
        if (lua_type(L, -1) != LUA_TSTRING)
            return luaL_argerror(L, 1, "a client table has a string id");
        id = check_client(L, -1);
        lua_pop(L, 1);
    } else {
        id = check_client(L, 1);
    }
    size_t n;
    const char *tok = luaL_checklstring(L, 2, &n);
    hub_worker_t *w = worker_of(L);
    hub_vm_t *vm = hub_vm_of(L);
    if (w->auth == NULL)
        return fail_code(L, 2000, "authentication is disabled on this server (auth.enabled)");
    hub_conn_t *c = id ? hub_worker_conn(w, id) : NULL;
    if (c == NULL)
        return fail_code(L, 4000, "client not found");
    hub_identity_t *ident = NULL;
    hub_auth_reason_t why = hub_auth_verify(w->auth, tok, n, hub_now_ms(), &ident);
    hub_metrics_auth(&w->metrics, why == HUB_AUTH_OK, hub_auth_reason_name(why));
    if (why != HUB_AUTH_OK) {
        hub_log_info("authenticate refused", "conn=%llu reason=%s", (unsigned long long)c->id,
                     hub_auth_reason_name(why));
        return fail_code(L, hub_auth_reason_code(why), hub_auth_reason_text(why));
    }
    if (hub_conn_set_identity(c, ident) != 0) /* frees ident */
        return fail_code(L, 1003, "server error");
    if (c->lua_ref != LUA_NOREF && c->lua_gen == vm->gen) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->lua_ref);
        set_identity_fields(vm, c);
        lua_pop(L, 1);
    }
    lua_createtable(L, 0, 4);
    lua_pushstring(L, c->ident->user_id);
    lua_setfield(L, -2, "user_id");
    if (c->ident->username != NULL) {
        lua_pushstring(L, c->ident->username);
        lua_setfield(L, -2, "username");
    }
    push_permissions(L, c);
    lua_setfield(L, -2, "permissions");
    if (c->ident->exp != 0)
        lua_pushnumber(L, (lua_Number)c->ident->exp);
    else
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->null_ref);
    lua_setfield(L, -2, "expires_at");
    return 1;
}

/* ---- rooms ----------------------------------------------------------------- */

/* gohub.rooms.create(room_id [, {name=, max_clients=}]) → room | nil, err */
static int l_room_create(lua_State *L)
{
    int valid;
    const char *id = check_room(L, 1, &valid);
    const char *name = NULL;
    lua_Integer max = worker_of(L)->cfg->rooms_default_max_clients;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "name");
        name = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
        lua_getfield(L, 2, "max_clients");
        if (!lua_isnil(L, -1)) {
            /* checked as a number: converting 1e308 to an integer first
             * would be undefined */
            lua_Number m = luaL_checknumber(L, -1);
            if (!(m >= 0 && m <= HUB_ROOM_MAX_CLIENTS) || m != floor(m))
                return luaL_argerror(L, 2, "max_clients must be an integer from 0 to 10000000");
            max = (lua_Integer)m;
        }
    }
    if (!valid)
        return fail(L, "invalid_room_id");
    hub_room_info_t *r = box_new(L, sizeof(*r), box_free_info);
    int rc = hub_reg_room_create(id, name, (uint32_t)max, 0, r);
    if (rc != 0)
        return fail(L, rc == HUB_EEXIST ? "exists" : "out_of_memory");
    push_room(L, r);
    box_done(r);
    return 1;
}

/* gohub.rooms.delete(room_id) → true | nil, "not_found". In a cluster the
 * room goes on every node (also when only other nodes have it). */
static int l_room_delete(lua_State *L)
{
    int valid;
    const char *id = check_room(L, 1, &valid);
    hub_worker_t *w = worker_of(L);
    if (!valid || hub_ops_room_delete(w, id) < 0)
        return fail(L, "not_found");
    lua_pushboolean(L, 1);
    return 1;
}

static const char *reason_of(int rc)
{
    switch (rc) {
    case HUB_ENOTFOUND:  return "not_found";
    case HUB_EALREADY:   return "already_member";
    case HUB_ENOTMEMBER: return "not_member";
    case HUB_EROOMFULL:  return "full";
    case HUB_ETOOMANY:   return "too_many_rooms";
    case HUB_EOFFLINE:   return "offline";
    case HUB_ESEAT:      return "unavailable";
    default:             return "out_of_memory";
    }
}

int hub_lua_join_result(hub_vm_t *vm, lua_State *L, uint64_t conn_id, const char *room, int rc)
{
    hub_worker_t *w = vm->w;
    if (rc < 0)
        return fail(L, reason_of(rc));
    rc += (int)hub_cluster_room_count(room); /* the cluster's member count */
    presence(w, "member_joined", room, conn_id);
    hub_conn_t *c = hub_worker_conn(w, conn_id);
    if (c != NULL)
        hub_vm_hook(vm, c, "on_join", room, 0);
    lua_pushinteger(L, rc);
    return 1;
}

/* gohub.rooms.join(client_id, room_id) → member count | nil, err. In a
 * cluster, a room with max_clients makes the handler wait for a seat from
 * the room's owner (lua_vm.c parks it; seats.h). */
static int l_room_join(lua_State *L)
{
    uint64_t cid = check_client(L, 1);
    int valid;
    const char *room = check_room(L, 2, &valid);
    hub_worker_t *w = worker_of(L);
    if (!valid)
        return fail(L, "invalid_room_id");
    if (cid == 0)
        return fail(L, "offline");
    uint32_t seat_max = 0;
    int rc = hub_reg_room_join(room, cid, w->cfg->rooms_auto_create,
                               w->cfg->rooms_default_max_clients, w->cfg->rooms_max_per_client,
                               &seat_max);
    if (rc == HUB_ESEAT)
        return hub_vm_wait_seat(hub_vm_of(L), L, cid, room, seat_max);
    return hub_lua_join_result(hub_vm_of(L), L, cid, room, rc);
}

/* gohub.rooms.leave(client_id, room_id) → true | nil, err */
static int l_room_leave(lua_State *L)
{
    uint64_t cid = check_client(L, 1);
    int valid, deleted;
    const char *room = check_room(L, 2, &valid);
    hub_worker_t *w = worker_of(L);
    if (!valid)
        return fail(L, "invalid_room_id");
    int rc = cid ? hub_reg_room_leave(room, cid, &deleted) : HUB_ENOTMEMBER;
    if (rc != 0)
        return fail(L, reason_of(rc));
    if (!deleted || hub_cluster_enabled()) /* other nodes may still have members */
        presence(w, "member_left", room, cid);
    hub_conn_t *c = hub_worker_conn(w, cid);
    if (c != NULL)
        hub_vm_hook(hub_vm_of(L), c, "on_leave", room, 0);
    lua_pushboolean(L, 1);
    return 1;
}

/* A room as the cluster knows it: this node's (with every node's member
 * count) or, when only other nodes have it, as they announced it. 0 or
 * HUB_ENOTFOUND; free out with hub_reg_info_free. */
static int cluster_room(const char *id, hub_room_info_t *out)
{
    if (hub_reg_room_get(id, out) == 0) {
        out->member_count += hub_cluster_room_count(id);
        return 0;
    }
    return hub_cluster_room_info(id, out) ? 0 : HUB_ENOTFOUND;
}

static int l_room_get(lua_State *L)
{
    int valid;
    const char *id = check_room(L, 1, &valid);
    if (!valid)
        return fail(L, "not_found");
    hub_room_info_t *r = box_new(L, sizeof(*r), box_free_info);
    if (cluster_room(id, r) != 0)
        return fail(L, "not_found");
    push_room(L, r);
    box_done(r);
    return 1;
}

static int l_room_list(lua_State *L)
{
    room_list_t *l = box_new(L, sizeof(*l), box_free_rooms);
    l->n = hub_cluster_rooms_merge(&l->v, hub_reg_room_list(&l->v));
    lua_createtable(L, (int)l->n, 0);
    for (size_t i = 0; i < l->n; i++) {
        push_room(L, &l->v[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    box_done(l);
    mark_array(L);
    return 1;
}

static int l_room_members(lua_State *L)
{
    int valid;
    const char *id = check_room(L, 1, &valid);
    hub_worker_t *w = worker_of(L);
    hub_room_info_t r;
    if (!valid)
        return fail(L, "not_found");
    member_list_t *l = box_new(L, sizeof(*l), box_free_members);
    /* this node's members, then the other nodes' */
    int here = hub_reg_room_members(id, &l->m, &l->n) == 0;
    l->rn = hub_cluster_room_members(id, &l->rm);
    if (!here && l->rn == 0) {
        if (!hub_cluster_room_info(id, &r)) /* another node's room may be empty */
            return fail(L, "not_found");
        hub_reg_info_free(&r);
    }
    size_t n = l->n, rn = l->rn;
    lua_createtable(L, (int)(n + rn), 0);
    for (size_t i = 0; i < n; i++) {
        push_member(L, w->srv, l->m[i].conn_id, l->m[i].user_id);
        lua_rawseti(L, -2, (int)i + 1);
    }
    for (size_t i = 0; i < rn; i++) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, l->rm[i].client_id);
        lua_setfield(L, -2, "client_id");
        lua_pushstring(L, l->rm[i].user_id);
        lua_setfield(L, -2, "user_id");
        lua_rawseti(L, -2, (int)(n + i) + 1);
    }
    box_done(l);
    mark_array(L);
    return 1;
}

static int l_room_count(lua_State *L)
{
    int valid;
    const char *id = check_room(L, 1, &valid);
    hub_room_info_t r;
    if (!valid || cluster_room(id, &r) != 0)
        return fail(L, "not_found");
    lua_pushinteger(L, r.member_count);
    hub_reg_info_free(&r);
    return 1;
}

static int l_room_is_member(lua_State *L)
{
    uint64_t cid = check_client(L, 1);
    int valid;
    const char *room = check_room(L, 2, &valid);
    lua_pushboolean(L, valid && cid && hub_reg_room_is_member(room, cid));
    return 1;
}

/* gohub.rooms.valid_id(id) → boolean: the server's rule for room ids */
static int l_room_valid_id(lua_State *L)
{
    size_t n;
    const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
    lua_pushboolean(L, s != NULL && hub_reg_valid_room_id(s, n));
    return 1;
}

static int l_room_of(lua_State *L)
{
    uint64_t cid = check_client(L, 1);
    strv_t *l = box_new(L, sizeof(*l), box_free_strv);
    l->n = cid ? hub_reg_client_rooms(cid, &l->v) : 0;
    lua_createtable(L, (int)l->n, 0);
    for (size_t i = 0; i < l->n; i++) {
        lua_pushstring(L, l->v[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    box_done(l);
    mark_array(L);
    return 1;
}

/* gohub.rooms.publish(room_id, type, data [, exclude_client_id]) → n | nil, err */
static int l_room_publish(lua_State *L)
{
    hub_vm_t *vm = hub_vm_of(L); /* once: it runs for every room message */
    int valid;
    const char *room = check_room(L, 1, &valid);
    const char *type = luaL_checkstring(L, 2);
    uint64_t ex = lua_isnoneornil(L, 4) ? 0 : client_arg(L, vm, 4);
    if (!valid)
        return fail(L, "not_found");
    hub_frame_t *f = vm_build(L, vm, type, 3);
    int n = hub_fanout_room(vm_worker(L, vm), room, f, ex);
    hub_frame_release(f);
    if (n == HUB_ENOTFOUND && hub_cluster_room_count(room) > 0)
        n = 0; /* only other nodes have it: published to them */
    if (n < 0)
        return fail(L, "not_found");
    lua_pushinteger(L, n);
    return 1;
}

/* ---- permissions, errors, request ----------------------------------------- */

/* gohub.can(client, permission [, target]) → boolean (asks permissions.can).
 * In Lua: a handler calls it on every message, and a Lua-to-Lua call costs
 * a fraction of a C function calling back into Lua. */
static const char can_src[] =
    "local policy, type, error = ...\n"
    "return function(client, permission, target)\n"
    "  if type(client) ~= 'table' then\n"
    "    error(\"bad argument #1 to 'can' (table expected, got \" .. type(client) .. ')', 2)\n"
    "  end\n"
    "  local pt = type(permission)\n"
    "  if pt ~= 'string' and pt ~= 'number' then\n"
    "    error(\"bad argument #2 to 'can' (string expected, got \" .. pt .. ')', 2)\n"
    "  end\n"
    "  local can = policy[1]\n"
    "  if can == nil then\n"
    "    error('gohub.can: no permissions module loaded', 2)\n"
    "  end\n"
    "  return can(client, permission, target) and true or false\n"
    "end\n";

static void push_can(lua_State *L)
{
    if (luaL_loadbuffer(L, can_src, sizeof(can_src) - 1, "=gohub.can") != 0)
        lua_error(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, hub_vm_of(L)->policy_ref);
    lua_getglobal(L, "type");
    lua_getglobal(L, "error");
    lua_call(L, 3, 1);
}

/* gohub.error(code, message [, details]) → nil, code, message, details */
static int l_error(lua_State *L)
{
    luaL_checkinteger(L, 1);
    lua_settop(L, 3);
    lua_pushnil(L);
    lua_insert(L, 1);
    return 4;
}

void hub_lua_push_raw(lua_State *L, const char *s, size_t n)
{
    /* a userdata holding the bytes: one allocation, no string to intern */
    memcpy(lua_newuserdata(L, n), s, n);
    lua_rawgeti(L, LUA_REGISTRYINDEX, hub_vm_of(L)->raw_mt_ref);
    lua_setmetatable(L, -2);
}

/* gohub.raw(key) → the request's data[key] as sent (raw JSON), or nil */
static int l_raw(lua_State *L)
{
    const char *key = luaL_checkstring(L, 1);
    const hub_json_env_t *env = hub_vm_of(L)->env;
    const hub_env_member_t *m = env && env->data ? hub_json_env_member(env, key) : NULL;
    const char *vs;
    size_t vl;
    if (m != NULL)
        hub_lua_push_raw(L, m->val, m->val_len);
    else if (env && env->data && env->overflow &&
             hub_json_member(env->data, env->data_len, key, &vs, &vl))
        hub_lua_push_raw(L, vs, vl); /* a member the decoder had no room to record */
    else
        lua_pushnil(L);
    return 1;
}

/* ---- log, counters, time ---------------------------------------------------- */

static int l_log(lua_State *L)
{
    const char *lvl = luaL_checkstring(L, 1);
    const char *msg = luaL_checkstring(L, 2);
    int level = hub_log_level_parse(lvl);
    if (level < 0)
        return luaL_argerror(L, 1, "level must be debug, info, warn or error");
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    if (!hub_log_enabled(level))
        return 0;
    hub_vm_t *vm = hub_vm_of(L);
    char fields[1024] = "";
    size_t fl = 0;
    if (lua_istable(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3) && fl < sizeof(fields) - 64) {
            if (lua_type(L, -2) == LUA_TSTRING) {
                const char *k = lua_tostring(L, -2);
                const char *v = lua_type(L, -1) == LUA_TBOOLEAN
                                    ? (lua_toboolean(L, -1) ? "true" : "false")
                                    : (lua_isstring(L, -1) ? lua_tostring(L, -1)
                                                           : luaL_typename(L, -1));
                int n = snprintf(fields + fl, sizeof(fields) - fl, "%s%s=%s", fl ? ";" : "", k,
                                 v ? v : "");
                if (n > 0)
                    fl += (size_t)n < sizeof(fields) - fl ? (size_t)n : sizeof(fields) - fl - 1;
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
    }
    char cid[HUB_CLIENT_ID_MAX] = "";
    if (vm->cur)
        hub_conn_client_id(vm->cur, cid, sizeof(cid));
    hub_log(level, msg, "source=lua handler=%s client_id=%s fields=%s",
            vm->cur_type ? vm->cur_type : "", cid, fields);
    return 0;
}

/* gohub.count(name [, n]) → this worker's new value, or nil, "out_of_range"
 * (the counter keeps its value) when it would pass ±2^53; n (default 1)
 * must be an integer of at most that magnitude */
static int l_count(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_Number n = luaL_optnumber(L, 2, 1);
    if (!(n >= -(double)HUB_EXACT_MAX && n <= (double)HUB_EXACT_MAX) || n != floor(n))
        return luaL_argerror(L, 2, "integer from -2^53 to 2^53 expected");
    int64_t by = (int64_t)n;
    hub_worker_t *w = worker_of(L);
    int64_t *v = hub_strmap_get(&w->counters, name);
    if (v == NULL) {
        if (w->counters.n >= 10000)
            return fail(L, "too_many_counters");
        v = calloc(1, sizeof(*v));
        if (v == NULL || hub_strmap_put(&w->counters, name, v) != 0) {
            free(v);
            return fail(L, "out_of_memory");
        }
    }
    int64_t sum = *v + by; /* both within ±2^53: no overflow */
    if (sum > HUB_EXACT_MAX || sum < -HUB_EXACT_MAX)
        return fail(L, "out_of_range");
    *v = sum;
    lua_pushnumber(L, (lua_Number)sum);
    return 1;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)hub_now_ms());
    return 1;
}

static int l_node_id(lua_State *L)
{
    lua_pushstring(L, worker_of(L)->srv->node_id);
    return 1;
}

/* ---- json ---------------------------------------------------------------- */

static int l_json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    char err[160];
    /* its own buffer (pushing the string may run a finalizer that
     * encodes), boxed: pushing the string may raise */
    hub_lua_buf_t *out = box_new(L, sizeof(*out), box_free_buf);
    if (hub_lua_encode(hub_vm_of(L), 1, out, err, sizeof(err)) != 0) {
        box_done(out);
        return fail(L, err);
    }
    lua_pushlstring(L, out->p, out->len);
    box_done(out);
    return 1;
}

/* gohub.json.decode(s) → value | nil, err: s must be strict JSON in UTF-8
 * (a Lua string may be any bytes; a message from a client was checked) */
static int l_json_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *err;
    if (!hub_utf8_valid((const unsigned char *)s, n))
        return fail(L, "invalid UTF-8");
    if (hub_lua_decode(hub_vm_of(L), s, n, &err) != 0)
        return fail(L, err);
    return 1;
}

static int l_json_array(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    mark_array(L);
    return 1;
}

/* gohub.json.raw(text) → a raw value, sent verbatim | nil, "invalid JSON":
 * text must be one strict JSON value in UTF-8, so what is sent parses */
static int l_json_raw(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    if (!hub_json_valid(s, n))
        return fail(L, "invalid JSON");
    hub_lua_push_raw(L, s, n);
    return 1;
}

/* ---- registration -------------------------------------------------------- */

static const luaL_Reg gohub_funcs[] = {
    { "send", l_send },         { "send_user", l_send_user }, { "broadcast", l_broadcast },
    { "close", l_close },       { "error", l_error },         { "raw", l_raw },
    { "log", l_log },           { "count", l_count },         { "now", l_now },
    { "node_id", l_node_id },   { "authenticate", l_authenticate },
    { NULL, NULL }, /* can: push_can */
};

static const luaL_Reg room_funcs[] = {
    { "create", l_room_create },       { "delete", l_room_delete },   { "join", l_room_join },
    { "leave", l_room_leave },         { "get", l_room_get },         { "list", l_room_list },
    { "members", l_room_members },     { "count", l_room_count },
    { "is_member", l_room_is_member }, { "of", l_room_of },           { "publish", l_room_publish },
    { "valid_id", l_room_valid_id },
    { NULL, NULL },
};

static const luaL_Reg json_funcs[] = {
    { "encode", l_json_encode }, { "decode", l_json_decode }, { "array", l_json_array },
    { "raw", l_json_raw },       { NULL, NULL },
};

static const struct {
    const char *name;
    int code;
} error_codes[] = {
    { "UNKNOWN", 1000 },          { "INVALID_FORMAT", 1001 },   { "INVALID_MESSAGE_ID", 1002 },
    { "SERVER_ERROR", 1003 },     { "TIMEOUT", 1004 },          { "RATE_LIMITED", 1005 },
    { "UNKNOWN_TYPE", 1006 },     { "UNAUTHORIZED", 2000 },     { "FORBIDDEN", 2001 },
    { "TOKEN_EXPIRED", 2002 },    { "INVALID_TOKEN", 2003 },    { "ROOM_NOT_FOUND", 3000 },
    { "ROOM_EXISTS", 3001 },      { "ROOM_FULL", 3002 },        { "NOT_IN_ROOM", 3003 },
    { "ALREADY_IN_ROOM", 3004 },  { "CLIENT_NOT_FOUND", 4000 }, { "CLIENT_OFFLINE", 4001 },
    { "MESSAGE_TOO_LARGE", 4002 },
};

static void set_bool(lua_State *L, const char *k, int v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

/* package.preload.gohub: builds the module table. Stack: out module. */
static int luaopen_gohub(lua_State *L)
{
    hub_vm_t *vm = hub_vm_of(L);
    lua_newtable(L);
    luaL_register(L, NULL, gohub_funcs);
    push_can(L);
    lua_setfield(L, -2, "can");
    lua_newtable(L);
    luaL_register(L, NULL, room_funcs);
    lua_setfield(L, -2, "rooms");
    lua_newtable(L);
    luaL_register(L, NULL, json_funcs);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->null_ref);
    lua_setfield(L, -2, "null");
    lua_setfield(L, -2, "json");
    lua_createtable(L, 0, (int)HUB_ARRAY_LEN(error_codes));
    for (size_t i = 0; i < HUB_ARRAY_LEN(error_codes); i++) {
        lua_pushinteger(L, error_codes[i].code);
        lua_setfield(L, -2, error_codes[i].name);
    }
    lua_setfield(L, -2, "errors");
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->config_ref);
    lua_setfield(L, -2, "config");
    return 1;
}

static int null_tostring(lua_State *L)
{
    lua_pushliteral(L, "null");
    return 1;
}

/* tostring(raw) → its JSON text */
static int raw_tostring(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TUSERDATA);
    lua_pushlstring(L, lua_touserdata(L, 1), lua_objlen(L, 1));
    return 1;
}

void hub_lua_open_gohub(hub_vm_t *vm)
{
    lua_State *L = vm->L;
    /* json.null: a unique table whose tostring is "null" */
    lua_newtable(L);
    lua_newtable(L);
    lua_pushcfunction(L, null_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_setmetatable(L, -2);
    lua_newtable(L);
    vm->policy_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    vm->null_ptr = lua_topointer(L, -1);
    vm->null_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__jsontype");
    vm->array_mt_ptr = lua_topointer(L, -1);
    vm->array_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    lua_pushliteral(L, "raw");
    lua_setfield(L, -2, "__jsontype");
    lua_pushcfunction(L, raw_tostring);
    lua_setfield(L, -2, "__tostring");
    vm->raw_mt_ptr = lua_topointer(L, -1);
    vm->raw_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
    vm->box_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    const hub_config_t *cfg = vm->w ? vm->w->cfg : NULL;
    lua_newtable(L);
    lua_newtable(L);
    set_bool(L, "auto_create", cfg ? cfg->rooms_auto_create : 1);
    lua_pushinteger(L, cfg ? cfg->rooms_default_max_clients : 0);
    lua_setfield(L, -2, "default_max_clients");
    set_bool(L, "presence_events", cfg ? cfg->rooms_presence_events : 1);
    set_bool(L, "members_only_send", cfg ? cfg->rooms_members_only_send : 1);
    set_bool(L, "echo_to_sender", cfg ? cfg->rooms_echo_to_sender : 0);
    lua_pushinteger(L, cfg ? cfg->rooms_max_per_client : 128);
    lua_setfield(L, -2, "max_rooms_per_client");
    lua_setfield(L, -2, "rooms");
    vm->config_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_gohub);
    lua_setfield(L, -2, "gohub");
    lua_pop(L, 2);
}
