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

test_name=test_reference.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

STEPS=20
DECAY=0.9

[ -x "$EMAD" ] || fail "$EMAD not built"
[ -x "$EMACTL" ] || fail "$EMACTL not built"
timeout "$T" "$PYTHON3" -c 'import numpy' || fail "$PYTHON3 cannot import numpy"

mkdir "$work/in"
timeout "$T" "$PYTHON3" "$top_srcdir/tests/e2e_reference.py" gen "$work/in" "$STEPS" 20240611 ||
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
timeout "$T" "$PYTHON3" "$top_srcdir/tests/e2e_reference.py" check "$work/in" \
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

stop_daemon_clean
echo "test_reference.sh: PASS"
