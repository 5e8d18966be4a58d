#!/usr/bin/env python3
"""The authentication test vectors of docs/PROTOCOL.md, computed by a second
implementation (PyNaCl over libsodium's primitives, with the frame layout
written out here from the document, not from src/common/auth.c).

`auth_vectors.py` prints them as `name = hex` lines; `auth_vectors.py check
PROTOCOL.md` compares them with the block in the document's "Test vectors"
section and exits 1 on any difference.
"""
import base64
import hashlib
import re
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
import nacl.bindings as nb
import nacl.signing

PIECE = 1 << 20


def aead_tag(key, index, seq, ad):
    """The 16-byte tag of AES-256-GCM with an empty plaintext and ad as additional data, nonce
    u32le(index) || u64le(seq), under BLAKE2b-256 keyed with key over "emad-mac" || u64le(seq)."""
    kseq = hashlib.blake2b(b"emad-mac" + struct.pack("<Q", seq), key=key, digest_size=32).digest()
    return AESGCM(kseq).encrypt(struct.pack("<IQ", index, seq), b"", ad)


def frame_tag(key, session, seq, body):
    header = b"\xc1EMA" + struct.pack("<QQ", session, seq)
    tags = b"".join(aead_tag(key, i, seq, body[off:off + PIECE])
                    for i, off in enumerate(range(0, len(body), PIECE)))
    return aead_tag(key, 0xFFFFFFFF, seq, header + tags)


def vectors():
    seed = bytes(range(0, 32))
    client_eph_seed = bytes(range(32, 64))
    server_eph_seed = bytes(range(64, 96))
    challenge = bytes(range(96, 128))
    hs = 0x0123456789ABCDEF
    user = b"alice"
    session = 0x1122334455667788
    signer = nacl.signing.SigningKey(seed)
    pk = bytes(signer.verify_key)
    cpk, csk = nb.crypto_kx_seed_keypair(client_eph_seed)
    spk, ssk = nb.crypto_kx_seed_keypair(server_eph_seed)
    transcript = (b"emad-auth-v1" + bytes([len(user)]) + user + cpk + spk + challenge
                  + struct.pack("<Q", hs))
    sig = signer.sign(transcript).signature
    client_rx, client_tx = nb.crypto_kx_client_session_keys(cpk, csk, spk)
    server_rx, server_tx = nb.crypto_kx_server_session_keys(spk, ssk, cpk)
    assert client_tx == server_rx and client_rx == server_tx
    hello = bytes.fromhex("82a17601a26f70a568656c6c6f")  # {"v": 1, "op": "hello"}
    big = bytes(j % 251 for j in range(5 * PIECE // 2))
    v = {
        "user": user.hex(),
        "seed": seed.hex(),
        "public_key": pk.hex(),
        "client_eph_seed": client_eph_seed.hex(),
        "client_eph": cpk.hex(),
        "server_eph_seed": server_eph_seed.hex(),
        "server_eph": spk.hex(),
        "challenge": challenge.hex(),
        "hs": "%016x" % hs,
        "transcript": transcript.hex(),
        "signature": sig.hex(),
        "client_tx": client_tx.hex(),
        "server_tx": server_tx.hex(),
        "session": "%016x" % session,
        "hello_body": hello.hex(),
        "hello_request_tag": frame_tag(client_tx, session, 1, hello).hex(),
        "hello_reply_tag": frame_tag(server_tx, session, 1, hello).hex(),
        "big_request_tag": frame_tag(client_tx, session, 2, big).hex(),
        "token_hash": hashlib.blake2b(b"secret-token", digest_size=32).hexdigest(),
    }
    text = {
        "key_file": "emad-key-v1 alice " + base64.b64encode(seed).decode(),
        "public_key_text": "ed25519:" + base64.b64encode(pk).decode(),
    }
    return v, text


def main():
    v, text = vectors()
    lines = ["%s = %s" % kv for kv in v.items()] + ["%s = %s" % kv for kv in text.items()]
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        doc = open(sys.argv[2], encoding="utf-8").read()
        m = re.search(r"<!-- auth-vectors -->\n```\n(.*?)```", doc, re.S)
        if not m:
            print("no auth-vectors block in", sys.argv[2])
            return 1
        got = [ln.strip() for ln in m.group(1).splitlines() if ln.strip()]
        if got != lines:
            for a, b in zip(lines, got):
                if a != b:
                    print("expected:", a, "\ndocument:", b)
            print("the test vectors in %s differ (%d vs %d lines)" % (sys.argv[2], len(lines), len(got)))
            return 1
        print("auth vectors: %d values match" % len(lines))
        return 0
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
