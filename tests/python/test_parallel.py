"""Data-parallel pushes: the split plan, and 2 gloo processes against the single-process EMA."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import emad
from emad import _arrays, _parallel
from emad._lib import BUFFER, PARAM
from conftest import TOP, free_port, scaled


def entries(spec):
    """Push entries from [(name, kind, numpy array)]."""
    return [_arrays.make_entry(n, k, a) for n, k, a in spec]


def covered(plan, name, numel):
    """[(rank, offset, count)] of name in plan, checking the parts tile [0, numel)."""
    parts = []
    for rank, part in enumerate(plan):
        for e in part:
            if e.name == name:
                parts.append((rank, e.offset, e.count or numel))
    parts.sort(key=lambda p: p[1])
    pos = 0
    for _, off, cnt in parts:
        assert off == pos, (name, parts)
        pos += cnt
    assert pos == numel, (name, parts)
    return parts


SPEC = [("buf.mean", BUFFER, np.zeros(10, np.float32)),  # 40 bytes
        ("buf.count", BUFFER, np.zeros((), np.int64)),  # 8
        ("a", PARAM, np.arange(100, dtype=np.float32)),  # 400
        ("b", PARAM, np.arange(7, dtype=np.float64)),  # 56
        ("empty", PARAM, np.zeros((0, 4), np.float32)),
        ("c", PARAM, np.arange(300, dtype=np.float16))]  # 600


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_the_plan_covers_every_tensor_once_balanced_by_bytes(world):
    plan = _parallel.split(entries(SPEC), world)
    assert len(plan) == world and all(plan)  # every rank pushes something
    for name, kind, arr in SPEC:
        parts = covered(plan, name, arr.size)
        if kind == BUFFER:
            assert [p[0] for p in parts] == [0]  # buffers whole, from rank 0
    loads = [sum(e.nbytes for e in part) for part in plan]
    total = 40 + 8 + 400 + 56 + 600
    assert sum(loads) == total
    assert max(loads) - min(loads) <= 2 * 8, loads  # within an element or two
    # the slices point into the original arrays: values are right
    for part in plan:
        for e in part:
            arr = dict((n, a) for n, _, a in SPEC)[e.name]
            assert np.array_equal(np.asarray(e.src).reshape(-1),
                                  arr.reshape(-1)[e.offset:e.offset + (e.count or arr.size)])
    # deterministic: the same plan from fresh entries
    again = _parallel.split(entries(SPEC), world)
    assert [[(e.name, e.offset, e.count) for e in p] for p in plan] == \
        [[(e.name, e.offset, e.count) for e in p] for p in again]


def test_the_plan_needs_an_element_per_rank():
    with pytest.raises(emad.Error) as ei:
        _parallel.split(entries([("w", PARAM, np.ones(2, np.float32))]), 3)
    assert ei.value.code == emad.ERANGE


def test_rank_and_size_defaults_and_checks():
    assert _parallel.rank_and_size(None, None) == (0, 1)  # torch.distributed not initialised
    assert _parallel.rank_and_size(1, 4) == (1, 4)
    with pytest.raises(emad.Error):
        _parallel.rank_and_size(4, 4)


def test_push_module_split_by_hand_matches_a_whole_push(client):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Linear(7, 2))
    client.create("whole", decay=0.75)
    client.create("split", decay=0.75, writers=3)
    for step in range(1, 4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(1.0)
        client.push_module("whole", model, step)
        for rank in range(3):
            res = client.push_module("split", model, step, rank=rank, world_size=3)
        assert not res.pending  # the last writer completed the step
    whole, split = client.pull_state_dict("whole"), client.pull_state_dict("split")
    assert list(whole) and sorted(whole) == sorted(split)
    for k in whole:
        assert torch.equal(whole[k], split[k]), k


def test_two_gloo_processes_match_the_single_process_ema(daemon, tmp_path):
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        # gloo throws C++ exceptions, which AddressSanitizer loaded this way cannot intercept.
        pytest.skip("torch.distributed under a preloaded AddressSanitizer runtime")
    torch = pytest.importorskip("torch")
    if not torch.distributed.is_available():
        pytest.skip("torch without distributed")
    steps, decay = 12, 0.8
    env = dict(os.environ, MASTER_PORT=str(free_port()), WORLD_SIZE="2", GLOO_SOCKET_IFNAME="lo",
               PYTHONPATH=os.path.join(TOP, "client", "python"), OMP_NUM_THREADS="1")
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_worker.py")
    procs = [subprocess.Popen([sys.executable, worker, daemon.url, str(tmp_path), str(steps),
                               str(decay)], env=dict(env, RANK=str(r)), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for r in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=scaled(240))[0].decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outs)

    ref = torch.load(str(tmp_path / "ref.pt"))
    with emad.Client(daemon.url) as c:
        sd = c.pull_state_dict("ddp")
    assert sd.step == steps
    assert sorted(sd) == sorted(ref)
    for k in ref:  # params and rank 0's buffers, bit for bit
        assert sd[k].dtype == ref[k].dtype and torch.equal(sd[k], ref[k]), k

    health = [json.load(open(str(tmp_path / ("rank%d.json" % r)))) for r in range(2)]
    total = sum(t.numel() * t.element_size() for t in ref.values())
    for h in health:
        assert h["sent"] == steps and h["skipped"] == 0, h
        per_step = h["bytes"] / steps
        assert abs(per_step - total / 2) <= 8, (per_step, total)  # about half each
