"""Integration-test harness for mod_sse: a real Debian apache2, the built
module, the built `sse-pub`, and a raw-socket SSE client.

What is here:
  - paths(): where the module and sse-pub are (--build-dir, SSE_MODULE,
    SSE_PUB); missing pieces are an error, never a skip (CI must not pass an
    integration run that tested nothing);
  - Httpd: renders a config into a fresh temp dir (own ServerRoot, PidFile,
    ErrorLog, DefaultRuntimeDir, Mutex dir), listens on a free 127.0.0.1
    port, runs children as www-data, starts/stops/gracefully restarts the
    real /usr/sbin/apache2 and always waits for its processes to be gone;
  - SsePub: runs the sse-pub CLI (create, publish, stream, info --json);
  - SseClient: HTTP/1.1 over a raw socket (optionally TLS) that parses the
    status line, headers and the chunked wire format exactly -- each chunk is
    kept, because one chunk is what one flush on the server produced -- and
    parses the SSE stream per the HTML spec (fields, comments, retry);
  - HttpdTestCase: unittest base class that gives each test a temp dir, a
    bus and an httpd, and cleans all of it up even when the test fails.

Invariants: every socket read has a timeout and every wait loop is bounded
in count and time, so a misbehaving server fails a test instead of hanging
the run. Only processes this harness started are ever signalled, by pid.

Called by test_*.py, run.py and serve.py (used by the browser test).
"""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
APACHE2 = os.environ.get("SSE_APACHE2", "/usr/sbin/apache2")
MODDIR = "/usr/lib/apache2/modules"
RUN_USER = "www-data"
RUN_GROUP = "www-data"

# Set by run.py / serve.py from --build-dir; default: the repository root
# (automake builds in the source tree).
BUILD_DIR = os.environ.get("SSE_BUILD_DIR", REPO)

# SSE_TEST_MODE=threaded|detached|auto adds `SSEMode X` to the server
# config of every generated httpd (run.py runs the streaming modules once
# more with detached); a test's own SSEMode in a <Location> still wins.
SSE_MODE = os.environ.get("SSE_TEST_MODE") or None
# More server-config lines for every httpd of a run (run.py's sendmsg pass:
# "SSEDetachedIOUring Off").
SSE_GLOBAL = os.environ.get("SSE_TEST_GLOBAL", "")

# SSE_APACHE2_PRELOAD=/path/libasan.so.8 starts apache2 with that library
# preloaded (only apache2, not the test's own tools): the asan-httpd stage
# loads an ASan-instrumented mod_sse into Debian's uninstrumented httpd this
# way. ASAN_OPTIONS from the environment reach httpd's children unchanged.
APACHE2_PRELOAD = os.environ.get("SSE_APACHE2_PRELOAD") or None


class HarnessError(Exception):
    """The test environment is broken (missing binary, httpd won't start)."""


# ---------------------------------------------------------------- paths

def _first_existing(cands):
    for c in cands:
        if c and os.path.exists(c):
            return c
    return None


def module_path():
    env = os.environ.get("SSE_MODULE")
    if env:
        return env
    return _first_existing([
        os.path.join(BUILD_DIR, ".libs", "mod_sse.so"),
        os.path.join(BUILD_DIR, "mod_sse", ".libs", "mod_sse.so"),
    ]) or os.path.join(BUILD_DIR, ".libs", "mod_sse.so")


def sse_pub_path():
    env = os.environ.get("SSE_PUB")
    if env:
        return env
    return _first_existing([
        os.path.join(BUILD_DIR, "sse-pub"),
        os.path.join(BUILD_DIR, "bus", "sse-pub"),
    ]) or os.path.join(BUILD_DIR, "sse-pub")


def check_prerequisites():
    """Return a list of problems; empty if the suite can run. Missing
    apache2, module or sse-pub is a failure of the run, not a skip."""
    problems = []
    if not os.access(APACHE2, os.X_OK):
        problems.append("apache2 not found at %s (apt-get install apache2)"
                        % APACHE2)
    if not os.path.exists(os.path.join(MODDIR, "mod_mpm_event.so")):
        problems.append("apache2 modules not found in %s" % MODDIR)
    mp = module_path()
    if not os.path.exists(mp):
        problems.append("mod_sse module not found at %s (build it with make, "
                        "or set SSE_MODULE / --build-dir)" % mp)
    sp = sse_pub_path()
    if not os.access(sp, os.X_OK):
        problems.append("sse-pub not found at %s (build it with make, or "
                        "set SSE_PUB / --build-dir)" % sp)
    if os.geteuid() != 0:
        problems.append("integration tests run httpd with User www-data and "
                        "must be started as root")
    return problems


def free_port():
    """A free TCP port on 127.0.0.1 (bound then released; httpd binds it
    right after, so a clash is possible but unlikely)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def make_tmpdir(prefix="sse-it-"):
    """A temp dir www-data can traverse and read (bus files live here)."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


def wait_for(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until true or timeout; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return False
    # state is the field after the ")" of the command name; Z = zombie.
    state = st[st.rindex(")") + 2]
    return state not in ("Z", "X")


def children_of(ppid):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                st = f.read()
        except OSError:
            continue
        rest = st[st.rindex(")") + 2:].split()
        if int(rest[1]) == ppid and rest[0] not in ("Z", "X"):
            out.append(int(name))
    return sorted(out)


def proc_threads(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


# ---------------------------------------------------------------- httpd

BASE_MODULES = ["authz_core", "authz_host", "authn_core", "mime", "alias"]

# One active child (MaxRequestWorkers == ThreadsPerChild) so per-child
# limits (SSEMaxStreams) and /proc accounting are deterministic; ServerLimit
# leaves room for a gracefully stopping generation. Same for event and worker.
_THREADED_MPM_CONF = """
<IfModule mpm_{mpm}_module>
    StartServers 1
    ServerLimit 4
    ThreadsPerChild {{threads}}
    MaxRequestWorkers {{threads}}
    MinSpareThreads 1
    MaxSpareThreads {{spare}}
    MaxConnectionsPerChild 0
</IfModule>
"""
MPM_CONF = {mpm: _THREADED_MPM_CONF.format(mpm=mpm)
            for mpm in ("event", "worker")}

CONF_TEMPLATE = """# generated by test/integration/harness.py
ServerRoot "{root}"
ServerName 127.0.0.1
PidFile "{root}/httpd.pid"
ErrorLog "{root}/error.log"
DefaultRuntimeDir "{root}/run"
Mutex file:{root}/run default
User {user}
Group {group}
Listen 127.0.0.1:{port}
Timeout 30
KeepAlive On
GracefulShutdownTimeout 30
TypesConfig /etc/mime.types
DocumentRoot "{root}/htdocs"
LogFormat "%h %l %u %t \\"%r\\" %>s %b %D" common
CustomLog "{root}/access.log" common

{loadmodules}
{ssemodule}
{mpmconf}
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "{root}/htdocs">
    Require all granted
</Directory>

{extra}
"""


class Httpd:
    """One apache2 instance with its own ServerRoot in a temp dir."""

    def __init__(self, root, extra="", mpm="event", modules=(), threads=25,
                 port=None, module=None, tls=False):
        self.root = root
        self.port = port or free_port()
        self.mpm = mpm
        self.modules = list(modules)
        self.extra = extra
        self.threads = threads
        # module=None: the built module; module=False: don't load mod_sse
        # (harness self-checks only)
        self.module = module_path() if module is None else module
        self.tls = tls
        self.conf = os.path.join(root, "httpd.conf")
        self.pidfile = os.path.join(root, "httpd.pid")
        self.errlog = os.path.join(root, "error.log")
        self.pid = None
        os.makedirs(os.path.join(root, "run"), exist_ok=True)
        os.makedirs(os.path.join(root, "htdocs"), exist_ok=True)
        os.chmod(os.path.join(root, "run"), 0o755)
        with open(os.path.join(root, "htdocs", "index.html"), "w") as f:
            f.write("ok\n")

    def render(self):
        mods = ["mpm_" + self.mpm] + BASE_MODULES
        for m in self.modules:
            if m not in mods:
                mods.append(m)
        lm = "\n".join('LoadModule %s_module "%s/mod_%s.so"' % (m, MODDIR, m)
                       for m in mods)
        text = CONF_TEMPLATE.format(
            root=self.root, user=RUN_USER, group=RUN_GROUP, port=self.port,
            loadmodules=lm,
            ssemodule=('LoadModule sse_module "%s"\nLogLevel warn sse:debug'
                       % self.module + ("\nSSEMode %s" % SSE_MODE
                                        if SSE_MODE else "")
                       + ("\n" + SSE_GLOBAL if SSE_GLOBAL else "")
                       if self.module
                       else "# (mod_sse not loaded)\nLogLevel warn"),
            mpmconf=MPM_CONF[self.mpm].format(threads=self.threads,
                                              spare=self.threads * 2 + 1),
            extra=self.extra)
        with open(self.conf, "w") as f:
            f.write(text)
        return self.conf

    # -- control

    def _ctl(self, *args, timeout=30):
        # stdin from /dev/null: if ours is closed, a child could get fd 0
        # for a file it opens and later lose it.
        env = None
        if APACHE2_PRELOAD:
            env = dict(os.environ, LD_PRELOAD=APACHE2_PRELOAD)
        return subprocess.run([APACHE2, "-f", self.conf] + list(args),
                              stdin=subprocess.DEVNULL, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, text=True)

    def configtest(self):
        """(exit code, output) of `apache2 -t -f CONF`."""
        self.render()
        r = self._ctl("-t")
        return r.returncode, r.stdout

    def _read_pid(self):
        try:
            with open(self.pidfile) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def port_answers(self):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=1)
        except OSError:
            return False
        s.close()
        return True

    def start(self, timeout=15):
        self.render()
        r = self._ctl("-k", "start")
        if r.returncode != 0:
            raise HarnessError("apache2 -k start failed (%d): %s\n%s" % (
                r.returncode, r.stdout, self.error_log()[-3000:]))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self._read_pid()
            if pid and pid_alive(pid) and self.port_answers() \
                    and children_of(pid):
                self.pid = pid
                return self
            time.sleep(0.05)
        self.pid = self._read_pid()
        log = self.error_log()[-3000:]
        self.kill()
        raise HarnessError("apache2 did not answer on port %d within %ds; "
                           "error log:\n%s" % (self.port, timeout, log))

    def _resumes(self):
        return self.error_log().count("resuming normal operations")

    def graceful(self, timeout=15):
        """-k graceful; returns once the new generation is serving."""
        before = self._resumes()
        r = self._ctl("-k", "graceful")
        if r.returncode != 0:
            raise HarnessError("apache2 -k graceful failed: %s" % r.stdout)
        ok = wait_for(lambda: self._resumes() > before, timeout)
        if not ok:
            raise HarnessError("graceful restart did not complete within %ds"
                               % timeout)
        wait_for(self.port_answers, timeout)

    def _wait_gone(self, pid, kids, timeout):
        ok = wait_for(lambda: not pid_alive(pid)
                      and not any(pid_alive(k) for k in kids), timeout)
        return bool(ok)

    def stop(self, timeout=20):
        """-k stop and wait until the parent and its children are gone."""
        pid = self.pid or self._read_pid()
        if not pid or not pid_alive(pid):
            self.pid = None
            return True
        kids = children_of(pid)
        self._ctl("-k", "stop")
        ok = self._wait_gone(pid, kids, timeout)
        if not ok:
            self.kill()
        self.pid = None
        return ok

    def graceful_stop(self, timeout=40):
        pid = self.pid or self._read_pid()
        if not pid or not pid_alive(pid):
            return True
        kids = children_of(pid)
        self._ctl("-k", "graceful-stop")
        ok = self._wait_gone(pid, kids, timeout)
        if not ok:
            self.kill()
        self.pid = None
        return ok

    def kill(self):
        """Last resort: SIGKILL this instance's parent and children, by pid."""
        pid = self.pid or self._read_pid()
        if not pid:
            return
        for k in children_of(pid) + [pid]:
            try:
                os.kill(k, signal.SIGKILL)
            except OSError:
                pass
        wait_for(lambda: not pid_alive(pid), 5)
        self.pid = None

    def is_running(self):
        pid = self.pid or self._read_pid()
        return bool(pid and pid_alive(pid))

    # -- inspection

    def error_log(self):
        try:
            with open(self.errlog, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def error_log_mark(self):
        try:
            return os.path.getsize(self.errlog)
        except OSError:
            return 0

    def error_log_since(self, mark):
        try:
            with open(self.errlog, errors="replace") as f:
                f.seek(mark)
                return f.read()
        except OSError:
            return ""

    def crashes(self):
        """Lines telling that a child died of a signal (segfault etc.)."""
        return [l for l in self.error_log().splitlines()
                if "exit signal" in l or "Segmentation fault" in l
                or "AH00052" in l]

    def child_pids(self):
        return children_of(self.pid) if self.pid else []

    def child_stats(self):
        """{pid: (threads, fds)} of every child."""
        out = {}
        for k in self.child_pids():
            out[k] = (proc_threads(k), proc_fds(k))
        return out


# ---------------------------------------------------------------- sse-pub

class SsePubError(Exception):
    def __init__(self, args, rc, out, err):
        super().__init__("sse-pub %s exited %d: %s" % (" ".join(args), rc,
                                                      err.strip()))
        self.rc, self.out, self.err = rc, out, err


class SsePub:
    def __init__(self, path, binary=None):
        self.path = path
        self.bin = binary or sse_pub_path()

    def run(self, *args, input=None, check=True, timeout=60):
        argv = [self.bin] + [str(a) for a in args]
        if input is None:
            input = b""     # never inherit our stdin (it may be closed)
        r = subprocess.run(argv, input=input, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        out = r.stdout.decode("utf-8", "replace")
        err = r.stderr.decode("utf-8", "replace")
        if check and r.returncode != 0:
            raise SsePubError(argv[1:], r.returncode, out, err)
        return r.returncode, out, err

    def create(self, capacity="1M", max_record=None, force=False):
        args = ["create", self.path, "--capacity", capacity,
                "--group", RUN_GROUP, "--mode", "0640"]
        if max_record:
            args += ["--max-record", max_record]
        if force:
            args.append("--force")
        self.run(*args)

    def publish(self, channel, data, event=None, id=None):
        """Publish one event; returns the id sse-pub printed."""
        args = ["publish", self.path, "--channel", channel]
        if event:
            args += ["--event", event]
        if id:
            args += ["--id", id]
        if isinstance(data, str):
            data = data.encode("utf-8")
        args.append("-")
        _, out, _ = self.run(*args, input=data)
        return out.strip()

    def stream_lines(self, channel, lines, event=None):
        """Publish many events with one `sse-pub stream` (one batch)."""
        args = ["stream", self.path, "--channel", channel]
        if event:
            args += ["--event", event]
        payload = "".join(l + "\n" for l in lines).encode("utf-8")
        return self.run(*args, input=payload)

    def stream_ndjson(self, events):
        payload = "".join(json.dumps(e) + "\n" for e in events).encode()
        return self.run("stream", self.path, "--format", "ndjson",
                        input=payload)

    def info(self):
        _, out, _ = self.run("info", self.path, "--json")
        return json.loads(out)


def id_seq(event_id):
    """Sequence part of a bus id "9f3ac21b:1042" -> 1042."""
    m = re.fullmatch(r"([0-9a-fA-F]{8}):(\d+)", event_id or "")
    if not m:
        raise AssertionError("not a bus id: %r" % (event_id,))
    return int(m.group(2))


def id_epoch(event_id):
    m = re.fullmatch(r"([0-9a-fA-F]{8}):(\d+)", event_id or "")
    if not m:
        raise AssertionError("not a bus id: %r" % (event_id,))
    return m.group(1).lower()


# ---------------------------------------------------------------- client

class Event:
    __slots__ = ("type", "data", "id", "chunk")

    def __init__(self, type, data, id, chunk):
        self.type, self.data, self.id, self.chunk = type, data, id, chunk

    def __repr__(self):
        return "Event(type=%r, id=%r, data=%r, chunk=%d)" % (
            self.type, self.id, self.data[:60], self.chunk)


_EOL = re.compile(r"[\r\n]")


class SseParser:
    """Event-stream interpretation per the HTML spec (9.2.6), incremental.
    Produces items: ("event", Event), ("comment", text), ("retry", ms).
    Also remembers, per chunk, whether the chunk ended on an event boundary
    (no partial line, no pending fields)."""

    def __init__(self):
        self.buf = ""
        self.skip_lf = False
        self.data = []
        self.type = ""
        self.last_id = ""
        self.pending = False   # fields seen since the last blank line
        self.items = []
        self.first = True      # strip a leading BOM once
        self._dec = None

    def feed(self, raw, chunk_index):
        import codecs
        if self._dec is None:
            self._dec = codecs.getincrementaldecoder("utf-8")("replace")
        text = self._dec.decode(raw)
        if self.first and text:
            if text.startswith("\ufeff"):
                text = text[1:]
            self.first = False
        out = []
        i = 0
        n = len(text)
        while i < n:
            ch = text[i]
            if self.skip_lf:
                self.skip_lf = False
                if ch == "\n":
                    i += 1
                    continue
            m = _EOL.search(text, i)
            j = m.start() if m else n
            if j == n:
                self.buf += text[i:]
                break
            line = self.buf + text[i:j]
            self.buf = ""
            if text[j] == "\r":
                self.skip_lf = True
            i = j + 1
            self._line(line, chunk_index, out)
        self.items.extend(out)
        return out

    def at_boundary(self):
        return self.buf == "" and not self.pending

    def _line(self, line, ci, out):
        if line == "":
            if self.data:
                data = "\n".join(self.data)
                out.append(("event", Event(self.type or "message", data,
                                           self.last_id, ci)))
            self.data = []
            self.type = ""
            self.pending = False
            return
        if line.startswith(":"):
            # comment text without the conventional single leading space
            text = line[1:]
            out.append(("comment", text[1:] if text.startswith(" ") else text))
            return
        self.pending = True
        if ":" in line:
            name, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.type = value
        elif name == "id":
            if "\0" not in value:
                self.last_id = value
        elif name == "retry":
            if value.isdigit():
                out.append(("retry", int(value)))
        # other fields are ignored, as a browser does


class ClientTimeout(AssertionError):
    """The server did not send what was expected in time."""


class HttpResponseHead:
    def __init__(self, version, status, reason, headers):
        self.version, self.status, self.reason = version, status, reason
        self.headers = headers  # list of (name, value)

    def get(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def get_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]


class SseClient:
    """HTTP/1.1 client on a raw socket with exact chunked parsing.

    After open(): .head is the response head; .chunks the list of chunk
    payloads received so far (bytes); .items the parsed SSE items;
    .events the dispatched events; .ended True once the terminating chunk
    or EOF arrived. Every read has a timeout."""

    def __init__(self, port, path="/events", method="GET", headers=None,
                 host="127.0.0.1", tls=False, rcvbuf=None, timeout=10,
                 body=None):
        self.port, self.path, self.method = port, path, method
        self.extra_headers = headers or {}
        self.host, self.tls, self.rcvbuf = host, tls, rcvbuf
        self.timeout = timeout
        self.body = body
        self.sock = None
        self.rbuf = b""
        self.head = None
        self.chunks = []
        self.chunk_boundaries = []  # parser at event boundary after chunk i
        self.parser = SseParser()
        self.ended = False
        self.eof = False
        self.terminated = False     # saw the zero-length last chunk
        self.chunked = False
        self.content_length = None
        self.raw_body = b""

    # -- connection

    def connect(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rcvbuf:
            # Before connect(), so the advertised window stays small.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        s.settimeout(self.timeout)
        s.connect((self.host, self.port))
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["http/1.1"])
            s = ctx.wrap_socket(s, server_hostname="localhost")
        self.sock = s
        return self

    def send_request(self):
        hdrs = {"Host": "127.0.0.1:%d" % self.port,
                "Accept": "text/event-stream",
                "Cache-Control": "no-cache"}
        hdrs.update(self.extra_headers)
        lines = ["%s %s HTTP/1.1" % (self.method, self.path)]
        for k, v in hdrs.items():
            if v is None:
                continue
            lines.append("%s: %s" % (k, v))
        body = self.body or b""
        if body or self.method in ("POST", "PUT"):
            lines.append("Content-Length: %d" % len(body))
        req = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self.sock.sendall(req)

    def open(self):
        """Connect, send the request, read the response head."""
        self.connect()
        self.send_request()
        self.read_head()
        return self

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def rst_close(self):
        """Abort with TCP RST (SO_LINGER on, timeout 0)."""
        if self.sock:
            raw = self.sock
            try:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                               struct.pack("ii", 1, 0))
            except OSError:
                pass
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- low-level reads

    def _recv(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClientTimeout("timed out waiting for data from server")
        self.sock.settimeout(min(remaining, self.timeout))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise ClientTimeout("timed out waiting for data from server")
        except ssl.SSLError as e:
            if "EOF" in str(e) or "UNEXPECTED" in str(e):
                data = b""
            else:
                raise
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        return data

    def _read_line(self, deadline, limit=65536):
        while b"\r\n" not in self.rbuf:
            if len(self.rbuf) > limit:
                raise AssertionError("line too long from server")
            d = self._recv(deadline)
            if not d:
                raise AssertionError("connection closed mid-line; got %r"
                                     % self.rbuf[:200])
            self.rbuf += d
        line, self.rbuf = self.rbuf.split(b"\r\n", 1)
        return line

    def _read_exact(self, n, deadline):
        while len(self.rbuf) < n:
            d = self._recv(deadline)
            if not d:
                raise AssertionError("connection closed mid-chunk (%d of %d "
                                     "bytes)" % (len(self.rbuf), n))
            self.rbuf += d
        out, self.rbuf = self.rbuf[:n], self.rbuf[n:]
        return out

    def read_head(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        status = self._read_line(deadline).decode("latin-1")
        m = re.match(r"HTTP/(\d\.\d) (\d{3})(?: (.*))?$", status)
        if not m:
            raise AssertionError("bad status line %r" % status)
        headers = []
        while True:
            line = self._read_line(deadline).decode("latin-1")
            if line == "":
                break
            if line[0] in " \t" and headers:
                k, v = headers[-1]
                headers[-1] = (k, v + " " + line.strip())
                continue
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
        self.head = HttpResponseHead(m.group(1), int(m.group(2)),
                                     m.group(3) or "", headers)
        te = (self.head.get("Transfer-Encoding") or "").lower()
        self.chunked = "chunked" in te
        cl = self.head.get("Content-Length")
        self.content_length = int(cl) if cl is not None else None
        if self.method == "HEAD" or self.head.status in (204, 304):
            self.content_length = 0
            self.chunked = False
        return self.head

    @property
    def status(self):
        return self.head.status if self.head else None

    def read_chunk(self, timeout=None):
        """Read one chunk (chunked) or one recv() worth of body (otherwise).
        Returns the payload bytes, or None once the body has ended."""
        if self.ended:
            return None
        deadline = time.monotonic() + (timeout or self.timeout)
        if self.chunked:
            line = self._read_line(deadline).decode("latin-1")
            size_s = line.split(";", 1)[0].strip()
            if not re.fullmatch(r"[0-9a-fA-F]+", size_s):
                raise AssertionError("bad chunk size line %r" % line)
            size = int(size_s, 16)
            if size == 0:
                # trailers until the empty line
                while self._read_line(deadline) != b"":
                    pass
                self.terminated = True
                self.ended = True
                return None
            data = self._read_exact(size, deadline)
            crlf = self._read_exact(2, deadline)
            if crlf != b"\r\n":
                raise AssertionError("chunk of %d bytes not followed by CRLF "
                                     "(got %r)" % (size, crlf))
        else:
            if self.content_length is not None:
                left = self.content_length - len(self.raw_body)
                if left <= 0:
                    self.ended = True
                    return None
                if not self.rbuf:
                    d = self._recv(deadline)
                    if not d:
                        self.ended = True
                        return None
                    self.rbuf += d
                data, self.rbuf = self.rbuf[:left], self.rbuf[left:]
            else:
                if self.rbuf:
                    data, self.rbuf = self.rbuf, b""
                else:
                    data = self._recv(deadline)
                    if not data:
                        self.ended = True
                        return None
            self.raw_body += data
        idx = len(self.chunks)
        self.chunks.append(data)
        self.parser.feed(data, idx)
        self.chunk_boundaries.append(self.parser.at_boundary())
        return data

    # -- SSE-level reads

    @property
    def items(self):
        return self.parser.items

    @property
    def events(self):
        return [v for k, v in self.parser.items if k == "event"]

    @property
    def comments(self):
        return [v for k, v in self.parser.items if k == "comment"]

    def read_until(self, pred, timeout=10, what="condition"):
        """Read chunks until pred(self) is true; raise ClientTimeout if the
        stream ends or the time runs out first."""
        deadline = time.monotonic() + timeout
        while not pred(self):
            if self.ended:
                raise AssertionError("stream ended before %s; items: %r"
                                     % (what, self.items[-10:]))
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClientTimeout("timed out after %ss waiting for %s; "
                                    "items so far: %r" % (timeout, what,
                                                          self.items[-10:]))
            try:
                self.read_chunk(timeout=left)
            except ClientTimeout:
                raise ClientTimeout("timed out after %ss waiting for %s; "
                                    "items so far: %r" % (timeout, what,
                                                          self.items[-10:]))
        return True

    def read_events(self, n, timeout=10):
        """Read until at least n events in total have arrived."""
        self.read_until(lambda c: len(c.events) >= n, timeout,
                        "%d events" % n)
        return self.events

    def read_retry(self, timeout=10):
        self.read_until(lambda c: any(k == "retry" for k, _ in c.items),
                        timeout, "the retry line")
        return [v for k, v in self.items if k == "retry"][0]

    def read_to_end(self, timeout=10):
        """Read until the body ends; returns True if it ended in time."""
        deadline = time.monotonic() + timeout
        while not self.ended:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self.read_chunk(timeout=left)
            except ClientTimeout:
                return False
            except AssertionError:
                # closed mid-chunk: the stream has ended (abruptly)
                self.ended = True
        return True

    def drain_quietly(self, seconds):
        """Read whatever arrives for `seconds`; returns number of chunks."""
        deadline = time.monotonic() + seconds
        n = 0
        while not self.ended and time.monotonic() < deadline:
            try:
                if self.read_chunk(timeout=max(0.01,
                                               deadline - time.monotonic())):
                    n += 1
            except ClientTimeout:
                break
        return n


def close_half_with_rst(clients):
    """Close every other client cleanly (FIN), the rest with RST."""
    for i, c in enumerate(clients):
        if i % 2:
            c.rst_close()
        else:
            c.close()


def simple_request(port, path, method="GET", headers=None, tls=False,
                   timeout=10, body=None):
    """One request, Connection: close; returns (head, body bytes).
    Reads a bounded body (streams are cut after 1 s of silence)."""
    h = {"Connection": "close"}
    h.update(headers or {})
    c = SseClient(port, path, method=method, headers=h, tls=tls,
                  timeout=timeout, body=body)
    try:
        c.open()
        if c.head.status == 200 and method == "GET" and \
                "event-stream" in (c.head.get("Content-Type") or ""):
            c.drain_quietly(1.0)
        else:
            c.read_to_end(timeout)
        return c.head, b"".join(c.chunks)
    finally:
        c.close()


# ---------------------------------------------------------------- test base

def location(path="/events", bus=None, **directives):
    """Render a <Location> block for sse-stream. Keyword names are the
    directive names (SSEChannel="a b"); a value of None omits it."""
    lines = ['<Location "%s">' % path, "    SetHandler sse-stream"]
    if bus is not None:
        lines.append('    SSEBus "%s"' % bus)
    for k, v in directives.items():
        if v is None:
            continue
        lines.append("    %s %s" % (k, v))
    lines.append("</Location>")
    return "\n".join(lines) + "\n"


class HttpdTestCase(unittest.TestCase):
    """Each test gets self.tmp (0755), self.bus_path, self.pub (SsePub) and
    self.start_httpd(); httpd is stopped and the temp dir removed even if the
    test fails. The error log is printed when a test fails."""

    bus_capacity = "1M"
    bus_max_record = None
    create_bus = True

    def setUp(self):
        problems = check_prerequisites()
        if problems:
            # A failure, not a skip: CI must not pass without testing.
            self.fail("integration prerequisites missing: " +
                      "; ".join(problems))
        self.tmp = make_tmpdir()
        self.addCleanup(self._rm_tmp)
        self.bus_path = os.path.join(self.tmp, "main.bus")
        self.pub = SsePub(self.bus_path)
        self.httpd = None
        self._clients = []
        self.addCleanup(self._close_clients)
        if self.create_bus:
            self.pub.create(capacity=self.bus_capacity,
                            max_record=self.bus_max_record)

    def _rm_tmp(self):
        if os.environ.get("SSE_KEEP_TMP"):
            sys.stderr.write("kept %s\n" % self.tmp)
            return
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _close_clients(self):
        for c in self._clients:
            c.close()

    def start_httpd(self, extra, **kw):
        h = Httpd(self.tmp, extra=extra, **kw)
        self.httpd = h
        self.addCleanup(self._stop_httpd, h)
        h.start()
        return h

    def _stop_httpd(self, h):
        ok = h.stop()
        failed = self._has_failed()
        if failed or os.environ.get("SSE_SHOW_LOG"):
            sys.stderr.write("\n--- error log (%s) ---\n%s--- end ---\n" % (
                self.id(), h.error_log()[-4000:]))
        if not ok:
            raise AssertionError("httpd did not stop within 20 s; killed")

    def _has_failed(self):
        """True if this test (or one of its subtests) has already failed.
        (unittest's outcome.success is reset for each cleanup, so look at
        the result, where failures are recorded as they happen.)"""
        outcome = getattr(self, "_outcome", None)
        res = getattr(outcome, "result", None)
        if res is None:
            return False
        for t, _ in list(res.failures) + list(res.errors):
            if t is self or getattr(t, "test_case", None) is self:
                return True
        return False

    def client(self, path="/events", **kw):
        kw.setdefault("port", self.httpd.port)
        c = SseClient(path=path, **kw)
        self._clients.append(c)
        return c

    def stream(self, path="/events", wait_retry=True, **kw):
        """Open a stream, assert 200, wait for the retry line (so the
        server-side cursor exists before the test publishes)."""
        c = self.client(path, **kw).open()
        self.assertEqual(c.status, 200, "GET %s: %s %s body %r" % (
            path, c.status, c.head.reason, c.rbuf[:200]))
        if wait_retry:
            c.read_retry()
        return c

    def assertNoCrash(self):
        if self.httpd:
            self.assertEqual(self.httpd.crashes(), [],
                             "httpd child crashed")

    # -- resources per child (threads, descriptors)

    def settle_children(self, seconds=2.0, limit=20):
        """{pid: (threads, fds)} once unchanged for `seconds` (at most
        `limit` s of waiting; then the last sample)."""
        last, since = None, time.monotonic()
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            s = self.httpd.child_stats()
            if s != last:
                last, since = s, time.monotonic()
            elif time.monotonic() - since >= seconds:
                return s
            time.sleep(0.2)
        return last

    def assertChildrenBackTo(self, base, thread_tol=1, fd_tol=2, timeout=15):
        """Same children as in `base` (none died or was replaced), each
        back to at most its baseline threads + thread_tol and descriptors
        + fd_tol within `timeout` s."""
        h = self.httpd

        def ok():
            now = h.child_stats()
            return set(now) == set(base) and all(
                now[p][0] <= base[p][0] + thread_tol and
                now[p][1] <= base[p][1] + fd_tol for p in base)
        back = wait_for(ok, timeout, 0.25)
        now = h.child_stats()
        self.assertEqual(set(now), set(base),
                         "children changed (crash or respawn?) %r -> %r"
                         % (base, now))
        self.assertTrue(back, "not back to baseline (threads, fds) per "
                        "child: baseline %r, now %r" % (base, now))
