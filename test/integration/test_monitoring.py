"""Monitoring: the statistics shared by all children (mod_sse/sse_stats.h),
served as Prometheus text by `SetHandler sse-metrics` and as an SSE section
of mod_status's server-status (HTML and ?auto).

The counters are checked against what the clients of a scripted scenario
actually received: N streams, M events, a closed and a reset client, a
slow client that gets skipped, a stale resume, 503s, and a graceful restart
that must not lose the totals. Every wait is bounded."""

import os
import re
import shutil
import subprocess
import time
import unittest

from harness import (HttpdTestCase, SsePub, location, simple_request,
                     wait_for, REPO)

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOT_DIR = os.path.join(REPO, "test", "browser", "out")

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prom(text):
    """{(name, ((label, value), ...)): float} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError("not a sample line: %r" % line)
        labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def parse_auto(text):
    """?auto body -> {key: value}. mod_status's conventions: the first line
    is the server's host name alone, then `Key: value` lines (some of
    mod_status's own values may be empty). Every line mod_sse adds (keys
    starting with SSE) must be exactly `Key: value` with a non-empty value
    and no space in the key."""
    lines = text.splitlines()
    d = {}
    for n, line in enumerate(lines):
        if line == "" or (n == 0 and ":" not in line):
            continue
        if line.startswith("SSE"):
            m = re.fullmatch(r"(SSE[A-Za-z0-9]+): (\S.*)", line)
            if not m:
                raise AssertionError("mod_sse ?auto line is not `Key: value`:"
                                     " %r" % line)
        else:
            m = re.fullmatch(r"([A-Za-z][A-Za-z0-9 _-]*):(?: (.*))?", line)
            if not m:
                raise AssertionError("?auto line is not `Key: value`: %r"
                                     % line)
        if m.group(1) in d:
            raise AssertionError("?auto key %r twice" % m.group(1))
        d[m.group(1)] = m.group(2) or ""
    return d


class Metrics:
    def __init__(self, text):
        self.text = text
        self.samples = parse_prom(text)

    def get(self, name, **labels):
        key = (name, tuple(sorted(labels.items())))
        if key not in self.samples:
            raise AssertionError("no sample %s%r in:\n%s" % (
                name, labels, self.text))
        return self.samples[key]

    def ended(self, reason):
        return self.get("sse_streams_ended_total", reason=reason)

    def hist_count(self, status="ok"):
        return self.get("sse_flush_duration_seconds_count", status=status)


def conf(bus, small_bus, **kw):
    kw.setdefault("SSEChannelAllow", '"*"')
    kw.setdefault("SSEHeartbeat", "0")   # no heartbeat flushes to count
    kw.setdefault("SSERetry", "1000")
    return (location("/events", bus, **kw)
            + location("/slow", bus, SSEChannelAllow='"*"', SSEHeartbeat="0",
                       SSESlowClient="skip", SSESlowClientLag="256k",
                       SSEWriteTimeout="60")
            + location("/small", small_bus, SSEChannelAllow='"*"',
                       SSEHeartbeat="0")
            + location("/nobus", bus + ".missing", SSEChannelAllow='"*"')
            + '<Location "/metrics">\n    SetHandler sse-metrics\n'
              '</Location>\n'
            + '<Location "/metrics-private">\n    SetHandler sse-metrics\n'
              '    Require ip 192.0.2.1\n</Location>\n'
            + '<Location "/server-status">\n    SetHandler server-status\n'
              '</Location>\nExtendedStatus On\n')


class MonitoringTest(HttpdTestCase):
    bus_capacity = "32M"
    mpm = "event"

    def setUp(self):
        super().setUp()
        self.small_path = os.path.join(self.tmp, "small.bus")
        self.small = SsePub(self.small_path)
        self.small.create(capacity="64k")

    def start(self, extra=""):
        return self.start_httpd(extra + conf(self.bus_path, self.small_path),
                                modules=["status"], mpm=self.mpm)

    def get(self, path):
        head, body = simple_request(self.httpd.port, path)
        return head, body.decode("utf-8")

    def metrics(self):
        head, body = self.get("/metrics")
        self.assertEqual(head.status, 200, body)
        return Metrics(body)

    def wait_metrics(self, pred, timeout=15, what="metrics condition"):
        last = [None]

        def ok():
            last[0] = self.metrics()
            return pred(last[0])
        if not wait_for(ok, timeout, 0.2):
            self.fail("timed out waiting for %s; last scrape:\n%s"
                      % (what, last[0].text if last[0] else None))
        return last[0]

    # ------------------------------------------------------------ format

    def test_metrics_headers_and_promtool_check_passes(self):
        self.start()
        c = self.stream("/events?channel=a")
        self.pub.publish("a", "one")
        c.read_events(1)
        head, body = self.get("/metrics")
        self.assertEqual(head.status, 200)
        self.assertEqual(head.get("Content-Type"),
                         "text/plain; version=0.0.4; charset=utf-8")
        r = subprocess.run([PROMTOOL, "check", "metrics"],
                           input=body.encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        self.assertEqual((r.returncode, r.stdout.decode()), (0, ""),
                         "promtool check metrics complained; body:\n" + body)
        # every family has HELP and TYPE; every name has the sse_ prefix
        helps = set(re.findall(r"^# HELP (\S+) ", body, re.M))
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", body, re.M))
        self.assertEqual(helps, set(types))
        for name, typ in types.items():
            self.assertTrue(name.startswith("sse_"), name)
            if typ == "counter":
                self.assertTrue(name.endswith("_total"), name)
        m = Metrics(body)
        self.assertEqual(m.get("sse_bus_up", bus=self.bus_path), 1)
        info = self.pub.info()
        self.assertEqual(m.get("sse_bus_head_sequence", bus=self.bus_path),
                         info.get("head_seq"))
        self.assertEqual(m.get("sse_bus_up", bus=self.bus_path + ".missing"),
                         0)

    def test_metrics_refuses_post_and_honours_require(self):
        self.start()
        head, _ = simple_request(self.httpd.port, "/metrics", method="POST",
                                 body=b"x")
        self.assertEqual(head.status, 405)
        head, _ = simple_request(self.httpd.port, "/metrics-private")
        self.assertEqual(head.status, 403)

    # ---------------------------------------------------------- scenario

    def test_counters_follow_a_scripted_scenario(self):
        N, M = 4, 6
        h = self.start()
        m0 = self.metrics()
        self.assertEqual(m0.get("sse_streams_open"), 0)
        self.assertEqual(m0.get("sse_streams_started_total"), 0)

        # N streams, M events, each event read by all before the next, so
        # each event is exactly one flush per stream (plus the retry flush).
        cs = [self.stream("/events?channel=a") for _ in range(N)]
        for i in range(M):
            self.pub.publish("a", "event %d" % i)
            for c in cs:
                c.read_events(i + 1)
        wire = sum(len(ch) for c in cs for ch in c.chunks)
        m = self.wait_metrics(
            lambda m: m.get("sse_events_sent_total") == N * M, 5,
            "events_sent == N*M")
        self.assertEqual(m.get("sse_streams_open"), N)
        self.assertEqual(m.get("sse_streams_started_total"), N)
        self.assertEqual(m.get("sse_flushes_total"), N * (M + 1))
        self.assertEqual(m.get("sse_sent_bytes_total"), wire)
        self.assertEqual(m.hist_count("ok"), m.get("sse_flushes_total"))
        self.assertEqual(m.hist_count("error"), 0)

        # One client closes cleanly, one resets: both are noticed when
        # the next events are written to them.
        cs[0].close()
        cs[1].rst_close()
        for i in range(20):
            self.pub.publish("a", "poke %d" % i)
            m = self.metrics()
            if (m.ended("client_closed") + m.ended("client_reset")) >= 2:
                break
            time.sleep(0.1)
        self.assertEqual(m.ended("client_closed") + m.ended("client_reset"),
                         2, m.text)
        self.assertGreaterEqual(m.ended("client_reset"), 1,
                                "the RST client was not counted as reset")
        # The end reason is counted when the write fails; the open gauge
        # drops in the request pool's cleanup, a moment later.
        m = self.wait_metrics(lambda m: m.get("sse_streams_open") == N - 2,
                              what="open streams back to N - 2")
        self.assertEqual(m.ended("client_closed") + m.ended("client_reset"),
                         2, m.text)
        live = list(cs[2:])
        for c in live:
            c.read_events(M + i + 1)

        # A stale resume on a small bus: the "missed N" comment and the
        # counter agree exactly.
        first = self.small.publish("s", "first")
        self.small.stream_lines("s", ["x" * 500] * 400)   # > 64k: wraps
        before = self.metrics()
        r = self.stream("/small?channel=s",
                        headers={"Last-Event-ID": first})
        r.read_until(lambda c: any(v.startswith("missed ")
                                   for v in c.comments), 10,
                     "a missed comment")
        missed = int([v for v in r.comments
                      if v.startswith("missed ")][0].split()[1])
        self.assertGreater(missed, 0)
        after = self.wait_metrics(
            lambda m: m.get("sse_resumes_total")
            == before.get("sse_resumes_total") + 1, 5, "resumes + 1")
        self.assertEqual(after.get("sse_events_missed_total")
                         - before.get("sse_events_missed_total"), missed)
        # r stays open: with no heartbeat and no more events on its
        # channel, a close would go unnoticed; the restart ends it.
        live.append(r)

        # 503 for a missing bus.
        head, _ = simple_request(h.port, "/nobus?channel=a")
        self.assertEqual(head.status, 503)
        m = self.metrics()
        self.assertEqual(m.get("sse_rejected_total", reason="no_bus"), 1)

        # Graceful restart: the remaining streams end (server stopping),
        # the children are replaced, and no total goes backwards.
        m = self.wait_metrics(
            lambda m: m.get("sse_streams_open") == len(live), 10,
            "only the live streams open")
        old = m
        old_children = h.child_pids()
        h.graceful()
        for c in live:
            self.assertTrue(c.read_to_end(10), "stream did not end")
        m = self.wait_metrics(
            lambda m: m.ended("server_stopping") == len(live)
            and m.get("sse_streams_open") == 0, 15,
            "streams ended by the restart")
        self.assertTrue(wait_for(lambda: not set(h.child_pids())
                                 & set(old_children), 15),
                        "old children still there")
        m = self.metrics()
        for name in ("sse_streams_started_total", "sse_events_sent_total",
                     "sse_events_missed_total", "sse_resumes_total"):
            self.assertEqual(m.get(name), old.get(name),
                             "%s changed across graceful restart" % name)
        for name in ("sse_sent_bytes_total", "sse_flushes_total"):
            self.assertGreaterEqual(m.get(name), old.get(name), name)
        self.assertEqual(m.ended("client_closed") + m.ended("client_reset"),
                         2)
        self.assertEqual(m.get("sse_rejected_total", reason="no_bus"), 1)
        self.assertEqual(m.hist_count("ok"), m.get("sse_flushes_total"))
        self.assertNoCrash()

    def test_slow_client_skips_are_counted_exactly(self):
        self.start()
        c = self.stream("/slow?channel=big", rcvbuf=4096, timeout=30)
        payload = "p" * 7995
        self.pub.stream_lines("big", ["%04d:%s" % (i, payload)
                                      for i in range(1500)])
        time.sleep(1.0)
        c.read_until(lambda c: any(v.startswith("skipped ")
                                   for v in c.comments), 60,
                     "a skipped comment")
        live = self.pub.publish("big", "live")
        c.read_until(lambda c: any(e.id == live for e in c.events), 20,
                     "the live event")
        skipped = sum(int(v.split()[1]) for v in c.comments
                      if v.startswith("skipped "))
        m = self.metrics()
        self.assertEqual(m.get("sse_events_skipped_total"), skipped)
        self.assertEqual(m.get("sse_events_sent_total"), len(c.events))

    def test_stream_limit_503_is_counted(self):
        self.start("SSEMaxStreams 2\n")
        self.stream("/events?channel=a")
        self.stream("/events?channel=a")
        head, _ = simple_request(self.httpd.port, "/events?channel=a")
        self.assertEqual(head.status, 503)
        m = self.metrics()
        self.assertEqual(m.get("sse_rejected_total", reason="stream_limit"),
                         1)
        self.assertEqual(m.get("sse_streams_open"), 2)

    # ------------------------------------------------------ Redis relay

    def write_relay_status(self, text):
        path = self.bus_path + ".relay-status"
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.chmod(path + ".tmp", 0o644)
        os.rename(path + ".tmp", path)   # as sse-relay does

    def relay_status_text(self, updated, connected=1, lag_events="7"):
        return ("pid=4242\nredis=127.0.0.1:6379\nstream_key=sse\n"
                "connected=%d\ncursor=1700000000000-3\n"
                "redis_last_id=1700000000250-0\nlag_ms=250\n"
                "events_relayed=1234\nevents_skipped=0\ngaps=2\n"
                "reconnects=3\nid_repairs=1\ndown_since=0\nupdated=%d\n"
                "lag_events=%s\nstale_after_ms=7000\n"
                "some_future_field=whatever\n"
                % (connected, updated, lag_events))

    def check_promtool(self, body):
        r = subprocess.run([PROMTOOL, "check", "metrics"],
                           input=body.encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        self.assertEqual((r.returncode, r.stdout.decode()), (0, ""),
                         "promtool check metrics complained; body:\n" + body)

    def test_relay_status_is_shown_in_metrics_status_and_info(self):
        self.start()
        # no status file: no relay series at all
        m = self.metrics()
        self.assertNotIn("sse_relay_", m.text)
        self.write_relay_status(self.relay_status_text(int(time.time())))
        head, body = self.get("/metrics")
        self.check_promtool(body)
        m = Metrics(body)
        b = self.bus_path
        self.assertEqual(m.get("sse_relay_up", bus=b), 1)
        self.assertEqual(m.get("sse_relay_lag_events", bus=b), 7)
        self.assertEqual(m.get("sse_relay_lag_seconds", bus=b), 0.25)
        self.assertEqual(m.get("sse_relay_gaps_total", bus=b), 2)
        self.assertEqual(m.get("sse_relay_reconnects_total", bus=b), 3)
        self.assertEqual(m.get("sse_relay_id_repairs_total", bus=b), 1)
        self.assertEqual(m.get("sse_relay_events_total", bus=b), 1234)
        self.assertLessEqual(m.get("sse_relay_status_age_seconds", bus=b), 5)
        # only the bus that has a relay gets series
        self.assertNotIn('sse_relay_up{bus="%s.missing"}' % b, m.text)
        d = parse_auto(self.get("/server-status?auto")[1])
        i = [k for k, v in d.items()
             if re.fullmatch(r"SSEBus\d+Path", k) and v == b][0][6:-4]
        self.assertEqual(d["SSEBus%sRelayUp" % i], "1")
        self.assertEqual(d["SSEBus%sRelayLagEvents" % i], "7")
        self.assertEqual(d["SSEBus%sRelayGaps" % i], "2")
        self.assertEqual(d["SSEBus%sRelayCursor" % i], "1700000000000-3")
        self.assertIn("<h3>Redis relays</h3>", self.get("/server-status")[1])
        info = self.pub.info()["relay"]
        self.assertEqual((info["connected"], info["stale"],
                          info["lag_events"], info["gaps"]),
                         (True, False, 7, 2))

        # a status nobody rewrote for a minute: stale, the relay is down
        self.write_relay_status(self.relay_status_text(
            int(time.time()) - 60, lag_events=""))
        head, body = self.get("/metrics")
        self.check_promtool(body)
        m = Metrics(body)
        self.assertEqual(m.get("sse_relay_up", bus=b), 0)
        self.assertGreaterEqual(m.get("sse_relay_status_age_seconds", bus=b),
                                60)
        self.assertNotIn("sse_relay_lag_events{", m.text)  # unknown
        d = parse_auto(self.get("/server-status?auto")[1])
        self.assertEqual(d["SSEBus%sRelayStale" % i], "1")
        self.assertNotIn("SSEBus%sRelayLagEvents" % i, d)
        self.assertTrue(self.pub.info()["relay"]["stale"])
        self.assertIn("STALE", self.pub.run("info", b)[1])

        # garbage is not shown, and breaks nothing
        for junk in ("x" * 5000 + "\n",                     # too big
                     self.relay_status_text(int(time.time()))
                     .replace("gaps=2", "gaps=-2"),           # bad number
                     self.relay_status_text(int(time.time()))
                     .replace("cursor=1700000000000-3", "cursor=<b>"),
                     "pid=1\nconnected=1\n",                  # no updated
                     "\x00\xff" * 100):
            self.write_relay_status(junk)
            head, body = self.get("/metrics")
            self.assertEqual(head.status, 200)
            self.assertNotIn("sse_relay_", body, repr(junk[:60]))
            self.check_promtool(body)
            self.assertNotIn("Relay", self.get("/server-status?auto")[1])
            self.assertIsNone(self.pub.info()["relay"])
        self.assertNoCrash()

    def test_resume_before_the_oldest_ordered_event_sends_a_counted_reset(
            self):
        self.start()
        for i in range(3):
            self.pub.publish("a", "ev%d" % i, id="1700000000100-%d" % i)
        # before the oldest ordered event held: what came between is gone
        c = self.stream("/events?channel=a",
                        headers={"Last-Event-ID": "1700000000050-0"})
        c.read_events(4)
        self.assertEqual([e.type for e in c.events],
                         ["sse-reset", "message", "message", "message"])
        # resuming from an event the bus holds is exact: no reset
        c2 = self.stream("/events?channel=a",
                         headers={"Last-Event-ID": "1700000000100-0"})
        c2.read_events(2)
        self.assertEqual([e.data for e in c2.events], ["ev1", "ev2"])
        m = self.metrics()
        self.assertEqual(m.get("sse_resets_total"), 1)
        self.assertEqual(m.get("sse_resumes_total"), 2)
        self.assertEqual(parse_auto(self.get("/server-status?auto")[1])
                         ["SSEResets"], "1")

    # ---------------------------------------------------------- mod_status

    def test_status_auto_lines_parse_and_match_metrics(self):
        self.start()
        c = self.stream("/events?channel=a")
        self.pub.publish("a", "x")
        c.read_events(1)
        head, body = self.get("/server-status?auto")
        self.assertEqual(head.status, 200)
        d = parse_auto(body)
        self.assertEqual(d["SSEOpenStreams"], "1")
        self.assertEqual(d["SSEEventsSent"], "1")
        self.assertEqual(d["SSEStatsShared"], "1")
        m = self.metrics()
        self.assertEqual(int(d["SSEFlushes"]), m.get("sse_flushes_total"))
        self.assertIn(self.bus_path, [v for k, v in d.items()
                                      if re.fullmatch(r"SSEBus\d+Path", k)])

    def test_status_html_has_sse_section_and_renders(self):
        self.start()
        c = self.stream("/events?channel=a")
        self.pub.publish("a", "x")
        c.read_events(1)
        head, body = self.get("/server-status")
        self.assertEqual(head.status, 200)
        self.assertIn("Server-Sent Events (mod_sse)", body)
        self.assertRegex(body, r"<th align=\"left\">open streams</th>"
                               r"<td>1</td>")
        self.assertIn("<h3>Per child</h3>", body)
        # the child found its scoreboard slot (no shared overflow slot)
        self.assertNotIn("<td>overflow</td>", body)
        self.assertRegex(body, r"<tr><td>\d+</td><td>%d</td>"
                         % self.httpd.child_pids()[0])
        self.assertIn(self.bus_path, body)
        if not CHROMIUM:
            return  # the HTML checks above are the test; the shot is extra
        os.makedirs(SHOT_DIR, exist_ok=True)
        shot = os.path.join(SHOT_DIR, "server-status-%s.png" % self.mpm)
        if os.path.exists(shot):
            os.unlink(shot)
        prof = os.path.join(self.tmp, "chromium-profile")
        r = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--user-data-dir=" + prof, "--window-size=1200,1600",
             "--screenshot=" + shot,
             "http://127.0.0.1:%d/server-status" % self.httpd.port],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertTrue(os.path.exists(shot) and os.path.getsize(shot) > 0,
                        "chromium made no screenshot: %s"
                        % r.stdout.decode(errors="replace")[-2000:])


class WorkerMpmMonitoringTest(MonitoringTest):
    """The same figures under the worker MPM (slot lookup is MPM-agnostic:
    the child's pid in the scoreboard)."""

    mpm = "worker"

    # the scenario and the format do not depend on the MPM; one stream
    # test and the HTML check are enough here
    test_counters_follow_a_scripted_scenario = None
    test_metrics_refuses_post_and_honours_require = None
    test_slow_client_skips_are_counted_exactly = None
    test_status_auto_lines_parse_and_match_metrics = None
    test_stream_limit_503_is_counted = None
    test_relay_status_is_shown_in_metrics_status_and_info = None
    test_resume_before_the_oldest_ordered_event_sends_a_counted_reset = None


if __name__ == "__main__":
    unittest.main()
