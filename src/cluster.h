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
 * (every node delivers to its own), and heartbeats. The bytes are the
 * encoded WebSocket frame, so a message is encoded once in the cluster.
 *
 * Without a cluster every function is a cheap no-op. Threads: start/stop on
 * the main thread; the rest from any thread. */
#ifndef HUB_CLUSTER_H
#define HUB_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

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
