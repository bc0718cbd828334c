"""CRCs of archive members: a read that needs an unknown CRC fetches exactly
the bytes of the member not seen yet (never a byte twice), and CRCs found
once are reused from the on-disk cache by a later mount."""

import os
import struct
import subprocess

import harness
from gcs_common import GcsTestCase

SIZE = 4 << 20


def local_header_size(name):
    """30 fixed bytes, the name, a 9-byte extended timestamp (no zip64 here).
    Computed, not read: reading headers through the mount would read the
    neighbouring pages too, and with them data and descriptors."""
    return 30 + len(name.encode()) + 9


def ranges(log, name):
    out = []
    for r in log:
        if "alt=media" in r["path"] and name in r["path"]:
            first, last = r["range"].split("=")[1].split("-")
            out.append((int(first), int(last) + 1))
    return sorted(out)


class ArchiveCrcTest(GcsTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data = os.urandom(SIZE)
        cls.emu.upload("crcs", "d/big.bin", cls.data)
        cls.emu.upload("crcs", "d/small.txt", b"small")

    def test_missing_part_fetched_exactly_once(self):
        p = self.proxy()
        m = self.mount("gs://crcs", endpoint=p.endpoint, options=["cache_dir=" + self.tempdir()])
        f = os.open(m.path(".zipperfs", "tree", "d.zip"), os.O_RDONLY)
        try:
            os.posix_fadvise(f, 0, 0, os.POSIX_FADV_RANDOM)  # no kernel readahead
            data_off = local_header_size("d/") + local_header_size("d/big.bin")
            self.assertEqual(os.pread(f, 1 << 20, data_off), self.data[:1 << 20])
            before = len(p.log())
            # the data descriptor needs the CRC of all 4 MiB
            desc = os.pread(f, 16, data_off + SIZE)
            self.assertEqual(desc[:4], b"PK\x07\x08")
            import zlib
            self.assertEqual(struct.unpack_from("<I", desc, 4)[0], zlib.crc32(self.data))
        finally:
            os.close(f)
        # The kernel reads whole pages: the member bytes it had read are
        # [0, seen); the descriptor's page starts at member offset tail.
        page = 4096
        seen = -(-(data_off + (1 << 20)) // page) * page - data_off
        tail = (data_off + SIZE) // page * page - data_off
        new = ranges(p.log()[before:], "big.bin")
        gap = [r for r in new if r[1] <= tail]
        # exactly the bytes never seen, in one request: not the member again
        self.assertEqual(gap, [(seen, tail)], new)
        self.assertTrue(all(a >= tail for a, b in new if (a, b) not in gap), new)

    def test_crc_cache_reused_by_a_later_mount(self):
        cache = self.tempdir()
        m = self.mount("gs://crcs", options=["cache_dir=" + cache])
        out = self.run_ok(["unzip", "-l", m.path(".zipperfs", "tree", "d.zip")])
        self.assertIn("d/big.bin", out)
        m.close()
        p = self.proxy()
        m2 = self.mount("gs://crcs", endpoint=p.endpoint, options=["cache_dir=" + cache])
        out2 = self.run_ok(["unzip", "-l", m2.path(".zipperfs", "tree", "d.zip")])
        self.assertEqual(out2.splitlines()[1:], out.splitlines()[1:])
        # (the kernel's readahead before the central directory may read the
        # last member's bytes; the 4 MiB member is never needed)
        fetched = sum(b - a for a, b in ranges(p.log(), "big.bin"))
        self.assertLess(fetched, 1 << 20, "CRCs were fetched again despite the cache")
        # and a fresh cache costs the data again
        p.control("reset")
        m3 = self.mount("gs://crcs", endpoint=p.endpoint, options=["cache_dir=" + self.tempdir()])
        self.run_ok(["unzip", "-l", m3.path(".zipperfs", "tree", "d.zip")])
        self.assertEqual(sum(b - a for a, b in ranges(p.log(), "big.bin")), SIZE)


if __name__ == "__main__":
    harness.main()
