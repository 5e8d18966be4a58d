"""The emad package with torch modules, side by side with the reference EMA.

``ReferenceEMA`` is the EMA class of the reference example
(../shared/reference/seed-ema-example.txt, a replica of TensorFlow's
ExponentialMovingAverage), adapted to a plain module: forward() takes only
the inputs. It is the independent expectation: emad code computes nothing
here.
"""

import copy
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import emad  # noqa: E402
from conftest import needs, scaled  # noqa: E402


class ReferenceEMA(nn.Module):
    """The reference example's EMA: shadow -= (1 - decay) * (shadow - param); buffers copied."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.model = model
        self.shadow = copy.deepcopy(self.model)
        for param in self.shadow.parameters():
            param.detach_()

    @torch.no_grad()
    def update(self):
        assert self.training, "EMA update should only be called during training"
        model_params = OrderedDict(self.model.named_parameters())
        shadow_params = OrderedDict(self.shadow.named_parameters())
        assert model_params.keys() == shadow_params.keys()
        for name, param in model_params.items():
            shadow_params[name].sub_((1. - self.decay) * (shadow_params[name] - param))
        model_buffers = OrderedDict(self.model.named_buffers())
        shadow_buffers = OrderedDict(self.shadow.named_buffers())
        assert model_buffers.keys() == shadow_buffers.keys()
        for name, buffer in model_buffers.items():
            shadow_buffers[name].copy_(buffer)

    def forward(self, inputs):
        if self.training:
            return self.model(inputs)
        return self.shadow(inputs)


def make_cnn(seed):
    """A small CNN with BatchNorm (running_mean, running_var, num_batches_tracked)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def synthetic_batches(n, seed, batch=32):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(3 * 8 * 8, 10, generator=g)
    out = []
    for _ in range(n):
        x = torch.randn(batch, 3, 8, 8, generator=g)
        out.append((x, (x.flatten(1) @ teacher).argmax(1)))
    return out


def train_step(model, opt, x, y):
    model.train()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def ulps(a, b):
    ia = a.detach().float().contiguous().view(torch.int32).long()
    ib = b.detach().float().contiguous().view(torch.int32).long()
    return int((ia - ib).abs().max()) if ia.numel() else 0


def train_side_by_side(client, name, steps, decay, seed=0):
    """Train a CNN, updating the reference EMA and pushing to emad every step."""
    model = make_cnn(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref = ReferenceEMA(model, decay)
    client.create(name, decay=decay)
    client.push_module(name, model, 0)  # the reference's shadow starts as a copy
    for step, (x, y) in enumerate(synthetic_batches(steps, seed + 1), start=1):
        train_step(model, opt, x, y)
        ref.update()
        client.push_module(name, model, step)
    return model, ref


def test_equivalence_with_the_reference_ema_over_100_steps(client):
    before = client.stats()
    model, ref = train_side_by_side(client, "cnn", 100, 0.99)
    after = client.stats()
    # The first two pushes sent the tensors (the second had their layout kept); the next 99
    # sent values only.
    assert after["layouts_kept"] - before["layouts_kept"] == 1
    assert after["layout_pushes"] - before["layout_pushes"] == 99
    sd = client.pull_state_dict("cnn")
    assert sd.step == 100
    fresh = make_cnn(seed=123)
    fresh.load_state_dict(sd)  # strict: every key, nothing more
    expected = ref.shadow.state_dict()
    assert sd.keys() == expected.keys()
    params = dict(ref.shadow.named_parameters())
    for name, want in expected.items():
        got = fresh.state_dict()[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        if name in params:
            assert ulps(got, want) <= 1, name
            # the protocol promises bit-for-bit torch float32 arithmetic
            assert torch.equal(got, want), "%s differs by %d ulp" % (name, ulps(got, want))
        else:
            assert torch.equal(got, want), name
    assert int(sd["1.num_batches_tracked"]) == 100
    assert sd["1.num_batches_tracked"].dtype == torch.int64
    # The training moved away from the EMA: the comparison is not trivial.
    assert not torch.equal(model.state_dict()["0.weight"], expected["0.weight"])


def test_pulled_module_gives_the_reference_eval_outputs(client):
    _, ref = train_side_by_side(client, "cnn", 30, 0.9, seed=5)
    fresh = make_cnn(seed=77)
    step = client.load_into(fresh, "cnn")
    assert step == 30
    fresh.eval()
    ref.eval()
    x = synthetic_batches(1, 999, batch=64)[0][0]
    with torch.no_grad():
        assert torch.equal(fresh(x), ref(x))


def test_push_module_splits_params_and_buffers_like_the_reference(client):
    model = make_cnn(0)
    model[0].bias.requires_grad_(False)  # frozen: not a trainable param
    model.register_buffer("scratch", torch.ones(2), persistent=False)
    client.create("m")
    client.push_module("m", model, 1)
    _, tensors = client.describe("m")
    kinds = {t.name: t.kind for t in tensors}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert [n for n, k in kinds.items() if k == "param"] == trainable
    assert "0.bias" not in kinds and "scratch" not in kinds
    assert [n for n, k in kinds.items() if k == "buffer"] == [
        n for n, _ in model.named_buffers() if n != "scratch"]
    # include_frozen pushes frozen params as params too, so strict loading works
    client.create("m2")
    client.push_module("m2", model, 1, include_frozen=True)
    make_cnn(1).load_state_dict(client.pull_state_dict("m2"))


def test_bf16_model_is_sent_as_bf16_and_averaged_in_float32(client):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 4)).to(torch.bfloat16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    decay = 0.9
    c = torch.tensor(1.0 - decay, dtype=torch.float32)
    shadow = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    client.create("bf", decay=decay)
    client.push_module("bf", model, 0)
    g = torch.Generator().manual_seed(1)
    for step in range(1, 21):
        x = torch.randn(8, 16, generator=g).to(torch.bfloat16)
        opt.zero_grad()
        model(x).float().pow(2).mean().backward()
        opt.step()
        for n, p in model.named_parameters():  # float32 shadow of the bf16 values
            shadow[n] = shadow[n] - c * (shadow[n] - p.detach().float())
        client.push_module("bf", model, step)
    _, tensors = client.describe("bf")
    for t in tensors:  # sent as BF16: two bytes per element, no upcast
        assert t.dtype == "BF16" and t.nbytes == 2 * int(np.prod(t.shape)), t
    sd = client.pull_state_dict("bf")
    assert sd.step == 20
    for n, want in shadow.items():
        assert sd[n].dtype == torch.bfloat16
        assert torch.equal(sd[n], want.to(torch.bfloat16)), n  # rounded to nearest even
    fresh = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 4)).to(torch.bfloat16)
    fresh.load_state_dict(sd)


@needs("pull_into_ex", "pull_options_init")
def test_bf16_model_pulls_its_float32_shadow(client):
    torch.manual_seed(0)
    vals = [torch.randn(64).to(torch.bfloat16) for _ in range(10)]
    shadow = vals[0].float()
    c = torch.tensor(1.0 - 0.99, dtype=torch.float32)
    for v in vals[1:]:
        shadow = shadow - c * (shadow - v.float())
    client.create("bf", decay=0.99)
    for step, v in enumerate(vals):
        client.push("bf", step, {"w": v})
    sd = client.pull_state_dict("bf", dtype=torch.float32)
    assert sd["w"].dtype == torch.float32 and torch.equal(sd["w"], shadow)
    sd = client.pull_state_dict("bf", dtype="F16")
    assert sd["w"].dtype == torch.float16 and torch.equal(sd["w"], shadow.half())


def test_async_push_stream_surfaces_a_failed_push_on_the_next_call(client):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    client.create("a", decay=0.5)
    for step in range(1, 4):
        assert client.push_module("a", model, step, wait=False) is None
    model[1] = nn.Linear(8, 3)  # shape changed: the daemon refuses step 4
    client.push_module("a", model, 4, wait=False)  # captured; fails in the background
    with pytest.raises(emad.Error) as ei:
        client.push_module("a", model, 5, wait=False)
    assert ei.value.code == emad.ESHAPE
    assert "1.weight" in str(ei.value) and "asynchronous" in str(ei.value)
    client.flush()  # the error was reported once
    assert client.pull_state_dict("a").step == 3  # nothing of step 4 applied
    # and the same through flush()
    client.push_module("a", model, 6, wait=False)
    with pytest.raises(emad.Error) as ei:
        client.flush()
    assert ei.value.code == emad.ESHAPE
    # the client keeps working
    model[1] = nn.Linear(8, 2)
    client.push_module("a", model, 7, wait=False)
    client.flush()
    assert client.pull_state_dict("a").step == 7


def test_close_flushes_and_raises_a_pending_error(daemon):
    model = nn.Linear(4, 4)
    c = emad.Client(daemon.url)
    c.create("a")
    c.push_module("a", model, 1, wait=False)
    c.close()  # flushed: step 1 is there
    with emad.Client(daemon.url) as c2:
        assert c2.pull_state_dict("a").step == 1
    c = emad.Client(daemon.url)
    c.push_module("a", nn.Linear(4, 5), 2, wait=False)
    with pytest.raises(emad.Error) as ei:
        c.close()
    assert ei.value.code == emad.ESHAPE
    with pytest.raises(emad.Error):
        c.list()  # closed anyway


def test_async_push_captures_values_and_applies_back_pressure(client, monkeypatch):
    import threading

    import emad._client as ec

    model = nn.Linear(100, 100)
    client.create("a", decay=0.5)
    in_flight = []
    sent = []
    real = ec._push_entries
    started, release = threading.Event(), threading.Event()

    def held_push(conn, model_name, step, entries, writer):
        in_flight.append(client._sender.pending)
        started.set()
        release.wait(scaled(300))  # each send stays in flight until the test releases it
        sent.append(step)
        return real(conn, model_name, step, entries, writer)

    monkeypatch.setattr(ec, "_push_entries", held_push)
    before = model.weight.detach().clone()
    client.push_module("a", model, 1, wait=False)
    assert sent == []  # returned while step 1's send is held: it did not wait for it
    with torch.no_grad():
        model.weight.add_(1.0)  # after capture: not part of step 1
    assert started.wait(scaled(300))
    second = threading.Thread(target=client.push_module, args=("a", model, 2),
                              kwargs={"wait": False})
    second.start()  # one push in flight: this one waits for step 1's send
    second.join(0.2)
    assert second.is_alive(), "the second push did not wait for the one in flight"
    assert sent == []
    release.set()
    second.join(scaled(300))
    assert not second.is_alive()
    client.flush()
    assert sent == [1, 2] and max(in_flight) == 1
    sd = client.pull_state_dict("a")
    c = torch.tensor(0.5, dtype=torch.float32)
    want = before - c * (before - (before + 1.0))
    assert torch.equal(sd["weight"], want)


def test_push_and_pull_torch_tensors_directly(client):
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    client.create("t")
    client.push("t", 1, {"w": w.t()}, {"n": torch.tensor(3), "flag": torch.tensor([True, False])})
    sd = client.pull_state_dict("t")
    assert torch.equal(sd["w"], w.t().contiguous())
    assert sd["n"].dtype == torch.int64 and int(sd["n"]) == 3
    assert sd["flag"].dtype == torch.bool and sd["flag"].tolist() == [True, False]
    arrays = client.pull("t")
    assert np.array_equal(arrays["w"], w.t().numpy())


def test_load_into_fills_tied_weights(client):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.emb.weight

    m = Tied()
    client.create("tied")
    client.push_module("tied", m, 1)
    _, tensors = client.describe("tied")
    assert [t.name for t in tensors] == ["emb.weight"]  # named_parameters() lists it once
    fresh = Tied()
    assert client.load_into(fresh, "tied") == 1
    assert torch.equal(fresh.out.weight, m.emb.weight)
