"""The local-directory backend, mounted for real and browsed with the tools
users use."""

import errno
import json
import os
import subprocess

import harness
import treecheck


class LocalMountTest(harness.MountTestCase):
    def setUp(self):
        self.src = self.tempdir()
        treecheck.make_tree(self.src)

    def test_tree_matches_source(self):
        m = self.mount(self.src)
        treecheck.check_tree(self, self.src, m.mnt, work=self.tempdir())

    def test_large_file_copy_is_identical(self):
        m = self.mount(self.src)
        dst = os.path.join(self.tempdir(), "big.bam")
        self.run_ok(["cp", m.path("data", "big.bam"), dst])
        self.run_ok(["cmp", os.path.join(self.src, "data", "big.bam"), dst])
        # reading backwards and at random offsets gives the same bytes
        with open(os.path.join(self.src, "data", "big.bam"), "rb") as ref, \
                open(m.path("data", "big.bam"), "rb") as f:
            size = os.fstat(ref.fileno()).st_size
            for off in list(range(size - 65536, 0, -3 * 1048576)) + [0, 1, 4095, size - 1]:
                ref.seek(off)
                f.seek(off)
                self.assertEqual(f.read(65536), ref.read(65536), "offset %d" % off)

    def test_writes_fail_with_erofs(self):
        m = self.mount(self.src)
        readme = m.path("README.txt")
        self.assert_errno(lambda: open(m.path("new.txt"), "w"), errno.EROFS)
        self.assert_errno(lambda: open(readme, "w"), errno.EROFS)
        self.assert_errno(lambda: open(readme, "a"), errno.EROFS)
        self.assert_errno(lambda: os.mkdir(m.path("newdir")), errno.EROFS)
        self.assert_errno(lambda: os.unlink(readme), errno.EROFS)
        self.assert_errno(lambda: os.rmdir(m.path("empty")), errno.EROFS)
        self.assert_errno(lambda: os.rename(readme, m.path("moved.txt")), errno.EROFS)
        self.assert_errno(lambda: os.chmod(readme, 0o600), errno.EROFS)
        self.assert_errno(lambda: os.chown(readme, 1, 1), errno.EROFS)
        self.assert_errno(lambda: os.truncate(readme, 0), errno.EROFS)
        self.assert_errno(lambda: os.utime(readme, (1, 1)), errno.EROFS)
        self.assert_errno(lambda: os.symlink("x", m.path("link")), errno.EROFS)
        self.assert_errno(lambda: os.setxattr(readme, "user.x", b"1"), errno.EROFS)
        r = subprocess.run(["touch", m.path("t")], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Read-only file system", r.stderr)
        # the source is untouched
        self.assertEqual(sorted(os.listdir(self.src)),
                         sorted(["README.txt", "zero.bin", "data", "empty", "ünïcödé",
                                 "n" * 255]))

    def test_missing_paths_are_enoent(self):
        m = self.mount(self.src)
        self.assert_errno(lambda: os.stat(m.path("nope")), errno.ENOENT)
        self.assert_errno(lambda: os.stat(m.path("data", "nope", "deeper")), errno.ENOENT)
        self.assert_errno(lambda: open(m.path("nope.txt")), errno.ENOENT)
        self.assert_errno(lambda: os.listdir(m.path("README.txt")), errno.ENOTDIR)
        # the control directory is not listed at the root
        self.assertNotIn(".zipperfs", os.listdir(m.mnt))

    def test_logs_are_json_in_production(self):
        m = self.mount(self.src, env={"PRODUCTION_DEPLOYMENT": "TRUE"})
        os.listdir(m.mnt)
        m.close()
        lines = [l for l in m.log_text().splitlines() if l.strip()]
        self.assertTrue(lines)
        for line in lines:
            rec = json.loads(line)
            self.assertIn(rec["severity"], ("DEBUG", "INFO", "WARNING", "ERROR"))
            self.assertTrue(rec["message"])
            self.assertRegex(rec["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

    def test_logs_are_text_by_default(self):
        m = self.mount(self.src, env={"PRODUCTION_DEPLOYMENT": "0"})
        os.listdir(m.mnt)
        m.close()
        text = m.log_text()
        self.assertIn("zipperfs INFO: mounted", text)
        self.assertNotIn('"severity"', text)


if __name__ == "__main__":
    harness.main()
