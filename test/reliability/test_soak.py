"""Scenario 2 - soak: many concurrent streams (ci: 300 for 10 s; soak:
5000 for 60 s, the seed's `wrk -c5000 -d60s` case) with events flowing.
Every stream gets every event exactly once; PSS plateaus once all streams
are open (the slope of the second half of the run is reported; the PSS at
the end must be within 5 % of the PSS at the middle, since nothing is
allocated per event); afterwards the open-streams gauge goes back to 0.

MPM settings it needs (event MPM, one worker thread per stream): for
5000 streams ThreadsPerChild 500, ThreadLimit 500, StartServers 11,
ServerLimit 22 (a stopping generation fits), MaxRequestWorkers 5500;
`ulimit -n` >= 2 x streams for the client side here, httpd children need
one descriptor per stream (+ ~20)."""

import time

import loadrun
import rel
from harness import HttpdTestCase, location

PLATEAU_TOL = 0.05


class SoakTest(HttpdTestCase):
    bus_capacity = "16M"

    def test_many_streams_deliver_everything_with_flat_memory(self):
        streams, secs = rel.P("soak_streams"), rel.P("soak_seconds")
        rate = rel.P("soak_rate")
        tpc = 64 if streams <= 1000 else 500
        conf = location("/events", self.bus_path, SSEChannel="load",
                        SSEHeartbeat="5") + rel.metrics_location()
        h = rel.big_httpd(self, conf, streams, threads=tpc)
        base = rel.children_usage(h)
        run = loadrun.LoadRun(self, h.port, "/events", streams, secs, rate,
                              size=64)
        # smaps_rollup only while it runs (reading every mapping of
        # children with 500 threads each takes seconds under this load):
        # PSS here includes the bus's page cache (~2 kB/s of events).
        res = run.run(sample_bus=None)
        pss = [u["pss_kb"] for _, u in run.samples]
        mid = pss[len(pss) // 2] if pss else 0
        end = pss[-1] if pss else 0
        slope = loadrun.slope_kb_per_min(run.samples)
        gauge = rel.wait_streams_open(h.port, 0, 60)
        time.sleep(3)
        after = rel.children_usage(h)
        rel.report("soak", streams=streams, seconds=secs, rate=rate,
                   mpm=dict(ThreadsPerChild=tpc,
                            children=len(base["children"])),
                   events_per_stream=run.count, delivered=res["events"],
                   gaps=res["gaps"], dups=res["dups"], bad=res["bad"],
                   failed=res["failed"], non200=res["non200"],
                   missing_at_end=res["missing_at_end"],
                   p50_ms=res["p50_us"] / 1000, p99_ms=res["p99_us"] / 1000,
                   pss_base_kb=base["pss_kb"], pss_open_kb=run.before["pss_kb"],
                   pss_mid_kb=mid, pss_end_kb=end,
                   slope_kb_per_min=slope, samples=len(run.samples),
                   pss_after_close_kb=after["pss_kb"],
                   threads=run.before["threads"], fds_open=run.before["fds"],
                   fds_after=after["fds"], gauge_after=gauge,
                   crashes=len(h.crashes()))
        self.assertEqual((res["failed"], res["non200"]), (0, 0))
        self.assertEqual((res["gaps"], res["dups"], res["bad"]), (0, 0, 0))
        self.assertEqual(res["missing_at_end"], 0,
                         "streams that did not get every event")
        self.assertEqual(res["events"], streams * run.count)
        self.assertLessEqual(end, mid * (1 + PLATEAU_TOL),
                             "PSS still growing: mid %d kB, end %d kB"
                             % (mid, end))
        self.assertEqual(gauge, 0)
        self.assertNoCrash()
