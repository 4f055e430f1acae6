"""Bad input against the real apache2 (issue 5, scenario 7): every bad
request gets a clear 4xx (or a configtest error naming file and line),
nothing crashes, and a control stream opened first keeps receiving every
event, in order, while the bad requests come and go.

Already covered elsewhere and not repeated here: malformed Last-Event-ID
values under raised limits (test_resume.py), ids of an earlier bus
(test_resume.py), channel names with CR/LF/NUL, empty, 129 bytes, not
allowed, too many (test_channels.py), several configtest errors
(test_server.py). This file adds what those do not: the control stream,
Last-Event-ID at httpd's own limits, odd methods, HTTP/1.0, pipelining,
odd encodings of channel names, and every directive with a bad value.
"""

import socket
import time
import unittest
from urllib.parse import quote

from harness import (HttpdTestCase, Httpd, id_epoch, location,
                     simple_request)


def loc(bus, **kw):
    kw.setdefault("SSEChannelAllow", '"a" "b" "room-*"')
    return location("/events", bus, **kw)


class BadRequestsTest(HttpdTestCase):
    """One httpd, one control stream, many bad requests."""

    def setUp(self):
        super().setUp()
        self.start_httpd(loc(self.bus_path))
        self.control = self.stream("/events?channel=a")
        self.sent = []

    def tick(self, what):
        """Publish one event on the control channel and check that the
        control stream got it, right after everything before it."""
        self.sent.append(self.pub.publish("a", "tick after " + what[:60]))
        self.control.read_events(len(self.sent), timeout=20)
        got = [e.id for e in self.control.events]
        self.assertEqual(got, self.sent, "control stream disturbed by %s"
                         % what[:60])

    def assertClear4xx(self, head, body, statuses, what):
        self.assertIn(head.status, statuses, "%s: %s %r" % (what, head.status,
                                                             body[:200]))
        self.assertNotIn("event-stream", head.get("Content-Type") or "",
                         "%s answered with a stream" % what)

    def tearDown(self):
        self.assertNoCrash()

    def test_last_event_id_bad_values_resume_from_oldest(self):
        ids = [self.pub.publish("b", "b%d" % i) for i in range(3)]
        self.tick("publishing on b")
        epoch = id_epoch(ids[0])
        other = "%08x" % (int(epoch, 16) ^ 0x5a5a5a5a)
        bad = ["not-a-number", "-1", "-9223372036854775808",
               epoch + ":18446744073709551616",       # 2^64: overflows
               epoch + ":99999999999999999999999",
               other + ":2",                          # another epoch
               "x" * 7000,                            # big but legal
               ids[0] + ", " + ids[1]]                # two headers merged
        for b in bad:
            with self.subTest(last_event_id=b[:40]):
                c = self.stream("/events?channel=b",
                                headers={"Last-Event-ID": b})
                c.read_events(3, timeout=20)
                self.assertEqual([e.id for e in c.events], ids)
                c.close()
                self.tick("Last-Event-ID %r" % b[:40])
        # surrounding blanks are HTTP's optional whitespace, not the id's
        for b in (" " + ids[0], ids[0] + "\t"):
            with self.subTest(last_event_id=b):
                c = self.stream("/events?channel=b",
                                headers={"Last-Event-ID": b})
                c.read_events(2, timeout=20)
                self.assertEqual([e.id for e in c.events], ids[1:])
                c.close()

    def test_last_event_id_beyond_httpd_limit_is_400(self):
        # LimitRequestFieldSize defaults to 8190: httpd itself answers 400
        for n in (8200, 64 * 1024):
            with self.subTest(size=n):
                head, body = simple_request(self.httpd.port,
                                            "/events?channel=a",
                                            headers={"Last-Event-ID":
                                                     "1" * n})
                self.assertClear4xx(head, body, (400, 413, 431),
                                    "%d-byte Last-Event-ID" % n)
                self.tick("%d-byte Last-Event-ID" % n)
        head, body = simple_request(
            self.httpd.port, "/events?channel=a&lastEventId=" + "2" * 9000)
        self.assertClear4xx(head, body, (400, 414), "9000-byte query id")
        self.tick("9000-byte query id")

    def test_odd_channel_names_are_rejected(self):
        cases = {
            "a%0d%0aSet-Cookie:%20x=1": (400,),
            "a%00": (400,),
            "%01bell": (400, 403),
            "a%7f": (400, 403),
            "%": (400, 403),
            "%zz": (400, 403),
            "room-" + "x" * 200: (400,),
            "news": (403,),
            ",,,": (400,),
            "a,b," + ",".join("room-%d" % i for i in range(100)): (400,),
        }
        for q, statuses in cases.items():
            with self.subTest(channel=q[:40]):
                head, body = simple_request(self.httpd.port,
                                            "/events?channel=" + q)
                self.assertClear4xx(head, body, statuses, "channel " + q[:40])
                self.assertIsNone(head.get("Set-Cookie"))
                self.assertTrue(body.strip(), "4xx without a reason")
                self.tick("channel %r" % q[:40])
        # a bad %-escape stays literal (a legal name): no error, no crash
        c = self.stream("/events?channel=room-%C3%A9%ZZ")
        nid = self.pub.publish("room-\u00e9%ZZ", "literal escape")
        c.read_events(1)
        self.assertEqual(c.events[0].id, nid)
        c.close()
        # a legal but odd name (UTF-8, spaces, punctuation) works
        name = "room-\u00e9 \u2603!"
        c = self.stream("/events?channel=" + quote(name))
        nid = self.pub.publish(name, "odd but legal")
        c.read_events(1)
        self.assertEqual(c.events[0].id, nid)
        self.tick("odd legal name")

    def test_control_characters_in_channel_are_400_even_if_allowed(self):
        # The bus refuses every control character in a channel name, not
        # only CR/LF/NUL; the module must say so even under a wide allow.
        self.httpd.stop()
        self.httpd = self.start_httpd(loc(self.bus_path,
                                          SSEChannelAllow='"*"'))
        self.control = self.stream("/events?channel=a")
        for q in ("a%01b", "a%09b", "a%1fb", "a%7fb", "%1b[31m"):
            with self.subTest(channel=q):
                head, body = simple_request(self.httpd.port,
                                            "/events?channel=" + q)
                self.assertClear4xx(head, body, (400,), "channel " + q)
                self.assertIn(b"invalid channel name", body)
                self.tick("channel " + q)

    def test_comma_list_cannot_bypass_the_allow_list(self):
        # Each name of "a,b" is matched on its own: "secret" must not pass
        # "*-public" because the text after it ends in "-public".
        self.httpd.stop()
        self.httpd = self.start_httpd(loc(self.bus_path,
                                          SSEChannelAllow='"*-public" "a"'))
        self.control = self.stream("/events?channel=a")
        for q in ("secret,x-public", "secret,a", "x-public,secret,y-public"):
            with self.subTest(channel=q):
                head, body = simple_request(self.httpd.port,
                                            "/events?channel=" + q)
                self.assertClear4xx(head, body, (403,), "channel " + q)
                self.tick("channel list " + q)
        c = self.stream("/events?channel=x-public,a")
        nid = self.pub.publish("x-public", "allowed")
        c.read_events(1)
        self.assertEqual(c.events[0].id, nid)
        self.sent.append(self.pub.publish("a", "allowed too"))
        c.read_events(2)
        self.tick("allowed list")

    def test_odd_methods_get_405_or_501_never_a_stream(self):
        cases = [("POST", (405,)), ("PUT", (405,)), ("DELETE", (405,)),
                 ("PROPFIND", (405,)), ("OPTIONS", (200, 405)),
                 ("TRACE", (200, 405)), ("FROBNICATE", (405, 501)),
                 ("GET\x01", (400, 501))]
        for method, statuses in cases:
            with self.subTest(method=method):
                body = b"x=1" if method in ("POST", "PUT") else None
                head, rbody = simple_request(self.httpd.port,
                                             "/events?channel=a",
                                             method=method, body=body)
                self.assertClear4xx(head, rbody, statuses, method)
                if head.status == 405:
                    self.assertIn("GET", head.get("Allow") or "")
                self.tick("method " + method)

    def test_head_gets_stream_headers_and_no_body(self):
        c = self.client("/events?channel=a", method="HEAD",
                        headers={"Connection": "close"}).open()
        self.assertEqual(c.status, 200)
        self.assertIn("text/event-stream", c.head.get("Content-Type"))
        c.sock.settimeout(5)
        rest = c.rbuf + c.sock.recv(4096)
        self.assertEqual(rest, b"", "HEAD got a body")
        self.tick("HEAD")

    def raw(self, data, read_for=2.0):
        """Send raw bytes, read what comes back for read_for seconds."""
        s = socket.create_connection(("127.0.0.1", self.httpd.port),
                                     timeout=10)
        try:
            s.sendall(data)
            out = b""
            deadline = time.monotonic() + read_for
            s.settimeout(0.2)
            while time.monotonic() < deadline:
                try:
                    b = s.recv(65536)
                except socket.timeout:
                    continue
                if not b:
                    break
                out += b
            return s, out
        except BaseException:
            s.close()
            raise

    def test_http10_client_gets_unchunked_stream(self):
        s, out = self.raw(b"GET /events?channel=a HTTP/1.0\r\n"
                          b"Accept: text/event-stream\r\n\r\n", read_for=1.0)
        try:
            head, _, body = out.partition(b"\r\n\r\n")
            self.assertRegex(head, rb"^HTTP/1\.[01] 200 ")
            self.assertIn(b"text/event-stream", head)
            self.assertNotIn(b"chunked", head.lower())
            self.assertIn(b"retry:", body)
            nid = self.pub.publish("a", "to the 1.0 client")
            self.sent.append(nid)
            deadline = time.monotonic() + 10
            s.settimeout(0.5)
            while b"to the 1.0 client" not in body and \
                    time.monotonic() < deadline:
                try:
                    body += s.recv(65536)
                except socket.timeout:
                    pass
            self.assertIn(("id: %s\n" % nid).encode(), body)
            self.assertIn(b"data: to the 1.0 client\n\n", body)
            # no chunk-size lines: the body is the event stream itself
            self.assertNotRegex(body, rb"\r\n[0-9a-f]+\r\n")
        finally:
            s.close()
        self.control.read_events(len(self.sent))
        self.tick("HTTP/1.0")
        # a 1.0 request without Host to a bad channel: still a plain 4xx
        head, body = simple_request(self.httpd.port, "/events?channel=news")
        self.assertEqual(head.status, 403)

    def test_pipelined_second_request_is_not_part_of_the_stream(self):
        req = ("GET /events?channel=a HTTP/1.1\r\nHost: x\r\n"
               "Accept: text/event-stream\r\n\r\n"
               "GET /events?channel=b HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n").encode()
        c = self.client("/events?channel=a")
        c.connect()
        c.sock.sendall(req)
        c.read_head()
        self.assertEqual(c.status, 200)
        c.read_retry()
        self.sent.append(self.pub.publish("a", "pipelined a1"))
        self.pub.publish("b", "must not reach the pipelined stream")
        self.sent.append(self.pub.publish("a", "pipelined a2"))
        c.read_events(2, timeout=20)
        c.drain_quietly(0.5)
        self.assertEqual([e.data for e in c.events],
                         ["pipelined a1", "pipelined a2"])
        raw = b"".join(c.chunks) + c.rbuf
        self.assertNotIn(b"HTTP/1.1", raw, "a second response inside the "
                         "stream")
        self.assertNotIn(b"must not reach", raw)
        self.control.read_events(len(self.sent))
        c.close()
        self.tick("pipelining")

    def test_garbage_requests(self):
        cases = [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64,
                 b"GET /events?channel=a HTTP/9.9\r\n\r\n",
                 b"GET /events?channel=a HTTP/1.1\r\n" +
                 b"X-Junk: y\r\n" * 200 + b"\r\n",
                 b"G" * 20000 + b"\r\n\r\n",
                 b"GET /events?channel=a\x00b HTTP/1.1\r\nHost: x\r\n\r\n"]
        for data in cases:
            with self.subTest(request=data[:30]):
                s, out = self.raw(data, read_for=1.0)
                s.close()
                if out:
                    self.assertRegex(out, rb"^HTTP/1\.[01] [45]\d\d ")
                    self.assertNotIn(b"text/event-stream", out.split(
                        b"\r\n\r\n")[0])
                self.tick("garbage %r" % data[:20])
        # A GET with a (broken) chunked body: the stream never reads a
        # request body, so it streams; the body is not taken as a request.
        s, out = self.raw(b"GET /events?channel=a HTTP/1.1\r\nHost: x\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n"
                          b"zz\r\nGET /x HTTP/1.1\r\n\r\n", read_for=1.0)
        s.close()
        self.assertRegex(out, rb"^HTTP/1\.1 (200|400) ")
        self.assertEqual(out.count(b"HTTP/1.1"), 1)
        self.tick("GET with a chunked body")


class BadDirectiveValuesTest(HttpdTestCase):
    """`apache2 -t` refuses each directive given a bad value, naming the
    directive, the config file and the line."""

    BAD = [
        ("SSEBus", '""'),
        ("SSEChannel", '"a\tb"'),
        ("SSEChannel", '"' + "x" * 129 + '"'),
        ("SSEChannelAllow", '""'),
        ("SSEChannelParam", '"a&b"'),
        ("SSEChannelParam", '""'),
        ("SSEMaxChannels", "0"),
        ("SSEMaxChannels", "-1"),
        ("SSEMaxChannels", "1x"),
        ("SSERetry", "-5"),
        ("SSERetry", "99999999999999999999"),
        ("SSERetry", "soon"),
        ("SSEHeartbeat", "-1"),
        ("SSEHeartbeat", "1.5"),
        ("SSEWriteTimeout", "0"),
        ("SSEBufferSize", "1"),
        ("SSEBufferSize", "-64K"),
        ("SSEBufferSize", "99999999999T"),
        ("SSESlowClient", "drop"),
        ("SSESlowClientLag", "lots"),
        ("SSEReplay", "-3"),
        ("SSELastEventIDParam", '"a=b"'),
        ("SSEMode", "fast"),
        ("SSERetrySpread", "-1"),
    ]
    SERVER_BAD = [
        ("SSEMaxStreams", "-1"),
        ("SSEMaxStreams", "many"),
        ("SSEDetachedThreads", "0"),
    ]

    def configtest(self, extra, directive):
        h = Httpd(self.tmp, extra=extra)
        h.render()
        with open(h.conf) as f:
            lines = f.read().splitlines()
        # the last one: the harness may set a global default (SSEMode)
        line = [i + 1 for i, l in enumerate(lines)
                if l.strip().startswith(directive + " ")][-1]
        rc, out = h.configtest()
        return rc, out, line, h.conf

    def check(self, directive, value, extra):
        rc, out, line, conf = self.configtest(extra, directive)
        self.assertNotEqual(rc, 0, "%s %s was accepted:\n%s"
                            % (directive, value, out))
        self.assertIn(directive, out)
        self.assertIn("line %d of %s" % (line, conf), out,
                      "error does not name file and line")
        self.assertNotIn("Segmentation", out)

    def test_each_bad_directive_value_fails_with_file_and_line(self):
        for directive, value in self.BAD:
            with self.subTest(directive=directive, value=value[:20]):
                kw = {directive: value}
                if directive == "SSEBus":
                    extra = location("/events", None, SSEBus=value,
                                     SSEChannel="a")
                else:
                    extra = loc(self.bus_path, **kw)
                self.check(directive, value, extra)

    def test_each_bad_server_directive_value_fails_with_file_and_line(self):
        for directive, value in self.SERVER_BAD:
            with self.subTest(directive=directive, value=value):
                extra = "%s %s\n" % (directive, value) + loc(self.bus_path)
                self.check(directive, value, extra)

    def test_directive_in_wrong_context_fails(self):
        extra = ('<Location "/x">\n    SSEMaxStreams 5\n</Location>\n'
                 + loc(self.bus_path))
        rc, out, line, conf = self.configtest(extra, "SSEMaxStreams")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("SSEMaxStreams", out)


if __name__ == "__main__":
    unittest.main()
