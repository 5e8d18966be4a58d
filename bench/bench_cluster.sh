#!/bin/sh
# bench_cluster.sh - `make bench-cluster`: push throughput of a model through
# S = 1, 2, 4 shards (R = 1), each shard a daemon in its own network namespace
# behind a link limited to the same rate (tests/netns.sh), the trainer in the
# client namespace (its own link unlimited: it stands for many trainers'
# NICs). Prints, for each S, the median of the timed pushes, the throughput
# and its ratio to S times the throughput of one shard; the acceptance is a
# ratio of at least 0.8 (pushes scale with the number of shards' NICs).
#
# Anchors, measured first in the same run: raw TCP through one limited link
# (what one shard's NIC gives), raw TCP through one unlimited veth link and
# the load average (what the machine gives: S x the rate must stay well
# below it, or the machine and not the links is measured).
#
#   bench/bench_cluster.sh [--mib N] [--rate RATE] [--pushes K] [--shards "1 2 4"]
#                          [--replicas R] [--plain]
#
# --mib: model size (default 1024 = 1 GiB; 256 for a quick run); --rate: tc
# rate of every link (default 1gbit); --pushes: timed pushes per S after
# one untimed (default 3); --replicas: R replicas per shard (default 1; the
# trainer fans every push out to all of them; NETNS_CLIENT_RATE limits the
# trainer's own link); --plain: S plain daemons fed by S threads (whole
# tensors dealt out by bytes), the same harness without the cluster code;
# also what runs when the daemon has no --shard-map.
# Needs root (network namespaces): exits 77 otherwise. Exit status 1 when a
# ratio is below 0.8.
#
# Environment: top_builddir, top_srcdir (default: the current directory), PYTHON3.
set -eu

test_name=bench-cluster
top_srcdir=${top_srcdir:-.}
top_builddir=${top_builddir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"
# shellcheck source=tests/netns.sh
. "$top_srcdir/tests/netns.sh"

mib=1024 rate=1gbit pushes=3 shards="1 2 4" plain=0 replicas=1
while [ $# -gt 0 ]; do
    case $1 in
    --mib) mib=$2; shift ;;
    --rate) rate=$2; shift ;;
    --pushes) pushes=$2; shift ;;
    --shards) shards=$2; shift ;;
    --replicas) replicas=$2; shift ;;
    --plain) plain=1 ;;
    *) echo "usage: $0 [--mib N] [--rate RATE] [--pushes K] [--shards \"1 2 4\"] [--replicas R] [--plain]" >&2
        exit 2 ;;
    esac
    shift
done
if [ "$plain" = 0 ] && ! "$EMAD" --help 2>&1 | grep -q -- --shard-map; then
    echo "bench-cluster: $EMAD has no --shard-map: measuring plain daemons (--plain)"
    plain=1
fi
max=0
for s in $shards; do [ "$s" -gt "$max" ] && max=$s; done
max=$((max * replicas))

client_env
NETNS_RATE=$rate
netns_setup "$max"
bench_py=$top_srcdir/bench/bench_cluster.py
in_client() { # ARGS...: the Python pusher in the client namespace
    netns_client env EMAD_LIBRARY="$EMAD_LIBRARY" PYTHONPATH="$PYTHONPATH" \
        ${asan_rt:+LD_PRELOAD=$asan_rt} timeout "$T_LONG" "$PYTHON3" "$bench_py" "$@"
}

# Anchors: 128 MiB of raw TCP through host 0's link, limited and then unlimited.
tcp_anchor() { # prints GB/s
    netns_exec 0 timeout "$T" "$PYTHON3" "$bench_py" tcp-sink 7472 &
    sink=$!
    netns_wait_port "$(netns_ip 0)" 7472 "$sink" || fail "tcp sink did not start"
    in_client tcp-send "$(netns_ip 0)" 7472 128 >"$work/tcp.out" || fail "tcp-send"
    wait "$sink" || true
    awk '{ printf "%.3f", $4 / $2 / 1e9 }' "$work/tcp.out"
}
limited=$(tcp_anchor)
netns_set_rate 0 ""
unlimited=$(tcp_anchor)
netns_set_rate 0 "$rate"
echo "bench-cluster: $mib MiB model, $pushes timed pushes per S, R=$replicas, every daemon's link" \
    "$rate (tbf), the trainer's ${NETNS_CLIENT_RATE:-unlimited}" \
    "$([ "$plain" = 1 ] && echo '; plain daemons, one thread each')"
echo "anchors: raw TCP through one $rate link $limited GB/s; through one unlimited link" \
    "$unlimited GB/s; load average $(cut -d' ' -f1-3 /proc/loadavg)"

base=
status=0
for s in $shards; do
    urls=
    i=0
    while [ "$i" -lt $((s * replicas)) ]; do
        rm -rf "$work/h$i"
        if [ "$plain" = 1 ] && [ "$i" -lt "$s" ]; then
            netns_start_daemon "$i" --snapshot-interval 0 ${BENCH_DAEMON_ARGS:-}
            urls="$urls${urls:+,}$(netns_url "$i")"
        fi
        i=$((i + 1))
    done
    if [ "$plain" = 0 ]; then
        netns_write_map "$work/shards.map" "$s" "$s" "$replicas" 0
        netns_start_cluster "$work/shards.map" 0 $((s * replicas)) --snapshot-interval 0 \
            ${BENCH_DAEMON_ARGS:-}
        target="--cluster $work/shards.map"
    else
        target="--plain $urls"
    fi
    # shellcheck disable=SC2086
    in_client push $target --mib "$mib" --pushes "$pushes" >"$work/push.out" 2>&1 ||
        fail "push through $s shards: $(tail -n 5 "$work/push.out")"
    line=$(awk '/^push_seconds/ {
        n = NF - 3; for (i = 2; i <= NF - 2; i++) t[i - 1] = $i
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (t[j] < t[i]) { x = t[i]; t[i] = t[j]; t[j] = x }
        med = n % 2 ? t[(n + 1) / 2] : (t[n / 2] + t[n / 2 + 1]) / 2
        printf "%.3f %.4f", med, $NF / med / 1e9 }' "$work/push.out")
    med=${line% *}
    gbs=${line#* }
    [ "$s" -ne 1 ] || base=$gbs
    if [ -n "$base" ]; then
        ratio=$(awk -v g="$gbs" -v b="$base" -v s="$s" 'BEGIN { printf "%.2f", g / (s * b) }')
        ok=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.8) ? "yes" : "NO" }')
    else
        ratio="-" ok="- (no S=1 run)"
    fi
    [ "$ok" != NO ] || status=1
    printf 'S=%s: push median %s s = %s GB/s; ratio to %s x one shard %s (>= 0.8: %s); pushes %s\n' \
        "$s" "$med" "$gbs" "$s" "$ratio" "$ok" \
        "$(sed -n 's/^push_seconds \(.*\) bytes.*/\1/p' "$work/push.out")"
    i=0
    while [ "$i" -lt $((s * replicas)) ]; do
        netns_stop_daemon "$i"
        i=$((i + 1))
    done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$status"
