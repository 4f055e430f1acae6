"""Client disconnects (clean FIN and TCP RST) give back what the stream
held: after many connect/disconnect cycles the httpd children's thread and
descriptor counts return to their baseline.

Tolerance (stated, because a test must say what it accepts): threads
<= baseline + 1 and open fds <= baseline + 2 per child, reached within 15 s
after the last disconnect. The set of children must not change (a changed
set means a child died or was replaced)."""

import time
import unittest

from harness import HttpdTestCase, close_half_with_rst, location

CYCLES = 200        # per kind (clean, RST)
BATCH = 10          # streams open at once
THREAD_TOL = 1
FD_TOL = 2


def loc(bus, **kw):
    kw.setdefault("SSEChannelAllow", '"*"')
    # Heartbeats find dead idle sockets; 1 s keeps the test short.
    kw.setdefault("SSEHeartbeat", "1")
    return location("/events", bus, **kw)


class DisconnectLeakTest(HttpdTestCase):

    def cycles(self, kind):
        for b in range(CYCLES // BATCH):
            cs = [self.stream("/events?channel=leak") for _ in range(BATCH)]
            eid = self.pub.publish("leak", "batch %d" % b)
            for c in cs:
                c.read_events(1)
                self.assertEqual(c.events[0].id, eid)
            for c in cs:
                if kind == "rst":
                    c.rst_close()
                else:
                    c.close()
            self._clients = []
            # Two writes after a FIN: the first succeeds, the second fails.
            self.pub.publish("leak", "poke 1")
            self.pub.publish("leak", "poke 2")

    def run_kind(self, kind):
        self.start_httpd(loc(self.bus_path), threads=50)
        # Warm up: the first stream may open the bus and start helpers.
        for _ in range(3):
            c = self.stream("/events?channel=leak")
            self.pub.publish("leak", "warm")
            c.read_events(1)
            c.close()
        self._clients = []
        self.pub.publish("leak", "poke")
        self.pub.publish("leak", "poke")
        time.sleep(2.5)
        base = self.settle_children()
        self.assertTrue(base, "no httpd children found")
        self.cycles(kind)
        self.assertChildrenBackTo(base, THREAD_TOL, FD_TOL)
        self.assertNoCrash()

    def test_clean_disconnects_return_to_baseline(self):
        self.run_kind("clean")

    def test_rst_disconnects_return_to_baseline(self):
        self.run_kind("rst")

    def test_idle_streams_closed_by_client_are_noticed(self):
        # No events at all: only heartbeats can find these dead clients.
        self.start_httpd(loc(self.bus_path), threads=50)
        c = self.stream("/events?channel=idle")
        c.close()
        self._clients = []
        time.sleep(2.5)
        base = self.settle_children()
        cs = [self.stream("/events?channel=idle") for _ in range(20)]
        close_half_with_rst(cs)
        self._clients = []
        self.assertChildrenBackTo(base, THREAD_TOL, FD_TOL)


if __name__ == "__main__":
    unittest.main()
