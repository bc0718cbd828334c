"""Files and archive members started ahead of their open (-o lookahead):
a directory copied file after file, and a tree zip streamed member after
member, on a local directory and on s3rver (whose request log says how
many requests were in progress when each came). Checked: the bytes (cmp,
unzip -t, Python's zipfile), the counters of .zipperfs/stats, and that the
GETs of different files overlap with lookahead on and never with it off."""

import json
import os
import threading
import time
import zipfile

import harness
import servers
from s3_common import S3TestCase

CONTROL = ".zipperfs"
COUNT = 40


def make_dir(top, count=COUNT, size=200 * 1024):
    """count files of size-ish random bytes (one empty) in top/many."""
    os.makedirs(os.path.join(top, "many"))
    names = []
    for i in range(count):
        name = "f%03d.bin" % i
        with open(os.path.join(top, "many", name), "wb") as f:
            f.write(os.urandom(0 if i == 5 else size + i * 1000))
        names.append(name)
    return names


def reads_stats(m):
    return m.stats()["reads"]


class LookaheadChecks:
    """What both backends must show; mount(options) and make() come from
    the class."""

    def copy(self, m):
        dst = os.path.join(self.tempdir(), "copy")
        self.run_ok(["cp", "-r", m.path("many"), dst])
        self.run_ok(["diff", "-r", os.path.join(self.ref, "many"), dst])
        return dst

    def test_copy_reads_ahead(self):
        m = self.mount_src()
        self.copy(m)
        st = reads_stats(m)
        # every file after the second is a step of the walk; nearly every
        # non-empty one after the second was started ahead and taken
        self.assertGreaterEqual(st["walk_steps"], COUNT - 2, st)
        self.assertGreaterEqual(st["lookahead_taken"], COUNT - 4, st)
        self.assertLessEqual(st["lookahead_taken"], st["lookahead_primed"], st)
        self.assertLessEqual(st["prefetch_peak"], st["prefetch_budget"], st)
        # a second copy comes from the kernel's cache: nothing is started
        primed = st["lookahead_primed"]
        self.copy(m)
        self.assertEqual(reads_stats(m)["lookahead_primed"], primed)

    def test_copy_without_lookahead(self):
        m = self.mount_src(["lookahead=0"])
        self.copy(m)
        st = reads_stats(m)
        self.assertEqual(st["lookahead_primed"], 0, st)
        self.assertEqual(st["lookahead_taken"], 0, st)

    def test_out_of_order_reads_start_nothing(self):
        m = self.mount_src()
        for name in reversed(self.names):
            with open(m.path("many", name), "rb") as f, \
                    open(os.path.join(self.ref, "many", name), "rb") as ref:
                self.assertEqual(f.read(), ref.read(), name)
        st = reads_stats(m)
        self.assertEqual(st["walk_steps"], 0, st)
        self.assertEqual(st["lookahead_primed"], 0, st)

    def test_tree_zip_reads_members_ahead(self):
        m = self.mount_src()
        out = os.path.join(self.tempdir(), "many.zip")
        self.run_ok(["cp", m.path(CONTROL, "tree", "many.zip"), out])
        self.run_ok(["unzip", "-tq", out])
        with zipfile.ZipFile(out) as z:
            names = sorted(n for n in z.namelist() if not n.endswith("/"))
            self.assertEqual(names, ["many/" + n for n in self.names])
            for n in self.names:
                with open(os.path.join(self.ref, "many", n), "rb") as ref:
                    self.assertEqual(z.read("many/" + n), ref.read(), n)
        st = reads_stats(m)
        self.assertGreaterEqual(st["lookahead_taken"], COUNT - 3, st)
        self.assertEqual(st["walk_steps"], 0, st)


class LocalLookaheadTest(LookaheadChecks, harness.MountTestCase):
    def setUp(self):
        self.ref = self.tempdir()
        self.names = make_dir(self.ref)

    def mount_src(self, options=()):
        return self.mount(self.ref, ["cache_dir=" + self.tempdir()] + list(options))


def object_gets(log, bucket, top="many"):
    return [r for r in log if r["method"] == "GET" and "list-type=" not in r["path"]
            and r["path"].startswith("/%s/%s/" % (bucket, top))]


# slow/a.bin and slow/b.bin: read at SLOW_RATE MB/s, each takes 2.4 s
SLOW_SIZE = 48 * 1024
SLOW_RATE = 0.02


class S3LookaheadTest(LookaheadChecks, S3TestCase):
    bucket = "lookahead"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ref = harness.mkdtemp("zfs-lookahead-")
        cls.names = make_dir(cls.ref)
        for name in cls.names:
            with open(os.path.join(cls.ref, "many", name), "rb") as f:
                cls.s3.put(cls.bucket, "many/" + name, f.read())
        for name in ("a.bin", "b.bin"):
            cls.s3.put(cls.bucket, "slow/" + name, os.urandom(SLOW_SIZE))

    @classmethod
    def tearDownClass(cls):
        servers.remove_dir(cls.ref)
        super().tearDownClass()

    def mount_src(self, options=()):
        self.s3.reset_log()
        return self.mount("s3://" + self.bucket, ["cache_dir=" + self.tempdir()] + list(options))

    def overlap(self):
        """The most GETs of files under many/ in progress at once."""
        gets = object_gets(self.s3.log(), self.bucket)
        self.assertGreater(len(gets), 0)
        return max(r["active"] for r in gets)

    def test_copy_gets_overlap(self):
        m = self.mount_src()
        self.copy(m)
        self.assertGreaterEqual(self.overlap(), 2)

    def test_copy_gets_one_at_a_time_without_lookahead(self):
        m = self.mount_src(["lookahead=0"])
        self.copy(m)
        self.assertEqual(self.overlap(), 1)
        # and one GET per non-empty file
        self.assertEqual(len(object_gets(self.s3.log(), self.bucket)), COUNT - 1)

    def test_copy_one_get_per_file(self):
        m = self.mount_src()
        self.copy(m)
        gets = object_gets(self.s3.log(), self.bucket)
        paths = [r["path"].split("?")[0] for r in gets]
        self.assertEqual(len(paths), len(set(paths)), "a file fetched twice")
        self.assertEqual(len(paths), COUNT - 1)

    def test_tree_zip_fetches_each_member_once(self):
        """A tree zip copied in order asks for each member's bytes once. The
        kernel reads ahead up to 1 MiB at a time on several threads, out of
        order, across several of these 200 KB members: the read of a
        member's descriptor (its CRC) waits for the bytes other reads are
        bringing instead of a GET of its own, a member's reader outlives
        the reads still to come for it, and the first member's part is not
        queued behind the members started ahead of it. Three copies, each
        on a fresh mount."""
        for attempt in range(3):
            m = self.mount_src()
            out = os.path.join(self.tempdir(), "many.zip")
            self.run_ok(["cp", m.path(CONTROL, "tree", "many.zip"), out])
            self.run_ok(["unzip", "-tq", out])
            with open(m.path(CONTROL, "stats")) as f:
                archives = json.load(f)["archives"]
            gets = object_gets(self.s3.log(), self.bucket)
            spans = [(r["path"].split("?")[0], r["range"]) for r in gets]
            self.assertEqual(archives["crc_fetches"], 0, (attempt, archives, spans))
            paths = [p for p, _ in spans]
            twice = [(p, rng) for p, rng in spans if paths.count(p) > 1]
            self.assertEqual(twice, [], "copy %d: members fetched twice" % attempt)
            self.assertEqual(len(paths), COUNT - 1)
            m.close()

    def test_descriptor_waits_for_a_read_that_waits_itself(self):
        """A read spanning the end of one member and the start of the next
        waits for the first member's CRC before it reads the second's
        bytes; a read of the second member's descriptor meanwhile waits for
        it rather than fetch those bytes itself. Three opens of the tree
        zip of slow/ (each read O_DIRECT, so that it reaches zipperfs as
        it is), each GET taking 1.2 s per 24 KiB:
          (1) all of a.bin's data;
          (2) 0.15 s later, a.bin's descriptor, b.bin's header and the
              first half of b.bin's data: it waits for (1);
          (3) 0.3 s later, the second half of b.bin's data and b.bin's
              descriptor: it waits for (2)."""
        m = self.mount_src()
        ref = os.path.join(self.tempdir(), "slow.zip")
        self.run_ok(["cp", m.path(CONTROL, "tree", "slow.zip"), ref])
        with open(ref, "rb") as f:
            ref_bytes = f.read()
        with zipfile.ZipFile(ref) as z:
            info = {i.filename: i for i in z.infolist()}

        def data_off(name):
            i = info[name]
            h = ref_bytes[i.header_offset:i.header_offset + 30]
            name_len = int.from_bytes(h[26:28], "little")
            extra_len = int.from_bytes(h[28:30], "little")
            return i.header_offset + 30 + name_len + extra_len

        a_off, b_off = data_off("slow/a.bin"), data_off("slow/b.bin")
        half = SLOW_SIZE // 2
        for off in (a_off + SLOW_SIZE, b_off + SLOW_SIZE):
            self.assertEqual(ref_bytes[off:off + 4], b"PK\x07\x08")
        m.close()

        m = self.mount_src(["lookahead=0"])
        self.s3.control("rate", {"mbs": SLOW_RATE})
        self.addCleanup(self.s3.control, "rate", {"mbs": 0})
        path = m.path(CONTROL, "tree", "slow.zip")
        reads = [(a_off, SLOW_SIZE, 0),
                 (a_off + SLOW_SIZE, b_off + half - (a_off + SLOW_SIZE), 0.15),
                 (b_off + half, half + 16, 0.3)]
        got = [None] * len(reads)
        fds = []
        for _ in reads:
            fds.append(os.open(path, os.O_RDONLY | os.O_DIRECT))
            self.addCleanup(os.close, fds[-1])

        def read(k):
            off, size, _ = reads[k]
            got[k] = os.pread(fds[k], size, off)

        threads = []
        start = time.monotonic()
        for k, (_, _, at) in enumerate(reads):
            time.sleep(max(0, start + at - time.monotonic()))
            threads.append(threading.Thread(target=read, args=(k,)))
            threads[-1].start()
        for t in threads:
            t.join(60)
        self.s3.control("rate", {"mbs": 0})
        for k, (off, size, _) in enumerate(reads):
            self.assertEqual(got[k], ref_bytes[off:off + size], "read %d" % (k + 1))
        with open(m.path(CONTROL, "stats")) as f:
            archives = json.load(f)["archives"]
        gets = sorted((r["path"].split("?")[0], r["range"])
                      for r in object_gets(self.s3.log(), self.bucket, "slow"))
        self.assertEqual(archives["crc_fetches"], 0, (archives, gets))
        # a.bin once; b.bin from where each of (2) and (3) began; a fetch
        # for b.bin's CRC would be a third GET of b.bin
        a, b = "/%s/slow/a.bin" % self.bucket, "/%s/slow/b.bin" % self.bucket
        starts = [(p, int(rng.split("=")[1].split("-")[0])) for p, rng in gets]
        self.assertEqual(starts, [(a, 0), (b, 0), (b, half)], gets)


if __name__ == "__main__":
    harness.main()
