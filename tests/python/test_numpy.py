"""The emad package on its numpy path against a real daemon.

Expected values are computed here with numpy's own float32 arithmetic
(``shadow -= float32(1 - d) * (shadow - value)``, rounding after each
operation), never with emad code.
"""

import numpy as np
import pytest

import emad
from conftest import Daemon, scaled


def ema_reference(values, decay):
    """float32 EMA of a list of arrays: the first copies, then the reference formula."""
    c = np.float32(1.0 - decay)
    shadow = values[0].astype(np.float32).copy()
    for v in values[1:]:
        diff = shadow - v.astype(np.float32)
        shadow = shadow - c * diff
    return shadow


def ulps(a, b):
    """Largest distance in float32 ulps between two float32 arrays of the same sign pattern."""
    ia = a.astype(np.float32).view(np.int32).astype(np.int64)
    ib = b.astype(np.float32).view(np.int32).astype(np.int64)
    return int(np.max(np.abs(ia - ib))) if ia.size else 0


def test_push_pull_matches_numpy_reference(client):
    rng = np.random.default_rng(1)
    decay = 0.9
    client.create("m", decay=decay)
    ws = [rng.standard_normal((4, 5), dtype=np.float32) for _ in range(20)]
    bs = [rng.standard_normal(7, dtype=np.float32) for _ in range(20)]
    for step, (w, b) in enumerate(zip(ws, bs), start=1):
        res = client.push("m", step, {"w": w, "b": b},
                          {"count": np.int64(step), "mask": np.arange(3) < step % 3})
        assert res.applied == 4 and res.stale == 0 and res.step == step
    sd = client.pull("m")
    assert list(sd) == ["w", "b", "count", "mask"]  # first-push order
    assert sd.step == 20 and sd.steps["w"] == 20 and sd.model == "m"
    assert sd["w"].dtype == np.float32 and sd["w"].shape == (4, 5)
    assert ulps(sd["w"], ema_reference(ws, decay)) == 0
    assert ulps(sd["b"], ema_reference(bs, decay)) == 0
    assert sd["count"].dtype == np.int64 and sd["count"].shape == () and sd["count"] == 20
    assert sd["mask"].dtype == np.bool_ and sd["mask"].tolist() == (np.arange(3) < 20 % 3).tolist()


def test_float16_and_float64_params(client):
    rng = np.random.default_rng(2)
    client.create("m", decay=0.75)
    h = [rng.standard_normal(33).astype(np.float16) for _ in range(10)]
    d = [rng.standard_normal(9) for _ in range(10)]
    for step in range(10):
        client.push("m", step, {"h": h[step], "d": d[step]})
    sd = client.pull("m")
    assert sd["h"].dtype == np.float16 and sd["d"].dtype == np.float64
    # F16 values are averaged in a float32 shadow, rounded to float16 on the way out.
    assert np.array_equal(sd["h"], ema_reference(h, 0.75).astype(np.float16))
    c = 1.0 - 0.75
    ref = d[0].copy()
    for v in d[1:]:
        ref = ref - c * (ref - v)
    assert np.array_equal(sd["d"], ref)


def test_bfloat16_numpy_path_as_uint16_bits(client):
    rng = np.random.default_rng(3)
    vals = [rng.standard_normal(16, dtype=np.float32) for _ in range(5)]
    # bfloat16 bits by truncation (exactly representable inputs), widened exactly below.
    bits = [(v.view(np.uint32) >> 16).astype(np.uint16) for v in vals]
    client.create("m", decay=0.5)
    for step, b in enumerate(bits, start=1):
        client.push("m", step, {"x": emad.Typed(b, "BF16")})
    info, tensors = client.describe("m")
    assert tensors[0].dtype == "BF16" and tensors[0].nbytes == 32
    sd = client.pull("m")
    assert sd.dtypes["x"] == "BF16"
    widened = [(b.astype(np.uint32) << 16).view(np.float32) for b in bits]
    shadow = ema_reference(widened, 0.5)
    # round to nearest even on the top 16 bits
    u = shadow.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    got = sd["x"] if emad.BFLOAT16 is None else sd["x"].view(np.uint16)
    assert np.array_equal(got, rounded)


def test_noncontiguous_and_big_endian_arrays_are_sent_by_value(client):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    strided = base[:, ::2]  # not contiguous
    assert not strided.flags.c_contiguous
    big = np.arange(5, dtype=">f4")
    client.create("m")
    client.push("m", 1, {"s": strided, "big": big, "t": base.T})
    sd = client.pull("m")
    assert np.array_equal(sd["s"], strided) and sd["s"].shape == (4, 3)
    assert sd["big"].dtype == np.dtype("<f4") and np.array_equal(sd["big"], big)
    assert np.array_equal(sd["t"], base.T)


def test_stale_steps_leave_the_average_alone(client):
    client.create("m", decay=0.5)
    client.push("m", 5, {"w": np.ones(3, np.float32)})
    res = client.push("m", 5, {"w": np.zeros(3, np.float32)})
    assert res.applied == 0 and res.stale == 1 and res.step == 5
    res = client.push("m", 4, {"w": np.zeros(3, np.float32)})
    assert res.stale == 1
    assert np.array_equal(client.pull("m")["w"], np.ones(3, np.float32))


def test_pull_selected_tensors(client):
    client.create("m")
    client.push("m", 1, {"a": np.ones(2, np.float32), "b": np.full(3, 2, np.float32)})
    sd = client.pull("m", tensors=["b"])
    assert list(sd) == ["b"] and np.array_equal(sd["b"], np.full(3, 2, np.float32))
    with pytest.raises(emad.Error) as ei:
        client.pull("m", tensors=["nope"])
    assert ei.value.code == emad.ENOTENSOR


def test_large_push_and_pull_go_through_chunks(daemon):
    # 64 KiB messages force a transaction for the push and a session for the pull.
    big = np.random.default_rng(4).standard_normal(300_000, dtype=np.float32)
    with emad.Client(daemon.url, chunk_bytes=1 << 16, max_reply_bytes=1 << 16) as c:
        c.create("m", decay=0.5)
        res = c.push("m", 1, {"big": big, "small": np.ones(3, np.float32)})
        assert res.messages > 2
        res = c.push("m", 2, {"big": -big, "small": np.zeros(3, np.float32)})
        sd = c.pull("m")
    assert ulps(sd["big"], ema_reference([big, -big], 0.5)) == 0
    assert np.array_equal(sd["small"], np.full(3, 0.5, np.float32))


def test_list_describe_drop_stats(client):
    client.create("a", decay=0.99)
    client.create("b", decay=0.5)
    client.create("a", decay=0.99, exist_ok=True)
    client.push("a", 3, {"w": np.zeros((2, 2), np.float32)}, {"n": np.int32(1)})
    models = {m.name: m for m in client.list()}
    assert set(models) == {"a", "b"}
    assert models["a"].decay == 0.99 and models["a"].step == 3 and models["a"].tensors == 2
    assert models["a"].shadow_bytes >= 20
    info, tensors = client.describe("a")
    assert info.name == "a" and info.step == 3
    assert tensors == [emad.TensorInfo("w", "param", "F32", (2, 2), 3, 16),
                       emad.TensorInfo("n", "buffer", "I32", (), 3, 4)]
    stats = client.stats()
    assert stats["models"] == 2 and stats["requests"] > 0
    client.drop("b")
    assert [m.name for m in client.list()] == ["a"]
    with pytest.raises(emad.Error) as ei:
        client.drop("b")
    assert ei.value.code == emad.ENOMODEL


def test_bad_inputs_raise_the_daemons_code_and_the_daemon_keeps_serving(client, daemon):
    client.create("m", decay=0.5)
    client.push("m", 1, {"w": np.ones(4, np.float32)}, {"n": np.int64(1)})
    cases = [
        # (callable, expected code, text that must appear in the message)
        (lambda: client.push("m", 2, {"w": np.ones(5, np.float32)}), emad.ESHAPE, "'w'"),
        (lambda: client.push("m", 2, {"w": np.ones(4, np.float64)}), emad.EKIND, "'w'"),
        (lambda: client.push("m", 2, {"w": np.ones(4, np.int32)}), emad.EDTYPE, "'w'"),
        (lambda: client.push("m", 2, {"w": np.ones(4, np.complex64)}), emad.EDTYPE, "complex"),
        (lambda: client.push("m", 2, {}, {"w": np.ones(4, np.float32)}), emad.EKIND, "'w'"),
        (lambda: client.push("nope", 1, {"w": np.ones(4, np.float32)}), emad.ENOMODEL, "nope"),
        (lambda: client.pull("nope"), emad.ENOMODEL, "nope"),
        (lambda: client.create("bad name!"), emad.ENAME, ""),
        (lambda: client.create("m", decay=0.7), emad.EEXIST, "m"),
        (lambda: client.create("x", decay=1.5), emad.ERANGE, ""),
        (lambda: client.push("m", 2, {"": np.ones(1, np.float32)}), emad.ENAME, ""),
        (lambda: client.push("m", 2, {}), emad.EINVAL, "no tensors"),
    ]
    for call, code, text in cases:
        with pytest.raises(emad.Error) as ei:
            call()
        assert ei.value.code == code, (ei.value, code)
        assert ei.value.name == "EMAD_" + next(k for k, v in emad.ERRORS.items() if v == code)[5:]
        assert text in str(ei.value)
        assert isinstance(ei.value.message, str) and ei.value.message
    # nothing of the rejected pushes was applied, and the daemon still serves
    sd = client.pull("m")
    assert sd.step == 1 and np.array_equal(sd["w"], np.ones(4, np.float32))
    res = client.push("m", 2, {"w": np.zeros(4, np.float32)}, {"n": np.int64(2)})
    assert res.applied == 2
    assert np.array_equal(client.pull("m")["w"], np.full(4, 0.5, np.float32))
    assert client.stats()["errors"] >= 5
    assert daemon.alive()


def test_connect_errors_name_the_url(tmp_path):
    url = "tcp://127.0.0.1:%d" % _dead_port()
    with pytest.raises(emad.Error) as ei:
        emad.Client(url, connect_timeout=0.3)
    assert ei.value.code == emad.ECONNECT and url in str(ei.value)


def test_several_urls_use_the_first_daemon_that_answers(daemon):
    dead = "tcp://127.0.0.1:%d" % _dead_port()
    with emad.Client([dead, daemon.url], connect_timeout=0.3) as c:
        assert c.url == daemon.url
        c.create("m")
    with emad.Client(dead + "," + daemon.url, connect_timeout=0.3) as c:
        assert [m.name for m in c.list()] == ["m"]


def test_closed_client_raises(daemon):
    c = emad.Client(daemon.url)
    c.close()
    c.close()  # again: nothing
    with pytest.raises(emad.Error) as ei:
        c.list()
    assert "closed" in str(ei.value)


def test_async_numpy_push_captures_the_values_at_call_time(client):
    client.create("m", decay=0.5)
    w = np.ones(1000, np.float32)
    client.push("m", 1, {"w": w}, wait=False)
    w[:] = 7  # changed after the call: must not leak into step 1
    client.push("m", 2, {"w": w}, wait=False)
    client.flush()
    assert np.array_equal(client.pull("m")["w"], np.full(1000, 4, np.float32))


def test_two_daemons_side_by_side_are_independent(tmp_path):
    a, b = Daemon(tmp_path / "a"), Daemon(tmp_path / "b")
    try:
        with emad.Client(a.url) as ca, emad.Client(b.url) as cb:
            ca.create("m")
            assert [m.name for m in cb.list()] == []
    finally:
        a.stop()
        b.stop()


def _dead_port():
    """A port nothing listens on (bound and released)."""
    from conftest import free_port

    return free_port()


def test_scalar_empty_and_high_rank_tensors(client):
    client.create("m", decay=0.5)
    client.create("none")
    vals = {"scalar": np.float32(2.0), "empty": np.zeros((0, 3), np.float32),
            "rank16": np.ones((1,) * 15 + (2,), np.float32)}
    client.push("m", 1, vals, {"nothing": np.zeros(0, np.int64)})
    client.push("m", 2, {k: np.zeros_like(v) for k, v in vals.items()})
    sd = client.pull("m")
    assert sd["scalar"].shape == () and sd["scalar"] == np.float32(1.0)
    assert sd["empty"].shape == (0, 3) and sd["nothing"].shape == (0,)
    assert sd["rank16"].shape == (1,) * 15 + (2,) and np.all(sd["rank16"] == 0.5)
    with pytest.raises(emad.Error) as ei:
        client.push("m", 3, {"rank17": np.ones((1,) * 17, np.float32)})
    assert ei.value.code == emad.ELIMIT
    empty = client.pull("none")
    assert dict(empty) == {} and empty.step == 0


def test_one_client_shared_by_threads(client):
    import threading

    names = ["t%d" % i for i in range(4)]
    for n in names:
        client.create(n, decay=0.5)
    errors = []

    def work(name, seed):
        try:
            rng = np.random.default_rng(seed)
            vals = [rng.standard_normal(1000, dtype=np.float32) for _ in range(10)]
            for step, v in enumerate(vals, start=1):
                client.push(name, step, {"w": v}, wait=step % 2 == 0)
            client.flush()
            assert np.array_equal(client.pull(name)["w"], ema_reference(vals, 0.5))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n, i)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(300))
    assert not errors, errors


def test_flush_with_a_timeout(client, monkeypatch):
    import threading

    import emad._client as ec

    real = ec._push_entries
    release = threading.Event()

    def held(*args):
        release.wait(scaled(300))  # the send stays in flight until the flush has timed out
        return real(*args)

    client.create("m")
    monkeypatch.setattr(ec, "_push_entries", held)
    client.push("m", 1, {"w": np.ones(2, np.float32)}, wait=False)
    with pytest.raises(emad.Error) as ei:
        client.flush(timeout=0.05)
    assert ei.value.code == emad.ETIMEDOUT
    release.set()
    client.flush()
    assert client.pull("m").step == 1


def test_push_entries_send_plain_arrays_in_place_and_convert_the_rest():
    from emad import _arrays

    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    cases = [  # (value, kind, dtype name, shape, nbytes)
        (a, 0, "F32", (2, 3), 24),
        (np.ones(5, np.float16), 0, "F16", (5,), 10),
        (np.full((), 2.5), 0, "F64", (), 8),
        (np.zeros((0, 3), np.float32), 0, "F32", (0, 3), 0),
        (np.array([True, False]), 1, "BOOL", (2,), 2),
        (np.arange(3, dtype=np.uint8), 1, "U8", (3,), 3),
        (np.arange(3, dtype=np.int64), 1, "I64", (3,), 24),
    ]
    for value, kind, dtype, shape, nbytes in cases:
        e = _arrays.make_entry("t", kind, value)
        assert (e.name, e.bname, e.kind, e.dtype, e.shape, e.nbytes) == \
            ("t", b"t", kind, dtype, shape, nbytes), value
        assert e.src is value  # sent from the caller's memory, no copy
        assert e.pointer() == (value.ctypes.data if nbytes else None)
        assert (e.offset, e.count) == (0, 0)
    # Converted first: big-endian and strided arrays become contiguous little-endian copies.
    for value in (np.arange(4, dtype=">f4"), a[:, ::2]):
        e = _arrays.make_entry("t", 0, value)
        assert e.src is not value and e.src.dtype == np.dtype("<f4") and e.src.flags.c_contiguous
        assert np.array_equal(e.src, value) and e.nbytes == value.size * 4
    # Refused as before: an integer param, a rank-17 array, a name that is not a string.
    for name, kind, value, code in [("t", 0, np.ones(2, np.int32), emad.EDTYPE),
                                    ("t", 0, np.ones((1,) * 17, np.float32), emad.ELIMIT),
                                    (b"t", 0, a, emad.ENAME), ("", 0, a, emad.ENAME)]:
        with pytest.raises(emad.Error) as ei:
            _arrays.make_entry(name, kind, value)
        assert ei.value.code == code
