/* Requantization int32 -> int8/uint8: TFLite fixed-point (gemmlowp) and float paths, scalar. */
#ifndef QC_REQUANT_H
#define QC_REQUANT_H

#include "qc_common.h"

/* Float32 requantization of one value (the pooling, add and concat kernels, conv/qops.h, and
 * the GEMM's onnxruntime epilogue, gemm/kernels.h): y = clamp(rne(v) + yzp) with lo, hi the
 * bounds minus yzp (integers, so clamping before rounding gives the same as after), rounded to
 * nearest even with the 1.5 * 2^23 trick (exact for |v| < 2^22, which the clamp guarantees),
 * then converted and yzp added. v must not be NaN (callers' multipliers are finite and their
 * accumulators integers). */
#define QC_RNE_F32_MAGIC 12582912.0f /* 1.5 * 2^23 */

QC_INLINE int32_t qc_requant_f32(float v, float lo, float hi, int32_t yzp) {
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    v = (v + QC_RNE_F32_MAGIC) - QC_RNE_F32_MAGIC;
    return (int32_t)v + yzp;
}

/* gemmlowp SaturatingRoundingDoublingHighMul: a * b / 2^31 rounded to nearest by a nudge of
 * 2^30 (or 1 - 2^30 when negative) and a truncating division, so ties round up (0.5 -> 1,
 * -0.5 -> 0); the only overflow (INT32_MIN * INT32_MIN) saturates to INT32_MAX. */
QC_INLINE int32_t qc_srdhm(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero;
 * exponent in [0, 31]. The arithmetic right shift of a negative value is floor division. */
QC_INLINE int32_t qc_rdbp(int32_t x, int exponent) {
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* TFLite MultiplyByQuantizedMultiplier: shift in [-31, 31]. A positive shift first multiplies
 * x by 2^shift in wrapping 32-bit arithmetic (what TFLite's `x * (1 << left_shift)` does on
 * two's-complement hardware), then the high multiply, then the rounding right shift. */
QC_INLINE int32_t qc_mul_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift) {
    const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    const int32_t xs = (int32_t)((uint32_t)x << left);
    return qc_rdbp(qc_srdhm(xs, multiplier), right);
}

/* TFLite QuantizeMultiplier: real = multiplier * 2^(shift - 31), multiplier in [2^30, 2^31)
 * (0 for real == 0 and for real < ~2^-32, where shift < -31 would shift every bit out).
 * real must be finite, >= 0 and < 2^31 (checked by the caller). */
void qc_quantize_multiplier(double real, int32_t *multiplier, int32_t *shift);

/* Requantize n = outer * channels * inner int32 values laid out (outer, channels, inner);
 * the parameters of channel c are p[c * stride] (stride 0: per tensor). Output int8 when
 * out_signed else uint8, clamped to [qmin, qmax] of that type. */
void qc_requantize_fixed(const int32_t *acc, size_t outer, size_t channels, size_t inner,
                         const int32_t *multiplier, const int32_t *shift, size_t mstride,
                         const int32_t *zp, size_t zstride, int out_signed, void *out);

/* Float path: y = clamp(rne((float)acc * scale) + zp), float32 arithmetic (as ONNX Runtime's
 * MLAS requantization), ties to even. */
void qc_requantize_float(const int32_t *acc, size_t outer, size_t channels, size_t inner,
                         const float *scale, size_t sstride, const int32_t *zp, size_t zstride,
                         int out_signed, void *out);

#endif
