#!/bin/sh
# test_restart.sh - a daemon restarted behind its trainer says so: steps
# 1..4 are pushed and snapshotted, steps 5..7 pushed and lost to a SIGKILL;
# after the restart the first push (step 8) is applied, logged as
# event=model_restored_behind with restored_step=4 step=8 steps_between=3
# and counted once in models_restored_behind; later pushes and a model
# created after the restart are not counted.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_restart.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

timeout "$T" "$PYTHON3" - "$work/p.safetensors" "$top_srcdir/tests" <<'PY' || fail "cannot write the parameter file"
import sys
sys.path.insert(0, sys.argv[2])
import numpy as np
import safetensors_np
safetensors_np.save(sys.argv[1], {"w": np.arange(8, dtype=np.float32)})
PY

counter() { # NAME: its value in `emactl stats`
    ctl stats | awk -v n="$1" '$1 == n { print $2 }'
}
push() { # MODEL STEP
    ctl push "$1" "$work/p.safetensors" --step "$2" >/dev/null || fail "push $1 step $2"
}

start_daemon --snapshot-interval 0
ctl create run --decay 0.9 >/dev/null || fail "create"
for s in 1 2 3 4; do push run "$s"; done
ctl snapshot run >/dev/null || fail "snapshot"
for s in 5 6 7; do push run "$s"; done
[ "$(counter models_restored_behind)" = 0 ] || fail "counted before any restart"
stop_daemon KILL

start_daemon --snapshot-interval 0
ctl list run | grep -q ", step 4," || fail "not back at the snapshot's step 4: $(ctl list run)"
push run 8
[ "$(counter models_restored_behind)" = 1 ] || fail "not counted: $(counter models_restored_behind)"
grep -q 'event=model_restored_behind model=run restored_step=4 step=8 steps_between=3' \
    "$work/emad.log" || fail "no log line for the restart behind"
push run 9
ctl create fresh --decay 0.9 >/dev/null || fail "create fresh"
push fresh 5
[ "$(counter models_restored_behind)" = 1 ] || fail "counted again: $(counter models_restored_behind)"
echo "test_restart.sh: ok"
