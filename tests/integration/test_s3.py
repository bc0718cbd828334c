"""The S3 backend against an S3-compatible server (s3rver behind
scripts/s3-server.js, which checks every SigV4 signature and honours
If-Match), mounted for real.

What s3rver 3.7.1 cannot hold shapes the trees used here (s3_common.py):
object names are its file names, so "a//b", "./" and "../" keys are folded
and components over 233 bytes cannot be stored; and a delimiter listing
leaves out a prefix that holds only prefixes (test_prefix_of_only_prefixes
shows what the mount does then). Those name rules are checked against the
GCS emulator and by the unit tests of the listing parser."""

import errno
import http.client
import json
import os
import struct
import subprocess
import time
import zipfile
import zlib

import harness
import servers
import test_tree_zip
import treecheck
from s3_common import ACCESS_KEY, SECRET_KEY, S3TestCase, make_s3rver_tree

UTF8_ENV = dict(os.environ, LC_ALL="C.UTF-8")

TMP_KEY, TMP_SECRET, TMP_TOKEN = "TMPKEY", "tmp/secret+key", "session-token-123=="
PRIVATE = "private-bucket"


def object_gets(log, bucket, name):
    return [r for r in log if r["method"] == "GET" and "list-type=" not in r["path"]
            and r["path"].split("?")[0] == "/%s/%s" % (bucket, name)]


def listings(log):
    return [r for r in log if "list-type=2" in r["path"]]


class S3Test(S3TestCase):
    server_args = ("--key", "%s:%s" % (ACCESS_KEY, SECRET_KEY),
                   "--key", "%s:%s:%s" % (TMP_KEY, TMP_SECRET, TMP_TOKEN),
                   "--private", PRIVATE)

    # -- the tree, as users see it

    def test_tree_matches_bucket(self):
        ref = self.tempdir()
        make_s3rver_tree(ref)
        mtimes = self.seed_dir("tree", ref)
        m = self.mount("s3://tree")
        treecheck.check_tree(self, ref, m.mnt, mtimes=mtimes, work=self.tempdir())

    def test_prefix_source(self):
        self.s3.put("pre", "top/sub/file.txt", b"in the prefix\n")
        self.s3.put("pre", "top/other.txt", b"x")
        self.s3.put("pre", "elsewhere.txt", b"not shown")
        m = self.mount("s3://pre/top/")
        self.assertEqual(sorted(os.listdir(m.mnt)), ["other.txt", "sub"])
        with open(m.path("sub", "file.txt"), "rb") as f:
            self.assertEqual(f.read(), b"in the prefix\n")

    def test_namespace_rules(self):
        b = "names"
        up = lambda name, data=b"x": self.s3.put(b, name, data)
        up("implicit/top.txt")                      # no directory markers at all
        up("implicit/a/mid.txt")
        up("implicit/a/b/c.txt", b"deep\n")
        up("marker/", b"")                          # an explicit, empty directory
        up("marker2/", b"")
        up("marker2/inside.txt", b"in\n")
        up("both", b"an object named like a prefix")  # object and prefix at once
        up("both/inner.txt", b"inner\n")
        # characters that URLs, query strings and SigV4 treat specially
        odd = ["sp ace", "a+b", "100%", "q?x", "h#x", "amp&x=y", "tilde~", "caf\u00e9",
               "semi;colon", "quote'", "(paren)", "star*", "comma,", "colon:", "at@",
               "dollar$", "brackets[]", "excl!", "x%2Fy", "plus+%2B"]
        for name in odd:
            up("odd dir+%/" + name, name.encode())
        up("long/" + "L" * 230, b"230 bytes\n")
        m = self.mount("s3://" + b)
        found = subprocess.run(["find", m.mnt, "-mindepth", "1", "-printf", "%y %P\\n"],
                               capture_output=True, check=True).stdout.decode().split("\n")
        want = ["d implicit", "f implicit/top.txt", "d implicit/a", "f implicit/a/mid.txt",
                "d implicit/a/b", "f implicit/a/b/c.txt",
                "d marker", "d marker2", "f marker2/inside.txt",
                "d both", "f both/inner.txt",
                "d odd dir+%", "d long", "f long/" + "L" * 230]
        want += ["f odd dir+%/" + n for n in odd]
        self.assertEqual(sorted(l for l in found if l), sorted(want))
        self.assertTrue(os.path.isdir(m.path("both")))
        self.assertEqual(os.listdir(m.path("marker")), [])
        for name in odd:
            with open(m.path("odd dir+%", name), "rb") as f:
                self.assertEqual(f.read(), name.encode(), name)
        m.close()
        self.assertIn("both is both an object and a prefix", m.log_text())

    def test_prefix_of_only_prefixes(self):
        """s3rver's delimiter listing leaves out "only/" when it holds only
        the prefix "only/sub/" (real S3 lists it). The mount shows the
        listing as the server gives it; a lookup by path asks about that
        one name (a listing with prefix "only/", no delimiter, max-keys=1)
        and finds the directory, unless the parent's listing is cached
        (list_ttl), which then answers for it."""
        self.s3.put("holes", "only/sub/deep.txt", b"deep\n")
        self.s3.put("holes", "top.txt", b"top\n")
        # by path first, on a fresh mount
        m = self.mount("s3://holes")
        self.assertTrue(os.path.isdir(m.path("only")))
        self.assertEqual(os.listdir(m.path("only")), ["sub"])
        with open(m.path("only", "sub", "deep.txt"), "rb") as f:
            self.assertEqual(f.read(), b"deep\n")
        # listing first: the server's listing is what the mount shows
        m2 = self.mount("s3://holes")
        self.assertEqual(os.listdir(m2.mnt), ["top.txt"])
        self.assert_errno(lambda: os.stat(m2.path("only")), errno.ENOENT)

    def test_fresh_mount_lookups(self):
        """Paths reached without listing first (cold caches, no readdir)."""
        self.s3.put("cold", "x/y/z.txt", b"zzz")
        self.s3.put("cold", "both", b"o")
        self.s3.put("cold", "both/in", b"i")
        m = self.mount("s3://cold")
        st = os.stat(m.path("x/y/z.txt"))
        self.assertEqual(st.st_size, 3)
        self.assertTrue(os.path.isdir(m.path("x/y")))
        self.assertTrue(os.path.isdir(m.path("both")))
        self.assert_errno(lambda: os.stat(m.path("x/nope")), errno.ENOENT)
        self.assert_errno(lambda: open(m.path("x/y/z.txt/sub")), errno.ENOTDIR)

    def test_pagination(self):
        names = ["many/f%03d.txt" % i for i in range(45)]
        names += ["many/sub%02d/file.txt" % i for i in range(12)]
        for n in names:
            self.s3.put("pages", n, n.encode())
        self.s3.reset_log()
        m = self.mount("s3://pages", options=["list_page_size=7"])
        listing = os.listdir(m.path("many"))
        self.assertEqual(len(listing), len(set(listing)))
        self.assertEqual(sorted(listing), sorted(["f%03d.txt" % i for i in range(45)] +
                                                 ["sub%02d" % i for i in range(12)]))
        pages = [r for r in listings(self.s3.log()) if "delimiter=" in r["path"]]
        # 45 objects, 7 a page (s3rver does not count prefixes)
        self.assertEqual(len(pages), 7, [r["path"] for r in pages])
        self.assertNotIn("continuation-token=", pages[0]["path"])
        for r in pages[1:]:
            self.assertIn("continuation-token=", r["path"])
            self.assertIn("max-keys=7", r["path"])
            self.assertEqual(r["status"], 200, r)

    def _copy_spans(self, ref, options):
        """Copies big/big.bin through a new mount with options; returns the
        byte spans its GETs asked for, sorted, and the most GETs at once.
        The mount's stats count those GETs as the parts of one run, and
        splits as the log shows them."""
        self.s3.reset_log()
        m = self.mount("s3://big", options=options)
        dst = os.path.join(self.tempdir(), "copy.bin")
        self.run_ok(["cp", m.path("big.bin"), dst])
        self.run_ok(["cmp", ref, dst])
        with open(m.path(test_tree_zip.CONTROL, "stats")) as f:
            reads = json.load(f)["reads"]
        media = object_gets(self.s3.log(), "big", "big.bin")
        self.assertEqual(reads["runs"], 1, reads)
        self.assertEqual(reads["parts"], len(media), reads)
        self.assertEqual(reads["exact_fetches"], 0, reads)
        # a long GET asked from the first MiB to the end, and more GETs
        # than it and the first: it was cut short for parts
        long_get = "bytes=%d-%d" % (1 << 20, os.path.getsize(ref) - 1)
        cut = len(media) > 2 and any(r["range"] == long_get for r in media)
        self.assertEqual(reads["splits"], 1 if cut else 0, (reads, media))
        for r in media:
            # a GET cut short is closed before it is answered in full: the
            # server's log has no status for it
            self.assertIn(r["status"], (206, None), r)
            # signed, If-Match included in what is signed
            self.assertEqual(r["ifMatch"], self.etag, r)
        self.assertLessEqual(sum(r["status"] is None for r in media), 1, media)
        spans = sorted(tuple(int(x) for x in r["range"].split("=")[1].split("-")) for r in media)
        return spans, max(r["active"] for r in media)

    def assert_parts(self, spans, size, cut_from=None):
        """A first MiB, then parts of 8 MiB at most that follow each other
        to the end (after a long GET cut short, when cut_from is given)."""
        self.assertEqual(spans[0], (0, (1 << 20) - 1))
        rest = spans[1:]
        if cut_from is not None:
            self.assertEqual(rest[0], (1 << 20, size - 1))  # the long GET, asked to the end
            rest = rest[1:]
            self.assertGreater(rest[0][0], 1 << 20)
            self.assertEqual(rest[0][0] % (1 << 20), 0, spans)  # cut at a block's end
        else:
            self.assertEqual(rest[0][0], 1 << 20)
        for (_, last), (first, _) in zip(rest, rest[1:]):
            self.assertEqual(first, last + 1, spans)
        self.assertEqual(rest[-1][1], size - 1)
        self.assertTrue(all(b - a + 1 <= 8 << 20 for a, b in rest), spans)

    def test_large_object_copy(self):
        size = 64 << 20
        ref = os.path.join(self.tempdir(), "big.bin")
        with open(ref, "wb") as f:
            f.write(os.urandom(size))
        with open(ref, "rb") as f:
            self.etag = self.s3.put("big", "big.bin", f.read())["etag"]
        # a GET faster than split_below_mbs stays one: a small first
        # request, then one long ranged GET for the rest
        spans, _ = self._copy_spans(ref, ["split_below_mbs=1"])
        self.assertEqual(spans, [(0, (1 << 20) - 1), (1 << 20, size - 1)])
        # so does prefetch_part_mb=0, whatever the speed
        self.s3.control("rate", {"mbs": 40})
        self.addCleanup(self.s3.control, "rate", {"mbs": 0})
        spans, _ = self._copy_spans(ref, ["prefetch_part_mb=0"])
        self.assertEqual(spans, [(0, (1 << 20) - 1), (1 << 20, size - 1)])
        # a store that gives one connection 40 MB/s, below the default 200:
        # the long GET stops at a block's end and 8 MiB parts go on, several
        # at once, each byte asked for once
        spans, most = self._copy_spans(ref, [])
        self.assert_parts(spans, size, cut_from=True)
        self.assertGreaterEqual(most, 2, "no two parts at once")
        self.s3.control("rate", {"mbs": 0})
        # split_below_mbs=0: parts from the start, whatever the speed
        spans, most = self._copy_spans(ref, ["split_below_mbs=0"])
        self.assert_parts(spans, size)
        self.assertEqual(len(spans), 1 + 8)
        self.assertGreaterEqual(most, 2, "no two parts at once")

    def test_parts_keep_their_connections(self):
        # the reads take each part's last bytes as they land, before its
        # GET has ended: a part no longer wanted but with all its bytes in
        # must end as any other, its connection kept for the next part
        size = 128 << 20
        data = os.urandom(size)
        self.s3.put("conns", "big.bin", data)
        ref = os.path.join(self.tempdir(), "ref.bin")
        with open(ref, "wb") as f:
            f.write(data)
        self.s3.reset_log()
        m = self.mount("s3://conns", options=["split_below_mbs=0", "prefetch_part_mb=1",
                                              "prefetch_parallel=8"])
        dst = os.path.join(self.tempdir(), "copy.bin")
        self.run_ok(["cp", m.path("big.bin"), dst])
        self.run_ok(["cmp", ref, dst])
        log = self.s3.log()
        gets = object_gets(log, "conns", "big.bin")
        self.assertEqual(len(gets), 128)
        self.assertTrue(all(r["status"] == 206 for r in gets), gets)
        # eight parts at once (the listing and the HEAD come first, on a
        # connection the parts take up again), and a read that may fetch on
        # its own: ten connections at most. Closing a part's connection at
        # its end took 15 to 24 with 64 parts, now and then ten or fewer;
        # 128 parts leave it no such luck.
        peers = {r["peer"] for r in log}
        self.assertLessEqual(len(peers), 10, [(r["peer"], r["range"]) for r in log])

    def wait_request(self, m, name, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(m.path(".zipperfs", "archives", name + ".status")) as f:
                    st = json.load(f)
            except FileNotFoundError:
                st = {"state": None}
            if st["state"] in ("done", "failed") or time.monotonic() > deadline:
                return st
            time.sleep(0.05)

    def slow_request_mount(self, bucket, size, options=()):
        """A bucket with d/big.bin of size bytes and d/small.txt, served at
        20 MB/s a GET (a 1 MiB part takes about 50 ms, so parts overlap),
        mounted with 1 MiB parts, four at once (and options)."""
        data = os.urandom(size)
        self.s3.put(bucket, "d/big.bin", data)
        self.s3.put(bucket, "d/small.txt", b"small\n")
        self.assertEqual(self.s3.control("rate", {"mbs": 20}), {"mbs": 20})
        self.addCleanup(self.s3.control, "rate", {"mbs": 0})
        m = self.mount("s3://" + bucket, options=["cache_dir=" + self.tempdir(),
                                                  "prefetch_part_mb=1", "prefetch_parallel=4"]
                       + list(options))
        self.s3.reset_log()
        return m, data

    def check_request_zip(self, m, name, data):
        self.s3.control("rate", {"mbs": 0})
        dst = os.path.join(self.tempdir(), name + ".zip")
        self.run_ok(["cp", m.path(".zipperfs", "archives", name + ".zip"), dst])
        self.run_ok(["unzip", "-tq", dst])
        with zipfile.ZipFile(dst) as z:
            self.assertEqual(z.getinfo("d/big.bin").CRC, zlib.crc32(data))
            self.assertEqual(z.read("d/big.bin"), data)  # zipfile checks the CRC too

    def test_request_fetches_a_large_member_in_parts_at_once(self):
        # materializing a request computes every CRC: a member larger than
        # prefetch_part_mb comes in parts, several at once, each byte once,
        # and the CRCs of the parts combine into the member's
        size = 12 << 20
        m, data = self.slow_request_mount("mat", size)
        with open(m.path(".zipperfs", "requests", "mat"), "w") as f:
            f.write("d/\n")
        st = self.wait_request(m, "mat")
        self.assertEqual(st["state"], "done", st)
        gets = object_gets(self.s3.log(), "mat", "d/big.bin")
        mib = 1 << 20
        self.assertEqual(sorted(r["range"] for r in gets),
                         sorted("bytes=%d-%d" % (i, i + mib - 1) for i in range(0, size, mib)),
                         gets)
        # four workers: more than two GETs of it in progress at one moment
        self.assertGreaterEqual(max(r["active"] for r in gets), 3, gets)
        self.check_request_zip(m, "mat", data)

    def test_descriptor_read_first_fetches_a_large_member_in_parts(self):
        # a data descriptor read before its member's bytes (the kernel's
        # readahead before a central directory reads the last member's)
        # needs the member's CRC: a member larger than prefetch_part_mb comes
        # in parts, several at once, each byte once, not in one long GET
        size = 8 << 20
        m, data = self.slow_request_mount("desc", size, ["max_jobs=0"])
        z = m.path(".zipperfs", "tree", "d.zip")
        desc_off = 30 + len("d/") + 9 + 30 + len("d/big.bin") + 9 + size
        f = os.open(z, os.O_RDONLY)
        try:
            os.posix_fadvise(f, 0, 0, os.POSIX_FADV_RANDOM)  # no kernel readahead
            desc = os.pread(f, 16, desc_off)
        finally:
            os.close(f)
        self.assertEqual(desc[:4], b"PK\x07\x08")
        self.assertEqual(struct.unpack_from("<I", desc, 4)[0], zlib.crc32(data))
        gets = object_gets(self.s3.log(), "desc", "d/big.bin")
        spans = sorted((int(a), int(b) + 1) for a, b in
                       (r["range"].split("=")[1].split("-") for r in gets))
        # each byte once: the page before the descriptor read as data, the
        # rest in parts of at most 1 MiB
        self.assertEqual(sum(b - a for a, b in spans), size, spans)
        self.assertTrue(all(spans[k][1] <= spans[k + 1][0] for k in range(len(spans) - 1)),
                        spans)
        self.assertTrue(all(b - a <= 1 << 20 for a, b in spans), spans)
        # four at once: more than two GETs of it in progress at one moment
        self.assertGreaterEqual(max(r["active"] for r in gets), 3, gets)

    def test_central_directory_read_while_materializing_fetches_nothing_twice(self):
        # the central directory needs every CRC: read while the job is
        # fetching them, it does not fetch the same bytes alongside it
        size = 24 << 20
        m, data = self.slow_request_mount("matcd", size)
        with open(m.path(".zipperfs", "requests", "cd"), "w") as f:
            f.write("d/\n")
        # once the job's first parts are under way (it has about a second
        # of them to go)
        deadline = time.monotonic() + 10
        while not object_gets(self.s3.log(), "matcd", "d/big.bin"):
            self.assertLess(time.monotonic(), deadline, "the job fetched nothing")
            time.sleep(0.01)
        out = self.run_ok(["unzip", "-l", m.path(".zipperfs", "archives", "cd.zip")])
        self.assertIn("d/big.bin", out)
        st = self.wait_request(m, "cd")
        self.assertEqual(st["state"], "done", st)
        spans = []
        for r in object_gets(self.s3.log(), "matcd", "d/big.bin"):
            first, last = r["range"].split("=")[1].split("-")
            spans.append((int(first), int(last) + 1))
        spans.sort()
        # every byte of it exactly once: the kernel's readahead before the
        # central directory reads its last bytes as data, and its data
        # descriptor, whose CRC is then fetched by the read or by the job,
        # never both
        self.assertEqual(sum(b - a for a, b in spans), size, spans)
        self.assertTrue(all(spans[k][1] <= spans[k + 1][0] for k in range(len(spans) - 1)),
                        spans)
        self.check_request_zip(m, "cd", data)

    def test_ls_l_costs_list_calls_only(self):
        for i in range(60):
            self.s3.put("costs", "d/f%02d.txt" % i, b"x" * i)
        self.s3.reset_log()
        m = self.mount("s3://costs")
        out = self.run_ok(["ls", "-l", m.path("d")])
        self.assertEqual(len(out.strip().splitlines()), 61)  # "total" + 60
        log = self.s3.log()
        self.assertEqual(len([r for r in listings(log) if "delimiter=" in r["path"]]), 1, log)
        self.assertEqual([r for r in log if r["method"] == "HEAD"], [],
                         "ls -l made a request per entry")
        self.assertLessEqual(len(log), 3, log)
        for i in range(60):
            self.assertEqual(os.stat(m.path("d", "f%02d.txt" % i)).st_size, i)
        self.assertEqual(len(self.s3.log()), len(log))

    def test_errors(self):
        self.s3.put("err", "file.txt", b"data")
        self.s3.put("err", "dir/child.txt", b"c")
        m = self.mount("s3://err")
        self.assert_errno(lambda: open(m.path("file.txt"), "w"), errno.EROFS)
        self.assert_errno(lambda: os.mkdir(m.path("d2")), errno.EROFS)
        self.assert_errno(lambda: os.rename(m.path("file.txt"), m.path("f2")), errno.EROFS)
        self.assert_errno(lambda: os.unlink(m.path("file.txt")), errno.EROFS)
        self.assert_errno(lambda: os.stat(m.path("missing")), errno.ENOENT)
        self.assert_errno(lambda: os.listdir(m.path("missing-dir")), errno.ENOENT)
        # a bucket that is not there
        m2 = self.mount("s3://no-such-bucket")
        self.assert_errno(lambda: os.listdir(m2.mnt), errno.ENOENT)

    # -- objects that change

    def _changed_object(self, bucket):
        self.s3.put(bucket, "f.txt", b"first version")
        self.s3.put(bucket, "g.txt", b"will vanish")
        self.s3.reset_log()
        m = self.mount("s3://" + bucket)
        with open(m.path("f.txt"), "rb") as f, open(m.path("g.txt"), "rb") as g:
            self.s3.put(bucket, "f.txt", b"second version!")
            self.s3.delete(bucket, "g.txt")
            self.assert_errno(lambda: f.read(), errno.EIO)
            self.assert_errno(lambda: g.read(), errno.EIO)
        time.sleep(0.1)
        with open(m.path("f.txt"), "rb") as f:
            self.assertEqual(f.read(), b"second version!")
        m.close()
        self.assertIn("f.txt changed since it was listed", m.log_text())
        return object_gets(self.s3.log(), bucket, "f.txt")

    def test_changed_object_fails_read_with_eio(self):
        gets = self._changed_object("chg")
        # the server refused the old ETag: the precondition did the work
        self.assertIn(412, [r["status"] for r in gets], gets)

    def test_changed_object_server_ignoring_if_match(self):
        """A server that ignores If-Match serves the new bytes; their ETag
        gives them away before any reaches a reader."""
        self.s3.control("if_match", {"enabled": False})
        self.addCleanup(self.s3.control, "if_match", {"enabled": True})
        gets = self._changed_object("chg-noifmatch")
        self.assertNotIn(412, [r["status"] for r in gets], gets)

    def test_server_paces_each_get(self):
        """The benchmark's s3cap: s3-server.js sends each GET's body at the
        rate it was given, per request, not for all of them together. Told by
        the server's own log (when each GET came, how long its answer took,
        how many were in flight), not by the client's clock."""
        import threading
        data = os.urandom(2 << 20)
        self.s3.put("paced", "obj.bin", data)
        self.assertEqual(self.s3.control("rate", {"mbs": 1}), {"mbs": 1})
        self.addCleanup(self.s3.control, "rate", {"mbs": 0})
        self.s3.reset_log()
        got = [None] * 4

        def get(i):
            got[i] = self.s3.ok("GET", "paced", "obj.bin")[1]

        threads = [threading.Thread(target=get, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(got, [data] * 4)
        gets = [e for e in self.s3.log() if e["method"] == "GET"]
        self.assertEqual(len(gets), 4, gets)
        for e in gets:
            self.assertGreater(e["ms"], 1900, gets)  # 2.1 MB at 1 MB/s: 2.1 s
            # one rate shared by all four would take 8.4 s for each
            self.assertLess(e["ms"], 6000, gets)
        # Paced one by one, none would overlap; paced together, all four
        # were in flight at one moment.
        self.assertLess(max(e["at"] for e in gets),
                        min(e["at"] + e["ms"] for e in gets), gets)
        self.assertEqual(max(e["active"] for e in gets), 4, gets)
        self.assertEqual(self.s3.control("rate", {"mbs": 0}), {"mbs": 0})
        self.s3.reset_log()
        self.assertEqual(self.s3.ok("GET", "paced", "obj.bin")[1], data)
        unpaced = [e for e in self.s3.log() if e["method"] == "GET"]
        # 2.1 s if still paced; unpaced it takes milliseconds, so a second
        # leaves room for any load the machine may be under
        self.assertLess(unpaced[0]["ms"], 1000, unpaced)
        host, port = self.s3.addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/__control__/rate", body=b'{"mbs": -1}')
        self.assertEqual(conn.getresponse().status, 400)
        conn.close()

    def test_server_answers_each_request_late(self):
        """The benchmark's s3lat: s3-server.js answers every request, GET,
        HEAD and listing alike, no sooner than the latency it was given,
        each on its own (four at once take one latency, not four). Told by
        the server's own log."""
        import threading
        self.s3.put("late", "obj.bin", b"late")
        self.assertEqual(self.s3.control("latency", {"ms": 300}), {"ms": 300})
        self.addCleanup(self.s3.control, "latency", {"ms": 0})
        self.s3.reset_log()
        self.s3.ok("HEAD", "late", "obj.bin")
        threads = [threading.Thread(target=self.s3.ok, args=("GET", "late", "obj.bin"))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        host, port = self.s3.addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/late?list-type=2")
        resp = conn.getresponse()
        self.assertIn(b"obj.bin", resp.read())
        self.assertEqual(resp.status, 200)
        log = self.s3.log()
        self.assertEqual([e["method"] for e in log], ["HEAD"] + ["GET"] * 5, log)
        for e in log:
            self.assertGreaterEqual(e["ms"], 300, log)
        gets = log[1:5]
        self.assertLess(max(e["at"] for e in gets), min(e["at"] + e["ms"] for e in gets), gets)
        self.assertEqual(max(e["active"] for e in gets), 4, gets)
        # off again: answered at once
        self.assertEqual(self.s3.control("latency", {"ms": 0}), {"ms": 0})
        self.s3.reset_log()
        self.s3.ok("GET", "late", "obj.bin")
        self.assertLess(self.s3.log()[0]["ms"], 300, self.s3.log())
        conn.request("POST", "/__control__/latency", body=b'{"ms": -1}')
        self.assertEqual(conn.getresponse().status, 400)
        conn.close()

    # -- signing and credentials

    def test_requests_are_signed(self):
        self.s3.put("signed", "d/a.txt", b"a" * 5000)
        self.s3.reset_log()
        m = self.mount("s3://signed")
        self.assertEqual(os.listdir(m.path("d")), ["a.txt"])
        with open(m.path("d", "a.txt"), "rb") as f:
            f.seek(1234)
            self.assertEqual(f.read(10), b"a" * 10)
        log = self.s3.log()
        self.assertTrue(log)
        for r in log:
            self.assertTrue(r["authorization"], r)
            self.assertIn(r["status"], (200, 206), r)
            self.assertIn("host;", r["signedHeaders"])
            self.assertIn("x-amz-content-sha256;x-amz-date", r["signedHeaders"])

    def test_wrong_secret_is_eacces(self):
        self.s3.put("auth", "f.txt", b"x")
        m = self.mount("s3://auth", env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"})
        self.assert_errno(lambda: os.listdir(m.mnt), errno.EACCES)
        self.assert_errno(lambda: os.stat(m.path("f.txt")), errno.EACCES)
        m2 = self.mount("s3://auth", env={"AWS_ACCESS_KEY_ID": "NOSUCHKEY"})
        self.assert_errno(lambda: os.listdir(m2.mnt), errno.EACCES)

    def test_session_token(self):
        self.s3.put("tokens", "f.txt", b"temporary credentials\n")
        env = {"AWS_ACCESS_KEY_ID": TMP_KEY, "AWS_SECRET_ACCESS_KEY": TMP_SECRET,
               "AWS_SESSION_TOKEN": TMP_TOKEN}
        self.s3.reset_log()
        m = self.mount("s3://tokens", env=env)
        with open(m.path("f.txt"), "rb") as f:
            self.assertEqual(f.read(), b"temporary credentials\n")
        for r in self.s3.log():
            self.assertIn("x-amz-security-token", r["signedHeaders"], r)
        # the same key without its token is refused
        m2 = self.mount("s3://tokens", env=dict(env, AWS_SESSION_TOKEN=None))
        self.assert_errno(lambda: os.listdir(m2.mnt), errno.EACCES)

    def test_credentials_file(self):
        self.s3.put("credfile", "f.txt", b"from a file\n")
        d = self.tempdir()
        path = os.path.join(d, "credentials")
        with open(path, "w") as f:
            f.write("[default]\naws_access_key_id = NOSUCHKEY\naws_secret_access_key = x\n\n"
                    "# the one that works\n[zfs]\naws_access_key_id = %s\n"
                    "aws_secret_access_key = %s\n" % (ACCESS_KEY, SECRET_KEY))
        cases = [
            (["credentials_file=" + path, "profile=zfs"], {}),
            (["credentials_file=" + path], {"AWS_PROFILE": "zfs"}),
            ([], {"AWS_SHARED_CREDENTIALS_FILE": path, "AWS_PROFILE": "zfs"}),
        ]
        for opts, env in cases:
            m = self.mount("s3://credfile", options=opts, env=env, creds=False)
            with open(m.path("f.txt"), "rb") as f:
                self.assertEqual(f.read(), b"from a file\n")
            m.close()
            self.assertIn("with credentials file %s [zfs] credentials" % path, m.log_text())
        # ~/.aws/credentials, default profile
        home = self.tempdir()
        os.makedirs(os.path.join(home, ".aws"))
        with open(os.path.join(home, ".aws", "credentials"), "w") as f:
            f.write("[default]\naws_access_key_id=%s\naws_secret_access_key=%s\n"
                    % (ACCESS_KEY, SECRET_KEY))
        m = self.mount("s3://credfile", env={"HOME": home}, creds=False)
        self.assertEqual(os.listdir(m.mnt), ["f.txt"])
        # the default profile of the file above is refused by the server
        m = self.mount("s3://credfile", options=["credentials_file=" + path], creds=False)
        self.assert_errno(lambda: os.listdir(m.mnt), errno.EACCES)
        # a profile named but absent, a file named but absent: no mount
        for opts in (["credentials_file=" + path, "profile=nope"],
                     ["credentials_file=" + os.path.join(d, "missing")]):
            with self.assertRaises(RuntimeError) as cm:
                self.mount("s3://credfile", options=opts, creds=False)
            self.assertIn("credentials file", str(cm.exception))

    def test_environment_wins_over_file(self):
        self.s3.put("envfirst", "f.txt", b"e")
        d = self.tempdir()
        path = os.path.join(d, "credentials")
        with open(path, "w") as f:
            f.write("[default]\naws_access_key_id = NOSUCHKEY\naws_secret_access_key = x\n")
        m = self.mount("s3://envfirst", options=["credentials_file=" + path])
        self.assertEqual(os.listdir(m.mnt), ["f.txt"])
        m.close()
        self.assertIn("with environment credentials", m.log_text())

    def test_anonymous_public_bucket(self):
        self.s3.put("public-bucket", "f.txt", b"for everyone\n")
        # auth=none ignores the credentials in the environment
        self.s3.reset_log()
        m = self.mount("s3://public-bucket", options=["auth=none"])
        with open(m.path("f.txt"), "rb") as f:
            self.assertEqual(f.read(), b"for everyone\n")
        log = self.s3.log()
        self.assertTrue(log)
        self.assertFalse([r for r in log if r["authorization"]], log)
        m.close()
        self.assertIn("with no credentials (anonymous requests)", m.log_text())
        # auto with no credentials anywhere is anonymous too
        m = self.mount("s3://public-bucket", creds=False)
        self.assertEqual(os.listdir(m.mnt), ["f.txt"])

    def test_anonymous_private_bucket_is_eacces(self):
        self.s3.put(PRIVATE, "f.txt", b"secret\n")
        m = self.mount("s3://" + PRIVATE, options=["auth=none"])
        self.assert_errno(lambda: os.listdir(m.mnt), errno.EACCES)
        self.assert_errno(lambda: os.stat(m.path("f.txt")), errno.EACCES)
        m2 = self.mount("s3://" + PRIVATE)
        with open(m2.path("f.txt"), "rb") as f:
            self.assertEqual(f.read(), b"secret\n")

    def test_region(self):
        """The region is signed into every request; the server, like S3,
        refuses another one (HTTP 400)."""
        self.s3.put("regions", "f.txt", b"r")
        for opts, env in ((["region=eu-west-1"], {}),
                          ([], {"AWS_REGION": "eu-west-1"}),
                          ([], {"AWS_DEFAULT_REGION": "eu-west-1"})):
            m = self.mount("s3://regions", options=opts, env=env)
            self.assert_errno(lambda: os.listdir(m.mnt), errno.EINVAL)
            m.close()
            self.assertIn("region eu-west-1", m.log_text())
        m = self.mount("s3://regions", options=["region=us-east-1"],
                       env={"AWS_REGION": "eu-west-1"})
        self.assertEqual(os.listdir(m.mnt), ["f.txt"])
        with self.assertRaises(RuntimeError):
            self.mount("s3://regions", options=["region=bad:region"])
        with self.assertRaises(RuntimeError):
            self.mount("s3://regions", options=["auth=metadata"])


class S3TreeZipTest(test_tree_zip.TreeZipChecks, S3TestCase):
    """The tree archive checks of test_tree_zip.py on an S3 mount."""
    bucket_count = 0

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.tmp = harness.mkdtemp("zfs-s3zip-")
            cls.ref = os.path.join(cls.tmp, "ref")
            os.makedirs(cls.ref)
            make_s3rver_tree(cls.ref, big_size=test_tree_zip.BIG_SIZE)
            cls.root_name = "treezip"
            cls.source = "s3://" + cls.root_name
            cls.file_mtimes = {}
            for root, dirs, files in os.walk(cls.ref):
                rel = os.path.relpath(root, cls.ref)
                if not dirs and not files and rel != ".":
                    cls.s3.put(cls.root_name, rel + "/", b"")
                for name in files:
                    path = os.path.normpath(os.path.join(rel, name))
                    obj = cls.s3.put(cls.root_name, path,
                                     test_tree_zip.read_file(os.path.join(root, name)))
                    cls.file_mtimes[path] = obj["mtime"]
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "tmp", None):
            servers.remove_dir(cls.tmp)
        super().tearDownClass()

    def backend_mount(self, source, options, endpoint=None):
        return self.mount(source, options, endpoint=endpoint)

    def fresh_source(self, files):
        S3TreeZipTest.bucket_count += 1
        bucket = "fresh%d" % S3TreeZipTest.bucket_count
        for rel, data in files.items():
            self.s3.put(bucket, rel, data)
        return "s3://" + bucket

    def put(self, source, rel, data):
        self.s3.put(source[len("s3://"):], rel, data)

    def remove(self, source, rel):
        self.s3.delete(source[len("s3://"):], rel)

    def test_name_collision_with_zip_suffix(self):
        """As in test_tree_zip, with a file beside each subdirectory: s3rver
        would leave x/ and x.zip/ out of the root listing otherwise."""
        src = self.fresh_source({"x/in/a.txt": b"a\n", "x/top.txt": b"t\n",
                                 "x.zip/y/b.txt": b"b\n", "x.zip/top.txt": b"u\n"})
        m = self.zmount(src)
        tree = m.path(test_tree_zip.CONTROL, "tree")
        self.assertEqual(sorted(os.listdir(tree)), ["x", "x.zip", "x.zip.zip"])
        self.assertTrue(os.path.isfile(os.path.join(tree, "x.zip")))
        with zipfile.ZipFile(os.path.join(tree, "x.zip")) as zf:
            self.assertEqual(sorted(zf.namelist()), ["x/", "x/in/", "x/in/a.txt", "x/top.txt"])
        with zipfile.ZipFile(os.path.join(tree, "x.zip.zip")) as zf:
            self.assertEqual(sorted(zf.namelist()),
                             ["x.zip/", "x.zip/top.txt", "x.zip/y/", "x.zip/y/b.txt"])
            self.assertEqual(zf.read("x.zip/y/b.txt"), b"b\n")

    def test_tree_zip_extracts_identical(self):
        """tree/<dir>.zip of an S3 mount passes unzip -t and extracts to the
        very bytes of the bucket."""
        m = self.zmount()
        for d in ("data", "ünïcödé"):
            z = self.zip_path(m, d)
            self.unzip_t(z)
            out = os.path.join(self.tempdir(), "x")
            self.run_ok(["unzip", "-q", z, "-d", out], env=UTF8_ENV)
            self.run_ok(["diff", "-r", os.path.join(self.ref, d), os.path.join(out, d)])


if __name__ == "__main__":
    harness.main()
