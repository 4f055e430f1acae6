#!/usr/bin/env python3
"""Run the mod_sse reliability suite (load and fault scenarios) against the
real Debian apache2 with the built module.

    python3 test/reliability/run.py [--build-dir DIR] [--profile ci|soak]
                                    [--figures FILE] [-k SUBSTRING] [tests]

--profile ci (default) is the short variant run by `./build/run-tests`
(stage `reliability`); --profile soak is the long one (`make soak`), with
the sizes the issue asks for. Each scenario prints a `FIGURES {json}` line
on stderr; --figures FILE also appends them to FILE (JSON lines), the
source of the tables in test/RELIABILITY.md.

Last line: `reliability: N passed, N failed, N skipped`; exit status non-zero
on any failure. Missing apache2/module/sse-pub is a failure, never a skip.
"""

import argparse
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir")
    ap.add_argument("--profile", choices=("ci", "soak"), default=None)
    ap.add_argument("--figures")
    ap.add_argument("-k", action="append", default=[])
    ap.add_argument("tests", nargs="*")
    args = ap.parse_args()
    if args.build_dir:
        os.environ["SSE_BUILD_DIR"] = os.path.abspath(args.build_dir)
    if args.profile:
        os.environ["SSE_REL_PROFILE"] = args.profile
    if args.figures:
        os.environ["SSE_REL_FIGURES"] = os.path.abspath(args.figures)
    import harness
    if args.build_dir:
        harness.BUILD_DIR = os.path.abspath(args.build_dir)
    # test/integration/run.py's one-line-per-test result class
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "integration_run", os.path.join(os.path.dirname(HERE), "integration",
                                        "run.py"))
    itrun = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(itrun)
    problems = harness.check_prerequisites()
    if problems:
        for p in problems:
            print("ERROR prerequisite: " + p)
        print("reliability: 0 passed, 1 failed, 0 skipped")
        return 1
    import rel
    print("profile: %s; apache2: %s; module: %s" % (
        rel.profile_name(), harness.APACHE2, harness.module_path()))
    suite = itrun.build_suite(HERE, args.tests, args.k)
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=0,
                                     resultclass=itrun.LineResult)
    t0 = time.monotonic()
    result = runner.run(suite)
    failed_ids = {t.id().split(" ", 1)[0]
                  for t, _ in result.failures + result.errors}
    skipped = len(result.skipped)
    passed = result.testsRun - len(failed_ids) - skipped
    print("time: %.0fs" % (time.monotonic() - t0))
    print("reliability: %d passed, %d failed, %d skipped"
          % (passed, len(failed_ids), skipped))
    return 1 if failed_ids or not result.wasSuccessful() else 0


if __name__ == "__main__":
    sys.exit(main())
