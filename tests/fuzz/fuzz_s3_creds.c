/* A shared credentials file (~/.aws/credentials): the first byte picks the
 * profile asked for; whatever is accepted has a key id and a secret that
 * can go into a request. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "store/s3_creds.h"

static const char *const profiles[] = {"default", "a", "prod"};

/* printable ASCII without blanks; a key id also without the ':' of
 * libcurl's user:password, nor the '/' and ',' of the Authorization
 * header */
static void header_safe(const char *s, bool is_key)
{
    for (; *s; s++) {
        FUZZ_CHECK(*s > 0x20 && *s < 0x7f);
        FUZZ_CHECK(!is_key || (*s != ':' && *s != '/' && *s != ','));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct s3_credentials c = {0};
    int rc = s3_credentials_parse((const char *)data + 1, size - 1, profiles[data[0] % 3], &c);
    if (rc == 0) {
        FUZZ_CHECK(c.access_key && c.access_key[0] && c.secret_key && c.secret_key[0]);
        header_safe(c.access_key, true);
        header_safe(c.secret_key, false);
        if (c.session_token)
            header_safe(c.session_token, false);
    } else {
        FUZZ_CHECK(rc == -ENOENT || rc == -EINVAL || rc == -ENOMEM);
    }
    s3_credentials_clear(&c);
    return 0;
}
