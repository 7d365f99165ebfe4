/* cluster.h: this node's part in a cluster (cluster.enabled with a redis or
 * nats bus). A bus thread with its own loop runs the transport (bus.h),
 * numbers every message it publishes (origin node, epoch, sequence), drops
 * its own echoes and duplicates within a window, keeps the table of live
 * nodes from their heartbeats, and delivers what other nodes publish to this
 * node's workers through their inboxes.
 *
 * What crosses the bus: a room's messages (subject room.<id>, subscribed
 * only while the node has local members), broadcasts, messages to one
 * client of another node (node.<id>), messages to a user's connections
 * (every node delivers to its own), heartbeats, and the user and
 * membership directories (which users, rooms and room members each node
 * has; queried below). The bytes are the
 * encoded WebSocket frame, so a message is encoded once in the cluster.
 *
 * Without a cluster every function is a cheap no-op. Threads: start/stop on
 * the main thread; the rest from any thread. */
#ifndef HUB_CLUSTER_H
#define HUB_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common.h"
#include "inbox.h"
#include "registry.h"

/* What a bus message asks the receiving node to do. */
enum {
    HUB_CL_ROOM = 'r',  /* arg: room id; deliver to local members */
    HUB_CL_ALL = 'a',   /* deliver to every local connection */
    HUB_CL_CONN = 'c',  /* arg: client id of the receiving node */
    HUB_CL_USER = 'u',  /* arg: user id; deliver to its local connections */
    HUB_CL_BEAT = 'h',  /* heartbeat; arg: the sender's connection count */
    HUB_CL_BYE = 'b',   /* the sender stops */
    HUB_CL_USER_ON = '+',  /* arg: a user id now connected to the sender */
    HUB_CL_USER_OFF = '-', /* arg: a user id no longer connected to the sender */
    HUB_CL_USERS = 's',    /* payload: user ids connected to the sender, '\n'-separated */
    /* the membership directory: fields are "<decimal length>:<bytes>" */
    HUB_CL_ROOM_ON = 'C',  /* arg: room id; payload: name, max_clients (decimal) */
    HUB_CL_ROOM_OFF = 'D', /* arg: room id; the room and its members left the sender */
    HUB_CL_JOIN = 'J',     /* arg: room id; payload: client id, user id ("" = anonymous) */
    HUB_CL_LEAVE = 'L',    /* arg: room id; payload: client id */
    HUB_CL_ROOMS = 'm',    /* arg: "1" on a snapshot's first message (the receiver drops
                            * what it knew of the sender); payload: records
                            * 'R' room, name, max_clients | 'M' room, client id, user id */
    HUB_CL_SNAP_ASK = 'q', /* arg: a node id; that node sends its snapshots again */
    HUB_CL_ROOM_DEL = 'X', /* arg: room id; every node deletes its copy (cluster_ops.c) */
    /* node-addressed: subject node.<arg>, arg the receiving node's id */
    HUB_CL_SEAT_ASK = 'Q',  /* a seat in a room with max_clients (seats.c) */
    HUB_CL_SEAT_ANS = 'G',  /* the room owner's answer */
    HUB_CL_SEAT_FREE = 'F', /* a granted seat that will not be used */
    HUB_CL_QUERY = 'K',     /* a question about the node's state (cluster_ops.c) */
    HUB_CL_REPLY = 'k',     /* its answer */
};

/* Main thread, before the workers start: starts the bus thread when the
 * config asks for a cluster. Returns 0 or HUB_E* (bad bus configuration). */
int hub_cluster_start(hub_server_t *srv);

/* Main thread, after the workers are joined: says goodbye, stops the bus
 * thread and frees everything. */
void hub_cluster_stop(void);

/* 1 when a bus is configured. */
int hub_cluster_enabled(void);

/* HUB_BUS_DISABLED, HUB_BUS_DOWN or HUB_BUS_CONNECTED. */
int hub_cluster_state(void);

/* Publishes the frame's bytes for kind (HUB_CL_ROOM / ALL / CONN / USER)
 * with arg (room id, client id, user id; NULL for ALL). Copies; returns at
 * once. No-op without a cluster. */
void hub_cluster_publish(int kind, const char *arg, const hub_frame_t *f);

/* Sends payload p (n bytes, copied) as kind (HUB_CL_ROOM_DEL or a
 * node-addressed kind) with arg. Any thread; on the bus thread it is sent
 * at once, elsewhere posted there (in order). No-op without a cluster. */
void hub_cluster_send(int kind, const char *arg, const void *p, size_t n);

/* Posts m to run on the bus thread (its run() gets an opaque owner).
 * Returns 0, or HUB_ECLOSED without a cluster (the caller keeps m). */
int hub_cluster_post(hub_inbox_msg_t *m);

/* Payload fields "<decimal length>:<bytes>", so any byte may appear.
 * put appends s (n bytes) to buf (len used of cap); returns the new length,
 * or 0 when it does not fit. get reads the field at *p into out
 * (NUL-terminated) and moves *p past it; 0, or -1 when it is malformed or
 * does not fit in outlen. */
size_t hub_cluster_field_put(uint8_t *buf, size_t len, size_t cap, const char *s, size_t n);
int hub_cluster_field_get(const uint8_t **p, const uint8_t *end, char *out, size_t outlen);

/* Bus thread: its loop (for timers of the parts that run there). */
uv_loop_t *hub_cluster_loop(void);

/* Bus thread: the owner of key (a room id), chosen by rendezvous hashing
 * over the live nodes that can own: every other live node, and this one
 * once its bus has been up for heartbeat + 1 s (by then it has heard every
 * live node, so no two nodes both take themselves for the owner). Writes
 * the owner's id to out; returns 1 when it is this node, 2 another node,
 * 0 when no node can own yet (this one still settling and alone). */
int hub_cluster_owner(const char *key, char *out, size_t outlen);

/* A room gained its first (delta +1) or lost its last (-1) local member:
 * the node (un)subscribes its subject. No-op without a cluster. */
void hub_cluster_room_use(const char *room_id, int delta);

/* A user got its first (+1) or lost its last (-1) connection on this node:
 * the other nodes' user directories follow. No-op without a cluster. */
void hub_cluster_user_use(const char *user_id, int delta);

/* 1 when user_id has a connection on another live node (as the nodes
 * announced: a directory kept from their deltas and snapshots). */
int hub_cluster_user_remote(const char *user_id);

/* 1 when node_id (len bytes) is this node or a live node of the cluster. */
int hub_cluster_node_alive(const char *node_id, size_t len);

/* 1 when client_id (NUL-terminated) names a client of another live node:
 * a message to it goes through the bus (best effort: that node drops it
 * when the client has gone). */
int hub_cluster_client_reachable(const char *client_id);

/* Registry hooks, called with the registry lock held (they only post to the
 * bus thread, in the registry's order): a room appeared on this node
 * (HUB_CL_ROOM_ON, with name and max_clients) or went away (HUB_CL_ROOM_OFF),
 * a connection joined (HUB_CL_JOIN, user_id NULL = anonymous) or left
 * (HUB_CL_LEAVE). No-op without a cluster. */
void hub_cluster_room_event(int kind, const char *room_id, uint64_t conn_id, const char *user_id,
                            const char *name, uint32_t max_clients);

/* A member of a room on another node (both strings owned). */
typedef struct {
    char *client_id;
    char *user_id;   /* "anon-<client id>" for an anonymous connection */
} hub_cluster_member_t;

/* The members of room_id on other live nodes: *out is malloc'd (free with
 * hub_cluster_members_free); returns how many (0: *out NULL). */
size_t hub_cluster_room_members(const char *room_id, hub_cluster_member_t **out);
void hub_cluster_members_free(hub_cluster_member_t *v, size_t n);

/* The number of members of room_id on other live nodes. */
uint32_t hub_cluster_room_count(const char *room_id);

/* The number of members of room_id on this node and every other live node. */
uint32_t hub_cluster_room_total(const char *room_id);

/* 1 when client_id (of this node or another) is a member of room_id, as
 * this node's registry or its directory of the other nodes says. */
int hub_cluster_is_member(const char *room_id, const char *client_id);

/* 1 when some other live node has room_id: fills out (id and name owned,
 * free with hub_reg_info_free) with the name and max_clients the first such
 * node announced and the remote member count. 0 otherwise. */
int hub_cluster_room_info(const char *room_id, hub_room_info_t *out);

/* Turns this node's room list (hub_reg_room_list: *v, n) into the cluster's:
 * adds the remote members to each room's member_count and appends the rooms
 * that exist only on other nodes. Returns the new count (*v may move; on
 * out of memory the rooms that fit). */
size_t hub_cluster_rooms_merge(hub_room_info_t **v, size_t n);

typedef struct {
    char node_id[72];
    uint32_t clients;  /* as of its last heartbeat (this node: now) */
    int self;
} hub_cluster_node_t;

/* Fills out with up to max live nodes (this node first); returns how many
 * there are. */
size_t hub_cluster_nodes(hub_cluster_node_t *out, size_t max);

/* Writes the bus subject for kind and arg into out (for transports' tests
 * and the core): "room.<id>", "all", "node.<id>", "user", "ctl"; '.' inside
 * an id becomes '~' (ids never hold '~'), so a subject is always a valid
 * NATS subject. Returns the length or 0 when it does not fit. */
size_t hub_cluster_subject(int kind, const char *arg, char *out, size_t outlen);

#endif
