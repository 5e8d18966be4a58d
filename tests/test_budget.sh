#!/bin/sh
# test_budget.sh - the memory budget end to end, over loopback: a daemon
# with --max-memory 48M and --client-share 50 meets each memory case of one
# client (tests/budget_attacks.py): a begin and a 1-element chunk on a
# model with 8 decays, F16 params with 8 decays, inline pulls whose
# replies are never read, a pull session opened after each push, a pull
# naming one tensor 200,000 times, and multi-writer transaction chunks.
# Each attacker gets EMAD_ELIMIT naming the budget, the gauges (stats op
# and /metrics) stay within the budget, and hello is answered meanwhile.
# Then another client pushes and pulls with emactl and gets the EMA that
# numpy computes, and the log shows the budget at startup.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_budget.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

[ -x "$EMAD" ] || fail "$EMAD not built"
[ -x "$EMACTL" ] || fail "$EMACTL not built"
timeout "$T" "$PYTHON3" -c 'import numpy' || fail "$PYTHON3 cannot import numpy"

budget=$((48 * 1024 * 1024))
http_port=$(pick_port)

# Two safetensors files: big (one 4 MiB F32 tensor w), and small steps 1 and 2 of a model.
timeout "$T" "$PYTHON3" - "$top_srcdir/tests" "$work" <<'EOF' || fail "cannot write the inputs"
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import safetensors_np as st
w = sys.argv[2]
st.save(w + "/big.safetensors", {"w": np.arange(1 << 20, dtype=np.float32)}, {"format": "pt"})
rng = np.random.default_rng(20)
for step in (1, 2):
    st.save(w + "/small%d.safetensors" % step,
            {"a": rng.standard_normal((3, 5)).astype(np.float32),
             "b": rng.standard_normal(7).astype(np.float32)}, {"format": "pt"})
EOF

start_daemon --max-memory 48M --client-share 50 --txn-timeout 3 --http "127.0.0.1:$http_port"
grep -q "event=memory_budget bytes=$budget source=\"--max-memory\" client_share_percent=50" \
    "$work/emad.log" || fail "the budget is not logged at startup"

ctl create m8 --decay 0.9,0.91,0.92,0.93,0.94,0.95,0.96,0.97 >/dev/null || fail "create m8"
ctl create big --decay 0.5 >/dev/null || fail "create big"
ctl create mw --decay 0.5 --writers 2 >/dev/null || fail "create mw"
ctl create ok --decay 0.5,0.9 >/dev/null || fail "create ok"
ctl push big "$work/big.safetensors" --step 1 >/dev/null || fail "push big"

EMACTL=$EMACTL BIG=$work/big.safetensors timeout "$T_LONG" "$PYTHON3" \
    "$top_srcdir/tests/budget_attacks.py" "$port" "$pid" "$budget" "$http_port" ||
    fail "a memory case failed (see above)"
kill -0 "$pid" 2>/dev/null || fail "emad died"

# Another client is served, with the right values: two steps, then each decay's EMA.
ctl push ok "$work/small1.safetensors" --step 1 >/dev/null || fail "push ok step 1"
ctl push ok "$work/small2.safetensors" --step 2 >/dev/null || fail "push ok step 2"
for d in 0.5 0.9; do
    ctl pull ok "$work/pulled$d.safetensors" --decay "$d" >/dev/null || fail "pull ok --decay $d"
done
timeout "$T" "$PYTHON3" - "$top_srcdir/tests" "$work" <<'EOF' || fail "pulled values differ from numpy's EMA"
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import safetensors_np as st
w = sys.argv[2]
s1, _ = st.load(w + "/small1.safetensors")
s2, _ = st.load(w + "/small2.safetensors")
for d in (0.5, 0.9):
    got, _ = st.load(w + "/pulled%s.safetensors" % d)
    for name in ("a", "b"):
        want = (np.float32(d) * s1[name] + np.float32(1 - d) * s2[name]).astype(np.float32)
        assert np.allclose(got[name], want, rtol=1e-6, atol=1e-7), (d, name, got[name], want)
print("another client served: EMA of two steps matches numpy for decays 0.5 and 0.9")
EOF
kill -0 "$pid" 2>/dev/null || fail "emad died"
echo "PASS: $test_name"
