/* UserNotificationMessage bytes, as the outbox reads them back from disk:
 * whatever decodes encodes again to a message that decodes to the same. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "notify/message.h"

static bool same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct notify_message m, back;
    int rc = notify_message_decode(data, size, &m);
    if (rc != 0) {
        FUZZ_CHECK(rc == -EINVAL || rc == -ENOMEM);
        return 0;
    }
    uint8_t *out = NULL;
    size_t len = 0;
    rc = notify_message_encode(&m.requester, m.zipfile, (const char *const *)m.files, m.nfiles,
                               &out, &len);
    FUZZ_CHECK(rc == 0 || rc == -ENOMEM);
    if (rc == 0) {
        FUZZ_CHECK(notify_message_decode(out, len, &back) == 0);
        FUZZ_CHECK(same(back.requester.email, m.requester.email));
        FUZZ_CHECK(same(back.requester.name, m.requester.name));
        FUZZ_CHECK(back.requester.has_id == m.requester.has_id);
        FUZZ_CHECK(same(back.requester.id, m.requester.id));
        FUZZ_CHECK(same(back.zipfile, m.zipfile));
        FUZZ_CHECK(back.nfiles == m.nfiles);
        for (size_t i = 0; i < m.nfiles; i++)
            FUZZ_CHECK(same(back.files[i], m.files[i]));
        notify_message_free(&back);
        free(out);
    }
    notify_message_free(&m);
    return 0;
}
