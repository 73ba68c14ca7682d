/* AVX2 direct-convolution kernels (dw.h): int16 pairs by vpmaddwd, 8 outputs per vector. */
#ifndef QC_NO_X86
#include <immintrin.h>
#include <string.h>

#include "conv/dw.h"
#include "gemm/epilogue_avx2.h"
#include "gemm/kernels.h"

/* n bytes at stride sw minus xzp; full 16-output chunks only where every byte they load
 * belongs to the row (the last byte read is src[(n - 1) * sw]), the rest scalar. */
QC_INLINE void row_avx2(const uint8_t *src, int sx, size_t sw, size_t n, int32_t xzp,
                        int16_t *dst) {
    const __m256i zp = _mm256_set1_epi16((short)xzp);
    size_t i = 0;
    if (sw == 1) {
        for (; i + 16 <= n; i += 16) {
            const __m128i b = _mm_loadu_si128((const __m128i *)(src + i));
            const __m256i v = sx ? _mm256_cvtepi8_epi16(b) : _mm256_cvtepu8_epi16(b);
            _mm256_storeu_si256((__m256i *)(dst + i), _mm256_sub_epi16(v, zp));
        }
    } else if (sw == 2) {
        /* 16 outputs from 32 bytes, src[2i .. 2i + 31]: inside the row while 2i + 31 <=
         * 2(n - 1), i.e. i + 17 <= n */
        for (; i + 17 <= n; i += 16) {
            const __m256i b = _mm256_loadu_si256((const __m256i *)(src + 2 * i));
            const __m256i v = sx ? _mm256_srai_epi16(_mm256_slli_epi16(b, 8), 8)
                                 : _mm256_and_si256(b, _mm256_set1_epi16(0xFF));
            _mm256_storeu_si256((__m256i *)(dst + i), _mm256_sub_epi16(v, zp));
        }
    }
    for (; i < n; i++) {
        const int32_t v = sx ? (int32_t)(int8_t)src[i * sw] : (int32_t)src[i * sw];
        dst[i] = (int16_t)(v - xzp);
    }
}

static void rows_avx2(const uint8_t *src, size_t lds, int sx, size_t sw, size_t n,
                      size_t nrows, int32_t xzp, int16_t *dst, size_t ldd) {
    for (size_t r = 0; r < nrows; r++) row_avx2(src + r * lds, sx, sw, n, xzp, dst + r * ldd);
}

/* 32 bytes per step (16 even, 16 odd) while the row has them, the rest scalar. */
static void rows2_avx2(const uint8_t *src, size_t lds, int sx, size_t n, size_t nrows,
                       int32_t xzp, int16_t *d0, int16_t *d1, size_t ldd) {
    const __m256i zp = _mm256_set1_epi16((short)xzp), m = _mm256_set1_epi16(0xFF);
    for (size_t r = 0; r < nrows; r++, src += lds, d0 += ldd, d1 += ldd) {
        size_t j = 0;
        for (; j + 32 <= n; j += 32) {
            const __m256i b = _mm256_loadu_si256((const __m256i *)(src + j));
            const __m256i e = sx ? _mm256_srai_epi16(_mm256_slli_epi16(b, 8), 8)
                                 : _mm256_and_si256(b, m);
            const __m256i o = sx ? _mm256_srai_epi16(b, 8) : _mm256_srli_epi16(b, 8);
            _mm256_storeu_si256((__m256i *)(d0 + j / 2), _mm256_sub_epi16(e, zp));
            _mm256_storeu_si256((__m256i *)(d1 + j / 2), _mm256_sub_epi16(o, zp));
        }
        for (; j < n; j++) {
            const int32_t v = sx ? (int32_t)(int8_t)src[j] : (int32_t)src[j];
            (j % 2 ? d1 : d0)[j / 2] = (int16_t)(v - xzp);
        }
    }
}

/* xp[i] = xs[i] | xs[i + 1] << 16: 16-bit unpacks of two loads one element apart, their
 * 128-bit halves put back in order. */
static void pairs_avx2(const int16_t *xs, size_t n, int32_t *xp) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(xs + i));
        const __m256i b = _mm256_loadu_si256((const __m256i *)(xs + i + 1));
        const __m256i l = _mm256_unpacklo_epi16(a, b), h = _mm256_unpackhi_epi16(a, b);
        _mm256_storeu_si256((__m256i *)(xp + i), _mm256_permute2x128_si256(l, h, 0x20));
        _mm256_storeu_si256((__m256i *)(xp + i + 8), _mm256_permute2x128_si256(l, h, 0x31));
    }
    for (; i < n; i++)
        xp[i] = (int32_t)((uint32_t)(uint16_t)xs[i] | (uint32_t)(uint16_t)xs[i + 1] << 16);
}

/* qc_gemm_requant1 of 8 lanes with scales s (lane k's is sc[k * sstep]): the float32
 * shortcut proven in gemm/kernels.h (two roundings, no FMA, |t - rint(t)| < 1/2 - 2^-10 and,
 * unless `small` says every |v| < 2^24, |f| < 2^24 in every lane), else float64; with rq32
 * ONNX Runtime's float32 requantization (qc_gemm_requant1_f32). */
QC_INLINE __m256i rq8s(__m256i v, __m256 s, const float *sc, size_t sstep, int32_t y_zp,
                       int32_t lo, int32_t hi, int small, int rq32) {
    if (rq32) return qc_requant8_f32_epi32_avx2(v, s, y_zp, lo, hi);
    const __m256 f = _mm256_cvtepi32_ps(v);
    __m256 tf = _mm256_add_ps(_mm256_mul_ps(f, s), _mm256_set1_ps((float)y_zp));
    tf = _mm256_min_ps(_mm256_max_ps(tf, _mm256_set1_ps((float)lo)), _mm256_set1_ps((float)hi));
    const __m256 rf = _mm256_round_ps(tf, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 bad = _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(tf, rf), absmask),
                               _mm256_set1_ps(0.5f - 0x1p-10f), _CMP_NLT_UQ);
    if (!small) {
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_and_ps(f, absmask),
                                              _mm256_set1_ps(0x1p24f), _CMP_NLT_UQ));
    }
    if (QC_LIKELY(_mm256_testz_ps(bad, bad))) return _mm256_cvtps_epi32(rf);
    int32_t a[8], q[8];
    _mm256_storeu_si256((__m256i *)a, v);
    for (int k = 0; k < 8; k++) q[k] = qc_gemm_requant1(a[k], sc[k * sstep], y_zp, lo, hi);
    return _mm256_loadu_si256((const __m256i *)q);
}

/* One scale for all 8 lanes. */
QC_INLINE __m256i rq8(__m256i v, float scale, int32_t y_zp, int32_t lo, int32_t hi, int small,
                      int rq32) {
    return rq8s(v, _mm256_set1_ps(scale), &scale, 0, y_zp, lo, hi, small, rq32);
}

#define QC_DW_U 4

static void tile_avx2(const qc_dw_tile *t) {
    const size_t nops = t->nops, L = t->L;
    for (size_t c = 0; c < t->nch; c++) {
        const int32_t *xp = t->xp + c / t->per_xp * t->xp_stride;
        const int32_t *wp = t->wp + c * t->nops;
        const int32_t b = t->bias ? t->bias[c] : 0;
        const __m256i bias = _mm256_set1_epi32(b);
        const int64_t babs = b < 0 ? -(int64_t)b : (int64_t)b;
        const int small = (int64_t)nops * 2 * 255 * 255 + babs < ((int64_t)1 << 24);
        const float sc = t->out32 ? 0.0f : t->scale[c];
        for (size_t i = 0; i < L; i += 8 * QC_DW_U) {
            __m256i a0 = bias, a1 = bias, a2 = bias, a3 = bias;
            for (size_t j = 0; j < nops; j++) {
                const int32_t *p = xp + t->off[j] + i;
                const __m256i w = _mm256_set1_epi32(wp[j]);
                a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)p), w));
                a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(p + 8)), w));
                a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(p + 16)), w));
                a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(p + 24)), w));
            }
            if (t->out32) {
                int32_t *o = (int32_t *)t->buf + i;
                _mm256_storeu_si256((__m256i *)o, a0);
                _mm256_storeu_si256((__m256i *)(o + 8), a1);
                _mm256_storeu_si256((__m256i *)(o + 16), a2);
                _mm256_storeu_si256((__m256i *)(o + 24), a3);
            } else {
                /* results in [lo, hi] within [-128, 255]: int16 packs are exact, and the low
                 * byte of each is the int8 or uint8 result */
                const __m256i q0 = rq8(a0, sc, t->y_zp, t->lo, t->hi, small, t->rq32);
                const __m256i q1 = rq8(a1, sc, t->y_zp, t->lo, t->hi, small, t->rq32);
                const __m256i q2 = rq8(a2, sc, t->y_zp, t->lo, t->hi, small, t->rq32);
                const __m256i q3 = rq8(a3, sc, t->y_zp, t->lo, t->hi, small, t->rq32);
                /* packs work per 128-bit lane: w01 = q0l q1l q0h q1h (4 lanes each) */
                const __m256i w01 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
                const __m256i w23 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q2, q3), 0xD8);
                const __m256i m = _mm256_set1_epi16(0xFF);
                const __m256i bytes = _mm256_permute4x64_epi64(
                    _mm256_packus_epi16(_mm256_and_si256(w01, m), _mm256_and_si256(w23, m)),
                    0xD8);
                _mm256_storeu_si256((__m256i *)((uint8_t *)t->buf + i), bytes);
            }
        }
        const size_t es = t->out32 ? 4 : 1;
        for (size_t r = 0; r < t->TH; r++) {
            memcpy((char *)t->y + (c * t->ldc + r * t->ldy) * es,
                   (const char *)t->buf + r * t->PWs * es, t->TW * es);
        }
    }
}

/* rq8 with a scale per lane (sc: the 8 scales). */
QC_INLINE __m256i rq8v(__m256i v, const float *sc, int32_t y_zp, int32_t lo, int32_t hi,
                       int lean, int rq32) {
    return rq8s(v, _mm256_loadu_ps(sc), sc, 1, y_zp, lo, hi, lean, rq32);
}

/* Channels across the lanes (dw.h, qc_dw_nhwc): 16 channels as two vectors of 8, 2 output
 * pixels per step. */
static void nhwc_avx2(const qc_dw_nhwc *b) {
    const size_t np = b->PH * b->PW, pd = b->pd;
    const __m256i zp = _mm256_set1_epi16((short)b->xzp);
    for (size_t p = 0; p < np; p++) {
        const __m128i x0 = _mm_loadu_si128((const __m128i *)(b->xb + p * 16));
        const __m128i x1 = _mm_loadu_si128((const __m128i *)(b->xb + (p + pd) * 16));
        const __m128i l = _mm_unpacklo_epi8(x0, x1), h = _mm_unpackhi_epi8(x0, x1);
        const __m256i vl = b->sx ? _mm256_cvtepi8_epi16(l) : _mm256_cvtepu8_epi16(l);
        const __m256i vh = b->sx ? _mm256_cvtepi8_epi16(h) : _mm256_cvtepu8_epi16(h);
        _mm256_storeu_si256((__m256i *)(b->xp + p * 16), _mm256_sub_epi16(vl, zp));
        _mm256_storeu_si256((__m256i *)(b->xp + p * 16 + 8), _mm256_sub_epi16(vh, zp));
    }
    const __m256i b0 = _mm256_loadu_si256((const __m256i *)b->bias);
    const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b->bias + 8));
    const size_t OHW = b->OH * b->OW, rowstep = b->sh * b->PW * 16, st = b->sw * 16;
    size_t ox = 0;
    const int32_t *rowp = b->xp;
    const __m256i m = _mm256_set1_epi16(0xFF);
    for (size_t o = 0; o < OHW; o += 2) {
        const int32_t *pp[2];
        size_t oo[2];
        for (int k = 0; k < 2; k++) {
            if (o + (size_t)k < OHW) {
                pp[k] = rowp + ox * st;
                oo[k] = o + (size_t)k;
                if (++ox == b->OW) ox = 0, rowp += rowstep;
            } else {
                pp[k] = pp[k - 1];
                oo[k] = oo[k - 1];
            }
        }
        __m256i a00 = b0, a01 = b1, a10 = b0, a11 = b1;
        for (size_t j = 0; j < b->nops; j++) {
            const size_t off = b->poff[j] * 16;
            const __m256i w0 = _mm256_loadu_si256((const __m256i *)(b->wp + j * 16));
            const __m256i w1 = _mm256_loadu_si256((const __m256i *)(b->wp + j * 16 + 8));
            a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(
                _mm256_loadu_si256((const __m256i *)(pp[0] + off)), w0));
            a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(
                _mm256_loadu_si256((const __m256i *)(pp[0] + off + 8)), w1));
            a10 = _mm256_add_epi32(a10, _mm256_madd_epi16(
                _mm256_loadu_si256((const __m256i *)(pp[1] + off)), w0));
            a11 = _mm256_add_epi32(a11, _mm256_madd_epi16(
                _mm256_loadu_si256((const __m256i *)(pp[1] + off + 8)), w1));
        }
        if (b->out32) {
            int32_t *d = (int32_t *)b->ob;
            _mm256_storeu_si256((__m256i *)(d + oo[0] * 16), a00);
            _mm256_storeu_si256((__m256i *)(d + oo[0] * 16 + 8), a01);
            _mm256_storeu_si256((__m256i *)(d + oo[1] * 16), a10);
            _mm256_storeu_si256((__m256i *)(d + oo[1] * 16 + 8), a11);
            continue;
        }
        const __m256i q00 = rq8v(a00, b->scale, b->y_zp, b->lo, b->hi, b->lean, b->rq32);
        const __m256i q01 = rq8v(a01, b->scale + 8, b->y_zp, b->lo, b->hi, b->lean, b->rq32);
        const __m256i q10 = rq8v(a10, b->scale, b->y_zp, b->lo, b->hi, b->lean, b->rq32);
        const __m256i q11 = rq8v(a11, b->scale + 8, b->y_zp, b->lo, b->hi, b->lean, b->rq32);
        /* in [lo, hi]: int16 packs exact, the low byte of each is the int8 or uint8 result
         * (tile_avx2's narrowing): bytes of pixel 0 then pixel 1 */
        const __m256i w0 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q00, q01), 0xD8);
        const __m256i w1 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q10, q11), 0xD8);
        const __m256i by = _mm256_permute4x64_epi64(
            _mm256_packus_epi16(_mm256_and_si256(w0, m), _mm256_and_si256(w1, m)), 0xD8);
        uint8_t *d = (uint8_t *)b->ob;
        _mm_storeu_si128((__m128i *)(d + oo[0] * 16), _mm256_castsi256_si128(by));
        _mm_storeu_si128((__m128i *)(d + oo[1] * 16), _mm256_extracti128_si256(by, 1));
    }
}

const qc_dw_kernels qc_dw_kernels_avx2 = {"conv_dw_pairs_4x8__avx2", rows_avx2, rows2_avx2, pairs_avx2,
                                          tile_avx2, nhwc_avx2, NULL, NULL};
#endif
