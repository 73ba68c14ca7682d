/* Scalar Q8_0 / Q4_0 block quantizers, bit-identical to ggml's reference (see blocks.h). */
#include <math.h>

#include "convert/convert.h"
#include "gguf/blocks.h"

/* A rounded float32 value as NumPy's float -> int8/uint8 cast gives it on x86-64 (the gguf
 * package's reference casts with astype): through int64, so NaN, +-inf and |v| >= 2^63 become
 * INT64_MIN (low byte 0), anything else keeps its low byte. Those only occur when 1 / d
 * overflows to inf (a block whose largest magnitude is below about 2^-126 * 127). */
static uint8_t low_byte(float v) {
    if (!(fabsf(v) < 0x1p63f)) return 0;
    return (uint8_t)((uint64_t)(int64_t)v & 0xffu);
}

static void store_d(uint8_t *y, float d) {
    const uint16_t h = qc_f32_to_f16(d);
    y[0] = (uint8_t)(h & 0xff);
    y[1] = (uint8_t)(h >> 8);
}

void qc_gguf_quantize_q8_0(const float *x, int64_t nblocks, uint8_t *y) {
    for (int64_t b = 0; b < nblocks; b++, x += QC_GGUF_QK, y += QC_GGUF_Q8_0_BYTES) {
        float amax = 0.0f;
        for (int i = 0; i < QC_GGUF_QK; i++) {
            const float a = fabsf(x[i]);
            amax = a > amax ? a : amax;
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_d(y, d);
        /* |x * id| <= 127 up to one rounding of the product (while id is finite), so roundf
         * stays in [-127, 127] */
        for (int i = 0; i < QC_GGUF_QK; i++) y[2 + i] = low_byte(roundf(x[i] * id));
    }
}

void qc_gguf_quantize_q4_0(const float *x, int64_t nblocks, uint8_t *y) {
    for (int64_t b = 0; b < nblocks; b++, x += QC_GGUF_QK, y += QC_GGUF_Q4_0_BYTES) {
        float amax = 0.0f, m = 0.0f;
        for (int i = 0; i < QC_GGUF_QK; i++) {
            const float a = fabsf(x[i]);
            if (a > amax) { /* strict: the first of equal magnitudes wins, as argmax */
                amax = a;
                m = x[i];
            }
        }
        const float d = m / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_d(y, d);
        uint8_t q[QC_GGUF_QK];
        for (int i = 0; i < QC_GGUF_QK; i++) {
            /* x * id is in [-8, 8] up to one rounding (m itself maps to -8), so the sum is
             * >= 0.49 and truncates to 0..16; 16 (x == -m, the +8 side) clamps to 15 */
            const uint8_t v = low_byte(truncf(x[i] * id + 8.5f));
            q[i] = v > 15 ? 15 : v;
        }
        for (int i = 0; i < QC_GGUF_QK / 2; i++)
            y[2 + i] = (uint8_t)(q[i] | (q[i + QC_GGUF_QK / 2] << 4));
    }
}
