#!/bin/sh
# test_import.sh - emactl import is all or nothing: a state dict with a
# tensor larger than the 4 MiB push chunks is imported whole (every
# tensor, exact values); one with a tensor larger than the daemon's
# message limit is refused before anything is sent (an existing model
# keeps its tensors, a snapshot file does not create its model).
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_import.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

[ -x "$EMAD" ] || fail "$EMAD not built"
[ -x "$EMACTL" ] || fail "$EMACTL not built"
timeout "$T" "$PYTHON3" -c 'import numpy' || fail "$PYTHON3 cannot import numpy"

# save PATH NTENSORS BIG_ELEMENTS: NTENSORS small tensors t000.. and one "big" of BIG_ELEMENTS
# float32 values, all with values computed from their index.
save() {
    timeout "$T" "$PYTHON3" - "$top_srcdir/tests" "$@" <<'EOF' || fail "cannot write $1"
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import safetensors_np as st
path, n, big = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
d = {"t%03d" % i: np.full((4, 4), i, np.float32) for i in range(n)}
d["big"] = np.arange(big, dtype=np.float32)
st.save(path, d, {"format": "pt", "step": "7"})
EOF
}

# 121 small tensors and a 5 MiB one, and the same with a 65 MiB one (over the default 64 MiB).
save "$work/ok.safetensors" 121 $((5 << 18))
save "$work/huge.safetensors" 121 $((65 << 18))

start_daemon
ctl create imp --decay 0.5 >/dev/null || fail "create imp"
ctl import imp "$work/ok.safetensors" >"$work/out" 2>"$work/err" ||
    fail "import of a 5 MiB tensor: $(cat "$work/err")"
grep -q "122 tensors seeded" "$work/out" || fail "import output: $(cat "$work/out")"
ctl pull imp "$work/pulled.safetensors" >/dev/null 2>"$work/err" || fail "pull: $(cat "$work/err")"
timeout "$T" "$PYTHON3" - "$top_srcdir/tests" "$work/ok.safetensors" "$work/pulled.safetensors" <<'EOF' ||
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import safetensors_np as st
want, got = st.load(sys.argv[2])[0], st.load(sys.argv[3])[0]
assert sorted(want) == sorted(got), (len(want), len(got))
for k in want:
    assert np.array_equal(want[k], got[k]), k
EOF
    fail "the pulled model differs from the imported file"

# Too large for one message: refused up front, the model keeps exactly what it had.
ctl list imp >"$work/before" || fail "list imp"
if ctl import imp "$work/huge.safetensors" --step 9 >"$work/out" 2>"$work/err"; then
    fail "import of a 65 MiB tensor succeeded"
fi
grep -q "does not fit in one message" "$work/err" || fail "import error: $(cat "$work/err")"
grep -q "nothing imported" "$work/err" || fail "import error: $(cat "$work/err")"
ctl list imp >"$work/after" || fail "list imp"
cmp -s "$work/before" "$work/after" || fail "a refused import changed the model: $(diff "$work/before" "$work/after" | head)"

# An export is imported whole into a new model; one with a tensor too large for one message
# (pushed in a transaction) is refused and does not create its model.
ctl export imp "$work/imp.snap.safetensors" >/dev/null 2>"$work/err" || fail "export: $(cat "$work/err")"
ctl import fresh "$work/imp.snap.safetensors" >"$work/out" 2>"$work/err" ||
    fail "import of an export into a new model: $(cat "$work/err")"
grep -q "122 tensors seeded" "$work/out" || fail "import output: $(cat "$work/out")"
ctl create big --decay 0.5 >/dev/null || fail "create big"
ctl push big "$work/huge.safetensors" --step 1 >/dev/null 2>"$work/err" || fail "push: $(cat "$work/err")"
ctl export big "$work/big.snap.safetensors" >/dev/null 2>"$work/err" || fail "export: $(cat "$work/err")"
if ctl import fresh2 "$work/big.snap.safetensors" >/dev/null 2>"$work/err"; then
    fail "import of a 65 MiB tensor into a new model succeeded"
fi
grep -q "nothing imported" "$work/err" || fail "import error: $(cat "$work/err")"
ctl list >"$work/models" || fail "list"
grep -q "^fresh " "$work/models" || fail "model fresh missing: $(cat "$work/models")"
if grep -q "^fresh2 " "$work/models"; then fail "a refused import created its model"; fi

kill -0 "$pid" 2>/dev/null || fail "emad died"
stop_daemon_clean
echo "test_import.sh: PASS"
