#!/usr/bin/python3
"""safetensors_np.py - a numpy-only safetensors reader and writer, written
from the format description (huggingface/safetensors README) and sharing no
code with src/common/safetensors.c, so the tests can cross-check the two.

As a module (other tests import it):

    save(path, tensors, metadata=None, dtypes=None)
        tensors: dict name -> numpy array or BF16. dtypes: optional dict
        name -> safetensors dtype name overriding the one derived from the
        array (e.g. {"w": "BF16"} for a uint16 array of bfloat16 bits).
        Writes metadata first, tensors ordered by itemsize (largest first)
        then name, header padded with spaces to a multiple of 8.
    load(path) -> (tensors, metadata)
        Enforces every rule of the reference reader and raises
        FormatError otherwise. BF16 tensors come back as BF16 objects.
    BF16: bfloat16 tensor as uint16 bit patterns (.bits), with
        BF16.from_float32(x) (round to nearest even) and .to_float32().

Command line (used by tests/check_safetensors.c):

    safetensors_np.py dump [--layout] FILE
        Prints "meta KEY VALUE" lines sorted by key, then
        "tensor NAME DTYPE [D0,D1,...] HEX" lines sorted by name (HEX: the
        tensor's bytes, "-" when empty). With --layout also checks the
        writer conventions (header length a multiple of 8, metadata first,
        header and data in the order itemsize descending then name, every
        tensor aligned to its itemsize) and prints "layout ok".
    safetensors_np.py sample aligned|unaligned FILE
        Writes the sample file described in sample_tensors(): "aligned"
        with save(); "unaligned" with the header in name order, the data in
        reverse name order and no header padding (still a valid file).

Exit status 0 on success, 1 on a malformed file (message on stderr),
2 on bad arguments.
"""

import json
import struct
import sys

import numpy as np

MAX_HEADER = 100_000_000

# safetensors name -> little-endian numpy dtype (BF16 is carried as uint16 bits).
DTYPES = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
}

# numpy dtype kind+itemsize -> safetensors name (BF16 only through BF16 or dtypes=).
NAMES = {
    ("b", 1): "BOOL",
    ("u", 1): "U8",
    ("i", 1): "I8",
    ("i", 2): "I16",
    ("u", 2): "U16",
    ("f", 2): "F16",
    ("i", 4): "I32",
    ("u", 4): "U32",
    ("f", 4): "F32",
    ("f", 8): "F64",
    ("i", 8): "I64",
    ("u", 8): "U64",
}


class FormatError(ValueError):
    """A file that breaks the safetensors format."""


class BF16:
    """A bfloat16 tensor held as its uint16 bit patterns."""

    def __init__(self, bits):
        """Wrap an array of uint16 bit patterns (copied to a C-ordered array)."""
        self.bits = np.array(bits, dtype=np.uint16, order="C")

    @property
    def shape(self):
        """Shape of the tensor."""
        return self.bits.shape

    @classmethod
    def from_float32(cls, x):
        """Round float32 values to bfloat16, nearest even (NaN stays NaN)."""
        u = np.array(x, dtype=np.float32, order="C").view(np.uint32)
        upper = u >> np.uint32(16)
        lower = u & np.uint32(0xFFFF)
        odd = (upper & np.uint32(1)) == np.uint32(1)
        up = (lower > np.uint32(0x8000)) | ((lower == np.uint32(0x8000)) & odd)
        r = upper + up.astype(np.uint32)
        nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
        r = np.where(nan, upper | np.uint32(0x40), r)
        return cls(r.astype(np.uint16))

    def to_float32(self):
        """Exact float32 values of the bit patterns."""
        return (self.bits.astype(np.uint32) << np.uint32(16)).view(np.float32)

    def __eq__(self, other):
        """Equal when the other is a BF16 with the same shape and bits."""
        return isinstance(other, BF16) and np.array_equal(self.bits, other.bits)

    def __repr__(self):
        """Show the bits."""
        return "BF16(%r)" % (self.bits,)


def _as_entry(name, value, dtypes):
    """(dtype name, little-endian C-ordered array) for one tensor to write."""
    if isinstance(value, BF16):
        dt, arr = "BF16", value.bits
    else:
        arr = np.asarray(value)
        dt = (dtypes or {}).get(name) or NAMES.get((arr.dtype.kind, arr.dtype.itemsize))
        if dt is None:
            raise ValueError(
                "tensor %r: numpy dtype %s has no safetensors name" % (name, arr.dtype)
            )
    want = DTYPES[dt]
    if arr.dtype.itemsize != want.itemsize:
        raise ValueError("tensor %r: %s needs itemsize %d" % (name, dt, want.itemsize))
    return dt, np.array(arr, dtype=want, order="C")


def _write(path, entries, metadata, header_order, pad):
    """Write entries (list of (name, dtype, array)) in that data order; the
    header lists metadata first, then the tensors in header_order (names)."""
    offsets, pos = {}, 0
    for name, _dt, arr in entries:
        offsets[name] = (pos, pos + arr.nbytes)
        pos += arr.nbytes
    info = {name: (dt, arr.shape) for name, dt, arr in entries}
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in header_order:
        dt, shape = info[name]
        header[name] = {
            "dtype": dt,
            "shape": [int(d) for d in shape],
            "data_offsets": list(offsets[name]),
        }
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if pad:
        text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _name, _dt, arr in entries:
            f.write(arr.tobytes())


def save(path, tensors, metadata=None, dtypes=None):
    """Write a dict of name -> array (or BF16) as a safetensors file."""
    if "__metadata__" in tensors:
        raise ValueError("'__metadata__' is not a tensor name")
    entries = [(name,) + _as_entry(name, v, dtypes) for name, v in tensors.items()]
    entries.sort(key=lambda e: (-e[2].dtype.itemsize, e[0].encode("utf-8")))
    _write(path, entries, metadata, [e[0] for e in entries], pad=True)


def _no_duplicates(pairs):
    """json object_pairs_hook that rejects a key seen twice."""
    d = {}
    for k, v in pairs:
        if k in d:
            raise FormatError("duplicate key %r in header" % k)
        d[k] = v
    return d


def _is_uint(x):
    """True for a non-negative JSON integer (bool excluded)."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def parse(data):
    """Parse a whole file image (bytes). Returns (header_len, header, entries)
    where header is the decoded JSON (a dict in file order) and entries a
    list of (name, dtype, shape, begin, end) sorted by offsets."""
    if len(data) < 8:
        raise FormatError("file is %d bytes, too short for the header length" % len(data))
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER:
        raise FormatError("header length %d exceeds %d" % (n, MAX_HEADER))
    if n > len(data) - 8:
        raise FormatError("header length %d exceeds the %d bytes after it" % (n, len(data) - 8))
    raw = data[8 : 8 + n]
    if not raw.startswith(b"{"):
        raise FormatError("header does not start with '{'")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError("header is not valid JSON: %s" % e) from None
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object")
    entries = []
    for name, e in header.items():
        if name == "__metadata__":
            if not isinstance(e, dict) or not all(isinstance(v, str) for v in e.values()):
                raise FormatError("__metadata__ must map strings to strings")
            continue
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(
                "tensor %r: entry must have exactly dtype, shape, data_offsets" % name
            )
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dt not in DTYPES:
            raise FormatError("tensor %r: unknown dtype %r" % (name, dt))
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise FormatError("tensor %r: bad shape %r" % (name, shape))
        if not isinstance(offs, list) or len(offs) != 2 or not all(_is_uint(o) for o in offs):
            raise FormatError("tensor %r: bad data_offsets %r" % (name, offs))
        numel = 1
        for d in shape:
            numel *= d
        if offs[1] < offs[0] or offs[1] - offs[0] != numel * DTYPES[dt].itemsize:
            raise FormatError(
                "tensor %r: data_offsets %r do not fit shape %r" % (name, offs, shape)
            )
        entries.append((name, dt, tuple(shape), offs[0], offs[1]))
    entries.sort(key=lambda t: (t[3], t[4]))
    pos = 0
    for name, _dt, _shape, begin, end in entries:
        if begin != pos:
            raise FormatError("tensor %r: begins at %d, expected %d" % (name, begin, pos))
        pos = end
    if 8 + n + pos != len(data):
        raise FormatError("file is %d bytes, expected %d" % (len(data), 8 + n + pos))
    return n, header, entries


def load(path):
    """Read a safetensors file: (dict name -> array or BF16, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    n, header, entries = parse(data)
    base = 8 + n
    out = {}
    for name, dt, shape, begin, end in entries:
        arr = np.frombuffer(data, DTYPES[dt], (end - begin) // DTYPES[dt].itemsize, base + begin)
        arr = arr.reshape(shape).copy()
        out[name] = BF16(arr) if dt == "BF16" else arr
    return out, dict(header.get("__metadata__", {}))


def check_layout(data):
    """Raise FormatError unless the file follows the writer conventions."""
    n, header, entries = parse(data)
    if n % 8 != 0:
        raise FormatError("header length %d is not a multiple of 8" % n)
    names = list(header)
    if "__metadata__" in header and names[0] != "__metadata__":
        raise FormatError("__metadata__ is not the first key")
    tensors = [k for k in names if k != "__metadata__"]
    size = {name: DTYPES[dt].itemsize for name, dt, _s, _b, _e in entries}
    want = sorted(tensors, key=lambda k: (-size[k], k.encode("utf-8")))
    if tensors != want:
        raise FormatError("header order %r, expected %r" % (tensors, want))
    by_offset = [e[0] for e in entries]
    if by_offset != want:
        raise FormatError("data order %r, expected %r" % (by_offset, want))
    for name, dt, _shape, begin, _end in entries:
        if (8 + n + begin) % DTYPES[dt].itemsize != 0:
            raise FormatError("tensor %r at file offset %d is not aligned" % (name, 8 + n + begin))


def sample_tensors():
    """The sample tensors: one per dtype (name "t.<DTYPE>") plus a scalar and
    two empty tensors. Element k (flat index) of an integer tensor of B bits
    has bit pattern (37 * k + 11) mod 2^B; of BOOL, k % 3 == 0; of
    F16/F32/F64, (k - 5) * 0.25; of BF16, the upper 16 bits of the float32
    (k - 5) * 0.25. Metadata: format=pt, source=numpy."""
    shapes = {
        "BOOL": (3,), "U8": (2, 3), "I8": (5,), "I16": (2, 2), "U16": (7,), "F16": (3, 1),
        "BF16": (4,), "I32": (3,), "U32": (2,), "F32": (2, 3), "F64": (3,), "I64": (2,),
        "U64": (1, 2),
    }
    out = {}
    for dt, shape in shapes.items():
        k = np.arange(int(np.prod(shape)), dtype=np.uint64)
        if dt == "BOOL":
            v = (k % 3) == 0
        elif dt in ("F16", "F32", "F64"):
            v = ((k.astype(np.float64) - 5) * 0.25).astype(DTYPES[dt])
        elif dt == "BF16":
            f = ((k.astype(np.float64) - 5) * 0.25).astype(np.float32)
            v = BF16((f.view(np.uint32) >> np.uint32(16)).astype(np.uint16))
        else:
            bits = DTYPES[dt].itemsize * 8
            pat = (k * np.uint64(37) + np.uint64(11)) & np.uint64((1 << bits) - 1)
            v = pat.astype(DTYPES[dt].str.replace("i", "u")).view(DTYPES[dt])
        if isinstance(v, BF16):
            v = BF16(v.bits.reshape(shape))
        else:
            v = v.reshape(shape)
        out["t." + dt] = v
    out["scalar"] = np.array(-1.25, dtype=np.float32)
    out["empty"] = np.zeros((0, 4), dtype=np.float32)
    out["empty.i64"] = np.zeros((0,), dtype=np.int64)
    return out, {"format": "pt", "source": "numpy"}


def cmd_sample(argv):
    """The `sample` subcommand."""
    if len(argv) != 2 or argv[0] not in ("aligned", "unaligned"):
        usage()
    tensors, meta = sample_tensors()
    if argv[0] == "aligned":
        save(argv[1], tensors, meta)
        return
    names = sorted(tensors)
    entries = [(name,) + _as_entry(name, tensors[name], None) for name in reversed(names)]
    _write(argv[1], entries, meta, names, pad=False)


def cmd_dump(argv):
    """The `dump` subcommand."""
    layout = "--layout" in argv
    files = [a for a in argv if a != "--layout"]
    if len(files) != 1:
        usage()
    with open(files[0], "rb") as f:
        data = f.read()
    _n, header, entries = parse(data)
    tensors, meta = load(files[0])
    for k in sorted(meta):
        print("meta %s %s" % (k, meta[k]))
    dtype_of = {e[0]: e[1] for e in entries}
    for name in sorted(tensors):
        v = tensors[name]
        arr = v.bits if isinstance(v, BF16) else v
        hexdata = arr.tobytes().hex() or "-"
        shape = "[" + ",".join(str(d) for d in arr.shape) + "]"
        print("tensor %s %s %s %s" % (name, dtype_of[name], shape, hexdata))
    if layout:
        check_layout(data)
        print("layout ok")


def usage():
    """Print usage and exit with status 2."""
    sys.stderr.write(
        "usage: safetensors_np.py dump [--layout] FILE\n"
        "       safetensors_np.py sample aligned|unaligned FILE\n"
    )
    sys.exit(2)


def main():
    """Dispatch on the subcommand."""
    if len(sys.argv) < 2:
        usage()
    try:
        if sys.argv[1] == "dump":
            cmd_dump(sys.argv[2:])
        elif sys.argv[1] == "sample":
            cmd_sample(sys.argv[2:])
        else:
            usage()
    except FormatError as e:
        sys.stderr.write("safetensors_np.py: %s\n" % e)
        sys.exit(1)


if __name__ == "__main__":
    main()
