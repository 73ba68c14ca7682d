/* Element-wise quantization kernels: params, kernel signatures, per-ISA tables, the driver. */
#ifndef QC_QUANT_H
#define QC_QUANT_H

#include <math.h>
#include <string.h>

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

/* Input element type and output form of the extended quantize kernels (quantize_ext_*).
 * QC_OUT_BYTES      one byte per element: the clamped integer's low byte (int8/uint8)
 * QC_OUT_NIBBLE     one byte per element holding the 4-bit pattern (ml_dtypes int4/uint4)
 * QC_OUT_PACKED4    two elements per byte, the first in the low nibble (ONNX int4/uint4)
 * QC_OUT_F8_*       one float8 byte per element: ONNX QuantizeLinear with saturate=1,
 *                   cast(clamp(x / s, -max, max)) rounding to nearest even (qmin/qmax are
 *                   -max/max, the zero point 0, the profile ignored) */
typedef enum { QC_IN_F32 = 0, QC_IN_BF16 } qc_qin;
typedef enum {
    QC_OUT_BYTES = 0,
    QC_OUT_NIBBLE,
    QC_OUT_PACKED4,
    QC_OUT_F8_E4M3FN,
    QC_OUT_F8_E4M3FNUZ,
    QC_OUT_F8_E5M2,
    QC_OUT_F8_E5M2FNUZ
} qc_qout;

typedef struct {
    qc_profile profile;
    float qmin, qmax; /* integer-valued (float8: -max, max) */
    qc_qin in;
    qc_qout out;
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

/* ---- float8 (ONNX saturate=1) ----
 * A float8 format: M mantissa bits, exponent bias, fnuz (no negative zero: 0x80 is NaN).
 * e4m3fn (3, 7), e4m3fnuz (3, 8), e5m2 (2, 15), e5m2fnuz (2, 16). */
typedef struct {
    int M, bias, fnuz;
} qc_f8fmt;

QC_INLINE qc_f8fmt qc_f8_format(qc_qout out) {
    switch ((int)out) {
    case QC_OUT_F8_E4M3FNUZ: return (qc_f8fmt){3, 8, 1};
    case QC_OUT_F8_E5M2: return (qc_f8fmt){2, 15, 0};
    case QC_OUT_F8_E5M2FNUZ: return (qc_f8fmt){2, 16, 1};
    default: return (qc_f8fmt){3, 7, 0};
    }
}

QC_INLINE uint32_t qc_bits_of(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}
QC_INLINE float qc_float_of(uint32_t b) {
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* The float8 bits of a finite v with |v| <= the format's max (so no overflow), rounded to
 * nearest even. Normal results (|v| >= 2^(1 - bias)): round the float32 bits at bit 23 - M
 * (+ half - 1 + the kept lsb, a carry may step the exponent), then rebias 127 -> bias.
 * Subnormal results: |v| + C with C = 2^(24 - bias - M), whose ulp is the float8 subnormal
 * step 2^(1 - bias - M); the float add rounds to nearest even and bits(sum) - bits(C) is the
 * float8 code (2^M, rounding up to the smallest normal, is that normal's code). fnuz formats
 * have no -0: a zero result is +0. */
QC_INLINE uint8_t qc_f8_bits(float v, qc_f8fmt f) {
    uint32_t b = qc_bits_of(v), a = b & 0x7fffffffu, sign = (b >> 24) & 0x80u, m;
    const uint32_t sh = 23u - (uint32_t)f.M;
    if (a >= (uint32_t)(128 - f.bias) << 23) {
        uint32_t r = a + ((1u << (sh - 1)) - 1u) + ((a >> sh) & 1u);
        m = (r - ((uint32_t)(127 - f.bias) << 23)) >> sh;
    } else {
        const float c = qc_float_of((uint32_t)(151 - f.bias - f.M) << 23);
        m = qc_bits_of(qc_float_of(a) + c) - qc_bits_of(c);
    }
    if (f.fnuz && m == 0) sign = 0;
    return (uint8_t)(sign | m);
}

/* One element of the extended quantize (x not NaN): the byte (or nibble) it stores. */
QC_INLINE uint8_t qc_quantize_ext_one(float x, float s, float inv, float zp, const qc_qcfg *cfg) {
    if (cfg->out >= QC_OUT_F8_E4M3FN) {
        return qc_f8_bits(qc_clamp_one(x / s, cfg->qmin, cfg->qmax), qc_f8_format(cfg->out));
    }
    uint8_t q = (uint8_t)(int32_t)qc_quantize_one(x, s, inv, zp, cfg);
    return cfg->out == QC_OUT_BYTES ? q : (uint8_t)(q & 0x0Fu);
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
/* extended quantize: x is float32 or bfloat16 bits (cfg->in), the output as cfg->out says;
 * QC_OUT_PACKED4 needs an even n and writes n / 2 bytes. */
typedef int (*qc_quantize_ext_uniform_fn)(const void *x, uint8_t *q, size_t n, float s, float inv,
                                          float zp, const qc_qcfg *cfg);
typedef int (*qc_quantize_ext_vector_fn)(const void *x, uint8_t *q, size_t n, const float *s,
                                         const float *inv, const float *zp, const qc_qcfg *cfg);
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
    qc_quantize_ext_uniform_fn quantize_ext_uniform;
    qc_quantize_ext_vector_fn quantize_ext_vector;
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
/* As qc_quantize_run for any cfg->in / cfg->out: x holds float32 or bfloat16 bits; q holds
 * one byte per element, or ceil(n / 2) bytes for QC_OUT_PACKED4 (a short last byte has a zero
 * high nibble). */
int qc_quantize_ext_run(const qc_quant_kernels *k, const qc_layout *L, const void *x, uint8_t *q,
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
