/* Fuzz targets: each file defines LLVMFuzzerTestOneInput over one parser of
 * untrusted bytes and checks what a successful parse promises, aborting
 * when it does not. Built with -Dfuzzing=true (clang) they are libFuzzer
 * programs; otherwise replay.c runs them over their seed corpus, so every
 * build's suite replays the seeds and the inputs of past findings. */
#ifndef ZIPPERFS_FUZZ_H
#define ZIPPERFS_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "store/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A promise of the parser broken: report it and abort, which both
 * libFuzzer and the replayer count as a finding. */
#define FUZZ_CHECK(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* What the first byte of an input picks: its low two bits one of four
 * things a target does with the rest, the bits above one of three
 * directories a listing is of. */
struct fuzz_pick {
    unsigned what;    /* 0 to 3 */
    const char *dir;  /* "", "a/" or "dir/sub/" */
    const char *rest; /* the input after that byte */
    size_t len;
};

/* false for an empty input */
static inline bool fuzz_pick(const uint8_t *data, size_t size, struct fuzz_pick *out)
{
    static const char *const dirs[] = {"", "a/", "dir/sub/"};
    if (size < 1)
        return false;
    out->what = data[0] & 3;
    out->dir = dirs[(data[0] >> 2) % 3];
    out->rest = (const char *)data + 1;
    out->len = size - 1;
    return true;
}

/* What a listing page parsed into l promises: on success every entry
 * named, and no directory in a page asked without a delimiter (tree). */
static inline void fuzz_check_listing(const struct store_listing *l, bool tree)
{
    FUZZ_CHECK(l->count <= l->alloc);
    for (size_t i = 0; i < l->count; i++) {
        FUZZ_CHECK(l->entries[i].name != NULL);
        FUZZ_CHECK(!tree || !l->entries[i].is_dir);
    }
}

#endif
