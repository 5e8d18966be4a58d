#!/bin/sh
# A cluster whose daemons require authentication: 2 shards x 2 replicas on
# 127.0.0.1, every daemon with the same --auth-file. The cluster client's
# connection to each replica does its own handshake with the user's key:
# emactl --cluster with --user/--key-file creates a model, the Python client
# Client(cluster=, user=, key_file=) pushes two steps (one tensor large
# enough to be cut across the shards) and pulls a result equal bit for bit
# to numpy's EMA; a pull-only user and a client without credentials are
# refused (EMAD_EDENIED, EMAD_EAUTH) and change nothing; every replica
# still serves.
set -eu
test_name=test_cluster_auth
. "${top_srcdir:-.}/tests/lib.sh"
client_env
cd "$work"

"$EMACTL" keygen alice --out alice.key --grant "admin *" --grant "push *" --grant "pull *" \
    >auth.ini || fail "keygen alice"
"$EMACTL" keygen eve --out eve.key --grant "pull *" >>auth.ini || fail "keygen eve"

pids=
trap 'st=$?; for p in $pids; do kill -9 "$p" 2>/dev/null || true; done; (exit $st); cleanup' EXIT

ports=
for _i in 1 2 3 4; do
    ports="$ports $(pick_port)"
done
set -- $ports
{
    echo "epoch 1"
    echo "ack 1"
    echo "shard 0 tcp://127.0.0.1:$1 tcp://127.0.0.1:$2"
    echo "shard 1 tcp://127.0.0.1:$3 tcp://127.0.0.1:$4"
} >map
for p in $ports; do
    mkdir -p "state$p"
    "$EMAD" --listen "tcp://127.0.0.1:$p" --shard-map map --self "tcp://127.0.0.1:$p" \
        --auth-file "$work/auth.ini" --state-dir "$work/state$p" --http off --log-level debug \
        2>>"$work/emad.log" &
    pids="$pids $!"
    watchdog "$!"
done
timeout "$T" "$PYTHON3" - $ports <<'EOF' || fail "the daemons did not start"
import socket, sys, time
for port in sys.argv[1:]:
    while True:
        try:
            socket.create_connection(("127.0.0.1", int(port)), 5).close()
            break
        except OSError:
            time.sleep(0.01)
EOF

as_alice() {
    timeout "$T" "$EMACTL" --cluster map --user alice --key-file alice.key "$@"
}
as_alice create m1 --decay 0.9 >create.out 2>&1 || fail "create through the cluster: $(cat create.out)"

client_python - <<'EOF' || fail "push and pull through the authenticated cluster"
import numpy as np
import emad

alice = emad.Client(cluster="map", user="alice", key_file="alice.key")
a = (np.arange(1_500_000, dtype=np.float32) % 977) / np.float32(7)  # 6 MB: cut across shards
b = np.linspace(-1, 1, 10, dtype=np.float32)
alice.push("m1", 1, {"a": a, "b": b})
alice.push("m1", 2, {"a": a * 2, "b": b * 3})
got = alice.pull("m1")
c = np.float32(1 - 0.9)  # the shadow starts at step 1's values, then one update
for name, p1, p2 in (("a", a, a * 2), ("b", b, b * 3)):
    want = p1 - c * (p1 - p2)
    assert got[name].shape == want.shape, (name, got[name].shape)
    assert np.array_equal(got[name], want), name

# A pull-only user cannot change the model, a client without credentials cannot talk at all.
eve = emad.Client(cluster="map", user="eve", key_file="eve.key")
try:
    eve.push("m1", 3, {"a": a * 0, "b": b * 0})
    raise SystemExit("eve's push was accepted")
except emad.Error as e:
    assert e.name == "EMAD_EDENIED", e
assert np.array_equal(eve.pull("m1")["a"], got["a"])
try:
    emad.Client(cluster="map").push("m1", 3, {"a": a * 0, "b": b * 0})
    raise SystemExit("a push without credentials was accepted")
except emad.Error as e:
    assert e.name == "EMAD_EAUTH", e
after = alice.pull("m1")
assert all(np.array_equal(after[k], got[k]) for k in got)
print("cluster with auth: bit-exact, refusals clean")
EOF

as_alice cluster status m1 >status.out 2>&1 || fail "cluster status: $(cat status.out)"
grep -q "4 of 4 replicas serving" status.out || fail "not every replica serves: $(cat status.out)"
echo "$test_name: PASS"
