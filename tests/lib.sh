# shellcheck shell=sh
# lib.sh - shared by the shell tests: paths from `make check`, a private
# work dir removed on exit, fail() with the daemon's log, ctl() (emactl with
# a time limit) and start_daemon() (the real emad on a free loopback port,
# with a watchdog). Sourced after `set -eu`; the caller sets test_name.
#
# Time limits are safety nets, never synchronisation: each is minutes long
# and multiplied by EMAD_TEST_TIMEOUT_SCALE (default 1; e.g. 4 on a slow or
# busy machine). T is the limit of one command, T_LONG of a long one (a
# reference run, a whole Python script); `scaled N` prints N seconds scaled.
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
PYTHON3=${PYTHON3:-/usr/bin/python3}
EMAD=$top_builddir/emad
EMACTL=$top_builddir/emactl

EMAD_TEST_TIMEOUT_SCALE=${EMAD_TEST_TIMEOUT_SCALE:-1}
export EMAD_TEST_TIMEOUT_SCALE

# Print N seconds multiplied by EMAD_TEST_TIMEOUT_SCALE, rounded up to a whole second.
scaled() {
    awk -v n="$1" -v s="$EMAD_TEST_TIMEOUT_SCALE" 'BEGIN {
        if (s + 0 <= 0) s = 1
        v = n * s
        printf "%d\n", v == int(v) ? v : int(v) + 1
    }'
}
T=$(scaled 300)
T_LONG=$(scaled 1200)

work=$(mktemp -d /tmp/emad-test-XXXXXX)
pid=
url=
port=

# Kill the daemon (if running) and remove the work dir; keeps the exit status.
cleanup() {
    status=$?
    if [ -n "$pid" ]; then
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# Print a failure with the end of the daemon's log and exit 1.
fail() {
    echo "${test_name:-test}: FAIL: $*" >&2
    if [ -f "$work/emad.log" ]; then
        echo "---- last lines of the emad log ----" >&2
        tail -n 30 "$work/emad.log" >&2
    fi
    exit 1
}

# Run emactl against the test daemon with a time limit.
ctl() {
    timeout "$T" "$EMACTL" --server "$url" "$@"
}

# Set up the environment of the Python client (client/python over the in-tree libemad):
# EMAD_LIBRARY (unless set), PYTHONPATH, and asan_rt, the AddressSanitizer runtime that a
# libemad built with --enable-asan needs loaded first into Python (empty otherwise).
client_env() {
    for _lib in "$top_builddir/.libs/libemad.so" "$top_builddir/client/.libs/libemad.so"; do
        if [ -e "$_lib" ]; then
            EMAD_LIBRARY=${EMAD_LIBRARY:-$_lib}
            break
        fi
    done
    if [ -z "${EMAD_LIBRARY:-}" ] || [ ! -e "$EMAD_LIBRARY" ]; then
        fail "libemad.so not found under $top_builddir"
    fi
    PYTHONPATH=$top_srcdir/client/python${PYTHONPATH:+:$PYTHONPATH}
    PYTHONDONTWRITEBYTECODE=1
    export EMAD_LIBRARY PYTHONPATH PYTHONDONTWRITEBYTECODE
    asan_rt=$(ldd "$EMAD_LIBRARY" 2>/dev/null | sed -n 's/.*libasan[^ ]* => \([^ ]*\).*/\1/p')
}

# Run $PYTHON3 with the arguments given (after client_env), within T_LONG seconds.
client_python() {
    if [ -n "$asan_rt" ]; then
        LD_PRELOAD=$asan_rt ASAN_OPTIONS=detect_leaks=0 timeout "$T_LONG" "$PYTHON3" "$@"
    else
        timeout "$T_LONG" "$PYTHON3" "$@"
    fi
}

# Print a free TCP port on 127.0.0.1.
pick_port() {
    timeout "$T" "$PYTHON3" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' ||
        fail "cannot run $PYTHON3 to pick a port"
}

# Watchdog in the background: the process $1 is killed after T_LONG seconds (the test's exit
# trap normally kills it first; this only bounds a daemon whose test was itself killed).
watchdog() {
    (
        i=0
        while [ "$i" -lt "$T_LONG" ] && kill -0 "$1" 2>/dev/null; do
            sleep 1
            i=$((i + 1))
        done
        kill -9 "$1" 2>/dev/null
    ) >/dev/null 2>&1 </dev/null &
}

# Start emad on a free port (three tries, in case another process takes the port first),
# with the state dir $work/state and any extra arguments given.
start_daemon() {
    for _try in 1 2 3; do
        port=$(pick_port) || exit 1
        url=tcp://127.0.0.1:$port
        mkdir -p "$work/state"
        # With EMAD_FSIZE_KB set, the daemon runs under that file-size limit (ulimit -f).
        sh -c 'if [ -n "$1" ]; then ulimit -f "$1"; fi; shift; exec "$@"' sh "${EMAD_FSIZE_KB:-}" \
            "$EMAD" --listen "$url" --state-dir "$work/state" --log-level debug --http off "$@" \
            2>>"$work/emad.log" &
        pid=$!
        watchdog "$pid"
        if timeout "$T" "$PYTHON3" - "$port" "$pid" <<'EOF'
import os, socket, sys, time
# Until the port accepts connections, or the daemon has exited; timeout(1) bounds the wait.
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 5).close()
        sys.exit(0)
    except OSError:
        try:
            with open("/proc/%s/stat" % sys.argv[2]) as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    sys.exit(1)  # exited, not yet reaped
        except OSError:
            sys.exit(1)
        time.sleep(0.01)
EOF
        then
            if kill -0 "$pid" 2>/dev/null; then
                return 0
            fi
        fi
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    done
    fail "emad did not start"
}

# Kill the daemon with a signal (default KILL) and wait for it; prints nothing.
stop_daemon() {
    if [ -n "$pid" ]; then
        kill "-${1:-KILL}" "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    fi
}


# SIGTERM the daemon and require a clean exit (status 0).
stop_daemon_clean() {
    kill -0 "$pid" 2>/dev/null || fail "emad died"
    kill -TERM "$pid"
    daemon_status=0
    wait "$pid" || daemon_status=$?
    pid=
    [ "$daemon_status" -eq 0 ] || fail "emad exited with status $daemon_status on SIGTERM"
}
