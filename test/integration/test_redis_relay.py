"""Several hosts fed by one Redis stream (issue 7): `sse-pub --redis`
publishes with XADD, one `sse-relay` per host copies the stream into that
host's bus, and each host's httpd serves its own bus.

Per test: a fresh stream on a redis-server started for the class (loopback
port, temp dir, no persistence); two or three hosts, each with its own bus,
relay and httpd. What every scenario asserts:
  - on every bus, ordered ids strictly increase and none repeats;
  - an id carries the same event on every host, and the buses hold exactly
    what XRANGE on Redis holds (gap markers, event "sse-reset", aside);
  - a client that moves between hosts with Last-Event-ID receives exactly
    the XRANGE reference, or an "sse-reset" event exactly where a gap is.

Redis is spoken to with a small RESP client over a socket (stdlib only).
A missing redis-server or sse-relay fails the tests (never a skip: CI must
test this); build/install-deps.sh --test installs redis-server and
libhiredis-dev.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
import unittest

from harness import (BUILD_DIR, Httpd, HttpdTestCase, SseClient, SsePub,
                     check_prerequisites, free_port, location, make_tmpdir,
                     wait_for)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
STREAM = "sse"
RESET = "sse-reset"


def relay_path():
    return os.environ.get("SSE_RELAY") or os.path.join(BUILD_DIR, "sse-relay")


# ------------------------------------------------------------------ Redis

class RespError(Exception):
    pass


class Resp:
    """A minimal blocking RESP2 client (one connection, one command at a
    time, every read with a timeout)."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.f = self.sock.makefile("rb")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass

    def cmd(self, *args):
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(parts))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RespError("unexpected RESP type %r" % t)


class RedisServer:
    """redis-server on a free loopback port in its own dir, no persistence,
    started and stopped by pid."""

    def __init__(self, root):
        self.root = root
        self.port = free_port()
        self.proc = None

    @property
    def url(self):
        return "redis://127.0.0.1:%d/" % self.port

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.root,
             "--logfile", os.path.join(self.root, "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        wait_for(self.pings, 15, what="redis-server answering PING")
        if not self.pings():
            raise AssertionError("redis-server did not start on port %d"
                                 % self.port)

    def pings(self):
        try:
            r = Resp(self.port, timeout=2)
            try:
                return r.cmd("PING") == "PONG"
            finally:
                r.close()
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def cmd(self, *args):
        r = Resp(self.port)
        try:
            return r.cmd(*args)
        finally:
            r.close()

    def xrange(self):
        """The reference: [(id, event or None, data)] in stream order."""
        out = []
        for eid, kv in self.cmd("XRANGE", STREAM, "-", "+") or []:
            f = dict(zip(kv[0::2], kv[1::2]))
            ev = f.get(b"e")
            out.append((eid.decode(), ev.decode() if ev else None,
                        f.get(b"d", b"").decode()))
        return out


# ------------------------------------------------------------------ hosts

def ord_key(eid):
    ms, seq = eid.split("-")
    return (int(ms), int(seq))


def parse_frames(text):
    """sse-pub tail output -> [(id, event or None, data)]."""
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        eid, ev, data = None, None, []
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name == "id":
                eid = value
            elif name == "event":
                ev = value
            elif name == "data":
                data.append(value)
        out.append((eid, ev, "\n".join(data)))
    return out


class Host:
    """One web host: its own bus, sse-relay and httpd."""

    def __init__(self, test, name, redis, capacity="1M"):
        self.test, self.name, self.redis = test, name, redis
        self.dir = os.path.join(test.tmp, name)
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.bus = os.path.join(self.dir, "main.bus")
        self.pub = SsePub(self.bus)
        self.pub.create(capacity=capacity)
        self.relay = None
        self.httpd = Httpd(os.path.join(self.dir, "httpd"),
                           extra=location("/events", self.bus,
                                          SSEChannelAllow='"*"')
                           + '<Location "/metrics">\n'
                             '    SetHandler sse-metrics\n</Location>\n')

    def start(self):
        self.start_relay()
        self.httpd.start()
        return self

    def start_relay(self):
        log = open(os.path.join(self.dir, "relay.log"), "ab")
        self.relay = subprocess.Popen(
            [relay_path(), self.bus, "--redis", self.redis.url,
             "--block-ms", "200", "--batch", "500"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()

    def signal_relay(self, sig):
        if self.relay and self.relay.poll() is None:
            os.kill(self.relay.pid, sig)

    def stop_relay(self, sig=signal.SIGTERM):
        if not self.relay:
            return
        stop_process(self.relay, sig)
        self.relay = None

    def stop(self):
        self.stop_relay()
        self.httpd.stop()

    def status(self):
        st = {}
        try:
            with open(self.bus + ".relay-status") as f:
                for line in f:
                    k, _, v = line.rstrip("\n").partition("=")
                    st[k] = v
        except OSError:
            pass
        return st

    def info(self):
        """`sse-pub info --json` of the bus (with the relay's state)."""
        import json
        return json.loads(self.pub.run("info", "--json", self.bus)[1])

    def metric(self, name):
        """A sample of this host's /metrics without labels, as a number."""
        from harness import simple_request
        head, body = simple_request(self.httpd.port, "/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError("no %s in /metrics:\n%s" % (name, body))

    def relay_log(self):
        try:
            with open(os.path.join(self.dir, "relay.log")) as f:
                return f.read()
        except OSError:
            return ""

    def events(self):
        """Everything the bus holds: [(id, event, data)]."""
        _, out, _ = self.pub.run("tail", self.bus, "--oldest", "--timeout",
                                 "0.3", timeout=60)
        return parse_frames(out)

    def client(self, channels=("a", "b"), last_id=None):
        q = "&".join("channel=" + c for c in channels)
        hdrs = {"Last-Event-ID": last_id} if last_id else {}
        c = SseClient(self.httpd.port, "/events?" + q, headers=hdrs)
        self.test.addCleanup(c.close)
        c.open()
        self.test.assertEqual(c.head.status, 200)
        c.read_retry()
        return c


def stop_process(proc, sig=signal.SIGTERM):
    """Send sig to a child we started (waking it first if stopped), wait
    up to 15 s, then kill it; bounded."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        os.kill(proc.pid, sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def stop_hosts(test, hosts):
    """Stop every host; print its relay log first if the test failed."""
    failed = HttpdTestCase._has_failed(test)
    for h in hosts:
        if failed:
            print("\n--- %s relay log ---\n%s" % (h.name,
                                                  h.relay_log()[-3000:]))
        h.stop()


def redis_prerequisites():
    """What is missing to run httpd + redis-server + sse-relay (a list of
    messages saying how to install it; empty if nothing)."""
    problems = check_prerequisites()
    if not os.access(REDIS_SERVER, os.X_OK):
        problems.append("redis-server not found (apt-get install "
                        "redis-server, or build/install-deps.sh --test)")
    if not os.access(relay_path(), os.X_OK):
        problems.append("sse-relay not found at %s: install "
                        "libhiredis-dev, re-run ./configure and make"
                        % relay_path())
    return problems


class RedisRelayTest(unittest.TestCase):
    """One redis-server for the class; fresh stream and hosts per test."""

    @classmethod
    def setUpClass(cls):
        problems = redis_prerequisites()
        cls.problems = problems
        cls.rtmp = make_tmpdir("sse-redis-")
        cls.redis = None
        if not problems:
            cls.redis = RedisServer(cls.rtmp)
            cls.redis.start()

    @classmethod
    def tearDownClass(cls):
        if cls.redis:
            cls.redis.stop()
        shutil.rmtree(cls.rtmp, ignore_errors=True)

    def setUp(self):
        if self.problems:
            self.fail("prerequisites missing: " + "; ".join(self.problems))
        if not self.redis.pings():
            self.redis.start()
        self.redis.cmd("FLUSHALL")
        self.tmp = make_tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.hosts = []

    def tearDown(self):
        stop_hosts(self, self.hosts)

    # -- helpers

    def make_hosts(self, n, **kw):
        for i in range(n):
            h = Host(self, "host%d" % i, self.redis, **kw)
            self.hosts.append(h)
            h.start()
        return self.hosts

    def publish(self, events, maxlen=None, max_age=None):
        """events: [(channel, data)] via one `sse-pub stream --redis`."""
        import json
        payload = "".join(json.dumps({"channel": c, "data": d}) + "\n"
                          for c, d in events).encode()
        args = ["stream", "--redis", self.redis.url, "--format", "ndjson"]
        if maxlen:
            args += ["--maxlen", str(maxlen)]
        if max_age:
            args += ["--max-age", str(max_age)]
        SsePub(None).run(*args, input=payload)

    def publish_n(self, n, start=0, channels=("a", "b")):
        self.publish([(channels[i % len(channels)], "%s|%d" % (
            channels[i % len(channels)], i)) for i in range(start, start + n)])

    def wait_synced(self, hosts=None, timeout=30):
        """Until every host's bus ends with the stream's last entry."""
        ref = self.redis.xrange()
        last = ref[-1][0] if ref else None
        for h in hosts or self.hosts:
            ok = wait_for(lambda: (h.events() or [(None,)])[-1][0] == last,
                          timeout, interval=0.2,
                          what="%s caught up" % h.name)
            self.assertTrue(ok, "%s did not catch up to %s; relay log:\n%s"
                            % (h.name, last, h.relay_log()[-2000:]))
        return ref

    def assert_bus_sane(self, h):
        evs = h.events()
        keys = [ord_key(e[0]) for e in evs]
        self.assertEqual(keys, sorted(set(keys)),
                         "%s: ids not strictly increasing" % h.name)
        return evs

    def assert_bus_is(self, h, ref):
        evs = self.assert_bus_sane(h)
        self.assertEqual([e for e in evs if e[1] != RESET], ref,
                         "%s: bus differs from XRANGE" % h.name)
        return evs

    # -- scenarios

    def test_max_age_trims_by_time_and_maxlen_by_count(self):
        # Redis trims approximately (whole stream nodes of 100 entries):
        # 300 old entries fill three nodes that MINID ~ can drop whole.
        old = [("a", "old %d" % i) for i in range(300)]
        self.publish(old, max_age=1)
        self.assertEqual(self.redis.cmd("XLEN", STREAM), 300)  # all young
        time.sleep(1.3)
        self.publish([("a", "control")])        # default: MAXLEN ~ 1000000
        self.assertEqual(self.redis.cmd("XLEN", STREAM), 301)
        self.publish([("a", "new")], max_age=1)
        n = self.redis.cmd("XLEN", STREAM)
        self.assertLessEqual(n, 101, "entries older than --max-age 1 kept")
        self.assertEqual(self.redis.xrange()[-1][2], "new")
        self.publish([("a", "x%d" % i) for i in range(300)], maxlen=10)
        self.assertLessEqual(self.redis.cmd("XLEN", STREAM), 110)
        rc, _, err = SsePub(None).run(
            "publish", "--redis", self.redis.url, "--maxlen", "5",
            "--max-age", "3", "--channel", "a", "x", check=False)
        self.assertEqual(rc, 2)
        self.assertIn("not both", err)

    def test_fan_out_gives_every_host_the_same_events_under_the_same_ids(self):
        hosts = self.make_hosts(3)
        self.publish_n(300)
        ref = self.wait_synced()
        self.assertEqual(len(ref), 300)
        for h in hosts:
            evs = self.assert_bus_is(h, ref)
            self.assertFalse([e for e in evs if e[1] == RESET],
                             "no gap, so no reset marker")
        # and the module serves them: one client per host, same ids
        got = []
        for h in hosts:
            c = h.client(last_id=ref[99][0])
            c.read_events(200, timeout=30)
            got.append([(e.id, e.data) for e in c.events])
        self.assertEqual(got[0], [(r[0], r[2]) for r in ref[100:]])
        self.assertEqual(got[0], got[1])
        self.assertEqual(got[0], got[2])

    def test_session_stitched_across_hosts_equals_xrange(self):
        hosts = self.make_hosts(3)
        session = []
        # Host 2 lags: its relay is stopped while the client is elsewhere.
        c = hosts[0].client()
        self.publish_n(60, 0)
        c.read_events(60, timeout=30)
        session += c.events[:25]
        c.close()
        hosts[2].signal_relay(signal.SIGSTOP)
        c = hosts[1].client(last_id=session[-1].id)
        self.publish_n(60, 60)
        c.read_events(95, timeout=30)
        session += c.events[:80]     # up to event 104, which host 2 lacks
        c.close()
        # Resume on the lagging host: nothing at or below the id comes
        # again once its relay catches up.
        c = hosts[2].client(last_id=session[-1].id)
        hosts[2].signal_relay(signal.SIGCONT)
        self.publish_n(20, 120)
        c.read_events(35, timeout=30)
        c.drain_quietly(0.5)
        session += c.events
        c.close()
        ref = self.wait_synced()
        self.assertEqual([(e.id, e.type, e.data) for e in session],
                         [(r[0], "message", r[2]) for r in ref])
        for h in hosts:
            self.assert_bus_is(h, ref)

    def test_relay_killed_with_sigkill_restarts_without_dup_or_loss(self):
        hosts = self.make_hosts(2)
        self.publish_n(200, 0)
        for burst in range(3):
            hosts[1].stop_relay(signal.SIGKILL)
            self.publish_n(300, 200 + burst * 300)
            hosts[1].start_relay()
            time.sleep(0.05 * burst)
        self.publish_n(100, 1100)
        ref = self.wait_synced()
        self.assertEqual(len(ref), 1200)
        for h in hosts:
            self.assert_bus_is(h, ref)

    def test_wiped_bus_is_refilled_from_redis_and_clients_resume(self):
        hosts = self.make_hosts(2)
        self.publish_n(100)
        ref = self.wait_synced()
        c = hosts[1].client(last_id=ref[49][0])
        c.read_events(50, timeout=30)
        hosts[1].pub.create(capacity="1M", force=True)  # wipe: a new bus
        c.read_to_end(timeout=30)   # streams on the old bus are ended
        ref = self.wait_synced()
        self.assert_bus_is(hosts[1], ref)
        self.publish_n(10, 100)
        c = hosts[1].client(last_id=ref[-1][0])
        c.read_events(10, timeout=30)
        self.assertEqual([e.data for e in c.events],
                         ["%s|%d" % ("ab"[i % 2], i) for i in range(100, 110)])

    def test_trim_past_a_stalled_relay_writes_a_reset_marker(self):
        hosts = self.make_hosts(2)
        self.publish_n(20)
        before = self.wait_synced()
        live = hosts[1].client(channels=("a",))   # a live client on host 1
        hosts[1].signal_relay(signal.SIGSTOP)
        self.publish_n(50, 20)
        full = self.wait_synced(hosts=[hosts[0]])
        self.redis.cmd("XTRIM", STREAM, "MAXLEN", "10")   # exact trim
        hosts[1].signal_relay(signal.SIGCONT)
        ref = self.wait_synced()
        evs = self.assert_bus_sane(hosts[1])
        resets = [i for i, e in enumerate(evs) if e[1] == RESET]
        self.assertEqual(len(resets), 1, evs)
        i = resets[0]
        self.assertEqual(evs[i - 1][0], before[-1][0])
        self.assertEqual(evs[i + 1:], ref)
        wait_for(lambda: hosts[1].status().get("gaps") == "1", 10,
                 what="status file")
        self.assertEqual(hosts[1].status().get("gaps"), "1")
        self.assertEqual(hosts[0].status().get("gaps"), "0")
        # host 0 lost nothing: its bus is the untrimmed stream
        self.assertEqual([e for e in self.assert_bus_sane(hosts[0])
                          if e[1] != RESET], full)
        # the live client (channel a only) gets the reset where it is
        live.read_until(lambda c: any(e.type == RESET for e in c.events),
                        timeout=30, what="the reset event")
        # a client resuming before the gap gets the reset, then the rest
        c = hosts[1].client(last_id=before[-1][0])
        c.read_events(11, timeout=30)
        self.assertEqual(c.events[0].type, RESET)
        self.assertEqual([e.id for e in c.events[1:]], [r[0] for r in ref])
        # a client resuming from inside the gap (it was on host 0) too
        c = hosts[1].client(last_id=full[40][0])
        c.read_events(1, timeout=30)
        self.assertEqual(c.events[0].type, RESET)
        # one resuming after the gap does not
        c = hosts[1].client(last_id=ref[2][0])
        c.read_events(7, timeout=30)
        c.drain_quietly(0.3)
        self.assertEqual([e.id for e in c.events], [r[0] for r in ref[3:]])
        # the module counted each reset it sent: the live client's and the
        # two resumes from before the gap; host 0 sent none
        self.assertEqual(hosts[1].metric("sse_resets_total"), 3)
        self.assertEqual(hosts[0].metric("sse_resets_total"), 0)
        self.assertEqual(hosts[1].info()["relay"]["gaps"], 1)

    def test_trim_ending_exactly_at_the_relay_s_last_event_sends_no_reset(
            self):
        # The cursor's entry is gone, but nothing after it was lost: the
        # relay knows how many entries followed its cursor (entries-added)
        # and sees them all, so it writes no gap marker. A real loss right
        # after is still flagged.
        hosts = self.make_hosts(1)
        self.publish_n(20)
        ref1 = self.wait_synced()
        wait_for(lambda: hosts[0].info()["relay"]["lag_events"] == 0, 10,
                 interval=0.1, what="relay at the stream's end")
        self.redis.cmd("XTRIM", STREAM, "MAXLEN", "0")  # up to its last
        self.publish_n(10, 20)
        ref2 = self.wait_synced()
        evs = self.assert_bus_sane(hosts[0])
        self.assertEqual(evs, ref1 + ref2)              # no sse-reset
        self.assertEqual(hosts[0].info()["relay"]["gaps"], 0)

        hosts[0].signal_relay(signal.SIGSTOP)
        self.publish_n(5, 30)                           # never relayed...
        self.redis.cmd("XTRIM", STREAM, "MAXLEN", "0")  # ...and trimmed
        self.publish_n(3, 35)
        hosts[0].signal_relay(signal.SIGCONT)
        ref3 = self.wait_synced()
        evs = self.assert_bus_sane(hosts[0])
        self.assertEqual([e[1] for e in evs[30:]],
                         [RESET, None, None, None], evs)
        self.assertEqual(evs[:30] + evs[31:], ref1 + ref2 + ref3)
        wait_for(lambda: hosts[0].info()["relay"]["gaps"] == 1, 10,
                 interval=0.1, what="the gap in the status")
        self.assertEqual(hosts[0].info()["relay"]["gaps"], 1)

    def test_catch_up_over_many_batches_is_exact_and_info_shows_no_lag(self):
        # The relay reads 500 per batch (Host.start_relay) and, while the
        # batches come back full, sends the next read before appending.
        hosts = self.make_hosts(1, capacity="8M")
        self.publish_n(20)
        self.wait_synced()
        hosts[0].signal_relay(signal.SIGSTOP)
        self.publish_n(2750, 20)            # 5 full batches and a part
        hosts[0].signal_relay(signal.SIGCONT)
        ref = self.wait_synced()
        self.assertEqual(len(ref), 2770)
        self.assert_bus_is(hosts[0], ref)
        # the status is rewritten about once a second: wait for the one
        # written after the catch-up
        ok = wait_for(lambda: (hosts[0].info()["relay"]["cursor"],
                               hosts[0].info()["relay"]["lag_events"])
                      == (ref[-1][0], 0), 10, interval=0.2,
                      what="relay status: at the end, no lag")
        rel = hosts[0].info()["relay"]
        self.assertTrue(ok, rel)
        self.assertEqual((rel["connected"], rel["stale"], rel["cursor"],
                          rel["gaps"], rel["lag_ms"]),
                         (True, False, ref[-1][0], 0, 0), rel)
        self.assertEqual(rel["events_relayed"], 2770)

    def test_bus_wiped_during_catch_up_is_refilled_exactly(self):
        # Reads sent ahead from the old bus's cursor must be dropped, not
        # appended to the new bus.
        hosts = self.make_hosts(1, capacity="8M")
        hosts[0].signal_relay(signal.SIGSTOP)
        self.publish_n(20000)
        hosts[0].signal_relay(signal.SIGCONT)
        wait_for(lambda: hosts[0].pub.info()["head_seq"] >= 1000, 30,
                 interval=0.01, what="catch-up under way")
        hosts[0].pub.create(capacity="8M", force=True)
        ref = self.wait_synced(timeout=60)
        self.assert_bus_is(hosts[0], ref)

    def test_redis_restarted_empty_relays_reconnect_and_ids_keep_rising(self):
        hosts = self.make_hosts(2)
        self.publish_n(30)
        before = self.wait_synced()
        c = hosts[0].client()
        self.redis.stop()
        time.sleep(1.0)
        # Redis is gone: the hosts keep serving what they hold
        c2 = hosts[1].client(last_id=before[9][0])
        c2.read_events(20, timeout=30)
        self.redis.start()          # same port, empty (no persistence)
        ok = wait_for(lambda: all(h.status().get("connected") == "1"
                                  and int(h.status().get("reconnects", 0))
                                  >= 1 for h in hosts), 30, interval=0.2,
                      what="relays reconnected")
        self.assertTrue(ok, [h.status() for h in hosts])
        # The relays raised the new stream's last id to what they had
        # delivered: new ids are above every old one.
        wait_for(lambda: self.redis.cmd("EXISTS", STREAM) == 1, 30,
                 what="the relays recreating the stream")
        last = self.redis.cmd("XINFO", "STREAM", STREAM)
        info = dict(zip(last[0::2], last[1::2]))
        self.assertGreaterEqual(ord_key(info[b"last-generated-id"].decode()),
                                ord_key(before[-1][0]))
        self.publish_n(10, 30)
        after = self.wait_synced()
        self.assertEqual(len(after), 10)
        for h in hosts:
            evs = self.assert_bus_sane(h)
            self.assertEqual([e for e in evs if e[1] != RESET],
                             before + after)
            self.assertEqual(len([e for e in evs if e[1] == RESET]), 1)
        # the stream that was open all along gets the reset, then the events
        c.read_events(11, timeout=30)
        self.assertEqual(c.events[0].type, RESET)
        self.assertEqual([e.id for e in c.events[1:]],
                         [r[0] for r in after])


if __name__ == "__main__":
    unittest.main()
