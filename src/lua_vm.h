/* lua_vm.h: one LuaJIT state per worker: sandboxed, memory-capped, loaded
 * from lua.path (permissions.lua, hooks.lua, handlers/<type>.lua), and the /ws
 * message dispatch into it. A reload builds a fresh VM and swaps it in only
 * if everything loaded. Worker thread, except where noted. */
#ifndef HUB_LUA_VM_H
#define HUB_LUA_VM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common.h"

typedef struct hub_vm_s hub_vm_t;

/* Main thread, at boot: checks that LuaJIT is a GC64 build (a custom
 * allocator needs it). Returns 0, or -1 with the reason in err. */
int hub_vm_check_runtime(char *err, size_t errlen);

/* Builds a VM for worker w (any thread; it is then used only by w).
 * gen tags the connections' client tables. NULL with "file:line: reason"
 * in err when anything fails to load. */
hub_vm_t *hub_vm_new(hub_worker_t *w, uint32_t gen, char *err, size_t errlen);

/* Closes the VM; NULL allowed. */
void hub_vm_free(hub_vm_t *vm);

/* Handles one text message from c: envelope checks, dispatch to
 * lua/handlers/<message_type>.lua, the reply rule and the error codes of
 * the protocol. */
void hub_vm_dispatch(hub_vm_t *vm, hub_conn_t *c, const uint8_t *p, size_t n);

/* Answers message p..p+n without running it: error code with message,
 * request_id taken from its message_id when that is readable. */
void hub_vm_refuse(hub_conn_t *c, const uint8_t *p, size_t n, int code, const char *message);

/* After the upgrade: hooks.on_connect. Returns 0 to accept, or a close code
 * (reason written into reason) to refuse. */
int hub_vm_on_connect(hub_vm_t *vm, hub_conn_t *c, char *reason, size_t rlen);

/* When a WebSocket connection ends: leaves its rooms (member_left, on_leave)
 * and runs on_disconnect; drops its client table. vm may be NULL. */
void hub_vm_on_close(hub_vm_t *vm, hub_conn_t *c);

/* Main thread (gohub -t): loads the Lua code under cfg->lua_path into a
 * throwaway state, as a worker would. Returns 0, or -1 with "file:line:
 * reason" in err. */
int hub_vm_check_code(const hub_config_t *cfg, char *err, size_t errlen);

/* Prints the gohub module's API, one dotted name per line, sorted (used by
 * the spec that keeps the busted fake in step). Returns 0 or -1. */
int hub_vm_dump_api(FILE *out);

/* The answer (HUB_SEAT_*) to the seat in room for connection seat_id that
 * the parked handler of connection conn_id asked for with ticket
 * (seats.h): joins seat_id to room and resumes the handler, which then
 * runs what its connection received meanwhile. A seat nobody waits for any
 * more goes back to the owner. */
void hub_vm_seat_answer(hub_worker_t *w, uint64_t conn_id, uint64_t seat_id, const char *room,
                        uint32_t ticket, int verdict);

/* Main thread (watchdog timer): stops a handler of worker w that has run
 * past lua.time_limit_ms by arming an interrupt hook on its state. */
void hub_vm_watchdog(hub_worker_t *w);

/* Worker thread (or main before the worker runs), whenever w->cfg is set:
 * hands the watchdog the time limit and lua.jit of w's configuration, so
 * that it never reads w->cfg, which a reload swaps on the worker. */
void hub_vm_watch_config(hub_worker_t *w);

#endif
