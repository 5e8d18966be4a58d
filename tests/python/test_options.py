"""Model options, pull options and writers through the Python API.

These bind libemad functions newer than the core (emad_create_config,
emad_get_config, emad_configure, emad_pull_into_ex, emad_push_as); each test
is skipped when the loaded library lacks what it needs. The formulas of the
schedules are tested against references in the daemon's own suites; here
the point is that every option reaches the daemon and comes back.
"""

import numpy as np
import pytest

import emad
from conftest import needs

CONFIG = needs("config_init", "create_config", "get_config", "config_free", "option_from_name",
               "schedule_name", "step_gap_name", "buffers_name", "nonfinite_name")
PULL_EX = needs("pull_into_ex", "pull_options_init")


def ema(values, decay):
    c = np.float32(1.0 - decay)
    s = values[0].astype(np.float32)
    for v in values[1:]:
        s = s - c * (s - v.astype(np.float32))
    return s


def test_unknown_option_is_refused_before_anything_is_sent(client):
    with pytest.raises(emad.Error) as ei:
        client.create("m", decay=0.9, warmup_steps=10)
    assert ei.value.code == emad.EINVAL and "warmup_steps" in str(ei.value)
    assert client.list() == []


def test_options_need_a_library_that_has_them(client):
    from emad._lib import lib

    if lib().has("create_config"):
        pytest.skip("this libemad has emad_create_config")
    with pytest.raises(emad.Error) as ei:
        client.create("m", decay=[0.9, 0.99])
    assert "emad_" in str(ei.value) and lib().path in str(ei.value)


@CONFIG
def test_every_create_option_round_trips(client):
    opts = dict(schedule="warmup", update_after_step=5, inv_gamma=2.0, power=0.75, min_decay=0.1,
                step_gap="compensate", buffers="average", copy=["*.running_*", "emb.*"],
                ignore=["aux.*"], nonfinite="skip", writers=3)
    client.create("m", decay=[0.999, 0.9999], **opts)
    cfg = client.get_config("m")
    assert cfg == dict(opts, decay=[0.999, 0.9999])
    client.create("m", decay=[0.999, 0.9999], exist_ok=True, **opts)  # same config: fine
    with pytest.raises(emad.Error) as ei:
        client.create("m", decay=[0.999, 0.9999], exist_ok=True, **dict(opts, writers=2))
    assert ei.value.code == emad.EEXIST


@CONFIG
def test_defaults_come_from_the_library(client):
    client.create("m", decay=0.99, schedule="constant")
    cfg = client.get_config("m")
    assert cfg["decay"] == [0.99] and cfg["schedule"] == "constant"
    assert cfg["writers"] == 1 and cfg["buffers"] == "copy" and cfg["nonfinite"] == "reject"
    assert cfg["inv_gamma"] == 1.0 and abs(cfg["power"] - 2.0 / 3.0) < 1e-12
    assert cfg["copy"] == [] and cfg["ignore"] == []


@CONFIG
def test_bad_option_values(client):
    with pytest.raises(emad.Error) as ei:
        client.create("m", schedule="sometimes")
    assert ei.value.code == emad.EINVAL and "sometimes" in str(ei.value)
    with pytest.raises(emad.Error) as ei:
        client.create("m", decay=[0.9] * 9)
    assert ei.value.code == emad.ERANGE
    with pytest.raises(emad.Error) as ei:
        client.create("m", decay=[0.9, 1.5])
    assert ei.value.code == emad.ERANGE
    assert client.list() == []


@CONFIG
@PULL_EX
def test_several_decays_each_pull_their_own_shadow(client):
    rng = np.random.default_rng(0)
    vals = [rng.standard_normal(50, dtype=np.float32) for _ in range(12)]
    client.create("m", decay=[0.9, 0.5, 0.99])
    for step, v in enumerate(vals, start=1):
        client.push("m", step, {"w": v})
    assert np.array_equal(client.pull("m")["w"], ema(vals, 0.9))  # default: the first
    for d in (0.9, 0.5, 0.99):
        assert np.array_equal(client.pull("m", decay=d)["w"], ema(vals, d)), d


@PULL_EX
def test_pull_dtype_conversion(client):
    rng = np.random.default_rng(1)
    vals = [rng.standard_normal(40, dtype=np.float32) for _ in range(5)]
    client.create("m", decay=0.8)
    for step, v in enumerate(vals, start=1):
        client.push("m", step, {"w": v}, {"n": np.int64(step)})
    shadow = ema(vals, 0.8)
    sd = client.pull("m", dtype="F16")
    assert sd["w"].dtype == np.float16 and np.array_equal(sd["w"], shadow.astype(np.float16))
    assert sd["n"].dtype == np.int64 and sd["n"] == 5  # integer buffers untouched
    sd = client.pull("m", dtype="BF16")
    assert sd.dtypes["w"] == "BF16"
    u = shadow.view(np.uint32).astype(np.uint64)
    rne = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    got = sd["w"] if emad.BFLOAT16 is None else sd["w"].view(np.uint16)
    assert np.array_equal(got, rne)
    with pytest.raises(emad.Error) as ei:
        client.pull("m", dtype="I32")
    assert ei.value.code == emad.EDTYPE


@CONFIG
def test_configure_changes_the_decay_but_not_immutable_options(client):
    client.create("m", decay=0.5, buffers="copy")
    client.push("m", 1, {"w": np.zeros(4, np.float32)})
    client.configure("m", decay=0.75)
    assert client.get_config("m")["decay"] == [0.75]
    client.push("m", 2, {"w": np.ones(4, np.float32)})
    assert np.array_equal(client.pull("m")["w"], np.full(4, 0.25, np.float32))
    with pytest.raises(emad.Error) as ei:
        client.configure("m", buffers="average")
    assert ei.value.code == emad.EIMMUTABLE
    assert client.get_config("m")["buffers"] == "copy"


@CONFIG
def test_update_after_step_copies_until_then(client):
    client.create("m", decay=0.5, update_after_step=2)
    for step in (1, 2):
        client.push("m", step, {"w": np.full(3, float(step), np.float32)})
    assert np.array_equal(client.pull("m")["w"], np.full(3, 2.0, np.float32))  # copied
    client.push("m", 3, {"w": np.full(3, 4.0, np.float32)})
    assert np.array_equal(client.pull("m")["w"], np.full(3, 3.0, np.float32))  # averaged


@CONFIG
def test_nonfinite_reject_and_skip(client):
    bad = np.array([1.0, np.nan, 3.0], np.float32)
    client.create("r", decay=0.5)
    client.push("r", 1, {"w": np.ones(3, np.float32), "v": np.ones(2, np.float32)})
    with pytest.raises(emad.Error) as ei:
        client.push("r", 2, {"w": bad, "v": np.zeros(2, np.float32)})
    assert ei.value.code == emad.ENONFINITE and "'w'" in str(ei.value)
    sd = client.pull("r")
    assert sd.step == 1 and np.array_equal(sd["w"], np.ones(3, np.float32))
    assert np.array_equal(sd["v"], np.ones(2, np.float32))  # nothing of the push applied
    client.create("s", decay=0.5, nonfinite="skip")
    client.push("s", 1, {"w": np.ones(3, np.float32), "v": np.ones(2, np.float32)})
    res = client.push("s", 2, {"w": bad, "v": np.zeros(2, np.float32)})
    assert res.skipped == 1 and res.applied == 1
    sd = client.pull("s")
    assert np.array_equal(sd["w"], np.ones(3, np.float32))
    assert np.array_equal(sd["v"], np.full(2, 0.5, np.float32))


@CONFIG
def test_copy_and_ignore_patterns(client):
    client.create("m", decay=0.5, copy=["*.copied"], ignore=["aux.*"])
    client.push("m", 1, {"a.copied": np.zeros(2, np.float32), "a.avg": np.zeros(2, np.float32),
                         "aux.x": np.zeros(2, np.float32)})
    res = client.push("m", 2, {"a.copied": np.ones(2, np.float32),
                               "a.avg": np.ones(2, np.float32), "aux.x": np.ones(2, np.float32)})
    assert res.ignored == 1
    sd = client.pull("m")
    assert set(sd) == {"a.copied", "a.avg"}
    assert np.array_equal(sd["a.copied"], np.ones(2, np.float32))
    assert np.array_equal(sd["a.avg"], np.full(2, 0.5, np.float32))


@CONFIG
def test_buffers_average_keeps_integer_buffers_copied(client):
    client.create("m", decay=0.5, buffers="average")
    client.push("m", 1, {"w": np.zeros(2, np.float32)},
                {"mean": np.zeros(2, np.float32), "n": np.int64(1)})
    client.push("m", 2, {"w": np.ones(2, np.float32)},
                {"mean": np.ones(2, np.float32), "n": np.int64(7)})
    sd = client.pull("m")
    assert np.array_equal(sd["mean"], np.full(2, 0.5, np.float32)) and sd["n"] == 7


@CONFIG
def test_step_gap_compensate_uses_the_product_of_the_decays(client):
    client.create("m", decay=0.9, step_gap="compensate")
    client.push("m", 1, {"w": np.zeros(4, np.float32)})
    client.push("m", 4, {"w": np.ones(4, np.float32)})  # three steps at a constant value
    want = 1.0 - 0.9 ** 3
    assert np.allclose(client.pull("m")["w"], want, rtol=1e-6, atol=0)


@CONFIG
@needs("push_as")
def test_two_writers_push_shards_and_the_step_appears_when_both_did(client):
    rng = np.random.default_rng(2)
    w1, w2 = (rng.standard_normal((4, 6), dtype=np.float32) for _ in range(2))
    client.create("m", decay=0.5, writers=2)

    def push_halves(step, w):
        flat = w.reshape(-1)
        r0 = client.push("m", step, {"w": emad.Shard(flat[:10], w.shape, 0)}, writer=0)
        mid = client.pull("m") if step > 1 else None
        r1 = client.push("m", step, {"w": emad.Shard(flat[10:], w.shape, 10)}, writer=1)
        return r0, mid, r1

    r0, _, r1 = push_halves(1, w1)
    assert r0.pending and not r1.pending and r1.step == 1
    r0, mid, r1 = push_halves(2, w2)
    assert r0.pending and mid.step == 1 and np.array_equal(mid["w"], w1)  # step 2 not visible
    sd = client.pull("m")
    assert sd.step == 2 and np.array_equal(sd["w"], ema([w1, w2], 0.5))
    with pytest.raises(emad.Error):
        client.push("m", 3, {"w": w1}, writer=2)  # writers are 0 and 1


@needs("push_as")
def test_overlapping_shards_are_refused(client):
    if not _has_config():
        pytest.skip("needs emad_create_config for writers=2")
    client.create("m", decay=0.5, writers=2)
    w = np.ones(8, np.float32)
    client.push("m", 1, {"w": emad.Shard(w[:5], w.shape, 0)}, writer=0)
    with pytest.raises(emad.Error) as ei:
        client.push("m", 1, {"w": emad.Shard(w[4:], w.shape, 4)}, writer=1)
    assert ei.value.code in (emad.EOVERLAP, emad.ERANGE)


def _has_config():
    from emad._lib import lib

    return lib().has("create_config")
