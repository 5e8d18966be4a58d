"""The adversarial cases of emad, over loopback, each while a second client (the pinger, a
process of its own) sends `hello` back to back. For every case the attacker must get the
documented error, and afterwards the daemon must serve correct results (a canary model pushed
and pulled, its EMA computed here with numpy float32). tests/test_adversarial.sh runs it as a
test (every `hello` answered within a bound); bench/bench_hello.py prints the latencies.

Usage: adversarial.py PORT HTTP_PORT LOG [--bound SECONDS] [--only CASE,...]
Prints one line per case: name, hellos answered, worst and p99 latency in ms."""
import os
import socket
import sys
import time

import numpy as np

import sp_raw
from adv_wire import F32, Client, Pinger, Raw, latency_summary, pack, req, timeout_scale

STEP_MAX = (1 << 63) - 1


def f32_tensor(name, values, kind="param", **extra):
    a = np.asarray(values, np.float32)
    t = {"name": name, "kind": kind, "dtype": "F32", "shape": [len(a)], "data": a.tobytes()}
    t.update(extra)
    return t


def pulled(reply, name):
    """The pulled tensor name as a numpy float32 array."""
    for t in reply["tensors"]:
        if t["name"] == name:
            return np.frombuffer(t["data"], np.float32)
    raise AssertionError("tensor %s not pulled" % name)


class Ctx:
    """What every case gets: the attacker's connection, the ports, the canary."""

    def __init__(self, port, http_port, log):
        self.port, self.http_port, self.log = port, http_port, log
        self.c = Client(port)
        self.max_idle = 400
        self.step = 0
        self.shadow = None
        self.c.ok(req("create", model="canary", decays=[0.5]))

    def canary(self):
        """Push the canary's next step and check the pulled EMA against numpy's."""
        self.step += 1
        v = np.arange(8, dtype=np.float32) * np.float32(self.step % 7 + 0.25)
        self.c.ok(req("push", model="canary", step=self.step, tensors=[f32_tensor("w", v)]))
        if self.shadow is None:
            self.shadow = v.copy()
        else:
            self.shadow = self.shadow - np.float32(0.5) * (self.shadow - v)
        r = self.c.ok(req("pull", model="canary"))
        assert r["step"] == self.step, r["step"]
        got = pulled(r, "w")
        assert got.tobytes() == self.shadow.tobytes(), (got, self.shadow)


# ---- cases: each does the attack, checks the errors and the results of its own models ----

def case_slices_65536(x):
    """One push of 65,536 one-element slices of one tensor; then the same with one overlap."""
    n = 65536
    vals = np.arange(n, dtype=np.float32)
    x.c.ok(req("create", model="slices", decays=[0.9]))
    ts = [{"name": "w", "kind": "param", "dtype": "F32", "shape": [n],
           "data": vals[i:i + 1].tobytes(), "slice": [i, 1]} for i in range(n)]
    x.phase("pack")
    body = pack(req("push", model="slices", step=1, tensors=ts))
    x.phase("push")
    r = x.c.ok(body)
    assert r["applied"] >= 1
    x.phase("overlap")
    ts[-1]["slice"] = [n - 2, 1]
    e = x.c.error(req("push", model="slices", step=2, tensors=ts), "EMAD_EOVERLAP")
    assert e.get("tensor") == "w"
    x.phase("pull")
    got = pulled(x.c.ok(req("pull", model="slices")), "w")
    assert got.tobytes() == vals.tobytes()
    x.c.ok(req("drop", model="slices"))


def case_multiwriter_6(x):
    """Six writers each push a sixth of a tensor as one-element slices; a stale part; a bad
    part of one writer refused alone."""
    w, per = 6, 8192
    n = w * per
    vals = np.arange(n, dtype=np.float32)
    x.c.ok(req("create", model="mw", decays=[0.5], writers=w))

    def part(k, step, v):
        return req("push", model="mw", step=step, writer=k, tensors=[
            {"name": "w", "kind": "param", "dtype": "F32", "shape": [n],
             "data": v[i:i + 1].tobytes(), "slice": [i, 1]} for i in range(k * per, (k + 1) * per)])

    for k in range(w):
        r = x.c.ok(part(k, 1, vals))
        assert r["pending"] is (k < w - 1)
    # Step 2: writer 0's part, then a faulty part of writer 1 (overlapping writer 0's slices).
    v2 = vals * np.float32(3)
    x.c.ok(part(0, 2, v2))
    bad = part(1, 2, v2)
    bad["tensors"][0]["slice"] = [0, 1]
    e = x.c.error(bad, "EMAD_EOVERLAP")
    assert e.get("tensor") == "w"
    for k in range(1, w):
        x.c.ok(part(k, 2, v2))
    # A stale part of a complete step.
    r = x.c.ok(part(3, 1, vals))
    assert r["stale"] == 1 and r["stale_names"] == ["w"], r
    expect = vals - np.float32(0.5) * (vals - v2)
    r = x.c.ok(req("pull", model="mw"))
    assert r["step"] == 2
    assert pulled(r, "w").tobytes() == expect.tobytes()
    x.c.ok(req("drop", model="mw"))


def fnv_colliding_names(count, bits=17, home=11):
    """count names h%08x whose 64-bit FNV-1a (folded h ^ h >> 32), the daemon's unkeyed hash
    before, has its low `bits` bits below 2^home: all in a few home slots of a table of
    2^bits slots."""
    out, start = [], 0
    with np.errstate(over="ignore"):
        while len(out) < count:
            ids = np.arange(start, start + (1 << 22), dtype=np.uint64)
            h = np.full(ids.shape, 1469598103934665603, np.uint64)
            chars = [np.full(ids.shape, ord("h"), np.uint64)]
            for k in range(7, -1, -1):
                d = (ids >> np.uint64(4 * k)) & np.uint64(15)
                chars.append(np.where(d < 10, d + np.uint64(48), d + np.uint64(87)))
            for c in chars:
                h ^= c
                h *= np.uint64(1099511628211)
            f = h ^ (h >> np.uint64(32))
            sel = ids[(f & np.uint64((1 << bits) - 1)) < np.uint64(1 << home)]
            out += ["h%08x" % int(i) for i in sel]
            start += 1 << 22
    return out[:count]


def case_hash_flood(x):
    """65,536 tensors whose names share a few slots of a hash table under an unkeyed hash
    (FNV-1a), pushed twice: the daemon's hash is keyed, so this is an ordinary push."""
    names = fnv_colliding_names(65536)
    x.c.ok(req("create", model="flood", decays=[0.5]))
    for step, v in ((1, 2.0), (2, 4.0)):
        data = np.float32([v]).tobytes()
        x.phase("push%d" % step)
        x.c.ok(req("push", model="flood", step=step, tensors=[
            {"name": n, "kind": "param", "dtype": "F32", "shape": [1], "data": data}
            for n in names]))
    x.phase("check")
    r = x.c.ok(req("pull", model="flood", tensors=names[-3:]))
    assert [pulled(r, n).tobytes() for n in names[-3:]] == [np.float32([3.0]).tobytes()] * 3
    x.c.ok(req("drop", model="flood"))


def case_pull_repeat(x):
    """A pull naming one tensor 800,000 times."""
    e = x.c.error(req("pull", model="canary", tensors=["w"] * 800000), "EMAD_EDUP")
    assert e.get("tensor") == "w"


def case_list_many(x):
    """`list` of a model of 131,072 tensors: refused whole, served in pages; pulled whole
    inline and in pages of one session."""
    n, per = 131072, 65536
    x.c.ok(req("create", model="many", decays=[0.5]))
    one = np.ones(1, np.float32).tobytes()
    x.phase("push")
    for base in range(0, n, per):
        x.c.ok(req("push", model="many", step=1, tensors=[
            {"name": "t%06d" % i, "kind": "param", "dtype": "F32", "shape": [1], "data": one}
            for i in range(base, base + per)]))
    x.phase("list")
    x.c.error(req("list", model="many"), "EMAD_ELIMIT")
    names, off = [], 0
    while True:
        r = x.c.ok(req("list", model="many", offset=off, limit=65536))
        assert r["offset"] == off
        names += [t["name"] for t in r["tensors"]]
        if "next" not in r:
            break
        off = r["next"]
    assert names == ["t%06d" % i for i in range(n)], len(names)
    x.phase("pull")
    r = x.c.ok(req("pull", model="many"))
    assert len(r["tensors"]) == n and r["tensors"][-1]["name"] == "t%06d" % (n - 1)
    x.phase("pull_pages")
    r = x.c.ok(req("pull", model="many", offset=0, inline_bytes=8192))
    got = [t["name"] for t in r["tensors"]]
    while "next" in r:
        r = x.c.ok(req("pull", session=r["session"], offset=r["next"]))
        got += [t["name"] for t in r["tensors"]]
    assert got == names
    x.c.ok(req("release", session=r["session"]))
    x.phase("drop")
    x.c.ok(req("drop", model="many"))


def sp_connect(port):
    """A raw TCP connection that has done the SP handshake (REQ) and then stays idle."""
    s = socket.create_connection(("127.0.0.1", port), 2)
    s.sendall(sp_raw.header(sp_raw.REQ))
    return s


def until(what, fn, seconds=60):
    """Call fn() until it returns true (every 50 ms, at most seconds x the scale)."""
    end = time.monotonic() + seconds * timeout_scale()
    while not fn():
        assert time.monotonic() < end, "timed out waiting for " + what
        time.sleep(0.05)


def case_idle_connections(x):
    """Idle connections until the daemon's descriptors run out (the test lowers its limit):
    connections already open keep being served, a snapshot meanwhile either works or gets
    EMAD_ESNAPSHOT naming the cause; once they close, new connections and snapshots work."""
    socks = []
    try:
        for _ in range(x.max_idle):
            try:
                socks.append(sp_connect(x.port))
            except OSError:
                break
        r = x.c.call(req("snapshot", model="canary"))
        assert r["ok"] or r["error"]["name"] == "EMAD_ESNAPSHOT", r
        x.c.ok(req("hello"))
    finally:
        for s in socks:
            s.close()

    def fresh_client_works():
        try:
            c2 = Client(x.port, 2)
        except (OSError, AssertionError):
            return False
        try:
            return c2.call(req("hello"))["ok"]
        finally:
            c2.close()

    until("a new connection", fresh_client_works)
    until("a snapshot", lambda: x.c.call(req("snapshot", model="canary"))["ok"])


def http_get(port, path, src="127.0.0.1"):
    """GET path from the HTTP endpoint; (status, body)."""
    s = socket.create_connection(("127.0.0.1", port), 60 * timeout_scale(), (src, 0))
    s.sendall(("GET %s HTTP/1.0\r\nHost: x\r\n\r\n" % path).encode())
    with s, s.makefile("rb") as f:
        head, _, body = f.read().partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def case_slow_header_http(x):
    """64 connections from 127.0.0.2 trickle their headers: /healthz from 127.0.0.1 answers;
    exact paths: GET /stats%00x is 404."""
    if not x.http_port:
        return
    socks = []
    try:
        for _ in range(64):
            try:
                s = socket.create_connection(("127.0.0.1", x.http_port), 5, ("127.0.0.2", 0))
                s.sendall(b"GET /healthz HTTP/1.1\r\nX-a: ")
                socks.append(s)
            except OSError:
                pass
        for i in range(20):
            for s in socks:
                try:
                    s.sendall(b"a")
                except OSError:
                    pass
            st, body = http_get(x.http_port, "/healthz")
            assert st == 200 and body.strip() == b"serving", (st, body)
        assert http_get(x.http_port, "/stats%00x")[0] == 404
        assert http_get(x.http_port, "/stats")[0] == 200
    finally:
        for s in socks:
            s.close()


def case_fill_txns(x):
    """Transactions opened until EMAD_ELIMIT (one connection's share); another connection
    still opens one; freed again by abort."""
    ids = []
    while True:
        r = x.c.call(req("begin", model="canary", step=x.step + 1))
        if not r["ok"]:
            assert r["error"]["name"] == "EMAD_ELIMIT", r
            break
        ids.append(r["txn"])
        assert len(ids) <= 1024, "more than 1024 transactions open"
    assert len(set(ids)) == len(ids) and 0 not in ids
    # One connection's share is not every slot: another client can still begin.
    c2 = Client(x.port)
    c2.ok(req("abort", txn=c2.ok(req("begin", model="canary", step=x.step + 1))["txn"]))
    c2.close()
    for t in ids:
        x.c.ok(req("abort", txn=t))
    # A guessed id (a neighbour of a real one) names no transaction.
    x.c.error(req("commit", txn=ids[0] + 1), "EMAD_ENOTXN")


def case_fill_sessions(x):
    """Pull sessions opened until EMAD_ELIMIT (one connection's share); another connection
    still opens one; freed again by release."""
    ids = []
    while True:
        r = x.c.call(req("pull", model="canary", inline_bytes=1))
        if not r["ok"]:
            assert r["error"]["name"] == "EMAD_ELIMIT", r
            break
        ids.append(r["session"])
        assert len(ids) <= 1024, "more than 1024 sessions open"
    c2 = Client(x.port)
    c2.ok(req("release", session=c2.ok(req("pull", model="canary", inline_bytes=1))["session"]))
    c2.close()
    for s in ids:
        x.c.ok(req("release", session=s))


def case_fill_models(x):
    """Models created until EMAD_ELIMIT; then dropped."""
    made = []
    while True:
        name = "f%05d" % len(made)
        r = x.c.call(req("create", model=name))
        if not r["ok"]:
            assert r["error"]["name"] == "EMAD_ELIMIT", r
            break
        made.append(name)
        assert len(made) <= 4096
    for name in made:
        x.c.ok(req("drop", model=name))


def case_fill_pending(x):
    """One writer of two opens pending steps from step 1,000,000,000 on until EMAD_ELIMIT (the
    model's 64, or one connection's share of them); another connection still gets a step
    unless the model's 64 are taken; the other writer completes every step."""
    x.c.ok(req("create", model="pend", decays=[0.5], writers=2))
    base = 1000000000

    def part(writer, step, value):
        return req("push", model="pend", step=step, writer=writer, tensors=[
            f32_tensor("w", [value], shape=[2], slice=[writer, 1])])

    k = 0
    while True:
        r = x.c.call(part(0, base + k, 1.0))
        if not r["ok"]:
            assert r["error"]["name"] == "EMAD_ELIMIT", r
            assert "wait for writers" in r["error"]["message"] or \
                "waiting for writers" in r["error"]["message"], r
            break
        k += 1
        assert k <= 64, "more than 64 pending steps"
    c2 = Client(x.port)
    r = c2.call(part(0, base + k, 1.0))
    assert r["ok"] or (k == 64 and r["error"]["name"] == "EMAD_ELIMIT"), r
    k += r["ok"]
    c2.close()
    for s in range(base, base + k):
        x.c.ok(part(1, s, 3.0))
    r = x.c.ok(req("pull", model="pend"))
    assert r["step"] == base + k - 1
    assert pulled(r, "w").tobytes() == np.float32([1.0, 3.0]).tobytes()
    x.c.ok(req("drop", model="pend"))


def case_nan_early_chunk(x):
    """A NaN in a large transaction chunk answered before it was checked: the transaction's
    later requests and its commit get EMAD_ENONFINITE; the model is unchanged."""
    n = 1 << 20  # 4 MiB of float32: chunks of 1 MiB are answered early
    x.c.ok(req("create", model="nan", decays=[0.5]))
    ones = np.ones(n, np.float32)
    x.c.ok(req("push", model="nan", step=1, tensors=[f32_tensor("w", ones)]))
    q = n // 4
    for trial in range(8):
        t = x.c.ok(req("begin", model="nan", step=2 + trial))["txn"]
        bad = np.full(q, 2.0, np.float32)
        bad[q // 2] = np.nan
        x.c.call(req("push", txn=t, tensors=[f32_tensor("w", ones, data=bad.tobytes(), offset=0)]))
        # The next chunk: as large (averaged on the threadpool) or small (inline).
        size = q if trial % 2 == 0 else 1024
        r = x.c.call(req("push", txn=t, tensors=[
            f32_tensor("w", ones, data=ones[q:q + size].tobytes(), offset=4 * q)]))
        assert r["ok"] is False and r["error"]["name"] == "EMAD_ENONFINITE", r
        r = x.c.call(req("commit", txn=t))
        assert r["ok"] is False and r["error"]["name"] == "EMAD_ENONFINITE", r
    r = x.c.ok(req("pull", model="nan"))
    assert r["step"] == 1 and pulled(r, "w").tobytes() == ones.tobytes()
    x.c.ok(req("drop", model="nan"))


def case_resend_differs(x):
    """A transaction chunk resent with other bytes: EMAD_ECONFLICT; the same bytes: taken."""
    n = 1024
    x.c.ok(req("create", model="rs", decays=[0.5]))
    a = np.full(n, 4.0, np.float32)
    x.c.ok(req("push", model="rs", step=1, tensors=[f32_tensor("w", a)]))
    t = x.c.ok(req("begin", model="rs", step=2))["txn"]
    h = n // 2
    first = f32_tensor("w", a, data=np.full(h, 2.0, np.float32).tobytes(), offset=0)
    x.c.ok(req("push", txn=t, tensors=[first]))
    x.c.ok(req("push", txn=t, tensors=[first]))
    other = f32_tensor("w", a, data=np.full(h, 9.0, np.float32).tobytes(), offset=0)
    e = x.c.error(req("push", txn=t, tensors=[other]), "EMAD_ECONFLICT")
    assert e.get("tensor") == "w"
    x.c.ok(req("push", txn=t, tensors=[
        f32_tensor("w", a, data=np.full(h, 2.0, np.float32).tobytes(), offset=4 * h)]))
    x.c.ok(req("commit", txn=t))
    assert pulled(x.c.ok(req("pull", model="rs")), "w").tobytes() == np.full(
        n, 3.0, np.float32).tobytes()
    x.c.ok(req("drop", model="rs"))


def case_step_range(x):
    """Steps and update_after_step of 2^63 and more: EMAD_ERANGE; 2^63-1 taken and
    snapshotted."""
    one = [f32_tensor("w", [1.0])]
    for step in (STEP_MAX + 1, (1 << 64) - 1):
        x.c.error(req("push", model="canary", step=step, tensors=one), "EMAD_ERANGE")
        x.c.error(req("begin", model="canary", step=step), "EMAD_ERANGE")
        x.c.error(req("push", model="canary", step=step, seed=True, tensors=one), "EMAD_ERANGE")
        x.c.error(req("create", model="big", update_after_step=step), "EMAD_ERANGE")
        x.c.error(req("configure", model="canary", update_after_step=step), "EMAD_ERANGE")
    x.c.ok(req("create", model="big", decays=[0.5], update_after_step=STEP_MAX))
    x.c.ok(req("push", model="big", step=STEP_MAX, tensors=one))
    r = x.c.ok(req("snapshot", model="big"))
    assert r["step"] == STEP_MAX, r
    x.c.ok(req("drop", model="big"))


BAD_NAMES = ["__metadata__", "a\u0085b", "a\u009bb", "a\u2028b", "a\u2029b", "a\nb", "a\x7fb",
             "", "x" * 1025]


def case_names(x):
    """Reserved and invalid names: EMAD_ENAME; a name with quotes cannot forge a log field."""
    for name in BAD_NAMES:
        e = x.c.error(req("push", model="canary", step=x.step + 1,
                          tensors=[f32_tensor(name, [1.0])]), "EMAD_ENAME")
        assert e["message"], e
    for model in ["-rf", ".hidden", "a b", "a\u0085", "a/b", "x" * 129]:
        x.c.error(req("create", model=model), "EMAD_ENAME")
    x.c.ok(req("create", model="q", decays=[0.5]))
    forged = 'w" event=forged level="x'
    x.c.ok(req("push", model="q", step=1, tensors=[f32_tensor(forged, [1.0, 2.0])]))
    x.c.error(req("push", model="q", step=2, tensors=[f32_tensor(forged, [1.0])]),
              "EMAD_ESHAPE")
    x.c.ok(req("drop", model="q"))
    with open(x.log, "rb") as f:
        log = f.read()
    assert b"\xc2\x85" not in log and b"\xe2\x80\xa8" not in log
    seen = 0
    for line in log.decode("utf-8", "replace").splitlines():
        fields = log_fields(line)
        assert ("event", "forged") not in fields, "a quote in a name forged a field: " + line
        seen += ("tensor", forged) in fields
    assert seen, "the name with quotes is not in the log"


def log_fields(line):
    """The key=value fields of a log line, values unquoted and unescaped."""
    out, i = [], 0
    while i < len(line):
        j = line.find("=", i)
        sp = line.find(" ", i)
        if j < 0 or (0 <= sp < j):
            i = len(line) if sp < 0 else sp + 1
            continue
        key, i = line[i:j], j + 1
        if line[i:i + 1] == '"':
            i += 1
            val = []
            while line[i] != '"':
                if line[i] == "\\":
                    i += 1
                val.append(line[i])
                i += 1
            out.append((key, "".join(val)))
            i += 2
        else:
            sp = line.find(" ", i)
            sp = len(line) if sp < 0 else sp
            out.append((key, line[i:sp]))
            i = sp + 1
    return out


def case_seed_nan(x):
    """A seed with a NaN under nonfinite=reject: EMAD_ENONFINITE, nothing applied."""
    r0 = x.c.ok(req("pull", model="canary"))
    x.c.error(req("push", model="canary", step=x.step + 1, seed=True,
                  tensors=[f32_tensor("w", [float("nan")] * 8)]), "EMAD_ENONFINITE")
    x.c.error(req("push", model="canary", step=x.step + 1,
                  tensors=[f32_tensor("w", [float("inf")] * 8)]), "EMAD_ENONFINITE")
    assert x.c.ok(req("pull", model="canary"))["tensors"] == r0["tensors"]


def case_float32_decay(x):
    """A decay sent as float32 selects the model's float64 decay; an ambiguous one is
    EMAD_ERANGE; as_dtype outside a seed is EMAD_EDTYPE."""
    x.c.ok(req("create", model="d32", decays=[0.9999, 0.999]))
    x.c.ok(req("push", model="d32", step=1, tensors=[f32_tensor("w", [1.0])]))
    x.c.ok(req("push", model="d32", step=2, tensors=[f32_tensor("w", [2.0])]))
    a = pulled(x.c.ok(req("pull", model="d32", decay=F32(0.999))), "w")
    b = pulled(x.c.ok(req("pull", model="d32", decay=0.999)), "w")
    assert a.tobytes() == b.tobytes()
    x.c.ok(req("create", model="d32b", decays=[0.5, 0.5 + 2 ** -40]))
    x.c.ok(req("push", model="d32b", step=1, tensors=[f32_tensor("w", [1.0])]))
    x.c.error(req("pull", model="d32b", decay=F32(0.5)), "EMAD_ERANGE")
    x.c.error(req("push", model="d32", step=3, tensors=[
        f32_tensor("new", [1.0], as_dtype="BF16")]), "EMAD_EDTYPE")
    x.c.ok(req("drop", model="d32"))
    x.c.ok(req("drop", model="d32b"))


def case_malformed(x):
    """Hostile msgpack: a map header claiming 2^32-1 entries, deep nesting, random bytes."""
    bodies = [b"\xdf\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\x91" * 100000,
              pack(req("hello"))[:-1], pack(req("hello")) + b"\x00", os.urandom(4096),
              pack(req("push", model="canary", step=1, tensors=Raw(b"\xdd\xff\xff\xff\xff")))]
    for body in bodies:
        r = x.c.call(body)
        assert r["ok"] is False, r
        assert r["error"]["name"] in ("EMAD_EMALFORMED", "EMAD_ELIMIT"), r


CASES = [case_slices_65536, case_multiwriter_6, case_hash_flood, case_pull_repeat, case_list_many,
         case_idle_connections, case_slow_header_http, case_fill_txns, case_fill_sessions,
         case_fill_models, case_fill_pending, case_nan_early_chunk, case_resend_differs,
         case_step_range, case_names, case_seed_nan, case_float32_decay, case_malformed]


def run(port, http_port, log, bound=None, only=None, max_idle=400):
    """Run the cases (all, or those named in only) with the pinger; returns
    [(case, hellos, worst s, p99 s, case seconds)]. With bound, fails on a slower hello.
    A case may split itself into phases (x.phase), reported as case/phase."""
    x = Ctx(port, http_port, log)
    x.max_idle = max_idle
    x.canary()
    pinger = Pinger(port)
    marks = []

    def mark(name):
        pinger.mark(name)
        marks.append((name, time.monotonic()))

    try:
        mark("idle")
        time.sleep(0.5)
        for case in CASES:
            name = case.__name__[5:]
            if only and name not in only:
                continue
            mark(name)
            x.phase = lambda p, name=name: mark(name + "/" + p)
            case(x)
            x.canary()
        mark("after")
        lat = pinger.results()
    finally:
        pinger.kill()
    rows = []
    for i, (name, t) in enumerate(marks[:-1]):
        count, worst, p99 = latency_summary(lat.get(name, []))
        rows.append((name, count, worst, p99, marks[i + 1][1] - t))
    if bound is not None:
        bad = [r for r in rows if r[2] > bound]
        assert not bad, "hello slower than %.1f s during: %s" % (
            bound, ", ".join("%s (%.0f ms)" % (r[0], r[2] * 1000) for r in bad))
    return rows


def print_rows(rows):
    print("%-22s %8s %10s %10s %9s" % ("case", "hellos", "worst ms", "p99 ms", "case s"))
    for name, count, worst, p99, dt in rows:
        print("%-22s %8d %10.2f %10.2f %9.2f" % (name, count, worst * 1000, p99 * 1000, dt))
    worst = max(rows, key=lambda r: r[2])
    print("worst hello latency: %.2f ms (%s)" % (worst[2] * 1000, worst[0]))


def main(argv):
    port, http_port, log = int(argv[1]), int(argv[2]), argv[3]
    bound, only = None, None
    rest = argv[4:]
    while rest:
        if rest[0] == "--bound":
            bound = float(rest[1]) * timeout_scale()
        elif rest[0] == "--only":
            only = set(rest[1].split(","))
        rest = rest[2:]
    print_rows(run(port, http_port, log, bound, only))


if __name__ == "__main__":
    main(sys.argv)
