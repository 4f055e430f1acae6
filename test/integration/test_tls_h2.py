"""Streams over TLS (mod_ssl, HTTP/1.1 on a raw TLS socket) and over
HTTP/2 (mod_http2, driven by `curl --http2 -N -k`)."""

import os
import select
import shutil
import subprocess
import time
import unittest

from harness import HttpdTestCase, location


def loc(bus, **kw):
    kw.setdefault("SSEChannelAllow", '"*"')
    return location("/events", bus, **kw)


def make_cert(d):
    """Self-signed cert for 127.0.0.1/localhost in d (openssl req)."""
    key, crt = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-subj", "/CN=localhost", "-days", "2",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", key, "-out", crt]
    errs = []
    for _ in range(3):
        r = subprocess.run(argv, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60)
        if r.returncode == 0:
            return crt, key
        # stderr minus the key-generation progress dots
        err = r.stderr.decode("utf-8", "replace")
        errs.append("rc %d: %s" % (r.returncode, "\n".join(
            l for l in err.splitlines() if l.strip(".+*"))))
    raise AssertionError("openssl req failed 3 times: %s" % errs)


def tls_conf(root, crt, key, h2=False):
    return ("SSLEngine on\n"
            'SSLCertificateFile "%s"\n'
            'SSLCertificateKeyFile "%s"\n'
            'SSLSessionCache "shmcb:%s/run/ssl_scache(512000)"\n'
            "%s\n" % (crt, key, root,
                      "Protocols h2 http/1.1" if h2 else ""))


class CurlReader:
    """Reads a running curl's stdout with select() and a deadline."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.out = b""
        self.eof = False

    def read_until(self, pred, timeout):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while not pred(self.out):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            d = os.read(fd, 65536)
            if not d:
                self.eof = True
                return pred(self.out)
            self.out += d
        return True

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        err = self.proc.stderr.read().decode("utf-8", "replace")
        self.proc.stdout.close()
        self.proc.stderr.close()
        return err


class TlsTest(HttpdTestCase):

    def test_events_over_tls_http11(self):
        crt, key = make_cert(self.tmp)
        self.start_httpd(tls_conf(self.tmp, crt, key) + loc(self.bus_path),
                         modules=["socache_shmcb", "ssl"])
        c = self.stream("/events?channel=a", tls=True)
        self.assertEqual(c.head.get("Content-Type"),
                         "text/event-stream; charset=utf-8")
        ids = [self.pub.publish("a", "tls %d" % i) for i in range(3)]
        c.read_events(3)
        self.assertEqual([e.id for e in c.events], ids)
        self.assertEqual([e.data for e in c.events],
                         ["tls 0", "tls 1", "tls 2"])

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed")
    def test_events_over_http2(self):
        crt, key = make_cert(self.tmp)
        self.start_httpd(tls_conf(self.tmp, crt, key, h2=True) +
                         loc(self.bus_path),
                         modules=["socache_shmcb", "ssl", "http2"])
        url = "https://127.0.0.1:%d/events?channel=a" % self.httpd.port
        cr = CurlReader(["curl", "-sS", "-i", "--http2", "-N", "-k",
                         "--max-time", "30", url])
        try:
            ok = cr.read_until(lambda o: b"retry:" in o, 10)
            self.assertTrue(ok, "no retry line over h2; got %r" % cr.out)
            head = cr.out.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            self.assertTrue(head.startswith("HTTP/2 200"), head)
            self.assertIn("content-type: text/event-stream; charset=utf-8",
                          head.lower())
            ids = [self.pub.publish("a", "h2 %d" % i) for i in range(3)]
            # each event arrives while the stream is open (no buffering)
            ok = cr.read_until(lambda o: all(("id: %s\n" % i).encode() in o
                                             for i in ids), 10)
            self.assertTrue(ok, "events not received over h2: %r"
                            % cr.out[-500:])
            body = cr.out.split(b"\r\n\r\n", 1)[1]
            for i, eid in enumerate(ids):
                self.assertIn(("id: %s\ndata: h2 %d\n\n" % (eid, i)).encode(),
                              body)
        finally:
            cr.stop()
        self.assertNoCrash()

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed")
    def test_http2_stream_ends_with_retry_on_graceful(self):
        crt, key = make_cert(self.tmp)
        h = self.start_httpd(tls_conf(self.tmp, crt, key, h2=True) +
                             loc(self.bus_path, SSERetry="700"),
                             modules=["socache_shmcb", "ssl", "http2"])
        url = "https://127.0.0.1:%d/events?channel=a" % h.port
        cr = CurlReader(["curl", "-sS", "-i", "--http2", "-N", "-k",
                         "--max-time", "30", url])
        try:
            self.assertTrue(cr.read_until(lambda o: b"retry: 700" in o, 10),
                            "no retry line over h2; got %r" % cr.out)
            h.graceful()
            # the h2 stream ends (curl sees the end of the response and
            # exits) after a second retry line
            cr.read_until(lambda o: False, 10)  # reads until EOF or 10 s
            self.assertTrue(cr.eof, "h2 stream did not end within 10 s of "
                            "the graceful restart")
            # the final retry is SSERetry plus a random SSERetrySpread
            self.assertEqual(cr.out.count(b"retry: "), 2, cr.out[-300:])
            self.assertTrue(cr.out.split(b"\r\n\r\n", 1)[1].startswith(
                b"retry: 700\n\n"), cr.out[-300:])
            try:
                rc = cr.proc.wait(5)
            except subprocess.TimeoutExpired:
                rc = None
            self.assertEqual(rc, 0, "curl did not finish cleanly after the "
                             "stream ended (still running or error)")
        finally:
            cr.stop()
        self.assertNoCrash()


if __name__ == "__main__":
    unittest.main()
