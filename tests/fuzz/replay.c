/* Runs a fuzz target over files and directories of inputs (one input a
 * file), without libFuzzer: the seed corpus and past findings as a
 * regression test in every build. Exit status 0 once every input ran;
 * a finding aborts. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int run_file(const char *path, size_t *count)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t *data = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *grown = realloc(data, cap);
            if (!grown) {
                rc = -1;
                break;
            }
            data = grown;
        }
        size_t n = fread(data + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (rc == 0 && ferror(f)) {
        fprintf(stderr, "%s: read error\n", path);
        rc = -1;
    }
    fclose(f);
    if (rc == 0) {
        /* an exact-size copy, so that ASan sees a read past the end */
        uint8_t *exact = malloc(len ? len : 1);
        if (!exact) {
            rc = -1;
        } else {
            memcpy(exact, data, len);
            LLVMFuzzerTestOneInput(exact, len);
            free(exact);
            (*count)++;
        }
    }
    free(data);
    return rc;
}

static int run_path(const char *path, size_t *count)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path, count);
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    if (n < 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (rc == 0 && names[i]->d_name[0] != '.') {
            char child[4096];
            snprintf(child, sizeof(child), "%s/%s", path, names[i]->d_name);
            rc = run_path(child, count);
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    size_t count = 0;
    for (int i = 1; i < argc; i++)
        if (run_path(argv[i], &count) != 0)
            return 1;
    if (count == 0) {
        fprintf(stderr, "no inputs: a replay of nothing proves nothing\n");
        return 1;
    }
    printf("%zu inputs ran\n", count);
    return 0;
}
