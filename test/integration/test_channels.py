"""Channel selection by the client: the allow-list (fnmatch patterns), bad
names, too many channels, and httpd's own authz on the stream location."""

import unittest

from harness import HttpdTestCase, location, simple_request


class ChannelAllowTest(HttpdTestCase):

    def start(self, **kw):
        kw.setdefault("SSEChannelAllow", '"chat.*" "room-?"')
        return self.start_httpd(location("/events", self.bus_path, **kw))

    def get(self, path):
        return simple_request(self.httpd.port, path)

    def test_allowed_channels_get_200_and_events(self):
        self.start()
        c = self.stream("/events?channel=chat.lobby&channel=room-1")
        self.pub.publish("room-1", "r1")
        self.pub.publish("room-12", "not allowed, not subscribed")
        self.pub.publish("chat.lobby", "lobby")
        c.read_events(2)
        c.drain_quietly(0.3)
        self.assertEqual([e.data for e in c.events], ["r1", "lobby"])

    def test_channel_not_allowed_is_403(self):
        self.start()
        for q in ("channel=news", "channel=room-12", "channel=chat",
                  "channel=chat.lobby&channel=other"):
            with self.subTest(query=q):
                head, body = self.get("/events?" + q)
                self.assertEqual(head.status, 403)
                self.assertNotIn("event-stream",
                                 head.get("Content-Type") or "")
                self.assertTrue(body.strip(), "403 without explanation")
                self.assertLess(len(body), 4096)

    def test_channel_with_cr_lf_nul_is_400(self):
        self.start(SSEChannelAllow='"*"')
        for bad in ("a%0db", "a%0ab", "a%00b", "a%0d%0aX-Injected:%201"):
            with self.subTest(channel=bad):
                head, body = self.get("/events?channel=" + bad)
                self.assertEqual(head.status, 400)
                self.assertIsNone(head.get("X-Injected"))
                self.assertTrue(body.strip())

    def test_empty_channel_is_400(self):
        self.start(SSEChannelAllow='"*"')
        head, _ = self.get("/events?channel=")
        self.assertEqual(head.status, 400)

    def test_overlong_channel_is_400(self):
        self.start(SSEChannelAllow='"*"')
        head, _ = self.get("/events?channel=" + "x" * 129)
        self.assertEqual(head.status, 400)
        # the longest legal name still works
        c = self.stream("/events?channel=" + "y" * 128)
        self.pub.publish("y" * 128, "long name ok")
        c.read_events(1)
        self.assertEqual(c.events[0].data, "long name ok")

    def test_too_many_channels_is_400(self):
        self.start(SSEChannelAllow='"*"', SSEMaxChannels="3")
        head, _ = self.get("/events?channel=a&channel=b&channel=c&channel=d")
        self.assertEqual(head.status, 400)
        head, _ = self.get("/events?channel=a,b,c,d")
        self.assertEqual(head.status, 400)
        c = self.stream("/events?channel=a&channel=b&channel=c")
        self.pub.publish("c", "third")
        c.read_events(1)

    def test_no_channel_and_no_fixed_channel_is_400(self):
        self.start(SSEChannelAllow='"*"')
        head, _ = self.get("/events")
        self.assertEqual(head.status, 400)

    def test_require_all_denied_is_403(self):
        self.start_httpd(
            '<Location "/events">\n'
            '    SetHandler sse-stream\n'
            '    SSEBus "%s"\n'
            '    SSEChannel news\n'
            '    Require all denied\n'
            '</Location>\n' % self.bus_path)
        head, _ = self.get("/events")
        self.assertEqual(head.status, 403)


if __name__ == "__main__":
    unittest.main()
