"""Shared fixtures of the integration tests: real mounts of zipperfs and the
servers they talk to, always torn down (unmount, then stop by PID) even when
a test fails.

    ZIPPERFS_BIN   the binary under test (set by meson; default build/zipperfs)
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(TOP, "scripts"))

import servers  # noqa: E402

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer", "UndefinedBehaviorSanitizer")


def mkdtemp(prefix, dir=None):
    """A new directory the run holds until servers.remove_dir(path), which
    a run killed by its time limit still gets (servers.py)."""
    return servers.hold("dirs", tempfile.mkdtemp(prefix=prefix, dir=dir))


def zipperfs_bin():
    return os.environ.get("ZIPPERFS_BIN", os.path.join(TOP, "build", "zipperfs"))


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mnt = fields[4].encode().decode("unicode_escape")
            if mnt == path:
                return True
    return False


class Mount:
    """zipperfs SOURCE MNT -f [options], run in the background."""

    def __init__(self, source, options=(), env=None, mountpoint=None, extra_args=()):
        self.tmp = mkdtemp("zfs-mnt-")
        self.mnt = mountpoint or os.path.join(self.tmp, "mnt")
        os.makedirs(self.mnt, exist_ok=True)
        self.log_path = os.path.join(self.tmp, "zipperfs.log")
        argv = [zipperfs_bin(), source, self.mnt, "-f"] + list(extra_args)
        opts = list(options)
        if opts:
            argv += ["-o", ",".join(opts)]
        run_env = dict(os.environ)
        run_env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        # a value of None takes the variable away
        for k, v in (env or {}).items():
            if v is None:
                run_env.pop(k, None)
            else:
                run_env[k] = v
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=run_env)
        servers.hold("pids", self.proc.pid)
        servers.hold("mounts", self.mnt)
        deadline = time.monotonic() + 20
        while not is_mounted(self.mnt):
            if self.proc.poll() is not None:
                self.log.close()
                text = self.log_text()
                servers.release("pids", self.proc.pid)
                servers.release("mounts", self.mnt)
                servers.remove_dir(self.tmp)
                raise RuntimeError("zipperfs exited with %s before mounting:\n%s"
                                   % (self.proc.returncode, text))
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("zipperfs did not mount within 20 s")
            time.sleep(0.02)

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def stats(self):
        """The daemon's .zipperfs/stats, parsed."""
        with open(self.path(".zipperfs", "stats")) as f:
            return json.load(f)

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self):
        """Unmounts and waits for the daemon; returns its exit status."""
        if is_mounted(self.mnt):
            for _ in range(50):
                r = subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True)
                if r.returncode == 0 or not is_mounted(self.mnt):
                    break
                time.sleep(0.1)
            else:
                subprocess.run(["fusermount3", "-uz", self.mnt], capture_output=True)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            servers.stop_server(self.proc)
        servers.release("pids", self.proc.pid)
        if not is_mounted(self.mnt):
            servers.release("mounts", self.mnt)
        self.log.close()
        return self.proc.returncode

    def cleanup(self):
        self.close()
        servers.remove_dir(self.tmp)


class GcsEmulator:
    """The Cloud Storage emulator of firebase-tools on 127.0.0.1."""

    def __init__(self):
        port = servers.free_port()
        argv = ["node", os.path.join(TOP, "scripts", "gcs-emulator.js"), "--port", str(port)]
        self.proc, self.addr = servers.start_server(argv, timeout=90,
                                                    stderr=subprocess.DEVNULL)
        self.endpoint = "http://" + self.addr

    def upload(self, bucket, name, data):
        url = "%s/upload/storage/v1/b/%s/o?uploadType=media&name=%s" % (
            self.endpoint, bucket, urllib.parse.quote(name, safe=""))
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def delete(self, bucket, name):
        url = "%s/storage/v1/b/%s/o/%s" % (self.endpoint, bucket,
                                           urllib.parse.quote(name, safe=""))
        req = urllib.request.Request(url, method="DELETE")
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()

    def stop(self):
        servers.stop_server(self.proc)


class MountTestCase(unittest.TestCase):
    """Fails a test whose daemon printed a sanitizer report or exited badly."""

    def mount(self, source, options=(), env=None, **kw):
        m = Mount(source, options, env=env, **kw)
        self.addCleanup(self._finish_mount, m)
        return m

    def _finish_mount(self, m):
        status = m.close()
        text = m.log_text()
        servers.remove_dir(m.tmp)
        for mark in SANITIZER_MARKS:
            if mark in text:
                self.fail("sanitizer report in the daemon's log:\n" + text[-4000:])
        if status not in (0, None):
            self.fail("zipperfs exited with status %s:\n%s" % (status, text[-4000:]))

    def tempdir(self):
        d = mkdtemp("zfs-test-")
        self.addCleanup(servers.remove_dir, d)
        return d

    def run_ok(self, argv, **kw):
        r = subprocess.run(argv, capture_output=True, text=True, **kw)
        if r.returncode != 0:
            self.fail("%s failed (%d):\n%s%s" % (argv, r.returncode, r.stdout, r.stderr))
        return r.stdout

    def assert_errno(self, fn, expected):
        try:
            fn()
        except OSError as e:
            self.assertEqual(e.errno, expected, "expected %s, got %s"
                             % (os.strerror(expected), e))
            return
        self.fail("no error where %s was expected" % os.strerror(expected))


def main():
    servers.release_all_on_sigterm()
    unittest.main(verbosity=2)
