"""examples/train.py and examples/evaluate.py run together against a local daemon."""

import math
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from conftest import TOP, scaled  # noqa: E402

EXAMPLES = os.path.join(TOP, "examples")
LINE = re.compile(r"^step (\d+) ema_loss (\S+) ema_acc (\S+) pull_ms (\S+)$")


def test_trainer_and_evaluator_side_by_side(daemon, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.join(TOP, "client", "python"),
               PYTHONDONTWRITEBYTECODE="1")
    steps = 120
    common = ["--url", daemon.url, "--model", "ex"]
    evaluator = subprocess.Popen(
        [sys.executable, os.path.join(EXAMPLES, "evaluate.py"), "--interval", "0.2",
         "--until-step", str(steps), "--timeout", str(scaled(600))] + common,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        trainer = subprocess.run(
            [sys.executable, os.path.join(EXAMPLES, "train.py"), "--steps", str(steps),
             "--sleep", "0.02", "--batch", "32"] + common,
            env=env, capture_output=True, text=True, timeout=scaled(900))
        assert trainer.returncode == 0, trainer.stderr
        assert "done: %d steps" % steps in trainer.stdout
        out, err = evaluator.communicate(timeout=scaled(900))
    finally:
        if evaluator.poll() is None:
            evaluator.kill()
            evaluator.wait()
    assert evaluator.returncode == 0, err
    lines = [LINE.match(line) for line in out.splitlines()]
    assert lines and all(lines), out
    evaluated = [(int(m.group(1)), float(m.group(2))) for m in lines]
    got_steps = [s for s, _ in evaluated]
    assert got_steps == sorted(set(got_steps)), out  # strictly increasing
    assert len(got_steps) >= 3 and got_steps[-1] == steps, out
    assert all(math.isfinite(loss) for _, loss in evaluated), out
    # the EMA model learns: the last loss is below the first evaluated one
    assert evaluated[-1][1] < evaluated[0][1], out
