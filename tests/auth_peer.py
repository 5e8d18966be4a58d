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
plausible replies, and pull, read and release of a fixed model (`pulled`:
one float32 tensor `w` of PULL_BYTES bytes, element k equal to k mod 65521,
always read through a session). It checks what the real daemon checks (signature, tag of
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
import hashlib
import os
import socket
import struct
import sys
import threading

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
import nacl.bindings as nb
import nacl.signing

import sp_raw
from auth_client import pack as pack_any
from msgpack_min import pack, unpack_from

PIECE = 1 << 20
MAGIC = b"\xc1EMA"
PULL_BYTES = (17 << 20) + 4  # larger than libemad's inline cap: read in several 4 MiB reads


# ---- the protocol -----------------------------------------------------------------------------

def aead_tag(key, index, seq, ad):
    """The 16-byte tag of AES-256-GCM with an empty plaintext and ad as additional data, nonce
    u32le(index) || u64le(seq), under BLAKE2b-256 keyed with key over "emad-mac" || u64le(seq)."""
    kseq = hashlib.blake2b(b"emad-mac" + struct.pack("<Q", seq), key=key, digest_size=32).digest()
    return AESGCM(kseq).encrypt(struct.pack("<IQ", index, seq), b"", ad)


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
        self.pull_data = None
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
            req, _ = unpack_from(body)
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
        req, _ = unpack_from(body)
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
        if op == "pull":
            return pack({"v": 1, "ok": True, "model": req["model"], "step": 7, "session": 99,
                         "tensors": [{"name": "w", "kind": "param", "dtype": "F32",
                                      "shape": [PULL_BYTES // 4], "step": 7,
                                      "nbytes": PULL_BYTES, "update": "average"}]})
        if op == "read":
            data = self.pulled()
            return pack_any({"v": 1, "ok": True,
                             "data": [data[off:off + n] for _, off, n in req["ranges"]]})
        return pack({"v": 1, "ok": True})

    def pulled(self):
        """The bytes of the pulled tensor: float32 k mod 65521, little-endian."""
        if self.pull_data is None:
            n = PULL_BYTES // 4
            self.pull_data = struct.pack("<%df" % n, *(float(k % 65521) for k in range(n)))
        return self.pull_data


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
        threading.Thread(target=sp_raw.serve, args=(conn, peer.handle), daemon=True).start()


if __name__ == "__main__":
    main()
