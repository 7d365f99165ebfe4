/* reload.h: live reload of the Lua code. A trigger (a file change under
 * lua.path after a quiet period, SIGHUP, or POST /api/reload) makes every
 * worker build a fresh VM (prepare); only when all of them loaded is the new
 * code swapped in everywhere (commit), else every worker keeps its old VM
 * (abort) and the error is logged and returned to the API caller. A swap
 * happens between two messages of a worker, so no message is lost or
 * handled twice. Main thread, except hub_reload_request (any thread). */
#ifndef HUB_RELOAD_H
#define HUB_RELOAD_H

#include <stdint.h>

#include "common.h"

/* Starts the file watch (when lua.watch). Returns 0 or a UV error. */
int hub_reload_init(hub_server_t *s);

/* Starts a Lua reload now (or right after the one in progress). */
void hub_reload_trigger(hub_server_t *s, const char *why);

/* Like hub_reload_trigger, but first re-reads the config file and applies
 * the keys that can change live (SIGHUP, the API). A bad file fails the
 * reload: the running config and code stay. */
void hub_reload_all(hub_server_t *s, const char *why);

/* Any thread: asks for a config + Lua reload whose result is answered as the HTTP
 * response of connection conn_id on worker index. Returns 0 (an answer will
 * come), HUB_ENOMEM or HUB_ECLOSED (the server is stopping): none will. */
int hub_reload_request(hub_server_t *s, int worker, uint64_t conn_id);

/* Closes the watch handles (shutdown). */
void hub_reload_close(hub_server_t *s);

/* Frees the reload state once the workers are joined. */
void hub_reload_free(hub_server_t *s);

#endif
