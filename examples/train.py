#!/usr/bin/python3
"""Train a small CNN with BatchNorm on synthetic data and push it to emad.

Runs without any download: the data are random 3x16x16 images labelled by a
fixed random "teacher" (a linear map), so the task is learnable and the
loss falls. Each step (or every --push-every steps) the model goes to the
daemon with ``push_module(..., wait=False)``: the call returns once the
tensors are copied and a background thread sends them. If the daemon goes
away, pushes are skipped (counted, one warning a minute) and resume when it
is back; the model is created with ``step_gap="compensate"`` so the next
push after a gap catches the EMA up. At the end the EMA is evaluated in
this process (``client.averaged``: the EMA weights swapped in, the raw ones
back after) and the client's counters are printed.

    emad --listen tcp://127.0.0.1:7470 &
    python3 examples/train.py --steps 500
    python3 examples/evaluate.py           # in another terminal

Needs the emad package on PYTHONPATH (client/python) and libemad
(EMAD_LIBRARY or an installed one); evaluate.py imports make_model() and
make_data() from here.
"""

import argparse
import sys
import time

import torch
from torch import nn

import emad

IMAGE = (3, 16, 16)
CLASSES = 10


def make_model(seed=0):
    """The CNN both scripts use: two conv blocks with BatchNorm, then a linear head."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32 * 4, CLASSES))


def make_data(n, seed):
    """n synthetic examples (inputs, labels); the teacher is the same for every seed.

    The label is the argmax of a fixed random linear map of the 12 channel
    means over the image's quadrants: learnable by the CNN above.
    """
    teacher = torch.randn(IMAGE[0] * 4, CLASSES, generator=torch.Generator().manual_seed(12345))
    x = torch.randn((n,) + IMAGE, generator=torch.Generator().manual_seed(seed))
    c, h, w = IMAGE
    quadrants = x.view(n, c, 2, h // 2, 2, w // 2).mean((3, 5)).flatten(1)
    return x, (quadrants @ teacher).argmax(1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default=None, help="daemon URL (default $EMAD_SERVER or "
                    "tcp://127.0.0.1:7470)")
    ap.add_argument("--user", default=None, help="authenticate as this user (default: the "
                    "key file's user, or $EMAD_USER)")
    ap.add_argument("--key-file", default=None, help="the user's key file, for a daemon with "
                    "--auth-file (default $EMAD_KEY_FILE; none: not authenticated)")
    ap.add_argument("--model", default="example-cnn", help="model name on the daemon")
    ap.add_argument("--decay", type=float, default=0.99)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--push-every", type=int, default=1, metavar="K", help="push every K steps")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--sleep", type=float, default=0.0,
                    help="seconds to wait after each step (to watch a slow run)")
    ap.add_argument("--drop", action="store_true", help="drop the model first (a fresh run)")
    args = ap.parse_args(argv)

    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    x_all, y_all = make_data(args.steps * args.batch, seed=1)

    with emad.Client(args.url, user=args.user, key_file=args.key_file) as client:
        if args.drop and args.model in [m.name for m in client.list()]:
            client.drop(args.model)
        client.create(args.model, decay=args.decay, step_gap="compensate", exist_ok=True)
        client.push_module(args.model, model, 0)  # the EMA starts from the initial weights
        t0 = time.monotonic()
        for step in range(1, args.steps + 1):
            lo = (step - 1) * args.batch
            x, y = x_all[lo:lo + args.batch], y_all[lo:lo + args.batch]
            model.train()
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            if step % args.push_every == 0 or step == args.steps:
                client.push_module(args.model, model, step, wait=False)
            if step % 50 == 0 or step == args.steps:
                print("train step %d loss %.4f (%.1f steps/s)"
                      % (step, loss.item(), step / (time.monotonic() - t0)), flush=True)
            if args.sleep:
                time.sleep(args.sleep)
        client.flush()
        x_val, y_val = make_data(1024, seed=2)
        model.eval()
        with torch.no_grad():
            with client.averaged(model, args.model) as at:
                ema_loss = nn.functional.cross_entropy(model(x_val), y_val).item()
            raw_loss = nn.functional.cross_entropy(model(x_val), y_val).item()
        h = client.health()
        print("validation loss: EMA (step %d) %.4f, raw weights %.4f; pushes sent %d, "
              "skipped %d, reconnects %d, steps lost %d" % (
                  at.step, ema_loss, raw_loss, h["sent"], h["skipped"], h["reconnects"],
                  h["steps_lost"]), flush=True)
    # leaving the with block flushed the last push
    print("done: %d steps pushed to %s" % (args.steps, args.model), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
