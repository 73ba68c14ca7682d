/* Dynamic activation quantization for Linear (min/max pass, ONNX DynamicQuantizeLinear). */
#include "gemm/dynquant.h"

#include <math.h>

void qc_dynq_minmax_f32(const float *x, size_t n, float *min, float *max, size_t *nan_count,
                        size_t *first_nan) {
    float lo = INFINITY, hi = -INFINITY;
    size_t nans = 0, first = n;
    for (size_t i = 0; i < n; i++) {
        const float v = x[i];
        if (v != v) {
            if (nans++ == 0) first = i;
            continue;
        }
        if (isinf(v)) continue;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    if (lo > hi) lo = hi = 0.0f; /* no finite values */
    *min = lo;
    *max = hi;
    *nan_count = nans;
    *first_nan = first;
}

void qc_dynq_params_u8(float min, float max, float *scale, int32_t *zp) {
    const float lo = min < 0.0f ? min : 0.0f, hi = max > 0.0f ? max : 0.0f;
    float s = (hi - lo) / 255.0f;
    if (isinf(s)) s = hi / 255.0f - lo / 255.0f; /* hi - lo overflowed float32 */
    if (!(s > 0.0f)) s = 1.0f;                   /* zero range: everything is 0 */
    float z = nearbyintf(0.0f - lo / s);
    z = z < 0.0f ? 0.0f : z > 255.0f ? 255.0f : z;
    *scale = s;
    *zp = (int32_t)z;
}

void qc_dynq_quantize_u8(const float *x, size_t n, float scale, int32_t zp, uint8_t *q) {
    /* rne via the 1.5 * 2^23 trick (exact for |v| < 2^22 in round-to-nearest-even mode);
     * v is clamped to [-512, 512] first, which changes nothing after the final clamp. */
    const float magic = 12582912.0f, z = (float)zp;
    for (size_t i = 0; i < n; i++) {
        float v = x[i] / scale;
        v = v < -512.0f ? -512.0f : v;
        v = v > 512.0f ? 512.0f : v;
        v = (v + magic) - magic + z;
        v = v < 0.0f ? 0.0f : v;
        v = v > 255.0f ? 255.0f : v;
        q[i] = (uint8_t)v;
    }
}
