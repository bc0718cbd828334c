"""Authentication against a local server that plays the other side: the GCE
metadata server, a service-account key file (JWT RS256 to the token
endpoint), an access-token file, anonymous. The fault proxy checks the
bearer token on every request to the storage server."""

import errno
import json
import os
import subprocess
import time
import urllib.request

import harness
import servers
from gcs_common import GcsTestCase

EMAIL = "reader@zipperfs-test.iam.gserviceaccount.com"


class FakeAuth:
    def __init__(self, tc, expires_in=3600, key_dir=None):
        port = servers.free_port()
        self.base = "http://127.0.0.1:%d" % port
        args = ["--listen-port", port, "--expires-in", expires_in]
        if key_dir:
            subprocess.run(servers.script_argv("fakeauth.py", "--make-key", key_dir,
                                               "--client-email", EMAIL,
                                               "--token-uri", self.base + "/token"),
                           check=True, capture_output=True)
            args += ["--public-key", os.path.join(key_dir, "pub.pem"), "--client-email", EMAIL]
        self.proc, self.addr = servers.start_server(servers.script_argv("fakeauth.py", *args))
        tc.addCleanup(servers.stop_server, self.proc)

    def issued(self):
        with urllib.request.urlopen(self.base + "/__issued__", timeout=10) as r:
            return json.loads(r.read())


class AuthTest(GcsTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for i in range(5):
            cls.emu.upload("authb", "f%d.txt" % i, b"secret %d\n" % i)

    def setUp(self):
        self.p = self.proxy()

    def require(self, tokens):
        self.p.control("require_bearer", {"tokens": tokens})

    def assert_no_token_logged(self, m, tokens):
        m.close()
        text = m.log_text()
        for t in tokens:
            self.assertNotIn(t, text)

    def test_metadata_server(self):
        fa = FakeAuth(self)
        m = self.mount("gs://authb", endpoint=self.p.endpoint, options=["auth=metadata"],
                       env={"GCE_METADATA_HOST": fa.addr})
        self.assertEqual(len(os.listdir(m.mnt)), 5)
        tokens = fa.issued()["tokens"]
        self.assertEqual(len(tokens), 1)
        self.assertTrue(tokens[0].startswith("meta-"))
        # from now on the storage server takes only that token
        self.require(tokens)
        with open(m.path("f1.txt"), "rb") as f:
            self.assertEqual(f.read(), b"secret 1\n")
        self.assertTrue(all(r["authorization"] for r in self.p.log()))
        self.assertEqual(len(fa.issued()["tokens"]), 1, "a cached token was fetched again")
        # a token the server does not take is EACCES, not EIO
        self.require(["something-else"])
        self.assert_errno(lambda: open(m.path("f2.txt")).read(), errno.EACCES)
        self.assert_no_token_logged(m, tokens)

    def test_metadata_token_is_refreshed_before_expiry(self):
        fa = FakeAuth(self, expires_in=4)
        m = self.mount("gs://authb", endpoint=self.p.endpoint,
                       options=["auth=metadata", "stat_ttl=0", "list_ttl=0"],
                       env={"GCE_METADATA_HOST": fa.addr})
        os.stat(m.path("f0.txt"))
        self.assertEqual(len(fa.issued()["tokens"]), 1)
        time.sleep(3)  # past half the lifetime: the token must be renewed
        os.stat(m.path("f1.txt"))
        tokens = fa.issued()["tokens"]
        self.assertEqual(len(tokens), 2)
        self.require([tokens[-1]])
        os.stat(m.path("f2.txt"))
        self.assert_no_token_logged(m, tokens)

    def test_service_account_key_file(self):
        keys = self.tempdir()
        fa = FakeAuth(self, key_dir=keys)
        m = self.mount("gs://authb", endpoint=self.p.endpoint,
                       options=["key_file=" + os.path.join(keys, "sa.json")])
        self.assertEqual(len(os.listdir(m.mnt)), 5)
        issued = fa.issued()
        self.assertEqual(len(issued["tokens"]), 1)
        self.assertTrue(issued["tokens"][0].startswith("jwt-"))
        self.assertTrue(all(r["ok"] for r in issued["requests"]), issued["requests"])
        self.require(issued["tokens"])
        with open(m.path("f3.txt"), "rb") as f:
            self.assertEqual(f.read(), b"secret 3\n")
        self.assert_no_token_logged(m, issued["tokens"])

    def test_bad_key_file_fails_the_mount(self):
        bad = os.path.join(self.tempdir(), "sa.json")
        with open(bad, "w") as f:
            json.dump({"type": "service_account", "client_email": EMAIL,
                       "private_key": "-----BEGIN PRIVATE KEY-----\nnot a key\n"
                                      "-----END PRIVATE KEY-----\n"}, f)
        with self.assertRaises(RuntimeError) as ctx:
            harness.Mount("gs://authb", ["endpoint=" + self.p.endpoint, "key_file=" + bad])
        self.assertIn("authentication", str(ctx.exception))

    def test_token_file(self):
        tf = os.path.join(self.tempdir(), "token")
        with open(tf, "w") as f:
            f.write("file-token-1\n")
        self.require(["file-token-1"])
        m = self.mount("gs://authb", endpoint=self.p.endpoint,
                       options=["token_file=" + tf, "stat_ttl=0", "list_ttl=0"])
        self.assertEqual(len(os.listdir(m.mnt)), 5)
        # the token is rotated by whoever writes the file
        with open(tf + ".new", "w") as f:
            f.write("file-token-2")
        os.rename(tf + ".new", tf)
        self.require(["file-token-2"])
        time.sleep(1.5)
        with open(m.path("f4.txt"), "rb") as f:
            self.assertEqual(f.read(), b"secret 4\n")
        self.assert_no_token_logged(m, ["file-token-1", "file-token-2"])

    def test_anonymous(self):
        m = self.mount("gs://authb", endpoint=self.p.endpoint, options=["auth=none"])
        self.assertEqual(len(os.listdir(m.mnt)), 5)
        self.assertFalse(any(r["authorization"] for r in self.p.log()))


if __name__ == "__main__":
    harness.main()
