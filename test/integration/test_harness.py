"""Self-checks of the harness's own parsers (no httpd needed): the chunked
decoder and the SSE parser the other tests rely on. A raw local server
sends crafted bytes with deliberate split points."""

import socket
import threading
import unittest

from harness import SseClient, SseParser


def serve_once(payload_parts):
    """A one-shot server on 127.0.0.1 that sends parts with small pauses."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def run():
        conn, _ = srv.accept()
        conn.recv(65536)
        import time
        for p in payload_parts:
            conn.sendall(p)
            time.sleep(0.02)
        conn.close()
        srv.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return port, t


class ParserTest(unittest.TestCase):

    def test_sse_fields_comments_retry_and_line_endings(self):
        p = SseParser()
        p.feed(b"retry: 10\n\n: hi\r\nid: 1\r", 0)
        p.feed(b"\nevent: tick\rdata: a\ndata:b\ndata\n\n", 1)
        p.feed(b"data: x\r\n\r\nid\n", 2)
        items = p.items
        self.assertEqual(items[0], ("retry", 10))
        self.assertEqual(items[1], ("comment", "hi"))
        ev = [v for k, v in items if k == "event"]
        self.assertEqual(ev[0].type, "tick")
        self.assertEqual(ev[0].data, "a\nb\n")
        self.assertEqual(ev[0].id, "1")
        self.assertEqual(ev[1].data, "x")
        self.assertEqual(ev[1].id, "1")   # id persists per spec
        self.assertFalse(p.at_boundary())

    def test_chunked_decoding_keeps_chunk_boundaries(self):
        body = [b"retry: 5\n\n", b"id: 1\ndata: one\n\n",
                b"id: 2\ndata: two\n\nid: 3\ndata: three\n\n"]
        wire = b"".join(b"%x\r\n%s\r\n" % (len(b), b) for b in body) + \
            b"0\r\n\r\n"
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        # split the wire at awkward places (inside size lines and CRLFs)
        parts = [head + wire[:3], wire[3:17], wire[17:18], wire[18:60],
                 wire[60:]]
        port, t = serve_once(parts)
        c = SseClient(port, "/x", timeout=5).open()
        self.assertTrue(c.read_to_end(5))
        self.assertTrue(c.terminated)
        self.assertEqual(c.chunks, body)
        self.assertEqual([e.id for e in c.events], ["1", "2", "3"])
        self.assertEqual([e.chunk for e in c.events], [1, 2, 2])
        c.close()
        t.join(5)

    def test_bad_chunk_is_an_error_not_a_hang(self):
        head = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nabcdeXY")
        port, t = serve_once([head])
        c = SseClient(port, "/x", timeout=5).open()
        with self.assertRaises(AssertionError):
            c.read_chunk()
        c.close()
        t.join(5)


if __name__ == "__main__":
    unittest.main()
