#!/usr/bin/python3
"""Trainer overhead: how long push_module blocks a training loop, next to an in-process EMA.

One run, one model (an MLP of ~100M float32 parameters, on the CPU), one
loop: each step trains on a batch, updates the reference EMA example's
shadow in process (``shadow.sub_((1. - decay) * (shadow - param))`` for
every parameter, buffers copied) and calls ``push_module(..., wait=False)``.
Both the reference update and the push are timed per step; the medians and
their ratio are printed (target: the push blocks for less than a quarter of
the in-process update). A few synchronous pushes (``wait=True``) are timed
afterwards for context, and the daemon's EMA is checked against the
reference shadow (it must be bit-identical), so the timed pushes are known
to have done their work.

    bench/bench_trainer.py [--steps 10] [--url URL] [--emad PATH]

Without --url it starts its own emad (EMAD_BIN, else ./emad of the build
tree) on a free loopback port with a temporary state dir. Needs the emad
package (PYTHONPATH=client/python) and libemad (EMAD_LIBRARY or the build
tree). Runs in about a minute on a 2-core machine.
"""

import argparse
import copy
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict

import torch
from torch import nn

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "client", "python"))
import emad  # noqa: E402


class ReferenceEMA:
    """The reference example's update (tf.train.ExponentialMovingAverage replica)."""

    def __init__(self, model, decay):
        self.decay = decay
        self.model = model
        self.shadow = copy.deepcopy(model)
        for p in self.shadow.parameters():
            p.detach_()

    @torch.no_grad()
    def update(self):
        model_params = OrderedDict(self.model.named_parameters())
        shadow_params = OrderedDict(self.shadow.named_parameters())
        for name, param in model_params.items():
            shadow_params[name].sub_((1. - self.decay) * (shadow_params[name] - param))
        shadow_buffers = OrderedDict(self.shadow.named_buffers())
        for name, buffer in self.model.named_buffers():
            shadow_buffers[name].copy_(buffer)


def make_model(width, layers):
    torch.manual_seed(0)
    mods = []
    for _ in range(layers):
        mods += [nn.Linear(width, width), nn.LayerNorm(width), nn.ReLU()]
    return nn.Sequential(*mods)


def start_daemon(binary, workdir):
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = "tcp://127.0.0.1:%d" % port
        log = open(os.path.join(workdir, "emad.log"), "ab")
        proc = subprocess.Popen([binary, "--listen", url, "--state-dir",
                                 os.path.join(workdir, "state"), "--log-level", "warn"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return proc, url
            except OSError:
                time.sleep(0.01)
        proc.kill()
        proc.wait()
    raise SystemExit("bench_trainer: emad did not start (log in %s)" % workdir)


def ms(xs):
    return statistics.median(xs) * 1000


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="use a running daemon instead of starting one")
    ap.add_argument("--emad", default=os.environ.get("EMAD_BIN") or os.path.join(TOP, "emad"),
                    help="daemon binary to start (default $EMAD_BIN or ./emad)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--sync-steps", type=int, default=3, help="timed wait=True pushes after")
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=6, help="Linear(width, width) layers")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--decay", type=float, default=0.999)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = make_model(args.width, args.layers)
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch, args.width)
    print("bench_trainer: %.1fM params (%.0f MB float32), %d timed steps, torch %s with %d "
          "thread(s), libemad %s" % (nparams / 1e6, nparams * 4 / 1e6, args.steps,
                                     torch.__version__, torch.get_num_threads(),
                                     emad.library_version()), flush=True)

    workdir = tempfile.mkdtemp(prefix="emad-bench-")
    proc = None
    try:
        if args.url:
            url = args.url
        else:
            proc, url = start_daemon(args.emad, workdir)
        ref = ReferenceEMA(model, args.decay)
        with emad.Client(url, timeout=120) as client:
            name = "bench-trainer-%d" % os.getpid()
            client.create(name, decay=args.decay)
            client.push_module(name, model, 0)  # the EMA starts from the initial weights
            t_train, t_ref, t_push = [], [], []
            step = 0
            for i in range(2 + args.steps):
                step += 1
                t0 = time.perf_counter()
                opt.zero_grad()
                model(x).pow(2).mean().backward()
                opt.step()
                t1 = time.perf_counter()
                ref.update()
                t2 = time.perf_counter()
                client.push_module(name, model, step, wait=False)
                t3 = time.perf_counter()
                if i >= 2:
                    t_train.append(t1 - t0)
                    t_ref.append(t2 - t1)
                    t_push.append(t3 - t2)
            t0 = time.perf_counter()
            client.flush()
            t_flush = time.perf_counter() - t0
            t_sync = []
            for _ in range(args.sync_steps):
                step += 1
                opt.zero_grad()
                model(x).pow(2).mean().backward()
                opt.step()
                ref.update()
                t0 = time.perf_counter()
                client.push_module(name, model, step, wait=True)
                t_sync.append(time.perf_counter() - t0)
            sd = client.pull_state_dict(name)
            want = ref.shadow.state_dict()
            exact = sd.step == step and all(torch.equal(sd[k], want[k]) for k in want)
            client.drop(name)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    ratio = ms(t_push) / ms(t_ref)
    print("  train step (forward, backward, SGD)   median %8.1f ms" % ms(t_train))
    print("  reference EMA update, in process      median %8.1f ms  (min %.1f, max %.1f)"
          % (ms(t_ref), min(t_ref) * 1000, max(t_ref) * 1000))
    print("  push_module(wait=False) blocking      median %8.1f ms  (min %.1f, max %.1f)"
          % (ms(t_push), min(t_push) * 1000, max(t_push) * 1000))
    print("  ratio push / reference update         %8.3f     (target < 0.25: %s)"
          % (ratio, "met" if ratio < 0.25 else "NOT met"))
    if t_sync:
        print("  push_module(wait=True), for context   median %8.1f ms  (%d pushes)"
              % (ms(t_sync), len(t_sync)))
    print("  final flush %.1f ms; daemon EMA %s the reference shadow at step %d"
          % (t_flush * 1000, "bit-identical to" if exact else "DIFFERS from", step))
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
