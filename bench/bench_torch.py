#!/usr/bin/python3
"""The reference EMA update in PyTorch against emad's kernels, same sizes, same run.

The reference formula ``shadow.sub_((1 - decay) * (shadow - param))`` (the
reference EMA example's update) runs in PyTorch on the CPU over a 256 MiB
float32 shadow (67,108,864 elements, the size bench_kernel uses) with a
float32 parameter, then with BF16 and F16 parameters into the same float32
shadow; two extra float32 rows: ``shadow.lerp_(param, 1 - decay)`` (lerp_
wants one dtype) and the formula with its temporary preallocated
(``torch.sub(shadow, param, out=tmp).mul_(1 - decay)``, then ``sub_``); each with ``torch.set_num_threads(1)`` and
``(2)``. Throughput is counted as emad's kernels are: 12 bytes per element
(read shadow, read value, write shadow), GB/s = 1e9 bytes/s, median of
--runs timed runs after a warm-up.

In the same run it starts ``bench_kernel --tsv --isa auto`` (the kernels the
daemon picks on this CPU) with the same size and runs, and prints emad's
rate as a multiple of PyTorch's for 1 and 2 threads.

    bench/bench_torch.py --kernel bench/bench_kernel [--mib 256] [--runs 5]

Needs PyTorch (Debian: python3-torch, for /usr/bin/python3). About 30 s on
a 2-core machine.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

try:
    import torch
except ImportError:
    sys.exit("bench_torch: PyTorch is not installed for %s (Debian: python3-torch; "
             "run with /usr/bin/python3)" % sys.executable)

DECAY = 0.999
BYTES_PER_ELEMENT = 12  # read shadow, read value, write shadow (as bench_kernel counts)
# (update, parameter dtype): the reference formula for each parameter dtype, then lerp_.
ROWS = [("reference", "F32"), ("reference", "BF16"), ("reference", "F16"), ("prealloc", "F32"),
        ("lerp_", "F32")]


def median_seconds(fn, runs):
    """Median wall time of runs calls of fn, after one untimed call."""
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_rates(numel, runs):
    """GB/s of each PyTorch row, for 1 and 2 threads: {(row, threads): GB/s}."""
    idx = torch.arange(numel, dtype=torch.int64)
    shadow = (idx % 1000).to(torch.float32).mul_(0.001)
    param = ((idx + 500) % 1000).to(torch.float32).mul_(0.001)
    del idx
    params = {"F32": param, "BF16": param.to(torch.bfloat16), "F16": param.to(torch.float16)}
    c = 1.0 - DECAY

    def reference(value):
        return lambda: shadow.sub_(c * (shadow - value))

    tmp = torch.empty_like(shadow)

    def prealloc(value):
        return lambda: shadow.sub_(torch.sub(shadow, value, out=tmp).mul_(c))

    updates = {"reference": reference, "prealloc": prealloc,
               "lerp_": lambda value: lambda: shadow.lerp_(value, c)}
    rates = {}
    with torch.no_grad():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for name, dt in ROWS:
                sec = median_seconds(updates[name](params[dt]), runs)
                rates[(name, dt, threads)] = BYTES_PER_ELEMENT * numel / sec / 1e9
    if not torch.isfinite(shadow).all():
        sys.exit("bench_torch: the shadow is not finite after the runs")
    return rates


def emad_rates(kernel, mib, runs):
    """bench_kernel --tsv of the default kernels: (isa, {(dtype, threads): GB/s})."""
    out = subprocess.run([kernel, "--tsv", "--isa", "auto", "--mib", str(mib), "--runs", str(runs)],
                         check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout
    isa, rates = None, {}
    for line in out.splitlines():
        f = line.split("\t")
        if f[0] == "default":
            isa = f[1]
        elif f[0] == "ema":
            rates[(f[2], int(f[3]))] = float(f[4])
    if isa is None or not rates:
        sys.exit("bench_torch: no kernel rows from %s --tsv:\n%s" % (kernel, out))
    return isa, rates


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernel", required=True, help="the bench_kernel binary")
    ap.add_argument("--mib", type=int, default=256, help="float32 shadow size (default 256)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per row (default 5)")
    args = ap.parse_args()
    if not os.access(args.kernel, os.X_OK):
        sys.exit("bench_torch: %s is not an executable bench_kernel" % args.kernel)
    numel = args.mib * 1024 * 1024 // 4

    print("bench_torch: PyTorch %s (CPU, %s) against emad's kernels, %d MiB float32 shadow "
          "(%d elements),\n  GB/s with %d bytes/element, median of %d runs after a warm-up"
          % (torch.__version__, sys.executable, args.mib, numel, BYTES_PER_ELEMENT, args.runs))
    sys.stdout.flush()
    trates = torch_rates(numel, args.runs)
    isa, erates = emad_rates(args.kernel, args.mib, args.runs)

    labels = {"reference": "shadow.sub_((1-d) * (shadow - param))",
              "lerp_": "shadow.lerp_(param, 1-d)",
              "prealloc": "shadow.sub_(torch.sub(shadow, param, out=tmp).mul_(1-d))"}
    print("  emad: bench_kernel %s kernels (the daemon's on this CPU), same size, same run"
          % isa)
    w = max(len(label) for label in labels.values())
    print("  %-*s %-5s %8s %8s %6s   %8s %8s %6s"
          % (w, "PyTorch update", "param", "torch 1", "emad 1", "x", "torch 2", "emad 2", "x"))
    for name, dt in ROWS:
        cells = []
        for threads in (1, 2):
            t, e = trates[(name, dt, threads)], erates[(dt, threads)]
            cells.append("%8.2f %8.2f %6.1f" % (t, e, e / t))
        print("  %-*s %-5s %s   %s" % (w, labels[name], dt, cells[0], cells[1]))
    print("  (columns: GB/s with 1 and 2 threads; x = emad's rate as a multiple of PyTorch's)")


if __name__ == "__main__":
    main()
