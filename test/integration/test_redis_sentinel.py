"""Failover of the Redis relay (issue 7): Redis Sentinel discovery in
`sse-pub --sentinel` and `sse-relay --sentinel`, and what the hosts do when
Redis fails over, loses writes, stalls or goes away.

Per test, on loopback free ports in a temp dir: a Redis master, one
replica and three sentinels (quorum 2, down-after 1000 ms, failover-timeout
6000 ms), and two or three hosts, each with its own bus, sse-relay (through
the sentinels unless the scenario says otherwise) and httpd. What every
scenario asserts (check_hosts):
  - on every bus, ordered ids strictly increase and none repeats;
  - an id carries the same event on every host;
  - every bus holds the reference (XRANGE on the final master), except
    inside a flagged gap (an "sse-reset" marker), and holds nothing else
    that is not followed by a marker;
  - every acknowledged publish (sse-pub printed its id) is in every bus or
    inside a flagged gap;
  - client sessions (live, or stitched across hosts with Last-Event-ID)
    equal the reference exactly, or received the reset at the gap.

Timings (master killed -> relays reading the new master, events/s) are
printed on one "sentinel:" line per failover test.

A missing redis-server or sse-relay fails the tests (never a skip);
build/install-deps.sh --test installs redis-server and libhiredis-dev.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

from harness import (HttpdTestCase, SsePub, free_port,
                     location, make_tmpdir, wait_for)
from test_redis_relay import (REDIS_SERVER, RESET, STREAM, Host, Resp,
                              RespError, ord_key, redis_prerequisites,
                              relay_path, stop_hosts, stop_process)

MASTER = "sse-master"
NO_FAILOVER = {"test_redis_gone_keeps_hosts_serving_and_subscriptions_resume"}
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 6000


# ------------------------------------------------------------------ Redis

def _cmd(port, *args, timeout=5):
    r = Resp(port, timeout=timeout)
    try:
        return r.cmd(*args)
    finally:
        r.close()


class Node:
    """One redis-server (data node or sentinel) on a free loopback port,
    started and stopped by pid. Data nodes keep an AOF so that a restart
    brings their data back."""

    def __init__(self, root, name, sentinel_conf=None, replicaof=None,
                 extra=()):
        self.extra = list(extra)
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        self.name = name
        self.port = free_port()
        self.sentinel_conf = sentinel_conf
        self.replicaof = replicaof
        self.proc = None

    def argv(self):
        log = os.path.join(self.dir, "redis.log")
        if self.sentinel_conf is not None:
            conf = os.path.join(self.dir, "sentinel.conf")
            if not os.path.exists(conf):   # sentinels rewrite their config
                with open(conf, "w") as f:
                    f.write("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n%s"
                            % (self.port, self.dir, log, self.sentinel_conf))
            return [REDIS_SERVER, conf, "--sentinel"]
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind",
                "127.0.0.1", "--save", "", "--appendonly", "yes",
                "--dir", self.dir, "--logfile", log]
        if self.replicaof:
            argv += ["--replicaof", "127.0.0.1", str(self.replicaof)]
        return argv + self.extra

    def start(self):
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_for(self.pings, 15, what="%s answering" % self.name):
            raise AssertionError("%s did not start on port %d; log:\n%s"
                                 % (self.name, self.port, self.log()))

    def pings(self):
        try:
            return self.cmd("PING", timeout=1) == "PONG"
        except (OSError, RespError):
            return False

    def cmd(self, *args, timeout=5):
        return _cmd(self.port, *args, timeout=timeout)

    def stop(self, sig=signal.SIGTERM):
        if self.proc:
            stop_process(self.proc, sig)
        self.proc = None

    def log(self):
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return ""


def xrange_ref(port):
    """The reference: [(id, event or None, data)] in stream order."""
    out = []
    for eid, kv in _cmd(port, "XRANGE", STREAM, "-", "+") or []:
        f = dict(zip(kv[0::2], kv[1::2]))
        ev = f.get(b"e")
        out.append((eid.decode(), ev.decode() if ev else None,
                    f.get(b"d", b"").decode()))
    return out


class Topology:
    """Master + replica + three sentinels."""

    def __init__(self, root, replica_args=()):
        self.master = Node(root, "redis-a")
        self.replica = Node(root, "redis-b", replicaof=self.master.port,
                            extra=replica_args)
        conf = ("sentinel monitor %s 127.0.0.1 %d 2\n"
                "sentinel down-after-milliseconds %s %d\n"
                "sentinel failover-timeout %s %d\n"
                "sentinel parallel-syncs %s 1\n"
                % (MASTER, self.master.port, MASTER, DOWN_AFTER_MS, MASTER,
                   FAILOVER_TIMEOUT_MS, MASTER))
        self.sentinels = [Node(root, "sentinel%d" % i, sentinel_conf=conf)
                          for i in range(3)]
        self.nodes = [self.master, self.replica] + self.sentinels

    def start(self):
        self.master.start()
        self.replica.start()
        ok = wait_for(lambda: self.link_up(self.replica), 20, interval=0.1,
                      what="replica in sync")
        if not ok:
            raise AssertionError("replica did not sync:\n" + self.replica.log())
        for s in self.sentinels:
            s.start()

        def sentinels_ready():
            for s in self.sentinels:
                try:
                    m = s.cmd("SENTINEL", "MASTER", MASTER)
                except (OSError, RespError):
                    return False
                f = dict(zip(m[0::2], m[1::2]))
                if (f.get(b"num-slaves") != b"1"
                        or f.get(b"num-other-sentinels") != b"2"):
                    return False
            return True
        if not wait_for(sentinels_ready, 30, interval=0.2,
                        what="sentinels ready"):
            raise AssertionError("sentinels did not find each other and the "
                                 "replica:\n" + self.sentinels[0].log())

    @staticmethod
    def link_up(node):
        try:
            info = node.cmd("INFO", "replication").decode()
        except (OSError, RespError, AttributeError):
            return False
        return "master_link_status:up" in info

    def stop(self):
        for n in reversed(self.nodes):
            n.stop()

    @property
    def sentinel_arg(self):
        return ",".join("127.0.0.1:%d" % s.port for s in self.sentinels)

    def master_port(self):
        """The master as every answering sentinel names it (None if they
        disagree or none answers)."""
        seen = set()
        for s in self.sentinels:
            try:
                r = s.cmd("SENTINEL", "get-master-addr-by-name", MASTER,
                          timeout=1)
                seen.add(int(r[1]))
            except (OSError, RespError, TypeError):
                pass
        return seen.pop() if len(seen) == 1 else None

    def node_at(self, port):
        return self.master if port == self.master.port else self.replica


# ------------------------------------------------------------------ proxy

class StallingProxy:
    """A TCP proxy 127.0.0.1:port -> target port. stall() makes every
    connection open at that moment stop forwarding in both directions
    without closing (a half-open partition); new connections forward."""

    def __init__(self, target):
        self.target = target
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.conns = []     # [{"socks": (a, b), "stalled": bool}]
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.accepted = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.done.is_set():
            try:
                a, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.target), 5)
            except OSError:
                a.close()
                continue
            conn = {"socks": (a, b), "stalled": False}
            with self.lock:
                self.conns.append(conn)
                self.accepted += 1
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(conn, src, dst),
                                 daemon=True).start()

    def _pump(self, conn, src, dst):
        src.settimeout(0.1)
        while not self.done.is_set():
            if conn["stalled"]:
                time.sleep(0.05)    # hold the bytes: read nothing, send nothing
                continue
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data or conn["stalled"]:
                if not data:
                    break
                continue            # (dropped: the stall began meanwhile)
            try:
                dst.sendall(data)
            except OSError:
                break
        if not conn["stalled"]:
            for s in conn["socks"]:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stall(self):
        with self.lock:
            for c in self.conns:
                c["stalled"] = True

    def close(self):
        self.done.set()
        self.lsock.close()
        self.thread.join(5)
        with self.lock:
            for c in self.conns:
                for s in c["socks"]:
                    try:
                        s.close()
                    except OSError:
                        pass


# ------------------------------------------------------------------ hosts

class SentinelHost(Host):
    """A host whose relay finds Redis through the sentinels (or, with
    redis_url, at a fixed address)."""

    def __init__(self, test, name, topo, redis_url=None, heartbeat=None):
        self.topo, self.redis_url = topo, redis_url
        Host.__init__(self, test, name, None)
        if heartbeat:
            self.httpd.extra = location("/events", self.bus,
                                        SSEChannelAllow='"*"',
                                        SSEHeartbeat=heartbeat)

    def start_relay(self):
        log = open(os.path.join(self.dir, "relay.log"), "ab")
        where = (["--redis", self.redis_url] if self.redis_url else
                 ["--sentinel", self.topo.sentinel_arg, "--master", MASTER])
        self.relay = subprocess.Popen(
            [relay_path(), self.bus] + where + ["--block-ms", "200",
                                                "--batch", "500"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()


class Publisher:
    """`sse-pub publish --sentinel` in a loop in a thread, one event per
    process: data "p|N" on channel a or b. Records what was acknowledged
    (exit 0 and an id printed) and what failed."""

    def __init__(self, topo, limit=2000, wait_replicas=0):
        self.topo, self.limit = topo, limit
        self.wait = (["--wait-replicas", str(wait_replicas)]
                     if wait_replicas else [])
        self.acked = []        # [(id, channel, data)]
        self.failed = []       # [(data, stderr)]
        self.stop_ev = threading.Event()
        self.thread = None
        self.n = 0

    def publish(self, data, channel="a"):
        rc, out, err = SsePub(None).run(
            "publish", "--sentinel", self.topo.sentinel_arg, "--master",
            MASTER, "--channel", channel, *self.wait, data, check=False,
            timeout=60)
        if rc == 0 and out.strip():
            self.acked.append((out.strip(), channel, data))
            return out.strip()
        self.failed.append((data, err))
        return None

    def _loop(self):
        while not self.stop_ev.is_set() and self.n < self.limit:
            self.publish("p|%d" % self.n, "ab"[self.n % 2])
            self.n += 1
            time.sleep(0.005)

    def start(self):
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.stop_ev.set()
        if self.thread:
            self.thread.join(60)
        self.secs = time.monotonic() - self.t0
        return self

    def wait_count(self, n, timeout=30):
        return wait_for(lambda: len(self.acked) >= n or not
                        self.thread.is_alive(), timeout, interval=0.02)


def log_line(text):
    sys.stdout.write("    sentinel: %s\n" % text)
    sys.stdout.flush()


class SentinelTest(unittest.TestCase):
    """Fresh master, replica, sentinels and hosts per test."""

    @classmethod
    def setUpClass(cls):
        problems = redis_prerequisites()
        cls.problems = problems

    def setUp(self):
        if self.problems:
            self.fail("prerequisites missing: " + "; ".join(self.problems))
        self.tmp = make_tmpdir("sse-sentinel-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.hosts = []
        self.proxies = []
        # A scenario where Redis as a whole goes away must not turn into a
        # failover: the replica may never be promoted there.
        self.topo = Topology(self.tmp, ["--replica-priority", "0"]
                             if self._testMethodName in NO_FAILOVER else [])
        self.addCleanup(self.topo.stop)
        self.topo.start()

    def tearDown(self):
        stop_hosts(self, self.hosts)
        for p in self.proxies:
            p.close()
        if HttpdTestCase._has_failed(self):
            for n in self.topo.nodes:
                print("\n--- %s log ---\n%s" % (n.name, n.log()[-1500:]))

    # -- helpers

    def make_hosts(self, n, **kw):
        for _ in range(n):
            h = SentinelHost(self, "host%d" % len(self.hosts), self.topo,
                             **kw)
            self.hosts.append(h)
            h.start()
        return self.hosts[-n:]

    def master(self):
        """The node the sentinels name (they must agree)."""
        port = wait_for(self.topo.master_port, 20, interval=0.2,
                        what="sentinels agreeing on the master")
        self.assertTrue(port, "the sentinels do not agree on a master")
        return self.topo.node_at(port)

    def publish_n(self, n, start=0):
        """n events through one `sse-pub stream --sentinel`."""
        lines = "".join('{"channel": "%s", "data": "s|%d"}\n'
                        % ("ab"[i % 2], i) for i in range(start, start + n))
        SsePub(None).run("stream", "--sentinel", self.topo.sentinel_arg,
                         "--master", MASTER, "--format", "ndjson",
                         input=lines.encode())

    def wait_synced(self, hosts=None, timeout=30):
        """Until every host's bus ends with the master's last entry."""
        ref = xrange_ref(self.master().port)
        last = ref[-1][0] if ref else None
        for h in hosts or self.hosts:
            ok = wait_for(lambda: (h.events() or [(None,)])[-1][0] == last,
                          timeout, interval=0.2, what="%s caught up" % h.name)
            self.assertTrue(ok, "%s did not catch up to %s; relay log:\n%s"
                            % (h.name, last, h.relay_log()[-2000:]))
        return ref

    def wait_following(self, port, hosts=None, timeout=30):
        want = "127.0.0.1:%d" % port
        ok = wait_for(lambda: all(h.status().get("master") == want
                                  for h in hosts or self.hosts),
                      timeout, interval=0.05, what="relays on the master")
        self.assertTrue(ok, "relays not reading %s: %r" % (
            want, [h.status() for h in hosts or self.hosts]))

    def wait_relays_read(self, hosts):
        """Until each relay has rewritten its status file after the one
        that announced its connection: it has read since."""
        for h in hosts:
            u0 = int(h.status().get("updated", 0))
            ok = wait_for(lambda: int(h.status().get("updated", 0)) > u0, 10,
                          interval=0.05)
            self.assertTrue(ok, h.status())

    @staticmethod
    def gaps(evs):
        """[(after, before)] of every reset marker in a bus."""
        import json
        out = []
        for e in evs:
            if e[1] == RESET:
                d = json.loads(e[2])
                out.append((ord_key(d["after"]) if d["after"] else (0, 0),
                            ord_key(d["before"])))
        return out

    def check_hosts(self, ref, acked=(), sessions=(), hosts=None):
        """The assertions every scenario makes (see the module doc).
        sessions: [(client events, channels)]: each must be a contiguous
        run of the reference from its first event to the end, or hold the
        reset at a gap and then exactly what the bus holds after it."""
        hosts = hosts or self.hosts
        ref_ids = {r[0]: r for r in ref}
        by_id = {}
        buses = {}
        for h in hosts:
            evs = h.events()
            keys = [ord_key(e[0]) for e in evs]
            self.assertEqual(keys, sorted(set(keys)),
                             "%s: ids not strictly increasing" % h.name)
            buses[h.name] = evs
            gaps = self.gaps(evs)
            reset_at = [i for i, e in enumerate(evs) if e[1] == RESET]
            for i, e in enumerate(evs):
                if e[1] == RESET:
                    continue
                prev = by_id.setdefault(e[0], e)
                self.assertEqual(prev, e, "%s: id %s differs between hosts"
                                 % (h.name, e[0]))
                if e[0] not in ref_ids:
                    self.assertTrue(any(j > i for j in reset_at),
                                    "%s: %r is not in Redis and no reset "
                                    "follows it" % (h.name, e))
            have = {e[0] for e in evs}
            last = keys[-1] if keys else (0, 0)
            for r in ref:
                k = ord_key(r[0])
                if r[0] not in have and k <= last:
                    self.assertTrue(any(a < k < b for a, b in gaps),
                                    "%s: %s missing outside any gap"
                                    % (h.name, r[0]))
            for eid, ch, data in acked:
                k = ord_key(eid)
                if eid in have:
                    self.assertEqual(by_id[eid][2], data)
                else:
                    self.assertTrue(any(a < k < b for a, b in gaps),
                                    "%s: acknowledged %s (%s) neither "
                                    "delivered nor in a flagged gap %r"
                                    % (h.name, eid, data, gaps))
        for events, channels in sessions:
            got = [(e.id, e.type, e.data) for e in events]
            self.assertTrue(got, "empty session")
            if not any(t == RESET for _, t, _ in got):
                want = [(r[0], "message", r[2]) for r in ref
                        if ord_key(r[0]) >= ord_key(got[0][0])
                        and self._chan(r) in channels]
                self.assertEqual(got, want, "session differs from XRANGE")
            else:
                # equal to a host's bus, reset at the gap included
                i = [t for _, t, _ in got].index(RESET)
                evs = buses[hosts[0].name]
                gap_ids = [e[0] for e in evs if e[1] == RESET]
                self.assertIn(got[i][0], gap_ids)
                tail = [(e[0], e[1] or "message", e[2]) for e in evs
                        if ord_key(e[0]) > ord_key(got[i][0])
                        and (e[1] == RESET or self._chan(e) in channels)]
                self.assertEqual(got[i + 1:], tail)
        return buses

    def _chan(self, r):
        return self._channels.get(r[0])

    def record_channels(self):
        """id -> channel, from the master's stream (for session filters)."""
        self._channels = {}
        for eid, kv in _cmd(self.master().port, "XRANGE", STREAM, "-",
                            "+") or []:
            f = dict(zip(kv[0::2], kv[1::2]))
            self._channels[eid.decode()] = f.get(b"c", b"").decode()

    # -- scenarios

    def test_graceful_failover_loses_nothing_and_relays_follow(self):
        hosts = self.make_hosts(3)
        old = self.master()
        self.wait_following(old.port)
        # Zero loss (README: "Failover"): the old master refuses writes
        # once its replica is promoted, sse-pub resends refused events to
        # the new master, and --wait-replicas 1 acknowledges an event only
        # once the replica holds it (a write that slipped in while the
        # replica was being promoted is sent again to the new master).
        old.cmd("CONFIG", "SET", "min-replicas-to-write", "1")
        old.cmd("CONFIG", "SET", "min-replicas-max-lag", "10")
        live = hosts[0].client()
        pub = Publisher(self.topo, wait_replicas=1).start()
        self.assertTrue(pub.wait_count(40), pub.failed[-3:])
        session = []
        c = hosts[1].client()
        t_fail = time.monotonic()
        self.topo.sentinels[0].cmd("SENTINEL", "FAILOVER", MASTER)
        new = wait_for(lambda: self.topo.master_port() not in (None, old.port)
                       and self.topo.master_port(), 20, interval=0.05)
        self.assertTrue(new, "no failover")
        t_switch = time.monotonic()
        self.wait_following(new)
        t_follow = time.monotonic()
        # They followed on their own (asking the sentinels), not because
        # Sentinel demoted the old master and closed their connections:
        # that comes about 8 s after the switch.
        self.assertEqual(old.cmd("ROLE")[0], b"master")
        n0 = len(pub.acked)
        pub.wait_count(n0 + 40)
        pub.stop()
        c.read_events(5, timeout=10)
        session += c.events
        c.close()
        # the session goes on at another host after the failover
        c = hosts[2].client(last_id=session[-1].id)
        ref = self.wait_synced()
        self.record_channels()
        idx = [r[0] for r in ref].index(session[-1].id)
        c.read_events(len(ref) - idx - 1, timeout=30)
        session += c.events
        live.read_events(len(ref), timeout=30)
        log_line("graceful: sentinels switched %.2fs after SENTINEL FAILOVER,"
                 " relays followed %.2fs after the switch; %d events in "
                 "%.1fs (%.0f/s), %d publish failures" % (
                     t_switch - t_fail, t_follow - t_switch, len(pub.acked),
                     pub.secs, len(pub.acked) / pub.secs, len(pub.failed)))
        self.assertEqual(pub.failed, [], "a publish failed")
        self.assertEqual(len(ref), len(pub.acked), "loss in Redis")
        self.assertEqual(live.events[0].id, ref[0][0])
        buses = self.check_hosts(ref, pub.acked, [
            (live.events, ("a", "b")), (session, ("a", "b"))])
        for name, evs in buses.items():
            self.assertFalse([e for e in evs if e[1] == RESET],
                             "%s: no loss, so no reset" % name)
        for h in hosts:
            st = h.status()
            self.assertEqual(st.get("gaps"), "0")
            self.assertEqual(st.get("master_changes"), "1", st)

    def test_forced_loss_failover_writes_reset_and_repairs_last_id(self):
        hosts = self.make_hosts(3)
        old, rep = self.topo.master, self.topo.replica
        live = hosts[0].client()
        self.publish_n(20)
        before = self.wait_synced()
        live.read_events(20, timeout=10)
        # Cut replication without telling the sentinels: the replica now
        # follows a port where nothing listens, keeping its data.
        rep.cmd("REPLICAOF", "127.0.0.1", str(free_port()))
        pub = Publisher(self.topo)
        for i in range(15):     # acknowledged by the master, never replicated
            self.assertTrue(pub.publish("lost|%d" % i, "ab"[i % 2]),
                            pub.failed)
        self.wait_synced()      # every relay has delivered them
        cursor = pub.acked[-1][0]
        t_kill = time.monotonic()
        old.stop(signal.SIGKILL)
        self.wait_following(rep.port, timeout=40)
        t_follow = time.monotonic()
        # Let every relay read the promoted replica before anyone publishes
        # (the status file is rewritten once a second, after a read).
        self.wait_relays_read(hosts)
        # A relay raised the promoted replica's last id to the cursor: new
        # ids are above every delivered one.
        ok = wait_for(lambda: any(int(h.status().get("id_repairs", 0))
                                  for h in hosts), 10, interval=0.05)
        self.assertTrue(ok, [h.status() for h in hosts])
        info = rep.cmd("XINFO", "STREAM", STREAM)
        last = dict(zip(info[0::2], info[1::2]))[b"last-generated-id"]
        self.assertEqual(last.decode(), cursor)
        pub.start()
        pub.wait_count(15 + 30)
        pub.stop()
        ref = self.wait_synced()
        self.record_channels()
        log_line("forced loss: relays read the promoted replica %.2fs after "
                 "kill -9 of the master" % (t_follow - t_kill))
        lost = [a for a in pub.acked if a[2].startswith("lost|")]
        self.assertEqual(len(lost), 15)
        self.assertEqual(ref[:len(before)], before)
        self.assertFalse({a[0] for a in lost} & {r[0] for r in ref},
                         "the replica was meant to lose these")
        new = [a for a in pub.acked if not a[2].startswith("lost|")]
        self.assertTrue(new)
        self.assertGreater(ord_key(new[0][0]), ord_key(cursor))
        buses = self.check_hosts(ref, pub.acked)
        for h in hosts:
            evs = buses[h.name]
            resets = [i for i, e in enumerate(evs) if e[1] == RESET]
            self.assertEqual(len(resets), 1, "%s: %r" % (h.name, evs[-50:]))
            i = resets[0]
            self.assertEqual(evs[i - 1][0], cursor)
            self.assertEqual(evs[i + 1][0], new[0][0])
            self.assertEqual(h.status().get("gaps"), "1")
        # every host wrote the same marker id
        self.assertEqual(len({[e for e in evs if e[1] == RESET][0][0]
                              for evs in buses.values()}), 1)
        # the live client got the lost events, then the reset at the gap
        live.read_until(lambda c: any(e.type == RESET for e in c.events),
                        timeout=20, what="the reset")
        types = [e.type for e in live.events]
        self.assertEqual(types.index(RESET), len(before) + 15)
        # a client resuming before the gap gets the reset first
        c = hosts[2].client(last_id=lost[3][0])
        c.read_events(12, timeout=10)
        self.assertEqual([e.type for e in c.events[:12]],
                         ["message"] * 11 + [RESET])

    def test_half_open_partition_is_noticed_and_caught_up(self):
        master = self.master()
        proxy = StallingProxy(master.port)
        self.proxies.append(proxy)
        direct, = self.make_hosts(1)
        via, = self.make_hosts(
            1, redis_url="redis://127.0.0.1:%d/" % proxy.port)
        c = via.client()
        self.publish_n(20)
        self.wait_synced()
        c.read_events(20, timeout=10)
        t0 = time.monotonic()
        proxy.stall()           # open, silent: no FIN, no RST
        self.publish_n(30, 20)
        self.wait_synced(hosts=[direct])
        ok = wait_for(lambda: int(via.status().get("reconnects", 0)) >= 1,
                      20, interval=0.05, what="the relay reconnecting")
        t_noticed = time.monotonic()
        self.assertTrue(ok, via.relay_log())
        self.publish_n(10, 50)
        ref = self.wait_synced()
        self.record_channels()
        c.read_events(60, timeout=20)
        log_line("half-open: relay reconnected %.2fs after the stall "
                 "(block 200 ms, timeout 3200 ms)" % (t_noticed - t0))
        # noticed by the read timeout, not earlier than BLOCK + margin
        self.assertGreaterEqual(t_noticed - t0, 3.0)
        self.assertIn("lost Redis", via.relay_log())
        self.assertGreaterEqual(proxy.accepted, 2)
        self.assertEqual(len(ref), 60)
        self.assertEqual(c.events[0].id, ref[0][0])
        buses = self.check_hosts(ref, sessions=[(c.events, ("a", "b"))])
        for evs in buses.values():
            self.assertFalse([e for e in evs if e[1] == RESET])

    def test_publisher_retry_stores_a_duplicate_under_a_new_id(self):
        hosts = self.make_hosts(2)
        c = hosts[1].client(channels=("a",))
        pub = Publisher(self.topo)
        first = pub.publish("d|order-17", "a")
        # the retry a publisher makes when it did not see the first reply
        second = pub.publish("d|order-17", "a")
        self.assertTrue(first and second, pub.failed)
        self.assertNotEqual(first, second)
        self.assertGreater(ord_key(second), ord_key(first))
        ref = self.wait_synced()
        self.record_channels()
        self.assertEqual([r[2] for r in ref], ["d|order-17"] * 2)
        c.read_events(2, timeout=10)
        self.check_hosts(ref, pub.acked, [(c.events, ("a",))])
        self.assertEqual([e.id for e in c.events], [first, second])

    def test_redis_gone_keeps_hosts_serving_and_subscriptions_resume(self):
        hosts = self.make_hosts(2, heartbeat=1)
        live = [h.client() for h in hosts]
        self.publish_n(20)
        before = self.wait_synced()
        for c in live:
            c.read_events(20, timeout=10)
        # both data nodes go away (the sentinels cannot fail over)
        self.topo.replica.stop()
        self.topo.master.stop()
        ok = wait_for(lambda: all(h.status().get("connected") == "0"
                                  for h in hosts), 15, interval=0.05)
        self.assertTrue(ok, [h.status() for h in hosts])
        # the hosts keep serving: heartbeats flow, resumes are answered
        hb = [len(c.comments) for c in live]
        for c, n in zip(live, hb):
            c.read_until(lambda c: len(c.comments) >= n + 2, timeout=10,
                         what="heartbeats while Redis is gone")
        c2 = hosts[1].client(last_id=before[4][0])
        c2.read_events(15, timeout=10)
        self.assertEqual([e.id for e in c2.events],
                         [r[0] for r in before[5:]])
        time.sleep(1.0)
        self.topo.master.start()        # same port, data back from the AOF
        self.topo.replica.start()
        ok = wait_for(lambda: all(h.status().get("connected") == "1"
                                  for h in hosts), 30, interval=0.1)
        self.assertTrue(ok, [h.status() for h in hosts])
        self.publish_n(20, 20)
        ref = self.wait_synced()
        self.record_channels()
        self.assertEqual(len(ref), 40)
        for c in live:
            c.read_events(40, timeout=20)   # the same, never closed, stream
        sessions = [(c.events, ("a", "b")) for c in live]
        for c in live:
            self.assertEqual(c.events[0].id, ref[0][0])
        buses = self.check_hosts(ref, sessions=sessions)
        for h in hosts:
            self.assertFalse([e for e in buses[h.name] if e[1] == RESET])
            self.assertGreaterEqual(int(h.status().get("reconnects")), 1)


if __name__ == "__main__":
    unittest.main()
