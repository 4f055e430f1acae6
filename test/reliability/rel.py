"""Shared pieces of the reliability suite (test/reliability/): load and
fault scenarios against the real apache2 with the built module.

What is here:
  - PROFILE: the size of each scenario. "ci" (default; the `reliability`
    stage of build/run-tests, a few minutes in all) or "soak" (`make soak`:
    the figures the issue asks for: 1000 cycles, 5000 streams x 60 s, 1000
    clients through restarts, thousands of publisher kills). Chosen with
    SSE_REL_PROFILE or run.py --profile;
  - Payload: self-checking event data ("k=<n> c=<crc32> <pad>"): a torn,
    shortened or mixed-up frame fails the crc, so "no garbled frame" is
    checked on every event, not sampled;
  - Pacer: a thread feeding `sse-pub stream` at a fixed rate (bounded by
    count and time), restartable (scenario 4 kills its publisher);
  - Fleet: many HTTP/1.1 SSE clients in one epoll loop. Each connection's
    bytes are de-chunked and parsed incrementally; per client it keeps
    only counters and the last id (constant memory), checks every payload
    and every id's sequence (gaps, duplicates), and can reconnect with
    Last-Event-ID after the server ends a stream or is down;
  - /proc accounting of httpd children (PSS from smaps_rollup, threads,
    fds) and the sse-metrics gauges.

Invariants: loopback only; every loop bounded in count and time; only
processes started here are signalled, by pid. Reuses
test/integration/harness.py (Httpd, SsePub, HttpdTestCase).

Callers: test/reliability/test_*.py, run.py.
"""

import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import harness  # noqa: E402

PROFILES = {
    "ci": dict(
        leak_cycles=1000, leak_batch=50,
        soak_streams=300, soak_seconds=10, soak_rate=20,
        restart_clients=200, restart_rate=200, restart_gracefuls=3,
        kill_clients=100, kill_count=300,
        slow_fast=40, slow_stalled=10, slow_rate=1000, slow_seconds=8,
    ),
    "soak": dict(
        leak_cycles=1000, leak_batch=50,
        soak_streams=5000, soak_seconds=60, soak_rate=5,
        restart_clients=1000, restart_rate=200, restart_gracefuls=5,
        kill_clients=100, kill_count=3000,
        slow_fast=90, slow_stalled=10, slow_rate=1000, slow_seconds=20,
    ),
}


def profile_name():
    return os.environ.get("SSE_REL_PROFILE", "ci")


def P(key):
    return PROFILES[profile_name()][key]


# ------------------------------------------------------------ figures

FIGURES_FILE = os.environ.get("SSE_REL_FIGURES")


def report(scenario, **figures):
    """Print one scenario's figures (and append them as a JSON line to
    $SSE_REL_FIGURES, which run.py collects for test/RELIABILITY.md)."""
    rec = dict(scenario=scenario, profile=profile_name(), **figures)
    line = json.dumps(rec, sort_keys=True)
    sys.stderr.write("\nFIGURES %s\n" % line)
    if FIGURES_FILE:
        with open(FIGURES_FILE, "a") as f:
            f.write(line + "\n")


# ------------------------------------------------------------ payloads

def payload(k, pad=0):
    body = "k=%d" % k
    if pad:
        body += " " + ("%x" % (k % 16)) * pad
    return "%s c=%08x" % (body, zlib.crc32(body.encode()))


_PAYLOAD_RE = re.compile(rb"^(k=(\d+)(?: [0-9a-f]*)?) c=([0-9a-f]{8})$")


def check_payload(data):
    """Return k if data is an intact payload, else None."""
    m = _PAYLOAD_RE.match(data)
    if not m or zlib.crc32(m.group(1)) != int(m.group(3), 16):
        return None
    return int(m.group(2))


# ------------------------------------------------------------ publisher

class Pacer:
    """Feeds `sse-pub stream BUS --channel C` with payload(k) lines at
    `rate` per second from a thread. k counts up across restarts of the
    sse-pub process (kill_publisher() SIGKILLs the current one; the next
    batch starts a new one)."""

    def __init__(self, bus, channel, rate, pad=0, max_seconds=600):
        self.bus, self.channel, self.rate, self.pad = bus, channel, rate, pad
        self.max_seconds = max_seconds
        self.k = 0                  # next k to write
        self.proc = None
        self.restarts = 0
        self.kills = 0
        self._stop = threading.Event()
        self._mu = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _spawn(self):
        self.proc = subprocess.Popen(
            [harness.sse_pub_path(), "stream", self.bus, "--channel",
             self.channel], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        self.restarts += 1

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        t0 = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now - t0 > self.max_seconds:
                break
            due = int((now - t0) * self.rate)
            with self._mu:
                if due > self.k:
                    if self.proc is None or self.proc.poll() is not None:
                        self._spawn()
                    lines = "".join(payload(k, self.pad) + "\n"
                                    for k in range(self.k, due))
                    try:
                        self.proc.stdin.write(lines.encode())
                        self.proc.stdin.flush()
                        self.k = due
                    except (BrokenPipeError, OSError):
                        self.proc = None
            time.sleep(min(0.005, 1.0 / self.rate))

    def kill_publisher(self):
        """SIGKILL the running sse-pub (at whatever it is doing)."""
        with self._mu:
            p = self.proc
            if p and p.poll() is None:
                p.kill()
                p.wait()
                self.kills += 1
            self.proc = None

    def stop(self):
        """Stop feeding; let sse-pub publish what it has and exit."""
        self._stop.set()
        self.thread.join(10)
        with self._mu:
            if self.proc and self.proc.poll() is None:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()


# ------------------------------------------------------------ clients

class Conn:
    """One HTTP/1.1 SSE client connection's incremental parser state."""

    __slots__ = ("cl", "sock", "raw", "body", "head_done", "status",
                 "ended", "ev_id", "ev_data", "nconn")

    def __init__(self, cl, sock):
        self.cl, self.sock = cl, sock
        self.raw = b""
        self.body = b""
        self.head_done = False
        self.status = None
        self.ended = False


class Client:
    """One logical SSE client (across reconnections). Counters only."""

    def __init__(self, idx, path):
        self.idx, self.path = idx, path
        self.last_id = None         # last complete event's id
        self.first_seq = None
        self.last_seq = None
        self.events = 0
        self.gaps = 0               # events missing between two ids
        self.dups = 0               # ids not above the previous one
        self.bad = 0                # payloads failing their crc
        self.statuses = {}          # HTTP status -> count
        self.connects = 0
        self.ends = 0               # streams ended by the server
        self.comments = []          # non-heartbeat comments (bounded)
        self.ks = None              # list of payload k, if kept
        self.lat = None             # list of latencies (s), if kept
        self.stalled = False
        self.conn = None
        self.reconnect_at = None


_ID_RE = re.compile(rb"^[0-9a-fA-F]{8}:(\d+)$")
_EVENT_RE = re.compile(rb"id: ([0-9a-f]{8}:(\d+))\ndata: "
                       rb"(k=(\d+)(?: [0-9a-f]*)?) c=([0-9a-f]{8})\n\n")


class Fleet:
    """Many SSE clients on one epoll loop. reconnect=True: when a stream
    ends (server closed) or cannot connect, the client comes back after
    `retry_s` (with Last-Event-ID once it has one)."""

    def __init__(self, port, path, n, reconnect=False, retry_s=0.3,
                 keep_ks=False, latency=False, stalled=0, rcvbuf=0):
        self.port, self.n = port, n
        self.reconnect, self.retry_s = reconnect, retry_s
        self.latency = latency
        self.ep = select.epoll()
        self.clients = [Client(i, path) for i in range(n)]
        for c in self.clients:
            if keep_ks:
                c.ks = []
            if latency:
                c.lat = []
        for c in self.clients[:stalled]:
            c.stalled = True
        self.rcvbuf = rcvbuf
        self.fd2conn = {}
        self.connect_errors = 0

    # -- connections

    def _open(self, cl):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if cl.stalled and self.rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        s.settimeout(10)
        try:
            s.connect(("127.0.0.1", self.port))
        except OSError:
            s.close()
            self.connect_errors += 1
            cl.reconnect_at = time.monotonic() + self.retry_s
            return False
        hdrs = ["GET %s HTTP/1.1" % cl.path, "Host: 127.0.0.1",
                "Accept: text/event-stream"]
        if cl.last_id:
            hdrs.append("Last-Event-ID: %s" % cl.last_id.decode())
        try:
            s.sendall(("\r\n".join(hdrs) + "\r\n\r\n").encode())
        except OSError:
            s.close()
            self.connect_errors += 1
            cl.reconnect_at = time.monotonic() + self.retry_s
            return False
        s.setblocking(False)
        cn = Conn(cl, s)
        cl.conn = cn
        cl.connects += 1
        cl.reconnect_at = None
        self.fd2conn[s.fileno()] = cn
        if not cl.stalled:
            self.ep.register(s.fileno(), select.EPOLLIN)
        return True

    def open_all(self, timeout=120, batch=100):
        """Connect every client (in batches); returns when each has its
        response head or the time is up (AssertionError)."""
        deadline = time.monotonic() + timeout
        for i in range(0, self.n, batch):
            for cl in self.clients[i:i + batch]:
                self._open(cl)
            self.pump(0.01)
        while time.monotonic() < deadline:
            for cl in self.clients:
                if cl.conn is None and cl.reconnect_at is not None \
                        and time.monotonic() >= cl.reconnect_at:
                    self._open(cl)
            waiting = [cl for cl in self.clients if not cl.stalled and
                       (cl.conn is None or not cl.conn.head_done)]
            if not waiting:
                return
            self.pump(0.05)
        raise AssertionError("%d of %d clients have no response head after "
                             "%ds" % (len(waiting), self.n, timeout))

    def close(self, cl, rst=False):
        cn = cl.conn
        if not cn:
            return
        self._finish(cn)
        fd = cn.sock.fileno()
        self.fd2conn.pop(fd, None)
        if not cl.stalled:
            try:
                self.ep.unregister(fd)
            except (OSError, ValueError):
                pass
        if rst:
            try:
                cn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   struct.pack("ii", 1, 0))
            except OSError:
                pass
        cn.sock.close()
        cl.conn = None

    def close_all(self, rst=False):
        for cl in self.clients:
            self.close(cl, rst=rst)
        cl = None
        self.ep.close()

    # -- data

    def _finish(self, cn):
        """Parse what is left; a partial frame at the end is dropped (an
        EventSource dispatches an event only at its blank line)."""
        self._process(cn)

    def _process(self, cn):
        cl = cn.cl
        if not cn.head_done:
            i = cn.raw.find(b"\r\n\r\n")
            if i < 0:
                return
            head, cn.raw = cn.raw[:i], cn.raw[i + 4:]
            m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
            cn.status = int(m.group(1)) if m else 0
            cl.statuses[cn.status] = cl.statuses.get(cn.status, 0) + 1
            cn.head_done = True
            if cn.status != 200:
                cn.ended = True
                return
        # de-chunk every complete chunk
        raw, pos, out = cn.raw, 0, []
        while True:
            j = raw.find(b"\r\n", pos)
            if j < 0:
                break
            try:
                size = int(raw[pos:j].split(b";")[0], 16)
            except ValueError:
                cl.bad += 1
                cn.ended = True
                break
            if size == 0:
                cn.ended = True
                pos = len(raw)
                break
            if len(raw) < j + 2 + size + 2:
                break
            out.append(raw[j + 2:j + 2 + size])
            pos = j + 2 + size + 2
        cn.raw = raw[pos:]
        if out:
            cn.body += b"".join(out)
        end = cn.body.rfind(b"\n\n")
        if end < 0:
            return
        body, cn.body = cn.body[:end + 2], cn.body[end + 2:]
        now = time.time() if self.latency else 0
        # Fast path: runs of well-formed event frames by regex; anything
        # between them (comments, retry, or a frame that does not match:
        # garbled) goes through _frame, which checks it field by field.
        pos = 0
        last = cl.last_seq
        crc32 = zlib.crc32
        for m in _EVENT_RE.finditer(body):
            if m.start() != pos:
                for fr in body[pos:m.start()].split(b"\n\n")[:-1]:
                    cl.last_seq = last
                    self._frame(cl, fr, now)
                    last = cl.last_seq
            pos = m.end()
            if crc32(m.group(3)) != int(m.group(5), 16):
                cl.bad += 1
                continue
            seq = int(m.group(2))
            if last is not None:
                if seq <= last:
                    cl.dups += 1
                    continue
                cl.gaps += seq - last - 1
            else:
                cl.first_seq = seq
            last = seq
            cl.last_id = m.group(1)
            cl.events += 1
            if cl.ks is not None:
                cl.ks.append(int(m.group(4)))
            if cl.lat is not None:
                ts = _TS.get(int(m.group(4)))
                if ts:
                    cl.lat.append(now - ts)
        cl.last_seq = last
        if pos != len(body):
            for fr in body[pos:].split(b"\n\n")[:-1]:
                self._frame(cl, fr, now)

    def _frame(self, cl, fr, now):
        eid = data = None
        for line in fr.split(b"\n"):
            if line.startswith(b"id: "):
                eid = line[4:]
            elif line.startswith(b"data: "):
                data = line[6:] if data is None else data + b"\n" + line[6:]
            elif line.startswith(b":"):
                if not line.startswith(b": hb") and len(cl.comments) < 20:
                    cl.comments.append(line.decode("latin-1"))
        if eid is None:
            return
        m = _ID_RE.match(eid)
        k = check_payload(data) if data is not None else None
        if not m or k is None:
            cl.bad += 1
            return
        seq = int(m.group(1))
        if cl.last_seq is not None:
            if seq <= cl.last_seq:
                cl.dups += 1
                return
            cl.gaps += seq - cl.last_seq - 1
        else:
            cl.first_seq = seq
        cl.last_seq = seq
        cl.last_id = eid
        cl.events += 1
        if cl.ks is not None:
            cl.ks.append(k)
        if cl.lat is not None:
            ts = _TS.get(k)
            if ts:
                cl.lat.append(now - ts)

    def _read(self, cn):
        try:
            while True:
                d = cn.sock.recv(262144)
                if not d:
                    cn.ended = True
                    break
                cn.raw += d
                if len(d) < 262144:
                    break
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            cn.ended = True
        if len(cn.raw) > 4096 or cn.ended or self.latency \
                or not cn.head_done:
            self._process(cn)
        if cn.ended:
            cl = cn.cl
            cl.ends += 1
            self.close(cl)
            if self.reconnect:
                cl.reconnect_at = time.monotonic() + self.retry_s * (
                    0.5 + random.random())

    def pump(self, seconds):
        """Read for `seconds`, reconnecting clients that are due."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for fd, _ in self.ep.poll(min(left, 0.05), 512):
                cn = self.fd2conn.get(fd)
                if cn:
                    self._read(cn)
            if self.reconnect:
                now = time.monotonic()
                for cl in self.clients:
                    if cl.conn is None and cl.reconnect_at is not None \
                            and now >= cl.reconnect_at:
                        self._open(cl)

    def flush_parsers(self):
        for cl in self.clients:
            if cl.conn:
                self._process(cl.conn)

    def until(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            self.flush_parsers()    # small tails wait for 4 KB otherwise
            if pred():
                return
            if time.monotonic() >= deadline:
                raise AssertionError("timed out after %ds waiting for %s"
                                     % (timeout, what))
            self.pump(0.2)

    # -- summaries

    def totals(self):
        t = dict(clients=self.n, events=0, gaps=0, dups=0, bad=0,
                 connects=0, ends=0)
        for cl in self.clients:
            t["events"] += cl.events
            t["gaps"] += cl.gaps
            t["dups"] += cl.dups
            t["bad"] += cl.bad
            t["connects"] += cl.connects
            t["ends"] += cl.ends
        return t


# Publish timestamps by k, for latency (filled by Pacer users that want it).
_TS = {}


# ------------------------------------------------------------ accounting

def smaps_rollup(pid):
    """{field: kB} of /proc/PID/smaps_rollup (Pss, Rss, Anonymous...)."""
    out = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[-1] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[-2])
    except OSError:
        pass
    return out


def mapping_pss(pid, path_part):
    """PSS kB of pid's mappings whose path contains path_part."""
    total, hit = 0, False
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                first = line.split(None, 1)[0]
                if not first.endswith(":"):
                    hit = path_part in line
                elif hit and first == "Pss:":
                    total += int(line.split()[1])
    except OSError:
        pass
    return total


def children_usage(httpd, bus=None):
    """Sum over httpd's children: PSS kB, threads, fds; and their pids.
    With bus=PATH, pss_kb leaves out the bus mapping (page cache of a
    file shared with the publishers, bounded by the bus capacity, growing
    as the ring is first written: not the module's memory) and bus_kb
    reports it."""
    pids = httpd.child_pids()
    pss = thr = fds = busk = 0
    for p in pids:
        pss += smaps_rollup(p).get("Pss", 0)
        if bus:
            busk += mapping_pss(p, bus)
        thr += harness.proc_threads(p) or 0
        fds += harness.proc_fds(p) or 0
    return dict(pss_kb=pss - busk, bus_kb=busk, threads=thr, fds=fds,
                children=pids)


def metrics(port, timeout=10):
    """sse-metrics as {"name{labels}": value}."""
    head, body = harness.simple_request(port, "/sse-metrics",
                                        timeout=timeout)
    if head.status != 200:
        raise AssertionError("/sse-metrics answered %d" % head.status)
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def wait_streams_open(port, want, timeout):
    """Wait until the sse_streams_open gauge is `want`; return its value."""
    v = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = metrics(port).get("sse_streams_open")
        except (OSError, AssertionError):
            v = None
        if v == want:
            return v
        time.sleep(0.5)
    return v


def metrics_location():
    return ('<Location "/sse-metrics">\n    SetHandler sse-metrics\n'
            '    Require ip 127.0.0.1\n</Location>\n')


def build_bench_tool(name):
    """Compile bench/NAME.c (sse_load, sse_pace) into the build dir."""
    src = os.path.join(harness.REPO, "bench", name + ".c")
    exe = os.path.join(harness.BUILD_DIR, "bench", name)
    if not os.path.exists(exe) or \
            os.path.getmtime(exe) < os.path.getmtime(src):
        os.makedirs(os.path.dirname(exe), exist_ok=True)
        subprocess.run(["cc", "-std=gnu11", "-O2", "-Wall", "-Wextra",
                        "-o", exe, src], check=True)
    return exe


def raise_nofile(n):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(soft, n), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def big_httpd(tc, extra, streams, threads=64):
    """Start tc's httpd sized for `streams` concurrent streams: enough
    children of `threads` worker threads (ThreadLimit raised to match),
    all started at once, and room (ServerLimit x 2) for a gracefully
    stopping generation. Registered for cleanup like tc.start_httpd."""
    servers = (streams + threads - 1) // threads + 1
    h = harness.Httpd(tc.tmp, extra=extra, threads=threads)
    tc.httpd = h
    tc.addCleanup(tc._stop_httpd, h)
    base_render = h.render

    def render():
        base_render()
        with open(h.conf) as f:
            text = f.read()
        text = text.replace("ServerLimit 4",
                            "ServerLimit %d\n    ThreadLimit %d"
                            % (servers * 2, threads))
        text = text.replace("MaxRequestWorkers %d" % threads,
                            "MaxRequestWorkers %d" % (servers * threads))
        text = text.replace("StartServers 1", "StartServers %d" % servers)
        with open(h.conf, "w") as f:
            f.write(text)
        return h.conf
    h.render = render
    raise_nofile(4 * streams + 1024)
    h.start(timeout=60)
    return h
