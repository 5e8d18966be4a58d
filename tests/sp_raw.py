"""Requests to emad over a plain TCP socket: nanomsg's SP-over-TCP framing by hand, so a test can
send what no client library would (bad names, exact sizes, keys of newer protocols)."""
import os
import socket
import struct

from msgpack_min import pack

REQ = 48


class Conn:
    """One REQ connection to emad on host:port (default 127.0.0.1; SP handshake done); every
    wait is at most 60 s times $EMAD_TEST_TIMEOUT_SCALE (connecting: timeout seconds, if
    given)."""

    def __init__(self, port, timeout=None, host="127.0.0.1"):
        wait = 60 * float(os.environ.get("EMAD_TEST_TIMEOUT_SCALE") or 1)
        timeout = timeout or wait
        self.s = socket.create_connection((host, port), timeout)
        self.rid = 0
        self.s.sendall(b"\x00SP\x00" + struct.pack(">H", REQ) + b"\x00\x00")
        assert self._exact(8)[:6] == b"\x00SP\x00\x00\x31", "not an SP REP peer"
        self.s.settimeout(wait)

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            assert chunk, "connection closed by emad"
            buf += chunk
        return buf

    def call(self, body):
        """Send one request body (bytes) and return the reply body. A late reply to an earlier
        request of this connection (a resend answered twice) is dropped, as a REQ socket does."""
        self.rid += 1
        rid = struct.pack(">I", self.rid | 0x80000000)
        self.s.sendall(struct.pack(">Q", 4 + len(body)) + rid + body)
        while True:
            size = struct.unpack(">Q", self._exact(8))[0]
            reply = self._exact(size)
            if reply[:4] == rid:
                return reply[4:]
            got = struct.unpack(">I", reply[:4])[0] & 0x7FFFFFFF
            assert got < self.rid, "reply to a request this connection never sent"

    def ok(self, body):
        """Send body; the reply must be ok=true. Returns the reply."""
        reply = self.call(body)
        assert pack("ok") + pack(True) in reply, "not ok: %r" % reply[:300]
        return reply

    def error(self, body, name):
        """Send body; the reply must be the error `name` (e.g. "EMAD_ENAME"). Returns the reply."""
        reply = self.call(body)
        assert pack("ok") + pack(False) in reply, "not an error: %r" % reply[:300]
        assert pack(name) in reply, "expected %s: %r" % (name, reply[:300])
        return reply

    def close(self):
        self.s.close()


def request(op, **keys):
    """A request map v=1, op, then keys (values packed by msgpack_min, or raw bytes in a Raw)."""
    items = [(pack("v"), pack(1)), (pack("op"), pack(op))]
    for k, v in keys.items():
        items.append((pack(k), v.data if isinstance(v, Raw) else pack(v)))
    assert len(items) < 16
    return bytes([0x80 | len(items)]) + b"".join(k + v for k, v in items)


class Raw:
    """Bytes already packed (a value msgpack_min cannot pack)."""

    def __init__(self, data):
        self.data = data


def bin32(data):
    """A msgpack bin 32 of any length."""
    return Raw(b"\xc6" + struct.pack(">I", len(data)) + data)


def f32_tensor(name, values, **extra):
    """A tensor map of float32 values (1-D) as msgpack_min packs it."""
    t = {"name": name, "kind": "param", "dtype": "F32", "shape": [len(values)],
         "data": struct.pack("<%df" % len(values), *values)}
    t.update(extra)
    return t
