"""Minimal msgpack encoder and a complete decoder, for the tests that talk to emad with plain
sockets."""
import struct


def pack(o):
    """Encode o: dict, list, str (< 256 bytes), bytes (< 256), bool, non-negative int."""
    if isinstance(o, bool):
        return b"\xc3" if o else b"\xc2"
    if isinstance(o, int):
        return bytes([o]) if o < 128 else b"\xcf" + struct.pack(">Q", o)
    if isinstance(o, str):
        b = o.encode()
        return (bytes([0xA0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b
    if isinstance(o, bytes):
        return b"\xc4" + bytes([len(o)]) + o
    if isinstance(o, list):
        return bytes([0x90 | len(o)]) + b"".join(pack(x) for x in o)
    if isinstance(o, dict):
        return bytes([0x80 | len(o)]) + b"".join(pack(k) + pack(v) for k, v in o.items())
    raise TypeError(o)


_FIXED = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h",
          0xD2: ">i", 0xD3: ">q", 0xCA: ">f", 0xCB: ">d"}
_LEN = {0xC4: (">B", "bin"), 0xC5: (">H", "bin"), 0xC6: (">I", "bin"),
        0xD9: (">B", "str"), 0xDA: (">H", "str"), 0xDB: (">I", "str"),
        0xDC: (">H", "arr"), 0xDD: (">I", "arr"), 0xDE: (">H", "map"), 0xDF: (">I", "map")}


def unpack(data):
    """Decode one msgpack object that is the whole of data (str as str, bin as bytes)."""
    o, off = _unpack(memoryview(data), 0)
    assert off == len(data), "trailing bytes after a reply"
    return o


def unpack_from(data, off=0):
    """Decode the msgpack object at data[off:]: (object, offset after it)."""
    return _unpack(memoryview(data), off)


def _unpack(d, off):
    b = d[off]
    off += 1
    if b < 0x80:
        return b, off
    if b >= 0xE0:
        return b - 256, off
    if 0x80 <= b <= 0x8F:
        return _container(d, off, b & 15, "map")
    if 0x90 <= b <= 0x9F:
        return _container(d, off, b & 15, "arr")
    if 0xA0 <= b <= 0xBF:
        n = b & 31
        return bytes(d[off:off + n]).decode("utf-8", "surrogateescape"), off + n
    if b in (0xC0, 0xC2, 0xC3):
        return {0xC0: None, 0xC2: False, 0xC3: True}[b], off
    if b in _FIXED:
        fmt = _FIXED[b]
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, d[off:off + size])[0], off + size
    if b not in _LEN:
        raise ValueError("msgpack type 0x%02x" % b)
    fmt, kind = _LEN[b]
    size = struct.calcsize(fmt)
    n = struct.unpack(fmt, d[off:off + size])[0]
    off += size
    if kind == "bin":
        return bytes(d[off:off + n]), off + n
    if kind == "str":
        return bytes(d[off:off + n]).decode("utf-8", "surrogateescape"), off + n
    return _container(d, off, n, kind)


def _container(d, off, n, kind):
    if kind == "arr":
        out = []
        for _ in range(n):
            v, off = _unpack(d, off)
            out.append(v)
        return out, off
    out = {}
    for _ in range(n):
        k, off = _unpack(d, off)
        v, off = _unpack(d, off)
        out[k] = v
    return out, off
