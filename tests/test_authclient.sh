#!/bin/sh
# Authentication end to end, as README "Authentication" tells an operator:
# `emactl keygen` for each user appends a ready entry to the auth file, emad
# runs with --auth-file, and emactl (--user/--key-file and
# EMAD_USER/EMAD_KEY_FILE), the Python client (Client(user=, key_file=),
# push_module and pull) and the examples' trainer and evaluator work with the
# grants and are refused without them: no credentials, a pull-only user
# changing anything, an admin of team-a-* touching team-b-*, a wrong key, a
# key file others may read. Every refusal is checked for its message, the
# model is bit-identical afterwards, and the daemon still serves.
set -eu
test_name=test_authclient
. "${top_srcdir:-.}/tests/lib.sh"
client_env
cd "$work"

# ---- keys and the auth file, as documented ---------------------------------------------------
"$EMACTL" keygen alice --out alice.key --grant "push team-a-*" --grant "pull *" \
    --grant "admin team-a-*" >auth.ini || fail "keygen alice"
"$EMACTL" keygen eve --out eve.key --grant "pull team-a-*" >>auth.ini || fail "keygen eve"
"$EMACTL" keygen root --out root.key --grant "admin *" --grant "push *" --grant "pull *" \
    >>auth.ini ||
    fail "keygen root"
"$EMACTL" keygen mallory --out mallory.key >/dev/null || fail "keygen mallory" # not in the file
start_daemon --auth-file "$work/auth.ini"
grep -q "auth" "$work/emad.log" || fail "the daemon does not say whether auth is on"

# Every emactl call of this test goes through ctl (a time limit); `as USER` adds the key file.
as() {
    _u=$1
    shift
    ctl --user "$_u" --key-file "$work/$_u.key" "$@"
}
# expect_refused CODE TEXT COMMAND...: the command fails with CODE and a message with TEXT.
expect_refused() {
    _code=$1
    _text=$2
    shift 2
    if "$@" >out 2>&1; then
        fail "allowed: $*"
    fi
    grep -q "($_code)" out || fail "$*: not $_code: $(cat out)"
    grep -q "$_text" out || fail "$*: message without '$_text': $(cat out)"
}

# ---- emactl: allowed per role ----------------------------------------------------------------
"$PYTHON3" - "$top_srcdir" <<'EOF' || fail "writing the parameter file"
import sys
sys.path.insert(0, sys.argv[1] + "/tests")
import numpy as np
import safetensors_np as st
rng = np.random.default_rng(7)
st.save("p1.safetensors", {"fc.weight": rng.standard_normal((64, 33), np.float32),
                           "fc.bias": rng.standard_normal(64).astype(np.float32)})
st.save("p2.safetensors", {"fc.weight": rng.standard_normal((64, 33), np.float32),
                           "fc.bias": rng.standard_normal(64).astype(np.float32)})
EOF
as alice create team-a-run --decay 0.9 >/dev/null || fail "alice create team-a-run"
as root create team-b-run >/dev/null || fail "root create team-b-run"
as alice push team-a-run p1.safetensors --step 1 >/dev/null || fail "alice push"
as alice push team-a-run p2.safetensors --step 2 >/dev/null || fail "alice push step 2"
as root push team-b-run p1.safetensors --step 1 >/dev/null || fail "root push team-b-run"
as eve pull team-a-run eve.safetensors >/dev/null || fail "eve pull"
as alice pull team-a-run alice.safetensors >/dev/null || fail "alice pull"
cmp -s eve.safetensors alice.safetensors || fail "eve and alice pulled different data"
# The EMA after two pushes, computed independently in float32.
"$PYTHON3" - "$top_srcdir" <<'EOF' || fail "the pulled EMA is wrong"
import sys
sys.path.insert(0, sys.argv[1] + "/tests")
import numpy as np
import safetensors_np as st
p1, _ = st.load("p1.safetensors")
p2, _ = st.load("p2.safetensors")
got, _ = st.load("alice.safetensors")
c = np.float32(1.0 - 0.9)  # README "The update, exactly": in double, rounded once
for k in p1:
    s, p = p1[k].astype(np.float32), p2[k].astype(np.float32)
    want = s - c * (s - p)  # float32 throughout, each step rounded
    assert want.dtype == np.float32 and np.array_equal(got[k], want), k
EOF
as eve list >out || fail "eve list"
grep -q "^team-a-run " out || fail "eve does not see team-a-run: $(cat out)"
! grep -q "team-b-run" out || fail "eve sees team-b-run, which she may not pull: $(cat out)"
as alice list >out || fail "alice list"
grep -q "^team-b-run " out || fail "alice (pull *) does not see team-b-run"
EMAD_USER=eve EMAD_KEY_FILE=$work/eve.key timeout "$T" "$EMACTL" --server "$url" list >out ||
    fail "emactl with EMAD_USER/EMAD_KEY_FILE"
grep -q "^team-a-run " out || fail "list with the environment: $(cat out)"
EMAD_KEY_FILE=$work/eve.key timeout "$T" "$EMACTL" --server "$url" list >/dev/null ||
    fail "emactl with only EMAD_KEY_FILE"

# ---- refused per role; the models unchanged --------------------------------------------------
expect_refused EMAD_EAUTH "requires authentication" ctl list
expect_refused EMAD_EAUTH "requires authentication" ctl drop team-a-run
expect_refused EMAD_EDENIED "eve" as eve push team-a-run p1.safetensors --step 3
expect_refused EMAD_EDENIED "eve" as eve drop team-a-run
expect_refused EMAD_EDENIED "eve" as eve configure team-a-run --decay 0.5
expect_refused EMAD_EDENIED "eve" as eve pull team-b-run x.safetensors
expect_refused EMAD_EDENIED "team-b-run" as alice drop team-b-run
expect_refused EMAD_EDENIED "team-b-run" as alice push team-b-run p2.safetensors --step 2
expect_refused EMAD_EDENIED "team-b-run" as alice configure team-b-run --decay 0.5
expect_refused EMAD_EDENIED "team-b-other" as alice create team-b-other
grep -q "admin" out || fail "the refusal does not name the role: $(cat out)"
# A wrong key, a key of the right name but not the registered one, a key file others may read.
expect_refused EMAD_EAUTH "authentication as user mallory failed" as mallory list
"$EMACTL" keygen alice --out alice2.key >/dev/null || fail "keygen alice2"
expect_refused EMAD_EAUTH "bad_signature" ctl --key-file "$work/alice2.key" drop team-a-run
cp alice.key open.key
chmod 644 open.key
expect_refused EMAD_EINVAL "permissions 0644 are too open" ctl --key-file "$work/open.key" list
as alice pull team-a-run after.safetensors >/dev/null || fail "not serving after the refusals"
cmp -s after.safetensors alice.safetensors || fail "team-a-run changed after the refusals"
as root pull team-b-run b.safetensors >/dev/null || fail "root pull team-b-run"
"$PYTHON3" - "$top_srcdir" <<'EOF' || fail "team-b-run changed after the refusals"
import sys
sys.path.insert(0, sys.argv[1] + "/tests")
import numpy as np
import safetensors_np as st
p1, _ = st.load("p1.safetensors")
got, _ = st.load("b.safetensors")
assert all(np.array_equal(got[k], p1[k]) for k in p1)
EOF

# ---- the Python client: push_module and pull as alice, refused as eve ------------------------
client_python - "$url" "$work" <<'EOF' || fail "Python client"
import os, sys
import torch
import emad
url, work = sys.argv[1:]
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4))
alice = emad.Client(url, user="alice", key_file=os.path.join(work, "alice.key"))
alice.create("team-a-net", decay=0.5)
alice.push_module("team-a-net", net, step=1)
got = alice.pull("team-a-net")
for k, v in net.state_dict().items():
    assert torch.equal(torch.as_tensor(got[k]), v), k
eve = emad.Client(url, key_file=os.path.join(work, "eve.key"))  # the user from the key file
assert eve.pull("team-a-net").step == 1
try:
    eve.push_module("team-a-net", net, step=2)
    raise SystemExit("eve pushed")
except emad.Error as e:
    assert e.name == "EMAD_EDENIED" and "eve" in e.message, e
try:
    emad.Client(url).list()  # no credentials: connects (hello is open), but nothing else
    raise SystemExit("a client without credentials listed")
except emad.Error as e:
    assert e.name == "EMAD_EAUTH" and "required" in e.message, e
os.environ["EMAD_USER"] = "alice"
os.environ["EMAD_KEY_FILE"] = os.path.join(work, "alice.key")
assert emad.Client(url).pull("team-a-net").step == 1
EOF

# ---- large transfers: transactions and pull sessions over 1 and 3 connections (a handshake
# each), every message of several 1 MiB pieces -------------------------------------------------
for depth in 1 3; do
    EMAD_PIPELINE_DEPTH=$depth client_python - "$url" "$work" "$depth" <<'EOF' ||
import os, sys
import numpy as np
import emad
url, work, depth = sys.argv[1:]
assert os.environ.get("EMAD_PIPELINE_DEPTH") == depth  # the connections libemad opens
c = emad.Client(url, key_file=os.path.join(work, "alice.key"))
model = "team-a-big%s" % depth
c.create(model, decay=0.75)
rng = np.random.default_rng(int(depth))
a = {"w%d" % i: rng.standard_normal(3 << 20, dtype=np.float32) for i in range(4)}
b = {k: rng.standard_normal(v.size, dtype=np.float32) for k, v in a.items()}
assert c.push(model, 1, a).messages > 3
c.push(model, 2, b)
got = c.pull(model)
cf = np.float32(1.0 - 0.75)
for k in a:
    assert np.array_equal(got[k], a[k] - cf * (a[k] - b[k])), k
EOF
        fail "large push and pull with EMAD_PIPELINE_DEPTH=$depth"
done

# ---- the examples: trainer as alice, evaluator as eve (pull only) ----------------------------
client_python "$top_srcdir/examples/train.py" --url "$url" --key-file "$work/alice.key" \
    --model team-a-cnn --steps 20 >train.out 2>&1 || fail "train.py: $(tail -5 train.out)"
grep -q "done: 20 steps" train.out || fail "train.py: $(tail -5 train.out)"
client_python "$top_srcdir/examples/evaluate.py" --url "$url" --key-file "$work/eve.key" \
    --model team-a-cnn --until-step 20 --interval 0.1 >eval.out 2>&1 ||
    fail "evaluate.py: $(tail -5 eval.out)"
grep -q "^step 20 ema_loss" eval.out || fail "evaluate.py: $(tail -5 eval.out)"
# ---- sessions of 8 s: pushes renew on the way, an idle client gets a new session, nothing is
# refused; a request made 6.2 s after the handshake (3/4 of the lifetime is 6 s) renews first
# (tried up to three times, in case the machine stalls the client past 8 s). ------------------
stop_daemon_clean
mv "$work/emad.log" "$work/emad-1.log"
start_daemon --auth-file "$work/auth.ini" --auth-session-lifetime 8
client_python - "$url" "$work" <<'EOF' || fail "pushes across renewals against the daemon"
import os, sys, time
import numpy as np
import emad
url, work = sys.argv[1:]
c = emad.Client(url, key_file=os.path.join(work, "alice.key"))
c.create("team-a-short", decay=0.5)
x = np.arange(3 << 20, dtype=np.float32)
for step in range(1, 12):  # about 9 s of pushes: renewed on the way, never refused
    c.push("team-a-short", step, {"w": x})
    time.sleep(0.8)
time.sleep(8.5)  # idle longer than the lifetime: a new session
assert np.array_equal(c.pull("team-a-short")["w"], x)
EOF
! grep -q "event=auth_failed" "$work/emad.log" || fail "refusals: $(grep auth_failed "$work/emad.log")"
for attempt in 1 2 3; do
    client_python - "$url" "$work" <<'EOF' || fail "renewal against the daemon"
import os, sys, time
import emad
c = emad.Client(sys.argv[1], key_file=os.path.join(sys.argv[2], "alice.key"))
c.list()
time.sleep(6.2)
c.list()
EOF
    if grep -q "event=auth_session user=alice .*renews=[0-9a-f]*[1-9a-f]" "$work/emad.log"; then
        break
    fi
    [ "$attempt" -lt 3 ] || fail "no renewed session in the daemon's log"
done
echo "$test_name: PASS"
