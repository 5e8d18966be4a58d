#!/bin/sh
# test_adversarial.sh - the adversarial cases of tests/adversarial.py against the real emad
# over loopback (hash flooding, 65,536 slices in one push, a 6-writer model, a pull naming
# one tensor 800,000 times, `list` of 131,072 tensors, idle connections until the daemon's
# descriptors run out, slow-header HTTP clients, every transaction, session, model and
# pending-step slot taken, a NaN in an early-answered chunk, resent chunks with other bytes,
# steps of 2^63, reserved and control-character names, hostile msgpack, ...). Throughout,
# a second client's `hello` must be answered within 2 s (times EMAD_TEST_TIMEOUT_SCALE; the
# table printed has the worst latency of each case), the attacker gets the documented error,
# and afterwards the daemon serves correct results.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_adversarial.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

[ -x "$EMAD" ] || fail "$EMAD not built"
timeout "$T" "$PYTHON3" -c 'import numpy' || fail "$PYTHON3 cannot import numpy"

# The daemon raises its soft limit on descriptors to the hard one.
hard=$(ulimit -H -n)
if [ "$hard" != unlimited ] && [ "$hard" -gt 512 ]; then
    ulimit -S -n 512
fi
start_daemon --http 127.0.0.1:0
soft=$(awk '/^Max open files/ { print $4 }' "/proc/$pid/limits")
[ "$soft" = "$hard" ] || fail "descriptor limit $soft, not raised to the hard limit $hard"
# Few descriptors, so that idle connections exhaust them quickly.
prlimit --pid "$pid" --nofile=256:256 || fail "prlimit"
i=0
while ! hport=$(sed -n 's/.*event=http_listening .*port=\([0-9]*\).*/\1/p' "$work/emad.log") ||
    [ -z "$hport" ]; do
    i=$((i + 1))
    [ "$i" -lt "$T" ] || fail "no http_listening line"
    sleep 1
done

timeout "$T_LONG" "$PYTHON3" "$top_srcdir/tests/adversarial.py" "$port" "$hport" "$work/emad.log" \
    --bound 2 || fail "adversarial cases"

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" -eq 0 ] || fail "emad exited with status $status after SIGTERM"
echo "$test_name: PASS"
