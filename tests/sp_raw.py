"""Requests to emad over a plain TCP socket: nanomsg's SP-over-TCP framing by hand, so a test can
send what no client library would (bad names, exact sizes, keys of newer protocols). The tests'
one copy of the framing: each side first sends an 8-byte header naming its protocol (header());
then every message is its size (u64, big-endian) and its bytes, a request's starting with a
4-byte request id (top bit set) that its reply repeats (send_message(), recv_message()). Conn is
the REQ side, serve() the REP side (a stand-in daemon)."""
import os
import socket
import struct

from msgpack_min import pack

REQ = 48
REP = 49


def header(proto):
    """The SP header of a peer speaking protocol proto (REQ, REP, ...)."""
    return b"\x00SP\x00" + struct.pack(">H", proto) + b"\x00\x00"


def request_id(n):
    """The 4 bytes of request id n as they start a request (top bit set)."""
    return struct.pack(">I", n | 0x80000000)


def recv_exact(s, n):
    """n bytes from socket s; EOFError if the peer closes the connection first."""
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("the peer closed the connection")
        buf += chunk
    return buf


def send_message(s, data):
    """Send one message (data: the request id or routing header, then the body)."""
    s.sendall(struct.pack(">Q", len(data)) + data)


def recv_message(s):
    """One message's bytes (its request id first)."""
    return recv_exact(s, struct.unpack(">Q", recv_exact(s, 8))[0])


def handshake(s, proto=REQ, peer=REP):
    """Send our SP header (proto) on s and check that the peer's names protocol peer."""
    s.sendall(header(proto))
    assert recv_exact(s, 8)[:6] == header(peer)[:6], "not an SP peer of protocol %d" % peer


def serve(conn, handle):
    """Serve one connection as an SP REP peer: check the client's REQ header, send ours, then
    answer each request with handle(body) (body and reply without the request id, which the
    reply repeats) until the client closes; closes conn. A client of another protocol is
    dropped."""
    try:
        if recv_exact(conn, 8)[:6] != header(REQ)[:6]:
            return
        conn.sendall(header(REP))
        while True:
            msg = recv_message(conn)
            send_message(conn, msg[:4] + handle(msg[4:]))
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


class Conn:
    """One REQ connection to emad on host:port (default 127.0.0.1; SP handshake done); every
    wait is at most 60 s times $EMAD_TEST_TIMEOUT_SCALE (connecting: timeout seconds, if
    given)."""

    def __init__(self, port, timeout=None, host="127.0.0.1"):
        wait = 60 * float(os.environ.get("EMAD_TEST_TIMEOUT_SCALE") or 1)
        timeout = timeout or wait
        self.s = socket.create_connection((host, port), timeout)
        self.rid = 0
        self.s.sendall(header(REQ))
        assert self._exact(8)[:6] == header(REP)[:6], "not an SP REP peer"
        self.s.settimeout(wait)

    def _exact(self, n):
        try:
            return recv_exact(self.s, n)
        except EOFError:
            raise AssertionError("connection closed by emad") from None

    def send(self, rid, body):
        """Send body as a request with the request id rid (top bit included) as it is."""
        send_message(self.s, struct.pack(">I", rid) + body)

    def receive(self):
        """The next reply: (request id, body)."""
        reply = self._exact(struct.unpack(">Q", self._exact(8))[0])
        return struct.unpack(">I", reply[:4])[0], reply[4:]

    def call(self, body):
        """Send one request body (bytes) and return the reply body. A late reply to an earlier
        request of this connection (a resend answered twice) is dropped, as a REQ socket does."""
        self.rid += 1
        rid = self.rid | 0x80000000
        self.send(rid, body)
        while True:
            got, reply = self.receive()
            if got == rid:
                return reply
            assert (got & 0x7FFFFFFF) < self.rid, "reply to a request this connection never sent"

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
