/* fanout.h: delivering one encoded frame to many connections: a room's
 * members, every connection, one connection or every connection of a user,
 * on any worker. The calling worker writes to its own connections directly
 * and posts one message per other worker that has recipients; that worker
 * copies the bytes once into its own frame. Per-sender order is kept (each
 * worker pair's inbox is FIFO). Worker thread. */
#ifndef HUB_FANOUT_H
#define HUB_FANOUT_H

#include <stdint.h>

#include "common.h"
#include "registry.h"

/* Returns the number of recipients (all workers) or HUB_ENOTFOUND. */
int hub_fanout_room(hub_worker_t *w, const char *room_id, hub_frame_t *f, uint64_t exclude);

/* Every WebSocket connection of the node except exclude (0 = none). Returns
 * the local recipient count. */
int hub_fanout_all(hub_worker_t *w, hub_frame_t *f, uint64_t exclude);

/* One connection: 0 or HUB_EOFFLINE. */
int hub_fanout_conn(hub_worker_t *w, uint64_t conn_id, hub_frame_t *f);

/* One connection by its client id (len bytes): on this node, or through
 * the cluster bus on another live node (best effort: that node drops it
 * when the client has gone). 0 or HUB_EOFFLINE. */
int hub_fanout_client(hub_worker_t *w, const char *client_id, size_t len, hub_frame_t *f);

/* Every connection of user_id: returns the local count; *forwarded is 1
 * when other nodes have connections of it too (they get it via the bus). */
int hub_fanout_user(hub_worker_t *w, const char *user_id, hub_frame_t *f, int *forwarded);

/* Delivers to an explicit list of (conn id, worker) pairs. */
void hub_fanout_ids(hub_worker_t *w, const uint64_t *ids, const int *workers, size_t n,
                    hub_frame_t *f);

/* room_deleted {room_id} to the n members a deleted room had (as
 * hub_reg_room_delete returned them). Returns n or HUB_E*. */
int hub_fanout_room_deleted(hub_worker_t *w, const char *room_id, const hub_member_t *m,
                            size_t n);

/* Any thread (the bus thread: another node deleted the room): the same to
 * this node's n members m, through the workers' inboxes. */
int hub_fanout_room_deleted_remote(hub_server_t *srv, const char *room_id,
                                   const hub_member_t *m, size_t n);

/* The frame of a presence event (member_joined / member_left) {room_id,
 * client_id, user_id}: caller releases; NULL when out of memory or the ids
 * do not fit. Any thread. */
hub_frame_t *hub_fanout_presence_frame(const char *type, const char *room, const char *client_id,
                                      const char *user_id);

/* member_joined / member_left {room_id, client_id, user_id} about conn_id
 * to the room's other members. Returns the recipient count or HUB_E*. */
int hub_fanout_presence(hub_worker_t *w, const char *type, const char *room, uint64_t conn_id,
                        const char *user_id);

/* Asks the worker owning conn_id to close it with code/reason. 0 or
 * HUB_EOFFLINE. */
int hub_fanout_close(hub_worker_t *w, uint64_t conn_id, uint16_t code, const char *reason);

/* Any thread (the bus thread): delivers frame bytes p..p+n that another
 * node published for kind (HUB_CL_ROOM / ALL / CONN / USER, cluster.h) and
 * arg to this node's recipients, through the workers' inboxes. */
void hub_fanout_remote(hub_server_t *srv, int kind, const char *arg, const uint8_t *p, size_t n,
                       uint8_t mtype);

#endif
