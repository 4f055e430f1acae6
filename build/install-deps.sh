#!/bin/sh
# install-deps.sh - install what building (and, with --test, testing) mod_sse
# needs on Debian 12, as root.
#
# Idempotent: asks dpkg what is already installed and runs apt-get (after one
# `apt-get update`) only for what is missing, so a second run touches
# nothing and needs no network. Called by build/run-tests and build/run-demo;
# safe to run by hand.
#
#   build/install-deps.sh          build deps: httpd dev files, APR, Check,
#                                  autotools, compiler, curl, python3,
#                                  liburing (detached streams' io_uring sends)
#   build/install-deps.sh --test   also what the test stages need: chromium,
#                                  node + npm (and playwright-core into
#                                  test/browser/node_modules), promtool,
#                                  clang + its sanitizer runtime, psmisc,
#                                  redis-server + libhiredis-dev (relay)
#   build/install-deps.sh --bench  also what bench/run-bench needs: nginx +
#                                  libnginx-mod-nchan (the server compared
#                                  against), gnuplot-nox (plots); linux-perf
#                                  if the archive has it (optional: profiles)
set -eu

want_test=0
want_bench=0
for arg in "$@"; do
    case "$arg" in
        --test) want_test=1 ;;
        --bench) want_bench=1 ;;
        -h|--help)
            awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
            exit 0 ;;
        *) echo "install-deps.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

top=$(cd "$(dirname "$0")/.." && pwd)

say() { printf 'install-deps: %s\n' "$*"; }

# Debian packages; a package counts as present when dpkg says "installed".
pkgs="apache2 apache2-dev libapr1-dev libaprutil1-dev check autoconf automake
libtool pkg-config make gcc curl python3 procps iproute2 liburing-dev"
if [ "$want_test" = 1 ]; then
    pkgs="$pkgs chromium prometheus clang libclang-rt-14-dev psmisc"
    # strace: test_security.py checks the flags sse-pub create opens with
    pkgs="$pkgs strace"
    # the Redis relay: built when hiredis is found, tested against a real
    # redis-server (test/integration/test_redis_relay.py)
    pkgs="$pkgs redis-server libhiredis-dev"
    # Prefer a node/npm already on the machine (e.g. NodeSource's nodejs,
    # which bundles npm and conflicts with Debian's npm package).
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        pkgs="$pkgs nodejs npm"
    fi
fi
if [ "$want_bench" = 1 ]; then
    # nginx's own service is kept from starting by the policy-rc.d below;
    # run-bench starts nginx itself on a free port
    pkgs="$pkgs nginx libnginx-mod-nchan gnuplot-nox"
fi

missing=""
for p in $pkgs; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = installed ] || missing="$missing $p"
done

if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps.sh: missing Debian packages:$missing" >&2
        echo "install-deps.sh: run this script as root (or: sudo apt-get install$missing)" >&2
        exit 1
    fi
    say "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # Packages such as apache2 and prometheus start their system service on
    # install; the tests start their own httpd on free ports and need no
    # daemon on :80 or :9090. A temporary policy-rc.d (exit 101 = "not
    # allowed") stops that, unless the machine already has its own policy.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# temporary, from mod_sse build/install-deps.sh\nexit 101\n' > "$policy"
        chmod 0755 "$policy"
        trap 'rm -f "$policy"' EXIT INT TERM
    fi
    apt-get update -q
    # shellcheck disable=SC2086 # word splitting of the package list is wanted
    apt-get install -y -q --no-install-recommends $missing
else
    say "all Debian packages present"
fi

if [ "$want_bench" = 1 ]; then
    st=$(dpkg-query -W -f='${db:Status-Status}' linux-perf 2>/dev/null || true)
    if [ "$st" != installed ] && [ "$(id -u)" = 0 ]; then
        # optional: run-bench --perf profiles the servers with it
        say "installing linux-perf (optional)"
        [ -z "$missing" ] && { apt-get update -q || true; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends linux-perf \
            || say "WARNING: linux-perf not installed; run-bench --perf will be skipped"
    fi
fi

if [ "$want_test" = 1 ]; then
    # playwright-core (test/browser/package.json) needs Node.js >= 20;
    # Debian 12's own nodejs is 18.
    node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if [ "$node_major" -lt 20 ]; then
        say "WARNING: node $(node --version 2>/dev/null || echo missing) is older than 20, which playwright-core needs; the browser test may fail"
    fi
    browser="$top/test/browser"
    if [ ! -f "$browser/package.json" ]; then
        say "WARNING: $browser/package.json is missing; cannot install playwright-core (the browser test stage will fail)"
    elif [ -d "$browser/node_modules/playwright-core" ]; then
        say "playwright-core present in test/browser/node_modules"
    else
        say "installing playwright-core into test/browser/node_modules (npm)"
        # playwright-core alone: it drives the system's /usr/bin/chromium and
        # never downloads a browser build of its own.
        if [ -f "$browser/package-lock.json" ]; then
            (cd "$browser" && npm ci --no-audit --no-fund)
        else
            (cd "$browser" && npm install --no-audit --no-fund)
        fi
    fi
fi
say "done"
