/*
 * dtype.h - element types: names, sizes, and float16/bfloat16 conversion.
 *
 * Shared by the daemon, libemad and emactl. The enum is enum emad_dtype
 * from include/emad.h; names are the safetensors names. Conversions from
 * F16/BF16 to float32 are exact; conversions to F16/BF16 round to nearest
 * even (NaN stays NaN, overflow goes to infinity).
 */
#ifndef EMAD_DTYPE_H
#define EMAD_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "emad.h"

/* Safetensors name of a dtype, or NULL if invalid. */
const char *dtype_name(int dtype);

/* dtype for a name of length len, or EMAD_DTYPE_INVALID. */
int dtype_from_name(const char *name, size_t len);

/* Element size in bytes, 0 if invalid. */
size_t dtype_size(int dtype);

/* 1 for F16, BF16, F32, F64. */
int dtype_is_float(int dtype);

/*
 * dtype a param shadow is kept in: F32 for F16/BF16/F32, F64 for F64,
 * EMAD_DTYPE_INVALID for non-float dtypes (they cannot be params).
 */
int dtype_shadow(int dtype);

float dtype_f16_to_f32(uint16_t h);
uint16_t dtype_f32_to_f16(float f);
float dtype_bf16_to_f32(uint16_t b);
uint16_t dtype_f32_to_bf16(float f);

/*
 * Convert n elements from src (type from, any alignment) to dst (type to,
 * any alignment). Supported: identical types (copy) and any float dtype
 * (F16, BF16, F32, F64) to any other, rounded once to nearest even.
 * Returns 0 or EMAD_EDTYPE.
 */
int dtype_convert(void *dst, int to, const void *src, int from, size_t n);

/* Format a shape as "[2, 3]" into buf (truncated to size); returns buf. */
const char *dtype_fmt_shape(char *buf, size_t size, const uint64_t *shape, uint32_t ndim);

/*
 * Product of shape[0..ndim) into *numel, and numel * dtype_size into
 * *nbytes. Returns 0, or EMAD_ELIMIT on overflow of 2^62.
 */
int dtype_numel(const uint64_t *shape, uint32_t ndim, int dtype, uint64_t *numel, uint64_t *nbytes);

#endif
