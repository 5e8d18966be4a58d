"""bench_cluster.py - the pusher of `make bench-cluster` (bench/bench_cluster.sh runs it in the
client namespace of tests/netns.sh).

  bench_cluster.py push --cluster MAP --mib N --pushes K [--tensor-mib M]
  bench_cluster.py push --plain URL,URL,... --mib N --pushes K [--tensor-mib M]
  bench_cluster.py tcp-send HOST PORT MIB     (anchor: raw TCP through one link)
  bench_cluster.py tcp-sink PORT              (its receiving end: until one connection
                                              brought data; prints nothing)

push: a model of N MiB of float32 (tensors of M MiB, default 16, plus one
small bias per tensor, as a transformer's layers) is created with decay
0.99 and pushed once untimed (the daemons allocate their shadows), then K
times timed, steps 2..K+1. --cluster pushes through libemad's cluster
client; --plain pushes to S independent daemons from S threads, each
daemon a model of whole tensors dealt out balanced by bytes (what an ideal client
fan-out over S links could do, without the cluster's placement). Prints
one line: "push_seconds T1 T2 ... bytes B".
"""

import argparse
import os
import socket
import sys
import threading
import time

import numpy as np


def model(mib, tensor_mib):
    """name -> float32 array: tensors of tensor_mib MiB, each with a bias of 4 KiB."""
    rng = np.random.default_rng(1)
    n = max(1, mib // tensor_mib)
    out = {}
    for i in range(n):
        out["layers.%03d.w" % i] = rng.standard_normal(tensor_mib * 262144, dtype=np.float32)
        out["layers.%03d.b" % i] = rng.standard_normal(1024, dtype=np.float32)
    return out


def push_cluster(emad, cluster, params, pushes):
    with emad.Client(cluster=cluster, timeout=600) as c:
        c.create("bench", decay=0.99, exist_ok=True)
        c.push("bench", 1, params)
        times = []
        for step in range(2, pushes + 2):
            t0 = time.perf_counter()
            c.push("bench", step, params)
            times.append(time.perf_counter() - t0)
        warnings = c.cluster_warnings()
        if warnings:
            sys.exit("bench_cluster: replicas skipped: %s" % warnings)
    return times


def push_plain(emad, urls, params, pushes):
    parts = [{} for _ in urls]  # largest first, each to the part with the fewest bytes
    for k in sorted(params, key=lambda k: (-params[k].nbytes, k)):
        min(parts, key=lambda p: sum(v.nbytes for v in p.values()))[k] = params[k]
    clients = [emad.Client(u, timeout=600) for u in urls]
    errors = []

    def one(c, part, step):
        try:
            c.push("bench", step, part)
        except Exception as e:  # pylint: disable=broad-except
            errors.append(e)

    def all_at(step):
        threads = [threading.Thread(target=one, args=(c, p, step)) for c, p in zip(clients, parts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    for c in clients:
        c.create("bench", decay=0.99, exist_ok=True)
    all_at(1)
    times = []
    for step in range(2, pushes + 2):
        t0 = time.perf_counter()
        all_at(step)
        times.append(time.perf_counter() - t0)
    for c in clients:
        c.close()
    return times


def tcp_send(host, port, mib):
    buf = b"\0" * (1 << 20)
    with socket.create_connection((host, port), 30) as s:
        t0 = time.perf_counter()
        for _ in range(mib):
            s.sendall(buf)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # the sink closes after reading everything
        dt = time.perf_counter() - t0
    print("tcp_seconds %.6f bytes %d" % (dt, mib << 20))


def tcp_sink(port):
    with socket.socket() as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("0.0.0.0", port))
        ls.listen(4)
        got = 0
        while got == 0:  # connections without data (readiness probes) do not count
            conn, _ = ls.accept()
            with conn:
                while True:
                    b = conn.recv(1 << 20)
                    if not b:
                        break
                    got += len(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["push", "tcp-send", "tcp-sink"])
    ap.add_argument("args", nargs="*")
    ap.add_argument("--cluster")
    ap.add_argument("--plain")
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--tensor-mib", type=int, default=16)
    ap.add_argument("--pushes", type=int, default=3)
    a = ap.parse_args()
    if a.what == "tcp-send":
        tcp_send(a.args[0], int(a.args[1]), int(a.args[2]))
        return
    if a.what == "tcp-sink":
        tcp_sink(int(a.args[0]))
        return
    import emad  # pylint: disable=import-outside-toplevel

    params = model(a.mib, a.tensor_mib)
    nbytes = sum(v.nbytes for v in params.values())
    if a.cluster:
        times = push_cluster(emad, a.cluster, params, a.pushes)
    else:
        times = push_plain(emad, a.plain.split(","), params, a.pushes)
    print("push_seconds %s bytes %d" % (" ".join("%.6f" % t for t in times), nbytes))


if __name__ == "__main__":
    main()
