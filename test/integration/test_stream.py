"""Basic stream behaviour over HTTP/1.1: headers, the retry line, delivery
in order with bus ids, chunk boundaries equal to flushes, channel
selection, HEAD and methods other than GET."""

import time
import unittest

from harness import HttpdTestCase, location, simple_request, id_seq, id_epoch


def allow_all(bus, **kw):
    kw.setdefault("SSEChannelAllow", '"*"')
    return location("/events", bus, **kw)


class StreamTest(HttpdTestCase):

    def test_headers(self):
        self.start_httpd(allow_all(self.bus_path))
        c = self.stream("/events?channel=a")
        h = c.head
        self.assertEqual(h.status, 200)
        self.assertEqual(h.version, "1.1")
        self.assertEqual(h.get("Content-Type"),
                         "text/event-stream; charset=utf-8")
        self.assertIn("no-cache", (h.get("Cache-Control") or "").lower())
        self.assertEqual((h.get("X-Accel-Buffering") or "").lower(), "no")
        self.assertEqual((h.get("Transfer-Encoding") or "").lower(),
                         "chunked")
        self.assertIsNone(h.get("Content-Length"))
        self.assertIsNone(h.get("Content-Encoding"))

    def test_retry_line_is_first_and_its_own_chunk(self):
        self.start_httpd(allow_all(self.bus_path, SSERetry="1234"))
        c = self.client("/events?channel=a").open()
        self.assertEqual(c.status, 200)
        first = c.read_chunk()
        self.assertEqual(first, b"retry: 1234\n\n")
        self.assertEqual(c.items, [("retry", 1234)])

    def test_retry_zero_sends_no_retry_line(self):
        self.start_httpd(allow_all(self.bus_path, SSERetry="0"))
        c = self.stream("/events?channel=a", wait_retry=False)
        # Give the server time to send a retry line if it (wrongly) would,
        # then publish: the first thing on the wire must be the event.
        time.sleep(0.5)
        eid = self.pub.publish("a", "x")
        c.read_events(1)
        self.assertEqual(c.items[0][0], "event", c.items)
        self.assertEqual(c.events[0].id, eid)

    def test_events_delivered_in_order_with_bus_ids(self):
        self.start_httpd(allow_all(self.bus_path))
        c = self.stream("/events?channel=a")
        ids = [self.pub.publish("a", "event %d" % i) for i in range(10)]
        c.read_events(10)
        ev = c.events
        self.assertEqual([e.data for e in ev],
                         ["event %d" % i for i in range(10)])
        self.assertEqual([e.id for e in ev], ids)
        self.assertEqual([e.type for e in ev], ["message"] * 10)
        seqs = [id_seq(i) for i in ids]
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual(len({id_epoch(i) for i in ids}), 1)

    def test_named_event_and_multiline_data(self):
        self.start_httpd(allow_all(self.bus_path))
        c = self.stream("/events?channel=a")
        self.pub.publish("a", "one\ntwo\r\nthree\rfour", event="tick")
        c.read_events(1)
        e = c.events[0]
        self.assertEqual(e.type, "tick")
        self.assertEqual(e.data, "one\ntwo\nthree\nfour")
        raw = b"".join(c.chunks)
        self.assertIn(b"event: tick\n", raw)
        self.assertIn(b"data: one\ndata: two\ndata: three\ndata: four\n\n",
                      raw)

    def test_single_publishes_arrive_one_event_per_chunk(self):
        self.start_httpd(allow_all(self.bus_path))
        c = self.stream("/events?channel=a")
        n0 = len(c.chunks)
        for i in range(5):
            self.pub.publish("a", "single %d" % i)
            c.read_events(i + 1)
        data_chunks = c.chunks[n0:]
        # Heartbeats are off by default for 15 s, so every chunk after the
        # retry line is exactly one event frame.
        self.assertEqual(len(data_chunks), 5, data_chunks)
        for i, ch in enumerate(data_chunks):
            self.assertTrue(ch.startswith(b"id: "), ch)
            self.assertTrue(ch.endswith(b"\n\n"), ch)
            self.assertEqual(ch.count(b"\n\n"), 1, ch)
            self.assertIn(b"data: single %d\n" % i, ch)

    def test_batch_arrives_in_few_chunks_of_whole_events(self):
        self.start_httpd(allow_all(self.bus_path))
        c = self.stream("/events?channel=a")
        n0 = len(c.chunks)
        k = 50
        self.pub.stream_lines("a", ["batch %d" % i for i in range(k)])
        c.read_events(k)
        data_chunks = c.chunks[n0:]
        self.assertEqual([e.data for e in c.events],
                         ["batch %d" % i for i in range(k)])
        # One batch append = one wake-up; the stream sends what is pending
        # in one pass with one FLUSH. Allow a few passes for a wake-up that
        # races the append, but not one chunk per event.
        self.assertLessEqual(len(data_chunks), 5,
                             "batch of %d events came in %d chunks: %r" % (
                                 k, len(data_chunks),
                                 [ch.count(b"\n\n") for ch in data_chunks]))
        for ch, boundary in zip(data_chunks, c.chunk_boundaries[n0:]):
            self.assertTrue(ch.endswith(b"\n\n"), "chunk splits an event: "
                            "%r" % ch[-80:])
            self.assertTrue(boundary)

    def test_multi_channel_stream_gets_its_channels_only(self):
        self.start_httpd(allow_all(self.bus_path))
        c = self.stream("/events?channel=a&channel=b")
        self.pub.publish("a", "to a")
        self.pub.publish("c", "to c")
        self.pub.publish("b", "to b")
        self.pub.publish("c", "to c again")
        self.pub.publish("a", "to a again")
        c.read_events(3)
        c.drain_quietly(0.5)
        self.assertEqual([e.data for e in c.events],
                         ["to a", "to b", "to a again"])

    def test_comma_separated_channels(self):
        self.start_httpd(allow_all(self.bus_path))
        c = self.stream("/events?channel=a,b")
        self.pub.publish("b", "to b")
        self.pub.publish("c", "to c")
        self.pub.publish("a", "to a")
        c.read_events(2)
        c.drain_quietly(0.5)
        self.assertEqual([e.data for e in c.events], ["to b", "to a"])

    def test_fixed_channel_location(self):
        self.start_httpd(location("/events", self.bus_path,
                                  SSEChannel="news sport"))
        c = self.stream("/events")
        self.pub.publish("news", "n1")
        self.pub.publish("weather", "w1")
        self.pub.publish("sport", "s1")
        c.read_events(2)
        c.drain_quietly(0.5)
        self.assertEqual([e.data for e in c.events], ["n1", "s1"])

    def test_custom_channel_param(self):
        self.start_httpd(allow_all(self.bus_path, SSEChannelParam="topic"))
        c = self.stream("/events?topic=t1")
        self.pub.publish("t1", "on t1")
        c.read_events(1)
        self.assertEqual(c.events[0].data, "on t1")

    def test_head_returns_headers_only(self):
        self.start_httpd(allow_all(self.bus_path))
        c = self.client("/events?channel=a", method="HEAD",
                        headers={"Connection": "close"}).open()
        self.assertEqual(c.status, 200)
        self.assertEqual(c.head.get("Content-Type"),
                         "text/event-stream; charset=utf-8")
        # The response must end (no stream) and carry no body bytes.
        self.assertTrue(c.read_to_end(5), "HEAD response did not end")
        self.assertEqual(c.rbuf + b"".join(c.chunks), b"")

    def test_other_methods_get_405_with_allow(self):
        self.start_httpd(allow_all(self.bus_path))
        for m in ("POST", "PUT", "DELETE"):
            with self.subTest(method=m):
                head, body = simple_request(self.httpd.port,
                                            "/events?channel=a", method=m,
                                            body=b"x=1" if m != "DELETE"
                                            else None)
                self.assertEqual(head.status, 405)
                allow = {a.strip().upper() for a in
                         (head.get("Allow") or "").split(",")}
                self.assertIn("GET", allow)
                self.assertIn("HEAD", allow)
                self.assertNotIn(m, allow)

    def test_stream_keeps_working_after_many_events(self):
        self.start_httpd(allow_all(self.bus_path))
        c = self.stream("/events?channel=a")
        self.pub.stream_lines("a", ["x" * 100 + str(i) for i in range(500)])
        c.read_events(500, timeout=20)
        self.assertEqual(c.events[-1].data, "x" * 100 + "499")
        last = self.pub.publish("a", "after")
        c.read_events(501)
        self.assertEqual(c.events[-1].id, last)
        self.assertNoCrash()


if __name__ == "__main__":
    unittest.main()
