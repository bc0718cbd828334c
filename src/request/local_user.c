#include "request/local_user.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/utf8.h"

#define EMAIL_MAX 254

/* An address we are willing to send: printable ASCII, no spaces, one '@'
 * with something on each side. Anything else is ignored, not repaired. */
static bool plausible_email(const char *s)
{
    size_t len = strlen(s);
    const char *at = strchr(s, '@');
    if (len == 0 || len > EMAIL_MAX || !at || at == s || at[1] == '\0' || strchr(at + 1, '@'))
        return false;
    for (const char *p = s; *p; p++)
        if (*p <= ' ' || *p > '~')
            return false;
    return true;
}

/* The first line of the user's email file, or "" (buf has EMAIL_MAX + 2
 * bytes). The daemon may run as root: the file must belong to uid, so a
 * link to someone else's file never leaks a line of it. */
static void email_from_file(const struct passwd *pw, char *buf, size_t size)
{
    char path[4096];
    buf[0] = '\0';
    if (!pw->pw_dir || pw->pw_dir[0] != '/' ||
        (size_t)snprintf(path, sizeof(path), "%s/.config/zipperfs/email", pw->pw_dir) >=
            sizeof(path))
        return;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st;
    ssize_t n = -1;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == pw->pw_uid)
        n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0) {
        buf[0] = '\0';
        return;
    }
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (!plausible_email(buf))
        buf[0] = '\0';
}

int local_user_requester_pw(const struct passwd *found, uid_t uid, const char *email_domain,
                            struct requester *out)
{
    char name[256], email[EMAIL_MAX + 2];

    memset(out, 0, sizeof(*out));
    name[0] = email[0] = '\0';
    if (found) {
        size_t glen = found->pw_gecos ? strcspn(found->pw_gecos, ",") : 0;
        if (glen > 0 && glen < sizeof(name) &&
            utf8_valid((const uint8_t *)found->pw_gecos, glen, NULL)) {
            memcpy(name, found->pw_gecos, glen);
            name[glen] = '\0';
        } else if (utf8_valid((const uint8_t *)found->pw_name, strlen(found->pw_name), NULL)) {
            snprintf(name, sizeof(name), "%s", found->pw_name);
        }
        email_from_file(found, email, sizeof(email));
        if (!email[0] && email_domain && email_domain[0]) {
            snprintf(email, sizeof(email), "%s@%s", found->pw_name, email_domain);
            if (!plausible_email(email))
                email[0] = '\0';
        }
    }
    if (!name[0])
        snprintf(name, sizeof(name), "uid %lu", (unsigned long)uid);
    out->name = strdup(name);
    out->email = strdup(email);
    if (!out->name || !out->email) {
        requester_free(out);
        return -ENOMEM;
    }
    return 0;
}

int local_user_requester(uid_t uid, const char *email_domain, struct requester *out)
{
    struct passwd pw, *found = NULL;
    char pwbuf[16384];
    if (getpwuid_r(uid, &pw, pwbuf, sizeof(pwbuf), &found) != 0)
        found = NULL;
    return local_user_requester_pw(found, uid, email_domain, out);
}
