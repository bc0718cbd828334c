"""Listing ahead of a walk (list_parallel): `find` and `ls -lR` over a tree
show exactly what they show without it, the walk's directories are listed
once each, and the stats say the listings made ahead were used. Against
both the S3-compatible server and the GCS emulator."""

import os
import re

import harness
from gcs_common import GcsTestCase
from s3_common import S3TestCase

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
        found4, listed4, st4 = self.walk_outputs(["list_parallel=4"])
        self.assertEqual(found4, found0)
        self.assertEqual(listed4, listed0)
        self.assertEqual(len([l for l in found0.splitlines() if l.startswith("f ")]), len(TREE))
        dirs = 1 + 5 + 5 * 4
        # without: one listing per directory, nothing ahead
        self.assertEqual(st0["list_requests"], dirs)
        self.assertEqual(st0["listings_prefetched"], 0)
        self.assertEqual(st0["prefetched_listing_hits"], 0)
        # with: never more listings than the walk needs, and those made
        # ahead were used
        self.assertEqual(st4["list_requests"], dirs)
        self.assertGreater(st4["listings_prefetched"], 0)
        self.assertGreater(st4["prefetched_listing_hits"] + st4["listing_waits"], 0)
        self.assertEqual(st4["prefetched_listings_dropped"], 0)

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

    def upload(self, name, data):
        self.s3.put(self.bucket, name, data)


class GcsListAheadTest(ListAheadMixin, GcsTestCase):
    scheme = "gs"

    def upload(self, name, data):
        self.emu.upload(self.bucket, name, data)


if __name__ == "__main__":
    harness.main()
