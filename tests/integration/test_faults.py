"""Reads and listings through a fault-injecting proxy: 503 bursts, 429, a
connection reset mid-body, a stall. Each read either succeeds through
retries with the right bytes, or fails with EIO/ETIMEDOUT within its
deadline; none hangs."""

import errno
import json
import os
import time

import harness
from gcs_common import GcsTestCase

SIZE = 8 << 20


class FaultTest(GcsTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data = os.urandom(SIZE)
        cls.emu.upload("faults", "obj.bin", cls.data)
        for i in range(20):
            cls.emu.upload("faults", "dir/f%02d" % i, b"x" * i)

    def setUp(self):
        self.p = self.proxy()

    def mount_faulty(self, *options):
        return self.mount("gs://faults", endpoint=self.p.endpoint,
                          options=["retries=6", "retry_deadline=60"] + list(options))

    def media(self):
        return [r for r in self.p.log() if "alt=media" in r["path"]]

    def read_all(self, m):
        with open(m.path("obj.bin"), "rb") as f:
            return f.read()

    def test_503_burst_then_success(self):
        m = self.mount_faulty()
        os.stat(m.path("obj.bin"))
        self.p.plan({"match": "alt=media", "action": "503", "count": 3})
        self.assertEqual(self.read_all(m), self.data)
        faults = [r["fault"] for r in self.media()]
        self.assertEqual(faults[:3], ["503"] * 3)
        self.assertIsNone(faults[3])

    def test_429_then_success(self):
        m = self.mount_faulty()
        os.stat(m.path("obj.bin"))
        self.p.plan({"match": "alt=media", "action": "429", "count": 2, "retry_after": 0})
        self.assertEqual(self.read_all(m), self.data)
        self.assertEqual([r["fault"] for r in self.media()][:2], ["429", "429"])

    def test_reset_mid_body_resumes(self):
        m = self.mount_faulty()
        os.stat(m.path("obj.bin"))
        self.p.plan({"match": "alt=media", "action": "reset", "count": 1})
        self.assertEqual(self.read_all(m), self.data)
        media = self.media()
        self.assertEqual(media[0]["fault"], "reset")
        first = int(media[0]["range"].split("=")[1].split("-")[0])
        again = int(media[1]["range"].split("=")[1].split("-")[0])
        # the retry starts from the byte the reset attempt reached, not over
        self.assertGreater(again, first)

    def test_stall_is_cut_and_retried(self):
        m = self.mount_faulty("stall_timeout=2")
        os.stat(m.path("obj.bin"))
        self.p.plan({"match": "alt=media", "action": "stall", "count": 1, "seconds": 60})
        start = time.monotonic()
        self.assertEqual(self.read_all(m), self.data)
        self.assertLess(time.monotonic() - start, 45, "a stalled read was not cut short")
        self.assertEqual(self.media()[0]["fault"], "stall")

    def test_listing_retries(self):
        m = self.mount_faulty()
        self.p.plan({"match": "delimiter", "action": "500", "count": 2})
        self.assertEqual(len(os.listdir(m.path("dir"))), 20)

    def test_persistent_503_fails_with_eio(self):
        m = self.mount("gs://faults", endpoint=self.p.endpoint,
                       options=["retries=3", "retry_deadline=30"])
        os.stat(m.path("obj.bin"))
        self.p.plan({"match": "alt=media", "action": "503", "count": -1})
        start = time.monotonic()
        self.assert_errno(lambda: self.read_all(m), errno.EIO)
        self.assertLess(time.monotonic() - start, 30)
        # the budget was spent (and not exceeded): 3 attempts per request
        self.assertGreaterEqual(len(self.media()), 3)
        m.close()
        self.assertIn("gave up after 3 attempts", m.log_text())

    def test_persistent_stall_fails_within_deadline(self):
        m = self.mount("gs://faults", endpoint=self.p.endpoint,
                       options=["retries=50", "retry_deadline=5", "stall_timeout=3"])
        os.stat(m.path("obj.bin"))
        self.p.plan({"match": "alt=media", "action": "stall", "count": -1, "seconds": 120})
        start = time.monotonic()
        with open(m.path("obj.bin"), "rb") as f:
            try:
                f.read()
                self.fail("a read through a stalling server succeeded")
            except OSError as e:
                self.assertIn(e.errno, (errno.EIO, errno.ETIMEDOUT))
            # a bound, never a hang: the kernel retries a failed read page
            # by page, and those retries fail at once (below)
            self.assertLess(time.monotonic() - start, 40)
            # within stall_timeout of the failure, a read of the same open
            # file elsewhere fails at once with the same error, asking the
            # server nothing
            before = m.stats()["reads"]
            with self.assertRaises(OSError) as cm:
                os.pread(f.fileno(), 4096, SIZE - 4096)
            self.assertEqual(cm.exception.errno, errno.ETIMEDOUT)
            after = m.stats()["reads"]
        self.assertGreater(after["held_failures"], before["held_failures"])
        for key in ("runs", "parts", "exact_fetches", "read_timeouts"):
            self.assertEqual(after[key], before[key], key)
        m.close()
        self.assertIn("reads of this open file fail at once", m.log_text())

    def test_unmount_does_not_wait_for_a_stalled_server(self):
        # a request's job is fetching from a server that stopped sending:
        # the daemon still exits at once when unmounted, not after the stall
        # timeout (30 s by default) and the retries behind it
        m = self.mount_faulty()
        os.stat(m.path("obj.bin"))
        self.p.plan({"match": "alt=media", "action": "stall", "count": -1, "seconds": 120})
        with open(m.path(".zipperfs", "requests", "stuck"), "w") as f:
            f.write("obj.bin\n")
        deadline = time.monotonic() + 20
        while not any(r["fault"] == "stall" for r in self.media()):
            self.assertLess(time.monotonic(), deadline, "the job never fetched")
            time.sleep(0.05)
        time.sleep(0.5)  # the stalled response is under way
        with open(m.path(".zipperfs", "archives", "stuck.status")) as f:
            self.assertEqual(json.load(f)["state"], "materializing")
        start = time.monotonic()
        self.assertEqual(m.close(), 0)
        self.assertLess(time.monotonic() - start, 10, "the daemon waited for the stalled GET")
        self.assertIn("request stuck: job stopped", m.log_text())

    def test_unreachable_server_fails_fast(self):
        m = self.mount_faulty("retries=2", "connect_timeout=2")
        os.stat(m.path("obj.bin"))
        self.p.stop()
        self.assert_errno(lambda: self.read_all(m), errno.EIO)


if __name__ == "__main__":
    harness.main()
