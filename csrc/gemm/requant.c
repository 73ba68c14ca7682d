/* Requantization int32 -> int8/uint8: TFLite QuantizeMultiplier, fixed-point and float loops. */
#include "gemm/requant.h"

#include <math.h>

void qc_quantize_multiplier(double real, int32_t *multiplier, int32_t *shift) {
    if (real == 0.0) {
        *multiplier = 0;
        *shift = 0;
        return;
    }
    int e;
    const double q = frexp(real, &e);                    /* real = q * 2^e, q in [0.5, 1) */
    int64_t q_fixed = (int64_t)round(q * 2147483648.0);  /* TfLiteRound: ties away */
    if (q_fixed == ((int64_t)1 << 31)) {
        q_fixed /= 2;
        e++;
    }
    if (e < -31) {
        e = 0;
        q_fixed = 0;
    }
    *multiplier = (int32_t)q_fixed;
    *shift = e;
}

QC_INLINE int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

void qc_requantize_fixed(const int32_t *acc, size_t outer, size_t channels, size_t inner,
                         const int32_t *multiplier, const int32_t *shift, size_t mstride,
                         const int32_t *zp, size_t zstride, int out_signed, void *out) {
    const int64_t qmin = out_signed ? -128 : 0, qmax = out_signed ? 127 : 255;
    size_t idx = 0;
    for (size_t o = 0; o < outer; o++) {
        for (size_t c = 0; c < channels; c++) {
            const int32_t m = multiplier[c * mstride];
            const int s = shift[c * mstride];
            const int64_t z = zp[c * zstride];
            for (size_t i = 0; i < inner; i++, idx++) {
                /* TFLite adds the zero point in int32; int64 here gives the same result
                 * whenever TFLite's addition does not overflow (and no UB when it would). */
                const int64_t y = qc_mul_by_quantized_multiplier(acc[idx], m, s);
                const int64_t v = clamp64(y + z, qmin, qmax);
                if (out_signed) ((int8_t *)out)[idx] = (int8_t)v;
                else ((uint8_t *)out)[idx] = (uint8_t)v;
            }
        }
    }
}

void qc_requantize_float(const int32_t *acc, size_t outer, size_t channels, size_t inner,
                         const float *scale, size_t sstride, const int32_t *zp, size_t zstride,
                         int out_signed, void *out) {
    const float qmin = out_signed ? -128.0f : 0.0f, qmax = out_signed ? 127.0f : 255.0f;
    size_t idx = 0;
    for (size_t o = 0; o < outer; o++) {
        for (size_t c = 0; c < channels; c++) {
            const float s = scale[c * sstride];
            const float z = (float)zp[c * zstride];
            for (size_t i = 0; i < inner; i++, idx++) {
                /* rne(acc * s) is an integer-valued float; adding zp (|zp| <= 255) is exact
                 * below 2^24 and only matters inside [qmin, qmax], so clamping after the add
                 * equals clamp(rne(.) + zp) in exact arithmetic. */
                float v = nearbyintf((float)acc[idx] * s) + z;
                v = v < qmin ? qmin : v > qmax ? qmax : v;
                if (out_signed) ((int8_t *)out)[idx] = (int8_t)v;
                else ((uint8_t *)out)[idx] = (uint8_t)v;
            }
        }
    }
}
