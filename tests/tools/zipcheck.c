/* zipcheck FILE.zip
 *
 * An independent reader for the integration tests: opens FILE.zip with
 * libzip's strict consistency checks (ZIP_CHECKCONS), reads every entry to
 * its end with zip_fread (libzip compares the CRC-32 of the data it read
 * with the recorded one there and fails the read on a mismatch), checks the
 * byte count and a CRC-32 computed here as well, and prints one line per
 * entry:
 *
 *     name<TAB>size<TAB>crc32 (8 hex digits)<TAB>mtime (seconds since the epoch)
 *
 * Exits 0 when every entry read cleanly, 1 (after a message on stderr) on
 * the first error, 2 on a usage error. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc_update(uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    while (n--)
        crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

static int check_entry(zip_t *za, zip_uint64_t i, const char *path)
{
    static unsigned char buf[1 << 16];
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(za, i, 0, &st) < 0) {
        fprintf(stderr, "%s: entry %" PRIu64 ": stat: %s\n", path, (uint64_t)i,
                zip_strerror(za));
        return -1;
    }
    const char *name = (st.valid & ZIP_STAT_NAME) ? st.name : "?";
    zip_file_t *zf = zip_fopen_index(za, i, 0);
    if (!zf) {
        fprintf(stderr, "%s: %s: open: %s\n", path, name, zip_strerror(za));
        return -1;
    }
    uint64_t total = 0;
    uint32_t crc = 0;
    for (;;) {
        zip_int64_t n = zip_fread(zf, buf, sizeof buf);
        if (n < 0) {
            fprintf(stderr, "%s: %s: read at %" PRIu64 ": %s\n", path, name, total,
                    zip_file_strerror(zf));
            zip_fclose(zf);
            return -1;
        }
        if (n == 0)
            break;
        crc = crc_update(crc, buf, (size_t)n);
        total += (uint64_t)n;
    }
    int rc = zip_fclose(zf);
    if (rc != 0) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, rc);
        fprintf(stderr, "%s: %s: close: %s\n", path, name, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return -1;
    }
    if ((st.valid & ZIP_STAT_SIZE) && total != st.size) {
        fprintf(stderr, "%s: %s: read %" PRIu64 " bytes, the entry says %" PRIu64 "\n",
                path, name, total, (uint64_t)st.size);
        return -1;
    }
    if ((st.valid & ZIP_STAT_CRC) && crc != st.crc) {
        fprintf(stderr, "%s: %s: CRC-32 of the data is %08" PRIx32 ", the entry says %08"
                PRIx32 "\n", path, name, crc, (uint32_t)st.crc);
        return -1;
    }
    printf("%s\t%" PRIu64 "\t%08" PRIx32 "\t%lld\n", name, total, crc,
           (st.valid & ZIP_STAT_MTIME) ? (long long)st.mtime : -1LL);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE.zip\n", argv[0]);
        return 2;
    }
    crc_init();
    const char *path = argv[1];
    int err = 0;
    zip_t *za = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &err);
    if (!za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, err);
        fprintf(stderr, "%s: open: %s\n", path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return 1;
    }
    zip_int64_t n = zip_get_num_entries(za, 0);
    if (n < 0) {
        fprintf(stderr, "%s: %s\n", path, zip_strerror(za));
        zip_discard(za);
        return 1;
    }
    for (zip_uint64_t i = 0; i < (zip_uint64_t)n; i++) {
        if (check_entry(za, i, path) < 0) {
            zip_discard(za);
            return 1;
        }
    }
    zip_discard(za);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("zipcheck: stdout");
        return 1;
    }
    return 0;
}
