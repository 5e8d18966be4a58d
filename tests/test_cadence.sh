#!/bin/sh
# test_cadence.sh - the spare shadows at a trainer's cadence, end to end
# against the real daemon, by its counters (shadow_fresh_bytes: shadow
# bytes written into new memory; shadow_reused_bytes: into kept spares):
#   - pushes of a 32 MiB model (a transaction of chunks) 1.5 s apart, with
#     --idle-release 0.5: the daemon learns the pace and keeps the spares,
#     so only the first two pushes write fresh memory (the shadows, then the
#     first spares) and every later one reuses them;
#   - the same with --idle-release-max 0.5 (no longer hold than 0.5 s) and
#     pushes 2.5 s apart: the spares are freed between pushes, and every
#     push writes fresh memory;
#   - after the pushes stop, the spares are freed within --idle-release-max
#     (the release is logged with the 32 MiB held), and the next push
#     writes fresh memory again.
# The gaps between pushes are lower bounds (sleeps), so a slow machine only
# makes them longer; waits for the release are generous and multiplied by
# EMAD_TEST_TIMEOUT_SCALE. Environment (set by `make check`): top_builddir,
# top_srcdir, PYTHON3.
set -eu

test_name=test_cadence.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

scale=${EMAD_TEST_TIMEOUT_SCALE:-1}
[ -x "$EMAD" ] || fail "$EMAD not built"
timeout 30 "$PYTHON3" -c 'import numpy' || fail "$PYTHON3 cannot import numpy"
client_env

# cadence FIRST_STEP COUNT GAP_SECONDS: push COUNT steps of the 32 MiB model
# "cad" (4 tensors), GAP_SECONDS apart; prints the two counters after each
# push as JSON: [[fresh, reused], ...].
cadence() {
    client_python - "$url" "$@" <<'PY'
import json, sys, time
import numpy as np
import emad

url, first, count, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
client = emad.Client(url)
client.create("cad", exist_ok=True)
n = 8 * (1 << 20) // 4
tensors = {"t%d" % k: np.full(n, float(k), np.float32) for k in range(4)}
out = []
for step in range(first, first + count):
    if step > first:
        time.sleep(gap)
    client.push("cad", step, tensors)
    st = client.stats()
    out.append([st["shadow_fresh_bytes"], st["shadow_reused_bytes"]])
client.close()
print(json.dumps(out))
PY
}

# expect JSON WANT: the counters equal WANT (a Python list of [fresh, reused] in MiB).
expect() {
    timeout 30 "$PYTHON3" -c '
import json, sys
got = [[f >> 20, r >> 20] for f, r in json.loads(sys.argv[1])]
want = json.loads(sys.argv[2])
assert got == want, "counters (MiB) %s, expected %s" % (got, want)
' "$1" "$2" || fail "$3"
}

# Spares kept at a 1.5 s pace although --idle-release is 0.5 s.
start_daemon --idle-release 0.5 --idle-release-max 20
got=$(cadence 1 4 1.5) || fail "pushes failed: $got"
echo "$test_name: 1.5 s apart, kept: $got"
expect "$got" '[[32, 0], [64, 0], [64, 32], [64, 64]]' "spares not kept at a 1.5 s pace"
# Freed within --idle-release-max (20 s) of the last push, with the 32 MiB held.
# (The release after the first push, with no spare yet, logs spare_bytes=0.)
i=0
while ! grep "event=idle_release" "$work/emad.log" | grep -qF "spare_bytes=33554432"; do
    i=$((i + 1))
    [ $i -lt $((60 * scale)) ] ||
        fail "32 MiB of spares not freed within $((60 * scale)) s: $(grep event=idle_release "$work/emad.log")"
    sleep 1
done
got=$(cadence 5 1 0) || fail "push after the release failed: $got"
expect "$got" '[[96, 64]]' "the push after the release did not write fresh memory"
kill -0 "$pid" || fail "emad died"
stop_daemon TERM

# No longer hold than 0.5 s: every push 2.5 s apart writes fresh memory.
rm -rf "$work/state"
: >"$work/emad.log"
start_daemon --idle-release 0.5 --idle-release-max 0.5
got=$(cadence 1 3 2.5) || fail "pushes failed: $got"
echo "$test_name: 2.5 s apart, hold at most 0.5 s: $got"
expect "$got" '[[32, 0], [64, 0], [96, 0]]' "spares kept beyond --idle-release-max"
kill -0 "$pid" || fail "emad died"
stop_daemon TERM
echo "$test_name: PASS"
