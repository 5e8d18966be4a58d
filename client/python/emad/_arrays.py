"""Tensor values on the way in and out: numpy and torch dtypes, push entries, staging.

A push is built from :class:`Entry` objects, one per tensor: name, kind,
emad dtype name, shape, and a *source* that owns the bytes (a C-contiguous
little-endian numpy array, or a contiguous torch tensor on any device).
:meth:`Entry.pointer` gives the address libemad reads for a CPU source;
:class:`Staging` copies sources into one reusable host buffer (pinned when a
source is on a GPU) for asynchronous pushes and device tensors.

torch is imported only when a torch tensor shows up; numpy is required.
"""

import sys

import numpy as np

from ._lib import DTYPE_SIZES, ERRORS, FLOAT_DTYPES, MAX_NDIM, Error

try:  # numpy has no bfloat16; ml_dtypes adds one if installed
    import ml_dtypes as _ml_dtypes

    BFLOAT16 = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the machine
    BFLOAT16 = None

__all__ = ["Typed", "Shard", "Entry", "Staging", "numpy_dtype", "torch_dtype", "emad_dtype"]

_NP_BY_NAME = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("<u1"),
    "I8": np.dtype("<i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
}
_NAME_BY_NP = {(v.kind, v.itemsize): k for k, v in _NP_BY_NAME.items()}

_ALIGN = 64  # staging offsets: element-aligned for every dtype, cache-line aligned


def _fail(code, message):
    raise Error(ERRORS[code], message)


def numpy_dtype(name):
    """The numpy dtype that holds emad dtype `name` (BF16: ml_dtypes.bfloat16 or uint16)."""
    if name == "BF16":
        return BFLOAT16 if BFLOAT16 is not None else np.dtype("<u2")
    return _NP_BY_NAME[name]


def _is_torch(x):
    """True if x is a torch.Tensor (without importing torch)."""
    mod = sys.modules.get("torch")
    return mod is not None and isinstance(x, mod.Tensor)


_TORCH_TABLES = None


def _torch_tables():
    """(emad name -> torch dtype, torch dtype -> emad name), built once (every push entry asks)."""
    global _TORCH_TABLES
    if _TORCH_TABLES is None:
        _TORCH_TABLES = _build_torch_tables()
    return _TORCH_TABLES


def _build_torch_tables():
    import torch

    by_name = {
        "BOOL": torch.bool,
        "U8": torch.uint8,
        "I8": torch.int8,
        "I16": torch.int16,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "I32": torch.int32,
        "F32": torch.float32,
        "F64": torch.float64,
        "I64": torch.int64,
        # torch 1.x has no unsigned 16/32/64-bit types: same-width signed views
        "U16": torch.int16,
        "U32": torch.int32,
        "U64": torch.int64,
    }
    by_torch = {v: k for k, v in by_name.items() if not k.startswith("U") or k == "U8"}
    return by_name, by_torch


def torch_dtype(name):
    """The torch dtype for emad dtype `name` (U16/U32/U64 as the signed type of the same width)."""
    return _torch_tables()[0][name]


def emad_dtype(dtype):
    """The emad dtype name for a name ("F32", "bf16"), a numpy dtype or a torch dtype."""
    if isinstance(dtype, str):
        up = dtype.upper()
        if up in DTYPE_SIZES:
            return up
        aliases = {"FLOAT32": "F32", "FLOAT16": "F16", "BFLOAT16": "BF16", "FLOAT64": "F64",
                   "HALF": "F16", "FLOAT": "F32", "DOUBLE": "F64"}
        if up in aliases:
            return aliases[up]
        _fail("EMAD_EDTYPE", "unknown dtype %r" % dtype)
    mod = sys.modules.get("torch")
    if mod is not None and isinstance(dtype, mod.dtype):
        by_torch = _torch_tables()[1]
        if dtype not in by_torch:
            _fail("EMAD_EDTYPE", "torch dtype %s has no emad equivalent" % dtype)
        return by_torch[dtype]
    try:
        d = np.dtype(dtype)
    except TypeError:
        _fail("EMAD_EDTYPE", "unknown dtype %r" % (dtype,))
    if BFLOAT16 is not None and d == BFLOAT16:
        return "BF16"
    name = _NAME_BY_NP.get((d.kind, d.itemsize))
    if name is None:
        _fail("EMAD_EDTYPE", "numpy dtype %s has no emad equivalent" % d)
    return name


class Typed:
    """An array whose bytes are sent as emad dtype ``dtype``.

    For dtypes numpy lacks: ``Typed(bits, "BF16")`` pushes a uint16 (or int16)
    array of bfloat16 bit patterns as BF16. The array's itemsize must match
    the dtype's.
    """

    __slots__ = ("array", "dtype")

    def __init__(self, array, dtype):
        self.array = array
        self.dtype = emad_dtype(dtype)


class Shard:
    """A flat element slice ``[offset, offset + data.size)`` of a tensor of full shape ``shape``.

    Used by sharded writers (FSDP, ZeRO-3): each writer pushes its own part
    of every tensor; the parts of all writers must cover the tensor without
    overlapping. ``data`` may be a numpy array, a torch tensor or a
    :class:`Typed`; its shape is ignored (only its elements count).
    """

    __slots__ = ("data", "shape", "offset")

    def __init__(self, data, shape, offset):
        self.data = data
        self.shape = tuple(int(s) for s in shape)
        self.offset = int(offset)


class Entry:
    """One tensor of a push: metadata plus a source holding its bytes."""

    __slots__ = ("name", "bname", "kind", "dtype", "shape", "nbytes", "offset", "count", "src",
                 "ptr")

    def __init__(self, name, kind, dtype, shape, src, nbytes, offset=0, count=0):
        self.name = name
        self.bname = name.encode("utf-8")
        self.kind = kind
        self.dtype = dtype
        self.shape = tuple(shape)
        self.src = src
        self.nbytes = nbytes
        self.offset = offset
        self.count = count
        self.ptr = None

    @property
    def on_host(self):
        """True if libemad can read the source's memory directly."""
        return not _is_torch(self.src) or self.src.device.type == "cpu"

    def pointer(self):
        """Address of the bytes libemad reads (a staged copy if one was made)."""
        if self.ptr is not None:
            return self.ptr
        if self.nbytes == 0:
            return None
        if _is_torch(self.src):
            return self.src.data_ptr()
        return self.src.ctypes.data


def _from_numpy(name, value, dtype=None):
    """(dtype name, C-contiguous little-endian array) for a numpy-like value."""
    arr = np.asarray(value)
    if dtype is None:
        dtype = emad_dtype(arr.dtype)
    elif arr.dtype.itemsize != DTYPE_SIZES[dtype]:
        _fail("EMAD_EDTYPE", "tensor '%s': %s array of itemsize %d cannot be sent as %s"
              % (name, arr.dtype, arr.dtype.itemsize, dtype))
    want = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    if not arr.flags.c_contiguous or want != arr.dtype:
        arr = np.array(arr, dtype=want, order="C", copy=True)
    return dtype, arr


def _from_torch(name, t, dtype=None):
    """(dtype name, contiguous detached tensor) for a torch tensor."""
    if t.is_sparse or t.is_quantized or t.is_complex():
        _fail("EMAD_EDTYPE", "tensor '%s': %s tensors are not supported" % (name, t.dtype))
    by_torch = _torch_tables()[1]
    if t.dtype not in by_torch:
        _fail("EMAD_EDTYPE", "tensor '%s': torch dtype %s has no emad equivalent" % (name, t.dtype))
    if dtype is not None and t.element_size() != DTYPE_SIZES[dtype]:
        _fail("EMAD_EDTYPE", "tensor '%s': %s tensor cannot be sent as %s" % (name, t.dtype, dtype))
    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    return dtype or by_torch[t.dtype], t


# Native little-endian numpy dtypes sent as they are: make_entry's fast path.
_NAME_BY_PLAIN = {v: k for k, v in _NP_BY_NAME.items()} if sys.byteorder == "little" else {}


def make_entry(name, kind, value):
    """An :class:`Entry` for a numpy array, torch tensor, :class:`Typed` or :class:`Shard`."""
    if type(value) is np.ndarray and type(name) is str and name:
        # The common case (a C-contiguous array in a plain dtype) without the general checks.
        dtype = _NAME_BY_PLAIN.get(value.dtype)
        if (dtype is not None and value.flags.c_contiguous and value.ndim <= MAX_NDIM
                and (kind != 0 or dtype in FLOAT_DTYPES)):
            return Entry(name, kind, dtype, value.shape, value, value.nbytes)
    if not isinstance(name, str) or not name:
        _fail("EMAD_ENAME", "tensor names must be non-empty strings, not %r" % (name,))
    shard = None
    if isinstance(value, Shard):
        shard, value = value, value.data
    dtype = None
    if isinstance(value, Typed):
        dtype, value = value.dtype, value.array
    if _is_torch(value):
        dtype, src = _from_torch(name, value, dtype)
        shape, numel = tuple(src.shape), src.numel()
    else:
        dtype, src = _from_numpy(name, value, dtype)
        shape, numel = src.shape, src.size
    if kind == 0 and dtype not in FLOAT_DTYPES:
        _fail("EMAD_EDTYPE", "tensor '%s': a param must be F32, F16, BF16 or F64, not %s"
              % (name, dtype))
    nbytes = numel * DTYPE_SIZES[dtype]
    if shard is None:
        if len(shape) > MAX_NDIM:
            _fail("EMAD_ELIMIT", "tensor '%s': %d dimensions, at most %d" % (name, len(shape),
                                                                           MAX_NDIM))
        return Entry(name, kind, dtype, shape, src, nbytes)
    if numel == 0:
        _fail("EMAD_EINVAL", "tensor '%s': an empty shard" % name)
    return Entry(name, kind, dtype, shard.shape, src, nbytes, shard.offset, numel)


class Staging:
    """A reusable host buffer holding copies of a push's tensors.

    :meth:`stage` copies every entry's source into the buffer (one copy,
    device-to-host for GPU tensors; the buffer is pinned then) and points the
    entries at the copies. The buffer grows when a push needs more room and
    is reused otherwise, so a training loop allocates it once.
    """

    def __init__(self):
        self.np = None  # uint8 numpy view of the buffer
        self.torch = None  # the same memory as a torch uint8 tensor, if torch is used
        self.pinned = False

    def _ensure(self, size, want_torch, want_pinned):
        have = 0 if self.np is None else self.np.size
        if (have >= size and (self.torch is not None or not want_torch)
                and (self.pinned or not want_pinned)):
            return
        size = max(size, have)
        self.np = self.torch = None
        if want_torch:
            import torch

            self.torch = torch.empty(size, dtype=torch.uint8, pin_memory=want_pinned)
            self.pinned = want_pinned
            self.np = self.torch.numpy()
        else:
            self.np = np.empty(size, dtype=np.uint8)
            self.pinned = False

    def stage(self, entries):
        """Copy the entries' bytes into the buffer and point them there."""
        offsets, total = [], 0
        any_torch = False
        devices = set()  # CUDA devices to wait for
        for e in entries:
            offsets.append(total)
            total += (e.nbytes + _ALIGN - 1) // _ALIGN * _ALIGN
            if _is_torch(e.src):
                any_torch = True
                if e.src.device.type == "cuda":
                    devices.add(e.src.device)
        self._ensure(max(total, _ALIGN), any_torch, bool(devices))
        base = self.np.ctypes.data
        for e, off in zip(entries, offsets):
            e.ptr = base + off if e.nbytes else None
            if e.nbytes == 0:
                continue
            if _is_torch(e.src):
                dst = self.torch[off:off + e.nbytes].view(e.src.dtype).view(e.src.shape)
                dst.copy_(e.src, non_blocking=self.pinned)
            else:
                dst = self.np[off:off + e.nbytes].view(e.src.dtype).reshape(e.src.shape)
                np.copyto(dst, e.src, casting="no")
        if devices:
            import torch

            for d in devices:  # the copies were queued on each device's current stream
                torch.cuda.current_stream(d).synchronize()
        for e in entries:
            e.src = None  # the copy is what gets sent: drop the reference to the original


def to_torch(arr, dtype):
    """A torch tensor sharing arr's memory, with the torch dtype for emad dtype `dtype`."""
    import torch

    if dtype == "BF16":
        return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    if dtype in ("U16", "U32", "U64"):
        return torch.from_numpy(arr.view(arr.dtype.str.replace("u", "i")))
    return torch.from_numpy(arr)
