/* Fuzz targets: each file defines LLVMFuzzerTestOneInput over one parser of
 * untrusted bytes and checks what a successful parse promises, aborting
 * when it does not. Built with -Dfuzzing=true (clang) they are libFuzzer
 * programs; otherwise replay.c runs them over their seed corpus, so every
 * build's suite replays the seeds and the inputs of past findings. */
#ifndef ZIPPERFS_FUZZ_H
#define ZIPPERFS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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

#endif
