"""Detached streams (SSEMode detached|auto): after the headers the socket
is handed to the child's epoll loop and the worker thread is freed.

What is shown here (the streaming behaviour itself is shown by running
test_stream, test_resume, test_liveness, test_restart, test_disconnect and
test_channels a second time with SSE_TEST_MODE=detached, see run.py):
  - auto picks detached for plain HTTP/1.1 and threaded under TLS and h2;
    detached falls back to threaded on the worker MPM with one log line;
  - the hand-off leaves no stray bytes: the chunked stream parses exactly,
    from the retry line through the terminating chunk;
  - the worker thread really is free (ThreadsPerChild 3 serves 10 streams);
  - client FIN and RST free the stream without any write (no heartbeats):
    descriptors back to baseline, detached gauge back to 0;
  - SSEMaxStreams counts detached streams;
  - graceful restart / stop end detached streams promptly with a spread
    retry: and the terminating chunk; clients resume without loss, also
    after the child was SIGKILLed;
  - the end-of-stream log line; the start-up warning for MPM settings
    that retire children;
  - HTTP/1.0 streams (no chunking: the body ends when the connection
    does): exact bytes, resume, server-side end; a client's half-close
    (FIN) ends the stream;
  - SSEDetachedCoalesce: events raised within the window after a round
    go out together, in one chunk;
  - SSEDetachedIOUring: where the kernel allows io_uring the loop's writes
    go through its ring (the ring's SQ tail counts them); Off, or a kernel
    that refuses io_uring, sends with sendmsg and says so. (run.py runs
    the write-path modules a third time with it Off.)"""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

from harness import HttpdTestCase, location, simple_request, wait_for, \
    pid_alive, close_half_with_rst
from test_tls_h2 import CurlReader, make_cert, tls_conf

METRICS = '<Location "/metrics">\n    SetHandler sse-metrics\n</Location>\n'


def loc(bus, mode="detached", **kw):
    kw.setdefault("SSEChannelAllow", '"*"')
    kw.setdefault("SSEMode", mode)
    return location("/events", bus, **kw) + METRICS


class DetachedTest(HttpdTestCase):

    def gauge(self, name="sse_streams_detached"):
        head, body = simple_request(self.httpd.port, "/metrics")
        self.assertEqual(head.status, 200)
        m = re.search(r"^%s (\d+)$" % name, body.decode(), re.M)
        self.assertIsNotNone(m, "no %s in metrics" % name)
        return int(m.group(1))

    def wait_gauge(self, want, name="sse_streams_detached", timeout=10):
        ok = wait_for(lambda: self.gauge(name) == want, timeout, 0.1)
        self.assertTrue(ok, "%s is %d, expected %d" % (
            name, self.gauge(name), want))

    def detached_lines(self, since=0):
        return [l for l in self.httpd.error_log_since(since).splitlines()
                if "AH10592" in l]

    # -- choosing the mode

    def test_auto_detaches_plain_http11(self):
        self.start_httpd(loc(self.bus_path, mode="auto"))
        c = self.stream("/events?channel=a")
        self.wait_gauge(1)
        self.assertEqual(len(self.detached_lines()), 1)
        ids = [self.pub.publish("a", "x%d" % i) for i in range(5)]
        c.read_events(5)
        self.assertEqual([e.id for e in c.events], ids)
        c.close()
        self.wait_gauge(0)
        self.wait_gauge(0, "sse_streams_open")

    def test_auto_stays_threaded_under_tls(self):
        crt, key = make_cert(self.tmp)
        self.start_httpd(tls_conf(self.tmp, crt, key)
                         + loc(self.bus_path, mode="auto"),
                         modules=["socache_shmcb", "ssl"])
        c = self.stream("/events?channel=a", tls=True)
        eid = self.pub.publish("a", "tls")
        c.read_events(1)
        self.assertEqual(c.events[0].id, eid)
        self.assertEqual(self.detached_lines(), [])
        self.assertIn("stays threaded (SSEMode auto): TLS",
                      self.httpd.error_log())
        # auto falls back silently: no notice, only the debug line
        self.assertNotIn("AH10548", self.httpd.error_log())

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed")
    def test_auto_stays_threaded_under_h2(self):
        crt, key = make_cert(self.tmp)
        h = self.start_httpd(tls_conf(self.tmp, crt, key, h2=True)
                             + loc(self.bus_path, mode="auto"),
                             modules=["socache_shmcb", "ssl", "http2"])
        url = "https://127.0.0.1:%d/events?channel=a" % h.port
        cr = CurlReader(["curl", "-sS", "--http2", "-N", "-k",
                         "--max-time", "30", url])
        try:
            self.assertTrue(cr.read_until(lambda o: b"retry:" in o, 10),
                            cr.out)
            eid = self.pub.publish("a", "h2")
            self.assertTrue(cr.read_until(
                lambda o: ("id: %s\n" % eid).encode() in o, 10), cr.out)
        finally:
            cr.stop()
        self.assertEqual(self.detached_lines(), [])
        self.assertIn("stays threaded (SSEMode auto): HTTP/2", h.error_log())

    def test_detached_on_worker_mpm_falls_back_with_one_log_line(self):
        h = self.start_httpd(loc(self.bus_path), mpm="worker")
        cs = [self.stream("/events?channel=a") for _ in range(3)]
        eid = self.pub.publish("a", "w")
        for c in cs:
            c.read_events(1)
            self.assertEqual(c.events[0].id, eid)
        notices = [l for l in h.error_log().splitlines() if "AH10548" in l]
        self.assertEqual(len(notices), 1, notices)
        self.assertIn("not the event MPM", notices[0])
        self.assertEqual(self.detached_lines(), [])

    def test_threaded_mode_never_detaches(self):
        self.start_httpd(loc(self.bus_path, mode="threaded"))
        c = self.stream("/events?channel=a")
        eid = self.pub.publish("a", "t")
        c.read_events(1)
        self.assertEqual(c.events[0].id, eid)
        self.assertEqual(self.detached_lines(), [])
        self.assertEqual(self.gauge(), 0)

    # -- the wire

    def test_handoff_leaves_no_stray_bytes(self):
        h = self.start_httpd(loc(self.bus_path, SSERetry="1234",
                                 SSEHeartbeat="0"))
        c = self.client("/events?channel=a").open()
        self.assertEqual(c.status, 200)
        self.assertEqual((c.head.get("Transfer-Encoding") or "").lower(),
                         "chunked")
        self.assertEqual(c.read_chunk(), b"retry: 1234\n\n")
        self.wait_gauge(1)
        ids = []
        for i in range(5):
            ids.append(self.pub.publish("a", "e%d" % i))
            c.read_events(i + 1)
        # one publish = one flush = one chunk holding exactly one event
        self.assertEqual(len(c.chunks), 6, c.chunks)
        for i, ch in enumerate(c.chunks[1:]):
            self.assertEqual(ch, ("id: %s\ndata: e%d\n\n" % (ids[i], i))
                             .encode())
        t = threading.Thread(target=h.graceful_stop, args=(40,))
        t.start()
        try:
            self.assertTrue(c.read_to_end(10), "stream did not end")
        finally:
            t.join(45)
        self.assertTrue(c.terminated, "no terminating 0-size chunk")
        self.assertTrue(all(c.chunk_boundaries))
        # after the terminating chunk: nothing, then EOF
        self.assertEqual(c.rbuf, b"")
        c.sock.settimeout(5)
        self.assertEqual(c.sock.recv(100), b"")
        self.assertEqual([k for k, _ in c.items],
                         ["retry"] + ["event"] * 5 + ["retry"])

    def test_worker_thread_is_freed(self):
        # 3 worker threads; 10 streams only work if each hands its worker
        # back. A plain GET must still be served while they are open.
        self.start_httpd(loc(self.bus_path), threads=3)
        cs = [self.stream("/events?channel=a") for _ in range(10)]
        head, body = simple_request(self.httpd.port, "/index.html")
        self.assertEqual((head.status, body), (200, b"ok\n"))
        eid = self.pub.publish("a", "all")
        for c in cs:
            c.read_events(1)
            self.assertEqual(c.events[0].id, eid)
        self.wait_gauge(10)

    # -- HTTP/1.0: no chunking, the end of the body is the end of the
    #    connection

    def raw10(self, path, headers=()):
        """An HTTP/1.0 request on a raw socket; returns (socket, status
        line, header lines, bytes of body read with the head)."""
        s = socket.create_connection(("127.0.0.1", self.httpd.port), 10)
        self._raw.append(s)
        req = "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n" % path
        req += "".join("%s: %s\r\n" % h for h in headers) + "\r\n"
        s.sendall(req.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(4096)
            self.assertTrue(d, "EOF before the end of the head: %r" % buf)
            buf += d
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        return s, lines[0], lines[1:], body

    def read_exact(self, s, have, want, timeout=10):
        """Read until exactly len(want) body bytes; compare them."""
        deadline = time.monotonic() + timeout
        while len(have) < len(want) and time.monotonic() < deadline:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            d = s.recv(65536)
            if not d:
                break
            have += d
        self.assertEqual(have, want)
        return b""

    def read_to_eof(self, s, timeout=10):
        out, deadline = b"", time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            d = s.recv(65536)
            if not d:
                return out, True
            out += d
        return out, False

    def setUp(self):
        super().setUp()
        self._raw = []
        self.addCleanup(lambda: [s.close() for s in self._raw])

    def test_http10_stream_is_close_delimited_and_exact(self):
        h = self.start_httpd(loc(self.bus_path, SSERetry="1234",
                                 SSEHeartbeat="0"))
        s, status, hdrs, body = self.raw10("/events?channel=a")
        self.assertRegex(status, r"^HTTP/1\.1 200 ")
        names = [l.split(":", 1)[0].lower() for l in hdrs]
        self.assertNotIn("transfer-encoding", names)
        self.assertNotIn("content-length", names)
        self.assertIn("content-type: text/event-stream; charset=utf-8",
                      [l.lower() for l in hdrs])
        body = self.read_exact(s, body, b"retry: 1234\n\n")
        self.wait_gauge(1)
        self.assertIn("raw)", self.detached_lines()[0])
        ids = [self.pub.publish("a", "e%d" % i) for i in range(3)]
        want = b"".join(("id: %s\ndata: e%d\n\n" % (eid, i)).encode()
                        for i, eid in enumerate(ids))
        body = self.read_exact(s, body, want)
        # the server ends it: a retry hint, then the connection closes;
        # no terminating chunk (there is no chunking), nothing else
        t = threading.Thread(target=h.graceful_stop, args=(40,))
        t.start()
        try:
            rest, eof = self.read_to_eof(s, 10)
        finally:
            t.join(45)
        self.assertTrue(eof, "connection not closed: %r" % rest)
        self.assertRegex(rest, rb"^retry: \d+\n\n$")

    def test_http10_resume_is_exact_and_client_close_frees_it(self):
        self.start_httpd(loc(self.bus_path, SSERetry="0",
                             SSEHeartbeat="0"))
        ids = [self.pub.publish("a", "r%d" % i) for i in range(4)]
        s, status, _, body = self.raw10("/events?channel=a",
                                        [("Last-Event-ID", ids[1])])
        self.assertRegex(status, r"^HTTP/1\.1 200 ")
        self.wait_gauge(1)
        ids.append(self.pub.publish("a", "r4"))
        want = b"".join(("id: %s\ndata: r%d\n\n" % (ids[i], i)).encode()
                        for i in (2, 3, 4))
        self.read_exact(s, body, want)
        s.close()
        self.wait_gauge(0)
        self.wait_gauge(0, "sse_streams_open")

    def test_half_close_ends_the_stream(self):
        # A client that sends FIN is gone, as for nginx (and nchan, whose
        # subscribers use ngx_http_test_reading): EventSource never
        # half-closes, and a stream to a half-closed peer would only find
        # out at the next failed write. Documented in README.
        h = self.start_httpd(loc(self.bus_path, SSEHeartbeat="0"))
        c = self.stream("/events?channel=a")
        self.wait_gauge(1)
        mark = h.error_log_mark()
        c.sock.shutdown(socket.SHUT_WR)
        self.wait_gauge(0)
        self.pub.publish("a", "after")
        self.assertTrue(c.read_to_end(5), "stream not closed")
        self.assertEqual(c.events, [])
        self.assertIn("ended (client closed)", h.error_log_since(mark))

    # -- SSEDetachedCoalesce

    def test_coalesce_sends_a_window_of_events_in_one_chunk(self):
        self.start_httpd(loc(self.bus_path, SSERetry="0", SSEHeartbeat="0")
                         + "SSEDetachedCoalesce 1000\n")
        c = self.client("/events?channel=a").open()
        self.wait_gauge(1)
        time.sleep(1.1)  # a quiet spell: the next event goes out at once
        e0 = self.pub.publish("a", "first")
        c.read_events(1)
        self.assertEqual(c.chunks[-1], ("id: %s\ndata: first\n\n" % e0)
                         .encode())
        n0 = len(c.chunks)
        t0 = time.monotonic()
        ids = [self.pub.publish("a", "w%d" % i) for i in range(3)]
        if time.monotonic() - t0 > 0.8:
            self.skipTest("publishing took too long to stay in one window")
        c.read_events(4, timeout=10)
        # the three arrived within the window after the first round: one
        # write, one chunk, in order
        self.assertEqual(c.chunks[n0:], [b"".join(
            ("id: %s\ndata: w%d\n\n" % (eid, i)).encode()
            for i, eid in enumerate(ids))])

    def test_coalesce_holds_an_event_at_most_the_window_from_when_seen(self):
        # W = 1000 ms. B at +0.3 s waits until +1.3 s, and C (+0.7 s) and
        # D (+1.1 s) join it: one chunk. ("At most once per window" would
        # have sent B and C at +1.0 s and D a window later.) After a quiet
        # spell longer than W an event goes out at once.
        self.start_httpd(loc(self.bus_path, SSERetry="0", SSEHeartbeat="0")
                         + "SSEDetachedCoalesce 1000\n")
        c = self.client("/events?channel=a").open()
        self.wait_gauge(1)
        time.sleep(1.1)
        t0 = time.monotonic()
        self.pub.publish("a", "A")
        c.read_events(1)
        self.assertLess(time.monotonic() - t0, 0.5, "quiet-spell event held")
        n0 = len(c.chunks)
        ids = []
        for at, data in ((0.3, "B"), (0.7, "C"), (1.1, "D")):
            time.sleep(max(0, t0 + at - time.monotonic()))
            ids.append(self.pub.publish("a", data))
        if time.monotonic() - t0 > 1.25:
            self.skipTest("publishing took too long to stay in one window")
        c.read_events(4, timeout=10)
        self.assertEqual(c.chunks[n0:], [b"".join(
            ("id: %s\ndata: %s\n\n" % (eid, d)).encode()
            for eid, d in zip(ids, "BCD"))])
        # sparser than the window: never held
        time.sleep(1.1)
        t1 = time.monotonic()
        self.pub.publish("a", "E")
        c.read_events(5)
        self.assertLess(time.monotonic() - t1, 0.5, "sparse event held")

    # -- io_uring sends

    @staticmethod
    def ring_sq_tail(pid):
        """SqTail of the child's io_uring instance, None if it has none."""
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) \
                        != "anon_inode:[io_uring]":
                    continue
                with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                    m = re.search(r"^SqTail:\s*(\d+)", f.read(), re.M)
            except OSError:
                continue
            return int(m.group(1)) if m else -1
        return None

    @staticmethod
    def kernel_allows_io_uring():
        # 0 (or no such sysctl, before 6.6): everyone; 1: only members of
        # kernel.io_uring_group (never www-data here); 2: nobody
        try:
            with open("/proc/sys/kernel/io_uring_disabled") as f:
                return f.read().strip() == "0"
        except OSError:
            return True

    def test_writes_go_through_io_uring_where_the_kernel_allows_it(self):
        h = self.start_httpd(loc(self.bus_path, SSEHeartbeat="0"))
        c = self.stream("/events?channel=a")
        self.wait_gauge(1)
        (pid,) = h.child_pids()
        before = self.ring_sq_tail(pid)
        ids = []
        for i in range(10):  # one at a time: one loop round each
            ids.append(self.pub.publish("a", "u%d" % i))
            c.read_events(i + 1)
        self.assertEqual([e.id for e in c.events], ids)
        log = h.error_log()
        if not self.kernel_allows_io_uring():
            self.assertIsNone(before)
            # says it uses sendmsg, and why (10598: built without liburing)
            self.assertRegex(log, "AH1059[68]")
            return
        self.assertNotIn("AH10598", log, "mod_sse was built without liburing "
                         "(apt-get install liburing-dev; configure again)")
        self.assertIn("sends through io_uring", log)
        self.assertIsNotNone(before, "no io_uring instance in the child")
        self.assertGreaterEqual(self.ring_sq_tail(pid) - before, 10)

    def test_kernel_refusing_io_uring_falls_back_to_sendmsg(self):
        # A real refusal: kernel.io_uring_disabled = 2 makes io_uring_setup
        # fail with EPERM for everyone (restored afterwards, whatever
        # happens).
        knob = "/proc/sys/kernel/io_uring_disabled"
        if not os.access(knob, os.W_OK):
            self.skipTest("%s is not writable (not root?): cannot make the "
                          "kernel refuse io_uring" % knob)
        with open(knob) as f:
            old = f.read().strip()
        try:
            with open(knob, "w") as f:
                f.write("2")
            h = self.stream_ten_events_without_a_ring("")
            notices = [l for l in h.error_log().splitlines()
                       if "AH10596" in l]
            self.assertEqual(len(notices), 1, h.error_log())
            self.assertIn("sending with sendmsg", notices[0])
        finally:
            with open(knob, "w") as f:
                f.write(old)

    def stream_ten_events_without_a_ring(self, server_conf):
        """Start httpd (+ server_conf), stream 10 events in order to one
        detached client and check that its child has no io_uring."""
        h = self.start_httpd(loc(self.bus_path, SSEHeartbeat="0")
                             + server_conf)
        c = self.stream("/events?channel=a")
        self.wait_gauge(1)
        ids = [self.pub.publish("a", "s%d" % i) for i in range(10)]
        c.read_events(10)
        self.assertEqual([e.id for e in c.events], ids)
        (pid,) = h.child_pids()
        self.assertIsNone(self.ring_sq_tail(pid))
        return h

    def test_io_uring_off_sends_with_sendmsg(self):
        h = self.stream_ten_events_without_a_ring("SSEDetachedIOUring Off\n")
        self.assertNotIn("sends through io_uring", h.error_log())

    # -- client going away

    def test_fin_and_rst_free_the_stream_without_writes(self):
        # No heartbeats and no events: only epoll can notice these.
        h = self.start_httpd(loc(self.bus_path, SSEHeartbeat="0"))
        c = self.stream("/events?channel=idle")
        self.wait_gauge(1)
        c.close()
        self._clients = []
        self.wait_gauge(0)
        time.sleep(1)
        (pid,) = h.child_pids()
        base = h.child_stats()[pid][1]
        cs = [self.stream("/events?channel=idle") for _ in range(20)]
        self.wait_gauge(20)
        self.assertGreaterEqual(h.child_stats()[pid][1], base + 20)
        mark = h.error_log_mark()
        close_half_with_rst(cs)
        self._clients = []
        self.wait_gauge(0)
        self.wait_gauge(0, "sse_streams_open")
        self.assertTrue(wait_for(lambda: h.child_stats()[pid][1] <= base,
                                 10), "descriptors not back to baseline: "
                        "%d -> %d" % (base, h.child_stats()[pid][1]))
        log = h.error_log_since(mark)
        self.assertEqual(log.count("ended (client closed)"), 10, log)
        self.assertEqual(log.count("ended (client reset)"), 10, log)

    def test_max_streams_counts_detached_streams(self):
        self.start_httpd(loc(self.bus_path) + "SSEMaxStreams 3\n")
        cs = [self.stream("/events?channel=a") for _ in range(3)]
        self.wait_gauge(3)
        c4 = self.client("/events?channel=a").open()
        self.assertEqual(c4.status, 503)
        cs[0].close()
        self.wait_gauge(2)
        c5 = self.stream("/events?channel=a")
        self.assertEqual(c5.status, 200)

    def test_end_of_stream_log_line(self):
        h = self.start_httpd(loc(self.bus_path))
        c = self.stream("/events?channel=a&channel=b")
        self.pub.publish("a", "1")
        self.pub.publish("b", "2")
        c.read_events(2)
        c.close()
        self.wait_gauge(0)
        lines = [l for l in h.error_log().splitlines() if "AH10585" in l]
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], r"detached stream 127\.0\.0\.1 "
                         r"/events\?channel=a&channel=b ended \(client "
                         r"closed\): channels a,b, \d+\.\d{3} s, \d+ bytes, "
                         r"2 events")

    # -- server going away

    def test_graceful_restart_ends_streams_promptly_and_resume_is_exact(self):
        h = self.start_httpd(loc(self.bus_path, SSERetry="1000",
                                 SSERetrySpread="5000"))
        cs = [self.stream("/events?channel=a") for _ in range(8)]
        self.wait_gauge(8)
        ids = [self.pub.publish("a", "before %d" % i) for i in range(3)]
        for c in cs:
            c.read_events(3)
        old = h.child_pids()
        t0 = time.monotonic()
        h.graceful()
        for c in cs:
            self.assertTrue(c.read_to_end(5), "stream did not end")
            self.assertTrue(c.terminated, "no terminating chunk")
        # "promptly": well before GracefulShutdownTimeout (30 s)
        self.assertLess(time.monotonic() - t0, 8)
        retries = [[v for k, v in c.items if k == "retry"][-1] for c in cs]
        for r in retries:
            self.assertTrue(1000 <= r <= 6000, retries)
        self.assertGreater(len(set(retries)), 1, "retry not spread: %r"
                           % retries)
        self.assertTrue(wait_for(lambda: not any(pid_alive(p) for p in old),
                                 15), "old child did not exit")
        ids += [self.pub.publish("a", "after %d" % i) for i in range(3)]
        c2 = self.stream("/events?channel=a",
                         headers={"Last-Event-ID": cs[0].events[-1].id})
        c2.read_events(3)
        self.assertEqual([e.id for e in cs[0].events + c2.events], ids)
        self.assertNotIn("scoreboard is full", h.error_log())
        self.assertNoCrash()

    def test_killed_child_loses_nothing_a_resume_cannot_recover(self):
        h = self.start_httpd(loc(self.bus_path))
        c = self.stream("/events?channel=a")
        ids = [self.pub.publish("a", "k%d" % i) for i in range(3)]
        c.read_events(3)
        for pid in h.child_pids():
            os.kill(pid, signal.SIGKILL)
        c.read_to_end(10)
        self.assertTrue(c.ended)
        self.assertFalse(c.terminated)
        ids += [self.pub.publish("a", "gone%d" % i) for i in range(3)]
        wait_for(lambda: h.child_pids(), 15)
        c2 = self.stream("/events?channel=a",
                         headers={"Last-Event-ID": c.events[-1].id})
        c2.read_events(3)
        self.assertEqual([e.id for e in c.events + c2.events], ids)

    def test_warns_about_settings_that_retire_children(self):
        h = self.start_httpd(loc(self.bus_path)
                             + "MaxConnectionsPerChild 1000\n")
        log = h.error_log()
        self.assertIn("AH10593", log)
        self.assertIn("MaxConnectionsPerChild 1000", log)
        # the harness config keeps MaxSpareThreads above MaxRequestWorkers
        self.assertNotIn("AH10594", log)


if __name__ == "__main__":
    unittest.main()
