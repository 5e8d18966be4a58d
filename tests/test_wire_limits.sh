#!/bin/sh
# test_wire_limits.sh - what a client may send at the edges of the protocol,
# end to end over loopback: names with C1 controls or line separators and
# model names starting with '-' get EMAD_ENAME; a tensor name with quotes
# cannot forge fields in the log and no control character reaches it;
# --max-message-bytes is exact (a body of the limit is served, one byte
# more is EMAD_ELIMIT); as_dtype is refused outside seeds for new and
# stored tensors alike; `list` of a model larger than one reply comes in
# pages (EMAD_ELIMIT without offset/limit, pages with `next`), and emactl
# lists every tensor. After each refusal the daemon keeps serving.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_wire_limits.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

[ -x "$EMAD" ] || fail "$EMAD not built"
[ -x "$EMACTL" ] || fail "$EMACTL not built"
timeout "$T" "$PYTHON3" -c 'import numpy' || fail "$PYTHON3 cannot import numpy"

# many PATH N: a state dict of N one-element tensors layer00000.w, ...
many() {
    timeout "$T" "$PYTHON3" - "$top_srcdir/tests" "$1" "$2" <<'EOF' || fail "cannot write $1"
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import safetensors_np as st
n = int(sys.argv[3])
st.save(sys.argv[2], {"layer%05d.w" % i: np.full(1, i, np.float32) for i in range(n)},
        {"format": "pt", "step": "1"})
EOF
}

ntensors=3000
many "$work/many.safetensors" $ntensors

start_daemon --max-message-bytes 65536
ctl create m --decay 0.5 >/dev/null || fail "create m"
ctl push m "$work/many.safetensors" --step 1 >/dev/null || fail "push of $ntensors tensors"

timeout "$T" "$PYTHON3" - "$port" "$top_srcdir/tests" "$ntensors" <<'EOF' || fail "raw requests failed"
import struct
import sys

sys.path.insert(0, sys.argv[2])
from msgpack_min import pack  # noqa: E402
from sp_raw import Conn, bin32, f32_tensor, request  # noqa: E402

LIMIT = 65536
n = int(sys.argv[3])
c = Conn(int(sys.argv[1]))


def hello_of_size(size):
    """A hello request of exactly size bytes (an ignored key pads it)."""
    head = request("hello", pad=bin32(b""))
    return request("hello", pad=bin32(b"\0" * (size - len(head))))


def serving():
    c.ok(request("hello"))


# 1. --max-message-bytes is exact.
assert len(hello_of_size(LIMIT)) == LIMIT
c.ok(hello_of_size(LIMIT))
for extra in (1, 2, 59):
    c.error(hello_of_size(LIMIT + extra), "EMAD_ELIMIT")
    serving()

# 2. Names: C1 controls, separators, a leading '-'.
for bad in ("w\u0085", "w\u009b2J", "a\u2028b", "a\u2029b", "\u0080"):
    c.error(request("push", model="m", step=2, tensors=[f32_tensor(bad, [1.0])]), "EMAD_ENAME")
    serving()
for bad in ("-rf", "-", "--help"):
    c.error(request("create", model=bad), "EMAD_ENAME")
    serving()
c.ok(request("create", model="a-"))
# A name with quotes is a valid name; its error is logged with the quotes escaped.
forged = 'q" code=EMAD_OK fake="'
t = f32_tensor(forged, [1.0])
t["data"] = b"\0" * 3
c.error(request("push", model="m", step=2, tensors=[t]), "EMAD_ESIZE")
serving()

# 3. as_dtype outside a seed: refused for a new tensor as for a stored one.
for name in ("brand.new", "layer00001.w"):
    c.error(request("push", model="m", step=2, tensors=[f32_tensor(name, [1.0], as_dtype="BF16")]),
            "EMAD_EDTYPE")
    serving()
c.ok(request("push", model="m", step=2, seed=True,
             tensors=[f32_tensor("seeded.bf16", [1.0], as_dtype="BF16")]))

# 4. list in pages.
c.error(request("list", model="m"), "EMAD_ELIMIT")
reply = c.ok(request("list", model="m", limit=10))
assert pack("next") + pack(10) in reply, reply[:200]
assert pack("layer00009.w") in reply and pack("layer00010.w") not in reply
reply = c.ok(request("list", model="m", offset=n - 2, limit=10))
assert pack("next") not in reply
assert pack("layer%05d.w" % (n - 1)) in reply
# the reply limit bounds a page; a page always holds at least one tensor
reply = c.ok(request("list", model="m", offset=0, max_reply_bytes=8192))
assert len(reply) <= 8192 and pack("next") in reply
c.error(request("list", model="m", offset=n + 10), "EMAD_ERANGE")
c.error(request("list", model="m", limit=0), "EMAD_ERANGE")
c.error(request("list", model="m", limit=65537), "EMAD_ERANGE")
c.error(request("list", model="m", offset=0, max_reply_bytes=100), "EMAD_ERANGE")
# a small model is still listed whole without offset/limit (older clients)
reply = c.ok(request("list", model="a-"))
assert pack("next") not in reply
serving()
c.close()
print("raw requests passed")
EOF
kill -0 "$pid" 2>/dev/null || fail "emad died"

# emactl lists every tensor of the paged model (plus the seeded one).
ctl list m >"$work/list" 2>"$work/err" || fail "emactl list m: $(cat "$work/err")"
got=$(grep -c 'layer[0-9]*\.w' "$work/list")
[ "$got" -eq "$ntensors" ] || fail "emactl list m shows $got of $ntensors tensors"
grep -q 'seeded.bf16' "$work/list" || fail "emactl list m lacks seeded.bf16"

# The log: the forged name stays inside its quoted value; no control character got in.
grep -qF 'tensor="q\" code=EMAD_OK fake=\""' "$work/emad.log" ||
    fail "the forged tensor name is not escaped in the log: $(grep -F 'q\"' "$work/emad.log" | head -n 3)"
if grep -q '^fake=\|code=EMAD_OK fake="" ' "$work/emad.log"; then fail "a forged field reached the log"; fi
if LC_ALL=C grep -q "$(printf '\302[\200-\237]')" "$work/emad.log"; then
    fail "a C1 control reached the log"
fi
if LC_ALL=C grep -q "$(printf '\342\200[\250\251]')" "$work/emad.log"; then
    fail "U+2028/U+2029 reached the log"
fi

stop_daemon_clean

# With the default message limit, a page stays within 512 KiB: 12,000 tensors take two pages,
# and a request without offset/limit is refused rather than answered in part.
many "$work/12k.safetensors" 12000
start_daemon
ctl create big --decay 0.5 >/dev/null || fail "create big"
ctl push big "$work/12k.safetensors" --step 1 >/dev/null || fail "push of 12000 tensors"
timeout "$T" "$PYTHON3" - "$port" "$top_srcdir/tests" <<'EOF' || fail "default pages failed"
import sys
sys.path.insert(0, sys.argv[2])
from msgpack_min import pack  # noqa: E402
from sp_raw import Conn, request  # noqa: E402
c = Conn(int(sys.argv[1]))
c.error(request("list", model="big"), "EMAD_ELIMIT")
first = c.ok(request("list", model="big", offset=0))
assert 256 << 10 < len(first) <= 512 << 10 and pack("next") in first, len(first)
c.ok(request("hello"))
EOF
ctl list big >"$work/list" 2>"$work/err" || fail "emactl list big: $(cat "$work/err")"
[ "$(grep -c 'layer[0-9]*\.w' "$work/list")" -eq 12000 ] || fail "emactl list big is not whole"
stop_daemon_clean
echo "test_wire_limits.sh: PASS"
