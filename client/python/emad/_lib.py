"""ctypes binding of libemad (include/emad.h): structures, library loading, errors.

This module owns the one loaded ``libemad`` (:func:`lib`), the ctypes mirrors
of the public structs (field for field, in header order), the error class and
the error codes (as the library names them). Everything above it (:mod:`emad._client`) calls the C library
only through the :class:`Lib` object returned by :func:`lib`.

Library search order (the first that exists and loads wins):

1. ``$EMAD_LIBRARY`` (a path to ``libemad.so``); if set, nothing else is
   tried, so a wrong value is an error, not a silent fallback;
2. the libtool build tree this package sits in
   (``<top_builddir>/.libs/libemad.so`` for ``client/python/emad``);
3. the ``libdir`` recorded at ``make install`` time (``emad/_paths.py``);
4. the ``libdir`` of ``pkg-config libemad`` (``PKG_CONFIG_PATH`` is honoured),
   for a package installed by pip next to a libemad installed anywhere;
5. ``<sys.prefix>/lib`` (libemad configured with ``--prefix`` of the venv);
6. ``libemad.so.0`` through the dynamic loader's own search path
   (``ldconfig``, ``LD_LIBRARY_PATH``).

Symbols added after 0.1.0's core API (model configuration, pull options,
writers) are looked up lazily: a library without them still serves the core
calls, and a call that needs one raises :class:`Error` naming the symbol.
"""

import collections.abc
import ctypes
import os
import subprocess
import sys
import threading

__all__ = [
    "Error",
    "LibraryError",
    "lib",
    "library_path",
    "EXPECTED_VERSION",
]

#: Library versions this package accepts: the same major.minor.
EXPECTED_VERSION = "0.1"

# ---- constants from include/emad.h -------------------------------------------------------------

MAX_NDIM = 16
MAX_NAME_BYTES = 1024
MAX_MODEL_NAME_BYTES = 128
DEFAULT_DECAY = 0.999
MAX_DECAYS = 8
MAX_GLOBS = 32
MAX_WRITERS = 1024
DEFAULT_URL = "tcp://127.0.0.1:7470"
CLUSTER_MAX_URL_BYTES = 255

#: Every error code lies in 1001..1199 (EMAD_ERRNO_MAP in include/emad.h); the
#: library names the ones it has (emad_errname), read once when it loads.
_CODE_SPAN = range(1001, 1200)

PARAM = 0
BUFFER = 1
KIND_NAMES = {PARAM: "param", BUFFER: "buffer"}

#: dtype enum values, by safetensors name.
DTYPES = {
    "BOOL": 1,
    "U8": 2,
    "I8": 3,
    "I16": 4,
    "U16": 5,
    "F16": 6,
    "BF16": 7,
    "I32": 8,
    "U32": 9,
    "F32": 10,
    "F64": 11,
    "I64": 12,
    "U64": 13,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8,
}
FLOAT_DTYPES = frozenset(["F16", "BF16", "F32", "F64"])


# ---- errors ------------------------------------------------------------------------------------


class _Errors(collections.abc.Mapping):
    """``emad.ERRORS``: ``{"EMAD_ESHAPE": -1007, ...}`` as the library names its codes.

    Reading it loads libemad (:func:`lib`), so that importing the package
    never needs the library.
    """

    def __getitem__(self, name):
        return lib().errors[name]

    def __iter__(self):
        return iter(lib().errors)

    def __len__(self):
        return len(lib().errors)

    def __repr__(self):
        return repr(lib().errors)


#: Error codes (negative, as libemad returns them; the daemon sends -code), by name.
ERRORS = _Errors()


class Error(Exception):
    """Any failure reported by libemad or the daemon.

    Attributes:
        code: the negative libemad code (``emad.ESHAPE == -1007``; the daemon's
            wire code is ``-code``), or ``None`` for failures that have no code
            (e.g. the library could not be loaded).
        name: the code's symbolic name (``"EMAD_ESHAPE"``), or ``None``.
        message: the detailed message (for daemon errors, the daemon's own
            text, naming the tensor at fault).
    """

    def __init__(self, code, message):
        self.code = code
        self.name = lib().errnames.get(code) if code is not None else None
        self.message = message
        if self.name is not None:
            text = "%s (%s)" % (message, self.name)
        else:
            text = message
        super().__init__(text)


class LibraryError(Error, ImportError):
    """libemad could not be found or loaded, or is the wrong version.

    Also an :class:`ImportError`, so code that treats emad as optional can
    catch it as such. ``code`` is ``None``.
    """

    def __init__(self, message):
        Error.__init__(self, None, message)


# ---- structures (mirrors of include/emad.h, in header order) ----------------------------------


class Tensor(ctypes.Structure):
    """struct emad_tensor."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("kind", ctypes.c_int),
        ("dtype", ctypes.c_int),
        ("ndim", ctypes.c_uint32),
        ("shape", ctypes.c_uint64 * MAX_NDIM),
        ("data", ctypes.c_void_p),
        ("nbytes", ctypes.c_uint64),
        ("step", ctypes.c_uint64),
        ("offset", ctypes.c_uint64),
        ("count", ctypes.c_uint64),
    ]


def tensor_array(entries, data=True):
    """A ctypes emad_tensor array for push entries: names, dtypes and shapes, and with data
    their data pointers (which must stay valid), sizes and slices."""
    arr = (Tensor * max(1, len(entries)))()
    for t, e in zip(arr, entries):
        t.name = e.bname
        t.kind = e.kind
        t.dtype = DTYPES[e.dtype]
        t.ndim = len(e.shape)
        for i, s in enumerate(e.shape):
            t.shape[i] = s
        if data:
            t.data = e.pointer()
            t.nbytes = e.nbytes
            t.offset = e.offset
            t.count = e.count
    return arr


class Options(ctypes.Structure):
    """struct emad_options."""

    _fields_ = [
        ("timeout_ms", ctypes.c_int),
        ("connect_timeout_ms", ctypes.c_int),
        ("chunk_bytes", ctypes.c_uint64),
        ("max_reply_bytes", ctypes.c_uint64),
        ("user", ctypes.c_char_p),
        ("key_file", ctypes.c_char_p),
    ]


class PushResult(ctypes.Structure):
    """struct emad_push_result."""

    _fields_ = [
        ("applied", ctypes.c_uint64),
        ("stale", ctypes.c_uint64),
        ("step", ctypes.c_uint64),
        ("messages", ctypes.c_uint32),
        ("skipped", ctypes.c_uint64),
        ("ignored", ctypes.c_uint64),
        ("pending", ctypes.c_int),
    ]


class PullOptions(ctypes.Structure):
    """struct emad_pull_options."""

    _fields_ = [
        ("decay", ctypes.c_double),
        ("dtype", ctypes.c_int),
    ]


class ModelInfoC(ctypes.Structure):
    """struct emad_model_info."""

    _fields_ = [
        ("name", ctypes.c_char * (MAX_MODEL_NAME_BYTES + 1)),
        ("decay", ctypes.c_double),
        ("step", ctypes.c_uint64),
        ("ntensors", ctypes.c_uint64),
        ("shadow_bytes", ctypes.c_uint64),
        ("snapshot_step", ctypes.c_uint64),
        ("last_push_age_ms", ctypes.c_int64),
    ]


class Stat(ctypes.Structure):
    """struct emad_stat."""

    _fields_ = [
        ("name", ctypes.c_char * 64),
        ("value", ctypes.c_uint64),
    ]


class ModelConfig(ctypes.Structure):
    """struct emad_model_config."""

    _fields_ = [
        ("ndecays", ctypes.c_size_t),
        ("decays", ctypes.c_double * MAX_DECAYS),
        ("schedule", ctypes.c_int),
        ("update_after_step", ctypes.c_uint64),
        ("inv_gamma", ctypes.c_double),
        ("power", ctypes.c_double),
        ("min_decay", ctypes.c_double),
        ("step_gap", ctypes.c_int),
        ("buffers", ctypes.c_int),
        ("nonfinite", ctypes.c_int),
        ("writers", ctypes.c_uint32),
        ("ncopy", ctypes.c_size_t),
        ("copy", ctypes.c_char_p * MAX_GLOBS),
        ("nignore", ctypes.c_size_t),
        ("ignore", ctypes.c_char_p * MAX_GLOBS),
    ]


class Model(ctypes.Structure):
    """struct emad_model."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("step", ctypes.c_uint64),
        ("ntensors", ctypes.c_size_t),
        ("tensors", ctypes.POINTER(Tensor)),
    ]


class Piece(ctypes.Structure):
    """struct emad_piece."""

    _fields_ = [
        ("tensor", ctypes.c_size_t),
        ("shard", ctypes.c_uint32),
        ("whole", ctypes.c_int),
        ("offset", ctypes.c_uint64),
        ("count", ctypes.c_uint64),
    ]


class ReplicaStatus(ctypes.Structure):
    """struct emad_replica_status."""

    _fields_ = [
        ("shard", ctypes.c_uint32),
        ("replica", ctypes.c_uint32),
        ("url", ctypes.c_char * (CLUSTER_MAX_URL_BYTES + 1)),
        ("reachable", ctypes.c_int),
        ("error", ctypes.c_int),
        ("epoch", ctypes.c_uint64),
        ("has_model", ctypes.c_int),
        ("step", ctypes.c_uint64),
        ("lag", ctypes.c_uint64),
        ("resyncing", ctypes.c_int),
    ]


_P = ctypes.POINTER
_client_p = ctypes.c_void_p
_int = ctypes.c_int
_str = ctypes.c_char_p
_size = ctypes.c_size_t
_u64 = ctypes.c_uint64
_void = None

# name: (restype, argtypes). The core API every 0.1 library has.
_CORE = {
    "emad_version": (_str, []),
    "emad_strerror": (_str, [_int]),
    "emad_errname": (_str, [_int]),
    "emad_options_init": (_void, [_P(Options)]),
    "emad_connect": (_int, [_P(_client_p), _str, _P(Options)]),
    "emad_close": (_void, [_client_p]),
    "emad_last_error": (_str, [_client_p]),
    "emad_create": (_int, [_client_p, _str, ctypes.c_double, _int]),
    "emad_drop": (_int, [_client_p, _str]),
    "emad_push": (_int, [_client_p, _str, _u64, _P(Tensor), _size, _P(PushResult)]),
    "emad_pull": (_int, [_client_p, _str, _P(_str), _size, _P(_P(Model))]),
    "emad_pull_into": (_int, [_client_p, _str, _P(Tensor), _size, _P(_u64)]),
    "emad_model_free": (_void, [_P(Model)]),
    "emad_list": (_int, [_client_p, _P(_P(ModelInfoC)), _P(_size)]),
    "emad_describe": (_int, [_client_p, _str, _P(ModelInfoC), _P(_P(Tensor)), _P(_size)]),
    "emad_tensors_free": (_void, [_P(Tensor), _size]),
    "emad_stats": (_int, [_client_p, _P(_P(Stat)), _P(_size)]),
}

# Looked up on first use: newer API (configuration, pull options, writers).
_OPTIONAL = {
    "emad_server_max_message_bytes": (_u64, [_client_p]),
    "emad_config_init": (_void, [_P(ModelConfig)]),
    "emad_create_config": (_int, [_client_p, _str, _P(ModelConfig), _int]),
    "emad_configure": (_int, [_client_p, _str, _P(ModelConfig)]),
    "emad_get_config": (_int, [_client_p, _str, _P(ModelConfig)]),
    "emad_config_free": (_void, [_P(ModelConfig)]),
    "emad_schedule_name": (_str, [_int]),
    "emad_step_gap_name": (_str, [_int]),
    "emad_buffers_name": (_str, [_int]),
    "emad_nonfinite_name": (_str, [_int]),
    "emad_option_from_name": (_int, [_str, _str]),
    "emad_push_as": (_int, [_client_p, _str, _u64, ctypes.c_uint32, _P(Tensor), _size,
                            _P(PushResult)]),
    "emad_struct_size": (_size, [ctypes.c_char_p]),
    "emad_snapshot": (_int, [_client_p, _str, _P(_u64)]),
    "emad_pull_options_init": (_void, [_P(PullOptions)]),
    "emad_pull_ex": (_int, [_client_p, _str, _P(_str), _size, _P(PullOptions), _P(_P(Model))]),
    "emad_pull_into_ex": (_int, [_client_p, _str, _P(Tensor), _size, _P(PullOptions),
                                 _P(_u64)]),
    # Clusters (docs/CLUSTER.md).
    "emad_connect_cluster": (_int, [_P(_client_p), _str, _P(Options)]),
    "emad_cluster_check_map": (_int, [_str, ctypes.c_char_p, _size]),
    "emad_cluster_info": (_int, [_client_p, _P(ctypes.c_uint32), _P(ctypes.c_uint32), _P(_u64),
                                 _P(ctypes.c_uint32)]),
    "emad_cluster_status": (_int, [_client_p, _str, _P(_P(ReplicaStatus)), _P(_size)]),
    "emad_cluster_status_free": (_void, [_P(ReplicaStatus), _size]),
    "emad_cluster_plan": (_int, [_client_p, _P(Tensor), _size, _P(_P(Piece)), _P(_size)]),
    "emad_cluster_plan_shards": (_int, [ctypes.c_uint32, _P(Tensor), _size, _P(_P(Piece)),
                                        _P(_size)]),
    "emad_cluster_resync": (_int, [_client_p, _str, _P(_size)]),
    "emad_cluster_warnings": (_str, [_client_p]),
}


class Lib:
    """The loaded libemad. :meth:`fn` returns ``emad_<name>`` with its prototype set.

    ``path`` is the file that was loaded, ``version`` its emad_version().
    ``free`` is the C library's free() (for arrays libemad documents as
    malloc'd).
    """

    def __init__(self, cdll, path):
        self.cdll = cdll
        self.path = path
        self._lock = threading.Lock()
        self._fns = {}
        missing = [name for name in _CORE if not hasattr(cdll, name)]
        if missing:
            raise LibraryError(
                "%s lacks the emad symbols %s: not a libemad %s.x (set EMAD_LIBRARY to the "
                "libemad.so of this release)" % (path, ", ".join(missing), EXPECTED_VERSION))
        for name in _CORE:
            self.fn(name[len("emad_"):])
        self.version = self.fn("version")().decode()
        if ".".join(self.version.split(".")[:2]) != EXPECTED_VERSION:
            raise LibraryError(
                "%s is libemad %s; this Python package needs %s.x (set EMAD_LIBRARY to the "
                "matching libemad.so)" % (path, self.version, EXPECTED_VERSION))
        self._check_layout()
        # "EMAD_ESHAPE" by code and the code by name, for every code the library names.
        names = ((-n, self.fn("errname")(-n)) for n in _CODE_SPAN)
        self.errnames = {code: name.decode() for code, name in names if name}
        self.errors = {name: code for code, name in self.errnames.items()}
        # free() as the process resolves it (CDLL(None): the global scope), so that
        # it is the free() of the malloc() libemad called, also when an
        # allocator or a sanitizer runtime is preloaded; libc's own symbol would
        # not be.
        self.free = ctypes.CDLL(None).free
        self.free.restype = None
        self.free.argtypes = [ctypes.c_void_p]

    def _check_layout(self):
        """Compare every ctypes struct with the library's sizeof (emad_struct_size()).

        A mismatch means the package and the library come from different
        builds: calls would corrupt memory, so refuse to load.
        """
        size = self.fn("struct_size", required=False)
        if size is None:
            return
        structs = {"emad_tensor": Tensor, "emad_options": Options,
                   "emad_push_result": PushResult, "emad_pull_options": PullOptions,
                   "emad_model_info": ModelInfoC, "emad_stat": Stat,
                   "emad_model_config": ModelConfig, "emad_model": Model,
                   "emad_piece": Piece, "emad_replica_status": ReplicaStatus}
        # Structs a library does not name (0) are older than it or unused by it.
        optional = {"emad_piece", "emad_replica_status"}
        for cname, py in structs.items():
            want = size(cname.encode())
            if want == 0 and cname in optional:
                continue
            if want != ctypes.sizeof(py):
                raise LibraryError(
                    "%s: struct %s has %d bytes but this Python package expects %d: the "
                    "library and the package come from different builds (set EMAD_LIBRARY to "
                    "the libemad.so built with this package)"
                    % (self.path, cname, want, ctypes.sizeof(py)))

    def has(self, name):
        """True if the library exports ``emad_<name>``."""
        return self.fn(name, required=False) is not None

    def fn(self, name, required=True, feature=None):
        """The function ``emad_<name>`` with its prototype set.

        A missing symbol returns None with ``required=False``, and otherwise
        raises :class:`Error` (code EMAD_EINVAL) naming the symbol, the
        feature that needs it and the library's path.
        """
        with self._lock:
            if name in self._fns:
                f = self._fns[name]
            else:
                full = "emad_" + name
                f = getattr(self.cdll, full, None)
                if f is not None:
                    restype, argtypes = _CORE[full] if full in _CORE else _OPTIONAL[full]
                    f.restype = restype
                    f.argtypes = argtypes
                self._fns[name] = f
        if f is None and required:
            raise Error(
                self.errors["EMAD_EINVAL"],
                "%s needs emad_%s, which %s (libemad %s) does not export; use a newer libemad "
                "(EMAD_LIBRARY)" % (feature or name, name, self.path, self.version))
        return f

    def strerror(self, code):
        """Text for any libemad code."""
        s = self.fn("strerror")(code)
        return s.decode(errors="replace") if s else "error %d" % code


def _candidates():
    """Paths to try, in order, each with a note for error messages."""
    env = os.environ.get("EMAD_LIBRARY")
    if env:
        return [(env, "$EMAD_LIBRARY")], True
    out = []
    here = os.path.dirname(os.path.abspath(__file__))
    top = os.path.normpath(os.path.join(here, "..", "..", ".."))
    for sub in (".libs", os.path.join("client", ".libs")):
        p = os.path.join(top, sub, "libemad.so")
        if os.path.exists(p):
            out.append((p, "build tree"))
    try:
        from . import _paths  # written by `make install`

        p = os.path.join(_paths.LIBDIR, "libemad.so.0")
        out.append((p, "installed libdir"))
    except ImportError:
        pass
    libdir = _pkg_config_libdir()
    if libdir:
        out.append((os.path.join(libdir, "libemad.so.0"), "pkg-config libemad"))
    p = os.path.join(sys.prefix, "lib", "libemad.so.0")
    if os.path.exists(p):
        out.append((p, "sys.prefix"))
    out.append(("libemad.so.0", "dynamic loader search path"))
    return out, False


def _pkg_config_libdir():
    """libdir of `pkg-config libemad`, or None (no pkg-config, no libemad.pc)."""
    try:
        r = subprocess.run(["pkg-config", "--variable=libdir", "libemad"], capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


_lib = None
_lib_lock = threading.Lock()


def lib():
    """The process-wide :class:`Lib`, loaded on first call.

    Raises :class:`LibraryError` naming every path tried when no candidate
    loads, and the reason when one loads but is not a usable libemad.
    """
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        candidates, from_env = _candidates()
        tried = []
        for path, note in candidates:
            if os.sep in path and not os.path.exists(path):
                tried.append("%s (%s): no such file" % (path, note))
                continue
            try:
                cdll = ctypes.CDLL(path)
            except OSError as e:
                tried.append("%s (%s): %s" % (path, note, e))
                continue
            _lib = Lib(cdll, path)  # LibraryError on a wrong library: do not fall back
            return _lib
        hint = ("check EMAD_LIBRARY" if from_env else
                "build it (scripts/build) or install it (make install), or set EMAD_LIBRARY "
                "to the path of libemad.so")
        raise LibraryError("cannot load libemad: tried %s; %s" % ("; ".join(tried), hint))


def library_path():
    """Path of the loaded libemad (loads it if needed)."""
    return lib().path
