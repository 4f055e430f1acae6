#!/usr/bin/env python3
"""make_seeds.py - write the seed corpora of the fuzz targets in test/fuzz/.

Seeds are small, hand-made inputs that reach the interesting paths at once
(a real ring of valid records for the bus reader, events with CR/LF/CRLF
for the framer, ids of each shape, NDJSON lines with every escape); the
fuzzer mutates from there. The bus reader's seeds are cut from a real bus
written by the built `sse-pub`, so they follow the on-disk format exactly.
Regression inputs (crashes found and fixed) are committed beside these
under names starting with "regress-" and are never rewritten here.

    python3 test/fuzz/make_seeds.py [--sse-pub ./sse-pub]
"""
import argparse
import os
import struct
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def reader_seeds(sse_pub):
    """Mode-A inputs for fuzz_bus_reader.c built from a real 64 KiB bus."""
    with tempfile.TemporaryDirectory() as d:
        bus = os.path.join(d, "s.bus")
        subprocess.run([sse_pub, "create", bus, "--capacity", "64K"],
                       check=True)
        lines = "".join(
            '{"channel":"%s","data":"line %d\\nsecond\\r\\nthird"%s}\n'
            % ("a" if i % 3 else "news", i,
               ',"id":"pub-%d","event":"tick"' % i if i % 4 == 0 else "")
            for i in range(40))
        subprocess.run([sse_pub, "stream", bus, "--format", "ndjson"],
                       input=lines.encode(), check=True)
        raw = open(bus, "rb").read()
    head_pos, head_seq, tail_pos, tail_seq = struct.unpack_from("<4Q", raw, 128)
    ring_off = struct.unpack_from("<Q", raw, 40)[0]
    ring = raw[ring_off:ring_off + head_pos]
    # script: n ops, then ops (see run_script in fuzz_bus_reader.c)
    script_all = bytes([8, 0, 5, 1, 6, 0, 7, 0x17, 0x0d])
    script_resume = bytes([6, 3 | 8]) + struct.pack("<Q", 5) + b"\x00" + \
        bytes([5, 4, 6]) + b"pub-12" + bytes([5, 2]) + struct.pack("<Q", 7) + \
        bytes([6])

    def mode_a(ctl, head, tail, hseq, tseq, body, script, off=0):
        out = bytes([0, ctl]) + struct.pack("<QQ", head, tail)
        out += struct.pack("<Q", hseq) if ctl & 4 else bytes([hseq & 255])
        out += struct.pack("<Q", tseq) if ctl & 8 else bytes([tseq & 255])
        out += b"".join(bytes([0]) + struct.pack("<Q", 0) for _ in range(8))
        out += struct.pack("<H", off) + bytes([len(script)]) + body + script
        return out

    write("bus_reader", "ring-all", mode_a(4 | 8, head_pos, tail_pos,
                                           head_seq, tail_seq, ring,
                                           script_all))
    write("bus_reader", "ring-resume", mode_a(4 | 8, head_pos, tail_pos,
                                              head_seq, tail_seq, ring,
                                              script_resume))
    write("bus_reader", "ring-plausible", mode_a(1 | 4 | 8, head_pos,
                                                 head_pos - tail_pos,
                                                 head_seq, tail_seq, ring,
                                                 script_all))
    # records placed at the end of the ring (the wrap)
    write("bus_reader", "ring-wrap", mode_a(4 | 8, 65536 + 200, 65536 - 48,
                                            head_seq, tail_seq, ring[:248],
                                            script_all, off=(65536 - 48) // 8))
    # mode B: header overlays
    write("bus_reader", "hdr-valid", bytes([0x06, 200]) + bytes(8) +
          bytes([4, 0, 5, 1, 7]))
    write("bus_reader", "hdr-capacity", bytes([0x06, 16]) +
          struct.pack("<Q", 1 << 20) + bytes([4, 0, 5, 1, 7]))
    write("bus_reader", "hdr-trunc", bytes([0x0e, 200, 0]) + bytes([2, 0, 5]))
    write("bus_reader", "hdr-magic", bytes([0x01, 0]) + b"SSSEBUS2")


def framer_seeds():
    def ev(ch, et, i, data):
        return bytes([len(ch), len(et), len(i)]) + ch + et + i + data
    write("framer", "plain", ev(b"news", b"", b"", b"hello"))
    write("framer", "lines", ev(b"a", b"tick", b"", b"one\ntwo\r\nthree\rfour"))
    write("framer", "trailing", ev(b"a", b"", b"", b"x\n\r\n\r"))
    write("framer", "pubid", ev(b"c", b"t", b"order-17", b""))
    write("framer", "inject", ev(b"a", b"x", b"", b"\n\nevent: evil\ndata: x"))
    write("framer", "badchan", ev(b"a\nb", b"", b"", b"x"))
    write("framer", "busid", ev(b"a", b"", b"0000abcd:12", b"x"))


def id_seeds():
    for name, s in [("bus", b"9f3ac21b:1042"), ("max", b"ffffffff:18446744073709551615"),
                    ("overflow", b"ffffffff:18446744073709551616"),
                    ("neg", b"-1"), ("pub", b"pub-3"), ("empty", b""),
                    ("upper", b"9F3AC21B:0"), ("chan", b"a\x00b\nc,d e")]:
        write("ids", name, s)


def ndjson_seeds():
    for name, s in [
            ("full", b'{"channel":"a","event":"t","id":"x1","data":"d"}'),
            ("escapes", b'{"channel":"a","data":"q\\"b\\\\s\\/n\\nr\\rt\\tb\\bf\\f"}'),
            ("unicode", b'{"channel":"\\u00e9","data":"\\ud83d\\ude00\\u0000\\u20ac"}'),
            ("ws", b' \t{ "channel" : "a" , "data" : "" } \r'),
            ("empty", b"{}"),
            ("bad-surrogate", b'{"data":"\\ud800x"}'),
            ("dup", b'{"data":"a","data":"b"}'),
            ("trunc", b'{"channel":"a","data":"abc'),
    ]:
        write("ndjson", name, s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sse-pub", default=os.path.join(REPO, "sse-pub"))
    a = ap.parse_args()
    reader_seeds(a.sse_pub)
    framer_seeds()
    id_seeds()
    ndjson_seeds()


if __name__ == "__main__":
    main()
