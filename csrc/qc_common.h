/* Shared definitions for quantc's kernels: portable attributes and small helpers. No Python. */
#ifndef QC_COMMON_H
#define QC_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define QC_INLINE static inline __attribute__((always_inline))
#define QC_LIKELY(x) __builtin_expect(!!(x), 1)
#define QC_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define QC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define QC_MAX(a, b) ((a) > (b) ? (a) : (b))
#define QC_UNUSED(x) ((void)(x))
#define QC_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)

/* Rounding profiles for float -> integer quantization (see docs/API.md and README.md, "Profiles"). */
typedef enum {
    QC_PROFILE_ONNX = 0,   /* rne(x / s) + zp, true division, ties to even */
    QC_PROFILE_TORCH = 1,  /* zp + rne(x * (1.0f / s)), float32 reciprocal, ties to even (as
                            * torch's fake_quantize; quantize_per_tensor/_per_channel round
                            * with zp added first: see csrc/quant/quant.h) */
    QC_PROFILE_TFLITE = 2, /* round_half_away(x / s) + zp */
} qc_profile;

#endif
