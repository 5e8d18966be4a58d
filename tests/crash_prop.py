"""Property test of emad's durability (tests/test_crash.sh): random accepted states, then
SIGKILL or SIGTERM at a random moment, then a restart.

Each round starts emad on STATE (a directory inside PARENT), pushes random accepted states
to random models (names within the rules: quotes, backslashes, non-ASCII, '.', '-' inside;
1-3 decays, copied or averaged buffers, 1-3 writers, steps with jumps up to 2^63-1, single
messages, transactions, multi-writer parts), asks for explicit snapshots now and then, and
meanwhile a second connection keeps pushing until the daemon is signalled. After the restart:

- every model is at its last acknowledged durable step or later (the step a `snapshot`
  reply named for it); after SIGTERM with exit status 0, at its last acknowledged push or
  later, since a clean stop writes every model; exit status 3 only with the models it
  names in the log; never another status;
- models snapshotted and not pushed since are pulled bit for bit as before the signal;
- nothing outside STATE in PARENT was created, changed or removed.

Usage: crash_prop.py EMAD PARENT ROUNDS SEED"""
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np

from adv_wire import Client, free_port, req, timeout_scale

STEP_MAX = (1 << 63) - 1
NAME_CHARS = "abcxyz019._-"
TENSOR_CHARS = "abc09_.-/ \"\\\u00e9\u4e2d=:"


def rand_model_name(rng, taken):
    while True:
        n = rng.choice("abcdefgh") + "".join(rng.choice(NAME_CHARS)
                                             for _ in range(rng.randint(0, 12)))
        if n not in taken:
            return n


def rand_tensor_name(rng):
    return rng.choice("wbq") + "".join(rng.choice(TENSOR_CHARS) for _ in range(rng.randint(0, 20)))


class Model:
    """What the driver knows of one model: its configuration, tensors, and steps."""

    def __init__(self, rng, name):
        self.name = name
        self.writers = rng.choice([1, 1, 1, 2, 3])
        self.decays = rng.sample([0.5, 0.9, 0.99, 0.999, 0.75], rng.randint(1, 3))
        self.buffers = rng.choice(["copy", "average"])
        self.tensors = {}
        for _ in range(rng.randint(1, 6)):
            kind = rng.choice(["param", "param", "buffer"])
            dtype = rng.choice(["F32", "F16", "BF16", "F64"]) if kind == "param" else rng.choice(
                ["F32", "I64", "U8", "F64"])
            shape = [rng.randint(1, 5) for _ in range(rng.randint(0, 3))]
            self.tensors[rand_tensor_name(rng)] = (kind, dtype, shape)
        self.step = 0          # last step sent
        self.acked = 0         # highest step whose push was acknowledged as applied
        self.durable = 0       # step a snapshot reply named for this model
        self.clean = None      # pulled bytes when snapshotted and not pushed since
        self.lost = False      # its final snapshot failed (the round broke its directory)

    def create(self):
        return req("create", model=self.name, decays=self.decays, buffers=self.buffers,
                   writers=self.writers)


NP = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "U8": np.uint8}


def values(rng, dtype, shape):
    n = int(np.prod(shape)) if shape else 1
    if dtype == "BF16":
        return (np.float32(np.random.default_rng(rng.randint(0, 1 << 30)).standard_normal(n))
                .view(np.uint32) >> 16).astype(np.uint16).tobytes()
    a = np.random.default_rng(rng.randint(0, 1 << 30)).standard_normal(n) * 4
    if dtype == "U8":
        a = np.abs(a)
    return a.astype(NP[dtype]).tobytes()


def tensor_map(name, spec, data, **extra):
    kind, dtype, shape = spec
    t = {"name": name, "kind": kind, "dtype": dtype, "shape": shape, "data": data}
    t.update(extra)
    return t


def next_step(rng, m):
    jump = rng.choice([1, 1, 1, 2, 1000, 1 << 40])
    if rng.random() < 0.03:
        return STEP_MAX if m.step < STEP_MAX else None
    s = m.step + jump
    return s if s <= STEP_MAX else None


def push_step(rng, c, m):
    """Push one random step of m (single message, transaction or every writer's part).
    Returns the step if the daemon acknowledged it as applied, else None."""
    step = next_step(rng, m)
    if step is None:
        return None
    m.step = step
    data = {n: values(rng, spec[1], spec[2]) for n, spec in m.tensors.items()}
    if m.writers > 1:
        # Writer k sends the tensors of index k mod writers (each tensor whole, by one writer).
        names = list(m.tensors)
        r = None
        for k in range(m.writers):
            mine = [tensor_map(n, m.tensors[n], data[n]) for i, n in enumerate(names)
                    if i % m.writers == k]
            r = c.ok(req("push", model=m.name, step=step, writer=k, tensors=mine))
        assert r["pending"] is False, r
        return step
    if rng.random() < 0.3:
        t = c.ok(req("begin", model=m.name, step=step))["txn"]
        for n, spec in m.tensors.items():
            d = data[n]
            cut = (len(d) // 2) // 8 * 8
            for off, part in ((0, d[:cut]), (cut, d[cut:])):
                if part:
                    c.ok(req("push", txn=t, tensors=[tensor_map(n, spec, part, offset=off)]))
        c.ok(req("commit", txn=t))
        return step
    c.ok(req("push", model=m.name, step=step,
             tensors=[tensor_map(n, spec, data[n]) for n, spec in m.tensors.items()]))
    return step


def pull_bytes(c, m):
    r = c.ok(req("pull", model=m.name, dtype="shadow"))
    return r["step"], {t["name"]: (t["dtype"], t["shape"], t["step"], t["data"])
                       for t in r["tensors"]}


def listing(parent, state):
    """Every path under parent outside state, with its type, size and mtime."""
    out = {}
    for root, dirs, files in os.walk(parent):
        if os.path.abspath(root) == os.path.abspath(state):
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if os.path.abspath(os.path.join(root, d)) !=
                   os.path.abspath(state)]
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


RUNNING = []  # daemons started and not yet reaped, killed if the test fails
COMPARED = [0]  # models pulled bit for bit after a restart


def start(emad, state, log, interval):
    port = free_port()
    f = open(log, "ab")
    p = subprocess.Popen([emad, "--listen", "tcp://127.0.0.1:%d" % port, "--state-dir", state,
                          "--http", "off", "--snapshot-interval", str(interval),
                          "--log-level", "info"], stderr=f)
    f.close()
    RUNNING.append(p)
    end = time.monotonic() + 60 * timeout_scale()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return p, port
        except OSError:
            assert p.poll() is None, "emad exited with %s at startup" % p.returncode
            assert time.monotonic() < end, "emad did not start"
            time.sleep(0.02)


def background(port, models, stop, rng_seed, out):
    """Keep pushing steps of random models until stop is set (or the daemon goes away)."""
    rng = random.Random(rng_seed)
    try:
        c = Client(port)
        while not stop.is_set():
            m = rng.choice(models)
            if m.writers > 1:
                continue
            with m.lock:
                step = push_step(rng, c, m)
                if step is not None:
                    m.acked = max(m.acked, step)
                    m.clean = None
    except (OSError, AssertionError, struct.error, IndexError) as e:
        out.append(repr(e))


def round_(emad, parent, state, log, rng, models, rnd):
    interval = rng.choice([0, 0.2, 1])
    p, port = start(emad, state, log, interval)
    c = Client(port)
    for m in models:  # after a restart, the models are back (checked by the caller)
        c.ok(dict(m.create(), exist_ok=True))
    if len(models) < 8:
        m = Model(rng, rand_model_name(rng, {x.name for x in models}))
        m.lock = threading.Lock()
        c.ok(m.create())
        models.append(m)
    for _ in range(rng.randint(5, 30)):
        m = rng.choice(models)
        with m.lock:
            step = push_step(rng, c, m)
            if step is not None:
                m.acked = max(m.acked, step)
                m.clean = None
            if rng.random() < 0.3:
                r = c.ok(req("snapshot", model=m.name))
                assert r["step"] == m.acked or m.acked == 0, (r, m.acked)
                m.durable = r["step"]
                m.clean = pull_bytes(c, m)
    stop, errors = threading.Event(), []
    th = threading.Thread(target=background, args=(port, models, stop, rng.random(), errors))
    th.start()
    time.sleep(rng.uniform(0, 0.5))
    sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
    # Now and then a model's directory is swapped for a symbolic link, which the daemon never
    # follows: its final snapshot must fail, and the exit status and the log must say so.
    snaps = os.path.join(state, "snapshots")
    broken = [m for m in models if m.acked > m.durable and os.path.isdir(os.path.join(snaps, m.name))]
    broken = rng.sample(broken, 1) if broken and sig == signal.SIGTERM and rng.random() < 0.4 else []
    for m in broken:
        d = os.path.join(snaps, m.name)
        os.rename(d, d + ".aside")
        os.symlink(m.name + ".aside", d)
    p.send_signal(sig)
    status = p.wait(300 * timeout_scale())
    stop.set()
    th.join()
    with open(log, "rb") as f:
        tail = f.read()[-20000:].decode("utf-8", "replace")
    for m in broken:
        d = os.path.join(snaps, m.name)
        os.unlink(d)
        os.rename(d + ".aside", d)
    if sig == signal.SIGTERM:
        assert status in (0, 3), "SIGTERM: exit status %s" % status
        unwritten = []
        if status == 3:
            line = [x for x in tail.splitlines() if "snapshots=failed" in x][-1]
            unwritten = line.split("models=")[1].split()[0].split(",")
        # Exit status 3 names exactly the models whose directory was a link (0 only if a
        # periodic snapshot had written that model's last change before).
        assert unwritten == [m.name for m in broken] or (status == 0 and broken and interval), (
            "SIGTERM: exit status %d, unwritten %s, broken %s" % (
                status, unwritten, [m.name for m in broken]))
        for m in broken:
            m.lost = status == 3
    print("round %d: snapshots every %ss, %s, exit status %s, %d models%s" % (
        rnd, interval, signal.Signals(sig).name, status, len(models),
        ", the directory of %s a link" % broken[0].name if broken else ""))
    return sig, status


def check_after(emad, state, log, models, sig, status):
    p, port = start(emad, state, log, 0)
    c = Client(port)
    have = {x["name"]: x for x in c.ok(req("list"))["models"]}
    for m in models:
        want = m.acked if sig == signal.SIGTERM and not m.lost else m.durable
        m.lost = False
        if want > 0:
            assert m.name in have, "model %r lost (durable step %d)" % (m.name, want)
        got = have[m.name]["step"] if m.name in have else 0
        assert got >= want, "model %r back at step %d, acknowledged %d" % (m.name, got, want)
        assert got <= m.step, "model %r at step %d, never pushed" % (m.name, got)
        if m.clean is not None:
            assert pull_bytes(c, m) == m.clean, "model %r differs after restart" % m.name
            COMPARED[0] += 1
        m.step = max(m.step, got)  # later pushes continue from what the daemon holds
        m.acked = got
        m.durable = have[m.name]["snapshot_step"] if m.name in have else 0
    c.close()
    p.send_signal(signal.SIGTERM)
    assert p.wait(300 * timeout_scale()) == 0


def main(argv):
    emad, parent, rounds, seed = argv[1], argv[2], int(argv[3]), int(argv[4])
    print("seed %d (EMAD_TEST_SEED=%d reproduces it)" % (seed, seed))
    rng = random.Random(seed)
    state = os.path.join(parent, "state")
    log = os.path.join(parent, "..", "emad.log")
    os.makedirs(os.path.join(parent, "sibling"), exist_ok=True)
    with open(os.path.join(parent, "sibling", "keep.txt"), "w") as f:
        f.write("not the daemon's\n")
    before = listing(parent, state)
    models = []
    for rnd in range(rounds):
        sig, status = round_(emad, parent, state, log, rng, models, rnd)
        check_after(emad, state, log, models, sig, status)
        assert listing(parent, state) == before, "files outside the state directory changed"
    print("%d rounds, %d models: every model back at its durable step or later; %d pulled "
          "bit for bit as before the restart" % (rounds, len(models), COMPARED[0]))


if __name__ == "__main__":
    try:
        main(sys.argv)
    finally:
        for d in RUNNING:
            if d.poll() is None:
                d.kill()
                d.wait()
