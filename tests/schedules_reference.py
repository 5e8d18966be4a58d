#!/usr/bin/python3
"""schedules_reference.py - inputs and independent references for
tests/test_schedules.sh, the acceptance test of the EMA options (issue 3,
docs/EMA.md): schedules of six libraries, step gaps, the non-finite guard,
sharded writers, BF16 params, several decays, pull conversion, name rules,
buffer policies and live reconfiguration.

Shares no code with src/ or client/: files are written and read with
tests/safetensors_np.py; the libraries' decay sequences come from
tests/schedules_libs.py; the EMA arithmetic is numpy's own:

    first push of a tensor, or decay 0:  S = x (float32, or float64 for F64)
    otherwise:  S = S - float32(1 - decay) * (S - x)   (each op rounded, no FMA)

which is what the daemon promises (docs/EMA.md, "The update"). Where a
library rounds differently (torch lerp_, float32 decays, diffusers' copy by
subtraction) the exact library arithmetic is run too (with torch where it
needs torch), and the distance is measured, printed and held to a bound
derived below (lerp_tolerance).

    schedules_reference.py gen DIR
        Writes every input file under DIR (one subdirectory per scenario).
    schedules_reference.py check DIR
        Compares the pulls the shell test left in DIR/out with the
        references; prints one line per check with the measured distances;
        exit status 1 on any mismatch. Torch-based checks run when torch
        imports; otherwise they are skipped with a message, or fail when
        EMAD_REQUIRE_TORCH=1.

The step counts and file names here and in test_schedules.sh go together;
every pulled file's step metadata is checked, so a mismatch fails loudly.
"""

import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np as st  # noqa: E402
import schedules_libs as libs  # noqa: E402

SEED = 20240917
SCHED_STEPS = 200
BF16_STEPS = 1000
BF16_DECAY = 0.9999

WALK = {"fc.weight": ((16, 8), 1.0), "fc.bias": ((16,), 0.01), "conv.weight": ((4, 3, 3, 3), 100.0),
        "scale": ((), 1.0)}
AVG_PARAMS = {"fc.weight": (16, 8), "fc.bias": (16,), "bn.weight": (16,), "bn.bias": (16,),
              "conv.weight": (4, 3, 3, 3), "conv.bias": (4,), "scale": ()}
GAP_LAST = 200
NAN_STEPS = 22
NAN_BAD_STEP = 21
NAN_ELEM = (1, 2)
WR_STEPS = 30
MD_STEPS = 50
CF_STEPS = 90
# Values whose conversion from float64 rounds differently through float32
# (double rounding): element 0 for BF16, element 1 for F16.
TRAPS = [1 + 2.0**-8 + 2.0**-30, 1 + 2.0**-11 + 2.0**-30, -(1 + 2.0**-8 + 2.0**-30), 2.5]

FAILURES = []


def fail(msg):
    """Record a mismatch (all are reported, then exit 1)."""
    FAILURES.append(msg)
    sys.stderr.write("schedules_reference.py: FAIL: %s\n" % msg)


def say(msg):
    """Print one result line."""
    print("  " + msg)
    sys.stdout.flush()


def save(path, tensors):
    """Write tensors with format=pt."""
    st.save(path, tensors, {"format": "pt"})


# ---------------------------------------------------------------- numbers

def ordered(a):
    """Float array -> int64 array ordered like the floats (ulp distances)."""
    if isinstance(a, st.BF16):
        i = a.bits.astype(np.int64)
        nbits = 16
    else:
        nbits = a.dtype.itemsize * 8
        i = a.view({16: np.uint16, 32: np.uint32, 64: np.uint64}[nbits])
        if nbits == 64:
            i = i.astype(np.uint64)
            sign = (i >> np.uint64(63)).astype(bool)
            mag = (i & np.uint64((1 << 63) - 1)).astype(np.int64)
            return np.where(sign, -mag, mag)
        i = i.astype(np.int64)
    sign = (i >> (nbits - 1)) & 1
    mag = i & ((1 << (nbits - 1)) - 1)
    return np.where(sign == 1, -mag, mag)


def ulps(got, want):
    """Largest ulp distance between two same-typed tensors (NaN == NaN at the
    same place; a NaN against a number counts as 2**62)."""
    if isinstance(want, st.BF16):
        if not isinstance(got, st.BF16) or got.shape != want.shape:
            return 2**62
        gf, wf = got.to_float32(), want.to_float32()
    else:
        if isinstance(got, st.BF16) or got.dtype != want.dtype or got.shape != want.shape:
            return 2**62
        gf, wf = got, want
    if gf.size == 0:
        return 0
    gn, wn = np.isnan(gf), np.isnan(wf)
    if np.any(gn != wn):
        return 2**62
    d = np.abs(ordered(got) - ordered(want))
    d = np.where(gn, 0, d)
    return int(d.max())


def f32(x):
    """float32 copy (BF16 and F16 widened exactly)."""
    if isinstance(x, st.BF16):
        return x.to_float32()
    return np.asarray(x, dtype=np.float32)


def shadow_dtype(x):
    """float64 for F64 values, float32 for the rest."""
    return np.float64 if (not isinstance(x, st.BF16) and x.dtype == np.float64) else np.float32


def widen(x):
    """Value in its shadow dtype."""
    return f32(x) if shadow_dtype(x) == np.float32 else np.asarray(x, np.float64)


def ema_update(s, x, decay):
    """One EMA update in the daemon's promised arithmetic; s None or decay 0 copies."""
    x = widen(x)
    if s is None or decay == 0.0:
        return x.copy()
    if x.dtype == np.float64:
        return s - (1.0 - decay) * (s - x)
    c = np.float32(1.0 - decay)
    return (s - c * (s - x)).astype(np.float32)


def bf16_from_f64(v):
    """Round float64 values to BF16, nearest even, directly (no float32 step)."""
    v = np.asarray(v, dtype=np.float64)
    out = np.empty(v.shape, dtype=np.float32)
    for idx, x in np.ndenumerate(v):
        if x == 0 or not math.isfinite(x):
            out[idx] = np.float32(x)
            continue
        m, e = math.frexp(x)
        if e < -125 or e > 127:
            raise ValueError("bf16_from_f64: %r outside the normal range" % x)
        out[idx] = np.float32(math.ldexp(round(m * 256.0), e - 8))
    return st.BF16((out.view(np.uint32) >> np.uint32(16)).astype(np.uint16))


def convert(shadow, dtype):
    """Pull conversion of a float32/float64 shadow to F32, F16 or BF16 (RNE, once)."""
    if dtype == "F32":
        return shadow.astype(np.float32)
    if dtype == "F16":
        return shadow.astype(np.float16)
    if shadow.dtype == np.float64:
        return bf16_from_f64(shadow)
    return st.BF16.from_float32(shadow)


def as_pushed(shadow, pushed):
    """A shadow converted back to the dtype of the pushed value (a plain pull)."""
    if isinstance(pushed, st.BF16):
        return st.BF16.from_float32(shadow)
    return shadow.astype(pushed.dtype)


def load_pull(path, step, names=None):
    """Load a pulled file, checking its metadata step (and tensor names)."""
    try:
        got, meta = st.load(path)
    except (OSError, st.FormatError) as e:
        fail("%s: %s" % (path, e))
        return None
    if meta.get("step") != str(step):
        fail("%s: metadata step %r, expected %r" % (os.path.basename(path), meta.get("step"),
                                                    str(step)))
    if names is not None and sorted(got) != sorted(names):
        fail("%s: tensors %r, expected %r" % (os.path.basename(path), sorted(got), sorted(names)))
    return got


def compare(label, got, want, max_ulp=1):
    """Every tensor of want within max_ulp of got; returns the worst distance."""
    worst = 0
    for name, w in want.items():
        if name not in got:
            fail("%s: %s missing from the pull" % (label, name))
            continue
        d = ulps(got[name], w)
        if d > max_ulp:
            fail("%s: %s is %s ulp from the reference (max %d)" % (
                label, name, d if d < 2**62 else "NaN/dtype/shape mismatch:", max_ulp))
        worst = max(worst, d)
    return worst


def exact(label, got, want):
    """Tensors bit-identical (dtype, shape, bytes)."""
    for name, w in want.items():
        g = got.get(name)
        if g is None:
            fail("%s: %s missing from the pull" % (label, name))
            continue
        gb = g.bits if isinstance(g, st.BF16) else g
        wb = w.bits if isinstance(w, st.BF16) else w
        if (isinstance(g, st.BF16) != isinstance(w, st.BF16) or gb.dtype != wb.dtype
                or gb.shape != wb.shape or gb.tobytes() != wb.tobytes()):
            fail("%s: %s is %r, expected exactly %r" % (label, name, g, w))


def rel_err(got, want):
    """max |got - want| / |want| (want away from zero by construction)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want) / np.abs(want)))


def lerp_tolerance(values, dmax, extra=0.0):
    """Bound on |daemon - library| when the library evaluates S + w (x - S)
    in another order (lerp_, possibly with FMA) or with a decay rounded to
    float32: each update rounds at most 3 times on either side, each error
    at most 2^-24 of a quantity bounded by 2M (M = the largest |value| and
    |shadow|, the shadow being a convex combination of values), so one step
    differs by at most 16 * 2^-24 * M, plus |dw| * 2M for a decay that
    differs by dw. A difference carried from earlier steps shrinks by the
    factor decay <= dmax at every update, so the total stays below one
    step's bound / (1 - dmax)."""
    m = max(float(np.max(np.abs(v))) if np.size(v) else 0.0 for v in values)
    return (16 * 2.0**-24 + 2 * extra) * m / (1 - dmax)


# ---------------------------------------------------------------- inputs

def walk_values(rng, shapes, steps, first=0):
    """Random walks: {t: {name: float32 array}} for t = first..steps."""
    cur = {n: s * rng.standard_normal(shape) for n, (shape, s) in shapes.items()}
    if "scale" in cur:
        cur["scale"] = 1.5 + 0.1 * cur["scale"]
    out = {}
    for t in range(first, steps + 1):
        if t > first:
            for n, (shape, s) in shapes.items():
                cur[n] = cur[n] + 0.2 * s * rng.standard_normal(shape)
        out[t] = {n: np.asarray(v, dtype=np.float32) for n, v in cur.items()}
    return out


def gen(d):
    """Write every input file."""
    rng = np.random.Generator(np.random.PCG64(SEED))

    # 1-5: one random walk shared by the library schedules, steps 0..200.
    os.makedirs(os.path.join(d, "walk"))
    for t, p in walk_values(rng, WALK, SCHED_STEPS, 0).items():
        save(os.path.join(d, "walk", "p_%d.safetensors" % t), p)

    # 6: a model shaped like the torch module of check_avg, with BatchNorm buffers.
    os.makedirs(os.path.join(d, "avg"))
    shapes = {n: (s, 0.5) for n, s in AVG_PARAMS.items()}
    shapes["bn.running_mean"] = ((16,), 1.0)
    shapes["bn.running_var"] = ((16,), 0.1)
    for t, p in walk_values(rng, shapes, SCHED_STEPS, 1).items():
        b = {n: p.pop(n) for n in ("bn.running_mean", "bn.running_var")}
        b["bn.running_var"] = (np.abs(b["bn.running_var"]) + 1).astype(np.float32)
        b["bn.num_batches_tracked"] = np.array(t, dtype=np.int64)
        save(os.path.join(d, "avg", "p_%d.safetensors" % t), p)
        save(os.path.join(d, "avg", "b_%d.safetensors" % t), b)

    # 7: "a" pushed every 5 steps, "b" and "c" every 10; values in [1, 4].
    os.makedirs(os.path.join(d, "gap"))
    for t in range(5, GAP_LAST + 1, 5):
        p = {"a": rng.uniform(1, 4, (10,)).astype(np.float32)}
        if t % 10 == 0:
            p["b"] = rng.uniform(1, 4, (3, 4)).astype(np.float32)
            p["c"] = np.array(rng.uniform(1, 4), dtype=np.float32)
        save(os.path.join(d, "gap", "p_%d.safetensors" % t), p)

    # 8: averaged tensors plus a copied causal mask holding -inf.
    os.makedirs(os.path.join(d, "nan"))
    mask = np.triu(np.full((3, 3), -np.inf, dtype=np.float32), 1)
    shapes = {"fc.weight": ((4, 5), 1.0), "fc.bias": ((5,), 0.1), "scale": ((), 1.0)}
    for t, p in walk_values(rng, shapes, NAN_STEPS, 1).items():
        p["attn.mask"] = mask
        save(os.path.join(d, "nan", "p_%d.safetensors" % t), p)
        if t == NAN_BAD_STEP:
            bad = dict(p)
            bad["fc.weight"] = p["fc.weight"].copy()
            bad["fc.weight"][NAN_ELEM] = np.nan
            save(os.path.join(d, "nan", "bad_%d.safetensors" % t), bad)
            bad["scale"] = np.array(np.inf, dtype=np.float32)
            save(os.path.join(d, "nan", "skip_%d.safetensors" % t), bad)

    # 9: sizes not divisible by 4 (35, 3, a scalar), F16, F64, int and bool buffers.
    os.makedirs(os.path.join(d, "wr"))
    shapes = {"fc.weight": ((7, 5), 1.0), "fc.bias": ((3,), 0.1), "scale": ((), 1.0),
              "emb": ((6,), 2.0), "proj": ((5,), 10.0), "bn.running_mean": ((6,), 1.0)}
    for t, p in walk_values(rng, shapes, WR_STEPS, 1).items():
        p["emb"] = p["emb"].astype(np.float16)
        p["proj"] = p["proj"].astype(np.float64) + rng.standard_normal(5) * 1e-9
        b = {"bn.running_mean": p.pop("bn.running_mean"),
             "bn.num_batches_tracked": np.array(1000 + t, dtype=np.int64),
             "mask": rng.integers(0, 2, 5).astype(np.bool_)}
        save(os.path.join(d, "wr", "p_%d.safetensors" % t), p)
        save(os.path.join(d, "wr", "b_%d.safetensors" % t), b)
    with open(os.path.join(d, "wr", "order"), "w") as f:
        for t in range(1, WR_STEPS + 1):
            order = {1: [0, 1, 2, 3], 2: [3, 2, 1, 0]}.get(t) or list(rng.permutation(4))
            f.write("%d %s\n" % (t, " ".join(str(k) for k in order)))

    # 10: BF16 params drifting by half their size over 1000 steps.
    os.makedirs(os.path.join(d, "bf"))
    shapes = {"w": (64,), "m": (4, 8), "s": ()}
    base = {n: (np.where(rng.random(s) < 0.5, -1.0, 1.0) * rng.uniform(1, 4, s)) for n, s in
            shapes.items()}
    for t in range(1, BF16_STEPS + 1):
        p = {}
        for n, s in shapes.items():
            v = (base[n] * (1 + 0.5 * t / BF16_STEPS)
                 + 0.01 * np.abs(base[n]) * rng.standard_normal(s))
            p[n] = st.BF16.from_float32(np.asarray(v, np.float32))
        save(os.path.join(d, "bf", "p_%d.safetensors" % t), p)

    # 11: several decays, name rules, buffer policies, every dtype.
    os.makedirs(os.path.join(d, "md"))
    shapes = {"fc.weight": ((6, 4), 1.0), "fc.bias": ((6,), 0.1), "scale": ((), 1.0),
              "emb.weight": ((5, 3), 1.0), "aux.head": ((2, 2), 1.0), "x.tmp": ((3,), 1.0),
              "proj": ((4,), 100.0), "h.f16": ((5,), 3.0), "bn.running_mean": ((6,), 1.0),
              "bn.running_var": ((6,), 0.1), "pos": ((3,), 2.0)}
    for t, p in walk_values(rng, shapes, MD_STEPS, 1).items():
        p["x.tmp"] = p["x.tmp"].astype(np.float16)
        p["proj"] = p["proj"].astype(np.float64) + rng.standard_normal(4) * 1e-6
        p["h.f16"] = p["h.f16"].astype(np.float16)
        p["emb.f64"] = np.array(TRAPS, dtype=np.float64)
        b = {"bn.running_mean": p.pop("bn.running_mean"),
             "bn.running_var": (np.abs(p.pop("bn.running_var")) + 1).astype(np.float64),
             "bn.num_batches_tracked": np.array(2**40 + t, dtype=np.int64),
             "mask": rng.integers(0, 2, 4).astype(np.bool_),
             "pos": st.BF16.from_float32(p.pop("pos"))}
        save(os.path.join(d, "md", "p_%d.safetensors" % t), p)
        save(os.path.join(d, "md", "b_%d.safetensors" % t), b)

    # 11: configure mid-run.
    os.makedirs(os.path.join(d, "cf"))
    shapes = {"fc.weight": ((5, 5), 1.0), "scale": ((), 1.0)}
    for t, p in walk_values(rng, shapes, CF_STEPS, 1).items():
        save(os.path.join(d, "cf", "p_%d.safetensors" % t), p)


# ---------------------------------------------------------------- checks

def inputs(d, sub, steps, prefix="p"):
    """{t: tensors} of the files DIR/sub/prefix_t.safetensors."""
    return {t: st.load(os.path.join(d, sub, "%s_%d.safetensors" % (prefix, t)))[0] for t in steps}


def run_ema(schedule, values):
    """Shadows after the (step, decay) schedule over values {t: tensors}."""
    s = {}
    for t, dec in schedule:
        for n, x in values[t].items():
            s[n] = ema_update(s.get(n), x, dec)
    return s


def run_faithful(schedule, values, update):
    """Shadows after the schedule, each update done by update(s, x, t, decay)."""
    s = {}
    for t, dec in schedule:
        for n, x in values[t].items():
            s[n] = f32(x).copy() if n not in s else update(s[n], f32(x), t, dec)
    return s


def report_library(label, got, alt, values, dmax, extra=0.0, max_ulp=None):
    """Compare a pull with the library's exact arithmetic (alt): print the
    largest ulp and relative distance; hold it to max_ulp when given, else
    to lerp_tolerance."""
    worst_ulp, worst_rel, ok = 0, 0.0, True
    for n, a in alt.items():
        a = np.asarray(a, np.float32)
        u = ulps(got[n], a)
        worst_ulp = max(worst_ulp, u)
        scale = max(float(np.max(np.abs(v[n]))) for v in values.values() if n in v)
        worst_rel = max(worst_rel, float(np.max(np.abs(got[n].astype(np.float64) - a))) / scale)
        if max_ulp is not None:
            if u > max_ulp:
                fail("%s: %s is %d ulp from the library's arithmetic (max %d)" % (
                    label, n, u, max_ulp))
                ok = False
        else:
            tol = lerp_tolerance([v[n] for v in values.values() if n in v], dmax, extra)
            diff = float(np.max(np.abs(got[n].astype(np.float64) - a)))
            if diff > tol:
                fail("%s: %s differs from the library's arithmetic by %g (bound %g)" % (
                    label, n, diff, tol))
                ok = False
    bound = ("<= %d ulp" % max_ulp) if max_ulp is not None else (
        "bound %.2g*max|x|" % ((16 * 2.0**-24 + 2 * extra) / (1 - dmax)))
    say("%-34s max %d ulp, max |diff|/max|x| %.2g (%s)%s" % (
        label, worst_ulp, worst_rel, bound, "" if ok else "  FAILED"))


def have_torch():
    """torch imported, or None (fails when EMAD_REQUIRE_TORCH=1)."""
    try:
        import torch

        torch.set_num_threads(1)
        return torch
    except ImportError as e:
        if os.environ.get("EMAD_REQUIRE_TORCH") == "1":
            fail("torch is required (EMAD_REQUIRE_TORCH=1) and does not import: %s" % e)
        else:
            say("SKIP torch-based checks: torch does not import (%s)" % e)
        return None


def torch_lerp(torch):
    """update() doing ema.lerp_(x, 1 - decay) on float32 torch tensors."""
    def update(s, x, _t, dec):
        ts = torch.from_numpy(s.copy())
        ts.lerp_(torch.from_numpy(x), 1.0 - dec)
        return ts.numpy()
    return update


def check_schedules(d, torch):
    """Tests 1-5: each library's decay sequence through the daemon (pulls
    out/<model>.safetensors) against our float64-decay subtraction-form
    reference (<= 1 ulp), then against the library's own arithmetic."""
    print("schedules (200 steps each, sub-form reference, then the library's arithmetic):")
    walk = inputs(d, "walk", range(0, SCHED_STEPS + 1))
    names = sorted(WALK)
    timm_w = dict(decay=0.95, min_decay=0.5, update_after_step=5, use_warmup=True, gamma=2.0,
                  power=0.75)
    timm_c = dict(decay=0.95, min_decay=0.0, update_after_step=3, use_warmup=False, gamma=1.0,
                  power=1.0)
    emapt = dict(beta=0.97, update_after_step=10, inv_gamma=1.0, power=0.8, min_value=0.5)
    diff_n = dict(decay=0.95, min_decay=0.3, update_after_step=2, use_ema_warmup=False,
                  inv_gamma=1.0, power=2 / 3)
    diff_w = dict(decay=0.999, min_decay=0.0, update_after_step=2, use_ema_warmup=True,
                  inv_gamma=1.0, power=2 / 3)
    cases = [
        ("tf", "TensorFlow num_updates", libs.tf_schedule(0.95, range(1, SCHED_STEPS + 1))),
        ("tema", "torch_ema num_updates", libs.torch_ema_schedule(0.9, SCHED_STEPS)),
        ("timmw", "timm V3 warmup", libs.timm_v3_schedule(SCHED_STEPS, **timm_w)),
        ("timmc", "timm V3 constant", libs.timm_v3_schedule(SCHED_STEPS, **timm_c)),
        ("emapt", "ema-pytorch warmup", libs.emapt_schedule(SCHED_STEPS, **emapt)),
        ("diffn", "diffusers num_updates", libs.diffusers_schedule(SCHED_STEPS, **diff_n)),
        ("diffw", "diffusers warmup", libs.diffusers_schedule(SCHED_STEPS, **diff_w)),
    ]
    pulls = {}
    for model, label, sched in cases:
        if len(sched) != SCHED_STEPS + (model == "tema"):
            fail("%s: schedule has %d updates" % (model, len(sched)))
        decays = [dec for _t, dec in sched]
        ncopy = sum(1 for dec in decays if dec == 0.0)
        got = load_pull(os.path.join(d, "out", model + ".safetensors"), SCHED_STEPS, names)
        if got is None:
            continue
        pulls[model] = got
        ref = run_ema(sched, walk)
        worst = compare(model, got, ref)
        moved = sum(not np.array_equal(ref[n], walk[SCHED_STEPS][n]) for n in names)
        if moved != len(names):
            fail("%s: reference equals the last value for %d tensors" % (model, len(names) - moved))
        say("%-34s %d ulp max (%d copies, decay %.4f..%.4f)" % (
            label + " [" + model + "]", worst, ncopy,
            min(x for x in decays if x > 0), max(decays)))

    # TensorFlow's own arithmetic: float32 decay, 1 - decay in float32.
    if "tf" in pulls:
        sched = cases[0][2]
        alt = run_faithful(sched, walk, lambda s, x, t, _d: s - (s - x) * libs.tf_c32(0.95, t))
        report_library("TensorFlow float32 decay", pulls["tf"], alt, walk, 0.95,
                       extra=2.0**-24)
    # diffusers' "copy" at decay 0 is S - 1.0 * (S - x).
    for model, idx in (("diffn", 5), ("diffw", 6)):
        if model in pulls:
            sched = cases[idx][2]

            def sub(s, x, _t, dec):
                return (s - np.float32(1.0 - dec) * (s - x)).astype(np.float32)
            alt = run_faithful(sched, walk, sub)
            report_library("diffusers sub_ [%s]" % model, pulls[model], alt, walk,
                           max(x for _t, x in sched), max_ulp=1)
    if torch is None:
        return
    # torch_ema: tmp = S - x; tmp.mul_(1 - decay); S.sub_(tmp) on torch tensors.
    if "tema" in pulls:
        def tema(s, x, _t, dec):
            ts = torch.from_numpy(s.copy())
            tmp = ts - torch.from_numpy(x)
            tmp.mul_(1.0 - dec)
            ts.sub_(tmp)
            return ts.numpy()
        alt = run_faithful(cases[1][2], walk, tema)
        report_library("torch_ema torch ops", pulls["tema"], alt, walk, 0.9, max_ulp=1)
    # timm and ema-pytorch: lerp_; ema-pytorch also with its float32 decay.
    for model, idx, dmax in (("timmw", 2, 0.95), ("timmc", 3, 0.95)):
        if model in pulls:
            alt = run_faithful(cases[idx][2], walk, torch_lerp(torch))
            report_library("timm lerp_ [%s]" % model, pulls[model], alt, walk, dmax)
    if "emapt" in pulls:
        alt = run_faithful(cases[4][2], walk, torch_lerp(torch))
        report_library("ema-pytorch lerp_, float64 decay", pulls["emapt"], alt, walk, 0.97)
        sched32 = libs.emapt_schedule(SCHED_STEPS, decay_fn=libs.emapt_decay_torch, **emapt)
        dd = max(abs(a[1] - b[1]) for a, b in zip(sched32, cases[4][2]))
        say("ema-pytorch float32 decay: largest |decay32 - decay64| = %.3g" % dd)
        alt = run_faithful(sched32, walk, torch_lerp(torch))
        report_library("ema-pytorch lerp_, float32 decay", pulls["emapt"], alt, walk, 0.97,
                       extra=max(dd, 2.0**-24))


def check_avg(d, torch):
    """Test 6: torch.optim.swa_utils.AveragedModel with the EMA multi_avg_fn
    and use_buffers=True, run for real, against the daemon's model created
    with --buffers average (pull out/avg.safetensors)."""
    print("AveragedModel (decay 0.9, use_buffers, 200 steps):")
    decay = 0.9
    params = inputs(d, "avg", range(1, SCHED_STEPS + 1), "p")
    bufs = inputs(d, "avg", range(1, SCHED_STEPS + 1), "b")
    values = {t: dict(params[t], **bufs[t]) for t in params}
    names = sorted(values[1])
    got = load_pull(os.path.join(d, "out", "avg.safetensors"), SCHED_STEPS, names)
    if got is None:
        return
    sched = libs.averaged_model_schedule(decay, SCHED_STEPS)
    floats = {t: {n: v for n, v in vals.items() if v.dtype.kind == "f"}
              for t, vals in values.items()}
    ref = run_ema(sched, floats)
    worst = compare("avg", got, ref)
    last_nbt = values[SCHED_STEPS]["bn.num_batches_tracked"]
    exact("avg", got, {"bn.num_batches_tracked": last_nbt})
    say("%-34s %d ulp max, num_batches_tracked = %d (copied)" % (
        "sub-form reference", worst, int(got["bn.num_batches_tracked"])))
    if torch is None:
        return
    from torch import nn
    from torch.optim import swa_utils

    class Net(nn.Module):
        """The module whose state the avg/ files hold."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 16)
            self.bn = nn.BatchNorm1d(16)
            self.conv = nn.Conv2d(3, 4, 3)
            self.scale = nn.Parameter(torch.tensor(1.0))

    net = Net()
    state = net.state_dict()
    if sorted(state) != names:
        fail("avg: torch module state %r differs from the pushed names %r" % (sorted(state), names))
        return
    key, fn = libs.ema_multi_avg_fn(decay)
    swa = swa_utils.AveragedModel(net, use_buffers=True, **{key: fn})
    with torch.no_grad():
        for t in range(1, SCHED_STEPS + 1):
            for n, v in values[t].items():
                state[n].copy_(torch.from_numpy(np.asarray(v)))
            swa.update_parameters(net)
    alt = {n: v.detach().numpy().copy() for n, v in swa.module.state_dict().items()}
    report_library("AveragedModel (%s) floats" % key, got,
                   {n: v for n, v in alt.items() if v.dtype.kind == "f"}, floats, decay)
    say("AveragedModel num_batches_tracked = %d, pushed %d: the library averages the int64"
        " buffer and truncates; emad copies it" % (int(alt["bn.num_batches_tracked"]),
                                                  int(last_nbt)))


def perstep_ema64(pushes, decay_at, last):
    """Per-step float64 EMA of a parameter held at the value of its next push
    (pushes: sorted [(t, value)]); starts as the first pushed value."""
    s = None
    prev = None
    for t, v in pushes:
        v = np.asarray(v, np.float64)
        if s is None:
            s = v.copy()
        else:
            for u in range(prev + 1, t + 1):
                dec = decay_at(u)
                s = v.copy() if dec == 0.0 else dec * s + (1 - dec) * v
        prev = t
    assert prev == last
    return s


def sched_decay(schedule, d, uas=0, inv_gamma=1.0, power=2 / 3, min_decay=0.0):
    """The daemon's per-step decay (docs/EMA.md), for the step-gap references."""
    def at(t):
        if t <= uas:
            return 0.0
        if schedule == "constant":
            return d
        if schedule == "num_updates":
            n = t - uas
            return max(min_decay, min(d, (1 + n) / (10 + n)))
        e = t - uas - 1
        if e == 0:
            return 0.0
        return max(min(1 - (1 + e / inv_gamma) ** -power, d), min_decay)
    return at


def check_gap(d):
    """Test 7: pushes every 5 ("a") or 10 ("b", "c") steps with step_gap =
    compensate equal the per-step float64 EMA of the piecewise-constant
    parameter within 1e-6 relative; step_gap = ignore does not."""
    print("step gaps (a every 5 steps, b and c every 10, up to step 200):")
    vals = inputs(d, "gap", range(5, GAP_LAST + 1, 5))
    models = {"gapc": sched_decay("constant", 0.99),
              "gapn": sched_decay("num_updates", 0.99, uas=15),
              "gapw": sched_decay("warmup", 0.99, uas=3, power=0.75)}
    for model, at in models.items():
        got = load_pull(os.path.join(d, "out", model + ".safetensors"), GAP_LAST, ["a", "b", "c"])
        if got is None:
            continue
        worst, worst_ulp = 0.0, 0
        for n in ("a", "b", "c"):
            pushes = [(t, v[n]) for t, v in sorted(vals.items()) if n in v]
            want = perstep_ema64(pushes, at, GAP_LAST)
            r = rel_err(got[n], want)
            worst = max(worst, r)
            if r > 1e-6:
                fail("%s: %s is %.3g relative from the per-step float64 EMA (max 1e-6)"
                     % (model, n, r))
            # The daemon's own formula: one update per push with the product of the decays.
            s, prev = None, None
            for t, v in pushes:
                if s is not None:
                    prod = 1.0
                    for u in range(prev + 1, t + 1):
                        prod *= at(u)
                    s = ema_update(s, v, prod)
                else:
                    s = ema_update(None, v, 0.0)
                prev = t
            worst_ulp = max(worst_ulp, ulps(got[n], s))
            if ulps(got[n], s) > 1:
                fail("%s: %s is %d ulp from the float32 product-of-decays update" % (
                    model, n, ulps(got[n], s)))
        say("%-34s %.2g relative from per-step float64 EMA (max 1e-6); %d ulp from the"
            " product form" % ("compensate [" + model + "]", worst, worst_ulp))
    got = load_pull(os.path.join(d, "out", "gapi.safetensors"), GAP_LAST, ["a", "b", "c"])
    if got is not None:
        worst, worst_ulp = 0.0, 0
        for n in ("a", "b", "c"):
            pushes = [(t, v[n]) for t, v in sorted(vals.items()) if n in v]
            worst = max(worst, rel_err(got[n], perstep_ema64(pushes, models["gapc"], GAP_LAST)))
            s = None
            for _t, v in pushes:
                s = ema_update(s, v, 0.99)
            worst_ulp = max(worst_ulp, ulps(got[n], s))
        if worst < 1e-3:
            fail("gapi: step_gap=ignore is only %.3g from the per-step EMA: the gap test cannot"
                 " tell the two policies apart" % worst)
        if worst_ulp > 1:
            fail("gapi: %d ulp from one decay per push" % worst_ulp)
        say("%-34s %.2g relative from per-step EMA (must be > 1e-3); %d ulp from one decay"
            " per push" % ("ignore [gapi] (sanity)", worst, worst_ulp))


def check_nan(d):
    """Test 8: reject / skip / allow (the bit-identical check is done by the
    shell with cmp; here the final values)."""
    print("non-finite guard:")
    clean = inputs(d, "nan", range(1, NAN_STEPS + 1))
    names = sorted(clean[1])
    avg = [n for n in names if n != "attn.mask"]
    last_mask = {"attn.mask": clean[NAN_STEPS]["attn.mask"]}
    for decay in ("0.9", "0.99"):
        got = load_pull(os.path.join(d, "out", "nanr_%s.safetensors" % decay), NAN_STEPS, names)
        if got is None:
            continue
        ref = run_ema([(t, float(decay)) for t in range(1, NAN_STEPS + 1)],
                      {t: {n: v[n] for n in avg} for t, v in clean.items()})
        w = compare("nanr %s" % decay, got, ref)
        exact("nanr %s" % decay, got, last_mask)
        say("%-34s %d ulp from the reference without the rejected push, -inf mask copied"
            % ("reject, decay %s" % decay, w))
    # skip, with step_gap compensate: skipped tensors keep their step 20.
    skip = st.load(os.path.join(d, "nan", "skip_%d.safetensors" % NAN_BAD_STEP))[0]
    got = load_pull(os.path.join(d, "out", "nans.safetensors"), NAN_STEPS, names)
    if got is not None:
        s = {}
        last = {}
        for t in range(1, NAN_STEPS + 1):
            vals = skip if t == NAN_BAD_STEP else clean[t]
            for n in avg:
                if not np.all(np.isfinite(vals[n])):
                    continue
                dec = 0.0 if n not in s else 0.9 ** (t - last[n])
                s[n] = ema_update(s.get(n), vals[n], dec)
                last[n] = t
        w = compare("nans", got, s)
        exact("nans", got, last_mask)
        say("%-34s %d ulp (fc.weight and scale skipped at %d, then compensated 0.9^2)" % (
            "skip", w, NAN_BAD_STEP))
    bad = st.load(os.path.join(d, "nan", "bad_%d.safetensors" % NAN_BAD_STEP))[0]
    got = load_pull(os.path.join(d, "out", "nana.safetensors"), NAN_STEPS, names)
    if got is not None:
        vals = {t: {n: (bad if t == NAN_BAD_STEP else clean[t])[n] for n in avg}
                for t in clean}
        with np.errstate(invalid="ignore"):
            ref = run_ema([(t, 0.9) for t in range(1, NAN_STEPS + 1)], vals)
        w = compare("nana", got, ref)
        nan_at = list(zip(*np.nonzero(np.isnan(got["fc.weight"]))))
        if nan_at != [NAN_ELEM]:
            fail("nana: NaN at %r, expected only at %r" % (nan_at, NAN_ELEM))
        say("%-34s %d ulp, NaN propagated to fc.weight%r only" % ("allow", w, NAN_ELEM))


def check_writers(d):
    """Test 9: four writers' shards == one writer's whole tensors, bit for bit,
    for both decays; both match the reference."""
    print("four writers (30 steps, shards 0..3 of every tensor):")
    params = inputs(d, "wr", range(1, WR_STEPS + 1), "p")
    bufs = inputs(d, "wr", range(1, WR_STEPS + 1), "b")
    names = sorted(list(params[1]) + list(bufs[1]))
    for decay in ("0.9", "0.99"):
        g4 = load_pull(os.path.join(d, "out", "w4_%s.safetensors" % decay), WR_STEPS, names)
        g1 = load_pull(os.path.join(d, "out", "w1_%s.safetensors" % decay), WR_STEPS, names)
        if g4 is None or g1 is None:
            continue
        exact("w4 vs w1 %s" % decay, g4, g1)
        vals = {t: dict(params[t], **{"bn.running_mean": bufs[t]["bn.running_mean"]})
                for t in params}
        ref = run_ema([(t, float(decay)) for t in range(1, WR_STEPS + 1)], vals)
        want = {n: as_pushed(s, params[WR_STEPS].get(n, bufs[WR_STEPS].get(n))) for n, s in
                ref.items()}
        w = compare("w4 %s" % decay, g4, want)
        exact("w4 %s" % decay, g4, {n: bufs[WR_STEPS][n] for n in ("bn.num_batches_tracked",
                                                                    "mask")})
        say("%-34s bit-identical to one writer; %d ulp from the reference" % (
            "decay " + decay, w))


def check_bf16(d, torch):
    """Test 10: BF16 params, decay 0.9999, 1000 steps: the F32 shadow (pull
    --dtype F32) equals the F32 reference from the same BF16 inputs; a
    shadow kept in BF16 would not move."""
    print("BF16 params, decay 0.9999, 1000 steps:")
    vals = inputs(d, "bf", range(1, BF16_STEPS + 1))
    names = sorted(vals[1])
    got = load_pull(os.path.join(d, "out", "bf_f32.safetensors"), BF16_STEPS, names)
    plain = load_pull(os.path.join(d, "out", "bf.safetensors"), BF16_STEPS, names)
    if got is None or plain is None:
        return
    ref = run_ema([(t, BF16_DECAY) for t in range(1, BF16_STEPS + 1)], vals)
    w = compare("bf16 F32 pull", got, ref)
    rel = max(rel_err(got[n], ref[n]) for n in names)
    if rel > 1e-6:
        fail("bf16: F32 shadow %.3g relative from the F32 reference (max 1e-6)" % rel)
    exact("bf16 plain pull", plain, {n: st.BF16.from_float32(ref[n]) for n in names})
    # A BF16 shadow: every operation rounded to BF16 (what torch does for
    # bfloat16 tensors on CPU: compute in float32, round the result).
    def bf(x):
        return st.BF16.from_float32(np.asarray(x, np.float32)).to_float32()
    c = bf(np.float32(1 - BF16_DECAY))
    moved_f32 = stuck = total = 0
    gap = 0.0
    for n in names:
        s = vals[1][n].to_float32().copy()
        first = s.copy()
        for t in range(2, BF16_STEPS + 1):
            s = bf(s - bf(c * bf(s - vals[t][n].to_float32())))
        stuck += int(np.sum(s == first))
        total += s.size
        moved_f32 = max(moved_f32, rel_err(ref[n], first))
        gap = max(gap, rel_err(s, ref[n]))
    if stuck < 0.9 * total:
        fail("bf16: a BF16 shadow moved for %d of %d elements; the test data do not show the"
             " problem" % (total - stuck, total))
    if gap < 1e-2:
        fail("bf16: a BF16 shadow is only %.3g from the F32 reference" % gap)
    say("F32 shadow: %d ulp, %.2g relative from the F32 reference (max 1e-6); plain pull = BF16"
        " RNE of it" % (w, rel))
    say("a BF16 shadow stays at its first value for %d of %d elements and ends %.1f%% from the"
        " F32 reference, which moved %.1f%%" % (stuck, total, 100 * gap, 100 * moved_f32))


def check_md(d):
    """Test 11: several decays, pull --decay/--dtype, copy/ignore globs,
    buffers average vs copy, configure mid-run."""
    print("several decays, conversions, name rules, buffers, configure:")
    params = inputs(d, "md", range(1, MD_STEPS + 1), "p")
    bufs = inputs(d, "md", range(1, MD_STEPS + 1), "b")
    kept = sorted(n for n in list(params[1]) + list(bufs[1]) if n not in ("aux.head", "x.tmp"))
    averaged_p = ["fc.weight", "fc.bias", "scale", "proj", "h.f16"]
    averaged_b = ["bn.running_mean", "bn.running_var", "pos"]
    last = dict(params[MD_STEPS], **bufs[MD_STEPS])
    pulls = {}
    for key in ("a", "b", "def", "b_bf16", "b_f16", "b_f32", "a_f32", "c"):
        pulls[key] = load_pull(os.path.join(d, "out", "md_%s.safetensors" % key), MD_STEPS, kept)
        if pulls[key] is None:
            return
    for key, decay in (("a", 0.9), ("b", 0.99)):
        vals = {t: {n: dict(params[t], **bufs[t])[n] for n in averaged_p + averaged_b}
                for t in params}
        ref = run_ema([(t, decay) for t in range(1, MD_STEPS + 1)], vals)
        want = {n: as_pushed(s, last[n]) for n, s in ref.items()}
        w = compare("md %s" % decay, pulls[key], want)
        exact("md %s" % decay, pulls[key], {n: last[n] for n in ("emb.weight", "emb.f64",
                                                                 "bn.num_batches_tracked", "mask")})
        # The full-precision shadows through --dtype F32.
        wf = compare("md %s F32" % decay, pulls[key + "_f32"],
                     {n: s.astype(np.float32) for n, s in ref.items()})
        w = max(w, wf)
        say("%-34s %d ulp; copied and int/bool tensors exact; aux.head, x.tmp ignored" % (
            "pull --decay %s" % decay, w))
    exact("md default decay", pulls["def"], pulls["a"])
    say("%-34s identical to --decay 0.9 (the first)" % "pull without --decay")
    # Conversions of the daemon's own shadows: float32 ones from the F32
    # pull, float64 ones (proj, bn.running_var, emb.f64) from the plain pull.
    for key, dt in (("b_bf16", "BF16"), ("b_f16", "F16")):
        want = {}
        for n in kept:
            v = last[n]
            if isinstance(v, st.BF16) or v.dtype.kind == "f":
                src = pulls["b"][n] if (not isinstance(v, st.BF16) and v.dtype == np.float64) \
                    else pulls["b_f32"][n]
                want[n] = convert(src, dt)
            else:
                want[n] = v
        exact("md --dtype %s" % dt, pulls[key], want)
        traps = pulls[key]["emb.f64"]
        tf = traps.to_float32() if isinstance(traps, st.BF16) else traps.astype(np.float32)
        say("%-34s every tensor = RNE of the shadow; emb.f64 traps -> %s (no double rounding)"
            % ("pull --decay 0.99 --dtype " + dt, ", ".join(repr(float(x)) for x in tf[:2])))
    # buffers copy (mdc): floating buffers are the last pushed values.
    exact("mdc", pulls["c"], {n: last[n] for n in averaged_b + ["bn.num_batches_tracked", "mask"]})
    vals = {t: {n: params[t][n] for n in averaged_p} for t in params}
    ref = run_ema([(t, 0.9) for t in range(1, MD_STEPS + 1)], vals)
    w = compare("mdc", pulls["c"], {n: as_pushed(s, last[n]) for n, s in ref.items()})
    say("%-34s floating buffers = last pushed values; params %d ulp" % ("--buffers copy", w))

    # configure: 0.9 for steps 1..30, 0.99 for 31..60, warmup (uas 50, power 1) after.
    vals = inputs(d, "cf", range(1, CF_STEPS + 1))
    got = load_pull(os.path.join(d, "out", "cf.safetensors"), CF_STEPS, sorted(vals[1]))
    if got is None:
        return
    warm = sched_decay("warmup", 0.99, uas=50, power=1.0)
    sched = [(t, 0.9 if t <= 30 else 0.99 if t <= 60 else warm(t)) for t in range(1, CF_STEPS + 1)]
    ref = run_ema(sched, vals)
    w = compare("cf", got, ref)
    alt = run_ema([(t, 0.9) for t in range(1, CF_STEPS + 1)], vals)
    if all(ulps(got[n], alt[n]) <= 1 for n in alt):
        fail("cf: the pull also matches decay 0.9 throughout; configure had no visible effect")
    say("%-34s %d ulp (0.9 to 30, 0.99 to 60, warmup from 61)" % ("configure mid-run", w))


def check(d):
    """All checks; exit 1 on any failure."""
    torch = have_torch()
    check_schedules(d, torch)
    check_avg(d, torch)
    check_gap(d)
    check_nan(d)
    check_writers(d)
    check_bf16(d, torch)
    check_md(d)
    if FAILURES:
        sys.stderr.write("schedules_reference.py: %d check(s) failed\n" % len(FAILURES))
        sys.exit(1)
    print("schedules_reference: all checks passed")


def main():
    """Dispatch on the subcommand."""
    if len(sys.argv) != 3 or sys.argv[1] not in ("gen", "check"):
        sys.stderr.write("usage: schedules_reference.py gen|check DIR\n")
        sys.exit(2)
    if sys.argv[1] == "gen":
        gen(sys.argv[2])
    else:
        check(sys.argv[2])


if __name__ == "__main__":
    main()
