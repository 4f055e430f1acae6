"""Scenario 5 - bus faults while httpd runs and events flow: the bus file
deleted, truncated (to 0 and mid-ring), replaced by a new bus, its header
or records corrupted, and no space to create it. For each: no child
crashes, the error log says what happened and what to run, open streams
end in order (or carry on when the fault is harmless to them), new streams
get 503 with Retry-After while there is no valid bus, and streams work
again once a valid bus is back."""

import os
import random
import subprocess
import time

import rel
from harness import HttpdTestCase, location, simple_request

NCLIENTS = 8


class BusFaultTest(HttpdTestCase):
    bus_capacity = "1M"

    def setUp(self):
        super().setUp()
        self.h = self.start_httpd(
            location("/events", self.bus_path, SSEChannel="f",
                     SSEHeartbeat="1") + rel.metrics_location(), threads=32)
        self.pacer = rel.Pacer(self.bus_path, "f", rate=100).start()
        self.addCleanup(self.pacer.stop)
        self.fleet = rel.Fleet(self.h.port, "/events", NCLIENTS)
        self.fleet.open_all(30)
        self.fleet.until(lambda: all(c.events >= 5
                                     for c in self.fleet.clients), 30,
                         "events on every stream")
        self.mark = self.h.error_log_mark()

    def tearDown(self):
        self.fleet.close_all()

    def streams_end(self, timeout=20):
        f = self.fleet
        f.until(lambda: all(c.ends >= 1 for c in f.clients), timeout,
                "every stream to end")

    def status(self):
        head, _ = simple_request(self.h.port, "/events", timeout=10)
        return head

    def expect_503(self, timeout=10):
        deadline = time.monotonic() + timeout
        head = self.status()
        while head.status != 503 and time.monotonic() < deadline:
            time.sleep(0.3)
            head = self.status()
        self.assertEqual(head.status, 503)
        self.assertTrue(head.get("Retry-After"), "503 without Retry-After")

    def recreate_and_recover(self):
        """A valid bus is back: a new stream gets 200 and live events."""
        self.pacer.kill_publisher()
        self.pub.create(capacity="1M", force=True)
        f = rel.Fleet(self.h.port, "/events", 2)
        try:
            f.open_all(30)
            f.until(lambda: all(c.statuses.get(200) for c in f.clients)
                    and all(c.events >= 3 for c in f.clients), 30,
                    "events on streams after recovery")
            self.assertEqual(f.totals()["bad"], 0)
        finally:
            f.close_all()

    def log_since(self):
        return self.h.error_log_since(self.mark)

    def finish(self, what, log_must):
        log = self.log_since()
        for s in log_must:
            self.assertIn(s, log, "error log lacks %r" % s)
        self.assertNoCrash()
        t = self.fleet.totals()
        rel.report("bus_fault", fault=what, clients=NCLIENTS,
                   events=t["events"], gaps=t["gaps"], dups=t["dups"],
                   bad=t["bad"], crashes=len(self.h.crashes()))

    # ------------------------------------------------------------ faults

    def test_deleted_bus_ends_streams_then_503_then_recovers(self):
        os.unlink(self.bus_path)
        self.streams_end()
        self.expect_503()
        self.recreate_and_recover()
        self.finish("deleted", ["was deleted, replaced or truncated",
                                "not found: create it with `sse-pub create"])

    def _truncate(self, size):
        with open(self.bus_path, "r+b") as f:
            f.truncate(size)
        self.streams_end()
        self.expect_503()
        self.recreate_and_recover()
        # AH10530: "... was replaced by a newer bus" when a reader touched
        # the cut pages first (the SIGBUS guard shows a retired bus), "...
        # was deleted, replaced or truncated" when the stale check saw it.
        self.finish("truncated to %d" % size, ["AH10530", "sse-pub create"])
        self.assertEqual(self.fleet.totals()["bad"], 0)

    def test_bus_truncated_to_zero_no_crash_503_then_recovers(self):
        self._truncate(0)

    def test_bus_truncated_mid_ring_no_crash_503_then_recovers(self):
        self._truncate(64 * 1024)

    def test_bus_replaced_streams_resume_on_new_epoch(self):
        old_epoch = self.fleet.clients[0].last_id.split(b":")[0]
        self.pub.create(capacity="1M", force=True)
        self.pacer.kill_publisher()     # the next one maps the new bus
        self.streams_end()
        # The clients come back with their old Last-Event-ID.
        f = self.fleet
        f.reconnect = True
        for cl in f.clients:
            cl.reconnect_at = time.monotonic()
        # Resume from another epoch restarts the sequence: compare ids only
        # within the new bus.
        for cl in f.clients:
            cl.last_seq = None
        f.until(lambda: all(c.connects >= 2 and c.last_id and
                            not c.last_id.startswith(old_epoch)
                            for c in f.clients), 30,
                "events of the new bus")
        self.assertTrue(any("bus was reset" in m for c in f.clients
                            for m in c.comments),
                        "no ': bus was reset' comment on resume")
        self.assertEqual(f.totals()["bad"], 0)
        self.finish("replaced (new epoch)", ["was replaced by a newer bus"])

    def _overwrite(self, off, data):
        fd = os.open(self.bus_path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, off)
        finally:
            os.close(fd)

    def test_corrupt_header_no_crash_new_streams_503_then_recovers(self):
        self._overwrite(0, b"\xde\xad\xbe\xef" * 64)    # magic, version...
        self.expect_503()
        self.fleet.pump(2)      # open streams: must not crash or garble
        self.recreate_and_recover()
        self.finish("header corrupted", ["corrupt", "sse-pub create"])
        self.assertEqual(self.fleet.totals()["bad"], 0)

    def test_corrupt_records_no_crash_no_garbled_frame(self):
        info = self.pub.info()
        size = os.path.getsize(self.bus_path)
        ring_off = size - info["capacity"]
        rnd = random.Random(5)
        # zeroed and garbage records, at random places, while publishing
        for i in range(40):
            off = ring_off + rnd.randrange(0, info["capacity"] - 512)
            data = bytes(256) if i % 2 == 0 else rnd.randbytes(256)
            self._overwrite(off, data)
            self.fleet.pump(0.05)
        self.fleet.pump(2)
        self.assertEqual(self.status().status, 200)
        t = self.fleet.totals()
        self.assertEqual(sum(1 for c in self.fleet.clients if c.ends), 0,
                         "streams ended on corrupt records")
        self.finish("records corrupted (40 x 256 bytes)", [])
        # Garbage that happens to look like a sane record header is not
        # detectable by a reader (the bus has no per-record checksum); zeroed
        # records are. Report, do not assert, the garbage case.
        self.assertLessEqual(t["bad"], t["events"])


class DiskFullTest(HttpdTestCase):
    """sse-pub create on a full file system: a clear error, nothing left
    at the path, httpd answers 503 with a log line saying what to run, and
    streams work once a bus that fits is created."""
    create_bus = False

    def setUp(self):
        super().setUp()
        self.mnt = os.path.join(self.tmp, "small")
        os.makedirs(self.mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755",
                            "tmpfs", self.mnt], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, "cannot mount a 1 MB tmpfs: %s"
                         % r.stderr)
        self.addCleanup(subprocess.run, ["umount", "-l", self.mnt])

    def test_disk_full_at_create_is_clear_and_recoverable(self):
        bus = os.path.join(self.mnt, "full.bus")
        pub = rel.harness.SsePub(bus)
        rc, out, err = pub.run("create", bus, "--capacity", "4M", "--group",
                               "www-data", check=False)
        self.assertEqual(rc, 1, "create on a full fs: rc %d %s" % (rc, err))
        self.assertIn("space", err.lower())
        self.assertFalse(os.path.exists(bus), "a partial bus was left")
        self.assertEqual([n for n in os.listdir(self.mnt)], [],
                         "temp files left on the full file system")
        h = self.start_httpd(location("/events", bus, SSEChannel="d"))
        head, _ = simple_request(h.port, "/events")
        self.assertEqual(head.status, 503)
        self.assertIn("sse-pub create", h.error_log())
        pub.run("create", bus, "--capacity", "256K", "--group", "www-data")
        c = self.stream("/events")
        pub.publish("d", rel.payload(1))
        c.read_events(1)
        self.assertNoCrash()
        rel.report("bus_fault", fault="disk full at create (1 MB tmpfs, 4M "
                   "bus)", create_rc=rc, message=err.strip()[:200])
