#!/usr/bin/env python3
"""Run the mod_sse integration suite against the real Debian apache2.

    python3 test/integration/run.py [--build-dir DIR] [-k SUBSTRING] [-v]

Prints one line per test and a final line exactly
`integration: N passed, N failed, N skipped`; exits non-zero on any failure
or error. A missing apache2, module or sse-pub fails the run (CI must never
"pass" integration tests that did not run). Env: SSE_MODULE, SSE_PUB
override the built paths; SSE_KEEP_TMP=1 keeps temp dirs; SSE_SHOW_LOG=1
prints every test's error log. A full run (no test names, no -k) runs
the streaming modules (DETACHED_RERUN) a second time with SSEMode detached
and the write paths (SENDMSG_RERUN) a third time with SSEDetachedIOUring
Off; SSE_TEST_MODE=threaded|detached|auto runs everything in that mode,
once (SSE_TEST_GLOBAL adds server-config lines)."""

import argparse
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


# Run a second time with `SSEMode detached` (harness.SSE_MODE) after a
# full run: every streaming behaviour must hold in both modes.
DETACHED_RERUN = ["test_stream", "test_resume", "test_liveness",
                  "test_restart", "test_disconnect", "test_channels",
                  "test_storm"]
# Detached streams send through io_uring where the kernel allows it; these
# run a third time with `SSEDetachedIOUring Off`, the sendmsg path that a
# kernel without io_uring gets (partial writes, pending, slow clients,
# resets, restarts).
SENDMSG_RERUN = ["test_stream", "test_liveness", "test_restart",
                 "test_storm"]


class LineResult(unittest.TextTestResult):
    """One line per test: PASS/FAIL/ERROR/SKIP, name, seconds."""

    prefix = ""  # "[detached] " during the re-run

    def startTest(self, test):
        self._t0 = time.monotonic()
        super().startTest(test)

    def _line(self, word, test, extra=""):
        dt = time.monotonic() - getattr(self, "_t0", time.monotonic())
        self.stream.write("%-5s %s%s (%.1fs)%s\n" % (word, self.prefix,
                                                     test.id(), dt, extra))
        self.stream.flush()

    def addSuccess(self, test):
        unittest.TestResult.addSuccess(self, test)
        self._line("PASS", test)

    def addFailure(self, test, err):
        unittest.TestResult.addFailure(self, test, err)
        self._line("FAIL", test)

    def addError(self, test, err):
        unittest.TestResult.addError(self, test, err)
        self._line("ERROR", test)

    def addSkip(self, test, reason):
        unittest.TestResult.addSkip(self, test, reason)
        self._line("SKIP", test, " -- " + reason)

    def addSubTest(self, test, subtest, err):
        if err is not None:
            if issubclass(err[0], test.failureException):
                self.failures.append((subtest, self._exc_info_to_string(
                    err, test)))
                self._line("FAIL", subtest)
            else:
                self.errors.append((subtest, self._exc_info_to_string(
                    err, test)))
                self._line("ERROR", subtest)
            self._mirrorOutput = True

    def addExpectedFailure(self, test, err):
        unittest.TestResult.addExpectedFailure(self, test, err)
        self._line("XFAIL", test)

    def addUnexpectedSuccess(self, test):
        unittest.TestResult.addUnexpectedSuccess(self, test)
        self._line("XPASS", test)


def build_suite(here, tests, keywords):
    """The named test modules (default: every test_*.py in here), keeping
    only tests whose id contains one of keywords (if any). Shared with
    test/reliability/run.py."""
    loader = unittest.TestLoader()
    if tests:
        suite = loader.loadTestsFromNames(
            [t[:-3] if t.endswith(".py") else t for t in tests])
    else:
        suite = loader.discover(here, pattern="test_*.py", top_level_dir=here)
    if keywords:
        def flat(s):
            for t in s:
                if isinstance(t, unittest.TestSuite):
                    yield from flat(t)
                else:
                    yield t
        suite = unittest.TestSuite(t for t in flat(suite)
                                   if any(k in t.id() for k in keywords))
    return suite


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", help="build tree (module at "
                    "BUILD/.libs/mod_sse.so, sse-pub at BUILD/sse-pub)")
    ap.add_argument("-k", action="append", default=[],
                    help="only tests whose id contains this (repeatable)")
    ap.add_argument("tests", nargs="*", help="test modules (default: all)")
    args = ap.parse_args()
    if args.build_dir:
        os.environ["SSE_BUILD_DIR"] = os.path.abspath(args.build_dir)
    sys.path.insert(0, HERE)
    import harness
    if args.build_dir:
        harness.BUILD_DIR = os.path.abspath(args.build_dir)

    problems = harness.check_prerequisites()
    if problems:
        for p in problems:
            print("ERROR prerequisite: " + p)
        print("integration: 0 passed, 1 failed, 0 skipped")
        return 1
    print("apache2: %s; module: %s; sse-pub: %s" % (
        harness.APACHE2, harness.module_path(), harness.sse_pub_path()))

    suite = build_suite(HERE, args.tests, args.k)

    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=0,
                                     resultclass=LineResult)
    t0 = time.monotonic()
    results = [runner.run(suite)]
    if not args.tests and not args.k and not harness.SSE_MODE:
        print("--- again with SSEMode detached: " + " ".join(DETACHED_RERUN))
        harness.SSE_MODE = "detached"
        LineResult.prefix = "[detached] "
        results.append(runner.run(build_suite(HERE, DETACHED_RERUN, None)))
        print("--- again with SSEMode detached, SSEDetachedIOUring Off: "
              + " ".join(SENDMSG_RERUN))
        harness.SSE_GLOBAL = "SSEDetachedIOUring Off"
        LineResult.prefix = "[sendmsg] "
        results.append(runner.run(build_suite(HERE, SENDMSG_RERUN, None)))
    passed = failed = skipped = 0
    ok = True
    for result in results:
        # tests with failing subtests are counted once, as failed
        failed_ids = {t.id() for t, _ in result.failures + result.errors}
        failed_tests = {i.split(" ", 1)[0] for i in failed_ids}
        skipped += len(result.skipped)
        passed += result.testsRun - len(failed_tests) - len(result.skipped)
        failed += len(failed_tests) + len(result.unexpectedSuccesses)
        ok = ok and result.wasSuccessful()
    print("time: %.0fs" % (time.monotonic() - t0))
    print("integration: %d passed, %d failed, %d skipped"
          % (passed, failed, skipped))
    return 1 if failed or not ok else 0


if __name__ == "__main__":
    sys.exit(main())
