/* AVX2 quantize / fake-quantize / dequantize / min-max kernels, 8 lanes, masked-load tails. */
#include <immintrin.h>
#include <string.h>

#include "quant/quant.h"

#define RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define RTZ (_MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC)

/* Lane masks for the last r < 8 elements: load 8 int32 starting at 8 - r. */
static const int32_t k_tail[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
QC_INLINE __m256i tail_mask(size_t r) {
    return _mm256_loadu_si256((const __m256i *)(k_tail + 8 - r));
}

/* R(v) as in qc_rounded_one; half away from zero as in avx512.c: t = trunc(v), f = v - t exact,
 * |f| >= 0.5 adds copysign(1, v). Never trunc(v + 0.5) (wrong at 0.49999997). */
QC_INLINE __m256 round_p(__m256 v, qc_profile p) {
    if (p != QC_PROFILE_TFLITE) return _mm256_round_ps(v, RNE);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 t = _mm256_round_ps(v, RTZ);
    __m256 f = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    __m256 away = _mm256_cmp_ps(f, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    __m256 one = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0f));
    return _mm256_add_ps(t, _mm256_and_ps(away, one));
}

QC_INLINE __m256 rounded_p(__m256 x, __m256 s, __m256 inv, __m256 zp, qc_profile p) {
    switch ((int)p) {
    case QC_PROFILE_TORCH_FMA: return _mm256_round_ps(_mm256_fmadd_ps(x, inv, zp), RNE);
    case QC_PROFILE_TORCH_ADD:
        return _mm256_round_ps(_mm256_add_ps(_mm256_mul_ps(x, inv), zp), RNE);
    case QC_PROFILE_TORCH: return _mm256_add_ps(round_p(_mm256_mul_ps(x, inv), p), zp);
    default: return _mm256_add_ps(round_p(_mm256_div_ps(x, s), p), zp);
    }
}

/* max/min return their second operand for NaN: a NaN element becomes qmin (reported apart). */
QC_INLINE __m256 clamp_v(__m256 t, __m256 lo, __m256 hi) {
    return _mm256_min_ps(_mm256_max_ps(t, lo), hi);
}

/* 8 int32 in [-128, 255] -> their low bytes (the int8/uint8 patterns) in the low 8 bytes. */
QC_INLINE __m128i low_bytes(__m256i v) {
    __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return _mm_shuffle_epi8(w, _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1,
                                             -1, -1));
}

QC_INLINE __m256 load_or(const float *p, int vec, __m256 dflt) {
    return vec ? _mm256_loadu_ps(p) : dflt;
}

QC_INLINE __m256 mload_or(const float *p, __m256i m, int vec, __m256 dflt) {
    return vec ? _mm256_blendv_ps(dflt, _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m)) : dflt;
}

QC_INLINE int quantize_p(const float *x, uint8_t *q, size_t n, const float *s, const float *inv,
                         const float *zp, const qc_qcfg *cfg, int vec, qc_profile p) {
    const __m256 lo = _mm256_set1_ps(cfg->qmin), hi = _mm256_set1_ps(cfg->qmax);
    const __m256 s1 = _mm256_set1_ps(s[0]), z1 = _mm256_set1_ps(zp[0]);
    const __m256 i1 = _mm256_set1_ps(inv[0]);
    const int vinv = vec && p != QC_PROFILE_ONNX && p != QC_PROFILE_TFLITE;
    __m256 nan = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 vx = _mm256_loadu_ps(x + i);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(vx, vx, _CMP_UNORD_Q));
        __m256 c = clamp_v(rounded_p(vx, load_or(s + i, vec, s1), load_or(inv + i, vinv, i1),
                                     load_or(zp + i, vec, z1), p), lo, hi);
        _mm_storel_epi64((__m128i *)(q + i), low_bytes(_mm256_cvtps_epi32(c)));
    }
    if (i < n) {
        __m256i m = tail_mask(n - i);
        __m256 vx = _mm256_maskload_ps(x + i, m);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(vx, vx, _CMP_UNORD_Q));
        __m256 c = clamp_v(rounded_p(vx, mload_or(s + i, m, vec, s1),
                                     mload_or(inv + i, m, vinv, i1),
                                     mload_or(zp + i, m, vec, z1), p), lo, hi);
        uint8_t tmp[16];
        _mm_storeu_si128((__m128i *)tmp, low_bytes(_mm256_cvtps_epi32(c)));
        memcpy(q + i, tmp, n - i);
    }
    return _mm256_movemask_ps(nan) != 0;
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

/* y = (clamp(t) - zp) * s and the mask t in [qmin, qmax] as 0/1 int32 lanes. */
QC_INLINE __m256 fake_one(__m256 vx, __m256 vs, __m256 vi, __m256 vz, __m256 lo, __m256 hi,
                          qc_profile p, __m256i *inside) {
    __m256 t = rounded_p(vx, vs, vi, vz, p);
    __m256 in = _mm256_and_ps(_mm256_cmp_ps(t, lo, _CMP_GE_OQ), _mm256_cmp_ps(t, hi, _CMP_LE_OQ));
    *inside = _mm256_and_si256(_mm256_castps_si256(in), _mm256_set1_epi32(1));
    return _mm256_mul_ps(_mm256_sub_ps(clamp_v(t, lo, hi), vz), vs);
}

QC_INLINE int fake_p(const float *x, float *y, uint8_t *mask, size_t n, const float *s,
                     const float *inv, const float *zp, const qc_qcfg *cfg, int vec,
                     qc_profile p) {
    const __m256 lo = _mm256_set1_ps(cfg->qmin), hi = _mm256_set1_ps(cfg->qmax);
    const __m256 s1 = _mm256_set1_ps(s[0]), z1 = _mm256_set1_ps(zp[0]);
    const __m256 i1 = _mm256_set1_ps(inv[0]);
    const int vinv = vec && p != QC_PROFILE_ONNX && p != QC_PROFILE_TFLITE;
    __m256 nan = _mm256_setzero_ps();
    __m256i inside;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 vx = _mm256_loadu_ps(x + i);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(vx, vx, _CMP_UNORD_Q));
        __m256 vy = fake_one(vx, load_or(s + i, vec, s1), load_or(inv + i, vinv, i1),
                             load_or(zp + i, vec, z1), lo, hi, p, &inside);
        _mm256_storeu_ps(y + i, vy);
        if (mask) _mm_storel_epi64((__m128i *)(mask + i), low_bytes(inside));
    }
    if (i < n) {
        __m256i m = tail_mask(n - i);
        __m256 vx = _mm256_maskload_ps(x + i, m);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(vx, vx, _CMP_UNORD_Q));
        __m256 vy = fake_one(vx, mload_or(s + i, m, vec, s1), mload_or(inv + i, m, vinv, i1),
                             mload_or(zp + i, m, vec, z1), lo, hi, p, &inside);
        _mm256_maskstore_ps(y + i, m, vy);
        if (mask) {
            uint8_t tmp[16];
            _mm_storeu_si128((__m128i *)tmp, low_bytes(inside));
            memcpy(mask + i, tmp, n - i);
        }
    }
    return _mm256_movemask_ps(nan) != 0;
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

QC_INLINE __m256i widen(__m128i b, int is_signed) {
    return is_signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
}

QC_INLINE __m256 deq_one(__m128i b, __m256 vs, __m256i vz, int is_signed) {
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(widen(b, is_signed), vz)), vs);
}

QC_INLINE void dequantize_p(const uint8_t *q, float *y, size_t n, int is_signed, const float *s,
                            const int32_t *zp, int vec) {
    const __m256 s1 = _mm256_set1_ps(s[0]);
    const __m256i z1 = _mm256_set1_epi32(zp[0]);
    size_t i = 0;
    if (!vec && n >= QC_STREAM_MIN && ((uintptr_t)y & 3) == 0) {
        /* long uniform runs: align y to 32 bytes, then non-temporal stores (no read for
         * ownership of y's lines; same values as the loop below) */
        size_t head = ((32 - ((uintptr_t)y & 31)) & 31) / 4;
        for (; i < head; i++) {
            int32_t v = is_signed ? (int32_t)(int8_t)q[i] : (int32_t)q[i];
            y[i] = (float)(v - zp[0]) * s[0];
        }
        for (; i + 8 <= n; i += 8) {
            _mm256_stream_ps(y + i, deq_one(_mm_loadl_epi64((const __m128i *)(q + i)), s1, z1,
                                            is_signed));
        }
        _mm_sfence();
    }
    for (; i + 8 <= n; i += 8) {
        __m256 vs = vec ? _mm256_loadu_ps(s + i) : s1;
        __m256i vz = vec ? _mm256_loadu_si256((const __m256i *)(zp + i)) : z1;
        _mm256_storeu_ps(y + i, deq_one(_mm_loadl_epi64((const __m128i *)(q + i)), vs, vz,
                                        is_signed));
    }
    if (i < n) {
        __m256i m = tail_mask(n - i);
        uint8_t tmp[16] = {0};
        memcpy(tmp, q + i, n - i);
        __m256 vs = vec ? _mm256_maskload_ps(s + i, m) : s1;
        __m256i vz = vec ? _mm256_maskload_epi32((const int *)(zp + i), m) : z1;
        _mm256_maskstore_ps(y + i, m, deq_one(_mm_loadl_epi64((const __m128i *)tmp), vs, vz,
                                              is_signed));
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

/* min/max: _mm256_min_ps(x, acc) returns acc when x is NaN, so NaNs never enter. */
QC_INLINE float hmin(__m256 v) {
    __m128 a = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_min_ps(a, _mm_movehl_ps(a, a));
    a = _mm_min_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}

QC_INLINE float hmax(__m256 v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}

static int minmax_uniform(const float *x, size_t n, float *mn, float *mx) {
    const __m256 pinf = _mm256_set1_ps(INFINITY), ninf = _mm256_set1_ps(-INFINITY);
    __m256 lo0 = pinf, lo1 = pinf, hi0 = ninf, hi1 = ninf, nan = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q)); /* a or b is NaN */
        lo0 = _mm256_min_ps(a, lo0);
        hi0 = _mm256_max_ps(a, hi0);
        lo1 = _mm256_min_ps(b, lo1);
        hi1 = _mm256_max_ps(b, hi1);
    }
    for (; i < n; i += 8) {
        __m256i m = n - i >= 8 ? _mm256_set1_epi32(-1) : tail_mask(n - i);
        __m256 fm = _mm256_castsi256_ps(m);
        __m256 a = _mm256_maskload_ps(x + i, m);
        nan = _mm256_or_ps(nan, _mm256_and_ps(fm, _mm256_cmp_ps(a, a, _CMP_UNORD_Q)));
        lo0 = _mm256_min_ps(_mm256_blendv_ps(pinf, a, fm), lo0);
        hi0 = _mm256_max_ps(_mm256_blendv_ps(ninf, a, fm), hi0);
    }
    float lo = hmin(_mm256_min_ps(lo0, lo1)), hi = hmax(_mm256_max_ps(hi0, hi1));
    *mn = lo < *mn ? lo : *mn;
    *mx = hi > *mx ? hi : *mx;
    return _mm256_movemask_ps(nan) != 0;
}

static int minmax_vector(const float *x, size_t n, float *mn, float *mx) {
    __m256 nan = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(x + i);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
        _mm256_storeu_ps(mn + i, _mm256_min_ps(a, _mm256_loadu_ps(mn + i)));
        _mm256_storeu_ps(mx + i, _mm256_max_ps(a, _mm256_loadu_ps(mx + i)));
    }
    if (i < n) {
        __m256i m = tail_mask(n - i);
        __m256 a = _mm256_maskload_ps(x + i, m);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
        _mm256_maskstore_ps(mn + i, m, _mm256_min_ps(a, _mm256_maskload_ps(mn + i, m)));
        _mm256_maskstore_ps(mx + i, m, _mm256_max_ps(a, _mm256_maskload_ps(mx + i, m)));
    }
    return _mm256_movemask_ps(nan) != 0;
}

/* ---- extended quantize: bfloat16 input, nibble / packed 4-bit / float8 output ---- */

/* 8 inputs as float32 (r < 8: only the first r are read); bfloat16 bits are widened by << 16
 * (exact, as ml_dtypes' cast). */
QC_INLINE __m256 load8(const void *x, size_t i, size_t r, int full, int bf16) {
    if (!bf16) {
        const float *p = (const float *)x + i;
        return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, tail_mask(r));
    }
    const uint16_t *p = (const uint16_t *)x + i;
    __m128i h;
    if (full) {
        h = _mm_loadu_si128((const __m128i *)p);
    } else {
        uint16_t tmp[8] = {0};
        memcpy(tmp, p, r * sizeof(uint16_t));
        h = _mm_loadu_si128((const __m128i *)tmp);
    }
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* qc_f8_bits on 8 lanes (|v| <= max, not NaN), as f8_bits in avx512.c. */
QC_INLINE __m256i f8_bits(__m256 v, qc_f8fmt f) {
    const int sh = 23 - f.M;
    const __m256i a = _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fffffff));
    __m256i sign = _mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(v), 24),
                                    _mm256_set1_epi32(0x80));
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(a, sh), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(
        _mm256_add_epi32(a, _mm256_set1_epi32((int32_t)(((1u << (sh - 1)) - 1u) -
                                                        ((uint32_t)(127 - f.bias) << 23)))),
        lsb);
    const __m256 c = _mm256_set1_ps(qc_float_of((uint32_t)(151 - f.bias - f.M) << 23));
    __m256i sub = _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(a), c)),
                                   _mm256_castps_si256(c));
    /* a <= 0x7fffffff: the signed compare is the unsigned one */
    __m256i norm = _mm256_cmpgt_epi32(
        a, _mm256_set1_epi32((int32_t)((uint32_t)(128 - f.bias) << 23) - 1));
    __m256i m = _mm256_blendv_epi8(sub, _mm256_srli_epi32(r, sh), norm);
    if (f.fnuz) sign = _mm256_andnot_si256(_mm256_cmpeq_epi32(m, _mm256_setzero_si256()), sign);
    return _mm256_or_si256(m, sign);
}

typedef struct {
    __m256 lo, hi, s1, z1, i1;
} ext_consts;

/* 8 elements from i (r < 8 and !full: only the first r are read): the byte values, as int32. */
QC_INLINE __m256i ext_block(const void *x, size_t i, size_t r, int full, const float *s,
                            const float *inv, const float *zp, const ext_consts *k, int vec,
                            qc_profile p, int bf16, qc_qout out, __m256 *nan) {
    const int vinv = vec && p != QC_PROFILE_ONNX && p != QC_PROFILE_TFLITE;
    __m256i m = tail_mask(full ? 8 : r);
    __m256 vx = load8(x, i, r, full, bf16);
    __m256 vs = full ? load_or(s + i, vec, k->s1) : mload_or(s + i, m, vec, k->s1);
    *nan = _mm256_or_ps(*nan, _mm256_cmp_ps(vx, vx, _CMP_UNORD_Q));
    if (out >= QC_OUT_F8_E4M3FN) {
        return f8_bits(clamp_v(_mm256_div_ps(vx, vs), k->lo, k->hi), qc_f8_format(out));
    }
    __m256 vz = full ? load_or(zp + i, vec, k->z1) : mload_or(zp + i, m, vec, k->z1);
    __m256 vi = full ? load_or(inv + i, vinv, k->i1) : mload_or(inv + i, m, vinv, k->i1);
    __m256i q = _mm256_cvtps_epi32(clamp_v(rounded_p(vx, vs, vi, vz, p), k->lo, k->hi));
    return out == QC_OUT_BYTES ? q : _mm256_and_si256(q, _mm256_set1_epi32(0x0F));
}

/* 16 nibbles (int32 lanes, values 0..15) -> 8 bytes in the low half, element 2k low. */
QC_INLINE __m128i pack_nibbles(__m256i q0, __m256i q1) {
    __m128i b = _mm_unpacklo_epi64(low_bytes(q0), low_bytes(q1));
    /* 16-bit lanes lo | hi << 8 -> low byte lo | hi << 4 */
    __m128i w = _mm_and_si128(_mm_or_si128(b, _mm_srli_epi16(b, 4)), _mm_set1_epi16(0xFF));
    return _mm_packus_epi16(w, w);
}

QC_INLINE int quantize_ext_p(const void *x, uint8_t *q, size_t n, const float *s,
                             const float *inv, const float *zp, const qc_qcfg *cfg, int vec,
                             qc_profile p, int bf16, qc_qout out) {
    const ext_consts k = {_mm256_set1_ps(cfg->qmin), _mm256_set1_ps(cfg->qmax),
                          _mm256_set1_ps(s[0]), _mm256_set1_ps(zp[0]), _mm256_set1_ps(inv[0])};
    __m256 nan = _mm256_setzero_ps();
    size_t i = 0;
    uint8_t tmp[16];
    if (out == QC_OUT_PACKED4) { /* n is even */
        for (; i + 16 <= n; i += 16) {
            __m256i q0 = ext_block(x, i, 8, 1, s, inv, zp, &k, vec, p, bf16, out, &nan);
            __m256i q1 = ext_block(x, i + 8, 8, 1, s, inv, zp, &k, vec, p, bf16, out, &nan);
            _mm_storel_epi64((__m128i *)(q + i / 2), pack_nibbles(q0, q1));
        }
        if (i < n) {
            size_t r = n - i;
            __m256i q0 = ext_block(x, i, r < 8 ? r : 8, 0, s, inv, zp, &k, vec, p, bf16, out,
                                   &nan);
            __m256i q1 = ext_block(x, i + 8, r > 8 ? r - 8 : 0, 0, s, inv, zp, &k, vec, p, bf16,
                                   out, &nan);
            _mm_storeu_si128((__m128i *)tmp, pack_nibbles(q0, q1));
            memcpy(q + i / 2, tmp, r / 2);
        }
        return _mm256_movemask_ps(nan) != 0;
    }
    for (; i + 8 <= n; i += 8) {
        __m256i v = ext_block(x, i, 8, 1, s, inv, zp, &k, vec, p, bf16, out, &nan);
        _mm_storel_epi64((__m128i *)(q + i), low_bytes(v));
    }
    if (i < n) {
        __m256i v = ext_block(x, i, n - i, 0, s, inv, zp, &k, vec, p, bf16, out, &nan);
        _mm_storeu_si128((__m128i *)tmp, low_bytes(v));
        memcpy(q + i, tmp, n - i);
    }
    return _mm256_movemask_ps(nan) != 0;
}

#include "quant/ext_dispatch.h"

const qc_quant_kernels qc_quant_kernels__avx2 = {
    quantize_uniform,   quantize_vector,   fake_uniform,   fake_vector,
    dequantize_uniform, dequantize_vector, minmax_uniform, minmax_vector,
    quantize_ext_uniform, quantize_ext_vector,
};
