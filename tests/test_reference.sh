#!/bin/sh
# test_reference.sh - acceptance test of the whole path against numpy: the
# real emad on a private port and state dir, driven by the real emactl.
# tests/e2e_reference.py writes 20 steps of params (float32 of several
# shapes with a scalar, one F16, one BF16, one F64) and buffers (float32,
# int64, bool); each step is pushed with emactl; the pulled file must match
# numpy's float32 EMA (decay 0.9) within 1 ulp (expected: 0), the buffers
# of step 20 exactly, with metadata format=pt and step=20. Pushing step 20
# again must leave the pulled file bit-for-bit identical. Every command runs
# under a timeout and the daemon is always killed on exit.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
PYTHON3=${PYTHON3:-/usr/bin/python3}
EMAD=$top_builddir/emad
EMACTL=$top_builddir/emactl
STEPS=20
DECAY=0.9

work=$(mktemp -d /tmp/emad-test-XXXXXX)
pid=
url=

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
    echo "test_reference.sh: FAIL: $*" >&2
    if [ -f "$work/emad.log" ]; then
        echo "---- last lines of the emad log ----" >&2
        tail -n 30 "$work/emad.log" >&2
    fi
    exit 1
}

# Run emactl against the test daemon with a time limit.
ctl() {
    timeout 60 "$EMACTL" --server "$url" "$@"
}

# Start emad on a free port (three tries, in case another process takes the port first).
start_daemon() {
    for _try in 1 2 3; do
        port=$(timeout 10 "$PYTHON3" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') ||
            fail "cannot run $PYTHON3 to pick a port"
        url=tcp://127.0.0.1:$port
        mkdir -p "$work/state"
        "$EMAD" --listen "$url" --state-dir "$work/state" --log-level debug 2>"$work/emad.log" &
        pid=$!
        # Watchdog: the daemon never outlives this test by more than 5 minutes.
        (
            i=0
            while [ "$i" -lt 300 ] && kill -0 "$pid" 2>/dev/null; do
                sleep 1
                i=$((i + 1))
            done
            kill -9 "$pid" 2>/dev/null
        ) >/dev/null 2>&1 </dev/null &
        if timeout 15 "$PYTHON3" - "$port" <<'EOF'
import socket, sys, time
for _ in range(1000):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.01)
sys.exit(1)
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

[ -x "$EMAD" ] || fail "$EMAD not built"
[ -x "$EMACTL" ] || fail "$EMACTL not built"
timeout 30 "$PYTHON3" -c 'import numpy' || fail "$PYTHON3 cannot import numpy"

mkdir "$work/in"
timeout 120 "$PYTHON3" "$top_srcdir/tests/e2e_reference.py" gen "$work/in" "$STEPS" 20240611 ||
    fail "e2e_reference.py gen failed"

start_daemon
ctl create ema --decay "$DECAY" || fail "emactl create failed"

k=1
while [ "$k" -le "$STEPS" ]; do
    ctl push ema "$work/in/params_$k.safetensors" --step "$k" \
        --buffers "$work/in/buffers_$k.safetensors" >"$work/push.out" 2>&1 ||
        fail "push of step $k failed: $(cat "$work/push.out")"
    k=$((k + 1))
done

ctl pull ema "$work/pulled.safetensors" || fail "emactl pull failed"
timeout 120 "$PYTHON3" "$top_srcdir/tests/e2e_reference.py" check "$work/in" \
    "$work/pulled.safetensors" "$DECAY" "$STEPS" || fail "pulled model differs from numpy"

# Step 20 again: stale, nothing changes.
ctl push ema "$work/in/params_$STEPS.safetensors" --step "$STEPS" \
    --buffers "$work/in/buffers_$STEPS.safetensors" >"$work/push.out" 2>&1 ||
    fail "repeated push of step $STEPS failed: $(cat "$work/push.out")"
ctl pull ema "$work/again.safetensors" || fail "second emactl pull failed"
cmp "$work/pulled.safetensors" "$work/again.safetensors" ||
    fail "a repeated push of step $STEPS changed the pulled file"

# An older step is stale too: the params of step 1 must not move the average.
ctl push ema "$work/in/params_1.safetensors" --step 1 >"$work/push.out" 2>&1 ||
    fail "push of old step 1 failed: $(cat "$work/push.out")"
ctl pull ema "$work/again.safetensors" || fail "third emactl pull failed"
cmp "$work/pulled.safetensors" "$work/again.safetensors" ||
    fail "a push of old step 1 changed the pulled file"

kill -0 "$pid" 2>/dev/null || fail "emad died"
kill -TERM "$pid"
daemon_status=0
wait "$pid" || daemon_status=$?
pid=
[ "$daemon_status" -eq 0 ] || fail "emad exited with status $daemon_status on SIGTERM"
echo "test_reference.sh: PASS"
