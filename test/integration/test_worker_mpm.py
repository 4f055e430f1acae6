"""The basic delivery path under the worker MPM (the module must not rely
on event-MPM-only behaviour)."""

import unittest

from harness import HttpdTestCase, location


class WorkerMpmTest(HttpdTestCase):

    def test_events_delivered_under_worker_mpm(self):
        self.start_httpd(location("/events", self.bus_path,
                                  SSEChannelAllow='"*"'), mpm="worker")
        c = self.stream("/events?channel=a&channel=b")
        ids = [self.pub.publish(ch, "w %d" % i)
               for i, ch in enumerate(["a", "b", "a"])]
        self.pub.publish("c", "not mine")
        c.read_events(3)
        c.drain_quietly(0.3)
        self.assertEqual([e.id for e in c.events], ids)
        self.assertEqual([e.data for e in c.events], ["w 0", "w 1", "w 2"])

    def test_graceful_restart_under_worker_mpm_ends_stream(self):
        h = self.start_httpd(location("/events", self.bus_path,
                                      SSEChannelAllow='"*"', SSERetry="500"),
                             mpm="worker")
        c = self.stream("/events?channel=a")
        h.graceful()
        self.assertTrue(c.read_to_end(10), "stream did not end on graceful")
        self.assertEqual([k for k, _ in c.items].count("retry"), 2,
                         c.items)


if __name__ == "__main__":
    unittest.main()
