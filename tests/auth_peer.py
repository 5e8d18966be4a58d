#!/usr/bin/env python3
"""A stand-in daemon that authenticates, for testing libemad's side of the
protocol against a second implementation: the handshake, the frames and
their tags are computed here with PyNaCl from docs/PROTOCOL.md
("Authentication"), not with src/common/auth.c.

    auth_peer.py PORTFILE USER PUBKEY [--lifetime S] [--expire-after N] [--tamper-op OP]
                 [--no-renew]

It listens on a free 127.0.0.1 port (written to PORTFILE), speaks
nanomsg's SP-over-TCP as a REP socket, and answers hello (auth: true), the
handshake, and framed requests for create, drop, push, begin and commit with
plausible replies. It checks what the real daemon checks (signature, tag of
every 1 MiB piece and of the frame, increasing sequence numbers, the session
of each frame) and prints one line per event (`handshake`, `renew`, `frame
OP seq=N pieces=N bytes=N`, `refused REASON`) on stdout. --expire-after N
refuses the (N+1)-th frame of every session with a plain EMAD_EAUTH
"expired" and forgets the session; --tamper-op OP flips a bit in the body of
the replies to OP after tagging them; --no-renew refuses renewals as if the
old session were unknown (`refused renew`). Every wait is bounded (a minute times
EMAD_TEST_TIMEOUT_SCALE without a connection ends it).
"""
import base64
import os
import socket
import struct
import sys
import threading

import nacl.bindings as nb
import nacl.signing

from msgpack_min import pack

PIECE = 1 << 20
MAGIC = b"\xc1EMA"


# ---- msgpack decoding (the subset libemad sends) ---------------------------------------------

def unpack(b, i=0):
    """Decode one object of b at i: (object, next index)."""
    t = b[i]
    i += 1
    if t < 0x80:
        return t, i
    if 0x80 <= t <= 0x8F or t in (0xDE, 0xDF):
        n, i = _count(b, i, t, 0x80)
        out = {}
        for _ in range(n):
            k, i = unpack(b, i)
            out[k], i = unpack(b, i)
        return out, i
    if 0x90 <= t <= 0x9F or t in (0xDC, 0xDD):
        n, i = _count(b, i, t, 0x90)
        out = []
        for _ in range(n):
            v, i = unpack(b, i)
            out.append(v)
        return out, i
    if 0xA0 <= t <= 0xBF or t in (0xD9, 0xDA, 0xDB):
        n, i = (t & 0x1F, i) if t <= 0xBF else _sized(b, i, {0xD9: 1, 0xDA: 2, 0xDB: 4}[t])
        return b[i:i + n].decode(), i + n
    if t in (0xC4, 0xC5, 0xC6):
        n, i = _sized(b, i, {0xC4: 1, 0xC5: 2, 0xC6: 4}[t])
        return b[i:i + n], i + n
    if t in (0xCC, 0xCD, 0xCE, 0xCF):
        return _sized(b, i, {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}[t])
    if t == 0xCA:
        return struct.unpack(">f", b[i:i + 4])[0], i + 4
    if t == 0xCB:
        return struct.unpack(">d", b[i:i + 8])[0], i + 8
    if t in (0xC2, 0xC3):
        return t == 0xC3, i
    if t == 0xC0:
        return None, i
    raise ValueError("msgpack type 0x%02x" % t)


def _sized(b, i, n):
    return int.from_bytes(b[i:i + n], "big"), i + n


def _count(b, i, t, fix):
    if t < fix + 16:
        return t - fix, i
    return _sized(b, i, 2 if t in (0xDC, 0xDE) else 4)


# ---- the protocol -----------------------------------------------------------------------------

def aead_tag(key, index, seq, ad):
    """ChaCha20-Poly1305-IETF tag of an empty plaintext, nonce u32le(index) || u64le(seq)."""
    return nb.crypto_aead_chacha20poly1305_ietf_encrypt(b"", ad, struct.pack("<IQ", index, seq),
                                                        key)


def frame(key, session, seq, body):
    """The frame of body: header with its tag, then body."""
    header = MAGIC + struct.pack("<QQ", session, seq)
    tags = b"".join(aead_tag(key, i, seq, body[off:off + PIECE])
                    for i, off in enumerate(range(0, len(body), PIECE)))
    return header + aead_tag(key, 0xFFFFFFFF, seq, header + tags) + body


def error(code, message, reason=None):
    e = {"code": code, "message": message}
    if reason:
        e["reason"] = reason
    return pack({"v": 1, "ok": False, "error": e})


class Peer:
    def __init__(self, user, pubkey, lifetime, expire_after, tamper_op, no_renew=False):
        self.user = user
        self.verify = nacl.signing.VerifyKey(pubkey)
        self.lifetime = lifetime
        self.expire_after = expire_after
        self.tamper_op = tamper_op
        self.no_renew = no_renew
        self.pending = {}   # hs -> (client eph, server eph pk, server eph sk, challenge)
        self.sessions = {}  # id -> {"rx", "tx", "last", "frames", "first"}
        self.lock = threading.Lock()
        self.txn = 0

    def log(self, line):
        with self.lock:
            print(line, flush=True)

    def handle(self, body):
        """The reply to one request message."""
        if body[:1] != MAGIC[:1]:
            req, _ = unpack(body)
            op = req.get("op")
            if op == "hello":
                return pack({"v": 1, "ok": True, "protocol": 1, "max_message_bytes": 64 << 20,
                             "auth": True})
            if op == "auth_begin":
                return self.begin(req)
            if op == "auth_finish":
                return self.finish(req)
            self.log("refused required %s" % op)
            return error(1027, "authentication required", "required")
        return self.framed(body)

    def begin(self, req):
        spk, ssk = nb.crypto_kx_keypair()
        hs = int.from_bytes(os.urandom(8), "little") | 1
        challenge = os.urandom(32)
        self.pending[hs] = (req["user"], req["eph"], spk, ssk, challenge)
        return pack({"v": 1, "ok": True, "hs": hs, "challenge": challenge, "eph": spk,
                     "lifetime": self.lifetime})

    def finish(self, req):
        entry = self.pending.pop(req["hs"], None)
        if entry is None:
            return error(1027, "authentication failed: unknown handshake", "unknown_handshake")
        user, ceph, spk, ssk, challenge = entry
        transcript = (b"emad-auth-v1" + bytes([len(user)]) + user.encode() + ceph + spk
                      + challenge + struct.pack("<Q", req["hs"]))
        try:
            if user != self.user:
                raise ValueError(user)
            self.verify.verify(transcript, req["sig"])
        except Exception:  # nacl.exceptions.BadSignatureError, or an unknown user
            self.log("refused bad_signature")
            return error(1027, "authentication failed: bad signature", "bad_signature")
        rx, tx = nb.crypto_kx_server_session_keys(spk, ssk, ceph)
        sid = int.from_bytes(os.urandom(8), "little") | 1
        renew = req.get("renew")
        if renew is not None:
            if renew not in self.sessions or self.no_renew:
                self.log("refused renew")
                return error(1027, "authentication failed: no such session", "no_session")
            self.log("renew old=%d" % renew)
        else:
            self.log("handshake")
        self.sessions[sid] = {"rx": rx, "tx": tx, "last": 0, "frames": 0}
        return pack({"v": 1, "ok": True, "session": sid, "lifetime": self.lifetime})

    def framed(self, msg):
        session, seq = struct.unpack("<QQ", msg[4:20])
        tag, body = msg[20:36], msg[36:]
        s = self.sessions.get(session)
        if s is None:
            self.log("refused no_session")
            return error(1027, "authentication failed: no such session", "no_session")
        header = msg[:20]
        tags = b"".join(aead_tag(s["rx"], i, seq, body[off:off + PIECE])
                        for i, off in enumerate(range(0, len(body), PIECE)))
        if not body or aead_tag(s["rx"], 0xFFFFFFFF, seq, header + tags) != tag:
            self.log("refused bad_tag")
            return error(1027, "authentication failed: bad tag", "bad_tag")
        if seq <= s["last"]:
            self.log("refused replay")
            return error(1027, "authentication failed: replayed or reordered", "replay")
        if self.expire_after is not None and s["frames"] >= self.expire_after:
            del self.sessions[session]
            self.log("refused expired")
            return error(1027, "authentication failed: session expired", "expired")
        s["last"] = seq
        s["frames"] += 1
        req, _ = unpack(body)
        op = req["op"]
        self.log("frame %s seq=%d pieces=%d bytes=%d" % (op, seq, len(tags) // 16, len(body)))
        reply = frame(s["tx"], session, seq, self.answer(req))
        if op == self.tamper_op:
            reply = reply[:-1] + bytes([reply[-1] ^ 1])
        return reply

    def answer(self, req):
        op = req["op"]
        if op == "begin":
            self.txn += 1
            return pack({"v": 1, "ok": True, "txn": self.txn})
        if op == "push" and "txn" in req:
            return pack({"v": 1, "ok": True, "staged": len(req["tensors"])})
        if op in ("push", "commit"):
            n = len(req.get("tensors", [])) if op == "push" else 1
            return pack({"v": 1, "ok": True, "applied": n, "stale": 0, "skipped": 0,
                         "ignored": 0, "step": req.get("step", 1), "pending": False})
        return pack({"v": 1, "ok": True})


def serve(peer, conn):
    """One SP REP connection: the SP handshake, then request/reply until the client closes."""
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf
    try:
        if exact(8)[:6] != b"\x00SP\x00\x00\x30":
            return
        conn.sendall(b"\x00SP\x00\x00\x31\x00\x00")
        while True:
            size = struct.unpack(">Q", exact(8))[0]
            msg = exact(size)
            reply = peer.handle(msg[4:])  # after the request id
            conn.sendall(struct.pack(">Q", 4 + len(reply)) + msg[:4] + reply)
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


def main():
    args = sys.argv[1:]
    opts = {"--lifetime": "3600", "--expire-after": None, "--tamper-op": None}
    pos = []
    no_renew = False
    while args:
        a = args.pop(0)
        if a == "--no-renew":
            no_renew = True
        elif a in opts:
            opts[a] = args.pop(0)
        else:
            pos.append(a)
    portfile, user, pubkey = pos
    assert pubkey.startswith("ed25519:")
    peer = Peer(user, base64.b64decode(pubkey[len("ed25519:"):]), int(opts["--lifetime"]),
                None if opts["--expire-after"] is None else int(opts["--expire-after"]),
                opts["--tamper-op"], no_renew)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(60 * float(os.environ.get("EMAD_TEST_TIMEOUT_SCALE") or 1))
    with open(portfile + ".tmp", "w") as f:
        f.write("%d\n" % srv.getsockname()[1])
    os.rename(portfile + ".tmp", portfile)
    while True:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            return
        conn.settimeout(None)
        threading.Thread(target=serve, args=(peer, conn), daemon=True).start()


if __name__ == "__main__":
    main()
