#!/usr/bin/env python3
"""relay_bench.py - what the Redis relay (sse-relay) costs: events/s through
one relay, catch-up rate after an outage, and the latency it adds.

Not a test (bench/ measures, tests assert). Needs a built tree (./sse-pub,
./sse-relay) and redis-server; starts its own redis-server on a free
loopback port in a temp dir (no persistence) and stops it by pid.

  bench/relay_bench.py [--events 200000] [--size 100] [--rate 500]
                       [--latency-events 3000] [--relay-batch N]
                       [--catch-up-only RUNS]

SSE_RELAY=PATH / SSE_PUB=PATH run another build (e.g. the relay before a
change, to compare on the same machine load).

Scenarios:
  throughput  relay running; `sse-pub stream --redis` publishes N events
              (pipelined, 256 per round trip); time from the first publish
              until the bus holds all N. Publisher and relay share the
              machine, so this is end-to-end.
  catch-up    relay stopped; N events published; relay started: time until
              the bus holds them all (the relay alone: gap-checked XRANGE
              batches, the next one requested while the last is appended
              under one lock hold). --catch-up-only RUNS measures only
              this, RUNS times, and prints every run and the spread.
  latency     a paced publisher (--rate events/s, RESP over a socket) puts
              CLOCK_MONOTONIC in each event; `sse-pub tail` on the bus
              reads it back. Measured twice: through Redis + relay, and
              straight into the bus with `sse-pub stream` (the baseline);
              the difference is what the relay adds.
Prints a Markdown table.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
SSE_PUB = os.environ.get("SSE_PUB", os.path.join(TOP, "sse-pub"))
SSE_RELAY = os.environ.get("SSE_RELAY", os.path.join(TOP, "sse-relay"))
RELAY_ARGS = []  # --relay-batch N adds ["--batch", N]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def bus_head(bus):
    out = subprocess.run([SSE_PUB, "info", bus, "--json"],
                         capture_output=True, timeout=30).stdout
    return json.loads(out)["head_seq"]


def wait_head(bus, n, limit=300):
    t_end = time.monotonic() + limit
    while time.monotonic() < t_end:
        if bus_head(bus) >= n:
            return time.monotonic()
        time.sleep(0.01)
    raise SystemExit("bus %s did not reach %d events in %ds" % (bus, n, limit))


def ndjson(n, size, start=0):
    pad = "x" * max(0, size - 12)
    return "".join('{"channel":"c%d","data":"%08d%s"}\n' % (i % 8, i, pad)
                   for i in range(start, start + n)).encode()


class Env:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="relay-bench-")
        self.port = free_port()
        self.url = "redis://127.0.0.1:%d/" % self.port
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                break
            except OSError:
                time.sleep(0.05)
        self.relay = None

    def fresh_bus(self, name, capacity="256M"):
        bus = os.path.join(self.dir, name)
        subprocess.run([SSE_PUB, "create", bus, "--capacity", capacity,
                        "--force"], check=True, capture_output=True)
        s = socket.create_connection(("127.0.0.1", self.port))
        s.sendall(resp("FLUSHALL"))
        s.recv(100)
        s.close()
        return bus

    def start_relay(self, bus):
        self.relay = subprocess.Popen(
            [SSE_RELAY, bus, "--redis", self.url] + RELAY_ARGS,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_relay(self):
        if self.relay:
            self.relay.send_signal(signal.SIGTERM)
            self.relay.wait(30)
            self.relay = None

    def close(self):
        self.stop_relay()
        self.redis.terminate()
        self.redis.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def publish_redis(env, payload):
    subprocess.run([SSE_PUB, "stream", "--redis", env.url, "--format",
                    "ndjson"], input=payload, check=True, timeout=600)


def throughput(env, n, size):
    bus = env.fresh_bus("tp.bus")
    env.start_relay(bus)
    time.sleep(0.5)
    payload = ndjson(n, size)
    t0 = time.monotonic()
    publish_redis(env, payload)
    t_pub = time.monotonic()
    t_bus = wait_head(bus, n)
    env.stop_relay()
    return n / (t_pub - t0), n / (t_bus - t0)


def catch_up(env, n, size):
    bus = env.fresh_bus("cu.bus")
    publish_redis(env, ndjson(n, size))
    t0 = time.monotonic()
    env.start_relay(bus)
    t1 = wait_head(bus, n)
    env.stop_relay()
    return n / (t1 - t0)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def latency(env, n, rate, via_redis):
    bus = env.fresh_bus("lat.bus", capacity="16M")
    if via_redis:
        env.start_relay(bus)
        time.sleep(0.5)
        sock = socket.create_connection(("127.0.0.1", env.port))
        f = sock.makefile("rb")
    else:
        pub = subprocess.Popen([SSE_PUB, "stream", bus, "--channel", "c"],
                               stdin=subprocess.PIPE)
    tail = subprocess.Popen([SSE_PUB, "tail", bus, "--count", str(n),
                             "--timeout", "30"], stdout=subprocess.PIPE)
    time.sleep(0.3)
    lat = []

    def reader():
        for line in tail.stdout:
            if line.startswith(b"data: "):
                lat.append(time.monotonic_ns() - int(line[6:]))
    th = threading.Thread(target=reader)
    th.start()
    period = 1.0 / rate
    t_next = time.monotonic()
    for _ in range(n):
        now = time.monotonic()
        if now < t_next:
            time.sleep(t_next - now)
        t_next += period
        stamp = str(time.monotonic_ns())
        if via_redis:
            sock.sendall(resp("XADD", "sse", "*", "c", "c", "d", stamp))
            f.readline()
        else:
            pub.stdin.write(stamp.encode() + b"\n")
            pub.stdin.flush()
    th.join(60)
    tail.wait(60)
    if via_redis:
        sock.close()
        env.stop_relay()
    else:
        pub.stdin.close()
        pub.wait(30)
    us = [x / 1000 for x in lat]
    return len(us), pct(us, 50), pct(us, 99), max(us)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--latency-events", type=int, default=3000)
    ap.add_argument("--relay-batch", type=int, default=0,
                    help="sse-relay --batch (default: the relay's 1000)")
    ap.add_argument("--catch-up-only", type=int, default=0, metavar="RUNS",
                    help="measure only the catch-up, RUNS times, and print "
                    "each run and the spread")
    a = ap.parse_args()
    if a.relay_batch:
        RELAY_ARGS.extend(["--batch", str(a.relay_batch)])
    for p in (SSE_PUB, SSE_RELAY):
        if not os.access(p, os.X_OK):
            sys.exit("%s missing: build the tree (with libhiredis-dev)" % p)
    if not shutil.which("redis-server"):
        sys.exit("redis-server missing: apt-get install redis-server")
    env = Env()
    if a.catch_up_only:
        try:
            rates = [catch_up(env, a.events, a.size)
                     for _ in range(a.catch_up_only)]
        finally:
            env.close()
        print("catch-up of %d x %d-byte events, %d runs: %s events/s; "
              "min %.0f, median %.0f, max %.0f"
              % (a.events, a.size, len(rates),
                 " ".join("%.0f" % r for r in rates), min(rates),
                 sorted(rates)[len(rates) // 2], max(rates)))
        return
    try:
        pub_rate, e2e = throughput(env, a.events, a.size)
        cu = catch_up(env, a.events, a.size)
        lr = latency(env, a.latency_events, a.rate, True)
        lb = latency(env, a.latency_events, a.rate, False)
    finally:
        env.close()
    print("| measure | value |")
    print("|---|---|")
    print("| events, data bytes | %d x %d |" % (a.events, a.size))
    print("| publisher alone (sse-pub stream --redis) | %.0f events/s |"
          % pub_rate)
    print("| end to end: publish -> in the bus (relay running) | %.0f "
          "events/s |" % e2e)
    print("| catch-up (relay started after the %d events) | %.0f events/s |"
          % (a.events, cu))
    print("| latency via Redis + relay, %d/s (n=%d): p50 / p99 / max | "
          "%.0f / %.0f / %.0f us |" % (a.rate, lr[0], lr[1], lr[2], lr[3]))
    print("| latency straight into the bus (baseline): p50 / p99 / max | "
          "%.0f / %.0f / %.0f us |" % (lb[1], lb[2], lb[3]))
    print("| added by Redis + relay: p50 / p99 | %.0f / %.0f us |"
          % (lr[1] - lb[1], lr[2] - lb[2]))


if __name__ == "__main__":
    main()
