/* Measures CRC-32 throughput of zlib's crc32_z and libdeflate's
 * libdeflate_crc32 over the same random buffer, in several chunk sizes, so
 * the choice made in src/zip/crc.c can be checked on another machine.
 * Not built by meson; compile by hand from the repository root:
 *
 *   cc -O2 -std=c17 -D_GNU_SOURCE -o bench-crc scripts/bench-crc.c -lz -ldeflate
 *   ./bench-crc [total MiB, default 1024] [runs, default 5]
 *
 * Each run feeds total bytes through each implementation in chunks of the
 * given size (the buffer is reused, it stays in cache for small chunks just
 * as a FUSE read buffer would); the best and median of the runs are printed
 * in GB/s (10^9 bytes per second). */
#include <libdeflate.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t run_zlib(const unsigned char *buf, size_t chunk, uint64_t total)
{
    uint32_t crc = 0;
    for (uint64_t done = 0; done < total; done += chunk)
        crc = (uint32_t)crc32_z(crc, buf, chunk);
    return crc;
}

static uint32_t run_deflate(const unsigned char *buf, size_t chunk, uint64_t total)
{
    uint32_t crc = 0;
    for (uint64_t done = 0; done < total; done += chunk)
        crc = libdeflate_crc32(crc, buf, chunk);
    return crc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    uint64_t total = (uint64_t)(argc > 1 ? atoi(argv[1]) : 1024) << 20;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    static const size_t chunks[] = {4u << 10, 128u << 10, 1u << 20};
    if (runs < 1 || runs > 100 || total == 0) {
        fprintf(stderr, "usage: bench-crc [total MiB] [runs]\n");
        return 2;
    }
    unsigned char *buf = malloc(1u << 20);
    if (!buf)
        return 1;
    srand(1);
    for (size_t i = 0; i < (1u << 20); i++)
        buf[i] = (unsigned char)rand();

    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        size_t chunk = chunks[c];
        double gz[100], gd[100];
        uint32_t cz = 0, cd = 0;
        for (int r = 0; r < runs; r++) {
            /* alternate which goes first so neither always gets a cold start */
            for (int k = 0; k < 2; k++) {
                bool zlib_now = (k == 0) == (r % 2 == 0);
                double t0 = now_s();
                if (zlib_now)
                    cz = run_zlib(buf, chunk, total);
                else
                    cd = run_deflate(buf, chunk, total);
                double gbs = (double)total / (now_s() - t0) / 1e9;
                if (zlib_now)
                    gz[r] = gbs;
                else
                    gd[r] = gbs;
            }
        }
        if (cz != cd) {
            fprintf(stderr, "mismatch: zlib %08x libdeflate %08x\n", cz, cd);
            return 1;
        }
        qsort(gz, (size_t)runs, sizeof(double), cmp_double);
        qsort(gd, (size_t)runs, sizeof(double), cmp_double);
        printf("chunk %7zu B: zlib best %6.2f median %6.2f GB/s | "
               "libdeflate best %6.2f median %6.2f GB/s\n",
               chunk, gz[runs - 1], gz[runs / 2], gd[runs - 1], gd[runs / 2]);
    }
    free(buf);
    return 0;
}
