"""The kernel's readahead of the mount: -o read_ahead_kb=N is written to
/sys/class/bdi/MAJOR:MINOR/read_ahead_kb of the mount's own device; 0,
the default, leaves the kernel's value. Needs root (as the
mounts of these tests do): where the bdi cannot be written, these tests
fail rather than pass without having checked anything."""

import os
import subprocess
import time

import harness

# the kernel's readahead of a new FUSE mount (VM_READAHEAD_PAGES); the INIT
# reply does not lower it: zipperfs answers with at least 1 MiB
KERNEL_DEFAULT_KB = 128


def bdi_path(mnt):
    st = os.stat(mnt)
    return "/sys/class/bdi/%d:%d/read_ahead_kb" % (os.major(st.st_dev), os.minor(st.st_dev))


def read_kb(path):
    with open(path) as f:
        return int(f.read())


class ReadaheadTest(harness.MountTestCase):
    def setUp(self):
        self.src = self.tempdir()
        with open(os.path.join(self.src, "blob.bin"), "wb") as f:
            f.write(os.urandom(4 << 20))

    def wait_for_kb(self, mnt, want, log=lambda: ""):
        """The daemon sets the value from a thread right after the mount:
        waits up to 10 s for it, then fails with what the bdi holds."""
        path = bdi_path(mnt)
        deadline = time.monotonic() + 10
        value = read_kb(path)
        while value != want and time.monotonic() < deadline:
            time.sleep(0.02)
            value = read_kb(path)
        self.assertEqual(value, want, "%s holds %d, not %d; the daemon's log:\n%s"
                         % (path, value, want, log()))
        return path

    def check_reads(self, mnt):
        with open(os.path.join(self.src, "blob.bin"), "rb") as ref, \
                open(os.path.join(mnt, "blob.bin"), "rb") as f:
            self.assertEqual(f.read(), ref.read())

    def test_bdi_is_writable_here(self):
        # what the other tests rely on, said plainly when it is missing
        self.assertEqual(os.geteuid(), 0, "these tests mount as root")
        self.assertTrue(os.path.isdir("/sys/class/bdi"), "no /sys/class/bdi")
        m = self.mount(self.src, ["read_ahead_kb=0"])
        path = bdi_path(m.mnt)
        self.assertTrue(os.access(path, os.W_OK), "%s is not writable" % path)

    def test_value_is_written(self):
        for kb in (512, 4096):
            m = self.mount(self.src, ["read_ahead_kb=%d" % kb])
            self.wait_for_kb(m.mnt, kb, m.log_text)
            self.check_reads(m.mnt)
            # it stays, once the kernel has taken the INIT reply
            time.sleep(1.5)
            self.assertEqual(read_kb(bdi_path(m.mnt)), kb)
            self.assertIn("kernel readahead of the mount: %d KiB" % kb, m.log_text())

    def test_zero_leaves_the_kernel_value(self):
        m = self.mount(self.src, ["read_ahead_kb=0"])
        path = bdi_path(m.mnt)
        # a setter would have acted within milliseconds
        time.sleep(1.5)
        self.assertEqual(read_kb(path), KERNEL_DEFAULT_KB)
        self.check_reads(m.mnt)
        self.assertNotIn("kernel readahead", m.log_text())

    def test_default_is_the_kernel_value(self):
        # README.md and --help say the default is 0
        m = self.mount(self.src)
        path = bdi_path(m.mnt)
        time.sleep(1.5)
        self.assertEqual(read_kb(path), KERNEL_DEFAULT_KB)
        self.check_reads(m.mnt)
        self.assertNotIn("kernel readahead", m.log_text())

    def test_mount_point_with_a_space(self):
        # mountinfo writes it as \040
        mnt = os.path.join(self.tempdir(), "a dir\twith blanks")
        os.mkdir(mnt)
        m = self.mount(self.src, ["read_ahead_kb=2048"], mountpoint=mnt)
        self.wait_for_kb(m.mnt, 2048, m.log_text)

    def test_relative_mount_point_through_a_link(self):
        # libfuse mounts on the resolved path, which mountinfo shows; the
        # daemon (in the background) has left its directory by then
        work = self.tempdir()
        os.mkdir(os.path.join(work, "mnt"))
        os.symlink("mnt", os.path.join(work, "link"))
        mnt = os.path.join(work, "mnt")
        self.run_daemon(["link", "-o", "read_ahead_kb=2048"], mnt, cwd=work)
        self.wait_for_kb(mnt, 2048)

    def run_daemon(self, args, mnt, cwd=None):
        """zipperfs SOURCE ARGS in the background, unmounted at cleanup."""
        r = subprocess.run([harness.zipperfs_bin(), self.src] + args, capture_output=True,
                           text=True, timeout=30, cwd=cwd)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(subprocess.run, ["fusermount3", "-u", mnt], capture_output=True)
        self.assertTrue(harness.is_mounted(mnt))

    def test_background_daemon(self):
        # the daemon forks after parsing its options: the setter must run
        # in the process that stays
        mnt = os.path.join(self.tempdir(), "mnt")
        os.mkdir(mnt)
        self.run_daemon([mnt, "-o", "read_ahead_kb=3072"], mnt)
        self.wait_for_kb(mnt, 3072)
        self.check_reads(mnt)

    def test_read_only_sys_leaves_the_mount_working(self):
        # /sys read-only in a mount namespace of its own, as in a container:
        # the daemon warns once and serves the mount with the kernel's value
        mnt = os.path.join(self.tempdir(), "mnt")
        os.mkdir(mnt)
        log = os.path.join(self.tempdir(), "zipperfs.log")
        script = r"""
            set -e
            mount -o remount,bind,ro /sys
            "$ZIPPERFS" "$SRC" "$MNT" -f -o read_ahead_kb=1024 >"$LOG" 2>&1 &
            pid=$!
            trap 'fusermount3 -u "$MNT" 2>/dev/null; wait $pid' EXIT
            for i in $(seq 200); do mountpoint -q "$MNT" && break; sleep 0.05; done
            sleep 1.5
            cat "$MNT/blob.bin" | cmp - "$SRC/blob.bin"
            cat "/sys/class/bdi/$(mountpoint -d "$MNT")/read_ahead_kb"
        """
        env = dict(os.environ, ZIPPERFS=harness.zipperfs_bin(), SRC=self.src, MNT=mnt, LOG=log)
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                           capture_output=True, text=True, timeout=60, env=env)
        with open(log) as f:
            text = f.read()
        self.assertEqual(r.returncode, 0, r.stderr + text)
        self.assertEqual(int(r.stdout.split()[-1]), KERNEL_DEFAULT_KB)
        self.assertEqual(len([l for l in text.splitlines() if "kernel readahead" in l]), 1, text)
        self.assertIn("WARNING: kernel readahead of the mount left as it is", text)
        self.assertIn("Read-only file system", text)
        for mark in harness.SANITIZER_MARKS:
            self.assertNotIn(mark, text)

    def test_out_of_range(self):
        mnt = os.path.join(self.tempdir(), "mnt")
        os.mkdir(mnt)
        r = subprocess.run([harness.zipperfs_bin(), self.src, mnt, "-f",
                            "-o", "read_ahead_kb=65537"], capture_output=True, text=True,
                           timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("out of range", r.stderr)
        self.assertFalse(harness.is_mounted(mnt))


if __name__ == "__main__":
    harness.main()
