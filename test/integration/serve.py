#!/usr/bin/env python3
"""Run one harness httpd standalone (used by the browser test).

    python3 test/integration/serve.py [--build-dir DIR] [--print-port]
        [--page DIR] [--retry MS]

Creates a bus in a fresh temp dir, starts apache2 with /events (channels
allowed: "b*"), and /page/ aliased to DIR (default test/browser/page).
Prints one JSON line: {"port", "bus", "sse_pub", "tmp"} (with --print-port
only the port is printed on the first line, then the JSON line). Then reads
commands on stdin, one per line, answering "ok" or "error: ...":
    graceful   -k graceful (returns once the new generation serves)
    restart    -k stop, then start again on the same port
    log        prints the error log as one JSON string
    stop       stops httpd and exits (EOF on stdin does the same)
"""

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir")
    ap.add_argument("--print-port", action="store_true")
    ap.add_argument("--page", default=os.path.join(
        os.path.dirname(HERE), "browser", "page"))
    ap.add_argument("--retry", default="500")
    args = ap.parse_args()
    if args.build_dir:
        harness.BUILD_DIR = os.path.abspath(args.build_dir)
    problems = harness.check_prerequisites()
    if problems:
        print(json.dumps({"error": "; ".join(problems)}), flush=True)
        return 1
    tmp = harness.make_tmpdir("sse-serve-")
    page = os.path.join(tmp, "page")
    # A copy in the 0755 temp dir, so www-data can read it whatever the
    # permissions of the source tree.
    shutil.copytree(args.page, page)
    for dp, dns, fns in os.walk(page):
        os.chmod(dp, 0o755)
        for fn in fns:
            os.chmod(os.path.join(dp, fn), 0o644)
    bus = os.path.join(tmp, "main.bus")
    pub = harness.SsePub(bus)
    pub.create(capacity="1M")
    extra = ('Alias /page/ "%s/"\n<Directory "%s">\n  Require all granted\n'
             '</Directory>\n' % (page, page) +
             harness.location("/events", bus, SSEChannelAllow='"b*"',
                              SSERetry=args.retry, SSEHeartbeat="5"))
    h = harness.Httpd(tmp, extra=extra)
    try:
        h.start()
    except harness.HarnessError as e:
        print(json.dumps({"error": str(e)}), flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
        return 1
    try:
        if args.print_port:
            print(h.port, flush=True)
        print(json.dumps({"port": h.port, "bus": bus, "tmp": tmp,
                          "sse_pub": pub.bin}), flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            try:
                if cmd == "graceful":
                    h.graceful()
                    print("ok", flush=True)
                elif cmd == "restart":
                    h.stop()
                    h.start()
                    print("ok", flush=True)
                elif cmd == "log":
                    print(json.dumps(h.error_log()), flush=True)
                elif cmd == "stop":
                    break
                elif cmd:
                    print("error: unknown command %r" % cmd, flush=True)
            except Exception as e:  # report, keep serving
                print("error: %s" % str(e).replace("\n", " "), flush=True)
    finally:
        h.stop()
        if not os.environ.get("SSE_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
