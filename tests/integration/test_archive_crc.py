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


class LocalArchiveEdgeTest(harness.MountTestCase):
    def test_member_rewritten_in_place_keeps_archive_consistent(self):
        """A member rewritten in place with its size and mtime kept: the
        kernel must not serve cached central-directory pages of the old
        layout beside new data (the archive's mtime carries a digest)."""
        src = self.tempdir()
        os.makedirs(os.path.join(src, "d"))
        path = os.path.join(src, "d", "a.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(100000))
        with open(os.path.join(src, "d", "b.txt"), "wb") as f:
            f.write(b"b\n")
        m = self.mount(src, ["stat_ttl=1", "list_ttl=1", "cache_dir=" + self.tempdir()])
        z = m.path(".zipperfs", "tree", "d.zip")
        self.run_ok(["unzip", "-l", z])
        st = os.stat(path)
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, b"XXXX", 10)
        os.close(fd)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        import time
        time.sleep(1.5)
        out = self.run_ok(["unzip", "-t", z])
        self.assertIn("No errors detected", out)

    def test_control_directory_access_and_chdir(self):
        src = self.tempdir()
        os.makedirs(os.path.join(src, "d"))
        m = self.mount(src, ["cache_dir=" + self.tempdir()])
        ctl = m.path(".zipperfs")
        self.assertTrue(os.access(ctl, os.R_OK | os.X_OK))
        self.assertTrue(os.access(os.path.join(ctl, "tree", "d.zip"), os.R_OK))
        self.assertFalse(os.access(os.path.join(ctl, "tree", "d.zip"), os.W_OK))
        out = subprocess.run(["sh", "-c", "cd tree && ls"], cwd=ctl, capture_output=True,
                             text=True, check=True).stdout.split()
        self.assertEqual(sorted(out), ["d", "d.zip"])

    def test_too_deep_tree_is_refused_not_a_crash(self):
        src = self.tempdir()
        deep = os.path.join(src, *(["x"] * 300))
        os.makedirs(deep)
        with open(os.path.join(deep, "f"), "wb") as f:
            f.write(b"deep")
        m = self.mount(src, ["cache_dir=" + self.tempdir()])
        self.assert_errno(lambda: os.stat(m.path(".zipperfs", "tree.zip")), 36)  # ENAMETOOLONG
        # the daemon is alive and still serves
        self.assertEqual(os.listdir(m.mnt), ["x"])
        m.close()
        self.assertIn("directories deep: refused", m.log_text())


if __name__ == "__main__":
    harness.main()
