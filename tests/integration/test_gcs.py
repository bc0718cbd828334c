"""The GCS backend against a real GCS-compatible server (the Cloud Storage
emulator of firebase-tools), mounted for real."""

import errno
import os
import subprocess
import time

import harness
import treecheck
from gcs_common import GcsTestCase


class GcsTreeTest(GcsTestCase):
    def test_tree_matches_bucket(self):
        ref = self.tempdir()
        treecheck.make_tree(ref)
        mtimes = self.seed_dir("tree", ref)
        m = self.mount("gs://tree")
        treecheck.check_tree(self, ref, m.mnt, mtimes=mtimes, work=self.tempdir())

    def test_prefix_source(self):
        self.emu.upload("pre", "top/sub/file.txt", b"in the prefix\n")
        self.emu.upload("pre", "top/other.txt", b"x")
        self.emu.upload("pre", "elsewhere.txt", b"not shown")
        m = self.mount("gs://pre/top/")
        self.assertEqual(sorted(os.listdir(m.mnt)), ["other.txt", "sub"])
        with open(m.path("sub", "file.txt"), "rb") as f:
            self.assertEqual(f.read(), b"in the prefix\n")

    def test_namespace_rules(self):
        b = "names"
        up = lambda name, data=b"x": self.emu.upload(b, name, data)
        up("implicit/a/b/c.txt", b"deep\n")          # no directory markers at all
        up("marker/", b"")                          # an explicit, empty directory
        up("marker2/", b"")
        up("marker2/inside.txt", b"in\n")
        up("both", b"an object named like a prefix")  # object and prefix at once
        up("both/inner.txt", b"inner\n")
        up("bad//empty-component.txt")              # an empty path component
        up("dots/./x")
        up("dots/../y")
        up("dots/fine.txt")
        up("long/" + "L" * 300)                     # a component over 255 bytes
        up("long/ok.txt")
        up("ok/" + "k" * 255, b"255 bytes is allowed\n")
        m = self.mount("gs://" + b)
        found = subprocess.run(["find", m.mnt, "-mindepth", "1", "-printf", "%y %P\\n"],
                               capture_output=True, text=True, check=True).stdout.split("\n")
        self.assertEqual(sorted(l for l in found if l), sorted([
            "d implicit", "d implicit/a", "d implicit/a/b", "f implicit/a/b/c.txt",
            "d marker", "d marker2", "f marker2/inside.txt",
            "d both", "f both/inner.txt",
            "d bad",
            "d dots", "f dots/fine.txt",
            "d long", "f long/ok.txt",
            "d ok", "f ok/" + "k" * 255,
        ]))
        # lookups by path follow the same rules as listings
        self.assertTrue(os.path.isdir(m.path("both")))
        self.assertEqual(os.listdir(m.path("marker")), [])
        self.assert_errno(lambda: os.stat(m.path("long", "L" * 300)), errno.ENAMETOOLONG)
        with open(m.path("implicit/a/b/c.txt"), "rb") as f:
            self.assertEqual(f.read(), b"deep\n")
        m.close()
        log = m.log_text()
        self.assertIn("both is both an object and a prefix", log)
        self.assertIn("not a valid file name", log)

    def test_fresh_mount_lookups(self):
        """Paths reached without listing first (cold caches, no readdir)."""
        self.emu.upload("cold", "x/y/z.txt", b"zzz")
        self.emu.upload("cold", "both", b"o")
        self.emu.upload("cold", "both/in", b"i")
        m = self.mount("gs://cold")
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
            self.emu.upload("pages", n, n.encode())
        m = self.mount("gs://pages", options=["list_page_size=7"])
        listing = os.listdir(m.path("many"))
        self.assertEqual(len(listing), len(set(listing)))
        self.assertEqual(sorted(listing), sorted(["f%03d.txt" % i for i in range(45)] +
                                                 ["sub%02d" % i for i in range(12)]))

    def test_large_object_copy(self):
        ref = os.path.join(self.tempdir(), "big.bin")
        with open(ref, "wb") as f:
            f.write(os.urandom(64 << 20))
        with open(ref, "rb") as f:
            self.emu.upload("big", "big.bin", f.read())
        p = self.proxy()
        # split_below_mbs=0: a small first part, then 8 MiB parts, each byte
        # asked for once (by default one GET comes first, and parts only
        # when it is slow: test_s3 paces the server to see both)
        m = self.mount("gs://big", endpoint=p.endpoint, options=["split_below_mbs=0"])
        dst = os.path.join(self.tempdir(), "copy.bin")
        self.run_ok(["cp", m.path("big.bin"), dst])
        self.run_ok(["cmp", ref, dst])
        media = [r for r in p.log() if "alt=media" in r["path"]]
        spans = sorted(tuple(int(x) for x in r["range"].split("=")[1].split("-")) for r in media)
        self.assertEqual(spans[0], (0, (1 << 20) - 1))
        for (_, last), (first, _) in zip(spans, spans[1:]):
            self.assertEqual(first, last + 1, spans)
        self.assertEqual(spans[-1][1], (64 << 20) - 1)
        self.assertTrue(all(b - a + 1 <= 8 << 20 for a, b in spans), spans)
        self.assertEqual(len(spans), 1 + 8)
        # prefetch_part_mb=0: one long ranged GET for the rest, not a
        # request per page
        p.control("reset")
        m = self.mount("gs://big", endpoint=p.endpoint, options=["prefetch_part_mb=0"])
        dst = os.path.join(self.tempdir(), "copy0.bin")
        self.run_ok(["cp", m.path("big.bin"), dst])
        self.run_ok(["cmp", ref, dst])
        media = [r for r in p.log() if "alt=media" in r["path"]]
        self.assertLessEqual(len(media), 3, [r["range"] for r in media])
        self.assertTrue(all(r["range"] for r in media))
        self.assertEqual(media[-1]["range"], "bytes=%d-%d" % (1 << 20, (64 << 20) - 1))

    def test_connections_are_reused(self):
        for i in range(20):
            self.emu.upload("conn", "d%d/f.txt" % i, b"z" * i)
        p = self.proxy()
        m = self.mount("gs://conn", endpoint=p.endpoint)
        for i in range(20):
            with open(m.path("d%d" % i, "f.txt"), "rb") as f:
                self.assertEqual(f.read(), b"z" * i)
        log = p.log()
        self.assertGreaterEqual(len(log), 40)
        # far fewer connections than requests (each needs a new TCP port)
        self.assertLessEqual(len({r["peer"] for r in log}), 4, log)

    def test_storage_emulator_host(self):
        self.emu.upload("envb", "hello.txt", b"from the emulator\n")
        host = self.emu.endpoint[len("http://"):]
        # the convention Google's libraries follow: host:port, no scheme
        m = harness.MountTestCase.mount(self, "gs://envb", env={"STORAGE_EMULATOR_HOST": host})
        with open(m.path("hello.txt"), "rb") as f:
            self.assertEqual(f.read(), b"from the emulator\n")
        m.close()
        self.assertIn("from http://" + host + " with none authentication", m.log_text())

    def test_ls_l_costs_list_calls_only(self):
        for i in range(60):
            self.emu.upload("costs", "d/f%02d.txt" % i, b"x" * i)
        p = self.proxy()
        m = self.mount("gs://costs", endpoint=p.endpoint)
        out = self.run_ok(["ls", "-l", m.path("d")])
        self.assertEqual(len(out.strip().splitlines()), 61)  # "total" + 60
        log = p.log()
        listings = [r for r in log if "delimiter" in r["path"]]
        per_entry = [r for r in log if "/o/d%2F" in r["path"]]
        self.assertEqual(len(listings), 1, log)
        self.assertEqual(per_entry, [], "ls -l made a request per entry")
        self.assertLessEqual(len(log), 3, log)
        # stat of every entry now costs nothing: the listing answers
        for i in range(60):
            self.assertEqual(os.stat(m.path("d", "f%02d.txt" % i)).st_size, i)
        self.assertEqual(len(p.log()), len(log))

    def test_lookup_does_not_list_directory(self):
        for i in range(30):
            self.emu.upload("lookup", "d/f%02d.txt" % i, b"y" * i)
        p = self.proxy()
        m = self.mount("gs://lookup", endpoint=p.endpoint)
        self.assertEqual(os.stat(m.path("d", "f07.txt")).st_size, 7)
        log = p.log()
        self.assertFalse([r for r in log if "delimiter" in r["path"]],
                         "a lookup listed the directory: %s" % log)
        self.assertLessEqual(len(log), 4, log)
        # a repeated lookup within the TTL makes no request
        os.stat(m.path("d", "f07.txt"))
        self.assert_errno(lambda: os.stat(m.path("d", "missing")), errno.ENOENT)
        n = len(p.log())
        self.assert_errno(lambda: os.stat(m.path("d", "missing")), errno.ENOENT)
        self.assertEqual(len(p.log()), n, "a negative answer was not cached")

    def test_listing_ttl(self):
        self.emu.upload("ttl", "a.txt", b"a")
        m = self.mount("gs://ttl", options=["list_ttl=1", "stat_ttl=1", "negative_ttl=1"])
        self.assertEqual(os.listdir(m.mnt), ["a.txt"])
        self.emu.upload("ttl", "b.txt", b"b")
        self.assertEqual(os.listdir(m.mnt), ["a.txt"])  # cached
        time.sleep(1.5)
        self.assertEqual(sorted(os.listdir(m.mnt)), ["a.txt", "b.txt"])

    def test_errors(self):
        self.emu.upload("err", "file.txt", b"data")
        self.emu.upload("err", "dir/child.txt", b"c")
        m = self.mount("gs://err")
        self.assert_errno(lambda: open(m.path("file.txt"), "w"), errno.EROFS)
        self.assert_errno(lambda: os.mkdir(m.path("d2")), errno.EROFS)
        self.assert_errno(lambda: os.rename(m.path("file.txt"), m.path("f2")), errno.EROFS)
        self.assert_errno(lambda: os.unlink(m.path("file.txt")), errno.EROFS)
        self.assert_errno(lambda: os.stat(m.path("missing")), errno.ENOENT)
        self.assert_errno(lambda: os.listdir(m.path("missing-dir")), errno.ENOENT)

    def test_changed_object_fails_read_with_eio(self):
        self.emu.upload("chg", "f.txt", b"first version")
        self.emu.upload("chg", "g.txt", b"will vanish")
        m = self.mount("gs://chg")
        with open(m.path("f.txt"), "rb") as f, open(m.path("g.txt"), "rb") as g:
            self.emu.upload("chg", "f.txt", b"second version!")
            self.emu.delete("chg", "g.txt")
            self.assert_errno(lambda: f.read(), errno.EIO)
            self.assert_errno(lambda: g.read(), errno.EIO)
        # a fresh open sees the new generation
        time.sleep(0.1)
        with open(m.path("f.txt"), "rb") as f:
            self.assertEqual(f.read(), b"second version!")
        m.close()
        self.assertIn("f.txt changed since it was listed", m.log_text())

    def test_forbidden_is_eacces(self):
        self.emu.upload("auth", "f.txt", b"x")
        p = self.proxy()
        p.control("require_bearer", {"tokens": ["only-this-token"]})
        m = self.mount("gs://auth", endpoint=p.endpoint)
        self.assert_errno(lambda: os.listdir(m.mnt), errno.EACCES)
        self.assert_errno(lambda: os.stat(m.path("f.txt")), errno.EACCES)


if __name__ == "__main__":
    harness.main()
