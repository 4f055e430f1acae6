"""Keeping streams honest over time: heartbeats, slow clients (skip and
close policies) and the write timeout."""

import time
import unittest

from harness import HttpdTestCase, location, id_seq

BIG = 8000          # bytes of data per event in the slow-client tests
N_BIG = 1500        # 12 MB: more than loopback socket buffers can absorb
                    # (tcp_wmem max is 4 MiB here) plus the lag threshold


def loc(bus, **kw):
    kw.setdefault("SSEChannelAllow", '"*"')
    return location("/events", bus, **kw)


class HeartbeatTest(HttpdTestCase):

    def test_heartbeat_comment_when_idle(self):
        self.start_httpd(loc(self.bus_path, SSEHeartbeat="1"))
        c = self.stream("/events?channel=a")
        c.read_until(lambda c: c.comments.count("hb") >= 2, 8,
                     "two heartbeat comments")
        hb_chunks = [ch for ch in c.chunks if b": hb" in ch]
        for ch in hb_chunks:
            self.assertEqual(ch, b": hb\n\n")
        # events still flow between heartbeats
        eid = self.pub.publish("a", "between")
        c.read_events(1)
        self.assertEqual(c.events[0].id, eid)

    def test_heartbeat_zero_sends_none(self):
        self.start_httpd(loc(self.bus_path, SSEHeartbeat="0"))
        c = self.stream("/events?channel=a")
        c.drain_quietly(2.5)
        self.assertEqual(c.comments, [])


class SlowClientTest(HttpdTestCase):
    bus_capacity = "32M"

    def fill(self):
        payload = "p" * (BIG - 5)
        self.pub.stream_lines("a", ["%04d:%s" % (i, payload)
                                    for i in range(N_BIG)])

    def drain_until_quiet(self, c, quiet=1.5, limit=30):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not c.ended:
            if c.drain_quietly(quiet) == 0:
                return
        self.fail("stream never went quiet after the flood")

    def test_slow_client_skip_reports_skipped_and_continues(self):
        self.start_httpd(loc(self.bus_path, SSESlowClient="skip",
                             SSESlowClientLag="256k",
                             SSEWriteTimeout="60"))
        c = self.stream("/events?channel=a", rcvbuf=4096, timeout=30)
        self.fill()             # the client is not reading now
        time.sleep(1.0)
        # Resume reading: the backlog behind the head is now far beyond the
        # lag threshold, so the stream must jump ahead and say so.
        c.read_until(lambda c: any(k == "comment" and v.startswith("skipped")
                                   for k, v in c.items), 60,
                     "a ': skipped N events' comment")
        # Let it catch up (a flood can take more than one skip), then the
        # stream must be live again: a new event arrives.
        self.drain_until_quiet(c)
        live = self.pub.publish("a", "live again")
        c.read_until(lambda c: any(e.id == live for e in c.events), 10,
                     "an event published after the skip")
        skipped = [(i, v) for i, (k, v) in enumerate(c.items)
                   if k == "comment" and v.startswith("skipped")]
        for _, v in skipped:
            self.assertRegex(v, r"^skipped \d+ events$")
        # Around each skip comment, the event ids jump by exactly N: the
        # count tells the client precisely how much it did not get.
        for idx, v in skipped:
            n = int(v.split()[1])
            self.assertGreater(n, 0)
            before = [x for k, x in c.items[:idx] if k == "event"]
            after = [x for k, x in c.items[idx:] if k == "event"]
            if before and after:
                self.assertEqual(id_seq(after[0].id) - id_seq(before[-1].id)
                                 - 1, n, (before[-1], v, after[0]))
        # never a torn or duplicated event
        seqs = [id_seq(e.id) for e in c.events]
        self.assertEqual(seqs, sorted(set(seqs)))
        for e in c.events[:-1]:
            self.assertEqual(len(e.data), BIG, e)
        self.assertLess(len(c.events), N_BIG + 1)
        self.assertNoCrash()

    def test_slow_client_close_policy_ends_stream(self):
        self.start_httpd(loc(self.bus_path, SSESlowClient="close",
                             SSESlowClientLag="256k",
                             SSEWriteTimeout="60"))
        c = self.stream("/events?channel=a", rcvbuf=4096, timeout=30)
        self.fill()
        time.sleep(1.0)
        self.pub.publish("a", "after the flood")
        self.assertTrue(c.read_to_end(60), "slow stream was not closed")
        self.assertLess(len(c.events), N_BIG + 1,
                        "slow client received everything; policy not applied")
        seqs = [id_seq(e.id) for e in c.events]
        self.assertEqual(seqs, sorted(set(seqs)))
        self.assertNoCrash()


class WriteTimeoutTest(HttpdTestCase):
    bus_capacity = "32M"

    def test_write_timeout_closes_blocked_stream(self):
        # A client that never reads: once a write has blocked for
        # SSEWriteTimeout seconds the stream is closed. The lag threshold is
        # larger than the ring so the slow-client policy does not act first.
        self.start_httpd(loc(self.bus_path, SSEWriteTimeout="2",
                             SSESlowClientLag="1G"))
        c = self.stream("/events?channel=a", rcvbuf=4096, timeout=30)
        payload = "w" * (BIG - 5)
        self.pub.stream_lines("a", ["%04d:%s" % (i, payload)
                                    for i in range(N_BIG)])
        time.sleep(5)           # well past the 2 s write timeout
        self.assertTrue(c.read_to_end(30),
                        "stream still open after the write timeout")
        self.assertLess(len(c.events), N_BIG)
        # the server is fine and serves new streams
        c2 = self.stream("/events?channel=a")
        nid = self.pub.publish("a", "fresh")
        c2.read_events(1)
        self.assertEqual(c2.events[0].id, nid)


if __name__ == "__main__":
    unittest.main()
