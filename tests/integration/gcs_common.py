"""Fixtures shared by the GCS integration tests: one emulator per test class,
a fault proxy in front of it on demand, mounts pointed at either."""

import calendar
import json
import os
import re
import urllib.request

import harness
import servers


def rfc3339_ns(text):
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z$", text)
    secs = calendar.timegm(tuple(int(m.group(i)) for i in range(1, 7)))
    frac = (m.group(7) or "").ljust(9, "0")[:9]
    return secs * 10**9 + int(frac)


class Proxy:
    """The fault-injecting proxy in front of the emulator."""

    def __init__(self, upstream):
        port = servers.free_port()
        self.proc, self.addr = servers.start_server(
            servers.script_argv("faultproxy.py", "--listen-port", port, "--upstream", upstream))
        self.endpoint = "http://" + self.addr

    def control(self, what, body=None, method="POST"):
        data = json.dumps(body).encode() if body is not None else b"{}"
        req = urllib.request.Request(self.endpoint + "/__fault__/" + what,
                                     data=data if method == "POST" else None, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def plan(self, *rules):
        self.control("plan", {"rules": list(rules)})

    def log(self):
        return self.control("log", method="GET")

    def stop(self):
        servers.stop_server(self.proc)


class GcsTestCase(harness.MountTestCase):
    @classmethod
    def setUpClass(cls):
        cls.emu = harness.GcsEmulator()

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()

    def proxy(self):
        p = Proxy(self.emu.endpoint)
        self.addCleanup(p.stop)
        return p

    def mount(self, source, options=(), env=None, endpoint=None, **kw):
        opts = ["endpoint=" + (endpoint or self.emu.endpoint)] + list(options)
        return super().mount(source, opts, env=env, **kw)

    def seed_dir(self, bucket, ref):
        """Uploads every file under ref; empty directories get a marker.
        Returns {relpath: mtime_ns} from the objects' `updated`."""
        mtimes = {}
        for root, dirs, files in os.walk(ref):
            rel = os.path.relpath(root, ref)
            if not dirs and not files and rel != ".":
                self.emu.upload(bucket, rel + "/", b"")
            for name in files:
                path = os.path.normpath(os.path.join(rel, name))
                with open(os.path.join(root, name), "rb") as f:
                    obj = self.emu.upload(bucket, path, f.read())
                mtimes[path] = rfc3339_ns(obj["updated"])
        return mtimes
