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

/* ---- extended quantize: bfloat16 input, nibble / packed 4-bit / float8 output ---- */

/* 16 inputs as float32; bfloat16 bits are widened by << 16 (exact, as ml_dtypes' cast). */
QC_INLINE __m512 load16(const void *x, size_t i, __mmask16 m, int full, int bf16) {
    if (!bf16) {
        const float *p = (const float *)x + i;
        return full ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
    }
    const uint16_t *p = (const uint16_t *)x + i;
    __m256i h = full ? _mm256_loadu_si256((const __m256i *)p) : _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* qc_f8_bits on 16 lanes (|v| <= max, not NaN): the normal rounding on the integer bits, the
 * subnormal one by the float add of C, picked per lane; fnuz drops the sign of a zero. */
QC_INLINE __m512i f8_bits(__m512 v, qc_f8fmt f) {
    const unsigned sh = 23u - (unsigned)f.M;
    const __m512i a = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff));
    __m512i sign = _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(v), 24),
                                    _mm512_set1_epi32(0x80));
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(a, sh), _mm512_set1_epi32(1));
    /* a + (half - 1) + lsb - rebias, modulo 2^32 (positive for the lanes that keep it) */
    __m512i r = _mm512_add_epi32(
        _mm512_add_epi32(a, _mm512_set1_epi32((int32_t)(((1u << (sh - 1)) - 1u) -
                                                        ((uint32_t)(127 - f.bias) << 23)))),
        lsb);
    __mmask16 norm =
        _mm512_cmpge_epu32_mask(a, _mm512_set1_epi32((int32_t)((uint32_t)(128 - f.bias) << 23)));
    __m512i m = _mm512_srli_epi32(r, sh);
    /* the subnormal path only when a lane needs it (values scaled to the format's range
     * rarely do); normal codes are never 0, so fnuz's zero fix-up goes with it */
    if (norm != 0xFFFF) {
        const __m512 c = _mm512_set1_ps(qc_float_of((uint32_t)(151 - f.bias - f.M) << 23));
        __m512i sub = _mm512_sub_epi32(
            _mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(a), c)), _mm512_castps_si512(c));
        m = _mm512_mask_blend_epi32(norm, sub, m);
        if (f.fnuz) sign = _mm512_maskz_mov_epi32(_mm512_test_epi32_mask(m, m), sign);
    }
    return _mm512_or_si512(m, sign);
}

typedef struct {
    __m512 lo, hi, s1, z1, i1;
} ext_consts;

/* 16 elements from i (lanes outside m are not read): the byte values to store, as int32. */
QC_INLINE __m512i ext_block(const void *x, size_t i, __mmask16 m, int full, const float *s,
                            const float *inv, const float *zp, const ext_consts *k, int vec,
                            qc_profile p, int bf16, qc_qout out, __mmask16 *nan) {
    const int vinv = vec && p != QC_PROFILE_ONNX && p != QC_PROFILE_TFLITE;
    __m512 vx = load16(x, i, m, full, bf16);
    __m512 vs = !vec ? k->s1 : full ? _mm512_loadu_ps(s + i) : _mm512_mask_loadu_ps(k->s1, m, s + i);
    *nan |= _mm512_cmp_ps_mask(vx, vx, _CMP_UNORD_Q);
    if (out >= QC_OUT_F8_E4M3FN) {
        return f8_bits(clamp_v(_mm512_div_ps(vx, vs), k->lo, k->hi), qc_f8_format(out));
    }
    __m512 vz = !vec ? k->z1 : full ? _mm512_loadu_ps(zp + i) : _mm512_maskz_loadu_ps(m, zp + i);
    __m512 vi = !vinv ? k->i1 : full ? _mm512_loadu_ps(inv + i)
                                     : _mm512_mask_loadu_ps(k->i1, m, inv + i);
    __m512i q = _mm512_cvtps_epi32(clamp_v(rounded_p(vx, vs, vi, vz, p), k->lo, k->hi));
    return out == QC_OUT_BYTES ? q : _mm512_and_si512(q, _mm512_set1_epi32(0x0F));
}

/* 32 nibbles (int32 lanes, values 0..15) -> 16 bytes, element 2k low, 2k + 1 high. */
QC_INLINE __m128i pack_nibbles(__m512i q0, __m512i q1) {
    __m256i b = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_cvtepi32_epi8(q0)),
                                        _mm512_cvtepi32_epi8(q1), 1);
    /* 16-bit lanes lo | hi << 8 -> low byte lo | hi << 4 */
    return _mm256_cvtepi16_epi8(_mm256_or_si256(b, _mm256_srli_epi16(b, 4)));
}

/* bfloat16 -> int8/uint8 bytes with uniform parameters, 64 elements a step (the widening and
 * the narrowing dominate this loop). Widening by interleaving a zero low half (vpunpck*wd,
 * in-lane) instead of vpmovzxwd leaves the elements in the lane order [0-3, 8-11, ...] and
 * [4-7, 12-15, ...]; vpackssdw of the two puts each 128-bit lane back in order, and after
 * vpacksswb (int8) / vpackuswb (uint8: values 0..255, exact) one vpermq orders the 8-byte
 * groups. Returns how many elements it did (a multiple of 64). */
QC_INLINE size_t bf16_bytes_64(const uint16_t *x, uint8_t *q, size_t n, const ext_consts *k,
                               qc_profile p, int is_signed, __mmask16 *nan) {
    const __m512i zero = _mm512_setzero_si512();
    const __m512i order = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i v0 = _mm512_loadu_si512(x + i), v1 = _mm512_loadu_si512(x + i + 32);
        __m512 f[4] = {_mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, v0)),
                       _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, v0)),
                       _mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, v1)),
                       _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, v1))};
        __m512i c[4];
        for (int j = 0; j < 4; j++) {
            *nan |= _mm512_cmp_ps_mask(f[j], f[j], _CMP_UNORD_Q);
            c[j] = _mm512_cvtps_epi32(clamp_v(rounded_p(f[j], k->s1, k->i1, k->z1, p), k->lo,
                                              k->hi));
        }
        __m512i w0 = _mm512_packs_epi32(c[0], c[1]), w1 = _mm512_packs_epi32(c[2], c[3]);
        __m512i b = is_signed ? _mm512_packs_epi16(w0, w1) : _mm512_packus_epi16(w0, w1);
        _mm512_storeu_si512(q + i, _mm512_permutexvar_epi64(order, b));
    }
    return i;
}

QC_INLINE int quantize_ext_p(const void *x, uint8_t *q, size_t n, const float *s,
                             const float *inv, const float *zp, const qc_qcfg *cfg, int vec,
                             qc_profile p, int bf16, qc_qout out) {
    const ext_consts k = {_mm512_set1_ps(cfg->qmin), _mm512_set1_ps(cfg->qmax),
                          _mm512_set1_ps(s[0]), _mm512_set1_ps(zp[0]), _mm512_set1_ps(inv[0])};
    __mmask16 nan = 0;
    size_t i = 0;
    if (bf16 && out == QC_OUT_BYTES && !vec) {
        i = bf16_bytes_64((const uint16_t *)x, q, n, &k, p, cfg->qmin < 0.0f, &nan);
    }
    if (out == QC_OUT_PACKED4) { /* n is even */
        for (; i + 32 <= n; i += 32) {
            __m512i q0 = ext_block(x, i, 0xFFFF, 1, s, inv, zp, &k, vec, p, bf16, out, &nan);
            __m512i q1 = ext_block(x, i + 16, 0xFFFF, 1, s, inv, zp, &k, vec, p, bf16, out, &nan);
            _mm_storeu_si128((__m128i *)(q + i / 2), pack_nibbles(q0, q1));
        }
        if (i < n) {
            size_t r = n - i;
            __mmask16 m0 = tail_mask(r < 16 ? r : 16), m1 = r > 16 ? tail_mask(r - 16) : 0;
            __m512i q0 = ext_block(x, i, m0, 0, s, inv, zp, &k, vec, p, bf16, out, &nan);
            __m512i q1 = ext_block(x, i + 16, m1, 0, s, inv, zp, &k, vec, p, bf16, out, &nan);
            _mm_mask_storeu_epi8(q + i / 2, tail_mask(r / 2), pack_nibbles(q0, q1));
        }
        return nan != 0;
    }
    for (; i + 16 <= n; i += 16) {
        __m512i v = ext_block(x, i, 0xFFFF, 1, s, inv, zp, &k, vec, p, bf16, out, &nan);
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtepi32_epi8(v));
    }
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512i v = ext_block(x, i, m, 0, s, inv, zp, &k, vec, p, bf16, out, &nan);
        _mm512_mask_cvtepi32_storeu_epi8(q + i, m, v);
    }
    return nan != 0;
}

#include "quant/ext_dispatch.h"

const qc_quant_kernels qc_quant_kernels__avx512 = {
    quantize_uniform,   quantize_vector,   fake_uniform,   fake_vector,
    dequantize_uniform, dequantize_vector, minmax_uniform, minmax_vector,
    quantize_ext_uniform, quantize_ext_vector,
};
