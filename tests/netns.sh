# shellcheck shell=sh
# netns.sh - hosts for the cluster tests and benchmarks, made of network
# namespaces on this machine. Sourced after tests/lib.sh (which gives work,
# T, T_LONG, fail, PYTHON3, EMAD, EMACTL).
#
# netns_setup N makes N "hosts" (namespaces PREFIX-h0 .. PREFIX-h<N-1>), one
# "client" namespace (PREFIX-c, where trainers and readers run) and one
# "switch" namespace (PREFIX-sw) holding a bridge; each host and the client
# have one veth pair into the bridge. Nothing is created in the machine's
# own namespace: no interface, no address, no route. Addresses are private
# and exist only inside the namespaces: the client is 10.77.0.2, host i is
# 10.77.1.(i+1) (i < 249). Each host's link is rate-limited in both directions
# with tc tbf at NETNS_RATE (default 1gbit), so a host's "NIC" is the
# bottleneck as on a real cluster; the client's link is limited only when
# NETNS_CLIENT_RATE is set (it stands for many trainers' NICs).
#
# Everything is removed on exit (an EXIT trap that runs before lib.sh's
# cleanup): the daemons (by PID), every process left in our namespaces (by
# PID: only this test can have started them), then the namespaces, which
# takes their interfaces with them. The whole test is bounded: a watchdog
# sends SIGTERM to the test after T_LONG seconds. Namespaces left by a test
# that was SIGKILLed (named after its PID, which no longer runs) are removed
# by the next netns_setup.
#
# Skips (exit 77) when not root or when `ip netns` cannot create a namespace.

NETNS_RATE=${NETNS_RATE:-1gbit}
NETNS_CLIENT_RATE=${NETNS_CLIENT_RATE:-}
NETNS_PORT=7470
NETNS_HTTP_PORT=7471
netns_prefix=emadt-$$
netns_n=0
netns_watchdog=

# Exit 77 (skip) unless this process may create network namespaces and links.
netns_require() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "${test_name:-test}: SKIP: network namespaces need root" >&2
        exit 77
    fi
    if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then
        echo "${test_name:-test}: SKIP: ip or tc not found (Debian: iproute2)" >&2
        exit 77
    fi
    if ! ip netns add "$netns_prefix-probe" 2>/dev/null; then
        echo "${test_name:-test}: SKIP: ip netns add is not permitted here" >&2
        exit 77
    fi
    ip netns del "$netns_prefix-probe" 2>/dev/null || true
}

# Kill the processes left in namespace NS (only a test of ours can have started them), then
# delete it.
netns_del() {
    for _p in $(ip netns pids "$1" 2>/dev/null); do
        kill -9 "$_p" 2>/dev/null || true
    done
    ip netns del "$1" 2>/dev/null || true
}

# Remove namespaces named emadt-PID-* whose PID no longer runs (a test killed by SIGKILL).
netns_collect_stale() {
    for _ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^emadt-[0-9]*-' || true); do
        _p=${_ns#emadt-}
        _p=${_p%%-*}
        if ! kill -0 "$_p" 2>/dev/null; then
            netns_del "$_ns"
        fi
    done
}

# The namespace of host I, of the client, of the switch.
netns_host() { echo "$netns_prefix-h$1"; }
netns_client_ns() { echo "$netns_prefix-c"; }
netns_switch_ns() { echo "$netns_prefix-sw"; }

# The address of host I, and the nanomsg URL of its daemon.
netns_ip() { echo "10.77.1.$(($1 + 1))"; }
netns_url() { echo "tcp://$(netns_ip "$1"):$NETNS_PORT"; }

# Run a command in host I's namespace / in the client namespace.
netns_exec() {
    _h=$1
    shift
    ip netns exec "$(netns_host "$_h")" "$@"
}
netns_client() {
    ip netns exec "$(netns_client_ns)" "$@"
}

# Limit DEV's egress in namespace NS to RATE (tbf; the burst covers a 64 KiB GSO segment).
netns_limit() {
    ip -n "$1" link set "$2" up
    [ -n "$3" ] || return 0
    ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate "$3" burst 1mb latency 100ms ||
        fail "tc tbf $3 on $2 in $1"
}

# Make namespace NS with a link named eth0 into the bridge (switch port PORT), address ADDR/16,
# both directions limited to RATE (empty: unlimited).
netns_add_node() {
    _ns=$1 _port=$2 _addr=$3 _rate=$4
    ip netns add "$_ns" || fail "ip netns add $_ns"
    ip -n "$_ns" link set lo up
    ip -n "$(netns_switch_ns)" link add "$_port" type veth peer name eth0 netns "$_ns" ||
        fail "veth $_port <-> $_ns"
    ip -n "$(netns_switch_ns)" link set "$_port" master br0 || fail "bridge port $_port"
    ip -n "$_ns" addr add "$_addr/16" dev eth0 || fail "address $_addr in $_ns"
    netns_limit "$_ns" eth0 "$_rate"
    netns_limit "$(netns_switch_ns)" "$_port" "$_rate"
}

# Create N hosts, the client and the switch (see the top of this file); installs the exit trap
# and the watchdog.
netns_setup() {
    netns_require
    netns_collect_stale
    [ "$1" -ge 1 ] && [ "$1" -lt 250 ] || fail "netns_setup: 1 to 249 hosts, not $1"
    trap netns_exit EXIT
    ip netns add "$(netns_switch_ns)" || fail "ip netns add $(netns_switch_ns)"
    ip -n "$(netns_switch_ns)" link add br0 type bridge || fail "bridge"
    ip -n "$(netns_switch_ns)" link set br0 up
    netns_add_node "$(netns_client_ns)" c 10.77.0.2 "$NETNS_CLIENT_RATE"
    _i=0
    while [ "$_i" -lt "$1" ]; do
        netns_add_node "$(netns_host "$_i")" "h$_i" "$(netns_ip "$_i")" "$NETNS_RATE"
        _i=$((_i + 1))
        netns_n=$_i
    done
    # The whole test within T_LONG seconds: then SIGTERM, and the traps clean up.
    _test_pid=$$
    (
        _s=0
        while [ "$_s" -lt "$T_LONG" ] && kill -0 "$_test_pid" 2>/dev/null; do
            sleep 1
            _s=$((_s + 1))
        done
        if kill -0 "$_test_pid" 2>/dev/null; then
            echo "${test_name:-test}: time limit of $T_LONG s reached" >&2
            kill -TERM "$_test_pid" 2>/dev/null
        fi
    ) </dev/null >/dev/null 2>&1 &
    netns_watchdog=$!
}

# Set host I's link rate to RATE in both directions (empty: unlimited).
netns_set_rate() {
    if [ -n "$2" ]; then
        netns_limit "$(netns_host "$1")" eth0 "$2"
        netns_limit "$(netns_switch_ns)" "h$1" "$2"
    else
        ip netns exec "$(netns_host "$1")" tc qdisc del dev eth0 root 2>/dev/null || true
        ip netns exec "$(netns_switch_ns)" tc qdisc del dev "h$1" root 2>/dev/null || true
    fi
}

# Take host I's link down / up (at the switch, as if its cable were pulled).
netns_link_down() { ip -n "$(netns_switch_ns)" link set "h$1" down || fail "link h$1 down"; }
netns_link_up() { ip -n "$(netns_switch_ns)" link set "h$1" up || fail "link h$1 up"; }

# The PID of host I's daemon (empty if none).
netns_pid() { eval "echo \${netns_pid_$1:-}"; }

# Wait until TCP port PORT of address ADDR accepts connections from the client namespace, or
# the process PID has exited; 0 when it accepts.
netns_wait_port() {
    timeout "$T" ip netns exec "$(netns_client_ns)" "$PYTHON3" - "$1" "$2" "$3" <<'EOF'
import socket, sys, time
while True:
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), 5).close()
        sys.exit(0)
    except OSError:
        try:
            with open("/proc/%s/stat" % sys.argv[3]) as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    sys.exit(1)
        except OSError:
            sys.exit(1)
        time.sleep(0.02)
EOF
}

# Start emad in host I on its address (state dir $work/hI/state, log $work/hI/emad.log, HTTP on
# the host's address; --insecure: the address exists only inside the test's namespaces), with
# any extra arguments; waits until it accepts connections.
netns_start_daemon() {
    _h=$1
    shift
    mkdir -p "$work/h$_h/state"
    ip netns exec "$(netns_host "$_h")" "$EMAD" --listen "$(netns_url "$_h")" \
        --state-dir "$work/h$_h/state" --http "$(netns_ip "$_h"):$NETNS_HTTP_PORT" \
        --log-level "${NETNS_LOG_LEVEL:-info}" --insecure "$@" 2>>"$work/h$_h/emad.log" &
    eval "netns_pid_$_h=$!"
    netns_wait_port "$(netns_ip "$_h")" "$NETNS_PORT" "$(netns_pid "$_h")" ||
        netns_fail_host "$_h" "emad did not start in host $_h"
}

# Kill host I's daemon with a signal (default KILL) and wait for it.
netns_stop_daemon() {
    _p=$(netns_pid "$1")
    if [ -n "$_p" ]; then
        kill "-${2:-KILL}" "$_p" 2>/dev/null || true
        wait "$_p" 2>/dev/null || true
        eval "netns_pid_$1="
    fi
}

# fail() with the end of host I's log.
netns_fail_host() {
    if [ -f "$work/h$1/emad.log" ]; then
        echo "---- last lines of host $1's emad log ----" >&2
        tail -n 30 "$work/h$1/emad.log" >&2
    fi
    fail "$2"
}

# Remove everything netns_setup made: daemons, other processes in our namespaces, namespaces.
netns_cleanup() {
    _i=0
    while [ "$_i" -lt "$netns_n" ]; do
        netns_stop_daemon "$_i"
        _i=$((_i + 1))
    done
    for _ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$netns_prefix-" || true); do
        netns_del "$_ns"
    done
    netns_n=0
    if [ -n "$netns_ref_pid" ]; then
        kill -9 "$netns_ref_pid" 2>/dev/null || true
        wait "$netns_ref_pid" 2>/dev/null || true
        netns_ref_pid=
    fi
    if [ -n "$netns_watchdog" ]; then
        kill "$netns_watchdog" 2>/dev/null || true
        netns_watchdog=
    fi
}

# Return status $1 (to hand a status to lib.sh's cleanup, which reads $?).
netns_return() {
    return "$1"
}

# The EXIT trap: clean up the namespaces, then lib.sh's cleanup with the test's exit status
# (through `||`, so that a non-zero status does not end the trap early under set -e).
netns_exit() {
    _status=$?
    netns_cleanup
    if [ "$_status" -eq 0 ]; then
        cleanup
    else
        netns_return "$_status" || cleanup
    fi
}

# ---- clusters over the hosts ----------------------------------------------------------------

# Write to FILE the shard map of epoch EPOCH, S shards of R replicas on hosts FIRST.. (shard s
# replica r is host FIRST + s * R + r), ack ACK (default 1).
netns_write_map() {
    _f=$1 _e=$2 _s=$3 _r=$4 _first=$5 _ack=${6:-1}
    {
        echo "# emad shard map of $test_name"
        echo "epoch $_e"
        echo "ack $_ack"
        _i=0
        while [ "$_i" -lt "$_s" ]; do
            _line="shard $_i"
            _j=0
            while [ "$_j" -lt "$_r" ]; do
                _line="$_line $(netns_url $((_first + _i * _r + _j)))"
                _j=$((_j + 1))
            done
            echo "$_line"
            _i=$((_i + 1))
        done
    } >"$_f"
}

# Start the daemons of map FILE on hosts FIRST..FIRST+COUNT-1 (each as --self its own URL), with
# any extra arguments.
netns_start_cluster() {
    _f=$1 _first=$2 _count=$3
    shift 3
    _i=$_first
    while [ "$_i" -lt $((_first + _count)) ]; do
        netns_start_daemon "$_i" --shard-map "$_f" --self "$(netns_url "$_i")" "$@"
        _i=$((_i + 1))
    done
}

# The reference: a plain daemon in the client namespace on 127.0.0.1:7499 (no link limit), state
# in $work/ref. Its URL is $netns_ref_url.
netns_ref_url=tcp://127.0.0.1:7499
netns_ref_pid=
netns_start_ref() {
    mkdir -p "$work/ref"
    ip netns exec "$(netns_client_ns)" "$EMAD" --listen "$netns_ref_url" --state-dir "$work/ref" \
        --http off --snapshot-interval 0 --log-level info "$@" 2>>"$work/ref/emad.log" &
    netns_ref_pid=$!
    netns_wait_port 127.0.0.1 7499 "$netns_ref_pid" || fail "the reference daemon did not start"
}

# Run the Python client in the client namespace with the in-tree package (after client_env),
# within T_LONG seconds.
netns_python() {
    netns_client env EMAD_LIBRARY="$EMAD_LIBRARY" PYTHONPATH="$PYTHONPATH" \
        ${asan_rt:+LD_PRELOAD=$asan_rt} ${asan_rt:+ASAN_OPTIONS=detect_leaks=0} \
        timeout "$T_LONG" "$PYTHON3" "$@"
}

# Compare model MODEL of each replica set of a 2 x 2 cluster (replica r of every shard,
# through a map of its own) with the reference daemon, using cluster_driver.py DRIVER.
netns_compare_replicas() {
    for _r in 0 1; do
        printf 'epoch 1\nshard 0 %s\nshard 1 %s\n' "$(netns_url "$_r")" "$(netns_url $((2 + _r)))" \
            >"$work/replica$_r"
        netns_python "$1" compare --cluster "$work/replica$_r" --ref "$netns_ref_url" --model "$2" \
            >"$work/cmp$_r.out" 2>&1 || fail "replica $_r of each shard: $(cat "$work/cmp$_r.out")"
    done
}

# emactl in the client namespace through map FILE.
netns_ctl() {
    _f=$1
    shift
    timeout "$T" ip netns exec "$(netns_client_ns)" "$EMACTL" --cluster "$_f" "$@"
}

# Wait (at most T seconds) until file FILE exists; fail (with the end of LOG) if process PID
# (optional) exits first.
netns_wait_file() {
    _i=0
    while [ ! -e "$1" ]; do
        _i=$((_i + 1))
        [ "$_i" -lt $((T * 20)) ] || fail "waited $T s for $1${3:+: $(tail -n 20 "$3")}"
        if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
            fail "process $2 exited before $1 appeared${3:+: $(tail -n 20 "$3")}"
        fi
        sleep 0.05
    done
}
