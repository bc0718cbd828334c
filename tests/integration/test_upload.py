#!/usr/bin/env python3
"""Uploads to an output bucket through the store interface (tests/tools/storetool),
checked with plain HTTP GETs (urllib), never with zipperfs's own code.

The Cloud Storage emulator of firebase-tools takes multipart uploads, but its
JSON API resumable upload is single-shot (the first PUT to the session
finalizes the object, whatever its Content-Range; it never answers 308), and
it drops customTime on every upload path. So:

- small objects (multipart) go straight to the emulator;
- large ones go through ResumableShim, a small in-process server that speaks
  GCS's documented resumable protocol (session URI in Location, chunks with
  Content-Range, 308 + Range, "bytes */N" status queries) and hands the
  finished object to the emulator as one multipart upload, which is where the
  test reads it back from. The shim forwards every other request to the
  emulator untouched and records the metadata JSON of every upload, which is
  how customTime is checked;
- faults come from faultproxy.py between storetool and the shim.
"""

import json
import os
import re
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gcs_common
import harness
import s3_common

CHUNK = 8 << 20  # the GCS backend's default chunk (and multipart limit)
QUANTUM = 256 << 10
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$")


def storetool_bin():
    return os.environ.get("STORETOOL_BIN",
                          os.path.join(harness.TOP, "build", "tests", "tools", "storetool"))


# ---- the resumable shim ------------------------------------------------------

class ResumableShim:
    """GCS's resumable upload protocol in front of the emulator (see above)."""

    def __init__(self, upstream):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.lock = threading.Lock()
        self.sessions = {}   # upload_id -> session dict
        self.metadata = []   # metadata JSON of every upload started, in order
        self.puts = []       # (Content-Range, status) of every session PUT
        shim = self

        class Handler(ShimHandler):
            pass

        Handler.shim = shim
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def forward(self, method, target, headers, body):
        conn = HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=120)
        try:
            conn.request(method, target, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, r.getheaders(), r.read()
        finally:
            conn.close()

    def finish(self, sess):
        """The whole object to the emulator, as one multipart upload."""
        boundary = "shim" + secrets.token_hex(16)
        meta = dict(sess["meta"])
        body = b"".join([
            b"--%s\r\nContent-Type: application/json\r\n\r\n" % boundary.encode(),
            json.dumps(meta).encode(),
            b"\r\n--%s\r\nContent-Type: application/octet-stream\r\n\r\n" % boundary.encode(),
            bytes(sess["data"]),
            b"\r\n--%s--\r\n" % boundary.encode()])
        target = "/upload/storage/v1/b/%s/o?uploadType=multipart" % sess["bucket"]
        status, _, data = self.forward(
            "POST", target, {"Content-Type": "multipart/related; boundary=" + boundary}, body)
        if status != 200:
            raise RuntimeError("emulator refused the finished upload: %d %r" % (status, data))
        return data


class ShimHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    shim = None

    def log_message(self, fmt, *args):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def passthrough(self, body):
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "connection", "content-length", "expect")}
        status, rheaders, data = self.shim.forward(self.command, self.path, headers, body)
        keep = [(k, v) for k, v in rheaders
                if k.lower() not in ("connection", "transfer-encoding", "content-length")]
        self.reply(status, data, keep)

    def do_GET(self):
        self.passthrough(None)

    do_DELETE = do_GET

    def do_POST(self):
        body = self.body()
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        utype = query.get("uploadType", [""])[0]
        if utype == "multipart":
            self.record_multipart(body)
            self.passthrough(body)
        elif utype == "resumable":
            self.start_session(url, query, body)
        else:
            self.passthrough(body)

    def record_multipart(self, body):
        m = re.search(r"boundary=([^;\s]+)", self.headers.get("Content-Type", ""))
        first = body.split(b"--" + m.group(1).encode())[1]
        meta = first.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
        with self.shim.lock:
            self.shim.metadata.append(("multipart", json.loads(meta)))

    def start_session(self, url, query, body):
        meta = json.loads(body)
        bucket = url.path.split("/")[5]
        name = query.get("name", [meta.get("name")])[0]
        total = int(self.headers["X-Upload-Content-Length"])
        upload_id = uuid.uuid4().hex
        with self.shim.lock:
            self.shim.metadata.append(("resumable", meta))
            self.shim.sessions[upload_id] = {"bucket": bucket, "name": name, "meta": meta,
                                             "total": total, "data": bytearray(), "done": None}
        location = "http://%s/upload/storage/v1/b/%s/o?uploadType=resumable&name=%s" \
            "&upload_id=%s" % (self.headers["Host"], bucket, urllib.parse.quote(name, safe=""),
                               upload_id)
        self.reply(200, b"", [("Location", location)])

    def do_PUT(self):
        body = self.body()
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        upload_id = query.get("upload_id", [None])[0]
        if upload_id is None:
            self.passthrough(body)
            return
        crange = self.headers.get("Content-Range", "")
        status, payload, headers = self.session_put(upload_id, crange, body)
        with self.shim.lock:
            self.shim.puts.append((crange, status))
        self.reply(status, payload, headers)

    def session_put(self, upload_id, crange, body):
        with self.shim.lock:
            sess = self.shim.sessions.get(upload_id)
        if sess is None:
            return 404, b"no such session", []
        m = re.fullmatch(r"bytes (\*|(\d+)-(\d+))/(\d+)", crange)
        if not m or int(m.group(4)) != sess["total"]:
            return 400, b"bad Content-Range", []
        if sess["done"] is not None:
            return 200, sess["done"], [("Content-Type", "application/json")]
        persisted = len(sess["data"])
        if m.group(1) != "*":
            first, last = int(m.group(2)), int(m.group(3))
            final = last + 1 == sess["total"]
            # what GCS demands of a chunk; a client that gets it wrong fails here
            if first != persisted or last - first + 1 != len(body) or \
                    (not final and len(body) % QUANTUM != 0):
                return 400, b"chunk does not follow the persisted bytes", []
            sess["data"] += body
            persisted = len(sess["data"])
        if persisted == sess["total"]:
            sess["done"] = self.shim.finish(sess)
            return 200, sess["done"], [("Content-Type", "application/json")]
        headers = [("Range", "bytes=0-%d" % (persisted - 1))] if persisted else []
        # GCS sends no body with a 308; this one has a few bytes so that the
        # fault proxy's "reset" (half the body, then an RST) can cut it
        return 308, b"Resume Incomplete", headers


# ---- the tests -----------------------------------------------------------------

class UploadTestCase(harness.MountTestCase):
    @classmethod
    def setUpClass(cls):
        cls.emu = harness.GcsEmulator()
        try:
            cls.shim = ResumableShim(cls.emu.endpoint)
        except BaseException:
            cls.emu.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.shim.stop()
        finally:
            cls.emu.stop()

    def storetool(self, *args, endpoint=None, expect_ok=True, options=()):
        argv = [storetool_bin()]
        opts = ["endpoint=" + endpoint] if endpoint else []
        opts += list(options)
        if opts:
            argv += ["-o", ",".join(opts)]
        env = dict(os.environ)
        env.pop("STORAGE_EMULATOR_HOST", None)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        r = subprocess.run(argv + [str(a) for a in args], capture_output=True, text=True,
                           env=env, timeout=300)
        for mark in harness.SANITIZER_MARKS:
            if mark in r.stderr:
                self.fail("sanitizer report from storetool:\n" + r.stderr[-4000:])
        if expect_ok and r.returncode != 0:
            self.fail("%s failed (%d):\n%s" % (argv + list(args), r.returncode, r.stderr))
        if not expect_ok and r.returncode == 0:
            self.fail("%s succeeded where it should have failed" % (argv + list(args),))
        return r

    def random_file(self, size):
        path = os.path.join(self.tempdir(), "data")
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        with open(path, "rb") as f:
            return path, f.read()

    def emu_get(self, bucket, name, media=False):
        url = "%s/storage/v1/b/%s/o/%s%s" % (self.emu.endpoint, bucket,
                                             urllib.parse.quote(name, safe=""),
                                             "?alt=media" if media else "")
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read()
        return data if media else json.loads(data)

    def assert_absent(self, bucket, name):
        with self.assertRaises(urllib.error.HTTPError) as cm:
            self.emu_get(bucket, name)
        self.assertEqual(cm.exception.code, 404)

    def assert_custom_time(self, meta, t0, t1):
        ct = meta.get("customTime")
        self.assertIsNotNone(ct, meta)
        self.assertRegex(ct, RFC3339_MS)
        secs = gcs_common.rfc3339_ns(ct) // 10**9
        self.assertTrue(t0 <= secs <= t1, "customTime %s not within [%d, %d]" % (ct, t0, t1))

    def session_puts(self, start):
        with self.shim.lock:
            return [p for p in self.shim.puts[start:]]


class TestGcsUpload(UploadTestCase):
    def test_small_object_multipart_on_the_emulator(self):
        path, data = self.random_file(3 * 1000 * 1000 + 7)
        self.storetool("upload", "gs://outb/archives", "small.zip", path,
                       endpoint=self.emu.endpoint)
        self.assertEqual(self.emu_get("outb", "archives/small.zip", media=True), data)
        meta = self.emu_get("outb", "archives/small.zip")
        self.assertEqual(int(meta["size"]), len(data))
        self.assertEqual(meta["contentType"], "application/zip")
        # what the daemon's "already there with the same size?" check sees
        out = self.storetool("stat", "gs://outb/archives", "small.zip",
                             endpoint=self.emu.endpoint).stdout
        self.assertIn("size=%d " % len(data), out)
        # a second upload replaces it
        path2, data2 = self.random_file(1000)
        self.storetool("upload", "gs://outb/archives", "small.zip", path2,
                       endpoint=self.emu.endpoint)
        self.assertEqual(self.emu_get("outb", "archives/small.zip", media=True), data2)

    def test_empty_and_exactly_one_chunk(self):
        for size, name in ((0, "empty.zip"), (CHUNK, "chunk.zip")):
            path, data = self.random_file(size)
            self.storetool("upload", "gs://outb", name, path, endpoint=self.emu.endpoint)
            self.assertEqual(self.emu_get("outb", name, media=True), data)

    def test_custom_time_is_sent(self):
        # the emulator drops customTime; the shim records what it was sent
        start = len(self.shim.metadata)
        path, _ = self.random_file(1000)
        t0 = int(time.time())
        self.storetool("upload", "gs://outb/ct", "now.zip", path, endpoint=self.shim.endpoint)
        t1 = int(time.time())
        kind, meta = self.shim.metadata[start]
        self.assertEqual(kind, "multipart")
        self.assertEqual(meta["name"], "ct/now.zip")
        self.assertEqual(meta["contentType"], "application/zip")
        self.assert_custom_time(meta, t0, t1)
        self.storetool("upload", "gs://outb/ct", "fixed.zip", path, "--custom-time",
                       "1795514400", endpoint=self.shim.endpoint)
        self.assertEqual(self.shim.metadata[start + 1][1]["customTime"],
                         "2026-11-24T10:00:00.000Z")
        self.storetool("upload", "gs://outb/ct", "none.zip", path, "--custom-time", "0",
                       endpoint=self.shim.endpoint)
        self.assertNotIn("customTime", self.shim.metadata[start + 2][1])

    def test_large_object_resumable_in_chunks(self):
        size = 20 << 20
        path, data = self.random_file(size)
        start_meta, start_puts = len(self.shim.metadata), len(self.shim.puts)
        t0 = int(time.time())
        self.storetool("upload", "gs://outb/big", "x/large.zip", path,
                       endpoint=self.shim.endpoint)
        t1 = int(time.time())
        self.assertEqual(self.emu_get("outb", "big/x/large.zip", media=True), data)
        kind, meta = self.shim.metadata[start_meta]
        self.assertEqual(kind, "resumable")
        self.assertEqual(meta["name"], "big/x/large.zip")
        self.assert_custom_time(meta, t0, t1)
        self.assertEqual(self.session_puts(start_puts), [
            ("bytes 0-%d/%d" % (CHUNK - 1, size), 308),
            ("bytes %d-%d/%d" % (CHUNK, 2 * CHUNK - 1, size), 308),
            ("bytes %d-%d/%d" % (2 * CHUNK, size - 1, size), 200),
        ])

    def test_emulator_without_chunked_resumable_is_an_error(self):
        # the emulator ends a resumable session at its first PUT: the store
        # must see the short object and fail, not report success
        path, _ = self.random_file(CHUNK + 1)
        r = self.storetool("upload", "gs://outb", "short.zip", path,
                           endpoint=self.emu.endpoint, expect_ok=False)
        self.assertIn("does not take resumable uploads in chunks", r.stderr)
        self.assertIn("Protocol error", r.stderr)

    def test_failing_source_leaves_no_object(self):
        for size in (1 << 20, 20 << 20):
            path, _ = self.random_file(size)
            r = self.storetool("upload", "gs://outb", "failed-%d.zip" % size, path,
                               "--fail-at", size - 100, endpoint=self.shim.endpoint,
                               expect_ok=False)
            self.assertIn("Input/output error", r.stderr)
            self.assert_absent("outb", "failed-%d.zip" % size)


class TestGcsUploadFaults(UploadTestCase):
    """storetool -> faultproxy -> shim -> emulator."""

    def upload_through_proxy(self, rules, name):
        proxy = gcs_common.Proxy(self.shim.endpoint)
        self.addCleanup(proxy.stop)
        proxy.plan(*rules)
        size = 20 << 20
        path, data = self.random_file(size)
        start = len(self.shim.puts)
        self.storetool("upload", "gs://outb/faults", name, path, endpoint=proxy.endpoint)
        self.assertEqual(self.emu_get("outb", "faults/" + name, media=True), data)
        # the session URI was taken relative to our endpoint: every PUT
        # that reached the shim went through the proxy
        forwarded = [e for e in proxy.log() if e["method"] == "PUT"
                     and e["fault"] not in ("503", "500", "429", "404")]
        self.assertEqual(len(forwarded), len(self.session_puts(start)))
        return size, self.session_puts(start), proxy

    @staticmethod
    def skip_then(action, skip):
        # the first `skip` session requests pass, the next one gets `action`
        rules = [{"match": "upload_id=", "action": "delay", "seconds": 0, "count": skip}]
        return rules + [{"match": "upload_id=", "action": action, "count": 1}]

    def test_503_on_a_middle_chunk(self):
        # the chunk never reaches the shim: the status query says 8 MiB are
        # in, and the chunk is sent again
        size, puts, proxy = self.upload_through_proxy(self.skip_then("503", 1), "s503.zip")
        self.assertEqual(puts, [
            ("bytes 0-%d/%d" % (CHUNK - 1, size), 308),
            ("bytes */%d" % size, 308),
            ("bytes %d-%d/%d" % (CHUNK, 2 * CHUNK - 1, size), 308),
            ("bytes %d-%d/%d" % (2 * CHUNK, size - 1, size), 200),
        ])
        self.assertIn("503", [str(e["status"]) for e in proxy.log()])

    def test_reset_after_a_middle_chunk_arrived(self):
        # the chunk is stored but the answer is cut by an RST: the status
        # query shows it arrived, and it is not sent again
        size, puts, _ = self.upload_through_proxy(self.skip_then("reset", 1), "reset.zip")
        self.assertEqual(puts, [
            ("bytes 0-%d/%d" % (CHUNK - 1, size), 308),
            ("bytes %d-%d/%d" % (CHUNK, 2 * CHUNK - 1, size), 308),
            ("bytes */%d" % size, 308),
            ("bytes %d-%d/%d" % (2 * CHUNK, size - 1, size), 200),
        ])

    def test_reset_after_the_final_chunk_arrived(self):
        # the object is complete but its answer is lost: the status query
        # gets the object resource, and nothing is sent again
        size, puts, _ = self.upload_through_proxy(self.skip_then("reset", 2), "final.zip")
        self.assertEqual(puts, [
            ("bytes 0-%d/%d" % (CHUNK - 1, size), 308),
            ("bytes %d-%d/%d" % (CHUNK, 2 * CHUNK - 1, size), 308),
            ("bytes %d-%d/%d" % (2 * CHUNK, size - 1, size), 200),
            ("bytes */%d" % size, 200),
        ])

    def test_503_on_multipart_is_retried(self):
        proxy = gcs_common.Proxy(self.emu.endpoint)
        self.addCleanup(proxy.stop)
        proxy.plan({"match": "uploadType=multipart", "action": "503", "count": 2})
        path, data = self.random_file(100000)
        self.storetool("upload", "gs://outb", "mp503.zip", path, endpoint=proxy.endpoint)
        self.assertEqual(self.emu_get("outb", "mp503.zip", media=True), data)
        posts = [e for e in proxy.log() if e["method"] == "POST"]
        self.assertEqual([e["status"] for e in posts], [503, 503, 200])

    def test_persistent_failure_gives_up(self):
        proxy = gcs_common.Proxy(self.shim.endpoint)
        self.addCleanup(proxy.stop)
        proxy.plan({"match": "upload_id=", "action": "503", "count": -1})
        path, _ = self.random_file(CHUNK + QUANTUM)
        r = self.storetool("upload", "gs://outb", "never.zip", path, endpoint=proxy.endpoint,
                           options=["retries=3", "retry_deadline=20"], expect_ok=False)
        self.assertIn("gave up", r.stderr)
        self.assert_absent("outb", "never.zip")
        # the log names the session's requests but not its id: the session
        # URI lets whoever holds it write the object
        self.assertIn("upload_id=...", r.stderr)
        for upload_id in list(self.shim.sessions):
            self.assertNotIn(upload_id, r.stderr)


class TestS3Upload(harness.MountTestCase):
    """PUT up to 8 MiB, multipart above, against s3rver behind scripts/s3-server.js
    (which checks every SigV4 signature)."""

    @classmethod
    def setUpClass(cls):
        cls.s3 = s3_common.S3Server()
        try:
            cls.s3.create_bucket("outb")
        except BaseException:
            cls.s3.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.s3.stop()

    def storetool(self, *args, expect_ok=True, secret=s3_common.SECRET_KEY):
        env = {k: v for k, v in os.environ.items() if k not in s3_common.AWS_ENV}
        env.update(AWS_ACCESS_KEY_ID=s3_common.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=secret,
                   HOME=self.tempdir())
        argv = [storetool_bin(), "-o", "endpoint=" + self.s3.endpoint] + [str(a) for a in args]
        r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        for mark in harness.SANITIZER_MARKS:
            if mark in r.stderr:
                self.fail("sanitizer report from storetool:\n" + r.stderr[-4000:])
        self.assertEqual(r.returncode == 0, expect_ok, r.stderr)
        return r

    def get(self, key):
        with urllib.request.urlopen("%s/outb/%s" % (self.s3.endpoint, key), timeout=60) as r:
            return r.read()

    def test_put_and_multipart(self):
        src = self.tempdir()
        for size, key in ((3 * 1000 * 1000, "small.zip"), (20 << 20, "d/large.zip")):
            path = os.path.join(src, "data")
            data = os.urandom(size)
            with open(path, "wb") as f:
                f.write(data)
            self.s3.reset_log()
            self.storetool("upload", "s3://outb/out", key, path)
            self.assertEqual(self.get("out/" + key), data)
            self.assertIn("size=%d " % size, self.storetool("stat", "s3://outb/out", key).stdout)
            calls = [(e["method"], e["path"].split("?", 1)[-1]) for e in self.s3.log()
                     if e["path"].startswith("/outb/out/" + key)]
            if size <= CHUNK:
                self.assertEqual(calls[0], ("PUT", "/outb/out/" + key))
            else:
                self.assertEqual([m for m, _ in calls[:5]], ["POST", "PUT", "PUT", "PUT", "POST"])
                self.assertEqual(calls[0][1], "uploads=")
                self.assertTrue(calls[3][1].startswith("partNumber=3&uploadId="))

    def test_failures(self):
        path = os.path.join(self.tempdir(), "data")
        with open(path, "wb") as f:
            f.write(os.urandom(20 << 20))
        self.s3.reset_log()
        # a source failing in the second part: the upload is aborted
        r = self.storetool("upload", "s3://outb", "failed.zip", path, "--fail-at", 10 << 20,
                           expect_ok=False)
        self.assertIn("Input/output error", r.stderr)
        self.assertIn("DELETE", [e["method"] for e in self.s3.log()])
        with self.assertRaises(urllib.error.HTTPError) as cm:
            self.get("failed.zip")
        self.assertEqual(cm.exception.code, 404)
        # a wrong secret is refused, and says so
        r = self.storetool("upload", "s3://outb", "denied.zip", path, secret="wrong",
                           expect_ok=False)
        self.assertIn("Permission denied", r.stderr)


class TestLocalUpload(harness.MountTestCase):
    def storetool(self, *args, expect_ok=True):
        r = subprocess.run([storetool_bin()] + [str(a) for a in args], capture_output=True,
                           text=True, timeout=120)
        for mark in harness.SANITIZER_MARKS:
            if mark in r.stderr:
                self.fail("sanitizer report from storetool:\n" + r.stderr[-4000:])
        self.assertEqual(r.returncode == 0, expect_ok, r.stderr)
        return r

    def test_upload_to_a_directory(self):
        out = self.tempdir()
        src = self.tempdir()
        for size, key in ((1000, "a.zip"), (20 << 20, "deep/er/b.zip")):
            path = os.path.join(src, "data")
            data = os.urandom(size)
            with open(path, "wb") as f:
                f.write(data)
            self.storetool("upload", out, key, path)
            with open(os.path.join(out, key), "rb") as f:
                self.assertEqual(f.read(), data)
            self.assertEqual(os.stat(os.path.join(out, key)).st_mode & 0o777, 0o644)
            self.assertIn("size=%d " % size, self.storetool("stat", out, key).stdout)
        # replacing, and a failing source leaves the old file and no temporary
        path = os.path.join(src, "data")
        with open(path, "wb") as f:
            f.write(b"new content")
        self.storetool("upload", out, "a.zip", path)
        with open(os.path.join(out, "a.zip"), "rb") as f:
            self.assertEqual(f.read(), b"new content")
        self.storetool("upload", out, "a.zip", path, "--fail-at", 5, expect_ok=False)
        with open(os.path.join(out, "a.zip"), "rb") as f:
            self.assertEqual(f.read(), b"new content")
        self.assertEqual(sorted(os.listdir(out)), ["a.zip", "deep"])
        self.assertEqual(os.listdir(os.path.join(out, "deep", "er")), ["b.zip"])

    def test_keys_outside_the_directory_are_refused(self):
        out = self.tempdir()
        path = os.path.join(self.tempdir(), "data")
        with open(path, "wb") as f:
            f.write(b"x")
        for key in ("../escape.zip", "a/../../b.zip", "/abs.zip", "a//b.zip", "dir/"):
            r = self.storetool("upload", out, key, path, expect_ok=False)
            self.assertIn("Invalid argument", r.stderr)
        self.assertEqual(os.listdir(out), [])
        self.assertFalse(os.path.exists(os.path.join(os.path.dirname(out), "escape.zip")))


if __name__ == "__main__":
    harness.main()
