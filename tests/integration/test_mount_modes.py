"""How zipperfs gets mounted: in the background (daemon), by mount(8) with
-t fuse.zipperfs, and from an fstab line with the options mount(8) passes."""

import os
import subprocess
import time

import harness
import treecheck


def daemon_pids(mnt):
    """PIDs of processes whose command line names this (unique) mount point."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if mnt.encode() in args and any(a.endswith(b"zipperfs") for a in args[:1]):
            pids.append(int(d))
    return pids


class MountModesTest(harness.MountTestCase):
    def setUp(self):
        self.src = self.tempdir()
        treecheck.make_tree(self.src, big_size=1 << 20)
        self.mnt = os.path.join(self.tempdir(), "mnt")
        os.mkdir(self.mnt)
        self.addCleanup(self.unmount)

    def unmount(self):
        if harness.is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True)
        deadline = time.monotonic() + 10
        while daemon_pids(self.mnt) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in daemon_pids(self.mnt):
            os.kill(pid, 9)
            self.fail("the daemon %d did not exit after unmount" % pid)

    def env_with_binary_on_path(self):
        """mount(8) runs helpers with a fixed PATH, so mount.fuse3 finds
        `zipperfs` only in the standard directories: link the binary under
        test into /usr/local/sbin for this test (never over a file there)."""
        link = "/usr/local/sbin/zipperfs"
        if os.path.lexists(link):
            if os.path.realpath(link) != os.path.realpath(harness.zipperfs_bin()):
                self.skipTest("%s exists and is not the binary under test" % link)
        else:
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(os.path.abspath(harness.zipperfs_bin()), link)
            self.addCleanup(os.unlink, link)
        return dict(os.environ)

    def test_background_daemon(self):
        r = subprocess.run([harness.zipperfs_bin(), self.src, self.mnt], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(harness.is_mounted(self.mnt), "returned before mounting")
        self.assertEqual(len(daemon_pids(self.mnt)), 1)
        treecheck.check_tree(self, self.src, self.mnt)
        subprocess.run(["fusermount3", "-u", self.mnt], check=True)
        deadline = time.monotonic() + 10
        while daemon_pids(self.mnt) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(daemon_pids(self.mnt), [], "the daemon outlived its mount")

    def test_mount_t_fuse_zipperfs(self):
        r = subprocess.run(["mount", "-t", "fuse.zipperfs", self.src, self.mnt,
                            "-o", "stat_ttl=30,list_ttl=30,allow_other"],
                           capture_output=True, text=True, env=self.env_with_binary_on_path(),
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        treecheck.check_tree(self, self.src, self.mnt)
        with open("/proc/self/mountinfo") as f:
            line = [l for l in f if " %s " % self.mnt in l][0]
        self.assertIn("fuse.zipperfs", line)
        self.assertIn(self.src, line)  # fsname: what `mount` and `df` show
        self.assertIn("allow_other", line)
        self.assertIn("max_read=1048576", line)  # reads of up to 1 MiB

    def test_fstab_line(self):
        fstab = os.path.join(self.tempdir(), "fstab")
        with open(fstab, "w") as f:
            f.write("# a test fstab\n%s  %s  fuse.zipperfs  "
                    "_netdev,nofail,noauto,x-systemd.automount,x-systemd.mount-timeout=30,"
                    "defaults,stat_ttl=10,file_mode=0444  0  0\n" % (self.src, self.mnt))
        r = subprocess.run(["mount", "-T", fstab, self.mnt], capture_output=True, text=True,
                           env=self.env_with_binary_on_path(), timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(harness.is_mounted(self.mnt))
        st = os.stat(os.path.join(self.mnt, "README.txt"))
        self.assertEqual(st.st_mode & 0o777, 0o444)
        treecheck.check_tree(self, self.src, self.mnt)

    def test_bad_source_fails_clearly(self):
        for source, words in (("gs://Bad_Bucket!", "bucket"),
                              (os.path.join(self.src, "nope"), "No such file"),
                              ("s3x://what", "unsupported scheme")):
            r = subprocess.run([harness.zipperfs_bin(), source, self.mnt, "-f"],
                               capture_output=True, text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(words, r.stderr)
            self.assertFalse(harness.is_mounted(self.mnt))

    def test_help_and_version(self):
        r = subprocess.run([harness.zipperfs_bin(), "--help"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        self.assertIn("gs://BUCKET", r.stdout)
        self.assertIn("stat_ttl", r.stdout)
        r = subprocess.run([harness.zipperfs_bin(), "--version"], capture_output=True, text=True)
        self.assertIn("zipperfs version", r.stdout)


if __name__ == "__main__":
    harness.main()
