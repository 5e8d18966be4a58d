#!/bin/sh
# test_pull_pages.sh - any model that can be pushed can be pulled whole: a model of 200,000
# tensors (more descriptions than one reply's msgpack objects allow a client to decode) is
# pulled by emactl (libemad reads the session's descriptions in pages of at most 512 KiB,
# then the data) and checked value by value with numpy; over the raw protocol, a paged pull
# gives pages with offset/next of one session, bad pages get EMAD_ERANGE / EMAD_ENOSESSION, an
# unpaged pull whose list exceeds max_reply_bytes gets EMAD_ELIMIT, and the daemon serves on.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_pull_pages.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

[ -x "$EMAD" ] || fail "$EMAD not built"
[ -x "$EMACTL" ] || fail "$EMACTL not built"
timeout "$T" "$PYTHON3" -c 'import numpy' || fail "$PYTHON3 cannot import numpy"
n=200000

start_daemon
timeout "$T_LONG" "$PYTHON3" - "$port" "$top_srcdir/tests" "$n" <<'EOF2' || fail "raw pulls"
import sys
sys.path.insert(0, sys.argv[2])
import numpy as np
from adv_wire import Client, req

c = Client(int(sys.argv[1]))
n = int(sys.argv[3])
c.ok(req("create", model="big", decays=[0.5]))
for base in range(0, n, 65536):
    c.ok(req("push", model="big", step=1, tensors=[
        {"name": "layer.%07d.weight" % i, "kind": "param", "dtype": "F32", "shape": [2],
         "data": np.float32([i, -i]).tobytes()} for i in range(base, min(n, base + 65536))]))
# Pages of one session: offsets follow, names in first-push order, one step.
r = c.ok(req("pull", model="big", offset=0, inline_bytes=8192))
s, names, pages = r["session"], [], 0
while True:
    assert r["offset"] == len(names) and r["step"] == 1, (r["offset"], len(names))
    names += [t["name"] for t in r["tensors"]]
    pages += 1
    if "next" not in r:
        break
    r = c.ok(req("pull", session=s, offset=r["next"]))
assert names == ["layer.%07d.weight" % i for i in range(n)]
assert pages > 1, pages
d = c.ok(req("read", session=s, ranges=[[n - 1, 0, 8]]))["data"][0]
assert d == np.float32([n - 1, -(n - 1)]).tobytes()
c.error(req("pull", session=s, offset=n + 1), "EMAD_ERANGE")
c.error(req("pull", session=s, offset=0, limit=0), "EMAD_ERANGE")
c.ok(req("release", session=s))
c.error(req("pull", session=s, offset=0), "EMAD_ENOSESSION")
# A client that does not page, with a small reply cap: a clear error, never a part.
e = c.error(req("pull", model="big", max_reply_bytes=1 << 20), "EMAD_ELIMIT")
assert "pages" in e["message"], e
c.ok(req("hello"))
print("%d tensors in %d pages" % (n, pages))
EOF2

ctl pull big "$work/big.safetensors" >/dev/null || fail "emactl pull of $n tensors"
timeout "$T_LONG" "$PYTHON3" - "$work/big.safetensors" "$top_srcdir/tests" "$n" <<'EOF2' ||
import sys
sys.path.insert(0, sys.argv[2])
import numpy as np
import safetensors_np as st

tensors = st.load(sys.argv[1])[0]
n = int(sys.argv[3])
assert len(tensors) == n, len(tensors)
for i in range(0, n, 997):
    assert tensors["layer.%07d.weight" % i].tobytes() == np.float32([i, -i]).tobytes(), i
EOF2
    fail "the pulled file differs"
ctl list big >/dev/null || fail "list after the pulls"
echo "$test_name: PASS"
