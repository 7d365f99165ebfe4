/* registry.h: node-wide shared state under one mutex: rooms (with their
 * members per worker), clients (connection id → worker, user id, rooms) and
 * users (user id → connection ids). It stores connection ids, never
 * pointers, so any worker may change any membership; a worker resolves ids
 * of its own connections through its id map. Any worker thread; the main
 * thread initialises and frees it. */
#ifndef HUB_REGISTRY_H
#define HUB_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct {
    char *id;
    char *name;
    uint32_t max_clients;
    uint32_t member_count;
} hub_room_info_t;

typedef struct {
    uint64_t conn_id;
    int worker;
    char *user_id;           /* NULL = anonymous (user id derived from client id) */
} hub_member_t;

int hub_reg_init(int nworkers);
void hub_reg_free(void);

/* 1 when s is a valid room id: 1-128 of A-Z a-z 0-9 _ - : . @ */
int hub_reg_valid_room_id(const char *s, size_t len);

/* Clients. user_id NULL = anonymous. */
int hub_reg_client_add(uint64_t conn_id, int worker, const char *user_id);
/* Removes the client from every room and from the registry. *rooms gets the
 * ids of the rooms it was in (malloc'd array of malloc'd strings, caller
 * frees with hub_reg_strv_free), *deleted a parallel array of flags: 1 when
 * the room was auto-created and is now gone. Returns how many rooms it left
 * that are not in *rooms (out of memory: 0 normally). */
size_t hub_reg_client_remove(uint64_t conn_id, char ***rooms, uint8_t **deleted, size_t *n);
/* Changes a client's user id (NULL = anonymous) after an in-band
 * authenticate: it leaves its old user's connections and joins the new
 * one's. Returns 0, HUB_EOFFLINE (not registered) or HUB_ENOMEM (nothing
 * changed). */
int hub_reg_client_set_user(uint64_t conn_id, const char *user_id);
/* Copies conn_id's user id into buf (cut to len); returns 1, or 0 when the
 * client is anonymous or not registered. */
int hub_reg_client_user(uint64_t conn_id, char *buf, size_t len);
/* Returns the worker owning conn_id, or -1 when it is not registered. */
int hub_reg_client_worker(uint64_t conn_id);
/* Connection ids of user_id into out (up to max); returns how many exist. */
/* Every user id with a connection on this node: *out is malloc'd (free
 * with hub_reg_strv_free(*out, n)); returns n. */
size_t hub_reg_users(char ***out);
size_t hub_reg_user_conns(const char *user_id, hub_member_t *out, size_t max);
/* Room ids of a client (caller frees with hub_reg_strv_free). */
size_t hub_reg_client_rooms(uint64_t conn_id, char ***out);

/* A client as the HTTP API lists it (every field owned). */
typedef struct {
    uint64_t conn_id;
    int worker;
    uint64_t connected_at;   /* ms since the epoch, when it was registered */
    char *user_id;           /* NULL = anonymous */
    char **rooms;            /* ids of its rooms */
    size_t nrooms;
} hub_client_info_t;

/* One page of the clients ordered by (connected_at, conn_id): skips offset
 * of them and copies up to limit into *out (*n of them; fewer when some
 * left while the page was built). *total gets the number of clients. The
 * caller frees *out with hub_reg_clients_free. Returns 0 or HUB_ENOMEM
 * (then *out is NULL). */
int hub_reg_client_list(size_t offset, size_t limit, hub_client_info_t **out, size_t *n,
                        size_t *total);
void hub_reg_clients_free(hub_client_info_t *v, size_t n);

/* The numbers of registered clients and of rooms. */
void hub_reg_counts(size_t *clients, size_t *rooms);

/* The largest max_clients a room may have (0 = unlimited). */
#define HUB_ROOM_MAX_CLIENTS 10000000

/* Rooms. An explicit create (not auto_created) of a room that another node
 * of the cluster has is HUB_EEXIST too. */
int hub_reg_room_create(const char *id, const char *name, uint32_t max_clients,
                        int auto_created, hub_room_info_t *out);
/* Deletes a room; *members gets its members (caller frees with
 * hub_reg_members_free). HUB_ENOTFOUND if absent. */
int hub_reg_room_delete(const char *id, hub_member_t **members, size_t *n);
/* Joins; creates the room when auto_create (with default_max), or when
 * another node of the cluster has it (with that node's name and
 * max_clients). Without a cluster max_clients is checked here. In a
 * cluster a room with max_clients needs a seat from its owner node
 * (seats.h): with seat_max non-NULL such a join returns HUB_ESEAT and
 * *seat_max (after every other check, without joining); call again with
 * seat_max NULL once the seat is granted, which skips the max check.
 * Returns this node's member count (> 0) or HUB_ENOTFOUND, HUB_EALREADY,
 * HUB_EROOMFULL, HUB_ETOOMANY, HUB_EOFFLINE (client not registered),
 * HUB_ESEAT. */
int hub_reg_room_join(const char *id, uint64_t conn_id, int auto_create, uint32_t default_max,
                      uint32_t max_per_client, uint32_t *seat_max);
/* Leaves; *deleted = 1 when an auto-created room became empty and is gone.
 * Returns 0, HUB_ENOTFOUND or HUB_ENOTMEMBER. */
int hub_reg_room_leave(const char *id, uint64_t conn_id, int *deleted);
int hub_reg_room_get(const char *id, hub_room_info_t *out);
/* All rooms (caller frees with hub_reg_rooms_free). */
size_t hub_reg_room_list(hub_room_info_t **out);
/* Members of a room (caller frees). HUB_ENOTFOUND if absent. */
int hub_reg_room_members(const char *id, hub_member_t **out, size_t *n);
int hub_reg_room_is_member(const char *id, uint64_t conn_id);

/* Calls fn(conn_id, arg) for every member of room id that lives on worker,
 * with the lock held (fn must not call back into the registry). Also fills
 * per_worker[i] with each worker's member count (array of nworkers) when not
 * NULL. Returns the member count not counting exclude (0 = none), or
 * HUB_ENOTFOUND. */
int hub_reg_room_visit(const char *id, int worker, uint64_t exclude,
                       void (*fn)(uint64_t, void *), void *arg, uint32_t *per_worker);

void hub_reg_info_free(hub_room_info_t *r);
void hub_reg_rooms_free(hub_room_info_t *v, size_t n);
void hub_reg_members_free(hub_member_t *v, size_t n);
void hub_reg_strv_free(char **v, size_t n);

#endif
