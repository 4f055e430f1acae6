#!/bin/bash
# test/fuzz/run.sh - build and run the libFuzzer targets of mod_sse.
#
#   test/fuzz/run.sh [--seconds N | --runs N] [TARGET ...]
#
# Targets (test/fuzz/fuzz_<name>.c): bus_reader, framer, ids, ndjson; all
# of them when none is named. Each is built with Debian clang
#   -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
# together with the bus sources, into build-fuzz/ (out of the tree's way).
#
# Each target starts from its committed seed corpus test/fuzz/corpus/<name>/
# (read-only: new inputs go to build-fuzz/corpus/<name>/, so a CI run never
# changes the tree) and runs for N seconds (default 20) or N executions.
# Any crash, sanitizer report, failed property, leak or timeout (an input
# that takes more than 10 s: a reader looping for ever) fails the run; the
# input is left in build-fuzz/ as crash-*/timeout-*/leak-* and the command
# to reproduce it is printed. A bug fixed should keep its input in the seed
# corpus as a regression test.
#
# Used by `./build/run-tests` (stage fuzz: every target briefly) and by
# `make fuzz`; long runs: test/fuzz/run.sh --runs 10000000 TARGET.
# Exit status: 0 if every target ran clean, 1 otherwise, 2 on usage error.
set -u -o pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out="${SSE_FUZZ_OUT:-$top/build-fuzz}"
cc="${CLANG:-clang}"
seconds=20
runs=
targets=()
all_targets="bus_reader framer ids ndjson"

while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; runs=; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        -*) echo "run.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -eq 0 ] && read -r -a targets <<< "$all_targets"

if ! command -v "$cc" >/dev/null; then
    echo "run.sh: $cc not found: apt-get install clang libclang-rt-14-dev" >&2
    exit 1
fi

flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
bus_src=$(ls "$top"/bus/sse_bus*.c)
mkdir -p "$out"
# bus files of the targets; removed at exit even if a target crashed
shm=/dev/shm
[ -w "$shm" ] || shm="${TMPDIR:-/tmp}"
SSE_FUZZ_TMP=$(mktemp -d "$shm/sse-fuzz-run.XXXXXX") || exit 1
export SSE_FUZZ_TMP
trap 'rm -rf "$SSE_FUZZ_TMP"' EXIT

rc=0
for t in "${targets[@]}"; do
    src="$top/test/fuzz/fuzz_$t.c"
    if [ ! -f "$src" ]; then
        echo "run.sh: no target '$t' ($src missing); targets: $all_targets" >&2
        exit 2
    fi
    bin="$out/fuzz_$t"
    echo "=== fuzz $t: build"
    # shellcheck disable=SC2086 # flags and sources are word lists
    if ! "$cc" $flags -std=gnu11 -Wall -Wextra -Wno-unused-function \
            -I"$top/include" -I"$top/bus" \
            -o "$bin" "$src" $bus_src -lpthread > "$out/build_$t.log" 2>&1; then
        cat "$out/build_$t.log" >&2
        echo "run.sh: building $t failed" >&2
        rc=1
        continue
    fi
    grep -c "warning:" "$out/build_$t.log" | sed "s|^|=== fuzz $t: compiler warnings: |; s|\$| (see $out/build_$t.log)|"
    seeds="$top/test/fuzz/corpus/$t"
    work="$out/corpus/$t"
    mkdir -p "$work" "$out/artifacts/$t"
    limit=(-max_total_time="$seconds")
    [ -n "$runs" ] && limit=(-runs="$runs")
    what="$seconds s"
    [ -n "$runs" ] && what="$runs runs"
    echo "=== fuzz $t: $what (corpus $work, seeds $seeds)"
    t0=$(date +%s)
    # -timeout: an input running >10 s is a reader that loops for ever.
    # ASan: abort on the first report; UBSan: stack traces.
    ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}" \
    UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
        "$bin" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
            -print_final_stats=1 \
            -artifact_prefix="$out/artifacts/$t/" \
            "$work" "$seeds" > "$out/fuzz_$t.log" 2>&1
    trc=$?
    dt=$(( $(date +%s) - t0 ))
    tail -n 25 "$out/fuzz_$t.log" | grep -E "stat::|Done|ERROR|SUMMARY|property failed|Test unit written|INFO: seed corpus" || true
    if [ $trc -ne 0 ]; then
        echo "run.sh: fuzz $t FAILED after ${dt}s (exit $trc); log: $out/fuzz_$t.log"
        sed -n '/ERROR\|property failed\|runtime error/,+30p' "$out/fuzz_$t.log" | head -n 60
        for a in "$out/artifacts/$t"/*; do
            [ -e "$a" ] && echo "run.sh: reproduce with: $bin $a"
        done
        rc=1
    else
        echo "=== fuzz $t: clean (${dt}s)"
    fi
done
exit $rc
