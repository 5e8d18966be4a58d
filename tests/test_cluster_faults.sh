#!/bin/sh
# test_cluster_faults.sh - replicas fail while a trainer pushes 200 steps
# (tests/cluster_driver.py train) to a cluster of 2 shards x 2 replicas with
# ack 1, on network-namespace hosts (tests/netns.sh), each daemon writing a
# snapshot every second; every step also goes to a single reference daemon.
#  1. After step 60 one replica of each shard is SIGKILLed while pushes go
#     on; after step 100 (the trainer waits there) both are restarted from
#     their state directories (a snapshot behind the others).
#  2. After step 130 the link of a replica of shard 1 is taken down while
#     pushes go on; after step 160 (the trainer waits) it is up again.
#  3. The trainer saw no error: all 200 steps acknowledged (it reports the
#     steps where a replica was skipped). The restarted replicas resynced
#     by themselves (the trainer's next push): `emactl cluster status` shows
#     them at step 200 and serving. After `emactl cluster resync` (for the
#     replica whose link was down, if the last pushes did not catch it up)
#     every replica is at step 200, and pulls of both decays, through the
#     cluster and from each replica alone, equal the reference bit for bit:
#     no acknowledged step is lost.
# Exits 77 (skip) when not root or `ip netns` is not permitted.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_cluster_faults.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"
# shellcheck source=tests/netns.sh
. "$top_srcdir/tests/netns.sh"

client_env
netns_setup 4
netns_start_ref
map=$work/map
netns_write_map "$map" 1 2 2 0 1
netns_start_cluster "$map" 0 4 --snapshot-interval 1
drv=$top_srcdir/tests/cluster_driver.py
mkdir -p "$work/gates"

netns_python "$drv" train --cluster "$map" --ref "$netns_ref_url" --model m --first 1 --last 200 \
    --dir "$work/gates" --gate 60 --gate 100:wait --gate 130 --gate 160:wait --pace 0.01 \
    --timeout 5 --connect-timeout 1 \
    >"$work/train.out" 2>&1 &
trainer=$!

# 1. SIGKILL replica 1 of each shard (hosts 1 and 3) during the pushes; restart them at step 100.
netns_wait_file "$work/gates/reached.60" "$trainer" "$work/train.out"
netns_stop_daemon 1 KILL
netns_stop_daemon 3 KILL
netns_wait_file "$work/gates/reached.100" "$trainer" "$work/train.out"
kill -0 "$trainer" 2>/dev/null || fail "the trainer died: $(tail -n 20 "$work/train.out")"
netns_start_daemon 1 --shard-map "$map" --self "$(netns_url 1)" --snapshot-interval 1
netns_start_daemon 3 --shard-map "$map" --self "$(netns_url 3)" --snapshot-interval 1
touch "$work/gates/go.100"

# 2. Replica 0 of shard 1 (host 2) cut off from step 130 to step 160.
netns_wait_file "$work/gates/reached.130" "$trainer" "$work/train.out"
netns_link_down 2
netns_wait_file "$work/gates/reached.160" "$trainer" "$work/train.out"
netns_link_up 2
touch "$work/gates/go.160"

# 3. The trainer saw no error; every replica ends equal to the single daemon.
wait "$trainer" || fail "the trainer failed: $(tail -n 20 "$work/train.out")"
grep -q '^train: steps 1..200 acknowledged' "$work/train.out" || fail "train: $(tail -n 5 "$work/train.out")"
skipped=$(sed -n 's/^train: .*acknowledged, \([0-9]*\) with skipped replicas$/\1/p' "$work/train.out")
[ "$skipped" -ge 1 ] || fail "no push reported a skipped replica: $(tail -n 5 "$work/train.out")"
netns_ctl "$map" cluster status m >"$work/status1" || fail "cluster status"
for h in 1 3; do
    awk -v u="$(netns_url "$h")" '$3 == u && $6 == 200 && $8 == "serving"' "$work/status1" | grep -q . ||
        netns_fail_host "$h" "restarted replica $h did not resync: $(cat "$work/status1")"
done
netns_ctl "$map" cluster resync m >"$work/resync.out" 2>&1 || fail "cluster resync: $(cat "$work/resync.out")"
netns_ctl "$map" cluster status m >"$work/status2" || fail "cluster status"
grep -q '; 4 of 4 replicas serving; model m' "$work/status2" || fail "status: $(cat "$work/status2")"
[ "$(awk '$1 ~ /^[01]$/ && $6 == 200 && $7 == 0 && $8 == "serving"' "$work/status2" | wc -l)" -eq 4 ] ||
    fail "not every replica at step 200: $(cat "$work/status2")"
netns_python "$drv" compare --cluster "$map" --ref "$netns_ref_url" --model m >"$work/cmp.out" 2>&1 ||
    fail "through the cluster: $(cat "$work/cmp.out")"
netns_compare_replicas "$drv" m
echo "$test_name: 200 steps, $skipped with a replica skipped, no error; every replica equals" \
    "the single daemon ($(cat "$work/resync.out"))"
echo "$test_name: ok"
