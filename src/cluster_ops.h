/* cluster_ops.h: operations that ask every node of the cluster: the whole
 * cluster's client list for GET /api/clients (a query to every live node,
 * answers gathered with a deadline), and delete_room / DELETE /api/rooms/{id}
 * on every node (HUB_CL_ROOM_DEL: each node deletes its copy and tells its
 * own members room_deleted). Without a cluster, nothing here is used. */
#ifndef HUB_CLUSTER_OPS_H
#define HUB_CLUSTER_OPS_H

#include <stddef.h>
#include <stdint.h>

/* Bus thread: a HUB_CL_QUERY / HUB_CL_REPLY addressed to this node, or a
 * HUB_CL_ROOM_DEL (arg: room id) from origin. p/n is the payload. */
void hub_ops_on_bus(int kind, const char *origin, const char *arg, const uint8_t *p, size_t n);

/* Bus thread, when the cluster stops: closes timers, drops what waits. */
void hub_ops_bus_stop(void);

#endif
