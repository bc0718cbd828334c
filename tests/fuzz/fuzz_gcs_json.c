/* GCS JSON API responses: objects.list pages (with and without a
 * delimiter), object resources and RFC 3339 times. The first byte picks
 * the directory and the function; the rest is the server's bytes. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "store/gcs_json.h"

static void listing(const char *json, size_t len, const char *prefix, bool tree)
{
    struct store_listing l = {0};
    char *token = NULL;
    int rc = tree ? gcs_json_parse_tree_page(json, len, prefix, &l, &token)
                  : gcs_json_parse_list(json, len, prefix, &l, &token);
    if (rc == 0) {
        fuzz_check_listing(&l, tree);
    } else {
        FUZZ_CHECK(rc == -EPROTO || rc == -ENOMEM);
    }
    free(token);
    store_listing_free(&l);
}

static void timestamp(const char *s, size_t len)
{
    char text[128], again[40];
    if (len >= sizeof(text))
        return;
    memcpy(text, s, len);
    text[len] = '\0';
    int64_t sec, sec2;
    int32_t nsec, nsec2;
    if (gcs_parse_rfc3339(text, &sec, &nsec) != 0)
        return;
    FUZZ_CHECK(nsec >= 0 && nsec < 1000000000);
    /* what we write we read back as the same second */
    if (gcs_format_rfc3339(sec, again, sizeof(again)) == 0) {
        FUZZ_CHECK(gcs_parse_rfc3339(again, &sec2, &nsec2) == 0);
        FUZZ_CHECK(sec2 == sec && nsec2 == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_pick in;
    if (!fuzz_pick(data, size, &in))
        return 0;
    const char *rest = in.rest, *prefix = in.dir;
    size_t len = in.len;
    switch (in.what) {
    case 0:
        listing(rest, len, prefix, false);
        break;
    case 1:
        listing(rest, len, prefix, true);
        int any = gcs_json_list_nonempty(rest, len);
        FUZZ_CHECK(any == 0 || any == 1 || any == -EPROTO);
        break;
    case 2: {
        struct store_attr attr;
        (void)gcs_json_parse_object(rest, len, &attr);
        break;
    }
    default:
        timestamp(rest, len);
        break;
    }
    return 0;
}
