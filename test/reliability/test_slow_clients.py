"""Scenario 6 - slow clients: 1000 events/s x 2 KiB; ten clients stop
reading right after their headers (4 KiB receive buffer) while the others
(ci 40, soak 90) read. The stalled streams' memory stays bounded (PSS
growth during the run below one SSEBufferSize per stream plus a fixed
slack: no queue grows), the slow-client handling is applied and counted in
sse-metrics, and the readers get every event once (no gaps, no
duplicates). Latency of the readers is reported, not asserted.

What "applied" means for a client that stops reading altogether: its
socket send buffer (SO_SNDBUF = SSESlowClientLag / 2) fills and the
threaded stream's write blocks, so it never gets back to its lag check
(`skip`); SSEWriteTimeout then ends it (counted as
sse_streams_ended_total{reason="write_timeout"}). The test sets
SSEWriteTimeout 3 so that this happens within the run, and counts skipped
events, slow-client closes and write timeouts together: every stalled
stream must have been dealt with by one of them."""

import rel
import loadrun
from harness import HttpdTestCase, location

BUFFER = 64 * 1024
SLACK_KB = 8 * 1024      # allocator/page-cache noise of a 2-core box


class SlowClientTest(HttpdTestCase):
    bus_capacity = "64M"

    def test_stalled_clients_are_skipped_and_others_unaffected(self):
        fast, stalled = rel.P("slow_fast"), rel.P("slow_stalled")
        rate, secs = rel.P("slow_rate"), rel.P("slow_seconds")
        conf = location("/events", self.bus_path, SSEChannel="load",
                        SSEHeartbeat="5", SSEBufferSize="64k",
                        SSESlowClient="skip", SSESlowClientLag="1M",
                        SSEWriteTimeout="3") \
            + rel.metrics_location()
        h = rel.big_httpd(self, conf, fast + stalled)
        m0 = rel.metrics(h.port)
        run = loadrun.LoadRun(self, h.port, "/events", fast + stalled, secs,
                              rate, size=2048, slow=stalled, rcvbuf=4096)
        peak = {"pss_kb": 0}

        def track(u):
            if u["pss_kb"] > peak["pss_kb"]:
                peak.update(u)
        res = run.run(sample_bus=self.bus_path, on_sample=track)
        m1 = rel.metrics(h.port)
        def delta(k):
            return int(m1.get(k, 0) - m0.get(k, 0))
        skipped = delta("sse_events_skipped_total")
        wto = delta('sse_streams_ended_total{reason="write_timeout"}')
        slow_closed = delta('sse_streams_ended_total{reason="slow_client"}')
        growth = peak["pss_kb"] - run.before["pss_kb"]
        bound = (fast + stalled) * BUFFER // 1024 + SLACK_KB
        rel.report("slow_clients", readers=fast, stalled=stalled, rate=rate,
                   size=2048, seconds=secs, delivered=res["events"],
                   gaps=res["gaps"], dups=res["dups"], bad=res["bad"],
                   missing_at_end=res["missing_at_end"],
                   p50_ms=res["p50_us"] / 1000, p99_ms=res["p99_us"] / 1000,
                   max_ms=res["max_us"] / 1000, skipped_events=skipped,
                   ended_write_timeout=wto, ended_slow_client=slow_closed,
                   skip_comments=res["skip_comments"],
                   pss_open_kb=run.before["pss_kb"],
                   pss_peak_kb=peak["pss_kb"], growth_kb=growth,
                   bound_kb=bound, crashes=len(h.crashes()))
        self.assertEqual((res["gaps"], res["dups"], res["bad"]), (0, 0, 0),
                         "readers lost, repeated or got garbled events")
        self.assertEqual(res["missing_at_end"], 0)
        self.assertGreaterEqual(wto + slow_closed, stalled if not skipped
                                else 0, "stalled streams neither skipped "
                                "nor closed (write timeout / slow client)")
        self.assertLessEqual(growth, bound,
                             "memory grew beyond the per-stream buffers")
        self.assertNoCrash()
