"""Cluster support of the Python client: the ranks x shards split of push_module (checked
against tests/placement_ref.py's placement), and Client(cluster=) argument errors.

The cluster itself (pushes and pulls through several daemons) is exercised by
tests/test_cluster*.sh over network namespaces."""

import os
import sys

import numpy as np
import pytest

import emad
from emad import _arrays, _parallel
from emad._lib import BUFFER, DTYPE_SIZES, PARAM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from placement_ref import place  # noqa: E402  (tests/placement_ref.py)

SPEC = [("buf.mean", BUFFER, np.zeros(10, np.float32)),
        ("buf.big", BUFFER, np.arange(1 << 20, dtype=np.float32)),  # 4 MiB: cut by placement
        ("big.w", PARAM, np.arange(3 * (1 << 20) + 5, dtype=np.float32)),  # cut
        ("emb", PARAM, np.arange(1 << 21, dtype=np.float16)),  # 4 MiB: cut
        ("a", PARAM, np.arange(100, dtype=np.float32)),
        ("b", PARAM, np.arange(7, dtype=np.float64)),
        ("c", PARAM, np.arange(3000, dtype=np.float16))]


def entries():
    return [_arrays.make_entry(n, k, a) for n, k, a in SPEC]


def pieces(es, shards):
    """The placement of es as emad_cluster_plan gives it: (index, shard, offset, count, whole)."""
    out = []
    for i, e in enumerate(es):
        numel = e.nbytes // DTYPE_SIZES[e.dtype]
        for shard, off, cnt, whole in place(shards, e.name, DTYPE_SIZES[e.dtype], numel):
            out.append((i, shard, off, cnt, bool(whole)))
    return out


@pytest.mark.parametrize("shards,world", [(1, 2), (2, 2), (3, 2), (2, 3), (4, 5), (3, 1)])
def test_split_cluster_covers_each_piece_once_from_every_rank(shards, world):
    es = entries()
    ps = pieces(es, shards)
    plan = _parallel.split_cluster(es, world, ps)
    assert len(plan) == world
    arrays = {n: a for n, _, a in SPEC}
    shard_of = {}  # (name, element) ranges -> shard, from the placement
    for i, shard, off, cnt, _ in ps:
        shard_of[(es[i].name, off)] = (shard, off + cnt)
    # Every tensor is tiled exactly once by the slices of all ranks.
    for name, kind, arr in SPEC:
        parts = sorted((e.offset, e.count or arr.size, r)
                       for r, part in enumerate(plan) for e in part if e.name == name)
        pos = 0
        for off, cnt, rank in parts:
            assert off == pos, (name, parts)
            pos += cnt
            if kind == BUFFER:
                assert rank == 0  # buffers whole from rank 0
        assert pos == arr.size, (name, parts)
    # Each parameter slice lies within one piece; every rank reaches every shard with params.
    reach = [set() for _ in range(world)]
    loads = {}
    for r, part in enumerate(plan):
        for e in part:
            if e.kind != PARAM:
                continue
            cnt = e.count or arrays[e.name].size
            starts = [o for (n, o) in shard_of if n == e.name and o <= e.offset]
            shard, end = shard_of[(e.name, max(starts))]
            assert e.offset + cnt <= end, (e.name, e.offset, cnt, end)
            reach[r].add(shard)
            loads[(r, shard)] = loads.get((r, shard), 0) + e.nbytes
            assert np.array_equal(np.asarray(e.src).reshape(-1),
                                  arrays[e.name].reshape(-1)[e.offset:e.offset + cnt])
    with_params = {shard for i, shard, _, _, _ in ps if es[i].kind == PARAM}
    assert all(r == with_params for r in reach), reach
    # Balanced within each shard: ranks differ by at most a couple of elements of 8 bytes.
    for shard in with_params:
        per_rank = [loads.get((r, shard), 0) for r in range(world)]
        assert max(per_rank) - min(per_rank) <= 16, (shard, per_rank)


def test_a_shard_with_fewer_elements_than_ranks_goes_to_rank_0():
    es = [_arrays.make_entry("tiny", PARAM, np.ones(2, np.float32))]
    plan = _parallel.split_cluster(es, 3, pieces(es, 2))
    assert [len(p) for p in plan] == [1, 0, 0]


def test_client_cluster_argument_errors():
    with pytest.raises(emad.Error) as ei:
        emad.Client(cluster="epoch 1; shard 1 tcp://127.0.0.1:9")
    assert ei.value.code == emad.EINVAL and "shard 0" in str(ei.value)
    with pytest.raises(emad.Error) as ei:
        emad.Client("tcp://127.0.0.1:9", cluster="epoch 1; shard 0 tcp://127.0.0.1:9")
    assert ei.value.code == emad.EINVAL and "not both" in str(ei.value)


def test_cluster_methods_need_a_cluster_client(client):
    assert client.cluster is None
    for call in (client.cluster_info, client.cluster_status, client.cluster_warnings):
        with pytest.raises(emad.Error) as ei:
            call()
        assert ei.value.code == emad.EINVAL and "cluster=MAP" in str(ei.value)
    client.create("still", decay=0.5)  # the daemon still serves
    assert [m.name for m in client.list()] == ["still"]
