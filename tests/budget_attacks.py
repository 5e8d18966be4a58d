"""The memory cases of one client against emad's memory budget, over loopback (test_budget.sh).

Usage: budget_attacks.py PORT PID BUDGET_BYTES HTTP_PORT

The daemon runs with --max-memory BUDGET_BYTES and --client-share 50. Each case is the issue's
attack at small scale, sent with raw SP connections (tests/sp_raw.py): the attacker gets
EMAD_ELIMIT naming the memory budget, the gauges (stats op) never exceed the budget and the
daemon's resident memory grows by no more than the budget, and another connection is served
meanwhile. The checks of what a well-behaved client gets afterwards are in test_budget.sh.
"""
import os
import socket
import struct
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sp_raw  # noqa: E402
from msgpack_min import unpack_from  # noqa: E402
from sp_raw import Conn  # noqa: E402

PORT, PID, BUDGET, HTTP_PORT = (int(a) for a in sys.argv[1:5])
SHARE = BUDGET // 2
MIB = 1 << 20
SCALE = float(os.environ.get("EMAD_TEST_TIMEOUT_SCALE") or 1)


# --- msgpack, just what the tests need -------------------------------------------------------

def mp(o):
    """Encode o: dict, list, str, bytes, bool, int >= 0, float (as float64)."""
    if isinstance(o, bool):
        return b"\xc3" if o else b"\xc2"
    if isinstance(o, int):
        return bytes([o]) if o < 128 else b"\xcf" + struct.pack(">Q", o)
    if isinstance(o, float):
        return b"\xcb" + struct.pack(">d", o)
    if isinstance(o, str):
        b = o.encode()
        return b"\xdb" + struct.pack(">I", len(b)) + b
    if isinstance(o, (bytes, bytearray)):
        return b"\xc6" + struct.pack(">I", len(o)) + bytes(o)
    if isinstance(o, list):
        return b"\xdd" + struct.pack(">I", len(o)) + b"".join(mp(x) for x in o)
    if isinstance(o, dict):
        return b"\xdf" + struct.pack(">I", len(o)) + b"".join(mp(k) + mp(v) for k, v in o.items())
    raise TypeError(o)


def req(op, **keys):
    d = {"v": 1, "op": op}
    d.update(keys)
    return mp(d)


def call(c, op, **keys):
    return unpack_from(c.call(req(op, **keys)))[0]


def ok(c, op, **keys):
    r = call(c, op, **keys)
    assert r["ok"], "%s failed: %r" % (op, r)
    return r


def refused(r, *words):
    """r is EMAD_ELIMIT naming the memory budget and every word."""
    assert not r["ok"], "expected EMAD_ELIMIT, got %r" % {k: r[k] for k in r if k != "tensors"}
    e = r["error"]
    assert e["name"] == "EMAD_ELIMIT", e
    for w in ("memory budget", "--max-memory") + words:
        assert w in e["message"], "expected %r in %r" % (w, e["message"])
    return e["message"]


def f32(name, values_bytes, shape, **extra):
    t = {"name": name, "kind": "param", "dtype": "F32", "shape": shape, "data": values_bytes}
    t.update(extra)
    return t


# --- what the daemon holds -------------------------------------------------------------------

observer = Conn(PORT)
rss0 = None


def rss():
    with open("/proc/%d/status" % PID) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def gauges():
    return ok(observer, "stats")["stats"]


def case_begins():
    """Note the resident memory before a case: memory freed by earlier cases stays in the
    allocator's heap (reused, returned when the daemon is idle), so each case is measured from
    its own start."""
    global rss0
    rss0 = rss()


def check_held(case):
    """The gauges sum up and stay within the budget; resident memory grew by at most the
    budget since the case began (plus 16 MiB of slack for the allocator and nanomsg's
    buffers); hello is answered on another connection."""
    g = gauges()
    parts = ["shadows", "spares", "staged", "pending", "txn_shadows", "sessions",
             "replies_in_flight", "previous"]
    total = sum(g["memory_%s_bytes" % p] for p in parts)
    assert g["memory_budget_bytes"] == BUDGET, g["memory_budget_bytes"]
    assert g["memory_bytes"] == total, (g["memory_bytes"], total)
    assert total <= BUDGET, "%s: %d bytes held, budget %d" % (case, total, BUDGET)
    grown = rss() - rss0
    assert grown <= BUDGET + 16 * MIB, "%s: resident memory grew by %d bytes" % (case, grown)
    ok(Conn(PORT), "hello")
    print("%-28s held %6.1f MiB of %5.1f MiB (%s), rss +%.1f MiB" % (
        case, total / MIB, BUDGET / MIB,
        ", ".join("%s %.1f" % (p, g["memory_%s_bytes" % p] / MIB) for p in parts
                  if g["memory_%s_bytes" % p]), grown / MIB))
    return g


def wait_until(cond, what, seconds=60):
    deadline = time.time() + seconds * SCALE
    while not cond():
        assert time.time() < deadline, "timed out waiting for " + what
        time.sleep(0.1)


# --- the cases -------------------------------------------------------------------------------

def chunks_until_refused(c, prefix, most, *words):
    """On connection c, begin transactions on m8 with one 1-element chunk each of a tensor
    declared 1.2M elements, until one is refused (EMAD_ELIMIT naming words) or `most` were
    accepted (an error). Returns the transaction ids and the refusal."""
    txns = []
    for _ in range(most + 1):
        t = ok(c, "begin", model="m8", step=1)["txn"]
        txns.append(t)
        r = call(c, "push", model="m8", step=1, txn=t,
                 tensors=[f32("%s%d" % (prefix, len(txns)), struct.pack("<f", 1.0), [1200000])])
        if not r["ok"]:
            return txns, refused(r, *words)
    raise AssertionError("%d chunks of 16 MiB accepted" % len(txns))


def txn_with_8_decays():
    """A begin and one 1-element chunk of a tensor declared 1.2M elements, on a model with 8
    decays: the chunk holds one huge page per shadow (16 MiB), not the 8 declared shadows
    (38.4 MB). One connection stops at its share; the next connections at the budget."""
    case_begins()
    a, b = Conn(PORT), Conn(PORT)
    txns, msg = chunks_until_refused(a, "w", 1, "one connection", "txn_shadows")
    print("  refused:", msg)
    check_held("txn 8 decays, one conn")
    more, msg = chunks_until_refused(b, "x", 2, "txn_shadows")
    print("  refused:", msg)
    check_held("txn 8 decays, two conns")
    for t in txns:
        ok(a, "abort", txn=t)
    for t in more:
        ok(b, "abort", txn=t)
    assert gauges()["memory_txn_shadows_bytes"] == 0


def f16_with_8_decays():
    """F16 params on the 8-decay model: 16 bytes held per byte sent. 2M elements (4 MB sent)
    would hold 64 MB of shadows: refused, nothing created; 64K elements are applied."""
    case_begins()
    a = Conn(PORT)
    t = {"name": "h", "kind": "param", "dtype": "F16", "shape": [1 << 21],
         "data": b"\x00\x3c" * (1 << 21)}
    refused(call(a, "push", model="m8", step=5, tensors=[t]), "shadows")
    lst = ok(a, "list", model="m8", offset=0, limit=100)
    assert not any(x["name"] == "h" for x in lst["tensors"]), lst
    check_held("f16 8 decays")


def unread_inline_pulls():
    """Pulls of a 4 MiB model inline, each on a new connection that reads only the size of its
    reply: each connection holds a reply. Refused once the replies would exceed the budget;
    given back once the connections are idle for --txn-timeout."""
    case_begins()
    body = req("pull", model="big")
    conns = []
    for k in range(4 * BUDGET // (4 * MIB)):
        s = socket.create_connection(("127.0.0.1", PORT), 60 * SCALE)
        sp_raw.handshake(s)
        sp_raw.send_message(s, sp_raw.request_id(1) + body)
        size = struct.unpack(">Q", sp_raw.recv_exact(s, 8))[0]
        conns.append(s)
        if size < MIB:  # an error: read it
            reply = sp_raw.recv_exact(s, size)
            msg = refused(unpack_from(reply[4:])[0], "replies_in_flight")
            print("  refused after %d unread replies: %s" % (k, msg))
            break
    else:
        raise AssertionError("%d unread 4 MiB replies accepted" % len(conns))
    g = check_held("unread inline pulls")
    assert g["memory_replies_in_flight_bytes"] >= (len(conns) - 1) * 4 * MIB
    for s in conns:
        s.close()
    wait_until(lambda: gauges()["memory_replies_in_flight_bytes"] < MIB,
               "the replies of closed connections to be given back")


def session_after_each_push(push_step):
    """A pull session opened after each push keeps a full copy each: one connection stops at its
    share of the budget."""
    case_begins()
    a = Conn(PORT)
    sessions = []
    for k in range(BUDGET // (4 * MIB) + 2):
        push_step(100 + k)
        r = call(a, "pull", model="big", inline_bytes=0)
        if not r["ok"]:
            msg = refused(r, "sessions")
            break
        sessions.append(r["session"])
    else:
        raise AssertionError("%d sessions of 4 MiB accepted from one connection" % len(sessions))
    print("  refused after %d sessions: %s" % (len(sessions), msg))
    g = check_held("session after each push")
    assert g["memory_sessions_bytes"] == len(sessions) * 4 * MIB, g["memory_sessions_bytes"]
    b = Conn(PORT)  # another connection still opens a session and reads it
    r = ok(b, "pull", model="big", inline_bytes=0)
    data = ok(b, "read", session=r["session"], ranges=[[0, 0, 16]])["data"][0]
    assert len(data) == 16
    ok(b, "release", session=r["session"])
    for s in sessions:
        ok(a, "release", session=s)
    assert gauges()["memory_sessions_bytes"] == 0


def one_name_many_times():
    """A pull naming one tensor 200,000 times is EMAD_EDUP; nothing is held."""
    case_begins()
    a = Conn(PORT)
    before = gauges()["memory_bytes"]
    r = call(a, "pull", model="big", tensors=["w"] * 200000)
    assert not r["ok"] and r["error"]["name"] == "EMAD_EDUP", r
    assert gauges()["memory_bytes"] <= before + MIB
    check_held("one name many times")


def multiwriter_chunks():
    """Multi-writer transaction chunks declaring huge slices: refused before allocating
    (staged_bytes never claims more than the budget); 8 MiB slices until the share."""
    case_begins()
    a = Conn(PORT)
    t = ok(a, "begin", model="mw", step=1, writer=0)["txn"]
    huge = f32("w", struct.pack("<f", 1.0), [1 << 34], slice=[0, 1 << 33])
    refused(call(a, "push", txn=t, tensors=[huge]), "staged")
    assert gauges()["staged_bytes"] == 0
    k = 0
    while True:
        chunk = f32("w", struct.pack("<f", 1.0), [1 << 34], slice=[k << 21, 1 << 21])
        r = call(a, "push", txn=t, tensors=[chunk])
        if not r["ok"]:
            refused(r, "one connection", "staged")
            break
        k += 1
        assert k < 64, "the share was never reached"
    g = check_held("multi-writer chunks")
    assert g["staged_bytes"] == k * 8 * MIB, (g["staged_bytes"], k)
    assert g["staged_bytes"] <= SHARE
    ok(a, "abort", txn=t)
    assert gauges()["staged_bytes"] == 0


def main():
    import subprocess
    emactl, server = os.environ["EMACTL"], "tcp://127.0.0.1:%d" % PORT

    def push_step(step):
        subprocess.run([emactl, "--server", server, "push", "big", os.environ["BIG"], "--step",
                        str(step)], check=True, stdout=subprocess.DEVNULL,
                       timeout=120 * SCALE)

    txn_with_8_decays()
    f16_with_8_decays()
    unread_inline_pulls()
    session_after_each_push(push_step)
    one_name_many_times()
    multiwriter_chunks()
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % HTTP_PORT,
                                timeout=60 * SCALE) as f:
        text = f.read().decode()
    lines = [x for x in text.splitlines() if x.startswith("emad_memory_")]
    assert "emad_memory_budget_bytes %d" % BUDGET in lines, lines
    assert sum(1 for x in lines if x.startswith("emad_memory_bytes{part=")) == 8, lines
    print("metrics:", "; ".join(lines))


main()
