"""emad: Python client of the emad EMA parameter server.

A trainer pushes its model every step; the daemon keeps the exponential
moving average; evaluation processes pull it::

    import emad

    client = emad.Client("tcp://127.0.0.1:7470")
    client.create("run1", decay=0.999, exist_ok=True)
    for step in range(1, steps + 1):
        train_step(model)
        client.push_module("run1", model, step, wait=False)
    client.close()

    # elsewhere
    step = emad.Client(url).load_into(eval_model, "run1")

The package is pure Python over ``libemad`` (the C client library) through
ctypes; numpy is required, torch is used when present. The library is found
through ``$EMAD_LIBRARY``, the build tree, the install prefix, or the
dynamic loader (see :mod:`emad._lib`). ``client/python/README.md`` documents
the whole API.
"""

from ._arrays import BFLOAT16, Shard, Typed
from ._client import Client, ModelInfo, PushResult, StateDict, TensorInfo
from ._lib import DEFAULT_DECAY, DEFAULT_URL, ERRORS, Error, LibraryError, library_path
from ._modules import LoadError, LoadResult
from ._sender import LostStepsWarning, UnavailableWarning


def library_version():
    """emad_version() of the loaded libemad (loads it on first use)."""
    from ._lib import lib

    return lib().version


__version__ = "0.1.0"

_API = [
    "BFLOAT16",
    "Client",
    "DEFAULT_DECAY",
    "DEFAULT_URL",
    "ERRORS",
    "Error",
    "LibraryError",
    "LoadError",
    "LoadResult",
    "LostStepsWarning",
    "ModelInfo",
    "PushResult",
    "Shard",
    "StateDict",
    "TensorInfo",
    "Typed",
    "UnavailableWarning",
    "library_path",
    "library_version",
]


def __getattr__(name):
    """The error codes as module constants (emad.ESHAPE == -1007), named by libemad.

    Looked up when first used, so that importing emad never needs the library;
    ``__all__`` too: the API and, if libemad loads, every code.
    """
    if name == "__all__":
        try:
            return _API + [code_name[len("EMAD_"):] for code_name in ERRORS]
        except LibraryError:
            return list(_API)
    if name.startswith("E") and name.isupper() and "EMAD_" + name in ERRORS:
        return ERRORS["EMAD_" + name]
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def __dir__():
    """The module's names with the error codes (see __getattr__)."""
    return sorted(set(globals()) | set(__getattr__("__all__")))
