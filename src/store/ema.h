/*
 * ema.h - the EMA update kernels.
 *
 * One fused pass per tensor: read shadow, read value, write shadow.
 * For float32 shadows (F32, F16 and BF16 values) and float64 shadows
 * (F64 values) the update is, elementwise and in this order of operations
 * with a rounding after each one (no FMA contraction):
 *
 *     diff = shadow - value;  t = c * diff;  shadow = shadow - t
 *
 * where c = (float)(1.0 - decay) for float32 shadows and 1.0 - decay for
 * float64: exactly what `shadow.sub_((1. - decay) * (shadow - param))`
 * does in PyTorch on float32 tensors. Value pointers may have any
 * alignment (msgpack BIN payloads); dst and shadow may be the same
 * pointer (in place) or not overlap at all (copy-on-write).
 */
#ifndef EMAD_EMA_H
#define EMAD_EMA_H

#include <stddef.h>
#include <stdint.h>

/*
 * Name of the instruction set the kernels use ("sse2", "avx2", "avx512"):
 * the best the CPU runs, or the one the environment variable EMAD_ISA
 * names. ema_set_isa() switches (tests, benchmarks; not thread-safe) and
 * returns the name in effect (a set the CPU lacks falls back).
 */
const char *ema_isa(void);
const char *ema_set_isa(const char *name);

/* The float32 coefficient c for a decay, as described above. */
float ema_coef_f32(double decay);

/*
 * Dispatch on the value dtype (EMAD_F32, EMAD_F16, EMAD_BF16 into a float32
 * shadow, EMAD_F64 into a float64 shadow). Returns 0 or EMAD_EDTYPE.
 */
int ema_update(void *dst, const void *shadow, const void *value, int value_dtype, size_t n,
               double decay);

/*
 * ema_update() that also counts the NaN and Inf values it reads into
 * *nonfinite (ema_count_nonfinite()'s count), in the same pass for F32,
 * BF16 and F64 values. Returns 0, or EMAD_EDTYPE (nothing written, count 0).
 */
int ema_update_counted(void *dst, const void *shadow, const void *value, int value_dtype, size_t n,
                       double decay, uint64_t *nonfinite);

/*
 * First push of a param: initialize a shadow (F32 for F16/BF16/F32
 * values, F64 for F64) from value. Returns 0 or EMAD_EDTYPE.
 */
int ema_init(void *shadow, const void *value, int value_dtype, size_t n);

/* Number of NaN or Inf values among n values of a float dtype (any alignment); 0 otherwise. */
uint64_t ema_count_nonfinite(const void *value, int dtype, size_t n);

#endif
