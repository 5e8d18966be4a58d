#!/usr/bin/env python3
"""bench_hello.py - how long a second client waits for `hello` while each adversarial case of
tests/adversarial.py runs (target: under 100 ms on a quiet machine). Starts emad (built in
this tree) on loopback with its descriptors limited to 256 (for the idle-connection case),
then prints per case: hellos answered, the worst and the p99 latency, the case's duration.

First the anchors of this machine, figures that move with the machine and not with emad: a
round trip of a small message over TCP loopback between two Python processes (the floor of
every hello latency here), CPUs and load average.

Usage: bench/bench_hello.py [--emad PATH] [--only CASE,...] [--reps N]
With --reps N the cases run N times (a fresh daemon each) and the worst and p99 are medians."""
import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import adversarial  # noqa: E402
from adv_wire import free_port  # noqa: E402

ECHO = """
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    d = c.recv(64)
    if not d:
        break
    c.sendall(d)
"""


def anchor_rtt(n=20000):
    """Median and p99 round trip (s) of 32 bytes over TCP loopback to a Python echo process."""
    p = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    port = int(p.stdout.readline())
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lat = []
    for _ in range(n):
        t0 = time.monotonic()
        s.sendall(b"x" * 32)
        got = 0
        while got < 32:
            got += len(s.recv(64))
        lat.append(time.monotonic() - t0)
    s.close()
    p.wait()
    lat.sort()
    return statistics.median(lat), lat[int(0.99 * len(lat))]


def start_emad(emad, work):
    """emad on a free loopback port with HTTP on a free port; (process, port, http port, log)."""
    port = free_port()
    log = os.path.join(work, "emad.log")
    state = os.path.join(work, "state")
    os.makedirs(state, exist_ok=True)
    with open(log, "w") as f:
        p = subprocess.Popen([emad, "--listen", "tcp://127.0.0.1:%d" % port, "--state-dir", state,
                              "--http", "127.0.0.1:0", "--log-level", "info"], stderr=f)
    resource.prlimit(p.pid, resource.RLIMIT_NOFILE, (256, 256))
    hport = None
    for _ in range(600):
        with open(log) as f:
            for line in f:
                if "event=http_listening" in line:
                    hport = int(line.split("port=")[1].split()[0])
        if hport:
            break
        time.sleep(0.05)
    assert hport, "emad did not start"
    return p, port, hport, log


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--emad", default=os.path.join(HERE, "..", "emad"))
    ap.add_argument("--only", default="")
    ap.add_argument("--reps", type=int, default=1)
    a = ap.parse_args()
    med, p99 = anchor_rtt()
    print("anchors of this machine (figures that move with the machine, not with emad):")
    print("  TCP loopback round trip, 32 B, Python to Python: median %.3f ms, p99 %.3f ms"
          % (med * 1000, p99 * 1000))
    print("  CPUs %d, load average %s" % (os.cpu_count(), " ".join(
        "%.2f" % x for x in os.getloadavg())))
    only = set(a.only.split(",")) if a.only else None
    runs = []
    for _ in range(a.reps):
        with tempfile.TemporaryDirectory(prefix="emad-bench-hello.") as work:
            p, port, hport, log = start_emad(a.emad, work)
            try:
                runs.append(adversarial.run(port, hport, log, None, only))
            finally:
                p.terminate()
                p.wait(60)
    rows = []
    for i, row in enumerate(runs[0]):
        same = [r[i] for r in runs]
        rows.append((row[0], int(statistics.median(r[1] for r in same)),
                     statistics.median(r[2] for r in same), statistics.median(r[3] for r in same),
                     statistics.median(r[4] for r in same)))
    print("hello latency of a second client during each case (%d run%s%s):"
          % (a.reps, "s" if a.reps > 1 else "", ", medians" if a.reps > 1 else ""))
    adversarial.print_rows(rows)
    over = [r for r in rows if r[2] > 0.1]
    print("cases over the 100 ms target: %s" % (", ".join(r[0] for r in over) or "none"))


if __name__ == "__main__":
    main()
