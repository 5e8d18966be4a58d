"""The wire side of the adversarial suite (tests/adversarial.py) and of bench/bench_hello.py:
a complete msgpack encoder, requests and decoded replies (msgpack_min.unpack) over sp_raw's
plain-socket SP connection, and the pinger, a process of its own that sends `hello` on a second
connection all the time and reports how long each answer took."""
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time

import sp_raw
from msgpack_min import unpack


class F32(float):
    """A float packed as msgpack float32."""


class Raw:
    """Bytes already packed, sent as they are (a value no encoder would write)."""

    def __init__(self, data):
        self.data = data


def _head(n, small, fix_max, codes):
    """Header of a str/bin/array/map of n: fix form (small | n) when allowed, else 8/16/32."""
    if small is not None and n <= fix_max:
        return bytes([small | n])
    for code, fmt in codes:
        if n < (1 << (8 * struct.calcsize(fmt))):
            return bytes([code]) + struct.pack(fmt, n)
    raise ValueError("too long: %d" % n)


def pack(o, out=None):
    """Encode o (dict, list, tuple, str, bytes, bool, int, float, F32, None, Raw) as msgpack."""
    top = out is None
    out = [] if top else out
    if isinstance(o, Raw):
        out.append(o.data)
    elif o is None:
        out.append(b"\xc0")
    elif isinstance(o, bool):
        out.append(b"\xc3" if o else b"\xc2")
    elif isinstance(o, int):
        if 0 <= o < 128:
            out.append(bytes([o]))
        elif o >= 0:
            out.append(b"\xcf" + struct.pack(">Q", o))
        elif o >= -32:
            out.append(struct.pack("b", o))
        else:
            out.append(b"\xd3" + struct.pack(">q", o))
    elif isinstance(o, F32):
        out.append(b"\xca" + struct.pack(">f", o))
    elif isinstance(o, float):
        out.append(b"\xcb" + struct.pack(">d", o))
    elif isinstance(o, str):
        b = o.encode("utf-8", "surrogatepass")
        out.append(_head(len(b), 0xA0, 31, [(0xD9, ">B"), (0xDA, ">H"), (0xDB, ">I")]) + b)
    elif isinstance(o, (bytes, bytearray, memoryview)):
        out.append(_head(len(o), None, 0, [(0xC4, ">B"), (0xC5, ">H"), (0xC6, ">I")]))
        out.append(bytes(o))
    elif isinstance(o, (list, tuple)):
        out.append(_head(len(o), 0x90, 15, [(0xDC, ">H"), (0xDD, ">I")]))
        for x in o:
            pack(x, out)
    elif isinstance(o, dict):
        out.append(_head(len(o), 0x80, 15, [(0xDE, ">H"), (0xDF, ">I")]))
        for k, v in o.items():
            pack(k, out)
            pack(v, out)
    else:
        raise TypeError(type(o))
    return b"".join(out) if top else None


def req(op, **keys):
    """A request map: v=1, op and the keys given."""
    m = {"v": 1, "op": op}
    m.update(keys)
    return m


class Client:
    """One REQ connection to emad on host:port speaking decoded maps (every wait at most 60 s,
    scaled)."""

    def __init__(self, port, timeout=None, host="127.0.0.1"):
        self.conn = sp_raw.Conn(port, timeout, host)

    def call(self, msg):
        """Send msg (a dict, or bytes already packed) and return the decoded reply map."""
        return unpack(self.conn.call(msg if isinstance(msg, bytes) else pack(msg)))

    def ok(self, msg):
        """call(); the reply must be ok. Returns it."""
        r = self.call(msg)
        assert r.get("ok") is True, "not ok: %s" % _short(r)
        return r

    def error(self, msg, name):
        """call(); the reply must be the error `name`. Returns the error map."""
        r = self.call(msg)
        assert r.get("ok") is False, "expected %s, got success: %s" % (name, _short(r))
        assert r["error"]["name"] == name, "expected %s, got %s" % (name, _short(r["error"]))
        return r["error"]

    def close(self):
        self.conn.close()


def _short(o):
    s = repr(o)
    return s if len(s) < 400 else s[:400] + "..."


def timeout_scale():
    """$EMAD_TEST_TIMEOUT_SCALE (default 1)."""
    return float(os.environ.get("EMAD_TEST_TIMEOUT_SCALE") or 1)


# ---- the pinger ------------------------------------------------------------------------------

def pinger_main(port):
    """Body of the pinger process: `hello` back to back on one connection; a line on stdin
    names the case the next answers belong to, `end` prints every case's latencies (seconds)
    as one JSON line and exits. A hello may wait 60 s (scaled): a longer one fails."""
    c = Client(port)
    hello = pack(req("hello"))
    cases, current = {}, None
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 0)
        if ready:
            line = sys.stdin.readline().strip()
            if line in ("", "end"):
                break
            current = line
            cases.setdefault(current, [])
            print("ok", flush=True)
        t0 = time.monotonic()
        r = c.conn.call(hello)
        dt = time.monotonic() - t0
        assert pack("ok") + pack(True) in r, "hello failed: %r" % r[:200]
        if current is not None:
            cases[current].append(dt)
    c.close()
    print(json.dumps(cases), flush=True)


class Pinger:
    """The pinger process (pinger_main) seen from the suite: mark(case) before each case,
    results() at the end: {case: [latency seconds, ...]}."""

    def __init__(self, port):
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "pinger", str(port)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def mark(self, case):
        """Answers from now on count for case (returns once the pinger has switched)."""
        self.p.stdin.write(case + "\n")
        self.p.stdin.flush()
        assert self.p.stdout.readline().strip() == "ok", "the pinger died"

    def results(self):
        self.p.stdin.write("end\n")
        self.p.stdin.flush()
        out = json.loads(self.p.stdout.readline())
        self.p.wait(60 * timeout_scale())
        return out

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def latency_summary(lat):
    """(count, worst, p99) of a list of latencies in seconds (zeros when empty)."""
    if not lat:
        return 0, 0.0, 0.0
    s = sorted(lat)
    return len(s), s[-1], s[min(len(s) - 1, int(0.99 * len(s)))]


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "pinger":
    pinger_main(int(sys.argv[2]))
