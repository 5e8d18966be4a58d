#!/usr/bin/python3
"""snapshot_check.py - inputs and checks for tests/test_snapshot.sh.

Shares no code with src/: files are written and read with
tests/safetensors_np.py, the EMA reference is numpy float32
(s - np.float32(1 - d) * (s - x)), and snapshot files are read with a
reader written from the safetensors spec here and, when it imports, with
torch.frombuffer.

    snapshot_check.py gen DIR STEPS SEED
        DIR/p_K.safetensors (params: F32 of several shapes, a scalar, a
        BF16 one) and DIR/b_K.safetensors (buffers: F32, I64) for K=1..STEPS.
    snapshot_check.py same A.safetensors B.safetensors
        Exit 1 unless both files hold the same names, dtypes, shapes and
        bytes, and the same metadata step.
    snapshot_check.py step FILE
        Print the metadata step of a pulled file.
    snapshot_check.py crashgen DIR STEPS
        DIR/c_K.safetensors: tensors "a" (1000 F32) and "b" (257 F32) whose
        every element is K (so a torn model is visible).
    snapshot_check.py crashcheck FILE DECAY LOW HIGH
        FILE (a pull after restart) must be exactly the EMA (decay DECAY) of
        the sequence 1, 2, ..., s for one s with LOW <= s <= HIGH, the same s
        for every tensor and element, and its metadata step must be s.
    snapshot_check.py flip FILE
        Flip one byte in the data section of a snapshot file.
    snapshot_check.py torch SNAPSHOT PULLED
        Read SNAPSHOT with the spec reader here and with torch.frombuffer;
        check names, shapes and values against PULLED (a full-precision
        pull), the metadata keys, and that a torch module's
        load_state_dict accepts it.
"""

import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np as st  # noqa: E402


def die(msg):
    print("snapshot_check.py: " + msg, file=sys.stderr)
    sys.exit(1)


def cmd_gen(out, steps, seed):
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    for k in range(1, int(steps) + 1):
        params = {
            "fc.weight": rng.standard_normal((16, 8)).astype(np.float32),
            "fc.bias": rng.standard_normal(16).astype(np.float32),
            "scale": np.array(rng.standard_normal(), dtype=np.float32),
            "emb.bf16": st.BF16.from_float32(rng.standard_normal((4, 4)).astype(np.float32)),
        }
        buffers = {
            "bn.running_mean": rng.standard_normal(16).astype(np.float32),
            "bn.num_batches_tracked": np.array(k, dtype=np.int64),
        }
        st.save(os.path.join(out, "p_%d.safetensors" % k), params, {"format": "pt"})
        st.save(os.path.join(out, "b_%d.safetensors" % k), buffers, {"format": "pt"})


def load(path):
    tensors, meta = st.load(path)
    return tensors, meta


def raw(v):
    return v.bits.tobytes() if isinstance(v, st.BF16) else np.ascontiguousarray(v).tobytes()


def cmd_same(a, b):
    ta, ma = load(a)
    tb, mb = load(b)
    if sorted(ta) != sorted(tb):
        die("names differ: %s vs %s" % (sorted(ta), sorted(tb)))
    for name in ta:
        if raw(ta[name]) != raw(tb[name]):
            die("tensor %s differs" % name)
    if ma.get("step") != mb.get("step"):
        die("steps differ: %s vs %s" % (ma.get("step"), mb.get("step")))
    print("same: %d tensors, step %s" % (len(ta), ma.get("step")))


def cmd_crashgen(out, steps):
    for k in range(1, int(steps) + 1):
        st.save(os.path.join(out, "c_%d.safetensors" % k),
                {"a": np.full(1000, k, np.float32), "b": np.full(257, k, np.float32)}, {})


def cmd_crashcheck(path, decay, low, high):
    tensors, meta = load(path)
    step = int(meta["step"])
    if not tensors and step == 0 and int(low) == 0:
        print("restored the empty model (created, nothing pushed before the snapshot)")
        return
    if not int(low) <= step <= int(high):
        die("restored step %d is outside the acknowledged window [%s, %s]" % (step, low, high))
    c = np.float32(1.0 - float(decay))
    s = np.float32(1.0)
    for k in range(2, step + 1):
        s = np.float32(s - np.float32(c * np.float32(s - np.float32(k))))
    for name in ("a", "b"):
        v = tensors[name]
        if not np.all(v.view(np.uint32) == np.array([s], np.float32).view(np.uint32)):
            die("tensor %s is not the EMA of steps 1..%d (torn or wrong): %s vs %r"
                % (name, step, np.unique(v)[:5], s))
    print("restored step %d, consistent" % step)


def spec_read(path):
    """A reader written from the safetensors spec: u64 header length, JSON, data."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    meta = header.pop("__metadata__", {})
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        out[name] = (e["dtype"], tuple(e["shape"]), data[b:end])
    return out, meta, 8 + n


def cmd_flip(path):
    _, _, start = spec_read(path)
    size = os.path.getsize(path)
    if size <= start:
        die("no data section to flip in " + path)
    with open(path, "r+b") as f:
        f.seek(start + (size - start) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x40]))


def cmd_torch(snap, pulled):
    tensors, meta, _ = spec_read(snap)
    for key in ("format", "emad_model", "emad_step", "emad_config", "emad_tensors",
                "emad_version", "emad_checksum"):
        if key not in meta:
            die("snapshot metadata lacks %s" % key)
    if meta["format"] != "pt":
        die("format is %r" % meta["format"])
    desc = json.loads(meta["emad_tensors"])
    json.loads(meta["emad_config"])
    ref, rmeta = load(pulled)
    if sorted(tensors) != sorted(ref):
        die("names differ: %s vs %s" % (sorted(tensors), sorted(ref)))
    np_dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64}
    for name, (dtype, shape, data) in tensors.items():
        want = ref[name]
        if isinstance(want, st.BF16):
            die("pulled reference %s must be full precision (pull --dtype F32)" % name)
        got = np.frombuffer(data, np_dtypes[dtype]).reshape(shape)
        if got.shape != want.shape or got.tobytes() != np.ascontiguousarray(want).tobytes():
            die("spec reader: tensor %s differs from the pull" % name)
        if name not in desc:
            die("no emad_tensors entry for %s" % name)
    if meta["emad_step"] != rmeta.get("step"):
        die("snapshot step %s, pull step %s" % (meta["emad_step"], rmeta.get("step")))
    try:
        import torch
    except ImportError:
        if os.environ.get("EMAD_REQUIRE_TORCH") == "1":
            die("torch is required (EMAD_REQUIRE_TORCH=1) but does not import")
        print("spec reader ok; torch not installed: torch check skipped")
        return
    torch_dtypes = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}
    state = {}
    for name, (dtype, shape, data) in tensors.items():
        t = torch.frombuffer(bytearray(data), dtype=torch_dtypes[dtype]).reshape(shape)
        if not torch.equal(t, torch.from_numpy(np.array(ref[name], order="C"))):
            die("torch.frombuffer: tensor %s differs" % name)
        state[name] = t

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 16)
            self.scale = torch.nn.Parameter(torch.tensor(1.0))
            self.emb = torch.nn.Module()
            self.emb.bf16 = torch.nn.Parameter(torch.zeros(4, 4, dtype=torch.bfloat16))
            self.bn = torch.nn.BatchNorm1d(16)

    net = Net()
    missing = net.load_state_dict(state, strict=False)
    want_missing = {"bn.weight", "bn.bias", "bn.running_var"}
    if set(missing.missing_keys) != want_missing or missing.unexpected_keys:
        die("load_state_dict: missing %s unexpected %s" % (missing.missing_keys,
                                                          missing.unexpected_keys))
    if not torch.equal(net.fc.weight.detach(), state["fc.weight"]):
        die("load_state_dict did not load fc.weight")
    print("snapshot loads with the spec reader and torch: %d tensors, step %s"
          % (len(state), meta["emad_step"]))


def main(argv):
    cmds = {"gen": (cmd_gen, 3), "same": (cmd_same, 2), "crashgen": (cmd_crashgen, 2),
            "crashcheck": (cmd_crashcheck, 4), "flip": (cmd_flip, 1), "torch": (cmd_torch, 2),
            "step": (lambda p: print(load(p)[1]["step"]), 1)}
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 != cmds[argv[1]][1]:
        die("usage: see the module docstring")
    cmds[argv[1]][0](*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
