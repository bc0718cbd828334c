"""Archive requests through a real mount: MNT/.zipperfs/requests/NAME is
written (a text list, or a FileDownloadMessage made by `protoc --encode`
from our .proto files), closing it submits it, and archives/NAME.zip (or
<md5>.zip) and archives/NAME.status appear. Checked with unzip -t,
Python's zipfile, zipcheck (libzip, every CRC-32), the manifests against
what the original service's rules give (computed here in Python with
json.dumps), the status file, and errno values of bad requests.

    ZIPPERFS_BIN   the binary under test (default build/zipperfs)
    ZIPCHECK_BIN   tests/tools/zipcheck of the same build
"""

import errno
import hashlib
import json
import os
import subprocess
import time
import zipfile

import harness
import servers
from gcs_common import GcsTestCase

CONTROL = ".zipperfs"
PROTO_DIR = os.path.join(harness.TOP, "proto")
MISSING = " [Error: unable to retrieve file]"


def zipcheck_bin():
    return os.environ.get("ZIPCHECK_BIN",
                          os.path.join(harness.TOP, "build", "tests", "tools", "zipcheck"))


def encode_request(files, email="ada@example.org", name="Ada Lovelace", rid=None):
    """A FileDownloadMessage serialized by protoc (not by our code)."""
    lines = ['requester { email: %s name: %s%s }' % (
        json.dumps(email), json.dumps(name), (" id: %s" % json.dumps(rid)) if rid is not None
        else "")]
    for obj, size in files:
        lines.append('files { object: %s object_size: %d }' % (json.dumps(obj), size))
    r = subprocess.run(["protoc", "-I", PROTO_DIR, "--encode=fdl_svc.FileDownloadMessage",
                        os.path.join(PROTO_DIR, "file_download.proto")],
                       input="\n".join(lines).encode(), capture_output=True, check=True)
    return r.stdout


def md5_name(objects):
    return hashlib.md5(",".join(sorted(objects)).encode()).hexdigest()


def expected_list_manifest(entries):
    """entries: [(path, found)] -> the original's list manifest bytes."""
    return json.dumps([p if found else p + MISSING for p, found in entries], indent=2).encode()


def expected_nested_manifest(entries):
    root = {}
    for path, found in entries:
        if not found:
            continue
        parts = path.split("/")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node.setdefault("contents", []).append(parts[-1])
    return json.dumps(root, indent=2).encode()


def spooled(spool):
    """The messages of notify_dir as its consumers see them (README):
    *.pb files; dot files are zipperfs's temporaries being linked into
    place, the same bytes under another name for a moment."""
    return sorted(f for f in os.listdir(spool) if f.endswith(".pb") and not f.startswith("."))


def write_request(path, data):
    """Writes and closes a request; returns the errno of close (0 if none)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        try:
            os.close(fd)
        except OSError as e:
            return e.errno
    return 0


class RequestChecks:
    """Run against each backend. The backend class provides, from
    setUpClass, cls.files ({relpath: bytes} of the source) and
    rmount(options) -> Mount."""

    def control(self, m, *parts):
        return m.path(CONTROL, *parts)

    def status(self, m, name):
        with open(self.control(m, "archives", name + ".status")) as f:
            return json.load(f)

    def wait_state(self, m, name, states=("done", "failed"), timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                st = self.status(m, name)
            except FileNotFoundError:
                # a request submitted by its release (not its close) shows
                # up a moment after the close returned
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            if st["state"] in states or time.monotonic() > deadline:
                return st
            time.sleep(0.05)

    def check_archive(self, zpath, members, manifest_base, entries):
        """members: [relpath] in archive order (without the manifests)."""
        r = subprocess.run(["unzip", "-t", zpath], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = subprocess.run([zipcheck_bin(), zpath], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        nested = manifest_base + ".nested.manifest.json"
        lst = manifest_base + ".list.manifest.json"
        with zipfile.ZipFile(zpath) as z:
            self.assertEqual(z.namelist(), members + [nested, lst])
            for name in members:
                self.assertEqual(z.read(name), self.files[name], name)
            self.assertEqual(z.read(lst), expected_list_manifest(entries))
            self.assertEqual(z.read(nested), expected_nested_manifest(entries))
            for info in z.infolist():
                self.assertEqual(info.compress_type, zipfile.ZIP_STORED)

    # -- tests

    def test_text_request(self):
        m = self.rmount()
        req = b"# a comment\n\na/one.txt\n./a//b/\nnot/there.txt\nbig.bin\n"
        self.assertEqual(write_request(self.control(m, "requests", "mine"), req), 0)
        st = self.wait_state(m, "mine")
        self.assertEqual(st["state"], "done", st)
        self.assertEqual(st["format"], "text")
        self.assertEqual(st["missing"], 1)
        self.assertEqual(st["members_done"], st["members_total"])
        self.assertEqual(st["bytes_done"], st["bytes_total"])
        self.assertEqual(st["eta_seconds"], 0)
        members = ["a/one.txt", "a/b/c.txt", "a/b/d/deep.txt", "big.bin"]
        entries = [("a/one.txt", True), ("a/b/c.txt", True), ("a/b/d/deep.txt", True),
                   ("not/there.txt", False), ("big.bin", True)]
        self.assertIn("mine.zip", os.listdir(self.control(m, "archives")))
        self.assertIn("mine.status", os.listdir(self.control(m, "archives")))
        zpath = self.control(m, "archives", "mine.zip")
        self.check_archive(zpath, members, "mine", entries)
        # the request file was a spool: gone once submitted
        self.assertFalse(os.path.exists(self.control(m, "requests", "mine")))

    def test_protobuf_request(self):
        m = self.rmount()
        objects = ["big.bin", "a/one.txt", "a/b", "gone.bin"]
        data = encode_request([(o, len(self.files.get(o, b""))) for o in objects], rid="u-17")
        # the name it is written under does not matter: the bytes decide
        self.assertEqual(write_request(self.control(m, "requests", "portal.txt"), data), 0)
        name = md5_name(objects)
        st = self.wait_state(m, name)
        self.assertEqual(st["state"], "done", st)
        self.assertEqual(st["format"], "protobuf")
        self.assertEqual(st["requesters"], 1)
        members = ["big.bin", "a/one.txt", "a/b/c.txt", "a/b/d/deep.txt"]
        entries = [("big.bin", True), ("a/one.txt", True), ("a/b/c.txt", True),
                   ("a/b/d/deep.txt", True), ("gone.bin", False)]
        self.check_archive(self.control(m, "archives", name + ".zip"), members, name, entries)

    def test_file_inside_requested_directory_stored_once(self):
        m = self.rmount()
        req = b"a/b/c.txt\na/\n"
        self.assertEqual(write_request(self.control(m, "requests", "twice"), req), 0)
        self.assertEqual(self.wait_state(m, "twice")["state"], "done")
        # the directory's walk goes in name order; c.txt is already there
        members = ["a/b/c.txt", "a/b/d/deep.txt", "a/one.txt"]
        entries = [(p, True) for p in members]
        self.check_archive(self.control(m, "archives", "twice.zip"), members, "twice", entries)

    def test_bad_requests(self):
        m = self.rmount()
        # an empty request is refused in its status file; its close cannot
        # fail: with nothing written, the close is not told apart from a
        # shell closing a copy of the descriptor before the command writes
        self.assertEqual(write_request(self.control(m, "requests", "empty"), b""), 0)
        self.assertEqual(self.wait_state(m, "empty")["state"], "failed")
        self.assertIn("empty", self.status(m, "empty")["error"])
        bad = {
            "comments": b"# nothing\n\n",
            "abs": b"/etc/passwd\n",
            "dotdot": b"a/../../etc/passwd\n",
            "binary": bytes(range(256)) * 4,
            "control": b"a\x01b\n",
        }
        for name, data in bad.items():
            self.assertEqual(write_request(self.control(m, "requests", name), data),
                             errno.EINVAL, name)
            st = self.status(m, name)
            self.assertEqual(st["state"], "failed", (name, st))
            self.assertTrue(st["error"], name)
            self.assertNotIn(name + ".zip", os.listdir(self.control(m, "archives")))
        # too many paths for the limit given at mount
        m2 = self.rmount(["max_request_paths=3"])
        self.assertEqual(write_request(self.control(m2, "requests", "many"),
                                       b"a\nb\nc\nd\n"), errno.EINVAL)
        self.assertIn("3", self.status(m2, "many")["error"])
        # writes past the byte limit fail as they happen
        m3 = self.rmount(["max_request_mb=1"])
        fd = os.open(self.control(m3, "requests", "huge"), os.O_WRONLY | os.O_CREAT)
        try:
            self.assert_errno(lambda: os.pwrite(fd, b"x\n", 2 << 20), errno.EFBIG)
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
        # the daemon is alive and serving
        self.assertEqual(sorted(os.listdir(m.path("a"))), ["b", "one.txt"])
        with open(self.control(m, "stats")) as f:
            stats = json.load(f)
        self.assertEqual(stats["requests"]["refused"], len(bad) + 1)

    def test_only_requests_is_writable(self):
        m = self.rmount()
        for path in (self.control(m, "archives", "x"), self.control(m, "x"),
                     self.control(m, "tree", "x"), m.path("new.txt")):
            self.assert_errno(lambda: open(path, "wb"), errno.EROFS)
        self.assert_errno(lambda: os.mkdir(self.control(m, "requests", "d")), errno.EROFS)

    def test_identical_requests_share_one_job(self):
        m = self.rmount()
        objects = ["a/one.txt", "big.bin"]
        first = encode_request([(o, 0) for o in objects], email="a@example.org", name="A")
        second = encode_request([(o, 0) for o in reversed(objects)], email="b@example.org",
                                name="B")
        self.assertEqual(write_request(self.control(m, "requests", "r1"), first), 0)
        self.assertEqual(write_request(self.control(m, "requests", "r2"), second), 0)
        # the same requester again is not a second requester
        self.assertEqual(write_request(self.control(m, "requests", "r3"), first), 0)
        name = md5_name(objects)
        st = self.wait_state(m, name)
        self.assertEqual(st["state"], "done", st)
        self.assertEqual(st["requesters"], 2)
        with open(self.control(m, "stats")) as f:
            stats = json.load(f)["requests"]
        self.assertEqual(stats["submitted"], 3)
        self.assertEqual(stats["shared"], 2)
        self.assertEqual(stats["done"], 1)
        self.assertEqual(m.log_text().count("request %s: materializing" % name), 1)

    def test_reader_materializes_without_jobs(self):
        m = self.rmount(["max_jobs=0"])
        self.assertEqual(write_request(self.control(m, "requests", "lazy"),
                                       b"big.bin\na/one.txt\n"), 0)
        time.sleep(0.3)
        st = self.status(m, "lazy")
        self.assertEqual(st["state"], "queued", st)
        # streaming it to its end materializes it
        with open(self.control(m, "archives", "lazy.zip"), "rb") as f:
            while f.read(1 << 20):
                pass
        st = self.wait_state(m, "lazy", timeout=10)
        self.assertEqual(st["state"], "done", st)

    def test_rewritten_text_request_replaces(self):
        m = self.rmount()
        self.assertEqual(write_request(self.control(m, "requests", "r"), b"a/one.txt\n"), 0)
        self.assertEqual(self.wait_state(m, "r")["state"], "done")
        self.assertEqual(write_request(self.control(m, "requests", "r"), b"big.bin\n"), 0)
        self.assertEqual(self.wait_state(m, "r")["state"], "done")
        with zipfile.ZipFile(self.control(m, "archives", "r.zip")) as z:
            self.assertEqual(z.namelist()[0], "big.bin")
        self.assertEqual(m.log_text().count("request r: replaced by a new request"), 1)
        # a refused request written again is not "replaced": it had nothing
        self.assertEqual(write_request(self.control(m, "requests", "q"), b"/abs\n"),
                         errno.EINVAL)
        self.assertEqual(write_request(self.control(m, "requests", "q"), b"a/one.txt\n"), 0)
        self.assertEqual(self.wait_state(m, "q")["state"], "done")
        self.assertNotIn("request q: replaced", m.log_text())

    def test_request_written_again_at_once(self):
        # close() returns once the request is submitted; the kernel tells
        # the daemon that the file is released a moment later. Writing the
        # same request again at once is not a second writer: never EBUSY.
        m = self.rmount(["max_jobs=0"])
        path = self.control(m, "requests", "again")
        for i in range(100):
            self.assertEqual(write_request(path, b"a/one.txt\n"), 0, "round %d" % i)
            self.assertEqual(write_request(path, b"/abs\n"), errno.EINVAL, "round %d" % i)
        # a writer that really is open still keeps a second one out
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"a/one.txt\n")
            with self.assertRaises(OSError) as cm:
                os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self.assertEqual(cm.exception.errno, errno.EBUSY)
        finally:
            os.close(fd)


def make_files():
    rnd = os.urandom
    return {
        "a/one.txt": b"one\n",
        "a/b/c.txt": b"c" * 1000,
        "a/b/d/deep.txt": rnd(70000),
        "big.bin": rnd(3 << 20),
        "other/x.txt": b"x\n",
    }


class LocalRequestTest(RequestChecks, harness.MountTestCase):
    @classmethod
    def setUpClass(cls):
        cls.files = make_files()
        cls.src = harness.mkdtemp("zfs-req-src-")
        for rel, data in cls.files.items():
            path = os.path.join(cls.src, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)

    @classmethod
    def tearDownClass(cls):
        servers.remove_dir(cls.src)

    def rmount(self, options=()):
        cache = self.tempdir()
        return self.mount(self.src, ["cache_dir=" + cache] + list(options))


class GcsRequestTest(RequestChecks, GcsTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.files = make_files()
        for rel, data in cls.files.items():
            cls.emu.upload("reqs", rel, data)

    def rmount(self, options=()):
        cache = self.tempdir()
        return self.mount("gs://reqs", ["auth=none", "cache_dir=" + cache] + list(options))


def load_notification_module(tmp):
    """notification_pb2, generated by protoc from our .proto file and run by
    Debian's python3-protobuf: a decoder we did not write."""
    subprocess.run(["protoc", "-I", PROTO_DIR, "--python_out=" + tmp,
                    os.path.join(PROTO_DIR, "notification.proto")], check=True)
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "notification_pb2", os.path.join(tmp, "notification_pb2.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class NotificationTest(harness.MountTestCase):
    """One UserNotificationMessage per requester, to an HTTP endpoint and a
    directory, through a durable outbox."""

    @classmethod
    def setUpClass(cls):
        cls.files = make_files()
        cls.src = harness.mkdtemp("zfs-req-src-")
        for rel, data in cls.files.items():
            path = os.path.join(cls.src, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        cls.pbdir = harness.mkdtemp("zfs-pb-")
        cls.pb = load_notification_module(cls.pbdir)

    @classmethod
    def tearDownClass(cls):
        servers.remove_dir(cls.src)
        servers.remove_dir(cls.pbdir)

    def receiver(self, port=None, fail_first=0):
        import servers
        port = port or servers.free_port()
        log = os.path.join(self.tempdir(), "posts.jsonl")
        proc, addr = servers.start_server(servers.script_argv(
            "notify_receiver.py", "--port", port, "--log", log, "--fail-first", fail_first))
        self.addCleanup(servers.stop_server, proc)
        return proc, addr, log

    def posts(self, log, answered=200):
        import base64
        out = []
        try:
            with open(log) as f:
                for line in f:
                    rec = json.loads(line)
                    if rec["answered"] == answered:
                        rec["body"] = base64.b64decode(rec["body"])
                        out.append(rec)
        except FileNotFoundError:
            pass
        return out

    def wait_posts(self, log, n, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.posts(log)
            if len(got) >= n:
                return got
            time.sleep(0.05)
        self.fail("%d notifications expected, %d received" % (n, len(self.posts(log))))

    def decode(self, body):
        msg = self.pb.UserNotificationMessage()
        msg.ParseFromString(body)
        return msg

    def wait_done(self, m, name):
        return RequestChecks.wait_state(self, m, name)

    status = RequestChecks.status
    control = RequestChecks.control

    def nmount(self, options, cache=None):
        cache = cache or self.tempdir()
        return self.mount(self.src, ["cache_dir=" + cache, "notify_retry_max=1"] + list(options))

    def test_http_and_directory_sinks(self):
        _, addr, log = self.receiver()
        spool = self.tempdir()
        m = self.nmount(["notify_url=http://%s/hook/done" % addr, "notify_dir=" + spool,
                         "email_domain=example.org"])
        objects = ["a/one.txt", "big.bin"]
        data = encode_request([(o, 1) for o in objects], email="ada@example.org",
                              name="Ada Lovelace", rid="u-17")
        self.assertEqual(write_request(self.control(m, "requests", "p"), data), 0)
        self.assertEqual(write_request(self.control(m, "requests", "t"), b"a/b/\n"), 0)
        name = md5_name(objects)
        self.assertEqual(self.wait_done(m, name)["state"], "done")
        self.assertEqual(self.wait_done(m, "t")["state"], "done")
        posts = self.wait_posts(log, 2)
        self.assertEqual(len(posts), 2)
        by_zip = {}
        for p in posts:
            self.assertEqual(p["path"], "/hook/done")
            self.assertEqual(p["headers"]["content-type"], "application/octet-stream")
            msg = self.decode(p["body"])
            by_zip[msg.zipfile] = (msg, p["body"])
        msg, body = by_zip[name + ".zip"]
        self.assertEqual(msg.requester.email, "ada@example.org")
        self.assertEqual(msg.requester.name, "Ada Lovelace")
        self.assertTrue(msg.requester.HasField("id"))
        self.assertEqual(msg.requester.id, "u-17")
        self.assertEqual(list(msg.files), objects)
        # the text request's requester is the local user who wrote it
        import pwd
        user = pwd.getpwuid(os.getuid())
        msg_t, _ = by_zip["t.zip"]
        self.assertEqual(msg_t.requester.email, user.pw_name + "@example.org")
        self.assertEqual(msg_t.requester.name, user.pw_gecos.split(",")[0] or user.pw_name)
        self.assertFalse(msg_t.requester.HasField("id"))
        self.assertEqual(list(msg_t.files), ["a/b/"])
        # the directory sink: one file per message, the same bytes
        deadline = time.monotonic() + 10
        while len(spooled(spool)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        got = []
        for f in spooled(spool):
            with open(os.path.join(spool, f), "rb") as fh:
                got.append(fh.read())
        self.assertEqual(sorted(got), sorted(b for _, b in by_zip.values()))
        self.assertEqual(self.status(m, name)["notified"], 1)

    def test_two_requesters_two_notifications(self):
        _, addr, log = self.receiver()
        m = self.nmount(["notify_url=http://%s/n" % addr])
        objects = ["big.bin", "other/x.txt"]
        for i, who in enumerate(("a@example.org", "b@example.org")):
            data = encode_request([(o, 0) for o in objects], email=who, name=who)
            self.assertEqual(write_request(self.control(m, "requests", "r%d" % i), data), 0)
        name = md5_name(objects)
        self.assertEqual(self.wait_done(m, name)["state"], "done")
        posts = self.wait_posts(log, 2)
        time.sleep(0.5)  # nothing more comes
        posts = self.posts(log)
        self.assertEqual(sorted(self.decode(p["body"]).requester.email for p in posts),
                         ["a@example.org", "b@example.org"])
        self.assertEqual(m.log_text().count("request %s: materializing" % name), 1)

    def test_endpoint_down_then_up(self):
        import servers
        port = servers.free_port()
        m = self.nmount(["notify_url=http://127.0.0.1:%d/n" % port])
        self.assertEqual(write_request(self.control(m, "requests", "later"), b"a/one.txt\n"), 0)
        self.assertEqual(self.wait_done(m, "later")["state"], "done")
        time.sleep(1.5)  # several refused attempts
        _, _, log = self.receiver(port=port, fail_first=2)
        posts = self.wait_posts(log, 1)
        self.assertEqual(self.decode(posts[0]["body"]).zipfile, "later.zip")
        # the two 503s were retried
        self.assertEqual(len(self.posts(log, answered=503)), 2)
        time.sleep(0.5)
        self.assertEqual(len(self.posts(log)), 1)

    def test_outbox_full_then_room(self):
        # the outbox on a small tmpfs, filled up: the message cannot be
        # written, the status says so, and once there is room again it is
        # queued and delivered without anyone asking
        if os.geteuid() != 0:
            self.skipTest("mounting a tmpfs needs root")
        cache = self.tempdir()
        outbox = os.path.join(cache, "outbox")
        os.makedirs(outbox)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", outbox], check=True)
        self.addCleanup(subprocess.run, ["umount", "-l", outbox])
        spool = self.tempdir()
        m = self.nmount(["notify_dir=" + spool], cache=cache)
        filler = os.path.join(outbox, "filler")
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as e:
                self.assertEqual(e.errno, errno.ENOSPC)
        self.assertEqual(write_request(self.control(m, "requests", "full"), b"a/one.txt\n"), 0)
        self.assertEqual(self.wait_done(m, "full")["state"], "done")
        deadline = time.monotonic() + 10
        while "could not be queued" not in (self.status(m, "full")["error"] or "") \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        st = self.status(m, "full")
        self.assertIn("could not be queued", st["error"] or "")
        self.assertEqual(st["notified"], 0)
        time.sleep(1.5)  # refused again meanwhile (notify_retry_max=1)
        self.assertGreaterEqual(m.log_text().count("request full: notification for"), 2)
        self.assertEqual(spooled(spool), [])
        os.unlink(filler)
        deadline = time.monotonic() + 10
        while self.status(m, "full")["notified"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        st = self.status(m, "full")
        self.assertEqual(st["notified"], 1)
        self.assertIsNone(st["error"])
        while not spooled(spool) and time.monotonic() < deadline:
            time.sleep(0.05)
        files = spooled(spool)
        self.assertEqual(len(files), 1)
        with open(os.path.join(spool, files[0]), "rb") as f:
            self.assertEqual(self.decode(f.read()).zipfile, "full.zip")
        with open(self.control(m, "stats")) as f:
            counters = json.load(f)["requests"]
        self.assertEqual(counters["notifications_queued"], 1)
        self.assertGreaterEqual(counters["notification_errors"], 2)

    def test_sigkill_before_delivery_then_restart(self):
        import servers
        port = servers.free_port()
        cache = self.tempdir()
        opts = ["cache_dir=" + cache, "notify_retry_max=1",
                "notify_url=http://127.0.0.1:%d/n" % port]
        m = harness.Mount(self.src, opts)
        try:
            self.assertEqual(write_request(self.control(m, "requests", "k"), b"big.bin\n"), 0)
            self.assertEqual(self.wait_done(m, "k")["state"], "done")
            # "done" comes as the archive is complete; "notified" once the
            # message is in the outbox, a moment later
            deadline = time.monotonic() + 10
            while self.status(m, "k")["notified"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            self.assertEqual(self.status(m, "k")["notified"], 1)  # in the outbox
            m.proc.kill()
            m.proc.wait()
        finally:
            m.cleanup()
        _, _, log = self.receiver(port=port)
        time.sleep(0.5)
        self.assertEqual(self.posts(log), [])  # nobody sent it meanwhile
        self.mount(self.src, opts)  # the restarted daemon delivers it
        posts = self.wait_posts(log, 1)
        self.assertEqual(self.decode(posts[0]["body"]).zipfile, "k.zip")


class OutputBucketTest(harness.MountTestCase):
    """A materialized request archive is uploaded to the output bucket as
    <name>.zip with customTime, and not again when it is there already.
    The mount talks to the emulator through the resumable-upload stand-in
    of test_upload (the emulator ends a resumable upload at its first
    chunk and drops customTime); every other request passes through."""

    @classmethod
    def setUpClass(cls):
        from test_upload import ResumableShim
        cls.emu = harness.GcsEmulator()
        try:
            cls.shim = ResumableShim(cls.emu.endpoint)
        except BaseException:
            cls.emu.stop()
            raise
        cls.files = make_files()
        cls.files["large/part.bin"] = os.urandom(11 << 20)  # more than one 8 MiB chunk
        for rel, data in cls.files.items():
            cls.emu.upload("reqsrc", rel, data)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.shim.stop()
        finally:
            cls.emu.stop()

    status = RequestChecks.status
    control = RequestChecks.control
    wait_state = RequestChecks.wait_state

    def emu_media(self, bucket, name):
        import urllib.parse
        import urllib.request
        url = "%s/storage/v1/b/%s/o/%s?alt=media" % (self.emu.endpoint, bucket,
                                                     urllib.parse.quote(name, safe=""))
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.read()

    def test_upload_then_skip_when_present(self):
        opts = ["endpoint=" + self.shim.endpoint, "auth=none", "output_bucket=gs://outb/zips"]
        m = self.mount("gs://reqsrc", opts + ["cache_dir=" + self.tempdir()])
        with self.shim.lock:
            started = len(self.shim.metadata)
        t0 = int(time.time())
        self.assertEqual(write_request(self.control(m, "requests", "up"),
                                       b"large/\na/one.txt\n"), 0)
        st = self.wait_state(m, "up", timeout=120)
        t1 = int(time.time()) + 1
        self.assertEqual(st["state"], "done", st)
        self.assertEqual(st["output"]["state"], "uploaded", st)
        with open(self.control(m, "archives", "up.zip"), "rb") as f:
            served = f.read()
        self.assertEqual(self.emu_media("outb", "zips/up.zip"), served)
        with self.shim.lock:
            metas = self.shim.metadata[started:]
        self.assertEqual(len(metas), 1, metas)
        kind, meta = metas[0]
        self.assertEqual(kind, "resumable")  # the 11 MiB member needs two 8 MiB chunks
        secs = rfc3339_s(meta["customTime"])
        self.assertTrue(t0 <= secs <= t1, (meta, t0, t1))
        self.assertEqual(meta["name"], "zips/up.zip")
        # another machine (a fresh mount, its own cache) with the same request
        m2 = self.mount("gs://reqsrc", opts + ["cache_dir=" + self.tempdir()])
        self.assertEqual(write_request(self.control(m2, "requests", "up"),
                                       b"large/\na/one.txt\n"), 0)
        st = self.wait_state(m2, "up", timeout=120)
        self.assertEqual(st["state"], "done", st)
        self.assertEqual(st["output"]["state"], "already present", st)
        with self.shim.lock:
            self.assertEqual(len(self.shim.metadata), started + 1)
        with open(self.control(m2, "stats")) as f:
            self.assertEqual(json.load(f)["requests"]["uploads_skipped"], 1)

    def test_local_directory_output(self):
        out = self.tempdir()
        m = self.mount("gs://reqsrc", ["endpoint=" + self.emu.endpoint, "auth=none",
                                       "cache_dir=" + self.tempdir(), "output_bucket=" + out])
        self.assertEqual(write_request(self.control(m, "requests", "loc"), b"a/\n"), 0)
        st = self.wait_state(m, "loc")
        self.assertEqual(st["state"], "done", st)
        with open(self.control(m, "archives", "loc.zip"), "rb") as f:
            served = f.read()
        with open(os.path.join(out, "loc.zip"), "rb") as f:
            self.assertEqual(f.read(), served)
        r = subprocess.run(["unzip", "-t", os.path.join(out, "loc.zip")], capture_output=True)
        self.assertEqual(r.returncode, 0)


def rfc3339_s(text):
    import calendar
    import re
    mt = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?Z$", text)
    return calendar.timegm(tuple(int(mt.group(i)) for i in range(1, 7)))


if __name__ == "__main__":
    harness.main()
