/* The requester of a text request, from a passwd entry: the GECOS name or
 * the login, and an email from the user's own file, or login@domain. The
 * email file is read only when it is a regular file of that user, reached
 * without a symbolic link at its end, and holds something like an
 * address. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "request/local_user.h"

struct fixture {
    char home[64];
    char path[256];
    struct passwd pw;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->home, sizeof(f->home), "/tmp/zipperfs-home-XXXXXX");
    if (!mkdtemp(f->home))
        return -1;
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/.config", f->home);
    mkdir(dir, 0700);
    snprintf(dir, sizeof(dir), "%s/.config/zipperfs", f->home);
    mkdir(dir, 0700);
    snprintf(f->path, sizeof(f->path), "%s/email", dir);
    f->pw.pw_name = "ada";
    f->pw.pw_gecos = "Ada Lovelace,Room 1,,";
    f->pw.pw_dir = f->home;
    f->pw.pw_uid = getuid();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->home);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void write_email(const struct fixture *f, const char *text)
{
    unlink(f->path);
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void expect(const struct fixture *f, const char *domain, const char *name,
                   const char *email)
{
    struct requester r;
    assert_int_equal(local_user_requester_pw(&f->pw, f->pw.pw_uid, domain, &r), 0);
    assert_string_equal(r.name, name);
    assert_string_equal(r.email, email);
    assert_false(r.has_id);
    requester_free(&r);
}

static void test_name_and_domain(void **state)
{
    struct fixture *f = *state;
    expect(f, NULL, "Ada Lovelace", "");
    expect(f, "example.org", "Ada Lovelace", "ada@example.org");
    f->pw.pw_gecos = "";
    expect(f, NULL, "ada", "");
    f->pw.pw_gecos = "\xff\xfe bad";
    expect(f, NULL, "ada", ""); /* not UTF-8: the login instead */
    expect(f, "bad domain", "ada", ""); /* not an address */
}

static void test_email_file(void **state)
{
    struct fixture *f = *state;
    write_email(f, "ada@lovelace.example\n# the rest is ignored\n");
    expect(f, "example.org", "Ada Lovelace", "ada@lovelace.example");
    write_email(f, "not an address\n");
    expect(f, "example.org", "Ada Lovelace", "ada@example.org");
    write_email(f, "two@at@signs\n");
    expect(f, NULL, "Ada Lovelace", "");
}

static void test_email_file_of_someone_else_ignored(void **state)
{
    struct fixture *f = *state;
    write_email(f, "root@secret.example\n");
    if (getuid() != 0) {
        /* cannot give a file away: pretend to be another user instead */
        f->pw.pw_uid = getuid() + 1;
    } else {
        assert_int_equal(chown(f->path, 4242, 4242), 0);
    }
    expect(f, "example.org", "Ada Lovelace", "ada@example.org");
}

static void test_email_symlink_ignored(void **state)
{
    struct fixture *f = *state;
    char target[160];
    snprintf(target, sizeof(target), "%s/elsewhere", f->home);
    FILE *fp = fopen(target, "w");
    assert_non_null(fp);
    fputs("link@example.org\n", fp);
    fclose(fp);
    unlink(f->path);
    assert_int_equal(symlink(target, f->path), 0);
    expect(f, NULL, "Ada Lovelace", "");
}

static void test_no_passwd_entry(void **state)
{
    (void)state;
    struct requester r;
    assert_int_equal(local_user_requester_pw(NULL, 4242, "example.org", &r), 0);
    assert_string_equal(r.name, "uid 4242");
    assert_string_equal(r.email, "");
    requester_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_name_and_domain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_email_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_email_file_of_someone_else_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_email_symlink_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_passwd_entry, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
