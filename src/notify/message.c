#include "notify/message.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "notification.pb-c.h"
#include "util/pbcheck.h"
#include "util/utf8.h"

static bool is_utf8(const char *s)
{
    return s && utf8_valid((const uint8_t *)s, strlen(s), NULL);
}

int notify_message_encode(const struct requester *r, const char *zipfile,
                          const char *const *files, size_t nfiles, uint8_t **out, size_t *len)
{
    FdlSvc__UserNotificationMessage msg = FDL_SVC__USER_NOTIFICATION_MESSAGE__INIT;
    FdlSvc__UserNotificationMessage__Requester req =
        FDL_SVC__USER_NOTIFICATION_MESSAGE__REQUESTER__INIT;

    *out = NULL;
    *len = 0;
    if (!r || !is_utf8(r->email) || !is_utf8(r->name) || (r->has_id && !is_utf8(r->id)) ||
        !is_utf8(zipfile) || (nfiles > 0 && !files))
        return -EINVAL;
    for (size_t i = 0; i < nfiles; i++)
        if (!is_utf8(files[i]))
            return -EINVAL;

    /* protobuf-c's structs hold char *, never written by pack */
    req.email = (char *)r->email;
    req.name = (char *)r->name;
    if (r->has_id) {
        req._id_case = FDL_SVC__USER_NOTIFICATION_MESSAGE__REQUESTER___ID_ID;
        req.id = (char *)r->id;
    }
    msg.requester = &req;
    msg.zipfile = (char *)zipfile;
    msg.n_files = nfiles;
    msg.files = (char **)files;

    size_t size = fdl_svc__user_notification_message__get_packed_size(&msg);
    /* malloc(0) may return NULL: an all-default message packs to nothing */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return -ENOMEM;
    size_t packed = fdl_svc__user_notification_message__pack(&msg, buf);
    if (packed != size) {
        free(buf);
        return -EIO;
    }
    *out = buf;
    *len = size;
    return 0;
}

struct pb_alloc_state {
    bool failed;
};

static void *pb_alloc(void *data, size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        ((struct pb_alloc_state *)data)->failed = true;
    return p;
}

static void pb_free(void *data, void *p)
{
    (void)data;
    free(p);
}

static int dup_string(const char *s, char **out)
{
    *out = strdup(s ? s : "");
    return *out ? 0 : -ENOMEM;
}

int notify_message_decode(const uint8_t *data, size_t len, struct notify_message *out)
{
    static const struct pbcheck_field requester_fields[] = {
        {1, "email", PBCHECK_STRING, NOTIFY_MAX_STRING, NULL},
        {2, "name", PBCHECK_STRING, NOTIFY_MAX_STRING, NULL},
        {3, "id", PBCHECK_STRING, NOTIFY_MAX_STRING, NULL},
    };
    static const struct pbcheck_schema requester = {"Requester", requester_fields, 3};
    static const struct pbcheck_field top_fields[] = {
        {1, "requester", PBCHECK_MESSAGE, 0, &requester},
        {2, "zipfile", PBCHECK_STRING, NOTIFY_MAX_STRING, NULL},
        {3, "files", PBCHECK_STRING, NOTIFY_MAX_STRING, NULL},
    };
    static const struct pbcheck_schema top = {"UserNotificationMessage", top_fields, 3};
    struct pb_alloc_state st = {false};
    ProtobufCAllocator alloc = {.alloc = pb_alloc, .free = pb_free, .allocator_data = &st};
    FdlSvc__UserNotificationMessage *msg = NULL;
    char err[160];
    int rc = 0;

    memset(out, 0, sizeof(*out));
    /* embedded NULs and invalid UTF-8 would pass protobuf-c unseen */
    if (len > NOTIFY_MAX_MESSAGE_BYTES || pbcheck(data, len, &top, NULL, err, sizeof(err)) < 0)
        return -EINVAL;
    msg = fdl_svc__user_notification_message__unpack(&alloc, len, data);
    if (!msg)
        return st.failed ? -ENOMEM : -EINVAL;

    const FdlSvc__UserNotificationMessage__Requester *r = msg->requester;
    if ((rc = dup_string(r ? r->email : NULL, &out->requester.email)) < 0 ||
        (rc = dup_string(r ? r->name : NULL, &out->requester.name)) < 0 ||
        (rc = dup_string(msg->zipfile, &out->zipfile)) < 0)
        goto out;
    if (r && r->_id_case == FDL_SVC__USER_NOTIFICATION_MESSAGE__REQUESTER___ID_ID) {
        if ((rc = dup_string(r->id, &out->requester.id)) < 0)
            goto out;
        out->requester.has_id = true;
    }
    if (msg->n_files > 0) {
        out->files = calloc(msg->n_files, sizeof(*out->files));
        if (!out->files) {
            rc = -ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < msg->n_files; i++) {
            if ((rc = dup_string(msg->files[i], &out->files[i])) < 0)
                goto out;
            out->nfiles = i + 1;
        }
    }
out:
    fdl_svc__user_notification_message__free_unpacked(msg, &alloc);
    if (rc < 0)
        notify_message_free(out);
    return rc;
}

void notify_message_free(struct notify_message *m)
{
    requester_free(&m->requester);
    free(m->zipfile);
    for (size_t i = 0; i < m->nfiles; i++)
        free(m->files[i]);
    free(m->files);
    memset(m, 0, sizeof(*m));
}
