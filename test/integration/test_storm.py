"""Connect/disconnect storm: many clients that go away in every way a
client can (before the response head, right after it, mid-stream with FIN or
RST, after a half-close, with a truncated request, with a bogus
Last-Event-ID) while events are published, from several threads at once.

What it asserts afterwards: no child crashed, the set of children did not
change, the open-streams gauge is back to 0, and every child's descriptors
and threads are back to their baseline (tolerance as in test_disconnect: +2
fds, +1 thread) - i.e. every way of leaving releases what the stream held.

It runs in both modes (run.py re-runs it detached) and is the storm the
asan-httpd stage of build/run-tests runs with an ASan+UBSan-instrumented
mod_sse loaded into httpd, where a use-after-free or double free in the
hand-off or the loop would be reported even when it does not crash.

Bounded: THREADS x PER_THREAD connections, each with a 5 s socket timeout;
the publisher stops with the storm."""

import random
import re
import socket
import subprocess
import threading
import time
import unittest

from harness import HttpdTestCase, location, simple_request, wait_for, \
    ClientTimeout

THREADS = 4
PER_THREAD = 100
THREAD_TOL = 1
FD_TOL = 2
KINDS = ["abort_before_head", "truncated_request", "rst_after_head",
         "fin_after_event", "rst_mid_stream", "half_close",
         "bad_last_event_id", "resume_then_rst"]

METRICS = '<Location "/metrics">\n    SetHandler sse-metrics\n</Location>\n'


class StormTest(HttpdTestCase):

    def gauge(self, name):
        head, body = simple_request(self.httpd.port, "/metrics")
        self.assertEqual(head.status, 200)
        m = re.search(r"^%s (\d+)$" % name, body.decode(), re.M)
        self.assertIsNotNone(m, "no %s in metrics" % name)
        return int(m.group(1))

    # -- one client going away in one way

    def raw(self, request):
        s = socket.create_connection(("127.0.0.1", self.httpd.port),
                                     timeout=5)
        s.sendall(request)
        return s

    def request(self, extra=""):
        return ("GET /events?channel=storm HTTP/1.1\r\n"
                "Host: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                "%s\r\n" % extra).encode()

    def one(self, kind, rng):
        if kind == "abort_before_head":
            self.raw(self.request()).close()
        elif kind == "truncated_request":
            self.raw(b"GET /events?channel=storm HTTP/1.1\r\nHost: 1").close()
        elif kind == "half_close":
            s = self.raw(self.request())
            s.shutdown(socket.SHUT_WR)
            try:
                s.recv(4096)
            except OSError:
                pass
            s.close()
        else:
            hdrs = {}
            if kind == "bad_last_event_id":
                hdrs["Last-Event-ID"] = rng.choice(
                    ["garbage", "ffffffff:99999999999", "1-2-3", "x" * 300])
            elif kind == "resume_then_rst":
                hdrs["Last-Event-ID"] = self.last_id or "0"
            c = self.client("/events?channel=storm", headers=hdrs,
                            timeout=5)
            try:
                c.open()
                if kind == "fin_after_event":
                    c.read_events(1, timeout=5)
                elif kind == "rst_mid_stream":
                    c.drain_quietly(rng.uniform(0.05, 0.3))
            except (ClientTimeout, OSError):
                pass   # the server may end it first; either way it goes
            if kind in ("fin_after_event", "bad_last_event_id"):
                c.close()
            else:
                c.rst_close()

    def storm_thread(self, seed, errors):
        rng = random.Random(seed)
        try:
            for i in range(PER_THREAD):
                self.one(KINDS[(seed + i) % len(KINDS)], rng)
        except Exception as e:  # reported by the main thread
            errors.append("%s: %r" % (threading.current_thread().name, e))

    def publisher(self, stop):
        """~200 events/s through one `sse-pub stream` until stop is set
        (bounded: at most 60 s)."""
        p = subprocess.Popen([self.pub.bin, "stream", self.bus_path,
                              "--channel", "storm"],
                             stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL)
        try:
            end = time.monotonic() + 60
            n = 0
            while not stop.is_set() and time.monotonic() < end:
                p.stdin.write(b"storm %d\n" % n)
                p.stdin.flush()
                n += 1
                time.sleep(0.005)
        finally:
            p.stdin.close()
            p.wait(timeout=10)

    def test_storm_releases_everything(self):
        self.start_httpd(
            location("/events", self.bus_path, SSEChannelAllow='"*"',
                     SSEHeartbeat="1", SSEWriteTimeout="5") + METRICS,
            threads=50)
        # Warm up: bus opened, helper threads (dispatcher, loop) started.
        self.last_id = self.pub.publish("storm", "warm")
        for _ in range(3):
            c = self.stream("/events?channel=storm")
            self.pub.publish("storm", "warm")
            c.read_events(1)
            c.close()
        self._clients = []
        time.sleep(2.5)
        base = self.settle_children()
        self.assertTrue(base, "no httpd children found")

        stop = threading.Event()
        pub = threading.Thread(target=self.publisher, args=(stop,))
        pub.start()
        errors = []
        ts = [threading.Thread(target=self.storm_thread, args=(k, errors),
                               name="storm-%d" % k) for k in range(THREADS)]
        try:
            for t in ts:
                t.start()
            for t in ts:
                t.join(timeout=120)
        finally:
            stop.set()
            pub.join(timeout=20)
        self.assertFalse(any(t.is_alive() for t in ts),
                         "storm threads still running after 120 s")
        self.assertEqual(errors, [])
        self._clients = []

        # A client after the storm still gets events.
        c = self.stream("/events?channel=storm")
        eid = self.pub.publish("storm", "after")
        c.read_events(1)
        self.assertEqual(c.events[0].id, eid)
        c.close()
        self._clients = []

        self.assertTrue(wait_for(lambda: self.gauge("sse_streams_open") == 0,
                                 15, 0.25),
                        "sse_streams_open is %d after the storm"
                        % self.gauge("sse_streams_open"))

        self.assertChildrenBackTo(base, THREAD_TOL, FD_TOL)
        self.assertNoCrash()


if __name__ == "__main__":
    unittest.main()
