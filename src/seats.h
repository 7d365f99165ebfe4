/* seats.h: cluster-wide max_clients. In a cluster, a join to a room with
 * max_clients needs a seat from the room's owner (hub_cluster_owner), which
 * counts the room's members on every node plus the seats it granted that
 * are not yet seen as members, so two nodes admitting the last seat at once
 * cannot overfill the room. The worker's handler waits for the answer (see
 * lua_vm.h); the asking node's bus thread re-asks when the owner does not
 * answer (it may have died: a new owner takes over once the others drop
 * it) until cluster.request_timeout. */
#ifndef HUB_SEATS_H
#define HUB_SEATS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* The answers a worker gets (hub_vm_seat_answer). */
enum { HUB_SEAT_OK = 0, HUB_SEAT_FULL, HUB_SEAT_TIMEOUT };

/* Worker: asks for a seat in room (max_clients max) for connection seat_id
 * (of this node), on behalf of connection conn_id of worker w, whose
 * handler waits; ticket comes back with the answer. Returns 0, or
 * HUB_ENOMEM / HUB_ECLOSED (no answer will come). */
int hub_seats_ask(hub_worker_t *w, uint64_t conn_id, uint64_t seat_id, const char *room,
                  uint32_t max, uint32_t ticket);

/* Worker: a granted seat will not be used (the client left or the join
 * failed): the owner forgets it now rather than at its expiry. */
void hub_seats_free(hub_worker_t *w, const char *room, uint64_t conn_id);

/* How long a join waits for its seat at most (config snapshot cfg): long
 * enough for a dead owner to be dropped and replaced. */
uint64_t hub_seats_wait_ms(const hub_config_t *cfg);

/* Bus thread: client_id was seen joining room (this node's registry or
 * another node's announcement): a seat granted for it is taken. */
void hub_seats_joined(const char *room, const char *client_id);

/* Bus thread: a seat message addressed to this node. */
void hub_seats_on_bus(int kind, const char *origin, const uint8_t *p, size_t n);

/* Bus thread, when the cluster stops. */
void hub_seats_bus_stop(void);

#endif
