"""Fixtures shared by the S3 integration tests: s3rver behind the front of
scripts/s3-server.js (SigV4 checked, If-Match, private buckets, a request
log), seeded through its S3 API with requests signed here (SigV4 with
hashlib and hmac), and mounts pointed at it."""

import calendar
import email.utils
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import time
import urllib.parse

import harness
import servers
import treecheck

ACCESS_KEY = "S3RVER"
SECRET_KEY = "S3RVER"
REGION = "us-east-1"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def quote(s, slash):
    """SigV4's URI encoding: RFC 3986 unreserved characters kept."""
    return urllib.parse.quote(s, safe="/~" if slash else "~")


def sign(method, host, path, query, headers, payload, key, secret, region, token=None):
    """Headers of a SigV4-signed request. path is the key's path (not yet
    encoded); query a list of (name, value). Returns (encoded path with
    query, headers)."""
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    date = amz_date[:8]
    payload_hash = hashlib.sha256(payload).hexdigest()
    enc_path = quote(path, True)
    pairs = sorted((quote(n, False), quote(v, False)) for n, v in query)
    enc_query = "&".join("%s=%s" % p for p in pairs)
    hdrs = {k.lower(): str(v) for k, v in headers.items()}
    hdrs.update({"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash})
    if token:
        hdrs["x-amz-security-token"] = token
    names = sorted(hdrs)
    canonical = "\n".join([
        method, enc_path, enc_query,
        "".join("%s:%s\n" % (n, " ".join(hdrs[n].split())) for n in names),
        ";".join(names), payload_hash])
    scope = "%s/%s/s3/aws4_request" % (date, region)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (date, region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    hdrs["authorization"] = ("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s"
                             % (key, scope, ";".join(names), sig))
    del hdrs["host"]
    return enc_path + ("?" + enc_query if enc_query else ""), hdrs


class S3Server:
    """scripts/s3-server.js on 127.0.0.1."""

    def __init__(self, args=(), key=ACCESS_KEY, secret=SECRET_KEY, token=None):
        port = servers.free_port()
        argv = ["node", os.path.join(harness.TOP, "scripts", "s3-server.js"),
                "--port", str(port)] + list(args)
        self.proc, self.addr = servers.start_server(argv, timeout=60,
                                                    stderr=subprocess.DEVNULL)
        self.endpoint = "http://" + self.addr
        self.key, self.secret, self.token = key, secret, token
        self.buckets = set()

    def request(self, method, bucket, key="", query=(), body=b"", headers=None):
        """A signed request; returns (status, {header: value}, body)."""
        path = "/" + bucket + ("/" + key if key else "")
        target, hdrs = sign(method, self.addr, path, query, headers or {}, body,
                            self.key, self.secret, REGION, self.token)
        host, port = self.addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        try:
            conn.request(method, target, body=body, headers=hdrs)
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def ok(self, *args, **kw):
        status, hdrs, data = self.request(*args, **kw)
        if status // 100 != 2:
            raise RuntimeError("%s %s: HTTP %d %r" % (args[0], args[1:3], status, data[:300]))
        return hdrs, data

    def create_bucket(self, bucket):
        if bucket not in self.buckets:
            status, _, data = self.request("PUT", bucket)
            if status // 100 != 2 and b"BucketAlreadyExists" not in data:
                raise RuntimeError("creating %s: HTTP %d %r" % (bucket, status, data[:300]))
            self.buckets.add(bucket)

    def put(self, bucket, key, data):
        """Uploads; returns {"etag", "mtime"} (mtime in whole seconds, as
        the object's Last-Modified says)."""
        self.create_bucket(bucket)
        self.ok("PUT", bucket, key, body=data,
                headers={"Content-Type": "application/octet-stream"})
        hdrs, _ = self.ok("HEAD", bucket, key)
        mtime = calendar.timegm(email.utils.parsedate(hdrs["last-modified"]))
        return {"etag": hdrs["etag"], "mtime": mtime}

    def delete(self, bucket, key):
        self.ok("DELETE", bucket, key)

    def control(self, what, body=None, method="POST"):
        host, port = self.addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            data = json.dumps(body if body is not None else {}).encode()
            conn.request(method, "/__control__/" + what,
                         body=data if method == "POST" else None,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            return json.loads(r.read() or b"null")
        finally:
            conn.close()

    def log(self):
        return self.control("log", method="GET")

    def reset_log(self):
        self.control("reset")

    def stop(self):
        servers.stop_server(self.proc)


# Variables of the AWS tools that would reach a mount from the environment
# the tests run in; each test says what it wants. AWS_CA_BUNDLE is among
# them: some clients refuse to start when it names no file.
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
           "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
           "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_CA_BUNDLE",
           "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def make_s3rver_tree(ref, big_size=20 << 20):
    """treecheck.make_tree, fitted to what s3rver can hold: s3rver keeps an
    object as files named <last component>._S3rver_object (and
    ._S3rver_metadata.json), so a component over 233 bytes cannot be
    stored; and its delimiter listing leaves out a prefix that holds only
    prefixes, so every directory gets a file of its own."""
    files = treecheck.make_tree(ref, big_size=big_size)
    long_name = "n" * 255
    os.rename(os.path.join(ref, long_name), os.path.join(ref, "n" * 200))
    for root, dirs, names in os.walk(ref):
        if dirs and not names:
            with open(os.path.join(root, "level.txt"), "wb") as f:
                f.write(("a file at " + os.path.relpath(root, ref) + "\n").encode())
    return files


class S3TestCase(harness.MountTestCase):
    server_args = ()

    @classmethod
    def setUpClass(cls):
        cls.s3 = S3Server(cls.server_args)

    @classmethod
    def tearDownClass(cls):
        cls.s3.stop()

    def mount(self, source, options=(), env=None, endpoint=None, creds=True, **kw):
        """A mount of source with the server's credentials in the
        environment (creds=False: none), HOME an empty directory, and no
        other AWS variable than env sets."""
        opts = ["endpoint=" + (endpoint or self.s3.endpoint)] + list(options)
        run_env = dict.fromkeys(AWS_ENV)
        run_env["HOME"] = self.tempdir()
        if creds:
            run_env["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
            run_env["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
        run_env.update(env or {})
        return super().mount(source, opts, env=run_env, **kw)

    def seed_dir(self, bucket, ref):
        """Uploads every file under ref; empty directories get a marker.
        Returns {relpath: mtime_ns}."""
        mtimes = {}
        for root, dirs, files in os.walk(ref):
            rel = os.path.relpath(root, ref)
            if not dirs and not files and rel != ".":
                self.s3.put(bucket, rel + "/", b"")
            for name in files:
                path = os.path.normpath(os.path.join(rel, name))
                with open(os.path.join(root, name), "rb") as f:
                    obj = self.s3.put(bucket, path, f.read())
                mtimes[path] = obj["mtime"] * 10**9
        return mtimes

