/* The kernel readahead of the mount: parsing /proc/self/mountinfo lines,
 * finding the FUSE mount's device, and the thread that writes
 * read_ahead_kb (into a directory laid out like /sys/class/bdi). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "util/clock.h"
#include "util/readahead.h"

/* ---- mountinfo lines -------------------------------------------------- */

static void test_parse_fuse_line(void **state)
{
    (void)state;
    struct mountinfo_entry e;
    assert_int_equal(mountinfo_parse_line("44 27 0:41 / /mnt/bucket rw,nosuid,nodev,relatime - "
                                          "fuse.zipperfs gs://bucket rw,user_id=0,group_id=0\n",
                                          &e),
                     0);
    assert_int_equal(e.major, 0);
    assert_int_equal(e.minor, 41);
    assert_string_equal(e.mountpoint, "/mnt/bucket");
    assert_string_equal(e.fstype, "fuse.zipperfs");
}

static void test_parse_optional_fields(void **state)
{
    (void)state;
    struct mountinfo_entry e;
    /* the example of proc(5), with two optional fields, no newline */
    assert_int_equal(mountinfo_parse_line("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:7 "
                                          "- ext3 /dev/root rw,errors=continue",
                                          &e),
                     0);
    assert_int_equal(e.major, 98);
    assert_int_equal(e.minor, 0);
    assert_string_equal(e.mountpoint, "/mnt2");
    assert_string_equal(e.fstype, "ext3");
    /* large device numbers */
    assert_int_equal(mountinfo_parse_line("1 2 4095:1048575 / /x rw - fuse a rw", &e), 0);
    assert_int_equal(e.major, 4095);
    assert_int_equal(e.minor, 1048575);
}

static void test_parse_escapes(void **state)
{
    (void)state;
    struct mountinfo_entry e;
    assert_int_equal(mountinfo_parse_line("50 27 0:52 / /tmp/a\\040b\\011c\\012d\\134e rw - "
                                          "fuse.zipperfs src rw\n",
                                          &e),
                     0);
    assert_string_equal(e.mountpoint, "/tmp/a b\tc\nd\\e");
    /* bytes the kernel leaves as they are (UTF-8) */
    assert_int_equal(mountinfo_parse_line("50 27 0:52 / /tmp/\xc3\xbc rw - fuse s rw", &e), 0);
    assert_string_equal(e.mountpoint, "/tmp/\xc3\xbc");
}

static void test_parse_rejects(void **state)
{
    (void)state;
    struct mountinfo_entry e;
    static const char *const bad[] = {
        "",
        "\n",
        "44 27",
        "44 27 0:41 / /mnt rw",                     /* no "-" */
        "44 27 0:41 / /mnt rw shared:1",            /* no "-" after optional fields */
        "44 27 0:41 / /mnt rw -",                   /* no type */
        "44 27 0-41 / /mnt rw - fuse s rw",         /* device */
        "44 27 :41 / /mnt rw - fuse s rw",
        "44 27 0: / /mnt rw - fuse s rw",
        "44 27 a:b / /mnt rw - fuse s rw",
        "44 27 0:41x / /mnt rw - fuse s rw",
        "44 27 0:99999999999 / /mnt rw - fuse s rw", /* too large */
        "44 27 0:41 / /m\\04 rw - fuse s rw",       /* short escape */
        "44 27 0:41 / /m\\09x rw - fuse s rw",      /* not octal */
        "44 27 0:41 / /m\\000 rw - fuse s rw",      /* a NUL */
        "44 27 0:41 / /m\\777 rw - fuse s rw",      /* not a byte */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (mountinfo_parse_line(bad[i], &e) != -EINVAL)
            fail_msg("accepted '%s'", bad[i]);

    /* a mount point longer than the entry holds */
    size_t n = sizeof(e.mountpoint) + 10;
    char *line = malloc(n + 64);
    assert_non_null(line);
    char *p = stpcpy(line, "1 2 0:3 / /");
    memset(p, 'a', n);
    strcpy(p + n, " rw - fuse s rw");
    assert_int_equal(mountinfo_parse_line(line, &e), -EINVAL);
    /* one that just fits */
    strcpy(p + sizeof(e.mountpoint) - 2, " rw - fuse s rw");
    assert_int_equal(mountinfo_parse_line(line, &e), 0);
    assert_int_equal(strlen(e.mountpoint), sizeof(e.mountpoint) - 1);
    free(line);
}

/* ---- finding the mount ------------------------------------------------ */

static const char MOUNTINFO[] =
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "30 22 0:25 / /mnt/data rw shared:5 - ext4 /dev/sdb1 rw\n"
    "not a mountinfo line\n"
    "41 30 0:40 / /mnt/data rw,nosuid - fuse.zipperfs gs://old rw,user_id=0\n"
    "42 41 0:44 / /mnt/data rw,nosuid - fuse.zipperfs gs://new rw,user_id=0\n"
    "43 22 0:45 / /mnt/other rw - tmpfs tmpfs rw\n"
    "44 22 0:46 / /mnt/with\\040space rw - fuse src rw\n"
    "45 22 0:47 / /mnt/sub rw - fuseblk /dev/sdc1 rw\n";

static void test_find_fuse_dev(void **state)
{
    (void)state;
    char *path = tu_write_temp(MOUNTINFO, sizeof(MOUNTINFO) - 1);
    unsigned major = 99, minor = 99;

    /* the mount on top, not the one below it nor the disk under both */
    assert_int_equal(mountinfo_find_fuse_dev(path, "/mnt/data", &major, &minor), 0);
    assert_int_equal(major, 0);
    assert_int_equal(minor, 44);
    assert_int_equal(mountinfo_find_fuse_dev(path, "/mnt/with space", &major, &minor), 0);
    assert_int_equal(minor, 46);
    /* not FUSE mounts of ours */
    assert_int_equal(mountinfo_find_fuse_dev(path, "/mnt/other", &major, &minor), -ENOENT);
    assert_int_equal(mountinfo_find_fuse_dev(path, "/mnt/sub", &major, &minor), -ENOENT);
    assert_int_equal(mountinfo_find_fuse_dev(path, "/", &major, &minor), -ENOENT);
    /* a prefix is not the mount point */
    assert_int_equal(mountinfo_find_fuse_dev(path, "/mnt/dat", &major, &minor), -ENOENT);
    assert_int_equal(mountinfo_find_fuse_dev(path, "/mnt/data/", &major, &minor), -ENOENT);
    unlink(path);
    assert_int_equal(mountinfo_find_fuse_dev(path, "/mnt/data", &major, &minor), -ENOENT);
    free(path);
}

/* ---- the thread ------------------------------------------------------- */

/* A directory standing for /sys/class/bdi with 0:44/read_ahead_kb. */
struct fake_sys {
    char dir[64];
    char bdi[128];
    char value[320];
    char *mountinfo;
};

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        tu_die(path);
}

static unsigned read_value(const char *path)
{
    unsigned v = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        tu_die(path);
    if (fscanf(f, "%u", &v) != 1)
        v = 0;
    fclose(f);
    return v;
}

static void fake_sys_make(struct fake_sys *s)
{
    char sub[200];
    strcpy(s->dir, "/tmp/zipperfs-bdi-XXXXXX");
    if (!mkdtemp(s->dir))
        tu_die("mkdtemp");
    snprintf(s->bdi, sizeof(s->bdi), "%s/bdi", s->dir);
    snprintf(sub, sizeof(sub), "%s/0:44", s->bdi);
    if (mkdir(s->bdi, 0755) < 0 || mkdir(sub, 0755) < 0)
        tu_die(sub);
    snprintf(s->value, sizeof(s->value), "%s/read_ahead_kb", sub);
    write_text(s->value, "128\n");
    s->mountinfo = tu_write_temp(MOUNTINFO, sizeof(MOUNTINFO) - 1);
}

static void fake_sys_remove(struct fake_sys *s)
{
    char sub[200];
    snprintf(sub, sizeof(sub), "%s/0:44", s->bdi);
    unlink(s->value);
    rmdir(sub);
    rmdir(s->bdi);
    rmdir(s->dir);
    unlink(s->mountinfo);
    free(s->mountinfo);
}

static void test_thread_writes_value(void **state)
{
    (void)state;
    struct fake_sys s;
    struct readahead_setter *rs = NULL;
    fake_sys_make(&s);
    struct readahead_config cfg = {
        .mountpoint = "/mnt/data",
        .kb = 1024,
        .mountinfo_path = s.mountinfo,
        .bdi_dir = s.bdi,
        .find_ms = 1000,
        .settle_ms = 0,
    };
    assert_int_equal(readahead_start(&cfg, &rs), 0);
    assert_non_null(rs);
    /* the thread ends by itself: stop waits for it */
    int64_t deadline = clock_now_ms() + 5000;
    while (read_value(s.value) != 1024 && clock_now_ms() < deadline)
        clock_sleep_ms(5);
    assert_int_equal(readahead_stop(rs), 0);
    assert_int_equal(read_value(s.value), 1024);
    fake_sys_remove(&s);
}

static void test_thread_writes_again_when_lowered(void **state)
{
    (void)state;
    struct fake_sys s;
    struct readahead_setter *rs = NULL;
    fake_sys_make(&s);
    struct readahead_config cfg = {
        .mountpoint = "/mnt/data",
        .kb = 2048,
        .mountinfo_path = s.mountinfo,
        .bdi_dir = s.bdi,
        .find_ms = 1000,
        .settle_ms = 60000,
    };
    assert_int_equal(readahead_start(&cfg, &rs), 0);
    int64_t deadline = clock_now_ms() + 5000;
    while (read_value(s.value) != 2048 && clock_now_ms() < deadline)
        clock_sleep_ms(5);
    assert_int_equal(read_value(s.value), 2048);
    /* as the kernel does when the INIT reply comes after the write */
    write_text(s.value, "128\n");
    deadline = clock_now_ms() + 5000;
    while (read_value(s.value) != 2048 && clock_now_ms() < deadline)
        clock_sleep_ms(5);
    assert_int_equal(read_value(s.value), 2048);
    /* stopping ends the minute of watching at once */
    int64_t t0 = clock_now_ms();
    assert_int_equal(readahead_stop(rs), 0);
    assert_true(clock_now_ms() - t0 < 2000);
    fake_sys_remove(&s);
}

static void test_thread_failures(void **state)
{
    (void)state;
    struct fake_sys s;
    struct readahead_setter *rs = NULL;
    fake_sys_make(&s);
    struct readahead_config cfg = {
        .mountpoint = "/mnt/other", /* not a FUSE mount */
        .kb = 1024,
        .mountinfo_path = s.mountinfo,
        .bdi_dir = s.bdi,
        .find_ms = 50,
        .settle_ms = 0,
    };
    /* stopped early, the thread would say -ECANCELED: let it give up */
    assert_int_equal(readahead_start(&cfg, &rs), 0);
    clock_sleep_ms(500);
    assert_int_equal(readahead_stop(rs), -ENOENT);
    assert_int_equal(read_value(s.value), 128);

    /* a FUSE mount whose bdi is not there (0:46) */
    cfg.mountpoint = "/mnt/with space";
    assert_int_equal(readahead_start(&cfg, &rs), 0);
    clock_sleep_ms(500);
    assert_int_equal(readahead_stop(rs), -ENOENT);

    /* stopped while it looks for the mount */
    cfg.mountpoint = "/mnt/not-yet";
    cfg.find_ms = 60000;
    assert_int_equal(readahead_start(&cfg, &rs), 0);
    assert_int_equal(readahead_stop(rs), -ECANCELED);
    cfg.find_ms = 50;

    /* a bdi that cannot be written (root may write anyway) */
    if (geteuid() != 0) {
        chmod(s.value, 0444);
        cfg.mountpoint = "/mnt/data";
        assert_int_equal(readahead_start(&cfg, &rs), 0);
        clock_sleep_ms(500);
        assert_int_equal(readahead_stop(rs), -EACCES);
        assert_int_equal(read_value(s.value), 128);
    }

    /* 0: nothing to do, no thread */
    cfg.kb = 0;
    rs = (struct readahead_setter *)&cfg;
    assert_int_equal(readahead_start(&cfg, &rs), 0);
    assert_null(rs);
    assert_int_equal(readahead_stop(NULL), 0);
    fake_sys_remove(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_fuse_line),
        cmocka_unit_test(test_parse_optional_fields),
        cmocka_unit_test(test_parse_escapes),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_find_fuse_dev),
        cmocka_unit_test(test_thread_writes_value),
        cmocka_unit_test(test_thread_writes_again_when_lowered),
        cmocka_unit_test(test_thread_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
