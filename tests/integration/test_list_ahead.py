"""Listing ahead of a walk (list_parallel), directory by directory
(list_tree=0) or as whole subtrees (list_tree=1, the default): `find` and
`ls -lR` over a tree show exactly what they show without it, the walk's
directories are listed once each (or come from the subtree's pages), the
stats say the listings made ahead were used, and a walk that stops early
leaves the subtree listing a few pages in. Against both the S3-compatible
server and the GCS emulator."""

import os
import re
import subprocess
import time

import harness
from gcs_common import GcsTestCase
from s3_common import ACCESS_KEY, SECRET_KEY, S3TestCase

C_ENV = dict(os.environ, LC_ALL="C")
# the time of a directory in `ls -l --time-style=+%s.%N`
DIR_TIME = re.compile(r"^(d\S+\s+\d+\s+\S+\s+\S+\s+\d+\s+)\d+\.\d+ ", re.M)
# 5 directories x 4 subdirectories x 3 files, and a file at each level
TREE = (["top.txt"]
        + ["d%d/f.txt" % d for d in range(5)]
        + ["d%d/s%d/f%d" % (d, s, f) for d in range(5) for s in range(4) for f in range(3)])


class ListAheadMixin:
    bucket = "walk"

    def upload(self, name, data):
        raise NotImplementedError

    @classmethod
    def seeded(cls):
        return getattr(cls, "_seeded", False)

    def seed(self):
        if not self.seeded():
            for name in TREE:
                self.upload(name, ("%s\n" % name).encode())
            type(self)._seeded = True

    def stats(self, m):
        return m.stats()["namespace"]

    def storetool_env(self):
        return dict(os.environ)

    def storetool(self, *args, page=1000):
        """tests/tools/storetool with the server's endpoint; its stdout"""
        argv = [os.environ.get("STORETOOL_BIN", os.path.join(harness.TOP, "build", "tests",
                                                              "tools", "storetool")),
                "-o", "endpoint=%s,list_page_size=%d" % (self.endpoint(), page)]
        env = self.storetool_env()
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        r = subprocess.run(argv + list(args), capture_output=True, text=True, env=env,
                           timeout=300)
        for mark in harness.SANITIZER_MARKS:
            if mark in r.stderr:
                self.fail("sanitizer report from storetool:\n" + r.stderr[-4000:])
        if r.returncode != 0:
            self.fail("%s failed (%d):\n%s" % (argv + list(args), r.returncode, r.stderr))
        return r.stdout

    def test_store_tree_pages(self):
        """The store's subtree listing, page by page, straight from the
        server: every key below the directory, in byte order, names
        relative to it, with sizes; past `after` where the server honours
        it; as many pages as the page size makes."""
        self.seed()
        source = "%s://%s" % (self.scheme, self.bucket)
        keys = sorted(k.encode() for k in TREE)
        size = {k: len(k) + 1 for k in keys}
        for dir_, after, page in (("", None, 1000), ("", None, 7), ("d2", None, 2),
                                  ("", "d1", 5), ("d3", "s1", 1)):
            prefix = (dir_ + "/").encode() if dir_ else b""
            below = [k for k in keys if k.startswith(prefix)]
            want = [k[len(prefix):] for k in below]
            if after and self.starts_past:
                want = [k for k in want if k > after.encode()]
            args = ["tree", source, dir_] + (["--after", after] if after else [])
            lines = self.storetool(*args, page=page).encode().splitlines()
            self.assertEqual(lines[-1], b"pages %d" % ((len(want) + page - 1) // page))
            self.assertEqual(lines[:-1], [b"f %s %d" % (k, size[prefix + k]) for k in want])
        # and a directory's own listing, with a delimiter, for comparison
        out = self.storetool("list", source, "d4", page=2)
        self.assertEqual(sorted(out.splitlines()),
                         ["d s0", "d s1", "d s2", "d s3", "f f.txt %d" % len("d4/f.txt\n")])

    def walk_outputs(self, options):
        """find, then ls -lR, on a new mount; their outputs and the stats"""
        m = self.mount("%s://%s" % (self.scheme, self.bucket), options)
        # a directory's time is the mount's: left out
        found = self.run_ok(["find", ".", "-type", "d", "-printf", "%y %P\\n",
                             "-o", "-printf", "%y %P %s %T@\\n"], cwd=m.mnt, env=C_ENV)
        listed = self.run_ok(["ls", "-lR", "--time-style=+%s.%N", "."], cwd=m.mnt, env=C_ENV)
        listed = DIR_TIME.sub(r"\1TIME ", listed)
        return found, listed, self.stats(m)

    def test_walks_identical_and_listed_ahead(self):
        self.seed()
        found0, listed0, st0 = self.walk_outputs(["list_parallel=0"])
        self.assertEqual(len([l for l in found0.splitlines() if l.startswith("f ")]), len(TREE))
        dirs = 1 + 5 + 5 * 4
        # without: one listing per directory, nothing ahead
        self.assertEqual(st0["list_requests"], dirs)
        self.assertEqual(st0["listings_prefetched"], 0)
        self.assertEqual(st0["prefetched_listing_hits"], 0)

        # directory by directory: never more listings than the walk needs,
        # and those made ahead were used
        found, listed, st = self.walk_outputs(["list_parallel=4", "list_tree=0"])
        self.assertEqual(found, found0)
        self.assertEqual(listed, listed0)
        self.assertEqual(st["list_requests"], dirs)
        self.assertGreater(st["listings_prefetched"], 0)
        self.assertGreater(st["prefetched_listing_hits"] + st["listing_waits"], 0)
        self.assertEqual(st["prefetched_listings_dropped"], 0)
        self.assertEqual(st["tree_listings"], 0)

        # whole subtrees: find lists the root, d0 and d1 itself. Its step
        # into d0 starts a listing of d0's subtree; its step into d1, the
        # second child of the root it enters, one of the root's subtree
        # past d1. Every other directory comes from their pages, and is used
        # d0's 13 keys, then the 53 past d1 (d1/... to d4/..., top.txt),
        # or all 66 from a server that starts at the beginning all the same
        past_d1 = 53 if self.starts_past else 66
        for page in (1000, 20):
            pages = 1 + (past_d1 + page - 1) // page
            found, listed, st = self.walk_outputs(["list_parallel=4",
                                                   "list_page_size=%d" % page])
            self.assertEqual(found, found0)
            self.assertEqual(listed, listed0)
            self.assertEqual(st["tree_listings"], 2)
            # with 20 a page, each directory the walk opens is done a page
            # or two on
            self.assertEqual(st["tree_pages"], pages)
            self.assertEqual(st["list_requests"], 3 + pages)
            self.assertEqual(st["listings_prefetched"], dirs - 3)
            self.assertEqual(st["prefetched_listing_hits"], dirs - 3)
            self.assertEqual(st["prefetched_listings_dropped"], 0)

    def test_false_walk_lists_a_few_pages(self):
        """ls of the top, then of d0, looks like the start of a walk; the
        listing of d0's subtree it starts (13 keys, one a page) stops 8
        pages in when nothing of it is used, and goes on when the walk
        does."""
        self.seed()
        m = self.mount("%s://%s" % (self.scheme, self.bucket), ["list_page_size=1"])
        self.run_ok(["ls", m.mnt])
        self.run_ok(["ls", m.path("d0")])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.stats(m)["tree_pages"] < 8:
            time.sleep(0.05)
        time.sleep(1)
        self.assertEqual(self.stats(m)["tree_pages"], 8)
        # the walk goes on where it was guessed, and is right
        found = self.run_ok(["find", ".", "-printf", "%y %P\\n"], cwd=m.mnt, env=C_ENV)
        self.assertEqual(len([l for l in found.splitlines() if l.startswith("f ")]), len(TREE))
        st = self.stats(m)
        self.assertGreater(st["tree_pages"], 8)
        self.assertGreater(st["prefetched_listing_hits"], 0)
        self.assertEqual(st["prefetched_listings_dropped"], 0)

    def test_default_lists_ahead(self):
        self.seed()
        found, _, st = self.walk_outputs([])
        self.assertIn("d d3/s2\n", found)
        self.assertGreater(st["listings_prefetched"], 0)

    def test_lookup_only_lists_nothing_ahead(self):
        self.seed()
        m = self.mount("%s://%s" % (self.scheme, self.bucket), ["list_parallel=4"])
        with open(m.path("d2", "s1", "f0"), "rb") as f:
            self.assertEqual(f.read(), b"d2/s1/f0\n")
        self.assertEqual(sorted(os.listdir(m.path("d2", "s1"))), ["f0", "f1", "f2"])
        st = self.stats(m)
        self.assertEqual(st["list_requests"], 1)
        self.assertEqual(st["listings_prefetched"], 0)


class S3ListAheadTest(ListAheadMixin, S3TestCase):
    scheme = "s3"
    starts_past = True  # s3rver honours start-after

    def upload(self, name, data):
        self.s3.put(self.bucket, name, data)

    def endpoint(self):
        return self.s3.endpoint

    def storetool_env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                   HOME=self.tempdir())
        return env


class GcsListAheadTest(ListAheadMixin, GcsTestCase):
    scheme = "gs"
    starts_past = False  # the emulator ignores startOffset

    def upload(self, name, data):
        self.emu.upload(self.bucket, name, data)

    def endpoint(self):
        return self.emu.endpoint

    def storetool_env(self):
        env = dict(os.environ)
        env.pop("STORAGE_EMULATOR_HOST", None)
        return env


if __name__ == "__main__":
    harness.main()
