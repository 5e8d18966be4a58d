"""Pulling for people: plain state dicts, load_into reports and prefixes, averaged()."""

import os
import subprocess
import sys

import pytest

import emad
from conftest import scaled

torch = pytest.importorskip("torch")
nn = torch.nn


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))


def pushed(client, name="m", decay=0.5, steps=3, **kw):
    """A model pushed for a few steps with changing weights; its reference EMA state dict."""
    model = net()
    client.create(name, decay=decay)
    ref = {}
    for step in range(1, steps + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(step))
            model[1].running_mean.add_(1.0)
        client.push_module(name, model, step, **kw)
        with torch.no_grad():
            for k, p in model.named_parameters():
                ref[k] = p.detach().clone() if k not in ref else ref[k].sub_(
                    (1.0 - decay) * (ref[k] - p))
            for k, b in model.named_buffers():
                ref[k] = b.detach().clone()
    return model, ref


def test_pull_state_dict_saves_as_a_plain_dict_loadable_without_emad(client, tmp_path):
    _, ref = pushed(client)
    sd = client.pull_state_dict("m")
    assert sd.step == 3 and isinstance(sd, dict)
    path = str(tmp_path / "ema.pt")
    torch.save(sd, path)
    code = ("import sys; sys.modules['emad'] = None\n"  # any import of emad fails
            "import torch\n"
            "sd = torch.load(%r)\n"
            "assert type(sd) is dict, type(sd)\n"
            "print(sorted(sd), [str(v.dtype) for k, v in sorted(sd.items())])\n" % path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=scaled(300), cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert str(sorted(ref)) in r.stdout
    loaded = torch.load(path)
    assert type(loaded) is dict
    for k in ref:
        assert torch.equal(loaded[k], ref[k]), k
    import copy  # copies keep the metadata
    assert copy.copy(sd).step == 3 and copy.deepcopy(sd).step == 3


def test_load_into_a_ddp_style_wrapper_and_from_one(client):
    model, ref = pushed(client)

    class Wrapper(nn.Module):  # what DDP and DataParallel look like: keys start with module.
        def __init__(self, m):
            super().__init__()
            self.module = m

    wrapped = Wrapper(net())
    r = client.load_into(wrapped, "m")
    assert r == 3 and r.missing == [] and r.unexpected == []
    for k in ref:
        assert torch.equal(wrapped.module.state_dict()[k], ref[k]), k
    # and the other way: a model pushed through a wrapper loads into the bare module
    client.create("w", decay=0.5)
    client.push_module("w", Wrapper(model), 1)
    bare = net()
    assert client.load_into(bare, "w") == 1
    for k, v in model.state_dict().items():
        assert torch.equal(bare.state_dict()[k], v), k


def test_load_into_reports_exactly_what_is_missing_or_unexpected(client):
    pushed(client)
    other = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2), nn.Linear(2, 2))
    with pytest.raises(emad.LoadError) as ei:
        client.load_into(other, "m")
    e = ei.value
    assert isinstance(e, emad.Error) and e.code == emad.ENOTENSOR
    assert e.missing == ["3.weight", "3.bias"] and e.unexpected == []
    assert "3.weight" in str(e) and "strict=False" in str(e)
    small = nn.Sequential(nn.Linear(4, 6))
    with pytest.raises(emad.LoadError) as ei:
        client.load_into(small, "m")
    assert ei.value.missing == [] and "2.bias" in ei.value.unexpected
    assert len(ei.value.unexpected) == 7  # BatchNorm (5) and the last Linear (2)
    wrong = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(6), nn.Linear(6, 2))
    with pytest.raises(emad.LoadError) as ei:
        client.load_into(wrong, "m", strict=False)  # a shape never loads
    assert ei.value.code == emad.ESHAPE and ei.value.mismatched[0][0] == "0.weight"


def test_load_into_a_frozen_model_with_strict_false(client):
    model = net()
    for p in model[0].parameters():  # a frozen base, like LoRA: not pushed
        p.requires_grad_(False)
    client.create("lora", decay=0.5)
    client.push_module("lora", model, 1)
    fresh = net()
    with torch.no_grad():
        fresh[0].weight.fill_(7.0)
    with pytest.raises(emad.LoadError) as ei:
        client.load_into(fresh, "lora")
    assert ei.value.missing == ["0.weight", "0.bias"]
    r = client.load_into(fresh, "lora", strict=False)
    assert r == 1 and r.missing == ["0.weight", "0.bias"] and r.unexpected == []
    assert torch.all(fresh[0].weight == 7.0)  # left alone
    assert torch.equal(fresh[2].weight, model[2].weight)


def test_load_into_a_model_with_nothing_pushed(client):
    client.create("empty")
    with pytest.raises(emad.LoadError) as ei:
        client.load_into(net(), "empty")
    assert ei.value.code == emad.ENOTENSOR and "nothing was pushed" in str(ei.value)


def test_averaged_swaps_in_and_restores_even_on_exceptions(client):
    model, ref = pushed(client)
    with torch.no_grad():
        model[0].weight.add_(100.0)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    params_before = [id(p) for p in model.parameters()]
    with client.averaged(model, "m") as r:
        assert r == 3
        for k in ref:
            assert torch.equal(model.state_dict()[k], ref[k]), k
    for k, v in raw.items():
        assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(ZeroDivisionError):
        with client.averaged(model, "m"):
            assert torch.equal(model[0].weight, ref["0.weight"])
            1 / 0
    for k, v in raw.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert [id(p) for p in model.parameters()] == params_before  # the same tensors
    with pytest.raises(emad.LoadError):  # a mismatch fails before anything is swapped
        with client.averaged(nn.Linear(3, 3), "m"):
            pass
