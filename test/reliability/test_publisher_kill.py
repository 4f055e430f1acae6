"""Scenario 4 - publishers killed: `sse-pub stream` processes are SIGKILLed
at random moments (ci: a few hundred times, soak: thousands) while they
publish 1000 events/s of ~300-byte self-checking payloads and 100 clients
read. The bus is never wedged (a fresh `sse-pub publish` always completes
within its timeout, checked every 50 kills and at the end), no client ever
receives a torn or garbled frame (crc of every payload), no duplicate, and
every client receives exactly the events the bus holds (the gaps between
sequence numbers, if any, are the same for every client and match the bus:
a publisher killed while holding the lock leaves padding, not an event)."""

import random
import time

import rel
from harness import HttpdTestCase, location


class PublisherKillTest(HttpdTestCase):
    bus_capacity = "64M"    # holds the whole run: nothing is lapped

    def test_sigkilled_publishers_never_wedge_bus_nor_tear_frames(self):
        n, kills = rel.P("kill_clients"), rel.P("kill_count")
        h = rel.big_httpd(self, location("/events", self.bus_path,
                                         SSEChannel="k", SSEHeartbeat="5"),
                          n)
        fleet = rel.Fleet(h.port, "/events", n)
        fleet.open_all(60)
        pacer = rel.Pacer(self.bus_path, "k", rate=1000, pad=120).start()
        self.addCleanup(pacer.stop)
        rnd = random.Random(4)
        t0 = time.monotonic()
        wedge_checks = 0
        while pacer.kills < kills and time.monotonic() - t0 < 600:
            fleet.pump(rnd.uniform(0.002, 0.03))
            pacer.kill_publisher()
            if pacer.kills % 50 == 0:
                # the bus is not wedged: a new publisher gets through
                self.pub.publish("k", rel.payload(10 ** 9 + pacer.kills))
                wedge_checks += 1
        pacer.stop()
        self.pub.publish("k", rel.payload(2 * 10 ** 9))   # final marker
        info = self.pub.info()
        last_seq = int(info["head_seq"])
        fleet.until(lambda: all(c.last_seq == last_seq
                                for c in fleet.clients), 120,
                    "every client to reach the last event")
        dt = time.monotonic() - t0
        t = fleet.totals()
        per_client = {(c.events, c.gaps) for c in fleet.clients}
        rel.report("publisher_kill", clients=n, kills=pacer.kills,
                   publishers_started=pacer.restarts,
                   wedge_checks=wedge_checks, seconds=round(dt, 1),
                   lines_written=pacer.k, bus_events=last_seq,
                   recoveries=info.get("recoveries"),
                   events_per_client=sorted(per_client)[0][0],
                   gaps=t["gaps"], dups=t["dups"], bad=t["bad"],
                   crashes=len(h.crashes()))
        fleet.close_all()
        self.assertEqual(t["bad"], 0, "torn or garbled frames delivered")
        self.assertEqual(t["dups"], 0)
        self.assertEqual(len(per_client), 1,
                         "clients disagree on what the bus holds: %r"
                         % sorted(per_client)[:5])
        events, gaps = per_client.pop()
        self.assertEqual(events + gaps, last_seq - fleet.clients[0].first_seq
                         + 1)
        self.assertGreaterEqual(pacer.kills, kills)
        self.assertNoCrash()
