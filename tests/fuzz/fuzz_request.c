/* Archive requests as users and the portal write them: a text list of
 * paths or a serialized FileDownloadMessage. Whatever is accepted must be
 * safe to lay out: every path relative, normalised, without "..", control
 * bytes or duplicates, within the limits. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "request/request.h"

static const struct request_limits limits = {
    .max_members = 1000, .max_request_bytes = 1u << 20, .max_path_len = 256};

static void check_path(const char *p)
{
    size_t n = strlen(p);
    FUZZ_CHECK(n > 0 && n <= limits.max_path_len + 1); /* +1: a directory's "/" */
    FUZZ_CHECK(p[0] != '/');
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK((unsigned char)p[i] >= 0x20 && p[i] != 0x7f);
    /* components: none empty (no "//"), none "." or ".."; a final "/" names
     * a directory */
    const char *c = p;
    for (;;) {
        const char *slash = strchr(c, '/');
        size_t len = slash ? (size_t)(slash - c) : strlen(c);
        if (!slash && len == 0)
            break; /* after a final "/" */
        FUZZ_CHECK(len > 0);
        FUZZ_CHECK(!(len == 1 && c[0] == '.'));
        FUZZ_CHECK(!(len == 2 && c[0] == '.' && c[1] == '.'));
        if (!slash)
            break;
        c = slash + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct request r;
    char err[256];
    int rc = request_parse(data, size, &limits, &r, err, sizeof(err));
    if (rc != 0) {
        FUZZ_CHECK(rc == -EINVAL || rc == -ENOMEM);
        FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0');
        request_free(&r);
        return 0;
    }
    FUZZ_CHECK(r.npaths >= 1 && r.npaths <= limits.max_members);
    for (size_t i = 0; i < r.npaths; i++) {
        check_path(r.paths[i]);
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(r.paths[i], r.paths[j]) != 0);
    }
    char name[512];
    if (r.format == REQUEST_PROTOBUF) {
        FUZZ_CHECK(r.sizes != NULL);
        FUZZ_CHECK(strlen(r.md5_name) == REQUEST_MD5_NAME_LEN);
        FUZZ_CHECK(r.requester.email != NULL && r.requester.name != NULL);
        FUZZ_CHECK(request_archive_name(&r, "ignored", name, sizeof(name)) == 0);
        FUZZ_CHECK(strcmp(name, r.md5_name) == 0);
    } else {
        FUZZ_CHECK(request_archive_name(&r, "list", name, sizeof(name)) == 0);
        FUZZ_CHECK(strcmp(name, "list") == 0);
    }
    request_free(&r);
    return 0;
}
