/* cluster_ops.h: operations that ask every node of the cluster: the whole
 * cluster's client list for GET /api/clients (a query to every live node,
 * answers gathered with a deadline), and delete_room / DELETE /api/rooms/{id}
 * on every node (HUB_CL_ROOM_DEL: each node deletes its copy and tells its
 * own members room_deleted). Without a cluster, nothing here is used but
 * hub_ops_room_delete, which then deletes this node's room as it always did.
 *
 * GET /api/clients in a cluster runs on the asking node's bus thread in two
 * rounds over the live nodes, ordered by node id: every node's client count
 * (a node not answering within HUB_OPS_COUNT_MS is missing), then from each
 * node the slice of its own list (ordered by connection time) that the page
 * (?offset=&limit= over the nodes in that order) needs, until
 * HUB_OPS_DEADLINE_MS after the start (a node not answering is missing).
 * Nodes answer a count on the bus thread and a slice on a worker. */
#ifndef HUB_CLUSTER_OPS_H
#define HUB_CLUSTER_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define HUB_OPS_COUNT_MS    1000  /* the count round's deadline */
#define HUB_OPS_DEADLINE_MS 2000  /* the whole query's deadline */
#define HUB_OPS_QUERIES_MAX 16    /* client queries one node gathers at once */

/* Main thread, before the cluster starts: the server whose registry and
 * workers the bus thread's work uses. */
void hub_ops_init(hub_server_t *srv);

/* Worker thread: deletes room id on this node and, in a cluster, on every
 * node. In a cluster HUB_CL_ROOM_DEL goes out before this node's copy is
 * deleted, so every other node deletes its own copy (its members get
 * room_deleted) before it hears this node's room go (after which its
 * members would be told member_left for this node's members). A room that
 * only other nodes have (as the membership directory says) is deleted
 * there. This node's members get room_deleted. Returns the number of this
 * node's members told, or HUB_ENOTFOUND when no node has the room. */
int hub_ops_room_delete(hub_worker_t *w, const char *id);

/* The answer to hub_ops_clients, on the asking worker's thread: status 200
 * with the JSON body {"total_clients","clients":[…],"missing_nodes":[…]},
 * or an error status (503 too many queries at once, 500 out of memory) with
 * an error body. body (len bytes) is valid during the call only. ctx is the
 * caller's and the callee frees it. */
typedef void (*hub_ops_done_fn)(hub_worker_t *w, uint64_t conn_id, void *ctx, int status,
                                const char *body, size_t len);

/* Worker thread, in a cluster: starts gathering one page (offset, limit <=
 * 1000) of the cluster's clients for conn_id. done(w, conn_id, ctx, ...)
 * runs later on w's thread, once (never within this call); ctx (malloc'd)
 * belongs to hub_ops from here and is freed with free() when the answer
 * cannot be delivered (the worker stopped). Returns 0, or HUB_ENOMEM /
 * HUB_ECLOSED (no cluster): then nothing happens and the caller keeps ctx. */
int hub_ops_clients(hub_worker_t *w, uint64_t conn_id, size_t offset, size_t limit,
                    hub_ops_done_fn done, void *ctx);

/* Bus thread: a HUB_CL_QUERY / HUB_CL_REPLY addressed to this node, or a
 * HUB_CL_ROOM_DEL (arg: room id) from origin. p/n is the payload. */
void hub_ops_on_bus(int kind, const char *origin, const char *arg, const uint8_t *p, size_t n);

/* Bus thread, when the cluster stops: closes timers, drops what waits. */
void hub_ops_bus_stop(void);

#endif
