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

# The error codes as module constants: emad.ESHAPE == -1007, ...
globals().update({name[len("EMAD_"):]: code for name, code in ERRORS.items()})

__all__ = [
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
__all__.extend(name[len("EMAD_"):] for name in ERRORS)
