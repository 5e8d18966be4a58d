#!/usr/bin/python3
"""e2e_reference.py - inputs and the numpy reference for tests/test_reference.sh,
the acceptance test of the whole path: safetensors files -> emactl push ->
emad -> emactl pull -> safetensors file.

It shares no code with src/ or client/: files are written and read with
tests/safetensors_np.py, the EMA is numpy's own float32 (float64 for F64)
arithmetic, exactly what PyTorch computes for
shadow.sub_((1. - decay) * (shadow - param)):

    shadow = first pushed value (widened to float32 for F16/BF16)
    shadow -= np.float32(1 - decay) * (shadow - value)    (each later step)

and F16/BF16 params come back rounded to nearest even from the float32
shadow (numpy's astype(float16); BF16.from_float32). Buffers must come
back exactly as last pushed.

    e2e_reference.py gen DIR STEPS SEED
        Writes DIR/params_K.safetensors and DIR/buffers_K.safetensors for
        K = 1..STEPS: float32 params of several shapes (a scalar among them),
        one F16, one BF16 and one F64 param; buffers float32 running_mean,
        int64 num_batches_tracked (scalar) and a bool mask.
    e2e_reference.py check DIR PULLED DECAY STEPS
        Computes the reference from the files in DIR and compares PULLED:
        every param within MAX_ULP units in the last place (expected 0),
        every buffer bit-identical to step STEPS, same names and dtypes,
        metadata format=pt and step=STEPS, and the writer's layout. Prints a
        summary; exit status 1 with a message on any mismatch.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np as st  # noqa: E402

MAX_ULP = 1

PARAM_SHAPES = {
    "fc.weight": (8, 5),
    "fc.bias": (8,),
    "conv.weight": (4, 3, 3, 3),
    "scale": (),
}


def step_tensors(rng, k, steps):
    """Params and buffers of step k (1-based) drawn from rng."""
    params = {}
    for name, shape in PARAM_SHAPES.items():
        centre = np.linspace(-3.0, 3.0, int(np.prod(shape))).reshape(shape)
        params[name] = (centre + rng.standard_normal(shape)).astype(np.float32)
    params["emb.f16"] = (rng.standard_normal((6, 4)) * 4).astype(np.float16)
    bf16 = (rng.standard_normal((5, 3)) * 100).astype(np.float32)
    params["emb.bf16"] = st.BF16.from_float32(bf16)
    params["proj.f64"] = rng.standard_normal((3, 2)) * 1e3
    buffers = {
        "bn.running_mean": rng.standard_normal(8).astype(np.float32),
        "bn.num_batches_tracked": np.array(1000 * k + steps, dtype=np.int64),
        "mask": rng.integers(0, 2, 7).astype(np.bool_),
    }
    return params, buffers


def cmd_gen(argv):
    """The `gen` subcommand."""
    if len(argv) != 3:
        usage()
    out, steps, seed = argv[0], int(argv[1]), int(argv[2])
    rng = np.random.Generator(np.random.PCG64(seed))
    for k in range(1, steps + 1):
        params, buffers = step_tensors(rng, k, steps)
        st.save(os.path.join(out, "params_%d.safetensors" % k), params, {"format": "pt"})
        st.save(os.path.join(out, "buffers_%d.safetensors" % k), buffers, {"format": "pt"})


def widen(v):
    """Shadow dtype value of a pushed param: float32 (float64 for F64)."""
    if isinstance(v, st.BF16):
        return v.to_float32()
    return v.astype(np.float64 if v.dtype == np.float64 else np.float32)


def ordered(bits, nbits):
    """Map sign-magnitude float bit patterns to integers ordered like the floats."""
    out = []
    for b in bits.ravel().tolist():
        b &= (1 << nbits) - 1
        sign = b >> (nbits - 1)
        mag = b & ((1 << (nbits - 1)) - 1)
        out.append(-mag if sign else mag)
    return out


def ulp_diff(got, want):
    """Largest distance in units in the last place between two same-typed tensors."""
    if isinstance(want, st.BF16):
        a, b, nbits = got.bits, want.bits, 16
    else:
        nbits = want.dtype.itemsize * 8
        view = {16: np.uint16, 32: np.uint32, 64: np.uint64}[nbits]
        a, b = got.view(view), want.view(view)
    if a.size == 0:
        return 0
    return max(abs(x - y) for x, y in zip(ordered(a, nbits), ordered(b, nbits)))


def fail(msg):
    """Print a mismatch and exit 1."""
    sys.stderr.write("e2e_reference.py: FAIL: %s\n" % msg)
    sys.exit(1)


def cmd_check(argv):
    """The `check` subcommand."""
    if len(argv) != 4:
        usage()
    src, pulled_path, decay, steps = argv[0], argv[1], float(argv[2]), int(argv[3])
    c32, c64 = np.float32(1.0 - decay), 1.0 - decay
    shadows, kinds = {}, {}
    for k in range(1, steps + 1):
        params = st.load(os.path.join(src, "params_%d.safetensors" % k))[0]
        for name, v in params.items():
            w = widen(v)
            if not np.all(np.isfinite(w)):
                fail("input %s of step %d is not finite" % (name, k))
            kinds[name] = v
            if name not in shadows:
                shadows[name] = w.copy()
            elif w.dtype == np.float64:
                shadows[name] -= c64 * (shadows[name] - w)
            else:
                shadows[name] -= c32 * (shadows[name] - w)
            if shadows[name].dtype != w.dtype:
                fail("reference arithmetic left %s for %s" % (w.dtype, name))
    last_params = st.load(os.path.join(src, "params_%d.safetensors" % steps))[0]
    buffers = st.load(os.path.join(src, "buffers_%d.safetensors" % steps))[0]

    with open(pulled_path, "rb") as f:
        raw = f.read()
    try:
        st.check_layout(raw)
    except st.FormatError as e:
        fail("pulled file: %s" % e)
    got, meta = st.load(pulled_path)
    if meta.get("format") != "pt":
        fail("metadata format is %r, expected 'pt'" % meta.get("format"))
    if meta.get("step") != str(steps):
        fail("metadata step is %r, expected %r" % (meta.get("step"), str(steps)))
    want_names = sorted(list(shadows) + list(buffers))
    if sorted(got) != want_names:
        fail("pulled tensors %r, expected %r" % (sorted(got), want_names))

    worst = 0
    moved = 0
    for name, shadow in shadows.items():
        pushed = kinds[name]
        if isinstance(pushed, st.BF16):
            want = st.BF16.from_float32(shadow)
            if not isinstance(got[name], st.BF16):
                fail("%s: pulled as %s, pushed as BF16" % (name, got[name].dtype))
        else:
            want = shadow.astype(pushed.dtype)
            if isinstance(got[name], st.BF16) or got[name].dtype != pushed.dtype:
                fail("%s: pulled dtype differs from the pushed %s" % (name, pushed.dtype))
        if got[name].shape != want.shape:
            fail("%s: pulled shape %r, expected %r" % (name, got[name].shape, want.shape))
        d = ulp_diff(got[name], want)
        if d > MAX_ULP:
            fail("%s: %d ulp from the numpy reference (max %d)" % (name, d, MAX_ULP))
        worst = max(worst, d)
        last = last_params[name]
        moved += not (want == last if isinstance(want, st.BF16) else np.array_equal(want, last))
    if moved == 0:
        fail("the reference equals the last pushed values; the test cannot tell EMA from copy")
    for name, want in buffers.items():
        g = got[name]
        if g.dtype != want.dtype or g.shape != want.shape or g.tobytes() != want.tobytes():
            fail("buffer %s: pulled %r, expected the last pushed %r" % (name, g, want))
    print(
        "e2e_reference: %d params (max %d ulp from numpy), %d buffers exact, step %d"
        % (len(shadows), worst, len(buffers), steps)
    )


def usage():
    """Print usage and exit with status 2."""
    sys.stderr.write(
        "usage: e2e_reference.py gen DIR STEPS SEED\n"
        "       e2e_reference.py check DIR PULLED DECAY STEPS\n"
    )
    sys.exit(2)


def main():
    """Dispatch on the subcommand."""
    if len(sys.argv) < 2:
        usage()
    if sys.argv[1] == "gen":
        cmd_gen(sys.argv[2:])
    elif sys.argv[1] == "check":
        cmd_check(sys.argv[2:])
    else:
        usage()


if __name__ == "__main__":
    main()
