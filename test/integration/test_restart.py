"""Streams across server restarts: on graceful restart, graceful-stop and
stop the stream tells the client to come back (retry:) and ends promptly;
the client resumes with its last id and loses nothing, because the bus
outlives httpd."""

import unittest

from harness import HttpdTestCase, location, wait_for, pid_alive


def loc(bus, **kw):
    kw.setdefault("SSEChannelAllow", '"*"')
    kw.setdefault("SSERetry", "1000")
    return location("/events", bus, **kw)


class RestartTest(HttpdTestCase):

    def _before_restart(self):
        c = self.stream("/events?channel=a")
        ids = [self.pub.publish("a", "before %d" % i) for i in range(3)]
        c.read_events(3)
        return c, ids

    def _assert_ended_with_retry(self, c):
        self._assert_ended(c)
        retries = [i for i, (k, _) in enumerate(c.items) if k == "retry"]
        self.assertGreaterEqual(len(retries), 2,
                                "no retry: line before the stream ended")
        # after the final retry line there is nothing but comments
        tail = [k for k, _ in c.items[retries[-1] + 1:]]
        self.assertNotIn("event", tail, c.items[-5:])

    def _assert_ended(self, c):
        self.assertTrue(c.read_to_end(10),
                        "stream did not end within 10 s of the restart")

    def _resume_and_check(self, c, all_ids):
        last = c.events[-1].id
        got_before = [e.id for e in c.events]
        c2 = self.stream("/events?channel=a",
                         headers={"Last-Event-ID": last})
        want_after = all_ids[all_ids.index(last) + 1:]
        if want_after:
            c2.read_events(len(want_after))
        c2.drain_quietly(0.5)
        got_after = [e.id for e in c2.events]
        self.assertEqual(got_after, want_after)
        self.assertEqual(got_before + got_after, all_ids,
                         "loss or duplicate across the restart")
        nid = self.pub.publish("a", "live after restart")
        c2.read_events(len(want_after) + 1)
        self.assertEqual(c2.events[-1].id, nid)

    def test_graceful_restart_ends_stream_and_resume_is_exact(self):
        h = self.start_httpd(loc(self.bus_path))
        c, ids = self._before_restart()
        old_children = h.child_pids()
        h.graceful()
        ids += [self.pub.publish("a", "during %d" % i) for i in range(3)]
        self._assert_ended_with_retry(c)
        ids += [self.pub.publish("a", "between %d" % i) for i in range(3)]
        # the old generation exits instead of lingering with its stream
        self.assertTrue(wait_for(lambda: not any(pid_alive(p)
                                                 for p in old_children),
                                 15),
                        "old child still alive after graceful restart")
        self._resume_and_check(c, ids)
        self.assertNotIn("scoreboard is full", h.error_log())
        self.assertNoCrash()

    def test_stop_and_start_resume_is_exact(self):
        h = self.start_httpd(loc(self.bus_path))
        c, ids = self._before_restart()
        self.assertTrue(h.stop(), "httpd did not stop")
        # Only "ended" here, no final retry: line. On `-k stop` httpd's MPM
        # closes every worker's socket itself (event.c signal_threads ->
        # close_worker_sockets, ST_UNGRACEFUL) before a module can write,
        # so a retry line on stop cannot be required. The client's own
        # reconnect (the retry it got at stream start) is what brings it
        # back, and the resume below must still be exact.
        self._assert_ended(c)
        ids += [self.pub.publish("a", "while down %d" % i) for i in range(4)]
        h.start()
        self._resume_and_check(c, ids)
        self.assertNoCrash()

    def test_graceful_stop_ends_stream_promptly(self):
        # GracefulShutdownTimeout is 30 s in the harness config; the stream
        # must end long before that, with a retry line.
        h = self.start_httpd(loc(self.bus_path))
        c, ids = self._before_restart()
        import threading
        done = {}
        t = threading.Thread(target=lambda: done.setdefault(
            "ok", h.graceful_stop(40)))
        t.start()
        try:
            self._assert_ended_with_retry(c)
        finally:
            t.join(45)
        self.assertTrue(done.get("ok"), "graceful-stop did not finish")

    def test_many_streams_all_end_on_graceful(self):
        h = self.start_httpd(loc(self.bus_path))
        cs = [self.stream("/events?channel=a") for _ in range(10)]
        eid = self.pub.publish("a", "to all")
        for c in cs:
            c.read_events(1)
        h.graceful()
        for c in cs:
            self._assert_ended_with_retry(c)
            self.assertEqual([e.id for e in c.events], [eid])


if __name__ == "__main__":
    unittest.main()
