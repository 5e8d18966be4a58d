#!/bin/sh
# test_cli.sh - emactl and emad error paths, end to end: a push with a
# changed shape is refused (non-zero exit, stderr names the tensor and the
# shape) and changes nothing; truncated, garbage and missing files get a
# clear error; raw bytes, a wrong SP protocol, oversized frames and
# msgpack-valid but wrong requests sent with Python sockets get error
# replies or a dropped connection, and the daemon keeps answering emactl
# afterwards; drop, unknown-model errors, and stats counting the errors.
# Every command runs under a timeout and the daemon is always killed on exit.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_cli.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

# Run emactl expecting success; stdout in $work/out, stderr in $work/err.
ok() {
    ctl "$@" >"$work/out" 2>"$work/err" || fail "emactl $* failed: $(cat "$work/err")"
}

# Run emactl expecting a non-zero exit with a message on stderr (stdout in $work/out).
refused() {
    if ctl "$@" >"$work/out" 2>"$work/err"; then
        fail "emactl $* succeeded, expected an error"
    fi
    [ -s "$work/err" ] || fail "emactl $* failed without a message on stderr"
}

# Assert that $work/err contains the fixed string $1 (case-insensitive); $2 says what was run.
err_has() {
    grep -qiF -- "$1" "$work/err" || fail "$2: stderr lacks '$1': $(cat "$work/err")"
}

# Write a safetensors file with numpy: $1 path, $2 Python dict expression (numpy as np).
np_save() {
    timeout "$T" "$PYTHON3" -c "
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import safetensors_np as st
st.save(sys.argv[2], $2, {'format': 'pt'})
" "$top_srcdir/tests" "$1" || fail "cannot write $1 with numpy"
}

# The value of counter $1 in `emactl stats` output ($work/out), or fail.
counter() {
    v=$(sed -n "s/^[[:space:]]*$1[[:space:]:=]*\([0-9][0-9]*\)[[:space:]]*\$/\1/p" "$work/out" | head -n 1)
    [ -n "$v" ] || fail "stats output lacks counter '$1': $(cat "$work/out")"
    echo "$v"
}

[ -x "$EMAD" ] || fail "$EMAD not built"
[ -x "$EMACTL" ] || fail "$EMACTL not built"
timeout "$T" "$PYTHON3" -c 'import numpy' || fail "$PYTHON3 cannot import numpy"

p1=$work/p1.safetensors
np_save "$p1" "{'fc.weight': np.arange(6, dtype=np.float32).reshape(2, 3), 'fc.bias': np.ones(2, np.float32)}"
np_save "$work/b1.safetensors" "{'bn.count': np.array(7, np.int64)}"
np_save "$work/p2.safetensors" "{'fc.weight': np.zeros((3, 2), np.float32), 'fc.bias': np.zeros(2, np.float32)}"

start_daemon
ok create cli --decay 0.5
ok push cli "$p1" --step 1 --buffers "$work/b1.safetensors"
ok pull cli "$work/pull1.safetensors"

# 1. A changed shape is refused, names the tensor and the shape, and changes nothing.
refused push cli "$work/p2.safetensors" --step 2
err_has "fc.weight" "push with a changed shape"
err_has "shape" "push with a changed shape"
ok pull cli "$work/pull2.safetensors"
cmp "$work/pull1.safetensors" "$work/pull2.safetensors" || fail "a refused push changed the model"

# 2. Bad files: a clear error, nothing sent.
size=$(wc -c <"$p1")
head -c $((size - 3)) "$p1" >"$work/trunc.safetensors"
refused push cli "$work/trunc.safetensors" --step 3
err_has "trunc.safetensors" "push of a truncated file"
err_has "truncated" "push of a truncated file"
head -c 5 "$p1" >"$work/short.safetensors"
refused push cli "$work/short.safetensors" --step 3
err_has "short.safetensors" "push of a 5-byte file"
timeout "$T" "$PYTHON3" -c 'import os, sys; open(sys.argv[1], "wb").write(b"\xff" * 8 + os.urandom(200))' \
    "$work/garbage.safetensors"
refused push cli "$work/garbage.safetensors" --step 3
err_has "header length" "push of random bytes"
refused push cli "$work/missing.safetensors" --step 3
err_has "missing.safetensors" "push of a missing file"
refused push cli "$p1" --step 3 --buffers "$work/trunc.safetensors"
err_has "truncated" "push with a truncated buffers file"

# 3. Raw bytes and wrong messages on the daemon's port.
timeout "$T" "$PYTHON3" - "$port" "$top_srcdir/tests" <<'EOF' || fail "raw socket checks failed"
"""Talk to emad with plain sockets: nanomsg's SP-over-TCP framing by hand (tests/sp_raw.py)."""
import os
import socket
import struct
import sys

PORT = int(sys.argv[1])
PUB = 32
WAIT = 60 * float(os.environ.get("EMAD_TEST_TIMEOUT_SCALE") or 1)  # a reply's time limit
sys.path.insert(0, sys.argv[2])
from msgpack_min import pack  # noqa: E402
from sp_raw import (REP, REQ, header, recv_exact, recv_message,  # noqa: E402
                    request_id, send_message)


def connect(proto=None):
    """A TCP connection; with proto, after the SP handshake (the daemon must answer as REP)."""
    s = socket.create_connection(("127.0.0.1", PORT), WAIT)
    s.settimeout(WAIT)
    if proto is not None:
        s.sendall(header(proto))
        peer = recv_exact(s, 8)
        assert peer == header(REP), "bad SP header from emad: %r" % peer
    return s


def closed_by_peer(s):
    """True if the daemon closes the connection within the socket timeout (data before the
    close, such as its SP header, is read and ignored)."""
    try:
        while s.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def request(s, rid, payload):
    """Send one REQ message and return the reply's payload (after the request id)."""
    send_message(s, request_id(rid) + payload)
    body = recv_message(s)
    assert body[:4] == request_id(rid), "reply to another request"
    return body[4:]


def expect_error(s, rid, payload, *names):
    """Send payload and check the reply is an error map naming one of the error names."""
    reply = request(s, rid, payload)
    assert reply[:1] == b"\xde" or 0x80 <= reply[0] <= 0x8F, "reply not a map: %r" % reply
    assert pack("ok") + pack(False) in reply, "reply to %r is not ok=false: %r" % (payload, reply)
    assert any(pack(n) in reply for n in names), "reply to %r lacks %s: %r" % (
        payload, names, reply)


# Random bytes instead of the SP handshake: the daemon drops the connection.
s = connect()
s.sendall(os.urandom(4096))
closed_by_peer(s)
s.close()
# A valid SP header for the wrong protocol (PUB): dropped.
s = socket.create_connection(("127.0.0.1", PORT), WAIT)
s.settimeout(WAIT)
s.sendall(header(PUB))
assert closed_by_peer(s), "a PUB peer was not disconnected"
s.close()

# msgpack-valid but wrong requests: each gets an error reply on the same connection.
s = connect(REQ)
expect_error(s, 1, pack(42), "EMAD_EMALFORMED")
expect_error(s, 2, pack({"v": 1, "op": "bogus"}), "EMAD_EOP")
expect_error(s, 3, pack({"v": 2, "op": "hello"}), "EMAD_EVERSION")
expect_error(s, 4, pack({"v": 1, "op": "list"}) + b"\x00", "EMAD_EMALFORMED")
expect_error(s, 5, b"\xdd\xff\xff\xff\xff", "EMAD_EMALFORMED", "EMAD_ELIMIT")
expect_error(s, 6, b"\x91" * 100 + b"\x00", "EMAD_EMALFORMED", "EMAD_ELIMIT")
push = {"v": 1, "op": "push", "model": "cli", "step": 9, "tensors": [
    {"name": "fc.bias", "kind": "param", "dtype": "F32", "shape": [2], "data": b"\x00" * 4}]}
expect_error(s, 7, pack(push), "EMAD_ESIZE")
push["tensors"][0]["data"] = b"\x00" * 8
push["tensors"][0]["dtype"] = "F8"
expect_error(s, 8, pack(push), "EMAD_EDTYPE")
s.close()

# A frame larger than the daemon accepts: dropped without a reply.
s = connect(REQ)
s.sendall(struct.pack(">Q", 1 << 40) + b"\x80\x00\x00\x01" + b"\x00" * 1000)
assert closed_by_peer(s), "an oversized frame was not dropped"
s.close()
# A frame cut short by the client: nothing to answer; the daemon must just cope.
s = connect(REQ)
s.sendall(struct.pack(">Q", 100) + b"\x80\x00\x00\x01\x81")
s.close()
print("raw socket checks passed")
EOF
kill -0 "$pid" 2>/dev/null || fail "emad died after raw socket traffic"

# 4. The daemon still answers: list and a valid push.
ok list
grep -qw "cli" "$work/out" || fail "emactl list does not show model cli: $(cat "$work/out")"
ok push cli "$p1" --step 4 --buffers "$work/b1.safetensors"
ok list cli
grep -q "fc.weight" "$work/out" || fail "emactl list cli does not show fc.weight: $(cat "$work/out")"

# 5. Unknown models, and drop.
refused push nosuch "$p1" --step 1
err_has "nosuch" "push to an unknown model"
refused pull nosuch "$work/x.safetensors"
err_has "nosuch" "pull of an unknown model"
[ ! -e "$work/x.safetensors" ] || fail "a failed pull created its output file"
ok drop cli
ok list
if grep -qw "cli" "$work/out"; then
    fail "emactl list still shows the dropped model: $(cat "$work/out")"
fi
refused pull cli "$work/x.safetensors"
err_has "cli" "pull of a dropped model"
refused drop cli
err_has "cli" "drop of a dropped model"

# 6. stats: counters, including the errors caused above (at least: shape, 8 raw requests,
# 2 unknown-model and 2 dropped-model requests).
ok stats
requests=$(counter requests)
errors=$(counter errors)
shape_errors=$(counter errors_EMAD_ESHAPE)
[ "$requests" -ge 10 ] || fail "stats: requests = $requests, expected >= 10"
[ "$errors" -ge 13 ] || fail "stats: errors = $errors, expected >= 13"
[ "$shape_errors" -ge 1 ] || fail "stats: errors_EMAD_ESHAPE = $shape_errors, expected >= 1"
# The table, the JSON form (same counter) and watch (bounded by --count).
ctl create tab --decay 0.5 >/dev/null || fail "create tab"
ok stats
grep -q "^MODEL .*STEP .*LAG(s)" "$work/out" || fail "stats has no model table: $(cat "$work/out")"
grep -q "^tab  *0  *-  *0  *0  *0$" "$work/out" || fail "stats table row of tab: $(cat "$work/out")"
ok stats --json
timeout "$T" "$PYTHON3" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["counters"]["errors_EMAD_ESHAPE"] == int(sys.argv[2]), d["counters"]
assert [m["name"] for m in d["models"]] == ["tab"], d["models"]
assert d["models"][0]["last_push_age_ms"] == -1
' "$work/out" "$shape_errors" || fail "stats --json: $(cat "$work/out")"
ok watch --interval 0.1 --count 2
[ "$(grep -c "^COUNTER " "$work/out")" -eq 2 ] || fail "watch did not refresh twice: $(cat "$work/out")"
refused watch --count 0
err_has "--count" "watch --count 0"

stop_daemon_clean
echo "test_cli.sh: PASS"
