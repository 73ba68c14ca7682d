/* Element-wise quantization kernels: params, kernel signatures, per-ISA tables, the driver. */
#ifndef QC_QUANT_H
#define QC_QUANT_H

#include <math.h>

#include "qc_common.h"
#include "cpu/cpu.h"

/* The math (gemmlowp's convention): real = s * (q - zp), with 0.0 exactly representable.
 *
 * quantize      q = clamp(R(x OP s) + zp, qmin, qmax)
 *               onnx:   R = round half to even, x OP s = x / s (true float32 division)
 *               torch:  R = round half to even, x OP s = x * inv, inv = 1.0f / s in float32
 *               tflite: R = round half away from zero, x OP s = x / s
 * dequantize    y = (float)(q - zp) * s      (q - zp is exact in int32: one rounding)
 * fake-quantize y = (clamp(R(x OP s) + zp, qmin, qmax) - zp) * s, mask = R(x OP s) + zp in
 *               [qmin, qmax] (the straight-through-estimator mask)
 *
 * The zero point is added and the clamp applied in float, before any float -> int conversion:
 * R(v) is an integer-valued float, adding |zp| <= 255 is exact below 2^24 and anything larger
 * saturates anyway, so huge values and +-inf reach qmin/qmax and the conversion never sees an
 * out-of-range value. NaN is reported through the return value (1 = saw a NaN); the output
 * for a NaN element is unspecified (the binding raises). Integer outputs are written as bytes:
 * the clamped value's low byte is the int8 or uint8 pattern. */

typedef struct {
    qc_profile profile;
    float qmin, qmax; /* integer-valued */
} qc_qcfg;

/* PyTorch itself (2.13, x86 with FBGEMM) rounds three ways; fake_quantize_per_tensor_affine
 * uses the torch profile above, but the quantize ops add the zero point BEFORE rounding:
 *   torch.quantize_per_tensor   q = rint(fmaf(x, inv, zp))     (FBGEMM AVX2, one rounding)
 *   torch.quantize_per_channel  q = rint(fl(x * inv) + zp)     (two roundings)
 * They differ from zp + rint(x * inv) only when zp != 0 and x * inv is within an ulp of a tie.
 * quantize(profile="torch") uses these two for per-tensor and per-axis/blocked. */
#define QC_PROFILE_TORCH_FMA ((qc_profile)3)
#define QC_PROFILE_TORCH_ADD ((qc_profile)4)

/* ---- the ground truth for one element; every SIMD kernel equals these bit for bit ---- */

/* R(x OP s) + zp before the clamp. rintf rounds half to even (default rounding mode);
 * roundf rounds half away from zero. */
QC_INLINE float qc_rounded_one(float x, float s, float inv, float zp, qc_profile p) {
    switch ((int)p) {
    case QC_PROFILE_TORCH: return rintf(x * inv) + zp;
    case QC_PROFILE_TFLITE: return roundf(x / s) + zp;
    case QC_PROFILE_TORCH_FMA: return rintf(fmaf(x, inv, zp));
    case QC_PROFILE_TORCH_ADD: return rintf(x * inv + zp);
    default: return rintf(x / s) + zp;
    }
}

/* NaN -> lo, as the SIMD max(v, lo) then min(., hi) (NaN never reaches here from valid
 * parameters; this keeps every variant identical even so). */
QC_INLINE float qc_clamp_one(float v, float lo, float hi) {
    return v >= lo ? (v <= hi ? v : hi) : lo;
}

/* The clamped quantized value as a float; x must not be NaN. */
QC_INLINE float qc_quantize_one(float x, float s, float inv, float zp, const qc_qcfg *cfg) {
    return qc_clamp_one(qc_rounded_one(x, s, inv, zp, cfg->profile), cfg->qmin, cfg->qmax);
}

/* quantize: n contiguous float32 -> n bytes. uniform: one (s, inv, zp); vector: per element. */
typedef int (*qc_quantize_uniform_fn)(const float *x, uint8_t *q, size_t n, float s, float inv,
                                      float zp, const qc_qcfg *cfg);
typedef int (*qc_quantize_vector_fn)(const float *x, uint8_t *q, size_t n, const float *s,
                                     const float *inv, const float *zp, const qc_qcfg *cfg);
/* fake-quantize: as quantize, but writes the dequantized float32 and (if mask != NULL) the
 * STE mask as bytes 0/1. */
typedef int (*qc_fake_uniform_fn)(const float *x, float *y, uint8_t *mask, size_t n, float s,
                                  float inv, float zp, const qc_qcfg *cfg);
typedef int (*qc_fake_vector_fn)(const float *x, float *y, uint8_t *mask, size_t n,
                                 const float *s, const float *inv, const float *zp,
                                 const qc_qcfg *cfg);
/* dequantize: n int8 (is_signed) or uint8 -> float32. */
typedef void (*qc_dequantize_uniform_fn)(const uint8_t *q, float *y, size_t n, int is_signed,
                                         float s, int32_t zp);
typedef void (*qc_dequantize_vector_fn)(const uint8_t *q, float *y, size_t n, int is_signed,
                                        const float *s, const int32_t *zp);
/* min/max: uniform folds n values into *mn and *mx; vector folds x[i] into mn[i] and mx[i].
 * NaNs are skipped and reported (return 1). -0.0 and +0.0 may come out either way: callers
 * normalize. */
typedef int (*qc_minmax_uniform_fn)(const float *x, size_t n, float *mn, float *mx);
typedef int (*qc_minmax_vector_fn)(const float *x, size_t n, float *mn, float *mx);

typedef struct {
    qc_quantize_uniform_fn quantize_uniform;
    qc_quantize_vector_fn quantize_vector;
    qc_fake_uniform_fn fake_uniform;
    qc_fake_vector_fn fake_vector;
    qc_dequantize_uniform_fn dequantize_uniform;
    qc_dequantize_vector_fn dequantize_vector;
    qc_minmax_uniform_fn minmax_uniform;
    qc_minmax_vector_fn minmax_vector;
} qc_quant_kernels;

extern const qc_quant_kernels qc_quant_kernels__scalar;
#ifndef QC_NO_X86
extern const qc_quant_kernels qc_quant_kernels__avx2;
extern const qc_quant_kernels qc_quant_kernels__avx512;
#endif

/* The four families (variants best first, scalar last); each variant's impl is the ISA's
 * qc_quant_kernels table. */
extern const qc_family qc_family_quantize;
extern const qc_family qc_family_dequantize;
extern const qc_family qc_family_fake_quantize;
extern const qc_family qc_family_minmax;

/* ---- driver: granularity, threads ---- */

/* x viewed as (outer, C, inner) around the quantization axis.
 * per-tensor: block == 0 and nparams == 1 (outer = 1, C = 1, inner = n).
 * per-axis:   block == 0, params indexed by c (nparams = C).
 * blocked:    block = B >= 1, params indexed by (o, c / B, i) (nparams = outer*ceil(C/B)*inner).
 *             The bindings pass B <= max(C, 1) (a larger block is the same single block), so
 *             block arithmetic such as (c / B + 1) * B cannot wrap. */
typedef struct {
    size_t outer, C, inner;
    size_t block;
    int per_tensor;
} qc_layout;

static inline size_t qc_layout_size(const qc_layout *L) { return L->outer * L->C * L->inner; }
size_t qc_layout_nparams(const qc_layout *L);

/* Runs at least this long write float32 output with non-temporal stores (dequantize). */
#define QC_STREAM_MIN ((size_t)1 << 14)

/* Elements per thread task: below it everything runs on the calling thread. */
#define QC_QUANT_GRAIN ((size_t)1 << 16)
/* How many tasks qc_minmax_run splits n elements into (sizes its scratch). */
size_t qc_quant_ntasks(size_t n);

/* Each returns 1 if a NaN was seen in x, else 0. Per-tensor params are s[0], inv[0], zp[0];
 * inv = 1.0f / s is always passed (only the torch profile reads it). */
int qc_quantize_run(const qc_quant_kernels *k, const qc_layout *L, const float *x, uint8_t *q,
                    const float *s, const float *inv, const float *zpf, const qc_qcfg *cfg);
int qc_fake_quantize_run(const qc_quant_kernels *k, const qc_layout *L, const float *x, float *y,
                         uint8_t *mask, const float *s, const float *inv, const float *zpf,
                         const qc_qcfg *cfg);
void qc_dequantize_run(const qc_quant_kernels *k, const qc_layout *L, const uint8_t *q,
                       int is_signed, float *y, const float *s, const int32_t *zp);
/* mn/mx: nparams values each, overwritten. ntasks: qc_quant_ntasks(n), taken once by the
 * caller; scratch: 2 * nparams * (ntasks - 1) floats (may be NULL when that is 0). Zeros come
 * out as +0.0; a parameter that saw no value (all NaN, or empty) gets mn = +inf, mx = -inf. */
int qc_minmax_run(const qc_quant_kernels *k, const qc_layout *L, const float *x, float *mn,
                  float *mx, float *scratch, size_t ntasks);

#endif
