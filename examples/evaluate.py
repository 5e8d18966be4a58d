#!/usr/bin/python3
"""Evaluate the EMA of a training run: pull it every N seconds, print its loss.

A separate process from the trainer (examples/train.py): every --interval
seconds it pulls the model's EMA from the daemon into its own copy of the
CNN (``Client.load_into``) and prints the step the EMA came from, next to
the eval loss and accuracy of the EMA model on held-out synthetic data.
A step it has already evaluated is not evaluated again.

    python3 examples/evaluate.py --interval 2
    python3 examples/evaluate.py --until-step 300   # exit after step 300

Against a daemon with an auth file (README "Authentication"), as a user
with the `pull` grant on the model: ``--key-file eval.key`` (or
``$EMAD_KEY_FILE``). The evaluator needs nothing more: it only reads.

Output lines: ``step 120 ema_loss 1.2345 ema_acc 0.562 pull_ms 1.8``.
"""

import argparse
import os
import sys
import time

import torch
from torch import nn

import emad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import make_data, make_model  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default=None, help="daemon URL (default $EMAD_SERVER or "
                    "tcp://127.0.0.1:7470)")
    ap.add_argument("--user", default=None, help="authenticate as this user (default: the "
                    "key file's user, or $EMAD_USER)")
    ap.add_argument("--key-file", default=None, help="the user's key file, for a daemon with "
                    "--auth-file (default $EMAD_KEY_FILE; none: not authenticated)")
    ap.add_argument("--model", default="example-cnn")
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between pulls")
    ap.add_argument("--until-step", type=int, default=None,
                    help="exit after evaluating this step (or a later one)")
    ap.add_argument("--timeout", type=float, default=None, help="exit after this many seconds")
    ap.add_argument("--eval-size", type=int, default=1024)
    args = ap.parse_args(argv)

    model = make_model(seed=1)  # its own weights: everything evaluated comes from the daemon
    x, y = make_data(args.eval_size, seed=2)  # held out: the trainer uses seed 1
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    last = None
    with emad.Client(args.url, user=args.user, key_file=args.key_file) as client:
        while deadline is None or time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                info, _ = client.describe(args.model)
            except emad.Error as e:
                if e.code != emad.ENOMODEL:
                    raise
                info = None  # the trainer has not created it yet
            if info is not None and info.tensors and info.step != last:
                step = client.load_into(model, args.model)
                pull_ms = (time.monotonic() - t0) * 1000
                model.eval()
                with torch.no_grad():
                    out = model(x)
                    loss = nn.functional.cross_entropy(out, y).item()
                    acc = (out.argmax(1) == y).float().mean().item()
                print("step %d ema_loss %.4f ema_acc %.3f pull_ms %.1f"
                      % (step, loss, acc, pull_ms), flush=True)
                last = step
                if args.until_step is not None and step >= args.until_step:
                    return 0
            time.sleep(max(0.0, args.interval - (time.monotonic() - t0)))
    print("timeout", file=sys.stderr)
    return 1 if args.until_step is not None else 0


if __name__ == "__main__":
    sys.exit(main())
