"""Data-parallel pushes: which rank pushes which bytes of a model.

This module owns the split plan of ``push_module(..., rank=, world_size=)``.
Every rank of a data-parallel job holds the same model, so every rank
computes the same plan from the tensors' names, dtypes and shapes alone (no
communication): the bytes of the model, buffers first then parameters in
``named_parameters()`` order, are cut into ``world_size`` ranges of nearly
equal size; rank ``r`` pushes range ``r`` as writer ``r`` of a model
created with ``writers=world_size``. A tensor that straddles a cut is
pushed as two (or more) :class:`~emad.Shard` slices, so at most
``world_size - 1`` tensors are split and the ranks differ by less than one
tensor element in bytes. Buffers are never split: they all go to rank 0
(the values of rank 0, which DDP broadcasts at construction; buffers that
differ between ranks, e.g. BatchNorm statistics without SyncBatchNorm, are
rank 0's in the average).
"""

from ._lib import DTYPE_SIZES, ERRORS, PARAM, Error
from ._arrays import Entry

__all__ = ["rank_and_size", "split", "split_cluster"]


def rank_and_size(rank, world_size):
    """(rank, world_size) as given, else torch.distributed's if initialised, else (0, 1)."""
    if rank is None or world_size is None:
        dist = None
        try:
            import torch.distributed as dist
        except ImportError:  # pragma: no cover - torch without distributed
            pass
        if dist is not None and dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
    rank = 0 if rank is None else int(rank)
    world_size = 1 if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise Error(ERRORS["EMAD_ERANGE"], "rank %d of world_size %d" % (rank, world_size))
    return rank, world_size


def _slice(e, lo, hi):
    """Entry for elements [lo, hi) of entry e (the whole entry if that is all of it); the offset
    is in the whole tensor when e is itself a slice."""
    numel = e.nbytes // _itemsize(e) if e.nbytes else 0
    if lo == 0 and hi == numel:
        return e
    flat = e.src.reshape(-1)[lo:hi]
    size = _itemsize(e)
    return Entry(e.name, e.kind, e.dtype, e.shape, flat, (hi - lo) * size, e.offset + lo, hi - lo)


def _itemsize(e):
    return DTYPE_SIZES[e.dtype]


def split(entries, world_size):
    """Per rank, the entries (whole or sliced) it pushes; balanced by bytes, deterministic.

    Raises Error (EMAD_ERANGE) when there are fewer parameter elements than
    ranks (every rank must push something for a step to complete).
    """
    buffers = [e for e in entries if e.kind != PARAM]
    params = [e for e in entries if e.kind == PARAM]
    # Element boundaries of the parameter stream: start element and itemsize of each tensor.
    starts, total_elems, total_bytes = [], 0, 0
    for e in params:
        starts.append((total_elems, total_bytes))
        total_elems += e.nbytes // _itemsize(e)
        total_bytes += e.nbytes
    if total_elems < world_size:
        raise Error(ERRORS["EMAD_ERANGE"], "cannot split %d parameter elements among %d ranks"
                    % (total_elems, world_size))
    buffer_bytes = sum(e.nbytes for e in buffers)
    share = (buffer_bytes + total_bytes) / world_size
    # cuts[r]: first parameter element (global index) of rank r.
    cuts = [0]
    for r in range(1, world_size):
        cuts.append(_element_at(params, starts, r * share - buffer_bytes))
    cuts.append(total_elems)
    for r in range(1, world_size):  # every rank at least one element, in order
        cuts[r] = min(max(cuts[r], cuts[r - 1] + 1), total_elems - (world_size - r))
    plan = [[] for _ in range(world_size)]
    plan[0].extend(buffers)
    for e, (first, _) in zip(params, starts):
        numel = e.nbytes // _itemsize(e)
        if numel == 0:  # an empty tensor: whoever owns its position
            plan[max(r for r in range(world_size) if cuts[r] <= first)].append(e)
            continue
        for r in range(world_size):
            lo, hi = max(cuts[r], first), min(cuts[r + 1], first + numel)
            if lo < hi:
                plan[r].append(_slice(e, lo - first, hi - first))
    return plan


def _element_at(params, starts, pos):
    """Global index of the parameter element at byte position pos (rounded down)."""
    if pos <= 0:
        return 0
    for e, (first, first_byte) in zip(params, starts):
        if pos < first_byte + e.nbytes:
            return first + int((pos - first_byte) // _itemsize(e))
    return sum(e.nbytes // _itemsize(e) for e in params)


def split_cluster(entries, world_size, pieces):
    """Per rank, the entries it pushes to a cluster: each shard's part cut among the ranks.

    pieces is the placement of entries: (entry index, shard, offset, count,
    whole) tuples. The parameter pieces on each shard are split among the
    ranks like :func:`split` splits a model (balanced by bytes, every rank
    at least one element), so every rank sends a share of every shard's
    bytes and every shard hears from every writer at each step; the pieces
    of a shard holding fewer parameter elements than there are ranks go to
    rank 0. Buffers go whole to rank 0 (libemad places them). A rank may
    push several slices of one tensor, each within one shard's piece.
    """
    by_shard = {}
    for index, shard, offset, count, whole in pieces:
        e = entries[index]
        if e.kind != PARAM:
            continue
        if not whole:
            e = _slice(e, offset, offset + count)
        by_shard.setdefault(shard, []).append(e)
    plan = [[] for _ in range(world_size)]
    plan[0].extend(e for e in entries if e.kind != PARAM)
    for shard in sorted(by_shard):
        part = by_shard[shard]
        if sum(e.nbytes // _itemsize(e) for e in part) < world_size:
            plan[0].extend(part)
            continue
        for r, mine in enumerate(split(part, world_size)):
            plan[r].extend(mine)
    return plan
