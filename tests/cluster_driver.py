"""cluster_driver.py - trainers and readers of the cluster tests (tests/test_cluster*.sh), run
in the client namespace of tests/netns.sh with the Python client.

  cluster_driver.py train --cluster MAP --ref URL --model M --first A --last B --dir D
                          [--gate N ...] [--pace SECONDS] [--timeout SECONDS]
                          [--connect-timeout SECONDS]
      Pushes steps A..B of the "mixed" model (see tensors()) to the cluster
      and, after each, the same step to the single reference daemon at URL.
      After step N of each --gate N it writes D/reached.N and, for a gate
      marked N:wait, waits for D/go.N (written by the test). After every
      acknowledged step it writes D/acked (the step). Any push error fails
      (exit 1); warnings about skipped replicas are counted and printed.
  cluster_driver.py compare --cluster MAP --ref URL --model M [--decays D,...]
      Pulls the model through the cluster and from the reference, every
      decay, and requires them equal bit for bit (names, dtypes, shapes,
      bytes, step).
  cluster_driver.py steps --cluster MAP --model M --first A --last B --dir D [--gate N:wait]
      Pushes the "steps" model (decay 0: the average is the last push;
      every element of every tensor equals the step, so a pull that mixed
      steps is detectable) for steps A..B; writes its PID to D/pid,
      D/pushing.N before the push of step N and D/acked after it; gates as
      for train; while D/hold exists it waits between two steps (having
      written the last step to D/held).
  cluster_driver.py partial --cluster MAP --model M --step N --shards K[,K...]
      What a trainer leaves when it dies halfway through step N: the steps
      model's pieces of step N, placed by tests/placement_ref.py, pushed
      straight to every replica's daemon of the shards K only (plain-socket
      SP, with the map's epoch and the shard in each request as
      docs/PROTOCOL.md "Cluster mode" says); each must answer ok at step N.
  cluster_driver.py ranks --cluster MAP --ref URL --model M
      A torch model (a weight cut across the shards, BatchNorm buffers) pushed
      at 3 steps by 3 ranks (push_module(rank=, world_size=3)) through the
      cluster and whole to the reference: the pulls equal bit for bit.
  cluster_driver.py read --cluster MAP --model M --pulls N --out FILE
      N pulls; each must be one step: every element of every tensor equal
      to the pulled model's step. Writes "pulls P ok K split S steps LO HI"
      to FILE (split: EMAD_ESPLIT answers, allowed); exits 1 on a mix or
      on any other error.
"""

import argparse
import os
import sys
import time

import numpy as np

import adv_wire
import emad
import placement_ref

# The mixed model: a tensor cut across shards (>= 4 MiB), whole tensors on either shard,
# float16, bfloat16 and float64 params and integer and float buffers.
CUT = 1 << 20  # float32 elements: exactly 4 MiB


def tensors(step):
    """(params, buffers) of the mixed model at a step, a pure function of the step."""
    rng = np.random.default_rng(1000 + step)
    params = {
        "big.w": rng.standard_normal(CUT + 3, dtype=np.float32),
        "emb.w": emad.Typed(rng.integers(0x3c00, 0x4400, 1 << 21, dtype=np.uint16), "BF16"),
        "small.a": rng.standard_normal(1000, dtype=np.float32),
        "small.b": rng.standard_normal((7, 9)).astype(np.float16),
        "small.c": rng.standard_normal(33),  # float64
    }
    buffers = {
        "bn.count": np.array(step, dtype=np.int64),
        "bn.mean": rng.standard_normal(16, dtype=np.float32),
    }
    return params, buffers


def steps_tensors(step):
    """The steps model at a step: every element equals the step."""
    return {"big.w": np.full(CUT + 1, step, np.float32),
            "small.a": np.full(10, step, np.float32),
            "small.b": np.full(10, step, np.float32),
            "small.c": np.full(3, step, np.float64)}


def touch(path, text=""):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def gates(specs):
    """{step: wait?} from "N" / "N:wait" strings."""
    out = {}
    for g in specs or []:
        n, _, how = g.partition(":")
        out[int(n)] = how == "wait"
    return out


def pass_gate(d, step, g):
    if step not in g:
        return
    touch(os.path.join(d, "reached.%d" % step))
    if g[step]:
        while not os.path.exists(os.path.join(d, "go.%d" % step)):
            time.sleep(0.02)


def cmd_train(a):
    g = gates(a.gate)
    warned = 0
    # A replica cut off (no reset, no reply) holds a push for the request timeout: keep it short.
    with emad.Client(cluster=a.cluster, timeout=a.timeout,
                     connect_timeout=a.connect_timeout) as c, \
            emad.Client(a.ref, timeout=60) as ref:
        for cl in (c, ref):
            cl.create(a.model, decay=[0.9, 0.99], exist_ok=True)
        for step in range(a.first, a.last + 1):
            params, buffers = tensors(step)
            t0 = time.monotonic()
            c.push(a.model, step, params, buffers)
            dt = time.monotonic() - t0
            w = c.cluster_warnings()
            if w:
                warned += 1
                print("step %d (%.2f s): %s" % (step, dt, "; ".join(w)), flush=True)
            ref.push(a.model, step, params, buffers)
            touch(os.path.join(a.dir, "acked"), str(step))
            pass_gate(a.dir, step, g)
            if a.pace:
                time.sleep(a.pace)
    print("train: steps %d..%d acknowledged, %d with skipped replicas" % (a.first, a.last, warned))


def cmd_ranks(a):
    """push_module(rank=, world_size=3) through the cluster against whole pushes to the
    reference; both pulled state dicts equal bit for bit."""
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("ranks: skipped (no torch)")
        return
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 1100), nn.BatchNorm1d(1100), nn.Linear(1100, 10))
    world = 3
    with emad.Client(cluster=a.cluster, timeout=60) as c, emad.Client(a.ref, timeout=60) as ref:
        c.create(a.model, decay=0.75, writers=world)
        ref.create(a.model, decay=0.75)
        plan = c.cluster_plan(model)
        if len({p.shard for p in plan if p.name == "0.weight"}) < 2:
            sys.exit("ranks: 0.weight is not cut across the shards: %s" % plan)
        for step in range(1, 4):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p))
                model[1].running_mean.add_(1.0)
            for rank in range(world):
                res = c.push_module(a.model, model, step, rank=rank, world_size=world)
                if res.pending != (rank < world - 1):
                    sys.exit("ranks: step %d rank %d pending=%s" % (step, rank, res.pending))
            ref.push_module(a.model, model, step)
        got, want = c.pull_state_dict(a.model), ref.pull_state_dict(a.model)
        if got.step != 3 or sorted(got) != sorted(want):
            sys.exit("ranks: step %d tensors %s, want 3 %s" % (got.step, sorted(got), sorted(want)))
        for k in want:
            if got[k].dtype != want[k].dtype or not torch.equal(got[k], want[k]):
                sys.exit("ranks: %s differs from the whole pushes" % k)
    print("ranks: %d ranks x %d shards equal whole pushes bit for bit"
          % (world, len({p.shard for p in plan})))


def cmd_compare(a):
    with emad.Client(cluster=a.cluster, timeout=60) as c, emad.Client(a.ref, timeout=60) as ref:
        for decay in [float(d) for d in a.decays.split(",")]:
            got = c.pull(a.model, decay=decay)
            want = ref.pull(a.model, decay=decay)
            if got.step != want.step:
                sys.exit("decay %g: step %d, the single daemon has %d" % (decay, got.step, want.step))
            if sorted(got) != sorted(want):  # the cluster returns them sorted by name
                sys.exit("decay %g: tensors %s, the single daemon has %s"
                         % (decay, list(got), list(want)))
            for k in want:
                g, w = np.asarray(got[k]), np.asarray(want[k])
                if g.dtype != w.dtype or g.shape != w.shape or g.tobytes() != w.tobytes():
                    diff = int(np.count_nonzero(g.view(np.uint8) != w.view(np.uint8))) \
                        if g.nbytes == w.nbytes else -1
                    sys.exit("decay %g: %s differs from the single daemon (%s %s vs %s %s, %d "
                             "bytes differ)" % (decay, k, g.dtype, g.shape, w.dtype, w.shape, diff))
        print("compare: step %d, %d tensors equal bit for bit" % (got.step, len(want)))


def cmd_steps(a):
    g = gates(a.gate)
    touch(os.path.join(a.dir, "pid"), str(os.getpid()))
    hold, held = os.path.join(a.dir, "hold"), os.path.join(a.dir, "held")
    with emad.Client(cluster=a.cluster, timeout=120) as c:
        c.create(a.model, decay=0.0, exist_ok=True)
        for step in range(a.first, a.last + 1):
            touch(os.path.join(a.dir, "pushing.%d" % step))
            c.push(a.model, step, steps_tensors(step))
            touch(os.path.join(a.dir, "acked"), str(step))
            pass_gate(a.dir, step, g)
            if os.path.exists(hold):  # the test holds the trainer between two steps
                touch(held, str(step))
                while os.path.exists(hold):
                    time.sleep(0.02)
            if a.pace:
                time.sleep(a.pace)
    print("steps: %d..%d acknowledged" % (a.first, a.last))


def read_map(path):
    """(epoch, [[url, ...] of shard 0, ...]) of a shard-map file."""
    epoch, shards = None, {}
    with open(path) as f:
        for line in f.read().replace(";", "\n").splitlines():
            words = line.split("#", 1)[0].split()
            if words[:1] == ["epoch"]:
                epoch = int(words[1])
            elif words[:1] == ["shard"]:
                shards[int(words[1])] = words[2:]
    return epoch, [shards[k] for k in range(len(shards))]


def placed_steps_tensors(nshards, step):
    """[[tensor map, ...] of shard 0, ...]: the steps model at a step as each shard stores it
    (whole tensors under their names, pieces as NAME#piece/OFFSET/SHAPE)."""
    out = [[] for _ in range(nshards)]
    for name, full in sorted(steps_tensors(step).items()):
        dtype = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64"}[full.dtype]
        for shard, off, cnt, whole in placement_ref.place(nshards, name, full.itemsize,
                                                          full.size):
            stored = name if whole else "%s#piece/%d/%s" % (
                name, off, "x".join(str(d) for d in full.shape))
            out[shard].append({"name": stored, "kind": "param", "dtype": dtype,
                               "shape": list(full.shape) if whole else [cnt],
                               "data": full[off:off + cnt].tobytes()})
    return out


def cmd_partial(a):
    epoch, urls = read_map(a.cluster)
    placed = placed_steps_tensors(len(urls), a.step)
    for k in [int(x) for x in a.shards.split(",")]:
        for url in urls[k]:
            host, port = url.split("://", 1)[1].rsplit(":", 1)
            c = adv_wire.Client(int(port), host=host)
            r = c.ok(adv_wire.req("push", model=a.model, step=a.step, epoch=epoch, shard=k,
                                  tensors=placed[k]))
            c.close()
            if r["step"] != a.step or r["applied"] != len(placed[k]):
                sys.exit("partial: %s: step %d, %d of %d tensors applied"
                         % (url, r["step"], r["applied"], len(placed[k])))
    print("partial: step %d on shards %s only" % (a.step, a.shards))


def cmd_read(a):
    ok = split = 0
    seen = []
    with emad.Client(cluster=a.cluster, timeout=120) as c:
        for _ in range(a.pulls):
            try:
                sd = c.pull(a.model)
            except emad.Error as e:
                if e.code == emad.ESPLIT:
                    split += 1
                    continue
                raise
            values = set()
            for k, v in sd.items():
                values.update(np.unique(np.asarray(v)).tolist())
            if values != {float(sd.step)}:
                sys.exit("read: a mix: model step %d, values %s" % (sd.step, sorted(values)[:10]))
            ok += 1
            seen.append(sd.step)
    with open(a.out, "w") as f:
        f.write("pulls %d ok %d split %d steps %d %d\n" % (a.pulls, ok, split,
                                                         min(seen or [0]), max(seen or [0])))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["train", "compare", "steps", "read", "ranks", "partial"])
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--ref")
    ap.add_argument("--model", required=True)
    ap.add_argument("--first", type=int, default=1)
    ap.add_argument("--last", type=int, default=1)
    ap.add_argument("--dir", default=".")
    ap.add_argument("--gate", action="append")
    ap.add_argument("--pace", type=float, default=0.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--connect-timeout", type=float, default=5.0)
    ap.add_argument("--decays", default="0.9,0.99")
    ap.add_argument("--pulls", type=int, default=1)
    ap.add_argument("--out")
    ap.add_argument("--step", type=int)
    ap.add_argument("--shards", default="0")
    a = ap.parse_args()
    {"train": cmd_train, "compare": cmd_compare, "steps": cmd_steps, "read": cmd_read,
     "ranks": cmd_ranks, "partial": cmd_partial}[a.what](a)


if __name__ == "__main__":
    main()
