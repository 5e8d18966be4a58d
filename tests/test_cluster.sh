#!/bin/sh
# test_cluster.sh - a cluster of 2 shards x 2 replicas on network-namespace
# hosts (tests/netns.sh), each link limited to 1 Gbit/s:
#  1. 12 steps of a model with two decays (a float32 tensor cut across the
#     shards, bfloat16, float16 and float64 params, integer and float
#     buffers) pushed through the cluster and to a single reference daemon:
#     pulls of both decays through the cluster equal the reference bit for
#     bit, and so does each replica on its own (pulled through a map that
#     lists only that replica of each shard); emactl through the cluster
#     lists the model at step 12, plans it with one cut tensor and reports
#     every replica serving at step 12. A torch model pushed by 3 ranks
#     (push_module(rank=, world_size=3), each rank a part of every shard)
#     equals whole pushes to the reference (skipped without torch).
#  2. Reshard to 3 shards x 1 replica with epoch 2 on the same hosts
#     (emactl cluster reshard into a temporary one-daemon cluster, daemons
#     restarted with the new map and empty state, reshard into them): pulls
#     of both decays equal the reference bit for bit, before and after two
#     more steps pushed through the new map.
#  3. Stale map: emactl and the Python client with the epoch-1 map get
#     EMAD_EMOVED ("refresh the map"); the daemons serve the new map.
#  4. Bad input: a map of the same epoch that swaps two shards' hosts is
#     refused (EMAD_EMOVED: the request is for another shard), and so is a
#     request without routing keys (emactl --server) to a cluster daemon;
#     the cluster serves afterwards.
# Exits 77 (skip) when not root or `ip netns` is not permitted.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_cluster.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"
# shellcheck source=tests/netns.sh
. "$top_srcdir/tests/netns.sh"

client_env
netns_setup 5
netns_start_ref
map=$work/map1
netns_write_map "$map" 1 2 2 0
netns_start_cluster "$map" 0 4 --snapshot-interval 0
drv=$top_srcdir/tests/cluster_driver.py

# 1. Pushes through the cluster equal the single daemon.
netns_python "$drv" train --cluster "$map" --ref "$netns_ref_url" --model m --first 1 --last 12 \
    --dir "$work" >"$work/train.out" 2>&1 || fail "train: $(tail -n 20 "$work/train.out")"
grep -q 'steps 1..12 acknowledged, 0 with skipped replicas' "$work/train.out" ||
    fail "train: $(cat "$work/train.out")"
netns_python "$drv" compare --cluster "$map" --ref "$netns_ref_url" --model m >"$work/cmp.out" 2>&1 ||
    fail "through the cluster: $(cat "$work/cmp.out")"
netns_compare_replicas "$drv" m
netns_python "$drv" ranks --cluster "$map" --ref "$netns_ref_url" --model ddp >"$work/ranks.out" 2>&1 ||
    fail "push_module by ranks: $(cat "$work/ranks.out")"
echo "$test_name: $(cat "$work/ranks.out")"
netns_ctl "$map" list >"$work/list" || fail "emactl list through the cluster"
grep -q '^m  *0.9  *12 ' "$work/list" || fail "emactl list: $(cat "$work/list")"
grep -q '^ddp  *0.75  *3 ' "$work/list" || fail "emactl list: $(cat "$work/list")"
netns_ctl "$map" cluster plan m >"$work/plan" || fail "emactl cluster plan m"
grep -q '^big.w  *F32  *1048579  *shard [01] \[0, 524290) shard [01] \[524290, 1048579)$' "$work/plan" ||
    fail "big.w not cut in two: $(cat "$work/plan")"
netns_ctl "$map" cluster status m >"$work/status" || fail "emactl cluster status"
grep -q '; 4 of 4 replicas serving; model m' "$work/status" || fail "status: $(cat "$work/status")"
[ "$(awk '$1 ~ /^[01]$/ && $6 == 12 && $7 == 0 && $8 == "serving"' "$work/status" | wc -l)" -eq 4 ] ||
    fail "not every replica at step 12: $(cat "$work/status")"
echo "$test_name: pushes and pulls equal the single daemon bit for bit"

# 2. Reshard into 3 shards x 1 replica, epoch 2, on the same hosts: through a temporary
#    one-daemon cluster on host 4, as docs/CLUSTER.md says.
tmpmap=$work/maptmp
printf 'epoch 1\nshard 0 %s\n' "$(netns_url 4)" >"$tmpmap"
netns_start_daemon 4 --shard-map "$tmpmap" --self "$(netns_url 4)" --snapshot-interval 0
netns_ctl "$map" cluster reshard "$tmpmap" >"$work/reshard1.out" 2>&1 ||
    fail "reshard into the temporary cluster: $(cat "$work/reshard1.out")"
grep -q '^copied m at step 12 into the cluster of' "$work/reshard1.out" ||
    fail "reshard: $(cat "$work/reshard1.out")"
for h in 0 1 2 3; do
    netns_stop_daemon "$h" TERM
    rm -rf "$work/h$h/state"
done
map2=$work/map2
netns_write_map "$map2" 2 3 1 0
netns_start_cluster "$map2" 0 3 --snapshot-interval 0
netns_ctl "$tmpmap" cluster reshard "$map2" m >"$work/reshard2.out" 2>&1 ||
    fail "reshard into the new cluster: $(cat "$work/reshard2.out")"
netns_stop_daemon 4 TERM
netns_python "$drv" compare --cluster "$map2" --ref "$netns_ref_url" --model m \
    >"$work/cmp2.out" 2>&1 || fail "after the reshard: $(cat "$work/cmp2.out")"
netns_ctl "$map2" cluster plan m | grep -q '^big.w .* shard [012] \[0, 349527) shard [012] \[349527, 699053) shard [012] \[699053, 1048579)$' ||
    fail "big.w not cut in three: $(netns_ctl "$map2" cluster plan m)"
netns_python "$drv" train --cluster "$map2" --ref "$netns_ref_url" --model m --first 13 --last 14 \
    --dir "$work" >"$work/train2.out" 2>&1 || fail "train after the reshard: $(cat "$work/train2.out")"
netns_python "$drv" compare --cluster "$map2" --ref "$netns_ref_url" --model m \
    >"$work/cmp2b.out" 2>&1 || fail "pushes after the reshard: $(cat "$work/cmp2b.out")"
echo "$test_name: resharded 2 x 2 -> 3 x 1, equal to the single daemon, pushes go on"

# 3. The old map is stale.
if netns_ctl "$map" list >"$work/stale.out" 2>&1; then
    fail "the epoch-1 map still works: $(cat "$work/stale.out")"
fi
grep -q 'EMAD_EMOVED' "$work/stale.out" || fail "stale map: $(cat "$work/stale.out")"
netns_python - "$map" <<'PY' >"$work/stale.py" 2>&1 || fail "stale map, Python: $(cat "$work/stale.py")"
import sys
import emad
try:
    with emad.Client(cluster=sys.argv[1], timeout=30) as c:
        c.pull("m")
except emad.Error as e:
    assert e.code == emad.EMOVED and "refresh the map" in str(e), e
else:
    sys.exit("the stale map pulled")
PY
netns_ctl "$map2" list | grep -q '^m  *0.9  *14 ' || fail "the new map does not serve"

# 4. Bad input: another shard count with the same epoch; a request without any map.
printf 'epoch 2\nshard 0 %s\nshard 1 %s\nshard 2 %s\n' "$(netns_url 1)" "$(netns_url 0)" \
    "$(netns_url 2)" >"$work/wrong"
if netns_ctl "$work/wrong" pull m "$work/x.st" >"$work/wrong.out" 2>&1; then
    fail "a map with shards 0 and 1 swapped pulled"
fi
grep -q 'EMAD_EMOVED' "$work/wrong.out" || fail "wrong map: $(cat "$work/wrong.out")"
if timeout "$T" ip netns exec "$(netns_client_ns)" "$EMACTL" --server "$(netns_url 1)" list \
    >"$work/plain.out" 2>&1; then
    fail "a request without routing keys was served"
fi
grep -q 'EMAD_EMOVED' "$work/plain.out" || fail "no map: $(cat "$work/plain.out")"
netns_python "$drv" compare --cluster "$map2" --ref "$netns_ref_url" --model m \
    >"$work/cmp3.out" 2>&1 || fail "after the bad requests: $(cat "$work/cmp3.out")"
echo "$test_name: ok"
