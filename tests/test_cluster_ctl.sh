#!/bin/sh
# test_cluster_ctl.sh - emactl's cluster command without daemons:
#  1. `cluster plan FILE` prints, for 1, 2 and 3 shards, the pieces of every
#     tensor that tests/placement_ref.py (a reimplementation of the
#     placement from its documentation) computes, and per shard the sum of
#     its pieces' bytes; a map given as a file and as inline text agree.
#  2. Usage errors (exit 2): cluster without --cluster, an unknown cluster
#     command, plan without an argument, --cluster without a value.
#     Operation errors (exit 1): a bad map (the message names the problem),
#     a missing file that is not a model either (no daemon answers).
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_cluster_ctl.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

timeout "$T" "$PYTHON3" - "$work/m.safetensors" "$top_srcdir/tests" <<'PY' || fail "cannot write the model file"
import sys
sys.path.insert(0, sys.argv[2])
import numpy as np
import safetensors_np
t = {
    "layers.0.w": np.zeros((1024, 1025), np.float32),  # 4 MiB + 4 KiB: cut
    "layers.0.b": np.zeros(1025, np.float32),
    "emb": np.zeros((2048, 1024), np.uint16),  # BF16, exactly 4 MiB: cut
    "head.w": np.zeros((1024, 1023), np.float32),  # just under 4 MiB: whole
    "n": np.zeros((), np.int64),
    "x.y.z": np.zeros((3, 5, 7), np.float64),
}
safetensors_np.save(sys.argv[1], t, dtypes={"emb": "BF16"})
PY

for s in 1 2 3; do
    map="epoch 7; ack 1"
    k=0
    while [ "$k" -lt "$s" ]; do
        map="$map; shard $k tcp://127.0.0.1:$((9000 + k))"
        k=$((k + 1))
    done
    "$EMACTL" --cluster "$map" cluster plan "$work/m.safetensors" >"$work/plan$s" 2>&1 ||
        fail "plan on $s shards: $(cat "$work/plan$s")"
    echo "$map" | tr ';' '\n' >"$work/map$s"
    "$EMACTL" --cluster "$work/map$s" cluster plan "$work/m.safetensors" >"$work/planf$s" 2>&1 ||
        fail "plan with a map file: $(cat "$work/planf$s")"
    cmp -s "$work/plan$s" "$work/planf$s" || fail "map file and inline map differ: $(cat "$work/planf$s")"
    timeout "$T" "$PYTHON3" - "$work/plan$s" "$s" "$work/m.safetensors" "$top_srcdir/tests" <<'PY' ||
import re, sys
sys.path.insert(0, sys.argv[4])
import numpy as np
import safetensors_np
from placement_ref import place
out, shards = open(sys.argv[1]).read(), int(sys.argv[2])
tensors, _ = safetensors_np.load(sys.argv[3])
want_bytes = [0] * shards
rows = {}
for line in out.split("\n\n")[2].splitlines()[1:]:
    name = line.split()[0]
    rows[name] = re.findall(r"shard (\d+) (?:whole|\[(\d+), (\d+)\))", line)
if sorted(rows) != sorted(tensors) or list(rows) != sorted(tensors):
    sys.exit("tensors %s, not %s sorted" % (list(rows), sorted(tensors)))
for name, arr in tensors.items():
    a = getattr(arr, "bits", arr)  # BF16: its uint16 bit patterns
    esize, numel = a.dtype.itemsize, int(np.prod(a.shape, dtype=np.int64))
    want = place(shards, name, esize, numel)
    got = [(int(sh), int(lo or 0), int(hi or numel) - int(lo or 0)) for sh, lo, hi in rows[name]]
    if got != [(sh, off, cnt) for sh, off, cnt, _ in want]:
        sys.exit("%s: %s, placement_ref says %s" % (name, got, want))
    for sh, off, cnt, _ in want:
        want_bytes[sh] += cnt * esize
got_bytes = [int(l.split()[2]) for l in out.split("\n\n")[1].splitlines()[1:]]
if got_bytes != want_bytes:
    sys.exit("bytes per shard %s, not %s" % (got_bytes, want_bytes))
PY
        fail "plan on $s shards differs from placement_ref.py: $(cat "$work/plan$s")"
done
grep -q '^emb  *BF16  *2048x1024  *shard [0-9] \[0, 1048576) shard [0-9] \[1048576, 2097152)$' \
    "$work/plan2" || fail "emb is not cut in two: $(cat "$work/plan2")"

expect() { # STATUS PATTERN ARGS...: emactl exits with STATUS and prints PATTERN on stderr
    _want=$1 _pat=$2
    shift 2
    _st=0
    timeout "$T" "$EMACTL" "$@" >"$work/out" 2>"$work/err" || _st=$?
    [ "$_st" -eq "$_want" ] || fail "emactl $*: status $_st, not $_want: $(cat "$work/err")"
    grep -q "$_pat" "$work/err" || fail "emactl $*: no '$_pat' in: $(cat "$work/err")"
}
expect 2 "needs --cluster MAP" cluster status
expect 2 "unknown cluster command 'frob'" --cluster "$work/map2" cluster frob
expect 2 "plan needs a MODEL or a safetensors FILE" --cluster "$work/map2" cluster plan
expect 2 "cluster needs a shard map" cluster status --cluster
expect 1 "shard 1 is missing" --cluster 'epoch 1; shard 0 tcp://127.0.0.1:9; shard 2 tcp://127.0.0.1:8' \
    cluster plan "$work/m.safetensors"
expect 1 "epoch" --cluster 'epoch 0; shard 0 tcp://127.0.0.1:9' cluster plan "$work/m.safetensors"
expect 1 "cannot use the cluster" --timeout 1000 --cluster "$work/map1" cluster plan "$work/nothere"
echo "$test_name: ok"
