#!/usr/bin/python3
"""Trainer overhead: how long emad's push blocks a training loop, next to in-process EMAs.

One model (an MLP of ``--params`` float32 parameters, default 4M for a quick
run; ``--params 100e6`` is the figure of bench/RESULTS.md), trained on the
CPU with 1 and then 2 torch threads (``--threads 1,2``). Each step trains on
a batch, then times, one after the other, what a user could pick to keep an
EMA of the weights:

- the reference formula, ``shadow.sub_((1. - decay) * (shadow - param))``
  per parameter (the reference EMA example; buffers copied);
- ``shadow.lerp_(param, 1. - decay)`` per parameter (ema-pytorch, timm's
  ModelEmaV2 spelling);
- ``torch._foreach_lerp_(shadows, params, 1. - decay)`` (timm ModelEmaV3),
  or, on a torch without it, ``_foreach_mul_`` + ``_foreach_add_`` (its
  fallback);
- ``push_module(..., wait=False)``: the time the call blocks the loop (the
  capture; the send overlaps the next step).

Then a few ``push_module(..., wait=True)`` are timed (the whole round trip).
With ``--ddp N`` (default 2; 0 skips it), N processes joined by gloo on the
loopback each push their 1/N of the same model (``push_module`` reads rank
and world size from torch.distributed) and time it per rank, next to one
process pushing the whole model.
Every method keeps its own shadow; at the end each is compared with the
daemon's EMA (the reference formula must be bit-identical; the others are
reported as they are).

    bench/bench_trainer.py [--params 4e6] [--threads 1,2] [--ddp 2] [--steps 10] [--url URL]
                           [--emad PATH]

Without --url it starts its own emad (EMAD_BIN, else ./emad of the build
tree) on a free loopback port with a temporary state dir. Needs the emad
package (PYTHONPATH=client/python) and libemad (EMAD_LIBRARY or the build
tree). The default size runs in seconds; 100M parameters take a few
minutes on 2 cores.
"""

import argparse
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "client", "python"))
import emad  # noqa: E402


class InProcessEMA:
    """One in-process EMA of a model's parameters (buffers copied), updated by `how`."""

    def __init__(self, model, decay, how):
        self.decay, self.how = decay, how
        self.params = [p for p in model.parameters()]
        self.buffers = [b for b in model.buffers()]
        with torch.no_grad():
            self.shadow = [p.detach().clone() for p in self.params]
            self.shadow_buffers = [b.detach().clone() for b in self.buffers]

    @torch.no_grad()
    def update(self):
        c = 1. - self.decay
        if self.how == "reference":
            for s, p in zip(self.shadow, self.params):
                s.sub_(c * (s - p))
        elif self.how == "lerp":
            for s, p in zip(self.shadow, self.params):
                s.lerp_(p, c)
        elif hasattr(torch, "_foreach_lerp_"):
            torch._foreach_lerp_(self.shadow, self.params, c)
        else:  # timm ModelEmaV3's fallback
            torch._foreach_mul_(self.shadow, self.decay)
            torch._foreach_add_(self.shadow, self.params, alpha=c)
        for s, b in zip(self.shadow_buffers, self.buffers):
            s.copy_(b)

    def state(self, model):
        names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
        return dict(zip(names, self.shadow + self.shadow_buffers))


METHODS = [("reference", "reference formula sub_(c * (s - p))"),
           ("lerp", "lerp_ per tensor"),
           ("foreach", "torch._foreach_lerp_" if hasattr(torch, "_foreach_lerp_")
            else "torch._foreach_mul_/add_ (no _foreach_lerp_ in this torch)")]


def make_model(params, layers):
    """An MLP of `layers` Linear(width, width) + LayerNorm with about `params` parameters."""
    width = max(8, int(round(math.sqrt(params / layers) / 8)) * 8)
    torch.manual_seed(0)
    mods = []
    for _ in range(layers):
        mods += [nn.Linear(width, width), nn.LayerNorm(width), nn.ReLU()]
    return nn.Sequential(*mods), width


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


def run(args, url, threads):
    """One loop with `threads` torch threads: {label: [seconds per step]}, exactness per method."""
    torch.set_num_threads(threads)
    model, _ = make_model(args.params, args.layers)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch, model[0].in_features)
    emas = {key: InProcessEMA(model, args.decay, key) for key, _ in METHODS}
    times = {key: [] for key, _ in METHODS}
    times.update(train=[], push_async=[], push_sync=[])

    def train():
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()

    with emad.Client(url, timeout=600) as client:
        name = "bench-trainer-%d-%d" % (os.getpid(), threads)
        client.create(name, decay=args.decay)
        client.push_module(name, model, 0)  # every EMA starts from the initial weights
        step = 0
        for i in range(2 + args.steps):
            step += 1
            t0 = time.perf_counter()
            train()
            times_step = {"train": time.perf_counter() - t0}
            for key, _ in METHODS:
                t0 = time.perf_counter()
                emas[key].update()
                times_step[key] = time.perf_counter() - t0
            t0 = time.perf_counter()
            client.push_module(name, model, step, wait=False)
            times_step["push_async"] = time.perf_counter() - t0
            if i >= 2:  # two warm-up steps
                for k, v in times_step.items():
                    times[k].append(v)
        client.flush()
        for _ in range(args.sync_steps):
            step += 1
            train()
            for ema in emas.values():
                ema.update()
            t0 = time.perf_counter()
            client.push_module(name, model, step, wait=True)
            times["push_sync"].append(time.perf_counter() - t0)
        sd = client.pull_state_dict(name)
        health = client.health()
        exact = {}
        for key, ema in emas.items():
            want = ema.state(model)
            exact[key] = sd.step == step and all(torch.equal(sd[k], want[k]) for k in want)
        client.drop(name)
    return times, exact, health


def ddp_rank(args):
    """One rank of the --ddp run (a subprocess): push 1/N of the model per step, timed."""
    import json

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % args.ddp_port,
                            rank=args.ddp_rank, world_size=args.ddp)
    model, _ = make_model(args.params, args.layers)
    name = "bench-ddp-%d" % args.ddp_port
    times = {"async": [], "sync": []}
    with emad.Client(args.url, timeout=600) as client:
        if args.ddp_rank == 0:
            client.create(name, decay=args.decay, writers=args.ddp)
        dist.barrier()
        for step in range(1, 3 + args.steps + args.sync_steps):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1e-3)
            dist.barrier()  # every rank starts the step together
            wait = step > 2 + args.steps
            t0 = time.perf_counter()
            client.push_module(name, model, step, wait=wait)
            dt = time.perf_counter() - t0
            if step > 2:
                times["sync" if wait else "async"].append(dt)
            client.flush()  # untimed: the next step's capture finds a free buffer, as
            # it would after a training step longer than the send
        h = client.health()
        dist.barrier()
        if args.ddp_rank == 0:
            client.drop(name)
    print(json.dumps(dict(times, bytes=h["bytes"], sent=h["sent"], rank=args.ddp_rank)))
    dist.destroy_process_group()
    return 0


def run_ddp(args, url):
    """Start --ddp ranks of this script; print each rank's blocking times."""
    import json

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    base = [sys.executable, os.path.abspath(__file__), "--url", url, "--params", str(args.params),
            "--layers", str(args.layers), "--steps", str(args.steps), "--sync-steps",
            str(args.sync_steps), "--ddp", str(args.ddp), "--ddp-port", str(port)]
    procs = [subprocess.Popen(base + ["--ddp-rank", str(r)], env=env, stdout=subprocess.PIPE)
             for r in range(args.ddp)]
    results = []
    for p in procs:
        out = p.communicate(timeout=3600)[0].decode()
        if p.returncode != 0:
            raise SystemExit("bench_trainer: a --ddp rank failed")
        results.append(json.loads(out.strip().splitlines()[-1]))
    print("\n  %d ranks (gloo on the loopback, 1 torch thread each), each pushing its part:"
          % args.ddp)
    for r in results:
        print("  rank %d: %5.1f MB per step; push_module(wait=False) median %6.1f ms, "
              "wait=True median %6.1f ms" % (r["rank"], r["bytes"] / r["sent"] / 1e6,
                                             ms(r["async"]), ms(r["sync"])))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="use a running daemon instead of starting one")
    ap.add_argument("--emad", default=os.environ.get("EMAD_BIN") or os.path.join(TOP, "emad"),
                    help="daemon binary to start (default $EMAD_BIN or ./emad)")
    ap.add_argument("--params", type=float, default=4e6,
                    help="model size in parameters (default 4e6; the issue's figure: 100e6)")
    ap.add_argument("--layers", type=int, default=6, help="Linear(width, width) layers")
    ap.add_argument("--threads", default="1,2", help="torch thread counts, one run each")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--sync-steps", type=int, default=3, help="timed wait=True pushes after")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--decay", type=float, default=0.999)
    ap.add_argument("--ddp", type=int, default=2, help="ranks of the data-parallel run (0: none)")
    ap.add_argument("--ddp-rank", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ddp-port", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ddp_rank is not None:
        return ddp_rank(args)
    threads = [int(t) for t in args.threads.split(",") if t]

    model, width = make_model(args.params, args.layers)
    nparams = sum(p.numel() for p in model.parameters())
    del model
    print("bench_trainer: MLP of %d x Linear(%d, %d): %.1fM params (%.0f MB float32), %d timed "
          "steps, torch %s, libemad %s" % (args.layers, width, width, nparams / 1e6,
                                           nparams * 4 / 1e6, args.steps, torch.__version__,
                                           emad.library_version()), flush=True)
    workdir = tempfile.mkdtemp(prefix="emad-bench-")
    proc = None
    ok = True
    try:
        url = args.url
        if not url:
            proc, url = start_daemon(args.emad, workdir)
        for n in threads:
            times, exact, health = run(args, url, n)
            print("\n  %d torch thread%s: train step median %.1f ms" % (
                n, "" if n == 1 else "s", ms(times["train"])))
            print("  %-58s %9s %9s %9s  %s" % ("blocks the loop for", "median", "min", "max",
                                              "daemon EMA"))
            rows = [(label, times[key], "bit-identical" if exact[key] else "differs")
                    for key, label in METHODS]
            rows.append(("push_module(wait=False) (capture only)", times["push_async"],
                         "is the reference"))
            rows.append(("push_module(wait=True) (whole round trip)", times["push_sync"], ""))
            for label, ts, note in rows:
                if ts:
                    print("  %-58s %6.1f ms %6.1f ms %6.1f ms  %s" % (
                        label, ms(ts), min(ts) * 1000, max(ts) * 1000, note))
            print("  ratio push(wait=False) / reference %.3f, / lerp_ %.3f, / foreach %.3f; "
                  "pushes skipped %d" % tuple(
                      [ms(times["push_async"]) / ms(times[k]) for k, _ in METHODS]
                      + [health["skipped"]]))
            ok = ok and exact["reference"] and health["skipped"] == 0
        if args.ddp > 1:
            run_ddp(args, url)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    if not ok:
        print("bench_trainer: the daemon's EMA DIFFERS from the reference formula, or pushes "
              "were skipped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
