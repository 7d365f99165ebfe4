/* hmap.h: two small hash maps. hub_idmap: uint64 → pointer, open addressing
 * with linear probing and backward-shift deletion (no tombstones), for the
 * per-worker connection table. hub_strmap: string → pointer, chained, keys
 * owned by the map. Neither locks: the owner serialises access. */
#ifndef HUB_HMAP_H
#define HUB_HMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t *keys; /* 0 = empty slot; key 0 is not allowed */
    void **vals;
    size_t cap;     /* power of two */
    size_t n;
} hub_idmap_t;

void hub_idmap_init(hub_idmap_t *m);
void hub_idmap_free(hub_idmap_t *m);
void *hub_idmap_get(const hub_idmap_t *m, uint64_t key);
/* Inserts or replaces. Returns 0 or HUB_ENOMEM. */
int hub_idmap_put(hub_idmap_t *m, uint64_t key, void *val);
/* Removes key; returns its value or NULL. */
void *hub_idmap_del(hub_idmap_t *m, uint64_t key);

typedef struct hub_strmap_entry_s {
    struct hub_strmap_entry_s *next;
    uint64_t hash;
    void *val;
    char key[];
} hub_strmap_entry_t;

typedef struct {
    hub_strmap_entry_t **buckets;
    size_t cap; /* power of two */
    size_t n;
} hub_strmap_t;

void hub_strmap_init(hub_strmap_t *m);
/* Frees the map's entries (not the values). */
void hub_strmap_free(hub_strmap_t *m);
/* Frees every value with free(), then the map's entries. */
void hub_strmap_free_values(hub_strmap_t *m);
void *hub_strmap_get(const hub_strmap_t *m, const char *key);
/* The value of the key spelled by key..key+len (not NUL-terminated; it
 * must hold no NUL byte), or NULL. */
void *hub_strmap_getn(const hub_strmap_t *m, const char *key, size_t len);
int hub_strmap_put(hub_strmap_t *m, const char *key, void *val);
void *hub_strmap_del(hub_strmap_t *m, const char *key);

/* Iteration: for (e = hub_strmap_first(m, &i); e; e = hub_strmap_next(m, e, &i)) */
hub_strmap_entry_t *hub_strmap_first(const hub_strmap_t *m, size_t *i);
hub_strmap_entry_t *hub_strmap_next(const hub_strmap_t *m, hub_strmap_entry_t *e, size_t *i);

#endif
