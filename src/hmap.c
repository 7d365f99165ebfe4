/* hmap.c: the two hash maps of hmap.h. No locking; single owner. */
#include "hmap.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

void hub_idmap_init(hub_idmap_t *m)
{
    memset(m, 0, sizeof(*m));
}

void hub_idmap_free(hub_idmap_t *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

void *hub_idmap_get(const hub_idmap_t *m, uint64_t key)
{
    if (m->cap == 0)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (m->keys[i] == key)
            return m->vals[i];
        if (m->keys[i] == 0)
            return NULL;
    }
}

static int idmap_grow(hub_idmap_t *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 64;
    uint64_t *nk = calloc(ncap, sizeof(*nk));
    void **nv = calloc(ncap, sizeof(*nv));
    if (nk == NULL || nv == NULL) {
        free(nk);
        free(nv);
        return HUB_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == 0)
            continue;
        size_t j = mix64(m->keys[i]) & (ncap - 1);
        while (nk[j] != 0)
            j = (j + 1) & (ncap - 1);
        nk[j] = m->keys[i];
        nv[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = nk;
    m->vals = nv;
    m->cap = ncap;
    return 0;
}

int hub_idmap_put(hub_idmap_t *m, uint64_t key, void *val)
{
    if ((m->n + 1) * 4 > m->cap * 3 && idmap_grow(m) != 0) /* load factor 0.75 */
        return HUB_ENOMEM;
    size_t mask = m->cap - 1;
    size_t i = mix64(key) & mask;
    while (m->keys[i] != 0 && m->keys[i] != key)
        i = (i + 1) & mask;
    if (m->keys[i] == 0)
        m->n++;
    m->keys[i] = key;
    m->vals[i] = val;
    return 0;
}

void *hub_idmap_del(hub_idmap_t *m, uint64_t key)
{
    if (m->cap == 0)
        return NULL;
    size_t mask = m->cap - 1;
    size_t i = mix64(key) & mask;
    while (m->keys[i] != key) {
        if (m->keys[i] == 0)
            return NULL;
        i = (i + 1) & mask;
    }
    void *val = m->vals[i];
    /* backward-shift: pull later members of the probe run into the hole */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->keys[j] != 0; j = (j + 1) & mask) {
        size_t home = mix64(m->keys[j]) & mask;
        /* the entry at j may fill the hole when its probe from home passes
         * the hole before reaching j */
        if (((hole - home) & mask) < ((j - home) & mask)) {
            m->keys[hole] = m->keys[j];
            m->vals[hole] = m->vals[j];
            hole = j;
        }
    }
    m->keys[hole] = 0;
    m->vals[hole] = NULL;
    m->n--;
    return val;
}

/* FNV-1a: short keys, no adversarial concern beyond bounded chains. */
/* FNV-1a over s..s+n */
static uint64_t bytes_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static uint64_t str_hash(const char *s)
{
    return bytes_hash(s, strlen(s));
}

void hub_strmap_init(hub_strmap_t *m)
{
    memset(m, 0, sizeof(*m));
}

void hub_strmap_free(hub_strmap_t *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        hub_strmap_entry_t *e = m->buckets[i];
        while (e) {
            hub_strmap_entry_t *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    memset(m, 0, sizeof(*m));
}

static hub_strmap_entry_t **find_slot(const hub_strmap_t *m, const char *key, uint64_t h)
{
    hub_strmap_entry_t **p = &m->buckets[h & (m->cap - 1)];
    while (*p && ((*p)->hash != h || strcmp((*p)->key, key) != 0))
        p = &(*p)->next;
    return p;
}

void hub_strmap_free_values(hub_strmap_t *m)
{
    for (size_t i = 0; i < m->cap; i++)
        for (hub_strmap_entry_t *e = m->buckets[i]; e != NULL; e = e->next)
            free(e->val);
    hub_strmap_free(m);
}

void *hub_strmap_get(const hub_strmap_t *m, const char *key)
{
    if (m->cap == 0)
        return NULL;
    hub_strmap_entry_t **p = find_slot(m, key, str_hash(key));
    return *p ? (*p)->val : NULL;
}

void *hub_strmap_getn(const hub_strmap_t *m, const char *key, size_t len)
{
    if (m->cap == 0)
        return NULL;
    uint64_t h = bytes_hash(key, len);
    for (hub_strmap_entry_t *e = m->buckets[h & (m->cap - 1)]; e != NULL; e = e->next)
        if (e->hash == h && strncmp(e->key, key, len) == 0 && e->key[len] == '\0')
            return e->val;
    return NULL;
}

int hub_strmap_put(hub_strmap_t *m, const char *key, void *val)
{
    if (m->n + 1 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 16;
        hub_strmap_entry_t **nb = calloc(ncap, sizeof(*nb));
        if (nb == NULL)
            return HUB_ENOMEM;
        for (size_t i = 0; i < m->cap; i++) {
            hub_strmap_entry_t *e = m->buckets[i];
            while (e) {
                hub_strmap_entry_t *next = e->next;
                e->next = nb[e->hash & (ncap - 1)];
                nb[e->hash & (ncap - 1)] = e;
                e = next;
            }
        }
        free(m->buckets);
        m->buckets = nb;
        m->cap = ncap;
    }
    uint64_t h = str_hash(key);
    hub_strmap_entry_t **p = find_slot(m, key, h);
    if (*p) {
        (*p)->val = val;
        return 0;
    }
    size_t klen = strlen(key) + 1;
    hub_strmap_entry_t *e = malloc(sizeof(*e) + klen);
    if (e == NULL)
        return HUB_ENOMEM;
    e->next = NULL;
    e->hash = h;
    e->val = val;
    memcpy(e->key, key, klen);
    *p = e;
    m->n++;
    return 0;
}

void *hub_strmap_del(hub_strmap_t *m, const char *key)
{
    if (m->cap == 0)
        return NULL;
    hub_strmap_entry_t **p = find_slot(m, key, str_hash(key));
    hub_strmap_entry_t *e = *p;
    if (e == NULL)
        return NULL;
    void *val = e->val;
    *p = e->next;
    free(e);
    m->n--;
    return val;
}

hub_strmap_entry_t *hub_strmap_first(const hub_strmap_t *m, size_t *i)
{
    for (*i = 0; *i < m->cap; (*i)++)
        if (m->buckets[*i])
            return m->buckets[*i];
    return NULL;
}

hub_strmap_entry_t *hub_strmap_next(const hub_strmap_t *m, hub_strmap_entry_t *e, size_t *i)
{
    if (e->next)
        return e->next;
    for ((*i)++; *i < m->cap; (*i)++)
        if (m->buckets[*i])
            return m->buckets[*i];
    return NULL;
}
