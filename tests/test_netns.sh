#!/bin/sh
# test_netns.sh - the network-namespace hosts of the cluster tests
# (tests/netns.sh) with plain daemons: two hosts, each running emad on its
# own address behind a link limited to 100 Mbit/s.
#  1. emactl in the client namespace pushes 8 MiB to host 0 and pulls it
#     back equal; the push cannot beat the link (8 MiB at 100 Mbit/s, less
#     the 1 MB burst, is 0.59 s: it takes at least 0.5 s).
#  2. Host 1's link taken down: host 1 cannot be reached (the request times
#     out), host 0 still serves; link up again: host 1 serves its model.
#  3. A test that exits (with a failure) leaves no namespace, no daemon and
#     no work dir behind; one killed by SIGKILL leaves no namespace and no
#     daemon once the next test starts.
# Exits 77 (skip) when not root or `ip netns` is not permitted.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_netns.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"
# shellcheck source=tests/netns.sh
. "$top_srcdir/tests/netns.sh"

netns_require

# A child test: two hosts and their daemons; writes its PID and the daemons' PIDs to $1, then
# fails on purpose ($2 = exit) or waits to be killed ($2 = wait).
cat >"$work/child.sh" <<'EOF'
set -eu
test_name=child
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/netns.sh"
netns_setup 2
netns_start_daemon 0 --snapshot-interval 0
netns_start_daemon 1 --snapshot-interval 0
echo "$$ $(netns_pid 0) $(netns_pid 1) $work" >"$1.tmp"
mv "$1.tmp" "$1"
if [ "$2" = wait ]; then
    while :; do sleep 1; done
fi
fail "failing on purpose"
EOF

# 1. Push 8 MiB through a 100 Mbit/s link, pull it back.
NETNS_RATE=100mbit
netns_setup 2
netns_start_daemon 0 --snapshot-interval 0
netns_start_daemon 1 --snapshot-interval 0
timeout "$T" "$PYTHON3" - "$work/p.safetensors" "$top_srcdir/tests" <<'PY' || fail "cannot write the parameter file"
import sys
sys.path.insert(0, sys.argv[2])
import numpy as np
import safetensors_np
rng = np.random.default_rng(7)
safetensors_np.save(sys.argv[1], {"w": rng.standard_normal(2 * 1024 * 1024).astype(np.float32)})
PY
nctl() { # HOST ARGS...: emactl in the client namespace against host HOST's daemon
    _h=$1
    shift
    timeout "$T" ip netns exec "$(netns_client_ns)" "$EMACTL" --server "$(netns_url "$_h")" "$@"
}
for h in 0 1; do
    nctl "$h" create m --decay 0.5 >/dev/null || netns_fail_host "$h" "create on host $h"
done
t0=$(date +%s.%N)
nctl 0 push m "$work/p.safetensors" --step 1 >/dev/null || netns_fail_host 0 "push to host 0"
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a >= 0.5) }' ||
    fail "8 MiB went through a 100 Mbit/s link in $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') s"
nctl 1 push m "$work/p.safetensors" --step 1 >/dev/null || netns_fail_host 1 "push to host 1"
nctl 0 pull m "$work/out.safetensors" >/dev/null || netns_fail_host 0 "pull from host 0"
timeout "$T" "$PYTHON3" - "$work/out.safetensors" "$work/p.safetensors" "$top_srcdir/tests" <<'PY' ||
import sys
sys.path.insert(0, sys.argv[3])
import numpy as np
import safetensors_np
a, b = safetensors_np.load(sys.argv[1])[0], safetensors_np.load(sys.argv[2])[0]
sys.exit(0 if a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a) else 1)
PY
    fail "the pulled model differs from the pushed one"

# 2. Host 1's link down, then up again.
netns_link_down 1
if nctl 1 --timeout 1500 list >"$work/down.out" 2>&1; then
    fail "host 1 answered with its link down"
fi
nctl 0 list m | grep -q ", step 1," || fail "host 0 does not serve while host 1 is down"
netns_link_up 1
nctl 1 list m | grep -q ", step 1," || netns_fail_host 1 "host 1 does not serve after link up"
netns_cleanup
[ -z "$(ip netns list | grep "^$netns_prefix-" || true)" ] || fail "netns_cleanup left namespaces"

# 3. A child test that fails leaves nothing; one killed by SIGKILL is collected by the next.
top_srcdir=$top_srcdir sh "$work/child.sh" "$work/pids1" exit >"$work/child1.log" 2>&1 &&
    fail "the child test did not fail"
read -r cpid d0 d1 cwork <"$work/pids1" || fail "child 1 wrote no PIDs: $(cat "$work/child1.log")"
ip netns list | grep -q "^emadt-$cpid-" && fail "a failed test left namespaces: $(ip netns list)"
[ ! -e "$cwork" ] || fail "a failed test left its work dir $cwork"
for p in $d0 $d1; do
    kill -0 "$p" 2>/dev/null && fail "a failed test left daemon $p running"
done
top_srcdir=$top_srcdir sh "$work/child.sh" "$work/pids2" wait >"$work/child2.log" 2>&1 &
child=$!
i=0
while [ ! -s "$work/pids2" ] && [ "$i" -lt "$T" ] && kill -0 "$child" 2>/dev/null; do
    sleep 1
    i=$((i + 1))
done
read -r cpid d0 d1 cwork <"$work/pids2" || fail "child 2 wrote no PIDs: $(cat "$work/child2.log")"
kill -9 "$child"
wait "$child" 2>/dev/null || true
ip netns list | grep -q "^emadt-$cpid-" || fail "the killed child's namespaces are already gone"
netns_setup 1
ip netns list | grep -q "^emadt-$cpid-" && fail "stale namespaces not collected: $(ip netns list)"
for p in $d0 $d1; do
    i=0
    while kill -0 "$p" 2>/dev/null && [ "$i" -lt "$T" ]; do
        sleep 1
        i=$((i + 1))
    done
    kill -0 "$p" 2>/dev/null && fail "the killed child's daemon $p still runs"
done
rm -rf "$cwork" # a test killed by SIGKILL cannot remove its own work dir
echo "$test_name: ok"
