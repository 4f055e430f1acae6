"""Server-level behaviour: a missing bus (503 until it exists), the
per-child stream limit, mod_deflate left out of streams, and configtest
errors for bad configuration."""

import os
import unittest

from harness import (HttpdTestCase, Httpd, location, simple_request,
                     wait_for)


def loc(bus, **kw):
    kw.setdefault("SSEChannelAllow", '"*"')
    return location("/events", bus, **kw)


class MissingBusTest(HttpdTestCase):
    create_bus = False

    def test_missing_bus_is_503_then_200_once_created(self):
        self.start_httpd(loc(self.bus_path))
        head, body = simple_request(self.httpd.port, "/events?channel=a")
        self.assertEqual(head.status, 503)
        self.assertEqual(head.get("Retry-After"), "5")
        self.assertNotIn("event-stream", head.get("Content-Type") or "")
        log = self.httpd.error_log()
        self.assertIn(self.bus_path, log)
        self.assertIn("sse-pub create", log)
        # Create it; no restart of httpd.
        self.pub.create(capacity="1M")
        c = self.stream("/events?channel=a")
        eid = self.pub.publish("a", "now it exists")
        c.read_events(1)
        self.assertEqual(c.events[0].id, eid)

    def test_file_that_is_not_a_bus_is_503(self):
        with open(self.bus_path, "wb") as f:
            f.write(b"this is not a bus file\n" * 1000)
        os.chmod(self.bus_path, 0o644)
        self.start_httpd(loc(self.bus_path))
        head, _ = simple_request(self.httpd.port, "/events?channel=a")
        self.assertEqual(head.status, 503)
        self.assertEqual(head.get("Retry-After"), "5")


class MaxStreamsTest(HttpdTestCase):

    def test_third_stream_beyond_max_streams_gets_503(self):
        # Heartbeats every second find the closed stream's dead socket.
        self.start_httpd("SSEMaxStreams 2\n" +
                         loc(self.bus_path, SSEHeartbeat="1"))
        c1 = self.stream("/events?channel=a")
        c2 = self.stream("/events?channel=a")
        head, _ = simple_request(self.httpd.port, "/events?channel=a")
        self.assertEqual(head.status, 503)
        self.assertIsNotNone(head.get("Retry-After"))
        # The two admitted streams still work.
        eid = self.pub.publish("a", "x")
        c1.read_events(1)
        c2.read_events(1)
        self.assertEqual(c1.events[0].id, eid)
        # A slot frees when a stream ends.
        c1.close()
        self.pub.publish("a", "wake the closed stream")

        def admitted():
            h, _ = simple_request(self.httpd.port, "/events?channel=a")
            return h.status == 200
        self.assertTrue(wait_for(admitted, 10, 0.3),
                        "slot not returned after a stream closed")


class DeflateTest(HttpdTestCase):

    def test_deflate_does_not_touch_streams(self):
        self.start_httpd(
            "AddOutputFilterByType DEFLATE text/event-stream text/html\n" +
            loc(self.bus_path), modules=["filter", "deflate"])
        c = self.stream("/events?channel=a",
                        headers={"Accept-Encoding": "gzip, deflate"})
        self.assertIsNone(c.head.get("Content-Encoding"))
        # Events arrive one by one, without waiting for a deflate buffer.
        for i in range(3):
            eid = self.pub.publish("a", "unbuffered %d" % i)
            c.read_events(i + 1, timeout=5)
            self.assertEqual(c.events[-1].id, eid)
        # Sanity: deflate itself is active for other content.
        with open(os.path.join(self.tmp, "htdocs", "big.html"), "w") as f:
            f.write("<p>compress me</p>\n" * 500)
        head, _ = simple_request(self.httpd.port, "/big.html",
                                 headers={"Accept-Encoding": "gzip"})
        self.assertEqual(head.get("Content-Encoding"), "gzip")


class ConfigTestTest(HttpdTestCase):
    """`apache2 -t` rejects bad mod_sse configuration with a message that
    says what is wrong."""

    def configtest(self, extra):
        h = Httpd(self.tmp, extra=extra)
        return h.configtest()

    def test_good_config_passes(self):
        rc, out = self.configtest(loc(self.bus_path))
        self.assertEqual(rc, 0, out)

    def test_missing_bus_directive_fails(self):
        rc, out = self.configtest(
            '<Location "/events">\n  SetHandler sse-stream\n'
            '  SSEChannel news\n</Location>\n')
        self.assertNotEqual(rc, 0, out)
        self.assertIn("SSEBus", out)

    def test_no_channel_config_fails(self):
        rc, out = self.configtest(
            '<Location "/events">\n  SetHandler sse-stream\n'
            '  SSEBus "%s"\n</Location>\n' % self.bus_path)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("SSEChannel", out)

    def test_bad_size_fails(self):
        rc, out = self.configtest(loc(self.bus_path, SSEBufferSize="12q"))
        self.assertNotEqual(rc, 0, out)
        self.assertIn("12q", out)

    def test_bad_slow_client_policy_fails(self):
        rc, out = self.configtest(loc(self.bus_path, SSESlowClient="maybe"))
        self.assertNotEqual(rc, 0, out)
        self.assertIn("skip", out)
        self.assertIn("close", out)

    def test_too_many_max_channels_fails(self):
        rc, out = self.configtest(loc(self.bus_path, SSEMaxChannels="33"))
        self.assertNotEqual(rc, 0, out)
        self.assertIn("32", out)


if __name__ == "__main__":
    unittest.main()
