"""Tree archives of the control directory (MNT/.zipperfs/tree/<dir>.zip and
MNT/.zipperfs/tree.zip), mounted for real on both backends (a local
directory, and the Cloud Storage emulator seeded with the same reference
tree) and checked with the tools users use: ls, find, stat, cp, cmp, dd,
rsync, unzip, zipinfo, Python's zipfile and zipcheck (libzip, every CRC-32
verified).

    ZIPPERFS_BIN   the binary under test (default build/zipperfs)
    ZIPCHECK_BIN   tests/tools/zipcheck of the same build (default build/tests/tools/zipcheck)
"""

import errno
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import zipfile
import zlib

import harness
import servers
import treecheck
from gcs_common import GcsTestCase, rfc3339_ns

CONTROL = ".zipperfs"
BIG_SIZE = 3 << 20
GiB = 1 << 30

# unzip and ls print UTF-8 names as they are only in a UTF-8 locale
UTF8_ENV = dict(os.environ, LC_ALL="C.UTF-8")


def zipcheck_bin():
    return os.environ.get("ZIPCHECK_BIN",
                          os.path.join(harness.TOP, "build", "tests", "tools", "zipcheck"))


def expected_entries(ref, top, prefix):
    """Entry names of the archive of ref/top (top "" = all of ref) whose
    entries live under prefix/: the prefix directory, then every directory
    (with a trailing "/") and file below."""
    base = os.path.join(ref, top) if top else ref
    names = [prefix + "/"]
    for rel in treecheck.reference_entries(base):
        full = os.path.join(base, rel)
        names.append(prefix + "/" + rel + ("/" if os.path.isdir(full) else ""))
    return sorted(names)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def parse_unzip_l(text):
    """{name: size} from `unzip -l` output."""
    out = {}
    lines = text.splitlines()
    dashes = [i for i, l in enumerate(lines) if l.startswith("---------")]
    for line in lines[dashes[0] + 1:dashes[1]]:
        m = re.match(r"^\s*(\d+)\s+\S+\s+\S+\s{3}(.*)$", line)
        if m:
            out[m.group(2)] = int(m.group(1))
    return out


class TreeZipHelpers:
    """Mounting and checking archives; a class using them provides
    backend_mount(source, options, endpoint=None) and cls.source."""

    def zmount(self, source=None, options=(), cache_dir=None, **kw):
        """A mount with a fresh CRC cache unless cache_dir is given."""
        cache_dir = cache_dir or self.tempdir()
        return self.backend_mount(source or self.source,
                                  ["cache_dir=" + cache_dir] + list(options), **kw)

    def zip_path(self, m, d=None):
        if d is None:
            return m.path(CONTROL, "tree.zip")
        return m.path(CONTROL, "tree", d + ".zip")

    def copy(self, src, name="copy.zip", work=None):
        dst = os.path.join(work or self.tempdir(), name)
        self.run_ok(["cp", src, dst])
        return dst

    def zipcheck(self, path):
        """{name: (size, crc, mtime)} as libzip read them (every CRC checked)."""
        r = subprocess.run([zipcheck_bin(), path], capture_output=True, text=True,
                           env=UTF8_ENV)
        self.assertEqual(r.returncode, 0, "zipcheck %s failed:\n%s" % (path, r.stderr))
        out = {}
        for line in r.stdout.splitlines():
            name, size, crc, mtime = line.split("\t")
            self.assertNotIn(name, out, "duplicate entry " + name)
            out[name] = (int(size), int(crc, 16), int(mtime))
        return out

    def unzip_t(self, path):
        out = self.run_ok(["unzip", "-t", path], env=UTF8_ENV)
        self.assertIn("No errors detected", out)
        return out


class TreeZipChecks(TreeZipHelpers):
    """Checks run against each backend. A backend class provides, from
    setUpClass: cls.ref (the reference tree), cls.source (what to mount),
    cls.root_name, cls.file_mtimes ({relpath: seconds} of every file of
    ref, as members must carry them); and the methods backend_mount(source,
    options, endpoint=None), fresh_source(files) -> source, put(source, rel,
    data), remove(source, rel)."""

    def data_mtimes(self):
        """{name in data.zip: seconds} of the files below data/."""
        return {rel: t for rel, t in self.file_mtimes.items() if rel.startswith("data/")}

    # -- the control directory

    def test_control_dir_hidden_but_reachable(self):
        m = self.zmount()
        listing = self.run_ok(["ls", "-a", "-1", m.mnt], env=UTF8_ENV).splitlines()
        self.assertNotIn(CONTROL, listing)
        self.assertIn("data", listing)
        found = self.run_ok(["find", m.mnt, "-mindepth", "1", "-printf", "%P\\n"],
                            env=UTF8_ENV).splitlines()
        self.assertEqual(sorted(found), treecheck.reference_entries(self.ref))
        self.run_ok(["du", "-s", m.mnt])
        # present by path
        self.assertTrue(os.path.isdir(m.path(CONTROL)))
        self.assertEqual(self.run_ok(["ls", m.path(CONTROL)]).split("\n")[:-1],
                         ["archives", "requests", "stats", "tree", "tree.zip"])
        top = sorted(d for d in os.listdir(self.ref) if os.path.isdir(os.path.join(self.ref, d)))
        self.assertEqual(sorted(self.run_ok(["ls", "-1", m.path(CONTROL, "tree")],
                                            env=UTF8_ENV).splitlines()),
                         sorted(top + [d + ".zip" for d in top]))
        self.assertEqual(self.run_ok(["ls", "-1", m.path(CONTROL, "tree", "data")],
                                     env=UTF8_ENV).splitlines(),
                         ["run 1", "run 1.zip", "run 2", "run 2.zip"])
        self.assertEqual(os.listdir(m.path(CONTROL, "tree", "data", "run 1")),
                         ["lane_01", "lane_01.zip"])
        self.assertEqual(os.listdir(m.path(CONTROL, "tree", "empty")), [])
        # rsync -a of the root never copies the control directory
        dst = os.path.join(self.tempdir(), "rsync")
        self.run_ok(["rsync", "-a", m.mnt + "/", dst + "/"])
        self.assertFalse(os.path.exists(os.path.join(dst, CONTROL)))
        self.run_ok(["diff", "-r", self.ref, dst])
        # show_control lists it
        m2 = self.zmount(options=["show_control"])
        self.assertIn(CONTROL, self.run_ok(["ls", "-a", "-1", m2.mnt]).splitlines())

    # -- one directory's archive

    def test_data_zip(self):
        m = self.zmount()
        z = self.zip_path(m, "data")
        st = os.stat(z)  # the exact size, before anything was read
        work = self.tempdir()
        copy = self.copy(z, work=work)
        self.assertEqual(st.st_size, os.path.getsize(copy), "stat size differs from cp size")

        # straight on the mount
        self.unzip_t(z)
        info = self.run_ok(["zipinfo", z], env=UTF8_ENV)
        self.assertIn("Zip file size: %d bytes" % st.st_size, info)
        with zipfile.ZipFile(z) as zf:
            self.assertIsNone(zf.testzip())
            infos = zf.infolist()
        names = [i.filename for i in infos]
        want = expected_entries(self.ref, "data", "data")
        self.assertEqual(len(names), len(set(names)), "duplicate entries")
        self.assertEqual(sorted(names), want)
        for i in infos:
            self.assertEqual(i.compress_type, zipfile.ZIP_STORED, i.filename)
            if not i.is_dir():
                self.assertTrue(i.flag_bits & 0x08, "no data descriptor: " + i.filename)
        checked = self.zipcheck(z)
        self.assertEqual(sorted(checked), want)
        mtimes = self.data_mtimes()
        for rel, (size, crc, mtime) in checked.items():
            if rel.endswith("/"):
                self.assertEqual(size, 0, rel)
                continue
            data = read_file(os.path.join(self.ref, rel))
            self.assertEqual(size, len(data), rel)
            self.assertEqual(crc, zlib.crc32(data), rel)
            # DOS time (what libzip reads): 2-second steps, local time
            self.assertLessEqual(abs(mtime - mtimes[rel]), 2, "DOS mtime of " + rel)

        # extraction: identical files, the members' mtimes
        out = os.path.join(work, "x")
        self.run_ok(["unzip", "-q", z, "-d", out], env=UTF8_ENV)
        self.run_ok(["diff", "-r", os.path.join(self.ref, "data"), os.path.join(out, "data")])
        for rel, t in mtimes.items():
            self.assertEqual(int(os.stat(os.path.join(out, rel)).st_mtime), t,
                             "mtime of extracted " + rel)
        # the zip's own mtime is the newest member's
        self.assertEqual(int(st.st_mtime), max(mtimes.values()))

    def test_reads_at_any_offset(self):
        # backwards, on a fresh mount (no CRC known yet)
        m1 = self.zmount()
        z1 = self.zip_path(m1, "data")
        size = os.stat(z1).st_size
        chunk = 65536 + 17
        parts = []
        with open(z1, "rb") as f:
            end = size
            while end > 0:
                start = max(0, end - chunk)
                f.seek(start)
                parts.append(f.read(end - start))
                self.assertEqual(len(parts[-1]), end - start, "short read at %d" % start)
                end = start
        backwards = b"".join(reversed(parts))

        # random offsets (Python seeks, then dd), again on a fresh mount
        m2 = self.zmount()
        z2 = self.zip_path(m2, "data")
        rnd = random.Random(7)
        probes = [(rnd.randrange(size), rnd.choice([1, 100, 4096, 70000, 1 << 20]))
                  for _ in range(150)]
        probes += [(0, 30), (size - 22, 22), (size - 1, 10), (size, 10)]
        got = []
        with open(z2, "rb") as f:
            for off, n in probes:
                f.seek(off)
                got.append(f.read(n))
        dd = []
        for blk in rnd.sample(range(max(1, size // 4096)), 20):
            r = subprocess.run(["dd", "if=" + z2, "bs=4096", "skip=%d" % blk, "count=3",
                                "status=none"], capture_output=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            dd.append((blk, r.stdout))
        with open(z2, "rb") as f:
            sequential = f.read()
        self.assertEqual(len(sequential), size)
        for (off, n), data in zip(probes, got):
            self.assertEqual(data, sequential[off:off + n], "read of %d at %d" % (n, off))
        for blk, data in dd:
            self.assertEqual(data, sequential[blk * 4096:(blk + 3) * 4096], "dd skip=%d" % blk)
        self.assertTrue(backwards == sequential, "a backwards read differs from a sequential one")

        # two copies are identical, and identical to the reads above
        work = self.tempdir()
        c1 = self.copy(z2, "c1.zip", work)
        c2 = self.copy(z2, "c2.zip", work)
        self.run_ok(["cmp", c1, c2])
        self.assertTrue(read_file(c1) == sequential)

    def test_concurrent_readers(self):
        """Copies and random reads at once on a fresh mount (CRCs computed
        while several readers stream the same members)."""
        m = self.zmount()
        z = self.zip_path(m, "data")
        size = os.stat(z).st_size
        work = self.tempdir()
        results, errors = {}, []

        def random_reads(seed):
            rnd = random.Random(seed)
            got = []
            try:
                with open(z, "rb") as f:
                    for _ in range(60):
                        off, n = rnd.randrange(size), rnd.choice([1, 3000, 65536, 300000])
                        f.seek(off)
                        got.append((off, f.read(n)))
            except OSError as e:
                errors.append(e)
            results[seed] = got

        cps = [subprocess.Popen(["cp", z, os.path.join(work, "c%d.zip" % i)],
                                stderr=subprocess.PIPE) for i in range(2)]
        threads = [threading.Thread(target=random_reads, args=(s,)) for s in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in cps:
            _, err = p.communicate()
            self.assertEqual(p.returncode, 0, err)
        self.assertEqual(errors, [])
        c0 = read_file(os.path.join(work, "c0.zip"))
        self.assertEqual(len(c0), size)
        self.assertTrue(c0 == read_file(os.path.join(work, "c1.zip")), "concurrent copies differ")
        for got in results.values():
            for off, data in got:
                self.assertEqual(data, c0[off:off + len(data)], "read at %d" % off)
        # and a fresh mount agrees
        m2 = self.zmount()
        self.assertTrue(read_file(self.zip_path(m2, "data")) == c0)
        with zipfile.ZipFile(os.path.join(work, "c0.zip")) as zf:
            self.assertIsNone(zf.testzip())

    def test_name_collision_with_zip_suffix(self):
        """A directory named x.zip beside x: tree/x.zip is x's zip, x.zip's
        own zip is tree/x.zip.zip (control.h)."""
        src = self.fresh_source({"x/in/a.txt": b"a\n", "x.zip/y/b.txt": b"b\n"})
        m = self.zmount(src)
        tree = m.path(CONTROL, "tree")
        self.assertEqual(sorted(os.listdir(tree)), ["x", "x.zip", "x.zip.zip"])
        self.assertTrue(os.path.isfile(os.path.join(tree, "x.zip")))
        with zipfile.ZipFile(os.path.join(tree, "x.zip")) as zf:
            self.assertEqual(sorted(zf.namelist()), ["x/", "x/in/", "x/in/a.txt"])
        with zipfile.ZipFile(os.path.join(tree, "x.zip.zip")) as zf:
            self.assertEqual(sorted(zf.namelist()), ["x.zip/", "x.zip/y/", "x.zip/y/b.txt"])
            self.assertEqual(zf.read("x.zip/y/b.txt"), b"b\n")

    def test_deterministic_across_mounts(self):
        work = self.tempdir()
        cache = self.tempdir()
        m1 = self.zmount(cache_dir=cache)
        a1 = self.copy(self.zip_path(m1, "data"), "a1.zip", work)
        t1 = self.copy(self.zip_path(m1), "t1.zip", work)
        m1.close()
        # a new CRC cache
        m2 = self.zmount()
        a2 = self.copy(self.zip_path(m2, "data"), "a2.zip", work)
        t2 = self.copy(self.zip_path(m2), "t2.zip", work)
        self.run_ok(["cmp", a1, a2])
        self.run_ok(["cmp", t1, t2])
        # the first cache again (CRCs known before reading)
        m3 = self.zmount(cache_dir=cache)
        a3 = self.copy(self.zip_path(m3, "data"), "a3.zip", work)
        self.run_ok(["cmp", a1, a3])

    def test_whole_mount_zip(self):
        m = self.zmount()
        z = self.zip_path(m)
        st = os.stat(z)
        self.unzip_t(z)
        with zipfile.ZipFile(z) as zf:
            self.assertIsNone(zf.testzip())
            names = [i.filename for i in zf.infolist()]
        want = expected_entries(self.ref, "", self.root_name)
        self.assertEqual(sorted(names), want)
        self.assertEqual(sorted(self.zipcheck(z)), want)
        out = os.path.join(self.tempdir(), "x")
        self.run_ok(["unzip", "-q", z, "-d", out], env=UTF8_ENV)
        self.run_ok(["diff", "-r", self.ref, os.path.join(out, self.root_name)])
        self.assertEqual(os.listdir(os.path.join(out, self.root_name, "empty")), [])
        self.assertEqual(int(st.st_mtime), max(self.file_mtimes.values()))

    def test_unzip_l_on_fresh_mount(self):
        """unzip reads the central directory first, when no CRC is known."""
        m = self.zmount()
        z = self.zip_path(m, "data")
        listed = parse_unzip_l(self.run_ok(["unzip", "-l", z], env=UTF8_ENV))
        want = expected_entries(self.ref, "data", "data")
        self.assertEqual(sorted(listed), want)
        for name, size in listed.items():
            if not name.endswith("/"):
                self.assertEqual(size, os.path.getsize(os.path.join(self.ref, name)), name)
        # and the subtree zip of a nested directory, just as fresh
        sub = self.zip_path(m, "data/run 1/lane_01")
        listed = parse_unzip_l(self.run_ok(["unzip", "-l", sub], env=UTF8_ENV))
        self.assertEqual(sorted(listed), ["lane_01/", "lane_01/sample_R1.fastq.gz",
                                          "lane_01/sample_R2.fastq.gz"])
        self.unzip_t(sub)

    # -- members that change

    def _changed_member(self, change):
        rnd = random.Random(3)
        files = {"d/a.txt": b"a" * 1000, "d/victim.bin": rnd.randbytes(200000),
                 "d/z.txt": b"after\n"}
        src = self.fresh_source(files)
        m = self.zmount(src)
        z = self.zip_path(m, "d")
        os.stat(z)  # lays the archive out
        new = rnd.randbytes(200000)
        change(src, "d/victim.bin", new)
        dst = os.path.join(self.tempdir(), "out.zip")
        r = subprocess.run(["cp", z, dst], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0, "cp of an archive whose member changed succeeded")
        self.assertIn("Input/output error", r.stderr)
        # never wrong bytes: nothing of the new content made it into the copy
        if os.path.exists(dst):
            partial = read_file(dst)
            for off in range(0, len(new) - 512, 50000):
                self.assertNotIn(new[off:off + 512], partial)
        m.close()
        self.assertIn("d/victim.bin", m.log_text())

    def test_replaced_member_fails_with_eio(self):
        self._changed_member(self.put)

    def test_deleted_member_fails_with_eio(self):
        self._changed_member(lambda src, rel, _data: self.remove(src, rel))

    def test_deleted_member_fails_central_directory_with_eio(self):
        # unzip -l reads the central directory first: it needs the CRC of a
        # member never read, whose bytes are gone since the layout
        src = self.fresh_source({"d/a.txt": b"a" * 1000, "d/victim.bin": b"v" * 300000})
        m = self.zmount(src, options=["max_jobs=0"])
        z = self.zip_path(m, "d")
        size = os.stat(z).st_size  # lays the archive out
        self.remove(src, "d/victim.bin")
        f = os.open(z, os.O_RDONLY)
        try:
            os.posix_fadvise(f, 0, 0, os.POSIX_FADV_RANDOM)
            self.assert_errno(lambda: os.pread(f, 4096, size - 4096), errno.EIO)
        finally:
            os.close(f)
        m.close()
        self.assertIn("d/victim.bin", m.log_text())

    def test_layout_reused_for_stat_ttl(self):
        src = self.fresh_source({"d/a.txt": b"x" * 100})
        m = self.zmount(src, options=["stat_ttl=3", "list_ttl=3", "negative_ttl=1"])
        z = self.zip_path(m, "d")
        t0 = time.monotonic()
        s1 = os.stat(z).st_size
        self.put(src, "d/b.txt", b"y" * 50)
        s_again = os.stat(z).st_size
        with zipfile.ZipFile(z) as zf:
            names = zf.namelist()
        if time.monotonic() - t0 < 2.5:  # still within the TTL: the old layout, readable
            self.assertEqual(s_again, s1)
            self.assertEqual(names, ["d/", "d/a.txt"])
        time.sleep(max(0.0, t0 + 4 - time.monotonic()))
        s2 = os.stat(z).st_size
        self.assertGreater(s2, s1)
        copy = self.copy(z)
        self.assertEqual(os.path.getsize(copy), s2)
        self.unzip_t(copy)
        with zipfile.ZipFile(copy) as zf:
            self.assertEqual(sorted(zf.namelist()), ["d/", "d/a.txt", "d/b.txt"])
            self.assertEqual(zf.read("d/b.txt"), b"y" * 50)


class LocalTreeZipTest(TreeZipChecks, harness.MountTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.mkdtemp("zfs-treezip-")
        cls.root_name = "ref-tree"
        cls.ref = cls.source = os.path.join(cls.tmp, cls.root_name)
        os.makedirs(cls.ref)
        treecheck.make_tree(cls.ref, big_size=BIG_SIZE)
        # distinct, fractional mtimes (odd seconds too: DOS time cannot hold them)
        cls.file_mtimes = {}
        base = 1700000000 * 10**9
        files = [r for r in treecheck.reference_entries(cls.ref)
                 if os.path.isfile(os.path.join(cls.ref, r))]
        for i, rel in enumerate(files):
            ns = base + ((i * 7919) % 997) * 10**9 + 123456789
            os.utime(os.path.join(cls.ref, rel), ns=(ns, ns))
            cls.file_mtimes[rel] = ns // 10**9

    @classmethod
    def tearDownClass(cls):
        servers.remove_dir(cls.tmp)

    def backend_mount(self, source, options, endpoint=None):
        return self.mount(source, options)

    def fresh_source(self, files):
        src = os.path.join(self.tempdir(), "src")
        for rel, data in files.items():
            os.makedirs(os.path.dirname(os.path.join(src, rel)), exist_ok=True)
            with open(os.path.join(src, rel), "wb") as f:
                f.write(data)
        return src

    def put(self, src, rel, data):
        """A new file renamed over the old one (what tools that replace files do)."""
        path = os.path.join(src, rel)
        tmp = path + ".tmp~"
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, path)

    def remove(self, src, rel):
        os.unlink(os.path.join(src, rel))


class GcsTreeZipTest(TreeZipChecks, GcsTestCase):
    bucket_count = 0

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.tmp = harness.mkdtemp("zfs-treezip-")
            cls.ref = os.path.join(cls.tmp, "ref")
            os.makedirs(cls.ref)
            treecheck.make_tree(cls.ref, big_size=BIG_SIZE)
            cls.root_name = "treezip"
            cls.source = "gs://" + cls.root_name
            cls.file_mtimes = {}
            for root, dirs, files in os.walk(cls.ref):
                rel = os.path.relpath(root, cls.ref)
                if not dirs and not files and rel != ".":
                    cls.emu.upload(cls.root_name, rel + "/", b"")
                for name in files:
                    path = os.path.normpath(os.path.join(rel, name))
                    obj = cls.emu.upload(cls.root_name, path,
                                         read_file(os.path.join(root, name)))
                    cls.file_mtimes[path] = rfc3339_ns(obj["updated"]) // 10**9
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
        GcsTreeZipTest.bucket_count += 1
        bucket = "fresh%d" % GcsTreeZipTest.bucket_count
        for rel, data in files.items():
            self.emu.upload(bucket, rel, data)
        return "gs://" + bucket

    def put(self, source, rel, data):
        self.emu.upload(source[len("gs://"):], rel, data)

    def remove(self, source, rel):
        self.emu.delete(source[len("gs://"):], rel)

    # -- GCS only

    def test_crc_cache_reused_across_mounts(self):
        p = self.proxy()
        cache = self.tempdir()
        m1 = self.zmount(cache_dir=cache, endpoint=p.endpoint)
        first = self.copy(self.zip_path(m1, "data"))
        m1.close()
        self.assertTrue([r for r in p.log() if "alt=media" in r["path"]],
                        "the first read fetched no member data")
        p.control("reset")
        m2 = self.zmount(cache_dir=cache, endpoint=p.endpoint)
        listed = parse_unzip_l(self.run_ok(["unzip", "-l", self.zip_path(m2, "data")],
                                           env=UTF8_ENV))
        self.assertEqual(sorted(listed), expected_entries(self.ref, "data", "data"))
        media = [r for r in p.log() if "alt=media" in r["path"]]
        # unzip -l reads the central directory from an 8 KiB-aligned offset
        # (and the kernel reads whole pages): the bytes just before it are
        # member data, which only the bucket has. Anything else would be a
        # fetch for a CRC-32 the cache should have answered.
        with zipfile.ZipFile(first) as zf:
            cd_start = zf.start_dir
            tail = {urllib.parse.quote(i.filename, safe="") for i in zf.infolist()
                    if i.header_offset + i.file_size + 200 > cd_start - (64 << 10)}
        fetched = 0
        for r in media:
            name = r["path"].split("/o/", 1)[1].split("?", 1)[0]
            self.assertIn(name, tail, "unzip -l fetched data of a member far from the "
                          "central directory although every CRC-32 was in the cache: %s" % r)
            lo, hi = map(int, r["range"][len("bytes="):].split("-"))
            fetched += hi - lo + 1
        self.assertLessEqual(fetched, 64 << 10, media)
        # and the bytes are the same
        second = self.copy(self.zip_path(m2, "data"))
        self.run_ok(["cmp", first, second])
        m2.close()
        self.assertNotIn("missing CRC-32s", m2.log_text())

    def test_prefix_root_name(self):
        self.emu.upload("pfx", "a/b/x.txt", b"x\n")
        self.emu.upload("pfx", "a/b/sub/y.txt", b"y\n")
        self.emu.upload("pfx", "a/other.txt", b"not in the prefix\n")
        m = self.zmount("gs://pfx/a/b")
        z = self.zip_path(m)
        self.unzip_t(z)
        with zipfile.ZipFile(z) as zf:
            self.assertEqual(sorted(zf.namelist()), ["b/", "b/sub/", "b/sub/y.txt", "b/x.txt"])
            self.assertEqual(zf.read("b/sub/y.txt"), b"y\n")



class LargeTreeZipTest(TreeZipHelpers, harness.MountTestCase):
    """Archives too big for the emulator, on a local source: tens of
    thousands of members, a member past 4 GiB. A meson test of their own
    (test_tree_zip_large), with its own time limit: under the sanitizers
    they take most of the time of this file."""

    source = None  # each test mounts a source of its own

    def backend_mount(self, source, options, endpoint=None):
        return self.mount(source, options)

    def test_70000_members(self):
        src = os.path.join(self.tempdir(), "src")
        for d in range(70):
            dpath = os.path.join(src, "many", "d%02d" % d)
            os.makedirs(dpath)
            for i in range(1000):
                fd = os.open(os.path.join(dpath, "f%04d" % i), os.O_WRONLY | os.O_CREAT, 0o644)
                os.write(fd, b"%d/%d\n" % (d, i))
                os.close(fd)
        m = self.zmount(src)
        z = self.zip_path(m, "many")
        size = os.stat(z).st_size
        out = self.unzip_t(z)
        self.assertGreaterEqual(out.count("OK"), 70000)
        checked = self.zipcheck(z)
        self.assertEqual(len(checked), 70000 + 70 + 1)
        self.assertEqual(checked["many/d42/f0999"][:2], (len(b"42/999\n"), zlib.crc32(b"42/999\n")))
        with zipfile.ZipFile(z) as zf:
            self.assertEqual(len(zf.infolist()), 70071)
        self.assertEqual(os.path.getsize(self.copy(z)), size)

    def test_memory_of_100000_members(self):
        """Layout state for 100,000 members fits in a few tens of MB: the
        daemon's peak RSS after laying out such an archive and serving its
        central directory (every CRC computed) stays under 96 MiB."""
        if os.environ.get("ZIPPERFS_SANITIZED"):
            self.skipTest("RSS is not meaningful under AddressSanitizer (shadow memory, "
                          "quarantine); checked by the normal build")
        src = os.path.join(self.tempdir(), "src")
        for d in range(100):
            dpath = os.path.join(src, "lots", "d%02d" % d)
            os.makedirs(dpath)
            for i in range(1000):
                fd = os.open(os.path.join(dpath, "sample_%04d.fastq.gz" % i),
                             os.O_WRONLY | os.O_CREAT, 0o644)
                os.write(fd, b"%d" % i)
                os.close(fd)
        m = self.zmount(src)
        z = self.zip_path(m, "lots")
        os.stat(z)
        out = subprocess.run(["unzip", "-l", z], capture_output=True, text=True, check=True).stdout
        self.assertIn("100101 files", out)
        with open("/proc/%d/status" % m.proc.pid) as f:
            hwm = [int(l.split()[1]) for l in f if l.startswith("VmHWM:")][0]
        self.assertLess(hwm, 96 * 1024, "peak RSS %d KiB for 100,000 members" % hwm)

    def test_archive_over_4gib(self):
        huge = 4 * GiB + GiB // 2
        src = os.path.join(self.tempdir(), "src")
        os.makedirs(os.path.join(src, "big"))
        with open(os.path.join(src, "big", "huge.bin"), "wb") as f:
            f.truncate(huge)  # sparse: reads as zeros, takes no space
        tail = b"the member after 4 GiB\n"
        with open(os.path.join(src, "big", "tail.txt"), "wb") as f:
            f.write(tail)
        m = self.zmount(src)
        z = self.zip_path(m, "big")
        size = os.stat(z).st_size
        self.assertGreater(size, huge)
        # a filesystem with room for the copy
        candidates = [os.environ.get("ZIPPERFS_TEST_SCRATCH"), tempfile.gettempdir(),
                      "/var/tmp", os.path.join(harness.TOP, "build")]
        scratch = None
        for c in candidates:
            if c and os.path.isdir(c) and shutil.disk_usage(c).free > size + GiB:
                scratch = c
                break
        if scratch is None:
            self.skipTest("no filesystem among %s has %.1f GiB free for the copy of a %.1f GiB "
                          "archive (set ZIPPERFS_TEST_SCRATCH)"
                          % ([c for c in candidates if c], (size + GiB) / GiB, size / GiB))
        work = harness.mkdtemp("zfs-4g-", dir=scratch)
        self.addCleanup(servers.remove_dir, work)
        copy = self.copy(z, "big.zip", work)
        self.assertEqual(os.path.getsize(copy), size, "stat size differs from cp size")
        self.unzip_t(copy)
        checked = self.zipcheck(copy)
        self.assertEqual(checked["big/huge.bin"][0], huge)
        self.assertEqual(checked["big/tail.txt"][:2], (len(tail), zlib.crc32(tail)))
        with zipfile.ZipFile(copy) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            self.assertEqual(sorted(infos), ["big/", "big/huge.bin", "big/tail.txt"])
            self.assertEqual(infos["big/huge.bin"].file_size, huge)
            self.assertGreater(infos["big/tail.txt"].header_offset, 1 << 32)
            self.assertEqual(zf.read("big/tail.txt"), tail)
        # the CRC of 4.5 GiB of zeros, computed here
        crc = 0
        block = b"\0" * (64 << 20)
        for _ in range(huge // len(block)):
            crc = zlib.crc32(block, crc)
        self.assertEqual(checked["big/huge.bin"][1], crc)
        # reads past 4 GiB straight on the mount match the copy
        with open(z, "rb") as f, open(copy, "rb") as c:
            for off in (size - 200000, (1 << 32) + 12345, huge + 10):
                f.seek(off)
                c.seek(off)
                self.assertEqual(f.read(100000), c.read(100000), "offset %d" % off)


if __name__ == "__main__":
    harness.main()
