/* Dynamic activation quantization for Linear (min/max pass, ONNX DynamicQuantizeLinear). */
#include "gemm/dynquant.h"

#include <float.h>
#include <math.h>

#ifndef QC_NO_X86
#include <emmintrin.h> /* SSE2: part of the x86-64 baseline */
#endif

void qc_dynq_minmax_f32(const float *x, size_t n, float *min, float *max, size_t *nan_count,
                        size_t *first_nan) {
    float lo = INFINITY, hi = -INFINITY;
    size_t nans = 0, i = 0;
#ifndef QC_NO_X86
    /* 4 lanes: infinities and NaN are replaced by +inf / -inf before min / max, so they never
     * count; NaN lanes are counted (as -1 per compare mask) in chunks that cannot overflow. */
    const __m128 pinf = _mm_set1_ps(INFINITY), ninf = _mm_set1_ps(-INFINITY);
    const __m128 fmax = _mm_set1_ps(FLT_MAX);
    const __m128 absmask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    __m128 lo4 = pinf, hi4 = ninf;
    while (i + 4 <= n) {
        const size_t end = i + QC_MIN(n - i, (size_t)1 << 30) / 4 * 4;
        __m128i nan4 = _mm_setzero_si128();
        for (; i < end; i += 4) {
            const __m128 v = _mm_loadu_ps(x + i);
            const __m128 fin = _mm_cmple_ps(_mm_and_ps(v, absmask), fmax);
            nan4 = _mm_sub_epi32(nan4, _mm_castps_si128(_mm_cmpunord_ps(v, v)));
            lo4 = _mm_min_ps(lo4, _mm_or_ps(_mm_and_ps(fin, v), _mm_andnot_ps(fin, pinf)));
            hi4 = _mm_max_ps(hi4, _mm_or_ps(_mm_and_ps(fin, v), _mm_andnot_ps(fin, ninf)));
        }
        uint32_t c[4];
        _mm_storeu_si128((__m128i *)c, nan4);
        nans += (size_t)c[0] + c[1] + c[2] + c[3];
    }
    float l[4], h[4];
    _mm_storeu_ps(l, lo4);
    _mm_storeu_ps(h, hi4);
    for (int j = 0; j < 4; j++) {
        lo = l[j] < lo ? l[j] : lo;
        hi = h[j] > hi ? h[j] : hi;
    }
#endif
    for (; i < n; i++) {
        const float v = x[i];
        if (v != v) {
            nans++;
            continue;
        }
        if (isinf(v)) continue;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    size_t first = n;
    if (nans) {
        for (size_t j = 0; j < n; j++) {
            if (x[j] != x[j]) {
                first = j;
                break;
            }
        }
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

/* One value: rne via the 1.5 * 2^23 trick (exact for |v| < 2^22 in round-to-nearest-even
 * mode); v is clamped to [-512, 512] first, which changes nothing after the final clamp. The
 * SSE2 loop below performs exactly these operations, so both give the same bytes. */
QC_INLINE uint8_t quantize1(float x, float scale, float z) {
    const float magic = 12582912.0f;
    float v = x / scale;
    v = v < -512.0f ? -512.0f : v;
    v = v > 512.0f ? 512.0f : v;
    v = (v + magic) - magic + z;
    v = v < 0.0f ? 0.0f : v;
    v = v > 255.0f ? 255.0f : v;
    return (uint8_t)v;
}

void qc_dynq_quantize_u8(const float *x, size_t n, float scale, int32_t zp, uint8_t *q) {
    const float z = (float)zp;
    size_t i = 0;
#ifndef QC_NO_X86
    const __m128 s4 = _mm_set1_ps(scale), z4 = _mm_set1_ps(z);
    const __m128 lo = _mm_set1_ps(-512.0f), hi = _mm_set1_ps(512.0f);
    const __m128 magic = _mm_set1_ps(12582912.0f);
    const __m128 zero = _mm_setzero_ps(), top = _mm_set1_ps(255.0f);
    for (; i + 16 <= n; i += 16) {
        __m128i r[4];
        for (int j = 0; j < 4; j++) {
            __m128 v = _mm_div_ps(_mm_loadu_ps(x + i + 4 * j), s4);
            v = _mm_min_ps(_mm_max_ps(v, lo), hi);
            v = _mm_add_ps(_mm_sub_ps(_mm_add_ps(v, magic), magic), z4);
            v = _mm_min_ps(_mm_max_ps(v, zero), top);
            r[j] = _mm_cvttps_epi32(v);
        }
        const __m128i w = _mm_packus_epi16(_mm_packs_epi32(r[0], r[1]),
                                           _mm_packs_epi32(r[2], r[3]));
        _mm_storeu_si128((__m128i *)(q + i), w);
    }
#endif
    for (; i < n; i++) q[i] = quantize1(x[i], scale, z);
}
