"""Pushes that never hurt training: a daemon away, back, or restarted behind the trainer.

Expected values are computed here with numpy (the reference formula in
float32, and the exact per-step EMA the compensation approximates); no test
measures speed: "did not wait" is shown by the order of events (the pushes
made while the daemon is away all return while the push in flight when it
went away is still pending).
"""

import time
import warnings

import numpy as np
import pytest

import emad
from conftest import scaled

DECAY = 0.9


def reference(pushes, decay, compensate=True):
    """float32 EMA of the (step, value) pushes as the daemon applies them.

    The first push copies; a push at step t after one at step s uses the
    decay d ** (t - s) with step_gap="compensate" (c = float32(1 - D), the
    subtraction in double), else d.
    """
    (s, shadow), rest = pushes[0], pushes[1:]
    shadow = shadow.astype(np.float32).copy()
    for t, v in rest:
        big_d = decay ** (t - s) if compensate else decay
        c = np.float32(1.0 - big_d)
        shadow = shadow - c * (shadow - v.astype(np.float32))
        s = t
    return shadow


def exact_ema(values, decay):
    """The per-step EMA in float64 of every step's value (what a skipped stretch loses)."""
    shadow = values[0].astype(np.float64)
    for v in values[1:]:
        shadow = decay * shadow + (1.0 - decay) * v.astype(np.float64)
    return shadow


def wait_until(cond, limit, what):
    deadline = time.monotonic() + scaled(limit)
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def values_for(steps, n=256, seed=1):
    """A random walk: the values a parameter takes during training, one per step."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.standard_normal((steps + 1, n)).astype(np.float32) * 0.1, axis=0)
    return [walk[i].astype(np.float32) for i in range(steps + 1)]  # values[step]


def test_async_pushes_skip_while_the_daemon_is_away_and_resume(daemon):
    vals = values_for(30)
    # a short request timeout, so that the push in flight when the daemon goes
    # away gives up during the test (the drops themselves never wait for it)
    client = emad.Client(daemon.url, timeout=scaled(8), warn_interval=3600)
    client.create("m", decay=DECAY, step_gap="compensate")
    for step in range(1, 11):
        client.push("m", step, {"w": vals[step]}, wait=False)
    client.flush()
    assert client.health()["sent"] == 10
    daemon.stop()

    with pytest.warns(emad.UnavailableWarning) as rec:
        for step in range(11, 21):  # the first is taken by the sender, which then waits
            assert client.push("m", step, {"w": vals[step]}, wait=False) is None
        h = client.health()
    # every later push was dropped while step 11 was still in flight: none waited for it
    assert h["pending"] == 1, h
    assert h["skipped"] == 9 and h["skipped_unavailable"] == 9, h
    assert not h["available"]
    assert len([w for w in rec if issubclass(w.category, emad.UnavailableWarning)]) == 1
    assert "skipped" in str(rec[0].message)

    wait_until(lambda: client.health()["pending"] == 0, 60, "the push in flight to give up")
    h = client.health()
    assert h["skipped"] == 10 and h["failures"] == 0, h  # dropped, not an error

    daemon.restart()  # SIGTERM wrote a snapshot at step 10: nothing lost
    wait_until(lambda: client.health()["available"], 60, "the client to reconnect")
    assert client.health()["reconnects"] >= 1
    for step in range(21, 31):
        client.push("m", step, {"w": vals[step]}, wait=False)
    client.flush()
    h = client.health()
    assert h["sent"] == 20 and h["skipped"] == 10 and h["steps_lost"] == 0, h

    got = client.pull("m")["w"]
    applied = [(s, vals[s]) for s in list(range(1, 11)) + list(range(21, 31))]
    assert np.array_equal(got, reference(applied, DECAY))  # the compensated EMA, bit for bit
    # the error the skipped stretch leaves, against the per-step EMA of every step, is
    # within the documented bound: d^(T-t) * (d - d^g) * max |x_k - x_t| over the gap
    true = exact_ema(vals[1:31], DECAY)
    err = np.abs(got.astype(np.float64) - true)
    g, t, last = 11, 21, 30
    spread = np.max(np.abs(np.stack(vals[11:21]) - vals[21]), axis=0)
    bound = DECAY ** (last - t) * (DECAY - DECAY ** g) * spread
    assert np.all(err <= bound + 1e-5), (err - bound).max()
    assert err.max() > 0  # the stretch did cost something
    client.close()


def test_policies_raise_and_block(daemon):
    client = emad.Client(daemon.url, timeout=scaled(5), connect_timeout=scaled(5))
    client.create("m", decay=0.5)
    w = np.ones(4, np.float32)
    client.push("m", 1, {"w": w})
    daemon.stop()
    with pytest.raises(emad.Error) as ei:  # synchronous default: raise
        client.push("m", 2, {"w": w})
    assert ei.value.code in (emad.ETIMEDOUT, emad.ECONNECT)
    # "skip" on a synchronous push: dropped at once now that the daemon is known away
    with pytest.warns(emad.UnavailableWarning) as rec:
        assert client.push("m", 3, {"w": w}, on_unavailable="skip") is None
    assert rec[0].filename == __file__  # pointed at the caller's line
    assert client.health()["skipped_unavailable"] == 1
    with pytest.raises(emad.Error) as ei:
        client.push("m", 3, {"w": w}, on_unavailable="sometimes")
    assert ei.value.code == emad.EINVAL

    import threading

    done = []

    def blocked_push():
        done.append(client.push("m", 4, {"w": w * 3}, on_unavailable="block"))

    th = threading.Thread(target=blocked_push)
    th.start()
    wait_until(lambda: client.health()["retries"] >= 1, 60, "a retry")
    assert not done  # still waiting for the daemon
    daemon.restart()
    th.join(scaled(120))
    assert done and done[0].applied == 1
    assert np.array_equal(client.pull("m")["w"], np.full(4, 2, np.float32))  # 1 - .5 * (1 - 3)
    client.close()


def test_errors_that_are_not_about_reachability_are_raised_under_skip(client):
    client.create("m")
    client.push("m", 1, {"w": np.ones(3, np.float32)}, wait=False)
    client.push("m", 2, {"w": np.ones(4, np.float32)}, wait=False)  # shape change
    with pytest.raises(emad.Error) as ei:
        client.flush()
    assert ei.value.code == emad.ESHAPE
    h = client.health()
    assert h["skipped"] == 0 and h["failures"] == 1 and h["sent"] == 1


def test_a_daemon_restarted_behind_the_trainer_is_reported(tmp_path):
    from conftest import Daemon

    daemon = Daemon(tmp_path, ["--snapshot-interval", "0"])
    try:
        client = emad.Client(daemon.url, timeout=scaled(10))
        client.create("m", decay=0.5)
        w = np.ones(8, np.float32)
        for step in range(1, 11):
            client.push("m", step, {"w": w})
        assert client.snapshot("m") == 10
        for step in range(11, 16):
            client.push("m", step, {"w": w})
        daemon.kill()  # no snapshot: steps 11..15 are gone
        daemon.restart()
        assert [m.step for m in client.list()] == [10]
        with pytest.warns(emad.LostStepsWarning) as rec:
            for step in range(16, 19):
                client.push("m", step, {"w": w}, wait=False)
            client.flush()
        msgs = [str(r.message) for r in rec if issubclass(r.category, emad.LostStepsWarning)]
        assert len(msgs) == 1 and "step 10" in msgs[0] and "step 15" in msgs[0], msgs
        h = client.health()
        assert h["restarts_behind"] == 1 and h["steps_lost"] == 5, h
        assert h["steps"]["m"] == 18
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # reported once: no more warnings
            client.push("m", 19, {"w": w}, wait=False)
            client.flush()
        client.close()
    finally:
        daemon.stop()


def test_a_step_going_back_in_a_reply_is_reported(tmp_path):
    """Multi-writer pushes reply with the committed step: a smaller one than seen before
    (the daemon restarted behind) is caught from the reply alone."""
    from conftest import Daemon

    daemon = Daemon(tmp_path, ["--snapshot-interval", "0"])
    try:
        client = emad.Client(daemon.url, timeout=scaled(10), check_restarts=False)
        client.create("m", decay=0.5, writers=2)
        for step in range(1, 7):
            for writer in (0, 1):
                client.push("m", step, {"w%d" % writer: np.ones(2, np.float32)}, writer=writer)
            if step == 3:
                client.snapshot("m")
        assert client.health()["steps"]["m"] == 6
        daemon.kill()
        daemon.restart()
        with pytest.warns(emad.LostStepsWarning):
            res = client.push("m", 7, {"w0": np.ones(2, np.float32)}, writer=0)
        assert res.pending and res.step == 3
        h = client.health()
        assert h["restarts_behind"] == 1 and h["steps_lost"] == 3, h
        client.close()
    finally:
        daemon.stop()


def test_the_first_asynchronous_push_may_find_the_daemon_away(daemon):
    client = emad.Client(daemon.url, timeout=scaled(8), warn_interval=3600)
    client.create("m", decay=0.5)
    client.push("m", 1, {"w": np.ones(2, np.float32)})
    daemon.stop()
    with pytest.warns(emad.UnavailableWarning):  # no background connection yet: none made
        assert client.push("m", 2, {"w": np.ones(2, np.float32)}, wait=False) is None
    assert client.health()["skipped_unavailable"] == 1
    daemon.restart()
    wait_until(lambda: client.health()["available"], 60, "the client to reconnect")
    client.push("m", 3, {"w": np.full(2, 3, np.float32)}, wait=False)
    client.flush()
    sd = client.pull("m")
    assert sd.step == 3 and sd["w"].tolist() == [2.0, 2.0]  # 1 - .5 * (1 - 3)
    client.close()


def test_pushes_resume_before_the_push_in_flight_gives_up(daemon):
    vals = values_for(25, seed=2)
    client = emad.Client(daemon.url, timeout=scaled(300), warn_interval=3600)
    client.create("m", decay=DECAY, step_gap="compensate")
    for step in range(1, 11):
        client.push("m", step, {"w": vals[step]}, wait=False)
    client.flush()
    daemon.stop()
    with pytest.warns(emad.UnavailableWarning):
        for step in range(11, 21):  # 11 is in flight when the rest are dropped
            client.push("m", step, {"w": vals[step]}, wait=False)
    daemon.restart()
    wait_until(lambda: client.health()["available"], 60, "a new connection")
    for step in range(21, 26):
        client.push("m", step, {"w": vals[step]}, wait=False)
    client.flush()  # the new sender's pushes
    h = client.health()
    # step 11 is still in flight, or went through when nanomsg resent it on reconnecting
    assert h["skipped"] == 9 and h["sent"] + h["pending"] == 16 and h["pending"] <= 1, h
    sd = client.pull("m")
    before = list(range(1, 11))
    candidates = [reference([(s, vals[s]) for s in before + extra + list(range(21, 26))], DECAY)
                  for extra in ([], [11])]
    assert sd.step == 25
    assert any(np.array_equal(sd["w"], c) for c in candidates)
    client.close()
