/* The AVX-512 direct-convolution kernels of dw.h, written once: included by dw_avx512.c
 * (vpmaddwd + vpaddd) and dw_avx512vnni.c (vpdpwssd), which define QC_DW_NAME and QC_DW_MADD. */
#include <immintrin.h>

#include "conv/dw.h"
#include "gemm/epilogue_avx512.h"

/* n bytes at stride sw (1 or 2 here; others scalar) minus xzp. Loads are masked to the bytes
 * the row owns: the last byte read is src[(n - 1) * sw]. */
QC_INLINE void QC_DW_NAME(row)(const uint8_t *src, int sx, size_t sw, size_t n, int32_t xzp,
                               int16_t *dst) {
    const __m512i zp = _mm512_set1_epi16((short)xzp);
    size_t i = 0;
    if (sw == 1) {
        for (; i < n; i += 32) {
            const size_t m = QC_MIN((size_t)32, n - i);
            const __mmask32 k = m == 32 ? (__mmask32)~0u : (__mmask32)((1u << m) - 1);
            const __m256i b = _mm256_maskz_loadu_epi8(k, src + i);
            const __m512i v = sx ? _mm512_cvtepi8_epi16(b) : _mm512_cvtepu8_epi16(b);
            _mm512_mask_storeu_epi16(dst + i, k, _mm512_sub_epi16(v, zp));
        }
        return;
    }
    if (sw == 2) {
        /* 32 outputs from 64 bytes: the even bytes of each 16-bit lane */
        for (; i < n; i += 32) {
            const size_t m = QC_MIN((size_t)32, n - i), nb = 2 * m - 1;
            const __mmask64 k = nb == 64 ? ~(__mmask64)0 : (((__mmask64)1 << nb) - 1);
            const __m512i b = _mm512_maskz_loadu_epi8(k, src + 2 * i);
            const __m512i v = sx ? _mm512_srai_epi16(_mm512_slli_epi16(b, 8), 8)
                                 : _mm512_and_si512(b, _mm512_set1_epi16(0xFF));
            const __mmask32 ko = m == 32 ? (__mmask32)~0u : (__mmask32)((1u << m) - 1);
            _mm512_mask_storeu_epi16(dst + i, ko, _mm512_sub_epi16(v, zp));
        }
        return;
    }
    for (; i < n; i++) {
        const int32_t v = sx ? (int32_t)(int8_t)src[i * sw] : (int32_t)src[i * sw];
        dst[i] = (int16_t)(v - xzp);
    }
}

static void QC_DW_NAME(rows)(const uint8_t *src, size_t lds, int sx, size_t sw, size_t n,
                             size_t nrows, int32_t xzp, int16_t *dst, size_t ldd) {
    for (size_t r = 0; r < nrows; r++)
        QC_DW_NAME(row)(src + r * lds, sx, sw, n, xzp, dst + r * ldd);
}

/* 64 bytes per step, loads masked to the row: the even bytes of each 16-bit lane to d0, the
 * odd ones to d1. */
static void QC_DW_NAME(rows2)(const uint8_t *src, size_t lds, int sx, size_t n, size_t nrows,
                              int32_t xzp, int16_t *d0, int16_t *d1, size_t ldd) {
    const __m512i zp = _mm512_set1_epi16((short)xzp), m = _mm512_set1_epi16(0xFF);
    for (size_t r = 0; r < nrows; r++, src += lds, d0 += ldd, d1 += ldd) {
        for (size_t j = 0; j < n; j += 64) {
            const size_t rem = QC_MIN((size_t)64, n - j), ne = (rem + 1) / 2, no = rem / 2;
            const __mmask64 k = rem == 64 ? ~(__mmask64)0 : (((__mmask64)1 << rem) - 1);
            const __m512i b = _mm512_maskz_loadu_epi8(k, src + j);
            const __m512i e = sx ? _mm512_srai_epi16(_mm512_slli_epi16(b, 8), 8)
                                 : _mm512_and_si512(b, m);
            const __m512i o = sx ? _mm512_srai_epi16(b, 8) : _mm512_srli_epi16(b, 8);
            const __mmask32 ke = ne == 32 ? (__mmask32)~0u : (__mmask32)((1u << ne) - 1);
            const __mmask32 ko = no == 32 ? (__mmask32)~0u : (__mmask32)((1u << no) - 1);
            _mm512_mask_storeu_epi16(d0 + j / 2, ke, _mm512_sub_epi16(e, zp));
            _mm512_mask_storeu_epi16(d1 + j / 2, ko, _mm512_sub_epi16(o, zp));
        }
    }
}

/* xp[i] = xs[i] | xs[i + 1] << 16: two loads one element apart, interleaved by vpermt2w. */
static void QC_DW_NAME(pairs)(const int16_t *xs, size_t n, int32_t *xp) {
    static const int16_t idx[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                    8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
    const __m512i lo = _mm512_loadu_si512(idx);
    const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512i a = _mm512_loadu_si512(xs + i), b = _mm512_loadu_si512(xs + i + 1);
        _mm512_storeu_si512(xp + i, _mm512_permutex2var_epi16(a, lo, b));
        _mm512_storeu_si512(xp + i + 16, _mm512_permutex2var_epi16(a, hi, b));
    }
    for (; i < n; i++)
        xp[i] = (int32_t)((uint32_t)(uint16_t)xs[i] | (uint32_t)(uint16_t)xs[i + 1] << 16);
}

/* vrangeps imm8: the operand of larger magnitude, sign cleared */
#define QC_DW_ABSMAX 0x0B

/* The float32 shortcut of qc_gemm_requant1 for 16 lanes, the one the NCHW conv kernel proves
 * (nchw_avx512vnni.c, round16): u = fl32(f * s + y_zp) in one rounding (FMA), clamped to
 * [lo, hi], equals the float64 result rint'd when |f| < 2^24 and |u - rint(u)| < 1/2 - 2^-15;
 * any vector with a lane outside that runs the float64 path (qc_requant16_avx512). */
QC_INLINE __m512i QC_DW_NAME(rq16)(__m512i v, __m512 s, __m512 zp, __m512 lo, __m512 hi,
                                   int small, int32_t y_zp, int32_t ilo, int32_t ihi) {
    const __m512 f = _mm512_cvtepi32_ps(v);
    const __m512 u = _mm512_min_ps(_mm512_max_ps(_mm512_fmadd_ps(f, s, zp), lo), hi);
    const __m512 frac = _mm512_reduce_ps(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __mmask16 bad = _mm512_cmp_ps_mask(_mm512_abs_ps(frac), _mm512_set1_ps(0.5f - 0x1p-15f),
                                       _CMP_NLT_UQ);
    if (!small) bad |= _mm512_cmp_ps_mask(_mm512_abs_ps(f), _mm512_set1_ps(0x1p24f), _CMP_NLT_UQ);
    if (QC_UNLIKELY(bad)) return qc_requant16_avx512(v, s, y_zp, ilo, ihi, 0xFFFF);
    return _mm512_cvt_roundps_epi32(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* Copy TH rows of TW elements (esize bytes) from src (pitch TW) to y (pitch ldy). */
QC_INLINE void QC_DW_NAME(unflatten)(const qc_dw_tile *t, const char *src, char *y,
                                     size_t esize) {
    const size_t bytes = t->TW * esize;
    for (size_t r = 0; r < t->TH; r++) memcpy(y + r * t->ldy * esize, src + r * bytes, bytes);
}

/* Write the output lanes m of q (int32) densely at *dst, narrowed to the output type: uint8
 * (hi 255) saturates unsigned after raising to lo, int8 saturates signed, then rises to lo;
 * for values already in [lo, hi] both are the identity. */
QC_INLINE void QC_DW_NAME(emit8)(const qc_dw_tile *t, const int U8, __m512i q, __mmask16 m,
                                 uint8_t **dst) {
    const int n = __builtin_popcount((unsigned)m);
    const __m512i c = _mm512_maskz_compress_epi32(m, q);
    __m128i b;
    if (U8) {
        b = _mm512_cvtusepi32_epi8(_mm512_max_epi32(c, _mm512_set1_epi32(t->lo)));
    } else {
        b = _mm_max_epi8(_mm512_cvtsepi32_epi8(c), _mm_set1_epi8((char)t->lo));
    }
    _mm_mask_storeu_epi8(*dst, (__mmask16)((1u << n) - 1), b);
    *dst += n;
}

QC_INLINE void QC_DW_NAME(emit32)(__m512i q, __mmask16 m, int32_t **dst) {
    const int n = __builtin_popcount((unsigned)m);
    _mm512_mask_storeu_epi32(*dst, (__mmask16)((1u << n) - 1), _mm512_maskz_compress_epi32(m, q));
    *dst += n;
}

#define QC_DW_U 4 /* vectors of 16 outputs per step: independent accumulator chains */

/* The lean epilogue of 4 vectors, for a channel whose |acc| < 2^24 and scale in [0, 64): then
 * |u| < 2^31, so u converts without overflow and the clamp can follow the rounding (rint is
 * monotone, the bounds are integers): emit8's saturating narrow and max. One vrangeps chain
 * keeps the largest |u - rint(u)| of the 64 lanes; if any lane fails the test of rq16 the 4
 * vectors take the float64 path (clamped already, which the narrow keeps). */
QC_INLINE void QC_DW_NAME(lean4)(const qc_dw_tile *t, __m512 s, __m512 zp, __m512i *a0,
                                 __m512i *a1, __m512i *a2, __m512i *a3) {
    const int rd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const __m512 u0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(*a0), s, zp);
    const __m512 u1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(*a1), s, zp);
    const __m512 u2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(*a2), s, zp);
    const __m512 u3 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(*a3), s, zp);
    const __m512 worst = _mm512_range_ps(
        _mm512_range_ps(_mm512_reduce_ps(u0, rd), _mm512_reduce_ps(u1, rd), QC_DW_ABSMAX),
        _mm512_range_ps(_mm512_reduce_ps(u2, rd), _mm512_reduce_ps(u3, rd), QC_DW_ABSMAX),
        QC_DW_ABSMAX);
    if (QC_UNLIKELY(_mm512_cmp_ps_mask(worst, _mm512_set1_ps(0.5f - 0x1p-15f), _CMP_NLT_UQ))) {
        *a0 = qc_requant16_avx512(*a0, s, t->y_zp, t->lo, t->hi, 0xFFFF);
        *a1 = qc_requant16_avx512(*a1, s, t->y_zp, t->lo, t->hi, 0xFFFF);
        *a2 = qc_requant16_avx512(*a2, s, t->y_zp, t->lo, t->hi, 0xFFFF);
        *a3 = qc_requant16_avx512(*a3, s, t->y_zp, t->lo, t->hi, 0xFFFF);
        return;
    }
    *a0 = _mm512_cvt_roundps_epi32(u0, rd);
    *a1 = _mm512_cvt_roundps_epi32(u1, rd);
    *a2 = _mm512_cvt_roundps_epi32(u2, rd);
    *a3 = _mm512_cvt_roundps_epi32(u3, rd);
}

/* Channels [c0, c1) of the tile; U8 (a constant at each call): uint8 output. */
QC_INLINE void QC_DW_NAME(channels)(const qc_dw_tile *t, const int U8) {
    const size_t nops = t->nops, L = t->L;
    const __mmask16 *m = (const __mmask16 *)t->masks;
    /* rows of the tile contiguous in y: emit straight there, else densely into buf */
    const int direct = t->ldy == t->TW;
    const __m512 zp = _mm512_set1_ps((float)t->y_zp);
    const __m512 lo = _mm512_set1_ps((float)t->lo), hi = _mm512_set1_ps((float)t->hi);
    for (size_t c = 0; c < t->nch; c++) {
        const int32_t *xp = t->xp + c / t->per_xp * t->xp_stride;
        const int32_t *wp = t->wp + c * t->nops;
        const int32_t b = t->bias ? t->bias[c] : 0;
        const __m512i bias = _mm512_set1_epi32(b);
        const int64_t babs = b < 0 ? -(int64_t)b : (int64_t)b;
        /* |acc| < 2^24 for every lane: the float32 conversion is exact, no test needed */
        const int small = (int64_t)nops * 2 * 255 * 255 + babs < ((int64_t)1 << 24);
        const float sc = t->out32 ? 0.0f : t->scale[c];
        const int lean = small && sc >= 0.0f && sc < 64.0f;
        const __m512 s = _mm512_set1_ps(sc);
        const size_t es = t->out32 ? 4 : 1;
        char *yc = (char *)t->y + c * t->ldc * es;
        uint8_t *d8 = direct ? (uint8_t *)yc : (uint8_t *)t->buf;
        int32_t *d32 = direct ? (int32_t *)yc : (int32_t *)t->buf;
        for (size_t i = 0, v = 0; i < L; i += 16 * QC_DW_U, v += QC_DW_U) {
            __m512i a0 = bias, a1 = bias, a2 = bias, a3 = bias;
            const int32_t *p = xp + i;
            for (size_t j = 0; j < nops; j++) {
                const int32_t *pj = p + t->off[j];
                const __m512i w = _mm512_set1_epi32(wp[j]);
                QC_DW_MADD(a0, _mm512_loadu_si512(pj), w);
                QC_DW_MADD(a1, _mm512_loadu_si512(pj + 16), w);
                QC_DW_MADD(a2, _mm512_loadu_si512(pj + 32), w);
                QC_DW_MADD(a3, _mm512_loadu_si512(pj + 48), w);
            }
            if (t->out32) {
                QC_DW_NAME(emit32)(a0, m[v], &d32);
                QC_DW_NAME(emit32)(a1, m[v + 1], &d32);
                QC_DW_NAME(emit32)(a2, m[v + 2], &d32);
                QC_DW_NAME(emit32)(a3, m[v + 3], &d32);
                continue;
            }
            if (t->rq32) { /* emit8 saturates and raises to lo */
                qc_requant64_f32_sat_avx512(s, t->y_zp, &a0, &a1, &a2, &a3);
            } else if (lean) {
                QC_DW_NAME(lean4)(t, s, zp, &a0, &a1, &a2, &a3);
            } else {
                const int32_t yz = t->y_zp, il = t->lo, ih = t->hi;
                a0 = QC_DW_NAME(rq16)(a0, s, zp, lo, hi, small, yz, il, ih);
                a1 = QC_DW_NAME(rq16)(a1, s, zp, lo, hi, small, yz, il, ih);
                a2 = QC_DW_NAME(rq16)(a2, s, zp, lo, hi, small, yz, il, ih);
                a3 = QC_DW_NAME(rq16)(a3, s, zp, lo, hi, small, yz, il, ih);
            }
            QC_DW_NAME(emit8)(t, U8, a0, m[v], &d8);
            QC_DW_NAME(emit8)(t, U8, a1, m[v + 1], &d8);
            QC_DW_NAME(emit8)(t, U8, a2, m[v + 2], &d8);
            QC_DW_NAME(emit8)(t, U8, a3, m[v + 3], &d8);
        }
        if (!direct) QC_DW_NAME(unflatten)(t, (const char *)t->buf, yc, es);
    }
}

static void QC_DW_NAME(tile)(const qc_dw_tile *t) {
    if (t->hi == 255) QC_DW_NAME(channels)(t, 1); /* uint8 output (and int32: unused) */
    else QC_DW_NAME(channels)(t, 0);
}

/* The narrowing of emit8 without the compress: 16 results in [lo, hi] (or beyond, clamped
 * here) to bytes. */
QC_INLINE __m128i QC_DW_NAME(narrow8)(const qc_dw_nhwc *b, const int U8, __m512i q) {
    if (U8) return _mm512_cvtusepi32_epi8(_mm512_max_epi32(q, _mm512_set1_epi32(b->lo)));
    return _mm_max_epi8(_mm512_cvtsepi32_epi8(q), _mm_set1_epi8((char)b->lo));
}

/* Channels across the lanes (dw.h, qc_dw_nhwc): the pair plane, then 4 output pixels per step,
 * the per-lane epilogue of the per-plane kernel. */
QC_INLINE void QC_DW_NAME(nhwc_run)(const qc_dw_nhwc *b, const int U8) {
    const size_t np = b->PH * b->PW, pd = b->pd;
    const __m512i zp = _mm512_set1_epi16((short)b->xzp);
    for (size_t p = 0; p < np; p++) {
        const __m128i x0 = _mm_loadu_si128((const __m128i *)(b->xb + p * 16));
        const __m128i x1 = _mm_loadu_si128((const __m128i *)(b->xb + (p + pd) * 16));
        /* bytes (x0[c], x1[c]) in order, widened: lane c of 32 bits is the pair */
        const __m256i il = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_unpacklo_epi8(x0, x1)), _mm_unpackhi_epi8(x0, x1), 1);
        const __m512i v = b->sx ? _mm512_cvtepi8_epi16(il) : _mm512_cvtepu8_epi16(il);
        _mm512_storeu_si512(b->xp + p * 16, _mm512_sub_epi16(v, zp));
    }
    const __m512i bias = _mm512_loadu_si512(b->bias);
    const __m512 s = b->out32 ? _mm512_setzero_ps() : _mm512_loadu_ps(b->scale);
    const __m512 zf = _mm512_set1_ps((float)b->y_zp);
    const __m512 lo = _mm512_set1_ps((float)b->lo), hi = _mm512_set1_ps((float)b->hi);
    const size_t nops = b->nops, st = b->sw * 16;
    /* a qc_dw_tile view for lean4's float64 fallback (y_zp, lo, hi) */
    qc_dw_tile tv;
    memset(&tv, 0, sizeof tv);
    tv.y_zp = b->y_zp, tv.lo = b->lo, tv.hi = b->hi;
    /* output pixels in order, 4 per step whatever the rows (the last step repeats the last
     * pixel where fewer are left, storing it again with the same value) */
    const size_t OHW = b->OH * b->OW, rowstep = b->sh * b->PW * 16;
    size_t oy = 0, ox = 0;
    const int32_t *rowp = b->xp;
    for (size_t o = 0; o < OHW; o += 4) {
        const int32_t *pp[4];
        size_t oo[4];
        for (int k = 0; k < 4; k++) {
            if (o + (size_t)k < OHW) {
                pp[k] = rowp + ox * st;
                oo[k] = o + (size_t)k;
                if (++ox == b->OW) ox = 0, oy++, rowp += rowstep;
            } else {
                pp[k] = pp[k - 1];
                oo[k] = oo[k - 1];
            }
        }
        __m512i a0 = bias, a1 = bias, a2 = bias, a3 = bias;
        for (size_t j = 0; j < nops; j++) {
            const size_t off = b->poff[j] * 16;
            const __m512i w = _mm512_loadu_si512(b->wp + j * 16);
            QC_DW_MADD(a0, _mm512_loadu_si512(pp[0] + off), w);
            QC_DW_MADD(a1, _mm512_loadu_si512(pp[1] + off), w);
            QC_DW_MADD(a2, _mm512_loadu_si512(pp[2] + off), w);
            QC_DW_MADD(a3, _mm512_loadu_si512(pp[3] + off), w);
        }
        if (b->out32) {
            int32_t *d = (int32_t *)b->ob;
            _mm512_storeu_si512(d + oo[0] * 16, a0);
            _mm512_storeu_si512(d + oo[1] * 16, a1);
            _mm512_storeu_si512(d + oo[2] * 16, a2);
            _mm512_storeu_si512(d + oo[3] * 16, a3);
            continue;
        }
        if (b->rq32) { /* narrow8 saturates and raises to lo */
            qc_requant64_f32_sat_avx512(s, b->y_zp, &a0, &a1, &a2, &a3);
        } else if (b->lean) {
            QC_DW_NAME(lean4)(&tv, s, zf, &a0, &a1, &a2, &a3);
        } else {
            a0 = QC_DW_NAME(rq16)(a0, s, zf, lo, hi, 0, b->y_zp, b->lo, b->hi);
            a1 = QC_DW_NAME(rq16)(a1, s, zf, lo, hi, 0, b->y_zp, b->lo, b->hi);
            a2 = QC_DW_NAME(rq16)(a2, s, zf, lo, hi, 0, b->y_zp, b->lo, b->hi);
            a3 = QC_DW_NAME(rq16)(a3, s, zf, lo, hi, 0, b->y_zp, b->lo, b->hi);
        }
        uint8_t *d = (uint8_t *)b->ob;
        _mm_storeu_si128((__m128i *)(d + oo[0] * 16), QC_DW_NAME(narrow8)(b, U8, a0));
        _mm_storeu_si128((__m128i *)(d + oo[1] * 16), QC_DW_NAME(narrow8)(b, U8, a1));
        _mm_storeu_si128((__m128i *)(d + oo[2] * 16), QC_DW_NAME(narrow8)(b, U8, a2));
        _mm_storeu_si128((__m128i *)(d + oo[3] * 16), QC_DW_NAME(narrow8)(b, U8, a3));
    }
}

static void QC_DW_NAME(nhwc)(const qc_dw_nhwc *b) {
    if (b->hi == 255) QC_DW_NAME(nhwc_run)(b, 1);
    else QC_DW_NAME(nhwc_run)(b, 0);
}
