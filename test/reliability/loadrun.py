"""Driving bench/sse_load (C epoll client) and bench/sse_pace (paced
publisher) from the reliability tests, for the scenarios whose client
count or event rate a Python client cannot read (soak, slow clients).

LoadRun: starts sse_load (N streams, --expect for an exact count), waits
for its ready file, starts `sse_pace | sse-pub stream`, samples the httpd
children's usage once a second while it runs, and returns sse_load's JSON
plus the samples. Bounded in time (duration + margins); only its own
processes are signalled, by pid.

Callers: test_soak.py, test_slow_clients.py.
"""

import json
import os
import subprocess
import time

import rel


class LoadRun:
    def __init__(self, tc, port, path, conns, seconds, rate, size=64,
                 slow=0, rcvbuf=0, channel="load"):
        self.tc, self.port, self.path = tc, port, path
        self.conns, self.seconds, self.rate = conns, seconds, rate
        self.size, self.slow, self.rcvbuf = size, slow, rcvbuf
        self.channel = channel
        self.count = int(rate * seconds)
        self.load_bin = rel.build_bench_tool("sse_load")
        self.pace_bin = rel.build_bench_tool("sse_pace")
        self.samples = []   # (t, usage)

    def run(self, sample_bus=None, on_sample=None):
        ready = os.path.join(self.tc.tmp, "load.ready")
        out = os.path.join(self.tc.tmp, "load.json")
        err = os.path.join(self.tc.tmp, "load.err")
        args = [self.load_bin, "--port", str(self.port), "--path", self.path,
                "--conns", str(self.conns),
                # after all are open: the publishing time plus slack to
                # drain; --expect ends it early once all have everything
                "--duration", str(int(self.seconds) + 30),
                "--expect", str(self.count), "--ready-file", ready,
                "--connect-timeout", "120", "--quiet"]
        if self.slow:
            args += ["--slow", str(self.slow)]
        if self.rcvbuf:
            args += ["--rcvbuf", str(self.rcvbuf)]
        with open(out, "w") as fo, open(err, "w") as fe:
            load = subprocess.Popen(args, stdout=fo, stderr=fe,
                                    stdin=subprocess.DEVNULL)
        self.tc.addCleanup(_kill, load)
        ok = rel.harness.wait_for(lambda: os.path.exists(ready)
                                  or load.poll() is not None, 150, 0.2)
        if not ok or load.poll() is not None:
            raise AssertionError("sse_load did not get all %d streams open: "
                                 "%s" % (self.conns, open(err).read()[-2000:]))
        self.before = rel.children_usage(self.tc.httpd, sample_bus)
        pace = subprocess.Popen(
            [self.pace_bin, "--mode", "lines", "--rate", str(self.rate),
             "--count", str(self.count), "--size", str(self.size),
             "--max-seconds", str(int(self.seconds) + 60)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL)
        pub = subprocess.Popen(
            [rel.harness.sse_pub_path(), "stream", self.tc.bus_path,
             "--channel", self.channel], stdin=pace.stdout,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pace.stdout.close()
        self.tc.addCleanup(_kill, pace)
        self.tc.addCleanup(_kill, pub)
        t0 = time.monotonic()
        deadline = t0 + self.seconds + 90
        while load.poll() is None and time.monotonic() < deadline:
            u = rel.children_usage(self.tc.httpd, sample_bus)
            self.samples.append((round(time.monotonic() - t0, 1), u))
            if on_sample:
                on_sample(u)
            time.sleep(1.0)
        self.elapsed = time.monotonic() - t0
        if load.poll() is None:
            _kill(load)
            raise AssertionError("sse_load still running %ds after the "
                                 "publisher started" % (self.seconds + 90))
        pace.wait(30)
        pub.wait(30)
        with open(out) as f:
            lines = [l for l in f.read().splitlines() if l.startswith("{")]
        if not lines:
            raise AssertionError("sse_load printed no result: %s"
                                 % open(err).read()[-2000:])
        return json.loads(lines[-1])


def _kill(p):
    if p.poll() is None:
        p.kill()
        p.wait()


def slope_kb_per_min(samples, start_frac=0.5):
    """Least-squares slope of PSS (kB/min) over the samples after
    start_frac of the run (the warm-up is left out)."""
    pts = [(t, u["pss_kb"]) for t, u in samples]
    pts = pts[int(len(pts) * start_frac):]
    if len(pts) < 3:
        return None
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mp = sum(p for _, p in pts) / n
    num = sum((t - mt) * (p - mp) for t, p in pts)
    den = sum((t - mt) ** 2 for t, _ in pts)
    return round(60.0 * num / den, 1) if den else None
