/* S3 responses: ListObjectsV2 pages (with and without a delimiter), ETags,
 * HTTP dates and url-encoded keys. The first byte picks the directory and
 * the function; the rest is the server's bytes. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "store/s3_xml.h"

static void on_etag(void *arg, int64_t generation, const char *etag)
{
    (void)arg;
    FUZZ_CHECK(etag != NULL && strlen(etag) < S3_ETAG_MAX);
    FUZZ_CHECK(generation == s3_etag_generation(etag));
}

static void listing(const char *xml, size_t len, const char *prefix, bool tree)
{
    struct store_listing l = {0};
    char *token = NULL;
    int rc = tree ? s3_xml_parse_tree_page(xml, len, prefix, &l, &token, on_etag, NULL)
                  : s3_xml_parse_list(xml, len, prefix, &l, &token, on_etag, NULL);
    if (rc == 0) {
        fuzz_check_listing(&l, tree);
    } else {
        FUZZ_CHECK(rc == -EPROTO || rc == -ENOMEM);
        FUZZ_CHECK(l.count == 0); /* a page that fails adds nothing */
    }
    free(token);
    store_listing_free(&l);
}

static void etag(const char *s, size_t len)
{
    char out[S3_ETAG_MAX], again[S3_ETAG_MAX];
    if (s3_etag_normalize(s, len, out) != 0)
        return;
    size_t n = strlen(out);
    FUZZ_CHECK(n > 0 && n < S3_ETAG_MAX);
    for (size_t i = 0; i < n; i++) /* it goes back into an If-Match header */
        FUZZ_CHECK(out[i] > 0x20 && out[i] < 0x7f && out[i] != '"');
    /* normalizing a normalized ETag changes nothing (but for one whose
     * opaque part starts with "W/", which loses it as a weak mark) */
    if (strncmp(out, "W/", 2) != 0)
        FUZZ_CHECK(s3_etag_normalize(out, n, again) == 0 && strcmp(out, again) == 0);
    FUZZ_CHECK(s3_etag_generation(out) > 0);
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
        int any = s3_xml_list_nonempty(rest, len);
        FUZZ_CHECK(any == 0 || any == 1 || any == -EPROTO || any == -ENOMEM);
        break;
    case 2:
        etag(rest, len);
        break;
    default: {
        int64_t sec;
        (void)s3_parse_http_date(rest, len, &sec);
        size_t out_len = 0;
        char *decoded = s3_url_decode(rest, len, &out_len);
        if (decoded) {
            FUZZ_CHECK(out_len <= len);
            free(decoded);
        }
        break;
    }
    }
    return 0;
}
