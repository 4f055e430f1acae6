"""Scenario 3 - restart and stop under load: N clients (ci 200, soak 1000)
follow one channel while a publisher writes 200 events/s; httpd goes
through several `-k graceful`, then `graceful-stop` + start, then SIGTERM
to the parent + start. Clients reconnect as an EventSource does (after the
server ends the stream or while the port is closed, with Last-Event-ID).
At the end every client holds every event published after it first
connected, exactly once: 0 lost, 0 duplicated, 0 garbled (each payload
carries its own crc)."""

import os
import signal
import time

import rel
from harness import HttpdTestCase, location, pid_alive, wait_for


class RestartUnderLoadTest(HttpdTestCase):
    bus_capacity = "16M"    # holds the whole run: resume is always exact

    def test_graceful_stop_and_sigterm_under_load_lose_nothing(self):
        n, rate = rel.P("restart_clients"), rel.P("restart_rate")
        gracefuls = rel.P("restart_gracefuls")
        conf = location("/events", self.bus_path, SSEChannel="r",
                        SSEHeartbeat="5", SSERetry="300")
        h = rel.big_httpd(self, conf, n)
        fleet = rel.Fleet(h.port, "/events?x", n, reconnect=True,
                          retry_s=0.3)
        fleet.open_all(timeout=120)
        pacer = rel.Pacer(self.bus_path, "r", rate=rate).start()
        self.addCleanup(pacer.stop)
        events = []
        t0 = time.monotonic()
        fleet.pump(2)
        for i in range(gracefuls):
            h.graceful(timeout=60)
            events.append("graceful@%.1f" % (time.monotonic() - t0))
            fleet.pump(2)
        # graceful-stop, then start again
        ok = h.graceful_stop(timeout=60)
        self.assertTrue(ok, "graceful-stop did not finish within 60 s")
        events.append("graceful-stop@%.1f" % (time.monotonic() - t0))
        fleet.pump(1)
        h.start(timeout=60)
        events.append("start@%.1f" % (time.monotonic() - t0))
        fleet.pump(3)
        # SIGTERM to the parent, then start again
        pid = h.pid
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(pid), 60)
        self.assertFalse(pid_alive(pid), "httpd parent alive 60 s after "
                         "SIGTERM")
        events.append("SIGTERM@%.1f" % (time.monotonic() - t0))
        fleet.pump(1)
        h.pid = None
        h.start(timeout=60)
        events.append("start@%.1f" % (time.monotonic() - t0))
        fleet.pump(3)
        pacer.stop()
        last_k = pacer.k - 1
        # everything published is delivered to everyone
        last_seq = int(self.pub.info()["head_seq"])
        fleet.until(lambda: all(c.last_seq == last_seq
                                for c in fleet.clients), 120,
                    "every client to reach the last event %d" % last_seq)
        dt = time.monotonic() - t0
        t = fleet.totals()
        lost = sum(c.gaps for c in fleet.clients)
        short = [c.idx for c in fleet.clients
                 if c.events != last_seq - c.first_seq + 1]
        rel.report("restart", clients=n, rate=rate, sequence=events,
                   seconds=round(dt, 1), published=last_k + 1,
                   events_delivered=t["events"], lost=lost, dups=t["dups"],
                   bad=t["bad"], reconnects=t["connects"] - n,
                   connect_errors=fleet.connect_errors,
                   crashes=len(h.crashes()))
        fleet.close_all()
        self.assertEqual((lost, t["dups"], t["bad"]), (0, 0, 0),
                         "lost / duplicated / garbled events")
        self.assertEqual(short, [], "clients missing events at the end")
        self.assertGreaterEqual(t["connects"] - n, n * 2,
                                "clients did not go through the restarts")
        self.assertNoCrash()
