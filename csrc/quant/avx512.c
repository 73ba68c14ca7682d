/* AVX-512 (F/BW/VL/DQ) quantize / fake-quantize / dequantize / min-max kernels, 16 lanes. */
#include <immintrin.h>

#include "quant/quant.h"

#define RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define RTZ (_MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC)

/* R(v) as in qc_rounded_one. Half away from zero: t = trunc(v); f = v - t is exact (same sign,
 * |t| <= |v| < 2|t| or t == 0); |f| >= 0.5 steps t one away from zero. Never trunc(v + 0.5):
 * 0.49999997 + 0.5 rounds to 1.0 in float32. For |v| >= 2^23 and +-inf, f is 0 or NaN and
 * the compare is false, so t = v. */
QC_INLINE __m512 round_p(__m512 v, qc_profile p) {
    if (p != QC_PROFILE_TFLITE) return _mm512_roundscale_ps(v, RNE);
    __m512 t = _mm512_roundscale_ps(v, RTZ);
    __m512 f = _mm512_sub_ps(v, t);
    __mmask16 away = _mm512_cmp_ps_mask(_mm512_abs_ps(f), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    __m512 one = _mm512_or_ps(_mm512_and_ps(v, _mm512_set1_ps(-0.0f)), _mm512_set1_ps(1.0f));
    return _mm512_mask_add_ps(t, away, t, one);
}

/* R(x OP s) + zp, before the clamp. max/min return their second operand for NaN, so a NaN
 * element becomes qmin (it is reported separately). */
QC_INLINE __m512 rounded_p(__m512 x, __m512 s, __m512 inv, __m512 zp, qc_profile p) {
    switch ((int)p) {
    case QC_PROFILE_TORCH_FMA: return _mm512_roundscale_ps(_mm512_fmadd_ps(x, inv, zp), RNE);
    case QC_PROFILE_TORCH_ADD:
        return _mm512_roundscale_ps(_mm512_add_ps(_mm512_mul_ps(x, inv), zp), RNE);
    case QC_PROFILE_TORCH: return _mm512_add_ps(round_p(_mm512_mul_ps(x, inv), p), zp);
    default: return _mm512_add_ps(round_p(_mm512_div_ps(x, s), p), zp);
    }
}

QC_INLINE __m512 clamp_v(__m512 t, __m512 lo, __m512 hi) {
    return _mm512_min_ps(_mm512_max_ps(t, lo), hi);
}

QC_INLINE __mmask16 tail_mask(size_t r) { return (__mmask16)((1u << r) - 1u); }

QC_INLINE int quantize_p(const float *x, uint8_t *q, size_t n, const float *s, const float *inv,
                         const float *zp, const qc_qcfg *cfg, int vec, qc_profile p) {
    const __m512 lo = _mm512_set1_ps(cfg->qmin), hi = _mm512_set1_ps(cfg->qmax);
    const __m512 s1 = _mm512_set1_ps(s[0]), z1 = _mm512_set1_ps(zp[0]);
    const __m512 i1 = _mm512_set1_ps(inv[0]);
    const int vinv = vec && p != QC_PROFILE_ONNX && p != QC_PROFILE_TFLITE;
    __mmask16 nan = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 vx = _mm512_loadu_ps(x + i);
        __m512 vs = vec ? _mm512_loadu_ps(s + i) : s1;
        __m512 vz = vec ? _mm512_loadu_ps(zp + i) : z1;
        __m512 vi = vinv ? _mm512_loadu_ps(inv + i) : i1;
        nan |= _mm512_cmp_ps_mask(vx, vx, _CMP_UNORD_Q);
        __m512 c = clamp_v(rounded_p(vx, vs, vi, vz, p), lo, hi);
        /* c is an integer in [-128, 255]: vpmovdb keeps the low byte, the int8/uint8 pattern */
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(c)));
    }
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512 vx = _mm512_maskz_loadu_ps(m, x + i);
        __m512 vs = vec ? _mm512_mask_loadu_ps(s1, m, s + i) : s1;
        __m512 vz = vec ? _mm512_maskz_loadu_ps(m, zp + i) : z1;
        __m512 vi = vinv ? _mm512_mask_loadu_ps(i1, m, inv + i) : i1;
        nan |= _mm512_cmp_ps_mask(vx, vx, _CMP_UNORD_Q);
        __m512 c = clamp_v(rounded_p(vx, vs, vi, vz, p), lo, hi);
        _mm512_mask_cvtepi32_storeu_epi8(q + i, m, _mm512_cvtps_epi32(c));
    }
    return nan != 0;
}

#define QC_PROFILE_SWITCH(call_onnx, call_torch, call_tflite) \
    switch ((int)cfg->profile) {                              \
    case QC_PROFILE_TORCH: return call_torch;                 \
    case QC_PROFILE_TFLITE: return call_tflite;               \
    default: return call_onnx;                                \
    }

static int quantize_uniform(const float *x, uint8_t *q, size_t n, float s, float inv, float zp,
                            const qc_qcfg *cfg) {
    if ((int)cfg->profile == QC_PROFILE_TORCH_FMA)
        return quantize_p(x, q, n, &s, &inv, &zp, cfg, 0, QC_PROFILE_TORCH_FMA);
    if ((int)cfg->profile == QC_PROFILE_TORCH_ADD)
        return quantize_p(x, q, n, &s, &inv, &zp, cfg, 0, QC_PROFILE_TORCH_ADD);
    QC_PROFILE_SWITCH(quantize_p(x, q, n, &s, &inv, &zp, cfg, 0, QC_PROFILE_ONNX),
                      quantize_p(x, q, n, &s, &inv, &zp, cfg, 0, QC_PROFILE_TORCH),
                      quantize_p(x, q, n, &s, &inv, &zp, cfg, 0, QC_PROFILE_TFLITE))
}

static int quantize_vector(const float *x, uint8_t *q, size_t n, const float *s,
                           const float *inv, const float *zp, const qc_qcfg *cfg) {
    if ((int)cfg->profile == QC_PROFILE_TORCH_FMA)
        return quantize_p(x, q, n, s, inv, zp, cfg, 1, QC_PROFILE_TORCH_FMA);
    if ((int)cfg->profile == QC_PROFILE_TORCH_ADD)
        return quantize_p(x, q, n, s, inv, zp, cfg, 1, QC_PROFILE_TORCH_ADD);
    QC_PROFILE_SWITCH(quantize_p(x, q, n, s, inv, zp, cfg, 1, QC_PROFILE_ONNX),
                      quantize_p(x, q, n, s, inv, zp, cfg, 1, QC_PROFILE_TORCH),
                      quantize_p(x, q, n, s, inv, zp, cfg, 1, QC_PROFILE_TFLITE))
}

QC_INLINE void fake_one(__m512 vx, __m512 vs, __m512 vi, __m512 vz, __m512 lo, __m512 hi,
                        qc_profile p, __m512 *y, __mmask16 *inside) {
    __m512 t = rounded_p(vx, vs, vi, vz, p);
    *inside = _mm512_cmp_ps_mask(t, lo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(t, hi, _CMP_LE_OQ);
    *y = _mm512_mul_ps(_mm512_sub_ps(clamp_v(t, lo, hi), vz), vs);
}

QC_INLINE int fake_p(const float *x, float *y, uint8_t *mask, size_t n, const float *s,
                     const float *inv, const float *zp, const qc_qcfg *cfg, int vec,
                     qc_profile p) {
    const __m512 lo = _mm512_set1_ps(cfg->qmin), hi = _mm512_set1_ps(cfg->qmax);
    const __m512 s1 = _mm512_set1_ps(s[0]), z1 = _mm512_set1_ps(zp[0]);
    const __m512 i1 = _mm512_set1_ps(inv[0]);
    const int vinv = vec && p != QC_PROFILE_ONNX && p != QC_PROFILE_TFLITE;
    const __m128i ones = _mm_set1_epi8(1);
    __mmask16 nan = 0, inside;
    __m512 vy;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 vx = _mm512_loadu_ps(x + i);
        __m512 vs = vec ? _mm512_loadu_ps(s + i) : s1;
        __m512 vz = vec ? _mm512_loadu_ps(zp + i) : z1;
        __m512 vi = vinv ? _mm512_loadu_ps(inv + i) : i1;
        nan |= _mm512_cmp_ps_mask(vx, vx, _CMP_UNORD_Q);
        fake_one(vx, vs, vi, vz, lo, hi, p, &vy, &inside);
        _mm512_storeu_ps(y + i, vy);
        if (mask) _mm_storeu_si128((__m128i *)(mask + i), _mm_maskz_mov_epi8(inside, ones));
    }
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512 vx = _mm512_maskz_loadu_ps(m, x + i);
        __m512 vs = vec ? _mm512_mask_loadu_ps(s1, m, s + i) : s1;
        __m512 vz = vec ? _mm512_maskz_loadu_ps(m, zp + i) : z1;
        __m512 vi = vinv ? _mm512_mask_loadu_ps(i1, m, inv + i) : i1;
        nan |= _mm512_cmp_ps_mask(vx, vx, _CMP_UNORD_Q);
        fake_one(vx, vs, vi, vz, lo, hi, p, &vy, &inside);
        _mm512_mask_storeu_ps(y + i, m, vy);
        if (mask) _mm_mask_storeu_epi8(mask + i, m, _mm_maskz_mov_epi8(inside, ones));
    }
    return nan != 0;
}

static int fake_uniform(const float *x, float *y, uint8_t *mask, size_t n, float s, float inv,
                        float zp, const qc_qcfg *cfg) {
    QC_PROFILE_SWITCH(fake_p(x, y, mask, n, &s, &inv, &zp, cfg, 0, QC_PROFILE_ONNX),
                      fake_p(x, y, mask, n, &s, &inv, &zp, cfg, 0, QC_PROFILE_TORCH),
                      fake_p(x, y, mask, n, &s, &inv, &zp, cfg, 0, QC_PROFILE_TFLITE))
}

static int fake_vector(const float *x, float *y, uint8_t *mask, size_t n, const float *s,
                       const float *inv, const float *zp, const qc_qcfg *cfg) {
    QC_PROFILE_SWITCH(fake_p(x, y, mask, n, s, inv, zp, cfg, 1, QC_PROFILE_ONNX),
                      fake_p(x, y, mask, n, s, inv, zp, cfg, 1, QC_PROFILE_TORCH),
                      fake_p(x, y, mask, n, s, inv, zp, cfg, 1, QC_PROFILE_TFLITE))
}

QC_INLINE __m512i widen(__m128i b, int is_signed) {
    return is_signed ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
}

QC_INLINE __m512 deq_masked(const uint8_t *q, __mmask16 m, int is_signed, __m512 vs, __m512i vz) {
    __m512i vq = widen(_mm_maskz_loadu_epi8(m, q), is_signed);
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(vq, vz)), vs);
}

QC_INLINE void dequantize_p(const uint8_t *q, float *y, size_t n, int is_signed, const float *s,
                            const int32_t *zp, int vec) {
    const __m512 s1 = _mm512_set1_ps(s[0]);
    const __m512i z1 = _mm512_set1_epi32(zp[0]);
    size_t i = 0;
    if (!vec && n >= QC_STREAM_MIN && ((uintptr_t)y & 3) == 0) {
        /* long uniform runs: align y to 64 bytes, then non-temporal stores (no read for
         * ownership of y's lines; same values as the loop below) */
        size_t head = ((64 - ((uintptr_t)y & 63)) & 63) / 4;
        if (head) _mm512_mask_storeu_ps(y, tail_mask(head), deq_masked(q, tail_mask(head),
                                                                     is_signed, s1, z1));
        for (i = head; i + 16 <= n; i += 16) {
            __m512i vq = widen(_mm_loadu_si128((const __m128i *)(q + i)), is_signed);
            _mm512_stream_ps(y + i, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(vq, z1)),
                                                  s1));
        }
        _mm_sfence();
    }
    for (; i + 16 <= n; i += 16) {
        __m512i vq = widen(_mm_loadu_si128((const __m128i *)(q + i)), is_signed);
        __m512 vs = vec ? _mm512_loadu_ps(s + i) : s1;
        __m512i vz = vec ? _mm512_loadu_si512((const void *)(zp + i)) : z1;
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(vq, vz)), vs));
    }
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512 vs = vec ? _mm512_maskz_loadu_ps(m, s + i) : s1;
        __m512i vz = vec ? _mm512_maskz_loadu_epi32(m, zp + i) : z1;
        _mm512_mask_storeu_ps(y + i, m, deq_masked(q + i, m, is_signed, vs, vz));
    }
}

static void dequantize_uniform(const uint8_t *q, float *y, size_t n, int is_signed, float s,
                               int32_t zp) {
    if (is_signed) dequantize_p(q, y, n, 1, &s, &zp, 0);
    else dequantize_p(q, y, n, 0, &s, &zp, 0);
}

static void dequantize_vector(const uint8_t *q, float *y, size_t n, int is_signed,
                              const float *s, const int32_t *zp) {
    if (is_signed) dequantize_p(q, y, n, 1, s, zp, 1);
    else dequantize_p(q, y, n, 0, s, zp, 1);
}

/* min/max: _mm512_min_ps(x, acc) returns acc when x is NaN, so NaNs never enter. */
static int minmax_uniform(const float *x, size_t n, float *mn, float *mx) {
    const __m512 pinf = _mm512_set1_ps(INFINITY), ninf = _mm512_set1_ps(-INFINITY);
    __m512 lo0 = pinf, lo1 = pinf, hi0 = ninf, hi1 = ninf;
    __mmask16 nan = 0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
        nan |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q);
        lo0 = _mm512_min_ps(a, lo0);
        hi0 = _mm512_max_ps(a, hi0);
        lo1 = _mm512_min_ps(b, lo1);
        hi1 = _mm512_max_ps(b, hi1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
        __m512 a = _mm512_mask_loadu_ps(pinf, m, x + i);
        __m512 b = _mm512_mask_loadu_ps(ninf, m, x + i);
        nan |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
        lo0 = _mm512_min_ps(a, lo0);
        hi0 = _mm512_max_ps(b, hi0);
    }
    float lo = _mm512_reduce_min_ps(_mm512_min_ps(lo0, lo1));
    float hi = _mm512_reduce_max_ps(_mm512_max_ps(hi0, hi1));
    *mn = lo < *mn ? lo : *mn;
    *mx = hi > *mx ? hi : *mx;
    return nan != 0;
}

static int minmax_vector(const float *x, size_t n, float *mn, float *mx) {
    __mmask16 nan = 0;
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
        __m512 a = _mm512_maskz_loadu_ps(m, x + i);
        nan |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
        _mm512_mask_storeu_ps(mn + i, m, _mm512_min_ps(a, _mm512_maskz_loadu_ps(m, mn + i)));
        _mm512_mask_storeu_ps(mx + i, m, _mm512_max_ps(a, _mm512_maskz_loadu_ps(m, mx + i)));
    }
    return nan != 0;
}

const qc_quant_kernels qc_quant_kernels__avx512 = {
    quantize_uniform,   quantize_vector,   fake_uniform,   fake_vector,
    dequantize_uniform, dequantize_vector, minmax_uniform, minmax_vector,
};
