#!/bin/sh
# The client side of authentication against a second implementation: emactl
# keygen (file mode, no overwrite, the printed public key recomputed from the
# seed with PyNaCl), then emactl and the Python client with --user/--key-file,
# user=/key_file= and EMAD_USER/EMAD_KEY_FILE talking to tests/auth_peer.py, a
# stand-in daemon that checks the handshake and every frame's tags with PyNaCl
# from docs/PROTOCOL.md: large pushes (several 1 MiB pieces per message),
# renewal at 3/4 of a short lifetime, a new handshake after "expired", a
# reply with one flipped bit refused, a pull of 17 MiB read through a session
# (each read reply's tag checked as its data is copied) and a read reply with
# one flipped bit refused, a wrong key and a key file others can
# read refused with clear errors, and credentials refused by a daemon without
# authentication.
set -eu
test_name=test_authclient_peer
. "${top_srcdir:-.}/tests/lib.sh"
client_env

# Start auth_peer.py for user bob with extra options; sets pid and url.
start_peer() {
    rm -f "$work/port"
    "$PYTHON3" "$top_srcdir/tests/auth_peer.py" "$work/port" bob "$bob_pk" "$@" \
        >"$work/peer.log" 2>&1 &
    pid=$!
    watchdog "$pid"
    i=0
    while [ ! -s "$work/port" ]; do
        kill -0 "$pid" 2>/dev/null || fail "auth_peer.py exited: $(cat "$work/peer.log")"
        i=$((i + 1))
        [ "$i" -lt $((T * 10)) ] || fail "auth_peer.py did not start"
        sleep 0.1
    done
    url=tcp://127.0.0.1:$(cat "$work/port")
}

# ---- keygen ----------------------------------------------------------------------------------
"$EMACTL" keygen bob --out "$work/bob.key" --grant "push team-b-*" --grant "pull *" \
    >"$work/bob.ini" || fail "keygen failed"
[ "$(stat -c %a "$work/bob.key")" = 600 ] || fail "key file mode $(stat -c %a "$work/bob.key")"
grep -qx '\[user bob\]' "$work/bob.ini" || fail "no [user bob] entry: $(cat "$work/bob.ini")"
grep -qx 'grant = push team-b-\*' "$work/bob.ini" || fail "no push grant"
grep -qx 'grant = pull \*' "$work/bob.ini" || fail "no pull grant"
bob_pk=$(sed -n 's/^key = //p' "$work/bob.ini")
# The public key of the seed, by a second implementation.
"$PYTHON3" - "$work/bob.key" "$bob_pk" <<'EOF' || fail "the printed public key is not the seed's"
import base64, sys
import nacl.signing
tag, user, seed = open(sys.argv[1]).read().split()
assert (tag, user) == ("emad-key-v1", "bob"), (tag, user)
pk = bytes(nacl.signing.SigningKey(base64.b64decode(seed)).verify_key)
assert sys.argv[2] == "ed25519:" + base64.b64encode(pk).decode(), sys.argv[2]
EOF
cp "$work/bob.key" "$work/bob.key.orig"
if "$EMACTL" keygen bob --out "$work/bob.key" >"$work/out" 2>&1; then
    fail "keygen overwrote a key file"
fi
grep -q "never overwrites" "$work/out" || fail "no clear message: $(cat "$work/out")"
cmp -s "$work/bob.key" "$work/bob.key.orig" || fail "the existing key file changed"
status=0
"$EMACTL" keygen "bad user" --out "$work/x.key" >"$work/out" 2>&1 || status=$?
[ "$status" -eq 2 ] || fail "keygen of a bad user name: status $status"
[ ! -e "$work/x.key" ] || fail "keygen of a bad user name wrote a file"
"$EMACTL" keygen alice --out "$work/alice.key" >/dev/null || fail "keygen alice"
"$EMACTL" keygen carol --out "$work/conf/emad/carol.key" >/dev/null || fail "keygen into a new dir"
[ "$(stat -c %a "$work/conf/emad")" = 700 ] || fail "a new key directory is not 0700"

# ---- emactl and the environment --------------------------------------------------------------
start_peer
ctl --user bob --key-file "$work/bob.key" drop m1 >/dev/null || fail "emactl with --key-file"
ctl --key-file "$work/bob.key" create m1 >/dev/null || fail "emactl with only --key-file"
EMAD_USER=bob EMAD_KEY_FILE=$work/bob.key timeout "$T" "$EMACTL" --server "$url" drop m2 \
    >/dev/null || fail "emactl with EMAD_*"
[ "$(grep -c '^handshake$' "$work/peer.log")" -eq 3 ] || fail "handshakes: $(cat "$work/peer.log")"
grep -q '^frame drop seq=1 ' "$work/peer.log" || fail "no framed drop: $(cat "$work/peer.log")"
grep -q '^frame create seq=1 ' "$work/peer.log" || fail "no framed create"
! grep -q '^refused' "$work/peer.log" || fail "the peer refused: $(cat "$work/peer.log")"

# A key file that others may read: refused before anything is sent.
cp "$work/bob.key" "$work/open.key"
chmod 640 "$work/open.key"
before=$(wc -l <"$work/peer.log")
if ctl --key-file "$work/open.key" drop m1 >"$work/out" 2>&1; then
    fail "a key file of mode 0640 was used"
fi
grep -q "permissions 0640 are too open" "$work/out" || fail "message: $(cat "$work/out")"
grep -q "EMAD_EINVAL" "$work/out" || fail "code: $(cat "$work/out")"
[ "$(wc -l <"$work/peer.log")" -eq "$before" ] || fail "the peer saw a handshake"
# A user the key file is not for; a user without a key file.
ctl --user carol --key-file "$work/bob.key" drop m1 >"$work/out" 2>&1 && fail "user mismatch ok"
grep -q "is the key of user bob, not of carol" "$work/out" || fail "message: $(cat "$work/out")"
EMAD_USER=bob timeout "$T" "$EMACTL" --server "$url" drop m1 >"$work/out" 2>&1 &&
    fail "EMAD_USER without EMAD_KEY_FILE ok"
grep -q "EMAD_KEY_FILE is not" "$work/out" || fail "message: $(cat "$work/out")"
# A key the daemon does not know: a clear EMAD_EAUTH, and the daemon still serves.
ctl --key-file "$work/alice.key" drop m1 >"$work/out" 2>&1 && fail "a wrong key was accepted"
grep -q "authentication as user alice failed.*bad signature.*(EMAD_EAUTH)" "$work/out" ||
    fail "message: $(cat "$work/out")"
ctl --key-file "$work/bob.key" drop m1 >/dev/null || fail "not serving after a wrong key"

kill "$pid"
wait "$pid" 2>/dev/null || true

# ---- the Python client: large pushes in several pieces per message ---------------------------
start_peer
client_python - "$url" "$work/bob.key" <<'EOF' || fail "Python client against the peer"
import sys
import numpy as np
import emad
url, key = sys.argv[1:]
c = emad.Client(url, user="bob", key_file=key, chunk_bytes=4 << 20)  # a transaction
r = c.push("m1", 1, {"w": np.arange(3 << 20, dtype=np.float32), "b": np.ones(10, np.float32)})
assert r.messages == 6, r  # begin, 4 chunks, commit
c.push("m1", 2, {"b": np.ones(10, np.float32)})
try:
    emad.Client(url, user="bob", key_file=key + ".missing")
    raise SystemExit("a missing key file was accepted")
except emad.Error as e:
    assert e.name == "EMAD_EIO" and "No such file" in e.message, e
EOF
grep -q '^frame push seq=[0-9]* pieces=4 bytes=41942' "$work/peer.log" ||
    fail "no push of 4 pieces: $(cat "$work/peer.log")"
! grep -q '^refused' "$work/peer.log" || fail "the peer refused: $(cat "$work/peer.log")"
kill "$pid"
wait "$pid" 2>/dev/null || true

# ---- renewal at 3/4 of the lifetime (8 s: a request 6.2 s after the handshake renews first;
# tried up to three times, in case the machine stalls the client past 8 s) ---------------------
# renew_once: one client, a request, 6.2 s, a request.
renew_once() {
    client_python - "$url" "$work/bob.key" <<'EOF'
import sys, time
import emad
c = emad.Client(sys.argv[1], key_file=sys.argv[2])
c.drop("a")
time.sleep(6.2)
c.drop("b")
EOF
}
start_peer --lifetime 8
for attempt in 1 2 3; do
    renew_once || fail "renewal"
    ! grep -q '^refused' "$work/peer.log" || fail "the peer refused: $(cat "$work/peer.log")"
    grep -q '^renew old=' "$work/peer.log" && break
    [ "$attempt" -lt 3 ] || fail "no renewal: $(cat "$work/peer.log")"
done
kill "$pid"
wait "$pid" 2>/dev/null || true

# ---- a renewal the daemon refuses (it lost the old session): a new session instead -----------
start_peer --lifetime 8 --no-renew
for attempt in 1 2 3; do
    renew_once || fail "renewal refused"
    grep -q '^refused renew' "$work/peer.log" && break
    [ "$attempt" -lt 3 ] || fail "no refused renewal: $(cat "$work/peer.log")"
done
[ "$(grep -c '^refused renew' "$work/peer.log")" -eq "$(($(grep -c '^handshake$' "$work/peer.log") - attempt))" ] ||
    fail "not a new session after each refused renewal: $(cat "$work/peer.log")"
kill "$pid"
wait "$pid" 2>/dev/null || true

# ---- a session the daemon calls expired: a new handshake, the request goes through -----------
start_peer --expire-after 2
for m in a b c d e; do
    ctl --key-file "$work/bob.key" drop "$m" >/dev/null || fail "drop after expiry"
done
client_python - "$url" "$work/bob.key" <<'EOF' || fail "Python after expiry"
import os, sys
import emad
os.environ["EMAD_KEY_FILE"] = sys.argv[2]  # no user: the key file's
c = emad.Client(sys.argv[1])
for m in "abcde":
    c.drop(m)
EOF
grep -q '^refused expired' "$work/peer.log" || fail "no expiry: $(cat "$work/peer.log")"
kill "$pid"
wait "$pid" 2>/dev/null || true

# ---- a reply with one flipped bit ------------------------------------------------------------
start_peer --tamper-op list
ctl --key-file "$work/bob.key" list >"$work/out" 2>&1 && fail "a tampered reply was accepted"
grep -q "reply authentication failed: bad tag (EMAD_EPROTO)" "$work/out" ||
    fail "message: $(cat "$work/out")"
ctl --key-file "$work/bob.key" drop m1 >/dev/null || fail "not serving after a tampered reply"
kill "$pid"
wait "$pid" 2>/dev/null || true

# ---- a pull read through a session (17 MiB in 4 MiB reads): each read reply's tag is checked
# as its data is copied out; a read reply with one flipped bit (in its data) is refused ---------
pull_from_peer() {
    rm -f "$work/pulled.safetensors"
    ctl --key-file "$work/bob.key" pull m "$work/pulled.safetensors" >"$work/out" 2>&1
}
start_peer
pull_from_peer || fail "pull through a session: $(cat "$work/out")"
[ "$(grep -c '^frame read ' "$work/peer.log")" -ge 5 ] || fail "not 5 reads: $(cat "$work/peer.log")"
client_python - "$work/pulled.safetensors" <<'EOF' || fail "pulled data"
import json, struct, sys
import numpy as np
b = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", b[:8])
h = json.loads(b[8:8 + n])
t = h["w"]
assert t["dtype"] == "F32" and t["shape"] == [((17 << 20) + 4) // 4], t
lo, hi = t["data_offsets"]
got = np.frombuffer(b[8 + n + lo:8 + n + hi], dtype="<f4")
want = (np.arange(((17 << 20) + 4) // 4) % 65521).astype(np.float32)
assert np.array_equal(got, want), "pulled data differs"
EOF
kill "$pid"
wait "$pid" 2>/dev/null || true
start_peer --tamper-op read
pull_from_peer && fail "a tampered read reply was accepted"
grep -q "read: reply authentication failed: bad tag (EMAD_EPROTO)" "$work/out" ||
    fail "message: $(cat "$work/out")"
[ ! -e "$work/pulled.safetensors" ] || fail "a file written from a tampered pull"
ctl --key-file "$work/bob.key" drop m1 >/dev/null || fail "not serving after a tampered read reply"
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=

# ---- credentials and a daemon without authentication -----------------------------------------
start_daemon
ctl --key-file "$work/bob.key" list >"$work/out" 2>&1 && fail "credentials to a plain daemon"
grep -q "does not authenticate.*(EMAD_EAUTH)" "$work/out" || fail "message: $(cat "$work/out")"
ctl list >/dev/null || fail "the plain daemon does not serve"
echo "$test_name: PASS"
