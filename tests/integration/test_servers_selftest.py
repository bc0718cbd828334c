#!/usr/bin/env python3
"""Self-test of the integration test servers (faultproxy.py, fakeauth.py).

Run: python3 tests/integration/test_servers_selftest.py [-v]
"""

import base64
import http.client
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from servers import free_port, script_argv, start_server, stop_server  # noqa: E402

SIZE = 1 << 20
DATA = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(SIZE))
STORAGE_RO = "https://www.googleapis.com/auth/devstorage.read_only"


# -- a tiny upstream -----------------------------------------------------------

class UpstreamHandler(http.server.BaseHTTPRequestHandler):
    """GET/HEAD of anything with alt=media serves DATA (Range supported);
    other GETs answer JSON metadata; POST echoes its body and some headers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _send(self, status, body, ctype, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        if "alt=media" not in self.path:
            meta = {"kind": "storage#object", "name": self.path, "size": str(SIZE),
                    "host": self.headers.get("Host")}
            self._send(200, json.dumps(meta).encode(), "application/json")
            return
        rng = self.headers.get("Range")
        if not rng:
            self._send(200, DATA, "application/octet-stream",
                       [("Accept-Ranges", "bytes")])
            return
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
        start = end = None
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else SIZE - 1
            else:
                start = max(0, SIZE - int(m.group(2)))
                end = SIZE - 1
            end = min(end, SIZE - 1)
        if start is None or start >= SIZE or start > end:
            self._send(416, b"", "text/plain", [("Content-Range", "bytes */%d" % SIZE)])
            return
        self._send(206, DATA[start:end + 1], "application/octet-stream",
                   [("Content-Range", "bytes %d-%d/%d" % (start, end, SIZE))])

    do_HEAD = do_GET

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        echo = {"len": len(body), "body": body.decode("latin-1"),
                "host": self.headers.get("Host"),
                "x_test": self.headers.get("X-Test"),
                "path": self.path}
        self._send(200, json.dumps(echo).encode(), "application/json")


class Upstream(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


def start_upstream(testcase):
    srv = Upstream(("127.0.0.1", 0), UpstreamHandler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True)
    t.start()

    def stop():
        srv.shutdown()
        srv.server_close()
    testcase.addCleanup(stop)
    return srv.server_address[1]


# -- small HTTP helpers -----------------------------------------------------------

def request(addr, method, path, body=None, headers=None, timeout=10):
    """One request on a fresh connection: (status, headers dict, body)."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def post_json(addr, path, obj):
    status, _, data = request(addr, "POST", path, json.dumps(obj).encode(),
                              {"Content-Type": "application/json"})
    return status, json.loads(data.decode() or "null")


def get_json(addr, path, headers=None):
    status, _, data = request(addr, "GET", path, headers=headers)
    return status, json.loads(data.decode() or "null")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(key_file, header, claims, tmpdir):
    """RS256-sign with the openssl command line tool."""
    signing_input = (b64url(json.dumps(header).encode()) + "."
                     + b64url(json.dumps(claims).encode()))
    data_file = os.path.join(tmpdir, "jwt-input")
    with open(data_file, "wb") as f:
        f.write(signing_input.encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_file, data_file],
                         stdin=subprocess.DEVNULL, capture_output=True, check=True,
                         timeout=60).stdout
    return signing_input + "." + b64url(sig)


# -- fault proxy ------------------------------------------------------------------

class FaultProxyTest(unittest.TestCase):

    def setUp(self):
        up_port = start_upstream(self)
        self.up_addr = "127.0.0.1:%d" % up_port
        proc, self.addr = start_server(script_argv(
            "faultproxy.py", "--listen-port", free_port(),
            "--upstream", "http://127.0.0.1:%d" % up_port))
        self.addCleanup(stop_server, proc)
        self.proc = proc

    def plan(self, *rules):
        status, obj = post_json(self.addr, "/__fault__/plan", {"rules": list(rules)})
        self.assertEqual(status, 200, obj)

    def log(self):
        status, obj = get_json(self.addr, "/__fault__/log")
        self.assertEqual(status, 200)
        return obj

    def test_ready_address(self):
        self.assertTrue(self.addr.startswith("127.0.0.1:"))

    def test_passthrough_full_range_keepalive_post(self):
        host, port = self.addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/b/bucket/o/obj?alt=media")
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.getheader("Content-Length"), str(SIZE))
        self.assertEqual(resp.read(), DATA)
        sock = conn.sock
        # Same connection again (keep-alive), with a Range.
        conn.request("GET", "/b/bucket/o/obj?alt=media",
                     headers={"Range": "bytes=1000-1999"})
        resp = conn.getresponse()
        self.assertIs(conn.sock, sock)
        self.assertEqual(resp.status, 206)
        self.assertEqual(resp.getheader("Content-Range"), "bytes 1000-1999/%d" % SIZE)
        self.assertEqual(resp.read(), DATA[1000:2000])
        # Metadata: Host is rewritten to the upstream's.
        conn.request("GET", "/b/bucket/o/obj")
        resp = conn.getresponse()
        meta = json.loads(resp.read())
        self.assertIs(conn.sock, sock)
        self.assertEqual(meta["host"], self.up_addr)
        # HEAD keeps the real Content-Length and has no body.
        conn.request("HEAD", "/b/bucket/o/obj?alt=media")
        resp = conn.getresponse()
        self.assertEqual(resp.getheader("Content-Length"), str(SIZE))
        self.assertEqual(resp.read(), b"")
        # POST body and headers forwarded.
        conn.request("POST", "/upload?x=1", body=b"hello world",
                     headers={"X-Test": "yes"})
        resp = conn.getresponse()
        echo = json.loads(resp.read())
        self.assertIs(conn.sock, sock)
        self.assertEqual(echo["body"], "hello world")
        self.assertEqual(echo["x_test"], "yes")
        self.assertEqual(echo["path"], "/upload?x=1")

        entries = self.log()
        self.assertEqual([e["method"] for e in entries],
                         ["GET", "GET", "GET", "HEAD", "POST"])
        self.assertEqual(entries[1]["range"], "bytes=1000-1999")
        self.assertIsNone(entries[0]["range"])
        self.assertEqual(entries[0]["path"], "/b/bucket/o/obj?alt=media")
        self.assertTrue(all(e["fault"] is None for e in entries))
        self.assertFalse(entries[0]["authorization"])

    def test_503_count_then_success(self):
        self.plan({"match": "alt=media", "action": "503", "count": 3})
        # Not matching: unaffected and does not spend the rule.
        status, _, _ = request(self.addr, "GET", "/b/bucket/o/obj")
        self.assertEqual(status, 200)
        for _ in range(3):
            status, headers, body = request(self.addr, "GET", "/b/bucket/o/obj?alt=media")
            self.assertEqual(status, 503)
            self.assertEqual(json.loads(body)["error"]["code"], 503)
            self.assertNotIn("retry-after", headers)
        status, _, body = request(self.addr, "GET", "/b/bucket/o/obj?alt=media")
        self.assertEqual(status, 200)
        self.assertEqual(body, DATA)
        faults = [e["fault"] for e in self.log()]
        self.assertEqual(faults, [None, "503", "503", "503", None])
        status, obj = get_json(self.addr, "/__fault__/plan")
        self.assertEqual(obj["rules"][0]["remaining"], 0)

    def test_status_actions_and_retry_after(self):
        self.plan({"match": "", "action": "429", "count": 1, "retry_after": 0},
                  {"match": "", "action": "500", "count": 1},
                  {"match": "", "action": "404", "count": 1})
        status, headers, body = request(self.addr, "GET", "/o?alt=media")
        self.assertEqual(status, 429)
        self.assertEqual(headers.get("retry-after"), "0")
        self.assertEqual(json.loads(body)["error"]["errors"][0]["reason"],
                         "rateLimitExceeded")
        status, _, _ = request(self.addr, "GET", "/o?alt=media")
        self.assertEqual(status, 500)
        status, _, body = request(self.addr, "GET", "/o?alt=media")
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body)["error"]["code"], 404)
        status, _, _ = request(self.addr, "GET", "/o?alt=media")
        self.assertEqual(status, 200)

    def test_unlimited_rule(self):
        self.plan({"match": "alt=media", "action": "503", "count": -1})
        for _ in range(5):
            self.assertEqual(request(self.addr, "GET", "/o?alt=media")[0], 503)

    def test_reset_gives_incomplete_read(self):
        self.plan({"match": "alt=media", "action": "reset", "count": 1})
        host, port = self.addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/o?alt=media")
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.getheader("Content-Length"), str(SIZE))
        with self.assertRaises((http.client.IncompleteRead, ConnectionError)):
            resp.read()
        # Raw socket: exactly half the body arrives, then the connection is reset.
        self.plan({"match": "alt=media", "action": "reset", "count": 1})
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"GET /o?alt=media HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            saw_reset = False
            while True:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    saw_reset = True
                    break
                if not chunk:
                    break
                got += chunk
        head, _, body = got.partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: %d" % SIZE, head)
        self.assertTrue(saw_reset, "expected ECONNRESET, got a clean EOF")
        self.assertEqual(len(body), SIZE // 2)
        self.assertEqual(body, DATA[:SIZE // 2])
        # The proxy is fine afterwards.
        self.assertEqual(request(self.addr, "GET", "/o?alt=media")[2], DATA)
        self.assertEqual([e["fault"] for e in self.log()], ["reset", "reset", None])

    def test_stall_times_out(self):
        self.plan({"match": "alt=media", "action": "stall", "seconds": 2})
        host, port = self.addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=1)
        self.addCleanup(conn.close)
        conn.request("GET", "/o?alt=media")
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.getheader("Content-Length"), str(SIZE))
        # A timeout, not an IncompleteRead: the connection was still held
        # open when the client gave up, so the body was stalled, not cut.
        with self.assertRaises((socket.timeout, TimeoutError)):
            resp.read()
        # Other requests are served while one connection stalls.
        self.assertEqual(request(self.addr, "GET", "/o?alt=media", timeout=5)[2], DATA)
        # After `seconds` the stalled connection is closed: EOF before the end.
        self.plan({"match": "alt=media", "action": "stall", "seconds": 1})
        conn2 = http.client.HTTPConnection(host, int(port), timeout=5)
        self.addCleanup(conn2.close)
        conn2.request("GET", "/o?alt=media")
        resp = conn2.getresponse()
        with self.assertRaises(http.client.IncompleteRead) as cm:
            resp.read()
        self.assertEqual(len(cm.exception.partial), SIZE // 2)

    def test_delay(self):
        self.plan({"match": "alt=media", "action": "delay", "seconds": 1})
        t0 = time.monotonic()
        status, _, body = request(self.addr, "GET", "/o?alt=media")
        self.assertGreaterEqual(time.monotonic() - t0, 0.95)
        self.assertEqual((status, body), (200, DATA))
        # The plan is spent: the next request is forwarded at once. Its time
        # is not asserted (a loaded machine can take a second for anything);
        # the proxy's own log says which request it delayed.
        self.assertEqual(request(self.addr, "GET", "/o?alt=media")[2], DATA)
        self.assertEqual([e["fault"] for e in self.log()], ["delay", None])

    def test_require_bearer(self):
        status, _ = post_json(self.addr, "/__fault__/require_bearer",
                              {"tokens": ["t1", "t2"]})
        self.assertEqual(status, 200)
        status, headers, body = request(self.addr, "GET", "/o?alt=media")
        self.assertEqual(status, 401)
        err = json.loads(body)["error"]
        self.assertEqual(err["code"], 401)
        self.assertIn("www-authenticate", headers)
        status, _, _ = request(self.addr, "GET", "/o?alt=media",
                               headers={"Authorization": "Bearer nope"})
        self.assertEqual(status, 401)
        status, _, body = request(self.addr, "GET", "/o?alt=media",
                                  headers={"Authorization": "Bearer t2"})
        self.assertEqual((status, body), (200, DATA))
        post_json(self.addr, "/__fault__/require_bearer", {"tokens": None})
        self.assertEqual(request(self.addr, "GET", "/o?alt=media")[0], 200)
        self.assertEqual([e["authorization"] for e in self.log()],
                         [False, True, True, False])

    def test_control_api(self):
        self.plan({"match": "x", "action": "503"})
        request(self.addr, "GET", "/x")
        self.assertEqual(len(self.log()), 1)
        status, _ = post_json(self.addr, "/__fault__/reset", {})
        self.assertEqual(status, 200)
        self.assertEqual(self.log(), [])
        self.assertEqual(get_json(self.addr, "/__fault__/plan")[1]["rules"], [])
        status, obj = post_json(self.addr, "/__fault__/plan",
                                {"rules": [{"action": "explode"}]})
        self.assertEqual(status, 400)
        status, _, _ = request(self.addr, "POST", "/__fault__/plan", b"{not json")
        self.assertEqual(status, 400)
        self.assertEqual(request(self.addr, "GET", "/__fault__/nothing")[0], 404)
        # Control requests are neither forwarded nor logged.
        self.assertEqual(self.log(), [])

    def test_sigterm_exits(self):
        stop_server(self.proc)
        self.assertEqual(self.proc.returncode, 0)


# -- fake auth ---------------------------------------------------------------------

META_TOKEN = "/computeMetadata/v1/instance/service-accounts/default/token"


class FakeAuthMetadataTest(unittest.TestCase):

    def setUp(self):
        proc, self.addr = start_server(script_argv(
            "fakeauth.py", "--listen-port", free_port(), "--expires-in", 1234))
        self.addCleanup(stop_server, proc)

    def test_metadata_token(self):
        status, headers, _ = request(self.addr, "GET", META_TOKEN)
        self.assertEqual(status, 403)
        status, headers, body = request(self.addr, "GET", META_TOKEN + "?scopes="
                                        + urllib.parse.quote(STORAGE_RO),
                                        headers={"Metadata-Flavor": "Google"})
        self.assertEqual(status, 200)
        self.assertEqual(headers["metadata-flavor"], "Google")
        self.assertEqual(headers["content-type"], "application/json")
        tok = json.loads(body)
        self.assertRegex(tok["access_token"], r"^meta-1-[0-9a-f]+$")
        self.assertEqual(tok["expires_in"], 1234)
        self.assertEqual(tok["token_type"], "Bearer")

        status, cfg = post_json(self.addr, "/__config__", {"expires_in": 5})
        self.assertEqual(status, 200)
        tok2 = get_json(self.addr, META_TOKEN, {"Metadata-Flavor": "Google"})[1]
        self.assertRegex(tok2["access_token"], r"^meta-2-")
        self.assertEqual(tok2["expires_in"], 5)

        issued = get_json(self.addr, "/__issued__")[1]
        self.assertEqual(issued["tokens"], [tok["access_token"], tok2["access_token"]])
        self.assertEqual([r["ok"] for r in issued["requests"]], [False, True, True])

    def test_fail(self):
        post_json(self.addr, "/__config__", {"fail": 2})
        flavor = {"Metadata-Flavor": "Google"}
        self.assertEqual(request(self.addr, "GET", META_TOKEN, headers=flavor)[0], 500)
        self.assertEqual(request(self.addr, "GET", META_TOKEN, headers=flavor)[0], 500)
        self.assertEqual(request(self.addr, "GET", META_TOKEN, headers=flavor)[0], 200)

    def test_probes(self):
        status, headers, _ = request(self.addr, "GET", "/")
        self.assertEqual(status, 200)
        self.assertEqual(headers["metadata-flavor"], "Google")
        status, headers, body = request(self.addr, "GET",
                                        "/computeMetadata/v1/project/project-id",
                                        headers={"Metadata-Flavor": "Google"})
        self.assertEqual((status, body), (200, b"zipperfs-test"))
        self.assertEqual(headers["metadata-flavor"], "Google")


class FakeAuthJwtTest(unittest.TestCase):

    EMAIL = "tester@zipperfs-test.iam.gserviceaccount.com"

    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="fakeauth-selftest-")
        self.addCleanup(tmp.cleanup)
        self.tmp = tmp.name
        port = free_port()
        self.token_uri = "http://127.0.0.1:%d/token" % port
        keydir = os.path.join(self.tmp, "sa")
        subprocess.run(script_argv("fakeauth.py", "--make-key", keydir,
                                   "--client-email", self.EMAIL,
                                   "--token-uri", self.token_uri),
                       check=True, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=120)
        self.key = os.path.join(keydir, "key.pem")
        self.pub = os.path.join(keydir, "pub.pem")
        with open(os.path.join(keydir, "sa.json")) as f:
            self.sa = json.load(f)
        proc, self.addr = start_server(script_argv(
            "fakeauth.py", "--listen-port", port, "--public-key", self.pub,
            "--client-email", self.EMAIL))
        self.addCleanup(stop_server, proc)

    def claims(self, **over):
        now = int(time.time())
        c = {"iss": self.EMAIL, "scope": STORAGE_RO, "aud": self.token_uri,
             "iat": now, "exp": now + 3600}
        c.update(over)
        return c

    def exchange(self, jwt, grant="urn:ietf:params:oauth:grant-type:jwt-bearer"):
        form = urllib.parse.urlencode({"grant_type": grant, "assertion": jwt}).encode()
        req = urllib.request.Request(
            self.token_uri, data=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            with e:
                return e.code, json.loads(e.read())

    def test_sa_json_shape(self):
        self.assertEqual(self.sa["type"], "service_account")
        self.assertEqual(self.sa["client_email"], self.EMAIL)
        self.assertEqual(self.sa["token_uri"], self.token_uri)
        self.assertTrue(self.sa["private_key"].startswith("-----BEGIN PRIVATE KEY-----\n"))
        for k in ("project_id", "private_key_id", "client_id", "auth_uri"):
            self.assertTrue(self.sa[k], k)
        with open(self.key) as f:
            self.assertEqual(f.read(), self.sa["private_key"])

    def test_jwt_flow(self):
        header = {"alg": "RS256", "typ": "JWT", "kid": self.sa["private_key_id"]}
        status, tok = self.exchange(sign_jwt(self.key, header, self.claims(), self.tmp))
        self.assertEqual(status, 200, tok)
        self.assertRegex(tok["access_token"], r"^jwt-1-[0-9a-f]+$")
        self.assertEqual(tok["token_type"], "Bearer")
        self.assertEqual(tok["expires_in"], 3600)

        # Bad signature: flip bits in the signature.
        good = sign_jwt(self.key, header, self.claims(), self.tmp)
        h, c, s = good.split(".")
        sig = bytearray(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
        sig[10] ^= 0xFF
        status, err = self.exchange(".".join([h, c, b64url(bytes(sig))]))
        self.assertEqual(status, 400)
        self.assertEqual(err["error"], "invalid_grant")
        self.assertIn("signature", err["error_description"])
        # Claims swapped under a valid signature of other claims.
        other = b64url(json.dumps(self.claims(scope=STORAGE_RO + " x")).encode())
        self.assertEqual(self.exchange(".".join([h, other, s]))[0], 400)

        bad_claims = [
            self.claims(aud="http://127.0.0.1:1/token"),
            self.claims(iss="someone@else.example"),
            self.claims(scope="https://www.googleapis.com/auth/userinfo.email"),
            self.claims(iat=int(time.time()) - 1000, exp=int(time.time()) + 1000),
            self.claims(exp=int(time.time()) + 7200),
        ]
        for claims in bad_claims:
            status, err = self.exchange(sign_jwt(self.key, header, claims, self.tmp))
            self.assertEqual(status, 400, claims)
            self.assertEqual(err["error"], "invalid_grant")
        status, _ = self.exchange(sign_jwt(self.key, {"alg": "HS256", "typ": "JWT"},
                                           self.claims(), self.tmp))
        self.assertEqual(status, 400)
        self.assertEqual(self.exchange("a.b")[0], 400)
        good = sign_jwt(self.key, header, self.claims(), self.tmp)
        self.assertEqual(self.exchange(good, grant="password")[0], 400)

        # Other storage scopes are accepted.
        status, tok2 = self.exchange(sign_jwt(
            self.key, header,
            self.claims(scope="https://www.googleapis.com/auth/cloud-platform"), self.tmp))
        self.assertEqual(status, 200, tok2)

        issued = get_json(self.addr, "/__issued__")[1]
        self.assertEqual(issued["tokens"], [tok["access_token"], tok2["access_token"]])
        oks = [r["ok"] for r in issued["requests"]]
        self.assertEqual(oks[0], True)
        self.assertEqual(oks[-1], True)
        self.assertEqual(oks.count(True), 2)
        self.assertTrue(all(r["reason"] for r in issued["requests"] if not r["ok"]))

    def test_token_through_proxy(self):
        """A token from the JWT flow opens a proxy that requires it."""
        up_port = start_upstream(self)
        proxy, paddr = start_server(script_argv(
            "faultproxy.py", "--listen-port", free_port(),
            "--upstream", "http://127.0.0.1:%d" % up_port))
        self.addCleanup(stop_server, proxy)
        status, tok = self.exchange(sign_jwt(self.key, {"alg": "RS256", "typ": "JWT"},
                                             self.claims(), self.tmp))
        self.assertEqual(status, 200)
        post_json(paddr, "/__fault__/require_bearer", {"tokens": [tok["access_token"]]})
        self.assertEqual(request(paddr, "GET", "/o?alt=media")[0], 401)
        status, _, body = request(paddr, "GET", "/o?alt=media",
                                  headers={"Authorization": "Bearer " + tok["access_token"]})
        self.assertEqual((status, body), (200, DATA))

    def test_fail_applies_to_token_endpoint(self):
        post_json(self.addr, "/__config__", {"fail": 1})
        jwt = sign_jwt(self.key, {"alg": "RS256", "typ": "JWT"}, self.claims(), self.tmp)
        self.assertEqual(self.exchange(jwt)[0], 500)
        self.assertEqual(self.exchange(jwt)[0], 200)


class HelpersTest(unittest.TestCase):

    def test_start_server_failure_is_reported(self):
        with self.assertRaises(RuntimeError):
            start_server([sys.executable, "-c", "import sys; sys.exit(3)"], timeout=10)
        with self.assertRaises(RuntimeError):
            start_server([sys.executable, "-c", "import time; time.sleep(30)"],
                          timeout=1)

    def test_stop_server_kills_stubborn_process(self):
        code = ("import signal, sys, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('READY 127.0.0.1:1', flush=True)\n"
                "time.sleep(60)\n")
        proc, addr = start_server([sys.executable, "-c", code])
        self.addCleanup(stop_server, proc)
        self.assertEqual(addr, "127.0.0.1:1")
        t0 = time.monotonic()
        stop_server(proc, timeout=1)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(proc.returncode, -9)

    def test_run_killed_by_its_time_limit_releases_what_it_holds(self):
        """meson's time limit: SIGTERM to the run's process group, SIGKILL
        half a second later. No cleanup of the run gets to run; what it
        held (a mount, its daemon, a server, directories) is released all
        the same."""
        import shutil
        import signal
        import harness
        code = ("import json, os, sys, time\n"
                "sys.path.insert(0, %r)\n"
                "import harness, servers\n"
                "servers.release_all_on_sigterm()\n"
                "src = harness.mkdtemp('zfs-selftest-')\n"
                "open(os.path.join(src, 'a.txt'), 'w').write('a')\n"
                "m = harness.Mount(src)\n"
                "p, _ = servers.start_server([sys.executable, '-c', %r])\n"
                "print(json.dumps({'mnt': m.mnt, 'dirs': [src, m.tmp],\n"
                "                  'pids': [m.proc.pid, p.pid]}), flush=True)\n"
                "time.sleep(120)\n"
                % (os.path.dirname(os.path.abspath(__file__)),
                   "import time; print('READY 127.0.0.1:1', flush=True); time.sleep(120)"))
        run = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                               start_new_session=True)
        held = {"mnt": None, "dirs": [], "pids": []}

        def last_resort():
            for pid in [run.pid] + held["pids"]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if held["mnt"]:
                subprocess.run(["fusermount3", "-uz", held["mnt"]], capture_output=True)
            for d in held["dirs"]:
                shutil.rmtree(d, ignore_errors=True)
            run.wait()
            run.stdout.close()
        self.addCleanup(last_resort)
        held.update(json.loads(run.stdout.readline()))
        self.assertTrue(harness.is_mounted(held["mnt"]))
        os.killpg(run.pid, signal.SIGTERM)
        time.sleep(0.5)
        try:
            os.killpg(run.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        run.wait()

        def alive(pid):
            try:
                os.kill(pid, 0)
                return True
            except ProcessLookupError:
                return False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = ([held["mnt"]] if harness.is_mounted(held["mnt"]) else []) + \
                   [d for d in held["dirs"] if os.path.exists(d)] + \
                   [p for p in held["pids"] if alive(p)]
            if not left:
                break
            time.sleep(0.1)
        self.assertEqual(left, [])


if __name__ == "__main__":
    unittest.main()
