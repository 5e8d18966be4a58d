"""End-to-end authentication tests against a running emad (tests/test_auth.sh starts it).

usage: auth_e2e.py PHASE PORT HTTP_PORT WORKDIR DAEMON_PID
PHASE main: the role matrix, the attacks, ownership, renewal, SIGHUP rotation and revocation.
PHASE expiry: sessions of a daemon started with a lifetime of 2 s (scaled) expire.
PHASE share: with --max-memory 48M --client-share 50, the share of the memory budget is per user:
two connections of one user share one share, another user has its own.

Expected outcomes are computed here, independently of the daemon: grants with Python's fnmatch,
tags with PyNaCl (auth_client.py), model values by hand. Every refusal is followed by a pull
that must be bit-identical to the one before, and by a request that must be served.
"""
import fnmatch
import os
import signal
import struct
import sys
import time
import urllib.error
import urllib.request

from auth_client import AuthError, Session, err, frame, keygen, request, unpack
from sp_raw import Conn

PHASE, PORT, HTTP_PORT, WORK, PID = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], \
    int(sys.argv[5])
SCALE = float(os.environ.get("EMAD_TEST_TIMEOUT_SCALE") or 1)
AUTH_FILE = os.path.join(WORK, "auth.ini")
LOG = os.path.join(WORK, "emad.log")

# user -> list of (deny, role, pattern); role "*" = every role
RULES = {
    "root": [(False, "*", "*")],
    "a_admin": [(False, "admin", "team-a-*")],
    "a_push": [(False, "push", "team-a-*")],
    "a_pull": [(False, "pull", "team-a-*")],
    "a_most": [(False, "*", "team-a-*"), (True, "*", "team-a-prod")],
    "a_noadmin": [(False, "*", "team-a-*"), (True, "admin", "team-a-*")],
    "nobody": [],
    "b_admin": [(False, "admin", "team-b-*")],
}
KEYS = {}
failures_expected = {}


def expect_fail(reason, n=1):
    failures_expected[reason] = failures_expected.get(reason, 0) + n


def write_auth_file(rules=RULES, keys=None, extra=""):
    keys = keys or KEYS
    lines = []
    for user, rs in rules.items():
        lines.append("[user %s]" % user)
        lines.append("key = %s" % keys[user][1])
        for deny, role, pat in rs:
            lines.append("%s = %s %s" % ("deny" if deny else "grant", role, pat))
        if user == "root":
            # BLAKE2b-256 of "stats-secret", as docs/SECURITY.md says to compute it
            import hashlib
            lines.append("stats_token = blake2b:" +
                         hashlib.blake2b(b"stats-secret", digest_size=32).hexdigest())
        lines.append("")
    with open(AUTH_FILE + ".tmp", "w") as f:
        f.write("\n".join(lines) + extra)
    os.replace(AUTH_FILE + ".tmp", AUTH_FILE)


def allowed(user, role, model):
    """The rule of docs/SECURITY.md: some grant of the role matches and no deny matches."""
    granted = False
    for deny, r, pat in RULES[user]:
        if (r == role or r == "*") and fnmatch.fnmatchcase(model, pat):
            if deny:
                return False
            granted = True
    return granted


def sess(user, **kw):
    return Session(PORT, user, KEYS[user][0], **kw)


def f32(name, values):
    return {"name": name, "kind": "param", "dtype": "F32", "shape": [len(values)],
            "data": struct.pack("<%df" % len(values), *values)}


def push_body(model, step_, data, n):
    return request("push", model=model, step=step_,
                   tensors=[{"name": "w", "kind": "param", "dtype": "F32", "shape": [n],
                             "data": data}])


def snapshot_of(root, model):
    """(step, bytes of w) as root pulls them."""
    r = root.op("pull", model=model)
    assert r["ok"], r
    return r["step"], r["tensors"][0]["data"]


def serving():
    r = unpack(Conn(PORT).call(request("hello")))
    assert r["ok"] and r["auth"] is True, r


RELOADS = [0]


def reload():
    """SIGHUP the daemon and wait until the log shows the reload's outcome."""
    RELOADS[0] += 1
    os.kill(PID, signal.SIGHUP)
    wait_reload(RELOADS[0])


def wait_reload(count):
    """Wait until the log shows `count` reload outcomes (auth_reloaded or auth_reload_failed)."""
    deadline = time.time() + 60 * SCALE
    while time.time() < deadline:
        if reloads_logged() >= count:
            return
        time.sleep(0.05)
    raise AssertionError("no reload in the log")


def resends_counted():
    """emad_auth_resends_total from /metrics."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % HTTP_PORT,
                                timeout=60 * SCALE) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("emad_auth_resends_total "):
                return int(line.split()[-1])
    raise AssertionError("no emad_auth_resends_total in /metrics")


def metrics():
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % HTTP_PORT,
                                timeout=60 * SCALE) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("emad_auth_failures_total{"):
            reason = line.split('reason="')[1].split('"')[0]
            out[reason] = int(line.split()[-1])
        elif line.startswith("emad_auth_reload_failures_total "):
            out["reload_failures"] = int(line.split()[-1])
        elif line.startswith("emad_auth_failure_logs_suppressed_total "):
            out["suppressed"] = int(line.split()[-1])
    return out


MODELS = ["team-a-run", "team-a-prod", "team-b-run"]
step = {m: 1 for m in MODELS}


def setup(root):
    for m in MODELS:
        assert root.op("create", model=m, decay=0.5)["ok"]
        assert root.op("push", model=m, step=1, tensors=[f32("w", [1.0, 2.0, 3.0, 4.0])])["ok"]


def matrix(root):
    """Every op that needs a role, for every user and model: allowed or EMAD_EDENIED."""
    checked = 0
    for user in RULES:
        s = sess(user)
        for m in MODELS:
            before = snapshot_of(root, m)
            cases = [  # (role, the model the request names, the request)
                ("admin", m, lambda: s.op("configure", model=m, decay=0.5)),
                ("admin", m, lambda: s.op("snapshot", model=m)),
                ("admin", m + "-new", lambda: s.op("create", model=m + "-new", decay=0.5)),
                ("push", m, lambda: s.op("push", model=m, step=step[m] + 1,
                                         tensors=[f32("w", [5.0, 6.0, 7.0, 8.0])])),
                ("push", m, lambda: s.op("begin", model=m, step=step[m] + 1)),
                ("push", m, lambda: s.op("push", model=m, step=step[m] + 1, seed=True,
                                         tensors=[f32("w", [1.0, 2.0, 3.0, 4.0])])),
                ("pull", m, lambda: s.op("pull", model=m)),
                ("list", m, lambda: s.op("list", model=m)),
            ]
            for role, name, call in cases:
                r = call()
                if role == "list":  # a model's list: pull or admin
                    ok = allowed(user, "pull", name) or allowed(user, "admin", name)
                else:
                    ok = allowed(user, role, name)
                if ok:
                    assert r["ok"], (user, role, name, r)
                else:
                    assert err(r) == ("EMAD_EDENIED", "denied"), (user, role, name, r)
                    assert user in r["error"]["message"] and name in r["error"]["message"], r
                    expect_fail("denied")
                    assert snapshot_of(root, m) == before, (user, role, m)
                if r.get("ok") and "txn" in r:
                    assert s.op("abort", txn=r["txn"])["ok"]
                if r.get("ok") and "applied" in r:
                    step[m] += 1
                if r.get("ok") and "created" in r:
                    assert root.op("drop", model=m + "-new")["ok"]
                checked += 1
                before = snapshot_of(root, m)
            # drop last: a model made for it by root
            assert root.op("create", model=m + "-tmp", decay=0.5)["ok"]
            r = s.op("drop", model=m + "-tmp")
            if allowed(user, "admin", m + "-tmp"):
                assert r["ok"], (user, m, r)
            else:
                assert err(r) == ("EMAD_EDENIED", "denied"), (user, m, r)
                expect_fail("denied")
                assert root.op("drop", model=m + "-tmp")["ok"]  # it was still there
            checked += 1
        # list without a model: only the models the user may pull or administer
        names = sorted(x["name"] for x in s.op("list")["models"])
        want = sorted(m for m in MODELS if allowed(user, "pull", m) or allowed(user, "admin", m))
        assert names == want, (user, names, want)
        assert s.op("stats")["ok"]  # open to every authenticated user
        serving()
    print("matrix: %d op/user/model cases" % checked)


def attacks(root):
    m = "team-a-run"
    s = sess("a_push")
    good = snapshot_of(root, m)

    # no credentials: a plain push
    c = Conn(PORT)
    r = unpack(c.call(request("push", model=m, step=step[m] + 1, tensors=[f32("w", [9.0] * 4)])))
    assert err(r) == ("EMAD_EAUTH", "required"), r
    expect_fail("required")
    for op in ("list", "stats", "pull"):
        r = unpack(c.call(request(op, model=m)))
        assert err(r) == ("EMAD_EAUTH", "required"), r
        expect_fail("required")
    assert snapshot_of(root, m) == good

    # wrong key: a handshake signed with another seed
    other = keygen("a_push")[0]
    try:
        Session(PORT, "a_push", other)
        raise AssertionError("wrong key accepted")
    except AuthError as e:
        assert e.args[0]["name"] == "EMAD_EAUTH" and e.args[0]["reason"] == "bad_signature"
    expect_fail("bad_signature")

    # unknown user: the begin reply has the same shape; the finish fails alike
    ghost = Session.__new__(Session)
    ghost.c, ghost.user, ghost.seed = Conn(PORT), "ghost", other
    rb = ghost.handshake(finish=False)
    known = Session.__new__(Session)
    known.c, known.user, known.seed = Conn(PORT), "a_push", KEYS["a_push"][0]
    rk = known.handshake(finish=False)
    assert sorted(rb) == sorted(rk) and len(rb["challenge"]) == len(rk["challenge"]) == 32
    try:
        ghost.handshake()
        raise AssertionError("unknown user accepted")
    except AuthError as e:
        assert e.args[0]["reason"] == "bad_signature", e.args
    expect_fail("bad_signature")
    # an unknown, or already finished, handshake id
    r = unpack(Conn(PORT).call(request("auth_finish", hs=rk["hs"] ^ 1, sig=b"\0" * 64)))
    assert err(r) == ("EMAD_EAUTH", "unknown_handshake"), r
    expect_fail("unknown_handshake")
    # a corrupted signature
    try:
        known.handshake(corrupt_sig=True)
        raise AssertionError("bad signature accepted")
    except AuthError as e:
        assert e.args[0]["reason"] == "bad_signature"
    expect_fail("bad_signature")

    # a frame naming no session
    r = unpack(Conn(PORT).call(frame(b"\1" * 32, 12345, 1, request("stats"))))
    assert err(r) == ("EMAD_EAUTH", "no_session"), r
    expect_fail("no_session")

    # one flipped bit in the tensor data: small (verified on the loop) and 2 MiB (threadpool)
    for n, model in ((4, m), (512 * 1024, "team-a-big")):
        body = push_body(model, step[m] + 1, struct.pack("<%df" % n, *([3.0] * n)), n)
        data = bytearray(s.frame(body))
        data[len(data) - 5] ^= 0x04  # inside the tensor data
        r, _ = s.send_frame(bytes(data))
        assert err(r) == ("EMAD_EAUTH", "bad_tag"), r
        expect_fail("bad_tag")
        assert snapshot_of(root, m) == good
        serving()
    # the sequence number was not used up: the intact frame with the same seq is served
    body = push_body(m, step[m] + 1, struct.pack("<4f", *([3.0] * 4)), 4)
    r, seq = s.send_frame(s.frame(body, seq=s.seq))
    assert r["ok"] and r["applied"] == 1 and seq == s.seq, r
    step[m] += 1
    want = struct.pack("<4f", *[(a + 3.0) / 2 for a in struct.unpack("<4f", good[1])])
    good = snapshot_of(root, m)
    assert good == (step[m], want), (good, want)

    # a large authenticated push and pull (threadpool MAC both ways), values checked
    n = 768 * 1024
    vals = struct.pack("<%df" % n, *[float(i % 1000) for i in range(n)])
    assert root.op("create", model="team-a-big", decay=0.5)["ok"]
    r = s.call(push_body("team-a-big", 1, vals, n))
    assert r["ok"] and r["applied"] == 1, r
    r = root.op("pull", model="team-a-big")
    assert r["ok"] and r["tensors"][0]["data"] == vals
    # the same through a pull session read in ranges (a 3 MiB reply)
    p = sess("a_pull")
    sid = p_session(p, "team-a-big")
    got = p.op("read", session=sid, ranges=[[0, 0, 4 * n]])
    assert got["ok"] and got["data"][0] == vals
    # converted on the way out (F16, exact for these integers): the pieces of a large reply are
    # tagged as the conversion writes them, or after it when a value would straddle a piece
    # (data from an odd offset: a first range with a 3-byte bin16 header)
    half = struct.pack("<%de" % n, *[float(i % 1000) for i in range(n)])
    r = root.op("pull", model="team-a-big", dtype="F16")
    assert r["ok"] and r["tensors"][0]["data"] == half
    r = p.op("pull", model="team-a-big", inline_bytes=8192, dtype="F16")
    assert r["ok"] and "session" in r, r
    got = p.op("read", session=r["session"], ranges=[[0, 0, 1000], [0, 1000, 2 * n - 1000]])
    assert got["ok"] and got["data"][0] == half[:1000] and got["data"][1] == half[1000:]
    got = p.op("read", session=r["session"], ranges=[[0, 0, 2 * n]])
    assert got["ok"] and got["data"][0] == half
    assert p.op("release", session=r["session"])["ok"]
    # another user (with pull on the model) can neither read nor release that session
    q = sess("a_most")
    for op, keys in (("read", {"ranges": [[0, 0, 8]]}), ("release", {})):
        r = q.op(op, session=sid, **keys)
        assert err(r) == ("EMAD_ENOSESSION", None), r
    assert p.op("release", session=sid)["ok"]
    assert root.op("drop", model="team-a-big")["ok"]

    # replay: an exact resend gets the same reply, and nothing is applied twice
    body = request("push", model=m, step=step[m] + 1, tensors=[f32("w", [7.0] * 4)])
    data = s.frame(body)
    raw1 = s.c.call(data)
    before = snapshot_of(root, m)
    raw2 = Conn(PORT).call(data)  # a resend, even on another connection
    assert raw1 == raw2
    assert snapshot_of(root, m) == before
    step[m] += 1
    # nanomsg's REQ resend: the same large frame twice on one connection with one request id,
    # the second while the first may still be verified or applied: the push is applied once,
    # and the resend gets the same reply bytes or none (a REQ socket takes the first)
    n = 512 * 1024
    assert root.op("create", model="team-a-twice", decay=0.5)["ok"]
    assert root.op("push", model="team-a-twice", step=1,
                   tensors=[{"name": "w", "kind": "param", "dtype": "F32", "shape": [n],
                             "data": struct.pack("<f", 1.0) * n}])["ok"]
    big = s.frame(push_body("team-a-twice", 2, struct.pack("<f", 3.0) * n, n))
    c = s.c
    c.rid += 1
    rid = c.rid | 0x80000000
    resends = resends_counted()
    c.send(rid, big)
    c.send(rid, big)
    got, first = c.receive()
    assert got == rid
    r = unpack(first[36:])
    assert r["ok"] and r["applied"] == 1, r
    # The daemon answers the first copy before it is done with the second (verified on the
    # threadpool): the session's next request waits until the second is taken as a resend,
    # as a REQ client's would (its next request comes after the reply to the resend).
    deadline = time.monotonic() + 60 * SCALE
    while resends_counted() == resends:
        assert time.monotonic() < deadline, "the second copy was not taken as a resend"
        time.sleep(0.01)
    c.rid += 1
    c.send(c.rid | 0x80000000, s.frame(request("stats")))
    while True:
        got, reply = c.receive()
        if got == c.rid | 0x80000000:
            break
        assert got == rid and reply == first, "a second, different reply to the resend"
    r = root.op("pull", model="team-a-twice")
    assert r["step"] == 2 and r["tensors"][0]["data"] == struct.pack("<f", 2.0) * n, r["step"]
    assert root.op("drop", model="team-a-twice")["ok"]

    # after a later request, the captured frame is a replay
    assert s.op("stats")["ok"]
    r = unpack(Conn(PORT).call(data))
    assert err(r) == ("EMAD_EAUTH", "replay"), r
    expect_fail("replay")
    # reordered: seq 10 accepted, then seq 9 refused
    s.seq = 9
    f9 = s.frame(request("stats"))
    f10 = s.frame(request("stats"))
    assert s.send_frame(f10)[0]["ok"]
    r, _ = s.send_frame(f9)
    assert err(r) == ("EMAD_EAUTH", "replay"), r
    expect_fail("replay")
    # a frame MACed with the reply key (a reflected reply) does not verify
    r, _ = s.send_frame(frame(s.rx, s.session, s.seq + 1, request("stats")))
    assert err(r) == ("EMAD_EAUTH", "bad_tag"), r
    expect_fail("bad_tag")
    assert snapshot_of(root, m) == before
    serving()
    print("attacks: refused and counted; models unchanged")


def p_session(p, model):
    r = p.op("pull", model=model, inline_bytes=8192)
    assert r["ok"] and "session" in r, r
    return r["session"]


def chunk_tamper(root):
    """A transaction chunk's tag is checked beside its averaging: a flipped bit in the middle
    chunk fails the chunk or a later request and the commit, and nothing is published."""
    m, n, parts = "team-a-txn", 3 * 256 * 1024, 3  # three chunks of 1 MiB: tags on the threadpool
    s = sess("a_push")
    old = struct.pack("<%df" % n, *[float(i % 1000) for i in range(n)])
    assert root.op("create", model=m, decay=0.5)["ok"]
    assert root.op("push", model=m, step=1, tensors=[{"name": "w", "kind": "param",
                                                      "dtype": "F32", "shape": [n],
                                                      "data": old}])["ok"]
    good = snapshot_of(root, m)
    new = struct.pack("<%df" % n, *[float((3 * i) % 1000) for i in range(n)])
    size = len(new) // parts

    def chunk(txn, k):
        return request("push", txn=txn,
                       tensors=[{"name": "w", "kind": "param", "dtype": "F32", "shape": [n],
                                 "offset": k * size, "data": new[k * size:(k + 1) * size]}])

    t = s.op("begin", model=m, step=2)
    assert t["ok"], t
    replies = []
    for k in range(parts):
        data = s.frame(chunk(t["txn"], k))
        if k == 1:
            data = bytearray(data)
            data[len(data) - 5] ^= 0x04  # inside the tensor data
            data = bytes(data)
        replies.append(s.send_frame(data))
    r, seq = replies[1]
    if not r["ok"]:  # the check was done before the reply: the plain error, as at the gate
        assert err(r) == ("EMAD_EAUTH", "bad_tag") and seq is None, r
    assert replies[0][0]["ok"], replies[0]
    r = s.op("commit", txn=t["txn"])
    assert err(r) == ("EMAD_EAUTH", "bad_tag"), r
    expect_fail("bad_tag")
    assert snapshot_of(root, m) == good  # bit-identical: nothing of the transaction published
    serving()
    # a fresh transaction of the same session succeeds, values computed here
    t = s.op("begin", model=m, step=2)
    assert t["ok"], t
    for k in range(parts):
        r = s.call(chunk(t["txn"], k))
        assert r["ok"], r
    r = s.op("commit", txn=t["txn"])
    assert r["ok"] and r["applied"] == 1 and r["step"] == 2, r
    want = struct.pack("<%df" % n, *[(float(i % 1000) + float((3 * i) % 1000)) / 2
                                     for i in range(n)])
    assert snapshot_of(root, m) == (2, want)
    assert root.op("drop", model=m)["ok"]
    # a large frame with little to average (a 1 MiB key the daemon ignores): its reply waits for
    # its check, so it is the plain error; its number is not used up (the intact frame with the
    # same number is taken, and gets the transaction's failure)
    assert root.op("create", model=m, decay=0.5)["ok"]
    assert root.op("push", model=m, step=1, tensors=[f32("w", [1.0, 2.0, 3.0, 4.0])])["ok"]
    good = snapshot_of(root, m)
    t = s.op("begin", model=m, step=2)
    assert t["ok"], t
    body = request("push", txn=t["txn"], pad=b"\0" * (1 << 20), tensors=[f32("w", [5.0] * 4)])
    intact = s.frame(body)
    data = bytearray(intact)
    data[len(data) - 5] ^= 0x04
    r, seq = s.send_frame(bytes(data))
    assert err(r) == ("EMAD_EAUTH", "bad_tag") and seq is None, r
    expect_fail("bad_tag")
    r, seq = s.send_frame(intact)
    assert err(r) == ("EMAD_EAUTH", "bad_tag") and seq == s.seq, r
    r = s.op("commit", txn=t["txn"])
    assert err(r) == ("EMAD_EAUTH", "bad_tag"), r
    assert snapshot_of(root, m) == good
    assert root.op("drop", model=m)["ok"]
    # a chunk of a multi-writer transaction is still verified before it is decoded: refused at
    # once, its number not used up, the transaction goes on
    assert root.op("create", model=m, decay=0.5, writers=2)["ok"]
    t = s.op("begin", model=m, step=1, writer=0)
    assert t["ok"], t
    data = bytearray(s.frame(chunk(t["txn"], 0)))
    data[len(data) - 5] ^= 0x04
    r, seq = s.send_frame(bytes(data))
    assert err(r) == ("EMAD_EAUTH", "bad_tag") and seq is None, r
    expect_fail("bad_tag")
    for k in range(parts):
        r, _ = s.send_frame(s.frame(chunk(t["txn"], k), seq=s.seq if k == 0 else None))
        assert r["ok"], r
    r = s.op("commit", txn=t["txn"])
    assert r["ok"] and r["pending"] is True, r
    assert root.op("drop", model=m)["ok"]
    print("chunk tamper: the transaction failed (the middle chunk answered %s), counted, model "
          "unchanged; a fresh one applied" % ("ok" if replies[1][0]["ok"] else "EAUTH"))


def ownership_and_renewal(root):
    m = "team-a-run"
    alice = sess("a_push")
    other = sess("a_most")  # may push to team-a-run, but does not own alice's transaction
    t = alice.op("begin", model=m, step=step[m] + 1)
    assert t["ok"], t
    txn = t["txn"]
    chunk = request("push", txn=txn, tensors=[f32("w", [11.0] * 4)])
    for op, body in (("push", chunk), ("commit", request("commit", txn=txn)),
                     ("abort", request("abort", txn=txn))):
        r = other.call(body)
        assert err(r) == ("EMAD_ENOTXN", None), (op, r)
    # renewal: a new session of the same user continues the transaction; the old one stays valid
    renewed = Session(PORT, "a_push", KEYS["a_push"][0], renew=alice.session)
    assert renewed.session != alice.session
    assert renewed.call(chunk)["ok"]
    assert alice.op("stats")["ok"]
    r = renewed.op("commit", txn=txn)
    assert r["ok"] and r["applied"] == 1, r
    step[m] += 1
    # a multi-writer step: a part belongs to the user who pushed it
    mw = "team-a-mw"
    assert root.op("create", model=mw, decay=0.5, writers=2)["ok"]
    part0 = [f32("w", [2.0] * 4)]
    r = alice.op("push", model=mw, step=1, writer=0, tensors=part0)
    assert r["ok"] and r["pending"] is True, r
    r = other.op("push", model=mw, step=1, writer=0, tensors=part0)
    assert err(r) == ("EMAD_ECONFLICT", None) and "another user" in r["error"]["message"], r
    r = other.op("push", model=mw, step=1, writer=0, tensors=[f32("w", [9.0] * 4)])
    assert err(r) == ("EMAD_ECONFLICT", None), r
    r = other.op("push", model=mw, step=1, writer=1, tensors=[])
    assert r["ok"] and r["pending"] is False and r["step"] == 1, r
    assert snapshot_of(root, mw) == (1, struct.pack("<4f", 2.0, 2.0, 2.0, 2.0))
    assert root.op("drop", model=mw)["ok"]
    # renewing another user's session is refused
    try:
        Session(PORT, "a_most", KEYS["a_most"][0], renew=alice.session)
        raise AssertionError("renewed another user's session")
    except AuthError as e:
        assert e.args[0]["reason"] == "no_session"
    expect_fail("no_session")
    print("ownership and renewal: ok")


def rotation(root):
    """SIGHUP: a changed key drops the user's sessions, a removed user too; others keep theirs."""
    m = "team-a-run"
    pusher = sess("a_push")
    puller = sess("a_pull")
    admin = sess("a_admin")
    old_push_seed = KEYS["a_push"][0]
    seed, _, pk = keygen("a_push")
    KEYS["a_push"] = (seed, pk)
    rules = dict(RULES)
    del rules["a_pull"]
    write_auth_file(rules)
    reload()
    r = pusher.op("stats")
    assert err(r) == ("EMAD_EAUTH", "no_session"), r
    expect_fail("no_session")
    r = puller.op("pull", model=m)
    assert err(r) == ("EMAD_EAUTH", "no_session"), r
    expect_fail("no_session")
    assert admin.op("stats")["ok"] and root.op("stats")["ok"]  # unchanged users keep sessions
    try:
        Session(PORT, "a_push", old_push_seed)
        raise AssertionError("the old key still works")
    except AuthError as e:
        assert e.args[0]["reason"] == "bad_signature"
    expect_fail("bad_signature")
    try:
        Session(PORT, "a_pull", KEYS["a_pull"][0])
        raise AssertionError("a removed user still works")
    except AuthError as e:
        assert e.args[0]["reason"] == "bad_signature"
    expect_fail("bad_signature")
    new = Session(PORT, "a_push", seed)
    assert new.op("push", model=m, step=step[m] + 1, tensors=[f32("w", [1.0] * 4)])["ok"]
    step[m] += 1
    # a file that does not parse: the previous users stay in force, the failure is counted
    with open(AUTH_FILE, "a") as f:
        f.write("[user broken]\nkey = ed25519:nope\n")
    reload()
    assert new.op("stats")["ok"] and root.op("stats")["ok"]
    assert metrics()["reload_failures"] == 1
    # grants changed (a_admin loses admin): applies to the next request of a kept session
    rules = dict(rules)
    rules["a_admin"] = [(False, "pull", "team-a-*")]
    write_auth_file(rules)
    reload()
    r = admin.op("configure", model=m, decay=0.5)
    assert err(r) == ("EMAD_EDENIED", "denied"), r
    expect_fail("denied")
    assert admin.op("pull", model=m)["ok"]
    print("rotation: keys rotated and revoked by SIGHUP")


def http_checks():
    url = "http://127.0.0.1:%d/stats" % HTTP_PORT
    for what, headers in (("without a token", {}),
                          ("with a wrong token", {"Authorization": "Bearer wrong"})):
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                   timeout=60 * SCALE)
            raise AssertionError("/stats " + what)
        except urllib.error.HTTPError as e:
            assert e.code == 401, (what, e.code)
    req = urllib.request.Request(url, headers={"Authorization": "Bearer stats-secret"})
    with urllib.request.urlopen(req, timeout=60 * SCALE) as r:
        assert r.status == 200 and b'"counters"' in r.read()
    with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % HTTP_PORT,
                                timeout=60 * SCALE) as r:
        assert r.status == 200


def reloads_logged():
    with open(LOG) as f:
        text = f.read()
    return text.count("event=auth_reloaded") + text.count("event=auth_reload_failed")


def main():
    RELOADS[0] = reloads_logged()  # the log is shared with earlier daemons of the test
    for user in RULES:
        seed, _, pk = keygen(user)
        KEYS[user] = (seed, pk)
    if PHASE == "expiry":
        return expiry()
    if PHASE == "share":
        return share()
    write_auth_file()
    reload()  # the daemon started with an empty file
    root = sess("root")
    setup(root)
    matrix(root)
    attacks(root)
    chunk_tamper(root)
    ownership_and_renewal(root)
    root_seq_before = root.seq
    rotation(root)
    assert root.seq > root_seq_before
    http_checks()
    got = metrics()
    for reason, n in failures_expected.items():
        assert got.get(reason) == n, (reason, got.get(reason), n)
    print("metrics: emad_auth_failures_total matches %s" % failures_expected)
    # one failure line per second per reason: the matrix's quick denials were mostly left out
    with open(LOG) as f:
        lines = f.read().count("event=auth_failed reason=denied")
    assert got["suppressed"] > 0 and lines + got["suppressed"] >= failures_expected["denied"], \
        (lines, got["suppressed"])
    assert lines < failures_expected["denied"], lines
    serving()


def expiry():
    write_auth_file()
    reload()
    s = sess("root")
    life = s.lifetime  # 2 s times EMAD_TEST_TIMEOUT_SCALE (tests/test_auth.sh)
    assert 2 <= life <= 2 * SCALE + 1, life
    r = s.op("stats")
    assert r["ok"], r
    time.sleep(life + 0.5)
    r = s.op("stats")
    assert err(r) == ("EMAD_EAUTH", "expired"), r
    r = s.op("stats")  # the expired session is gone now
    assert err(r) == ("EMAD_EAUTH", "no_session"), r
    s2 = sess("root")  # a new handshake works
    assert s2.op("stats")["ok"]
    time.sleep(life + 0.5)
    try:
        Session(PORT, "root", KEYS["root"][0], renew=s2.session)
        raise AssertionError("renewed an expired session")
    except AuthError as e:
        assert e.args[0]["reason"] == "no_session"
    serving()
    print("expiry: sessions expire and must be made again")


def share():
    write_auth_file()
    reload()
    root = sess("root")
    assert root.op("create", model="team-a-m8", decays=[0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99,
                                                         0.999])["ok"]

    def staged(s, name):
        """Begin a transaction and stage one element of a tensor of 1.2M (16 MiB held)."""
        t = s.op("begin", model="team-a-m8", step=1)
        assert t["ok"], t
        r = s.op("push", txn=t["txn"], tensors=[{"name": name, "kind": "param", "dtype": "F32",
                                                  "shape": [1200000],
                                                  "data": struct.pack("<f", 1.0)}])
        return t["txn"], r

    a = sess("a_most")
    b = sess("a_most")  # the same user on another connection
    c = sess("root")
    ta, r = staged(a, "w1")
    assert r["ok"], r
    tb, r = staged(b, "w2")
    assert err(r) == ("EMAD_ELIMIT", None) and "memory budget" in r["error"]["message"], r
    tc, r = staged(c, "w3")  # another user: a share of its own
    assert r["ok"], r
    for s, t in ((a, ta), (b, tb), (c, tc)):
        r = s.op("abort", txn=t)
        assert r["ok"] or err(r) == ("EMAD_ENOTXN", None), r
    serving()
    print("share: the memory budget's share is per user")


if __name__ == "__main__":
    sys.exit(main())
