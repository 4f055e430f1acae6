"""Resuming a stream: Last-Event-ID header and ?lastEventId=, ids the ring
no longer holds, ids from an earlier bus, malformed ids, SSEReplay."""

import re
import unittest
from urllib.parse import quote

from harness import HttpdTestCase, location, id_seq, id_epoch


def loc(bus, **kw):
    kw.setdefault("SSEChannelAllow", '"*"')
    return location("/events", bus, **kw)


class ResumeTest(HttpdTestCase):

    def publish_n(self, channel, n, prefix="e"):
        return [self.pub.publish(channel, "%s%d" % (prefix, i))
                for i in range(n)]

    def test_resume_with_last_event_id_header_is_exact(self):
        self.start_httpd(loc(self.bus_path))
        ids = self.publish_n("a", 10)
        c = self.stream("/events?channel=a",
                        headers={"Last-Event-ID": ids[3]})
        c.read_events(6)
        c.drain_quietly(0.3)
        self.assertEqual([e.id for e in c.events], ids[4:])
        self.assertEqual([e.data for e in c.events],
                         ["e%d" % i for i in range(4, 10)])
        # and live events continue after the replayed ones
        nid = self.pub.publish("a", "live")
        c.read_events(7)
        self.assertEqual(c.events[-1].id, nid)
        self.assertEqual(len(c.events), 7)

    def test_resume_with_query_parameter_is_exact(self):
        self.start_httpd(loc(self.bus_path))
        ids = self.publish_n("a", 10)
        c = self.stream("/events?channel=a&lastEventId=" + quote(ids[6]))
        c.read_events(3)
        c.drain_quietly(0.3)
        self.assertEqual([e.id for e in c.events], ids[7:])

    def test_resume_with_custom_query_parameter(self):
        self.start_httpd(loc(self.bus_path, SSELastEventIDParam="since"))
        ids = self.publish_n("a", 5)
        c = self.stream("/events?channel=a&since=" + quote(ids[2]))
        c.read_events(2)
        c.drain_quietly(0.3)
        self.assertEqual([e.id for e in c.events], ids[3:])

    def test_resume_at_newest_gets_only_new_events(self):
        self.start_httpd(loc(self.bus_path))
        ids = self.publish_n("a", 5)
        c = self.stream("/events?channel=a",
                        headers={"Last-Event-ID": ids[-1]})
        c.drain_quietly(0.5)
        self.assertEqual(c.events, [])
        nid = self.pub.publish("a", "new")
        c.read_events(1)
        self.assertEqual([e.id for e in c.events], [nid])

    def test_resume_skips_other_channels(self):
        self.start_httpd(loc(self.bus_path))
        a0 = self.pub.publish("a", "a0")
        self.pub.publish("b", "b0")
        a1 = self.pub.publish("a", "a1")
        self.pub.publish("b", "b1")
        a2 = self.pub.publish("a", "a2")
        c = self.stream("/events?channel=a", headers={"Last-Event-ID": a0})
        c.read_events(2)
        c.drain_quietly(0.3)
        self.assertEqual([e.id for e in c.events], [a1, a2])

    def test_resume_with_overwritten_id_reports_missed_then_oldest(self):
        # 64 KiB ring (the minimum): 300 events of ~1 KiB lap it.
        self.pub.create(capacity="64k", force=True)
        self.start_httpd(loc(self.bus_path))
        first = self.pub.publish("a", "first")
        self.pub.stream_lines("a", ["%04d" % i + "z" * 1000
                                    for i in range(300)])
        last = self.pub.publish("a", "last")
        c = self.stream("/events?channel=a",
                        headers={"Last-Event-ID": first})
        c.read_until(lambda c: c.events and c.events[-1].id == last, 10,
                     "the last event")
        kinds = [k for k, _ in c.items]
        first_ev = kinds.index("event")
        missed = [v for k, v in c.items[:first_ev] if k == "comment"
                  and re.fullmatch(r"missed \d+ events", v)]
        self.assertEqual(len(missed), 1, c.items[:first_ev + 1])
        n = int(missed[0].split()[1])
        oldest = c.events[0]
        self.assertGreater(n, 0)
        # Exactly the events the ring lost are reported missed: the oldest
        # delivered event follows the resumed one by n + 1.
        self.assertEqual(id_seq(oldest.id), id_seq(first) + n + 1,
                         (first, n, oldest))
        seqs = [id_seq(e.id) for e in c.events]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))))
        try:
            info = self.pub.info()
        except Exception:
            info = {}
        if "tail_seq" in info:
            self.assertEqual(id_seq(oldest.id), int(info["tail_seq"]))

    def test_resume_with_id_from_earlier_bus_reports_reset_then_oldest(self):
        self.start_httpd(loc(self.bus_path))
        old_ids = self.publish_n("a", 3, "old")
        self.pub.create(capacity="1M", force=True)  # new epoch
        new_ids = self.publish_n("a", 3, "new")
        self.assertNotEqual(id_epoch(old_ids[0]), id_epoch(new_ids[0]))
        c = self.stream("/events?channel=a",
                        headers={"Last-Event-ID": old_ids[-1]})
        c.read_events(3)
        kinds = [k for k, _ in c.items]
        before = [v for k, v in c.items[:kinds.index("event")]
                  if k == "comment"]
        self.assertTrue(any("bus was reset" in v and old_ids[-1] in v
                            for v in before), before)
        self.assertEqual([e.id for e in c.events], new_ids)
        self.assertEqual([e.data for e in c.events],
                         ["new0", "new1", "new2"])

    def test_stream_follows_bus_recreated_while_connected(self):
        # A bus replaced under a live stream (create --force) is noticed:
        # the stream moves on to the new bus instead of going silent.
        self.start_httpd(loc(self.bus_path, SSEHeartbeat="1"))
        c = self.stream("/events?channel=a")
        self.pub.publish("a", "before")
        c.read_events(1)
        self.pub.create(capacity="1M", force=True)
        nid = self.pub.publish("a", "after")
        c.read_until(lambda c: any(e.id == nid for e in c.events) or c.ended,
                     10, "the event on the new bus (or a reconnect)")
        if c.ended:
            # Ending the stream is acceptable if the client can come back
            # and get the new bus's events.
            c2 = self.stream("/events?channel=a",
                             headers={"Last-Event-ID": c.events[-1].id})
            c2.read_events(1)
            self.assertEqual(c2.events[0].id, nid)

    def test_malformed_ids_never_crash_and_stream_works(self):
        self.start_httpd(loc(self.bus_path) +
                         "LimitRequestFieldSize 20000\n"
                         "LimitRequestLine 20000\n")
        ids = self.publish_n("a", 3)
        epoch = id_epoch(ids[0])
        bad = ["abc", "-1", "-5", "1" + "0" * 30,
               epoch + ":" + "1" + "0" * 30, epoch + ":-3", "zzzzzzzz:5",
               ":", epoch + ":", ":7", epoch + "::1", "x" * 10240,
               "\u00e9\u00e8".encode("utf-8").decode("latin-1")]
        for b in bad:
            with self.subTest(id=b[:40]):
                c = self.stream("/events?channel=a",
                                headers={"Last-Event-ID": b})
                c.read_events(3)
                kinds = [k for k, _ in c.items]
                self.assertIn("comment", kinds[:kinds.index("event")],
                              "no comment before the oldest event")
                self.assertEqual([e.id for e in c.events], ids)
                c.close()
        for b in ["abc", "-5", "1" + "0" * 30, "x" * 10240]:
            with self.subTest(query_id=b[:40]):
                c = self.stream("/events?channel=a&lastEventId=" + quote(b))
                c.read_events(3)
                self.assertEqual([e.id for e in c.events], ids)
                c.close()
        c = self.stream("/events?channel=a", headers={"Last-Event-ID": "abc"})
        c.read_events(3)
        nid = self.pub.publish("a", "still works")
        c.read_events(4)
        self.assertEqual(c.events[-1].id, nid)
        self.assertNoCrash()

    def test_replay_sends_last_n_events_to_new_client(self):
        self.start_httpd(loc(self.bus_path, SSEReplay="3"))
        ids = self.publish_n("a", 6)
        c = self.stream("/events?channel=a")
        c.read_events(3)
        c.drain_quietly(0.3)
        self.assertEqual([e.id for e in c.events], ids[3:])
        nid = self.pub.publish("a", "live")
        c.read_events(4)
        self.assertEqual(c.events[-1].id, nid)

    def test_replay_zero_sends_only_new_events(self):
        self.start_httpd(loc(self.bus_path))
        self.publish_n("a", 3)
        c = self.stream("/events?channel=a")
        c.drain_quietly(0.5)
        self.assertEqual(c.events, [])

    def test_last_event_id_wins_over_replay(self):
        self.start_httpd(loc(self.bus_path, SSEReplay="5"))
        ids = self.publish_n("a", 6)
        c = self.stream("/events?channel=a",
                        headers={"Last-Event-ID": ids[4]})
        c.read_events(1)
        c.drain_quietly(0.3)
        self.assertEqual([e.id for e in c.events], [ids[5]])


if __name__ == "__main__":
    unittest.main()
