#include "util/strmap.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct strmap_node {
    struct strmap_node *next;
    void *value;
    uint64_t hash;
    char key[]; /* NUL-terminated */
};

struct strmap {
    struct strmap_node **buckets;
    size_t nbuckets; /* a power of two */
    size_t count;
    strmap_free_fn free_value;
};

static uint64_t hash_key(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

struct strmap *strmap_new(strmap_free_fn free_value)
{
    struct strmap *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->nbuckets = 64;
    m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    m->free_value = free_value;
    return m;
}

static void free_node(struct strmap *m, struct strmap_node *n)
{
    if (m->free_value)
        m->free_value(n->value);
    free(n);
}

void strmap_free(struct strmap *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct strmap_node *n = m->buckets[i];
        while (n) {
            struct strmap_node *next = n->next;
            free_node(m, n);
            n = next;
        }
    }
    free(m->buckets);
    free(m);
}

static struct strmap_node **find_slot(const struct strmap *m, const char *key, uint64_t hash)
{
    struct strmap_node **slot = &m->buckets[hash & (m->nbuckets - 1)];
    while (*slot && ((*slot)->hash != hash || strcmp((*slot)->key, key) != 0))
        slot = &(*slot)->next;
    return slot;
}

void *strmap_get(const struct strmap *m, const char *key)
{
    struct strmap_node **slot = find_slot(m, key, hash_key(key));
    return *slot ? (*slot)->value : NULL;
}

static void grow(struct strmap *m)
{
    size_t n = m->nbuckets * 2;
    struct strmap_node **buckets = calloc(n, sizeof(*buckets));
    if (!buckets)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct strmap_node *node = m->buckets[i];
        while (node) {
            struct strmap_node *next = node->next;
            node->next = buckets[node->hash & (n - 1)];
            buckets[node->hash & (n - 1)] = node;
            node = next;
        }
    }
    free(m->buckets);
    m->buckets = buckets;
    m->nbuckets = n;
}

int strmap_put(struct strmap *m, const char *key, void *value)
{
    uint64_t hash = hash_key(key);
    struct strmap_node **slot = find_slot(m, key, hash);
    if (*slot) {
        if (m->free_value && (*slot)->value != value)
            m->free_value((*slot)->value);
        (*slot)->value = value;
        return 0;
    }
    size_t klen = strlen(key);
    struct strmap_node *n = malloc(sizeof(*n) + klen + 1);
    if (!n) {
        if (m->free_value)
            m->free_value(value);
        return -ENOMEM;
    }
    memcpy(n->key, key, klen + 1);
    n->hash = hash;
    n->value = value;
    n->next = NULL;
    *slot = n;
    m->count++;
    if (m->count > m->nbuckets)
        grow(m);
    return 0;
}

bool strmap_remove(struct strmap *m, const char *key)
{
    struct strmap_node **slot = find_slot(m, key, hash_key(key));
    struct strmap_node *n = *slot;
    if (!n)
        return false;
    *slot = n->next;
    free_node(m, n);
    m->count--;
    return true;
}

size_t strmap_count(const struct strmap *m)
{
    return m->count;
}

size_t strmap_sweep(struct strmap *m, bool (*drop)(void *value, void *arg), void *arg)
{
    size_t dropped = 0;
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct strmap_node **slot = &m->buckets[i];
        while (*slot) {
            struct strmap_node *n = *slot;
            if (drop(n->value, arg)) {
                *slot = n->next;
                free_node(m, n);
                m->count--;
                dropped++;
            } else {
                slot = &n->next;
            }
        }
    }
    return dropped;
}
