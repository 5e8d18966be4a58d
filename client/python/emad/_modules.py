"""Pulled weights into torch modules: key matching, exact reports, and swapping EMA weights in.

This module owns how a pulled state dict meets a module: keys match
directly or after stripping wrapper prefixes on either side (``module.``
of DistributedDataParallel/DataParallel, ``_orig_mod.`` of torch.compile),
tied weights are filled from the tensor they share, and what is missing or
unexpected is reported by name (:class:`LoadError`, :class:`LoadResult`).
:func:`averaged` swaps the EMA weights in for a ``with`` block and puts the
module's own values back after it, also when the block raises.
"""

import contextlib

from ._lib import ERRORS, Error

__all__ = ["LoadError", "LoadResult", "load", "averaged", "WRAPPER_PREFIXES"]

#: Key prefixes added by wrappers, ignored when matching names.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _bare(key):
    """key without any leading wrapper prefixes."""
    changed = True
    while changed:
        changed = False
        for p in WRAPPER_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


class LoadResult(int):
    """The loaded model's step (an int), with what was and was not loaded.

    Attributes: ``step``; ``loaded`` (module keys that received a value);
    ``missing`` (module keys the model does not have, e.g. frozen parameters
    not pushed); ``unexpected`` (pulled tensors the module has no key for).
    """

    def __new__(cls, step, loaded, missing, unexpected):
        self = super().__new__(cls, step)
        self.step = int(step)
        self.loaded, self.missing, self.unexpected = loaded, missing, unexpected
        return self

    def __repr__(self):
        return "LoadResult(step=%d, loaded=%d, missing=%r, unexpected=%r)" % (
            self.step, len(self.loaded), self.missing, self.unexpected)


class LoadError(Error):
    """A state dict does not fit a module: ``missing``, ``unexpected`` and ``mismatched``
    (key, module shape, pulled shape) say exactly how."""

    def __init__(self, code, message, missing=(), unexpected=(), mismatched=()):
        super().__init__(code, message)
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), \
            list(mismatched)


def _match(module, sd):
    """(own state dict with vars, {own key: pulled key}, missing, unexpected, mismatched)."""
    own = module.state_dict(keep_vars=True)
    by_bare = {}
    for k in sd:
        by_bare.setdefault(_bare(k), k)
    mapping = {}
    for k in own:
        src = k if k in sd else by_bare.get(_bare(k))
        if src is not None:
            mapping[k] = src
    groups = {}  # tied weights: keys of one tensor share what one of them got
    for k, v in own.items():
        groups.setdefault(id(v), []).append(k)
    for keys in groups.values():
        got = [mapping[k] for k in keys if k in mapping]
        for k in keys:
            if k not in mapping and got:
                mapping[k] = got[0]
    used = set(mapping.values())
    missing = [k for k in own if k not in mapping]
    unexpected = [k for k in sd if k not in used]
    mismatched = [(k, tuple(own[k].shape), tuple(sd[s].shape)) for k, s in mapping.items()
                  if tuple(own[k].shape) != tuple(sd[s].shape)]
    return own, mapping, missing, unexpected, mismatched


def _names(keys, limit=20):
    shown = ", ".join(keys[:limit])
    return shown + (" and %d more" % (len(keys) - limit) if len(keys) > limit else "")


def _plan(module, sd, strict, model):
    """Match sd to module and check it; raises LoadError, returns (own, mapping, result)."""
    if not sd:
        raise LoadError(ERRORS["EMAD_ENOTENSOR"],
                        "model '%s' has no tensors: nothing was pushed to it yet" % model)
    own, mapping, missing, unexpected, mismatched = _match(module, sd)
    if mismatched:
        raise LoadError(ERRORS["EMAD_ESHAPE"], "model '%s' does not fit the module: %s" % (
            model, "; ".join("%s is %s in the module, %s in the model" % m
                             for m in mismatched[:20])), missing, unexpected, mismatched)
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append("missing from the model (in the module, never pushed): %s"
                         % _names(missing))
        if unexpected:
            parts.append("unexpected (in the model, not in the module): %s" % _names(unexpected))
        raise LoadError(ERRORS["EMAD_ENOTENSOR"], "model '%s' at step %d does not match the "
                        "module: %s (push with include_frozen=True, or load with strict=False)"
                        % (model, getattr(sd, "step", 0), "; ".join(parts)), missing, unexpected)
    return own, mapping, LoadResult(getattr(sd, "step", 0), list(mapping), missing, unexpected)


def load(module, sd, strict=True, model="?"):
    """Load pulled tensors sd into module (matching keys as described above); a LoadResult."""
    own, mapping, result = _plan(module, sd, strict, model)
    module.load_state_dict({k: sd[s] for k, s in mapping.items()}, strict=False)
    return result


@contextlib.contextmanager
def averaged(module, sd, strict=True, model="?"):
    """Within the block the module holds sd's values; its own come back after, even on errors.

    Keeps one copy of the replaced tensors (on their device) for the block.
    """
    import torch

    own, mapping, result = _plan(module, sd, strict, model)
    with torch.no_grad():
        saved = {k: own[k].detach().clone() for k in mapping}
    try:
        module.load_state_dict({k: sd[s] for k, s in mapping.items()}, strict=False)
        yield result
    finally:
        with torch.no_grad():
            for k, v in saved.items():
                own[k].copy_(v)
