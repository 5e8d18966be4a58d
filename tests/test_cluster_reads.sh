#!/bin/sh
# test_cluster_reads.sh - every reader sees one step, on a cluster of 2
# shards x 2 replicas on network-namespace hosts (tests/netns.sh). The model
# (tests/cluster_driver.py steps) has decay 0, so its average is the last
# push, and every element of every tensor equals the step it was pushed at:
# a tensor cut across both shards and whole tensors on each shard. A pull
# that mixed two steps would show two values.
#  1. 1,000 pulls (10 reader processes x 100, each its own client) while a
#     trainer pushes one step after another: every pulled model is from
#     exactly one step (EMAD_ESPLIT answers, allowed, are counted), and the
#     readers saw several steps.
#  2. A trainer that died halfway through a step across the shards: the
#     trainer is held between steps N and N+1 and SIGKILLed there (every
#     replica has N), then step N+1 is pushed to both replicas of shard 0
#     only, straight to their daemons (tests/cluster_driver.py partial), so
#     the cluster is at N+1 on shard 0 and N on shard 1 by construction, not
#     by timing. 40 pulls (4 readers) then all return step N, one step. A
#     trainer restarted from step N+1 brings every shard to N+2; pulls
#     return N+2.
# Exits 77 (skip) when not root or `ip netns` is not permitted.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_cluster_reads.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"
# shellcheck source=tests/netns.sh
. "$top_srcdir/tests/netns.sh"

client_env
NETNS_RATE=4gbit
netns_setup 4
map=$work/map
netns_write_map "$map" 1 2 2 0 1
netns_start_cluster "$map" 0 4 --snapshot-interval 0
drv=$top_srcdir/tests/cluster_driver.py
mkdir -p "$work/t1" "$work/t2"

# readers N PULLS TAG: N reader processes of PULLS pulls each, in parallel; all must pass.
# Writes "pulls ok split lowest-step highest-step" to $work/TAG.sum.
readers() {
    _pids=
    _i=0
    while [ "$_i" -lt "$1" ]; do
        netns_python "$drv" read --cluster "$map" --model s --pulls "$2" \
            --out "$work/$3.$_i" >"$work/$3.$_i.log" 2>&1 &
        _pids="$_pids $!"
        _i=$((_i + 1))
    done
    _i=0
    for _p in $_pids; do
        wait "$_p" || fail "reader $3.$_i: $(tail -n 5 "$work/$3.$_i.log")"
        _i=$((_i + 1))
    done
    cat "$work/$3".[0-9] | awk '{ p += $2; ok += $4; sp += $6
        if (NR == 1 || $8 < lo) lo = $8; if ($9 > hi) hi = $9 }
        END { print p, ok, sp, lo, hi }' >"$work/$3.sum"
}

# 1. 1,000 pulls during pushes.
netns_python "$drv" steps --cluster "$map" --model s --first 1 --last 100000 --dir "$work/t1" \
    --pace 0.02 >"$work/t1.log" 2>&1 &
trainer=$!
netns_wait_file "$work/t1/pushing.3" "$trainer" "$work/t1.log"
readers 10 100 r1
set -- $(cat "$work/r1.sum")
pulls=$1 ok=$2 split=$3 lo=$4 hi=$5
[ "$pulls" -eq 1000 ] && [ $((ok + split)) -eq 1000 ] || fail "readers: $*"
[ "$ok" -ge 100 ] || fail "only $ok of 1000 pulls got a model ($split EMAD_ESPLIT)"
[ "$hi" -gt "$lo" ] || fail "the readers saw only step $lo: no pushes during the pulls"
kill -0 "$trainer" 2>/dev/null || fail "the trainer died: $(tail -n 5 "$work/t1.log")"
echo "$test_name: 1000 pulls during pushes: $ok of one step (steps $lo..$hi), $split EMAD_ESPLIT, no mix"

# 2. Hold the trainer between two steps N and N+1 (every replica has N then: a push returns
#    once every replica answered), kill it there, and leave what it would have left had it died
#    halfway through step N+1: step N+1 on both replicas of shard 0 and not on shard 1.
touch "$work/t1/hold"
netns_wait_file "$work/t1/held" "$trainer" "$work/t1.log"
n=$(cat "$work/t1/held")
next=$((n + 1))
kill -9 "$(cat "$work/t1/pid")"
wait "$trainer" 2>/dev/null || true
netns_ctl "$map" cluster status s >"$work/status1" 2>&1 || true
[ "$(awk '$1 ~ /^[01]$/ { printf "%s:%s ", $1, $6 }' "$work/status1")" = "0:$n 0:$n 1:$n 1:$n " ] ||
    fail "not every replica at step $n after the trainer stopped: $(cat "$work/status1")"
netns_python "$drv" partial --cluster "$map" --model s --step "$next" --shards 0 \
    >"$work/partial.log" 2>&1 ||
    fail "push of step $next to shard 0: $(tail -n 5 "$work/partial.log")"
netns_ctl "$map" cluster status s >"$work/status2" 2>&1 || true
[ "$(awk '$1 ~ /^[01]$/ { printf "%s:%s ", $1, $6 }' "$work/status2")" = "0:$next 0:$next 1:$n 1:$n " ] ||
    fail "not halfway through step $next: $(cat "$work/status2")"
readers 4 10 r2
set -- $(cat "$work/r2.sum")
[ "$1" -eq 40 ] && [ "$2" -eq 40 ] && [ "$4" -eq "$n" ] && [ "$5" -eq "$n" ] ||
    fail "after the trainer died halfway through step $next: pulls ok split lo hi = $*"
echo "$test_name: trainer killed halfway through step $next: 40 pulls, all of step $n"

netns_python "$drv" steps --cluster "$map" --model s --first "$next" --last $((next + 1)) \
    --dir "$work/t2" >"$work/t2.log" 2>&1 || fail "restarted trainer: $(tail -n 5 "$work/t2.log")"
readers 2 5 r3
set -- $(cat "$work/r3.sum")
[ "$1" -eq 10 ] && [ "$2" -eq 10 ] && [ "$4" -eq $((next + 1)) ] && [ "$5" -eq $((next + 1)) ] ||
    fail "after the restarted trainer: pulls ok split lo hi = $*"
echo "$test_name: ok"
