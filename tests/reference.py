#!/usr/bin/python3
"""reference.py - an independent numpy reference for emad's EMA kernels and
float16/bfloat16 rounding, used by tests/check_ema.c and tests/check_dtype.c.

It shares no code with src/: the EMA is numpy's own float32 (or float64)
arithmetic, float16 rounding is numpy's astype(np.float16) (round to nearest
even), and bfloat16 rounding is done here in numpy integer arithmetic and
cross-checked against a float64 nearest-value search.

Subcommands (all binary files are little-endian):

  reference.py ema SEED N STEPS DECAY DTYPE OUT
      DTYPE is F32, F16, BF16 or F64. Draws a random initial shadow and
      STEPS random value arrays of N elements from
      numpy.random.Generator(numpy.random.PCG64(SEED)) (see ema_inputs()),
      applies, once per step, exactly what PyTorch does on float32 tensors:
          shadow -= np.float32(1.0 - DECAY) * (shadow - value)
      (float32 throughout; F16 values via value.astype(np.float32), BF16
      values as uint16 bit patterns widened by (u16 << 16).view(float32);
      F64 in float64 with c = 1.0 - DECAY) and writes OUT:
          offset  size  field
          0       8     magic b"EMADEMA1"
          8       8     u64 N
          16      8     u64 STEPS
          24      8     f64 DECAY (as parsed by float())
          32      8     f64 c (for float32 shadows: the float32 c, widened)
          40      4     u32 value itemsize (F32 4, F16 2, BF16 2, F64 8)
          44      4     u32 shadow itemsize (4, or 8 for F64)
          48            initial shadow: N shadow elements
                        values: STEPS x N value elements (F16/BF16 as bits)
                        expected final shadow: N shadow elements

  reference.py vectors OUT
      Rounding test vectors. OUT:
          0       8     magic b"EMADVEC1"
          8       8     u64 COUNT
          16            COUNT u32: float32 input bit patterns
                        COUNT u16: numpy's float16 rounding of each input
                        COUNT u16: bfloat16 rounding (RNE) of each input
                        65536 u32: numpy's float32 value of float16 pattern i

Exit status 0 on success; on any error a message goes to stderr and the
status is 1 (2 for bad arguments).
"""

import struct
import sys

import numpy as np

VALUE_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}


def bf16_round(x):
    """Round float32 array x to bfloat16 bit patterns (uint16), nearest even.

    Integer arithmetic on the bit patterns: keep the upper 16 bits and add
    one when the dropped lower 16 bits are above half, or exactly half with
    an odd kept part. Sign-magnitude makes this right for negative values,
    and a carry out of the largest finite value lands on infinity. NaNs keep
    their upper bits and get the quiet bit (0x0040).
    """
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    upper = u >> np.uint32(16)
    lower = u & np.uint32(0xFFFF)
    odd = (upper & np.uint32(1)) == 1
    up = (lower > 0x8000) | ((lower == 0x8000) & odd)
    r = upper + up.astype(np.uint32)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    r = np.where(nan, upper | np.uint32(0x0040), r)
    return r.astype(np.uint16)


def bf16_round_by_distance(x):
    """The same rounding for finite x, by comparing float64 distances to the
    two bfloat16 neighbours (truncation and the next value away from zero);
    a neighbour past the largest finite bfloat16 counts as 2^128.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32)
    lo_bits = (u >> np.uint32(16)).astype(np.uint32)
    hi_bits = lo_bits + np.uint32(1)
    with np.errstate(all="ignore"):
        lo = (lo_bits << np.uint32(16)).view(np.float32).astype(np.float64)
        hi = (hi_bits << np.uint32(16)).view(np.float32).astype(np.float64)
        hi = np.where(np.isinf(hi), np.copysign(2.0**128, lo), hi)
        xd = x.astype(np.float64)
        dlo = np.abs(xd - lo)
        dhi = np.abs(hi - xd)
    even = (lo_bits & np.uint32(1)) == 0
    pick_lo = (dlo < dhi) | ((dlo == dhi) & even)
    return np.where(pick_lo, lo_bits, hi_bits).astype(np.uint16)


def bf16_widen(bits):
    """float32 values of bfloat16 bit patterns (uint16)."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def ema_inputs(seed, n, steps, dtype):
    """Deterministic inputs for `ema`: (shadow0, values, widened values).

    With rng = Generator(PCG64(seed)), in this order: per-element binary
    exponents k = rng.integers(lo, hi, n) (F16: [-20, 8], so some values are
    float16 subnormals; others [-30, 30]); a centre b = standard_normal(n) *
    2^k; shadow0 = b + standard_normal(n) * 2^k; then for each step,
    value = b + standard_normal(n) * 2^(k-1), all drawn in float64 and then
    cast to the value dtype (float16 by numpy's RNE astype, bfloat16 by
    bf16_round()). shadow0 is cast to the shadow dtype (float32, or float64
    for F64).
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    lo, hi = (-20, 9) if dtype == "F16" else (-30, 31)
    scale = np.ldexp(1.0, rng.integers(lo, hi, n))
    centre = rng.standard_normal(n) * scale
    shadow0 = centre + rng.standard_normal(n) * scale
    sdt = np.float64 if dtype == "F64" else np.float32
    shadow0 = shadow0.astype(sdt)
    raw = centre + rng.standard_normal((steps, n)) * (scale / 2)
    if dtype == "F32":
        values = raw.astype(np.float32)
        wide = values
    elif dtype == "F16":
        values = raw.astype(np.float16)
        wide = values.astype(np.float32)
    elif dtype == "BF16":
        values = bf16_round(raw.astype(np.float32))
        wide = bf16_widen(values)
    else:
        values = raw.astype(np.float64)
        wide = values
    return shadow0, values, wide


def cmd_ema(argv):
    """The `ema` subcommand: inputs and expected final shadow to a file."""
    if len(argv) != 6 or argv[4] not in VALUE_ITEMSIZE:
        usage()
    seed, n, steps = int(argv[0]), int(argv[1]), int(argv[2])
    decay, dtype, out = float(argv[3]), argv[4], argv[5]
    shadow0, values, wide = ema_inputs(seed, n, steps, dtype)
    shadow = shadow0.copy()
    if dtype == "F64":
        c = 1.0 - decay
        for k in range(steps):
            shadow -= c * (shadow - wide[k])
        c64 = c
    else:
        c = np.float32(1.0 - decay)
        for k in range(steps):
            shadow -= c * (shadow - wide[k])
        c64 = float(c)
    expected_dtype = np.float64 if dtype == "F64" else np.float32
    if shadow.dtype != expected_dtype or wide.dtype != expected_dtype:
        raise SystemExit("reference.py: internal error: arithmetic left %s" % expected_dtype)
    header = b"EMADEMA1" + struct.pack(
        "<QQddII", n, steps, decay, c64, VALUE_ITEMSIZE[dtype], shadow.dtype.itemsize
    )
    with open(out, "wb") as f:
        f.write(header)
        f.write(shadow0.astype(shadow0.dtype.newbyteorder("<")).tobytes())
        f.write(values.astype(values.dtype.newbyteorder("<")).tobytes())
        f.write(shadow.astype(shadow.dtype.newbyteorder("<")).tobytes())


def f32(*vals):
    """float32 bit patterns of Python floats (exact or rounded by numpy)."""
    return np.array(vals, dtype=np.float32).view(np.uint32)


def rounding_inputs():
    """float32 bit patterns to round: edge cases, every float16 value, the
    midpoints between neighbouring float16 and bfloat16 values and their
    float32 neighbours, and random bit patterns.
    """
    rng = np.random.Generator(np.random.PCG64(20240611))
    special = np.concatenate(
        [
            f32(0.0, -0.0, np.inf, -np.inf, 1.0, -1.0, 65504.0, -65504.0, 65519.0, 65520.0),
            f32(65536.0, 2.0**-14, 2.0**-24, 2.0**-25, 3 * 2.0**-25, 2.0**-26, 1e-45, -1e-45),
            f32(1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 + 2.0**-8, 1 + 3 * 2.0**-8, 3.4028235e38),
            np.array(
                [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7FA00000,
                 0x7F7F7FFF, 0x7F7F8000, 0x7F7F8001, 0x7F7E8000, 0x00008000, 0x00018000,
                 0x0000FFFF, 0x007FFFFF, 0x00800000, 0x33000001, 0x387FFFFF, 0x477FEFFF,
                 0x477FF000, 0x477FF001],
                dtype=np.uint32,
            ),
        ]
    )
    # Every finite float16 and the midpoints between neighbours (ties), +-1 ulp.
    h = np.arange(0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)
    mids = ((h[:-1].astype(np.float64) + h[1:].astype(np.float64)) / 2).astype(np.float32)
    mids = np.concatenate([mids, [np.float32(65520.0)]]).view(np.uint32)
    f16_cases = np.concatenate([h.view(np.uint32), mids, mids - 1, mids + 1])
    f16_cases = np.concatenate([f16_cases, f16_cases | np.uint32(0x80000000)])
    # bfloat16 ties for random upper halves, +-1 ulp.
    upper = rng.integers(0, 0x10000, 20000, dtype=np.uint32) << np.uint32(16)
    bf16_cases = np.concatenate([upper, upper | 0x8000, upper | 0x7FFF, upper | 0x8001])
    # Random bit patterns, and random values around the float16 range.
    rand_bits = rng.integers(0, 2**32, 200000, dtype=np.uint64).astype(np.uint32)
    exps = rng.integers(95, 150, 100000, dtype=np.uint32)
    mant = rng.integers(0, 2**23, 100000, dtype=np.uint32)
    sign = rng.integers(0, 2, 100000, dtype=np.uint32) << np.uint32(31)
    near = sign | (exps << np.uint32(23)) | mant
    return np.concatenate([special, f16_cases, bf16_cases, rand_bits, near]).astype(np.uint32)


def cmd_vectors(argv):
    """The `vectors` subcommand: rounding and widening vectors to a file."""
    if len(argv) != 1:
        usage()
    bits = rounding_inputs()
    x = bits.view(np.float32)
    with np.errstate(all="ignore"):
        f16 = x.astype(np.float16).view(np.uint16)
    bf16 = bf16_round(x)
    finite = np.isfinite(x)
    check = bf16_round_by_distance(x[finite])
    if not np.array_equal(check, bf16[finite]):
        bad = np.nonzero(check != bf16[finite])[0][0]
        raise SystemExit(
            "reference.py: bfloat16 self-check failed for 0x%08x" % bits[finite][bad]
        )
    with np.errstate(all="ignore"):
        widen = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    with open(argv[0], "wb") as f:
        f.write(b"EMADVEC1" + struct.pack("<Q", len(bits)))
        f.write(bits.astype("<u4").tobytes())
        f.write(f16.astype("<u2").tobytes())
        f.write(bf16.astype("<u2").tobytes())
        f.write(widen.view(np.uint32).astype("<u4").tobytes())


def usage():
    """Print usage and exit with status 2."""
    sys.stderr.write(
        "usage: reference.py ema SEED N STEPS DECAY F32|F16|BF16|F64 OUT\n"
        "       reference.py vectors OUT\n"
    )
    sys.exit(2)


def main():
    """Dispatch on the subcommand."""
    if len(sys.argv) < 2:
        usage()
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "ema":
        cmd_ema(rest)
    elif cmd == "vectors":
        cmd_vectors(rest)
    else:
        usage()


if __name__ == "__main__":
    main()
