"""An authenticated emad client written from docs/PROTOCOL.md ("Authentication") with PyNaCl and
plain sockets (sp_raw), independent of libemad: the handshake, framed requests with sequence
numbers, reply checking, and the raw frames a test needs to send (replays, flipped bits)."""
import base64
import hashlib
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
import nacl.bindings as nb
import nacl.signing

from sp_raw import Conn

import msgpack_min
from msgpack_min import unpack

PIECE = 1 << 20
MAGIC = b"\xc1EMA"


def pack(o):
    """msgpack_min.pack plus floats (float64), bytes of any size (bin32) and longer containers."""
    if isinstance(o, float):
        return b"\xcb" + struct.pack(">d", o)
    if isinstance(o, bytes) and len(o) >= 256:
        return b"\xc6" + struct.pack(">I", len(o)) + o
    if isinstance(o, list):
        return b"\xdd" + struct.pack(">I", len(o)) + b"".join(pack(x) for x in o)
    if isinstance(o, dict):
        return b"\xdf" + struct.pack(">I", len(o)) + b"".join(pack(k) + pack(v)
                                                            for k, v in o.items())
    return msgpack_min.pack(o)


def request(op, **keys):
    """A request map: v=1, op, then keys."""
    return pack(dict(v=1, op=op, **keys))


def aead_tag(key, index, seq, ad):
    """The 16-byte tag of AES-256-GCM with an empty plaintext and ad as additional data, nonce
    u32le(index) || u64le(seq), under BLAKE2b-256 keyed with key over "emad-mac" || u64le(seq)."""
    kseq = hashlib.blake2b(b"emad-mac" + struct.pack("<Q", seq), key=key, digest_size=32).digest()
    return AESGCM(kseq).encrypt(struct.pack("<IQ", index, seq), b"", ad)


def frame_tag(key, header20, body):
    seq = struct.unpack("<Q", header20[12:20])[0]
    tags = b"".join(aead_tag(key, i, seq, body[o:o + PIECE])
                    for i, o in enumerate(range(0, len(body), PIECE)))
    return aead_tag(key, 0xFFFFFFFF, seq, header20 + tags)


def frame(key, session, seq, body):
    h = MAGIC + struct.pack("<QQ", session, seq)
    return h + frame_tag(key, h, body) + body


def keygen(user):
    """(key file text, auth-file section) for a fresh key of user."""
    sk = nacl.signing.SigningKey.generate()
    seed = bytes(sk)
    pk = bytes(sk.verify_key)
    keyfile = "emad-key-v1 %s %s\n" % (user, base64.b64encode(seed).decode())
    return seed, keyfile, "ed25519:" + base64.b64encode(pk).decode()


class AuthError(Exception):
    pass


class Session:
    """One connection and one session of user (a 32-byte Ed25519 seed)."""

    def __init__(self, port, user, seed, renew=None, conn=None):
        self.c = conn or Conn(port)
        self.user = user
        self.seed = seed
        self.handshake(renew)

    def handshake(self, renew=None, corrupt_sig=False, finish=True):
        eph_pk, eph_sk = nb.crypto_kx_keypair()
        r = unpack(self.c.call(request("auth_begin", user=self.user, eph=eph_pk)))
        assert r["ok"], r
        self.lifetime = r["lifetime"]
        t = (b"emad-auth-v1" + bytes([len(self.user)]) + self.user.encode() + eph_pk + r["eph"]
             + r["challenge"] + struct.pack("<Q", r["hs"]))
        sig = nacl.signing.SigningKey(self.seed).sign(t).signature
        if corrupt_sig:
            sig = bytes([sig[0] ^ 1]) + sig[1:]
        self.hs = r["hs"]
        if not finish:
            return r
        keys = {"hs": r["hs"], "sig": sig}
        if renew is not None:
            keys["renew"] = renew
        f = unpack(self.c.call(request("auth_finish", **keys)))
        if not f["ok"]:
            raise AuthError(f["error"])
        self.session = f["session"]
        self.rx, self.tx = nb.crypto_kx_client_session_keys(eph_pk, eph_sk, r["eph"])
        self.seq = 0
        return f

    def frame(self, body, seq=None):
        if seq is None:
            self.seq += 1
            seq = self.seq
        return frame(self.tx, self.session, seq, body)

    def send_frame(self, data):
        """Send frame bytes; return the decoded reply (checking its tag when it is a frame)."""
        reply = self.c.call(data)
        if reply[:4] == MAGIC:
            session, seq = struct.unpack("<QQ", reply[4:20])
            assert session == self.session
            assert frame_tag(self.rx, reply[:20], reply[36:]) == reply[20:36], "reply tag"
            return unpack(reply[36:]), seq
        return unpack(reply), None

    def call(self, body):
        """Send a request body in a fresh frame; the decoded reply."""
        return self.send_frame(self.frame(body))[0]

    def op(self, op, **keys):
        return self.call(request(op, **keys))


def err(reply):
    """(code name, reason) of an error reply, or None for ok."""
    if reply.get("ok"):
        return None
    e = reply["error"]
    return e["name"], e.get("reason")
