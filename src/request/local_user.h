/* The requester of a text request: the local user who wrote it. */
#ifndef ZIPPERFS_LOCAL_USER_H
#define ZIPPERFS_LOCAL_USER_H

#include <sys/types.h>

#include "request/request.h"

/* Fills *out for user uid:
 *   name   the full name of the passwd entry (GECOS up to its first ','),
 *          else the login name, else "uid N";
 *   email  the first line of ~/.config/zipperfs/email in that user's home
 *          (a regular file owned by the user, opened without following a
 *          symbolic link, that looks like an address), else
 *          login@email_domain when email_domain is set, else "";
 *   id     not set.
 * Every string is valid UTF-8. Returns 0 or -ENOMEM. */
int local_user_requester(uid_t uid, const char *email_domain, struct requester *out);

struct passwd;
/* The same from a passwd entry (pw NULL: none found). Exposed for tests. */
int local_user_requester_pw(const struct passwd *pw, uid_t uid, const char *email_domain,
                            struct requester *out);

#endif
