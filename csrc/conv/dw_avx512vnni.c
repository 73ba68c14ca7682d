/* AVX-512 VNNI direct-convolution kernels: int16 pairs multiplied and summed by vpdpwssd, and
 * the 3x3 depthwise kernel on byte quads by vpdpbusd (dw.h, qc_dw3). */
#ifndef QC_NO_X86
#define QC_DW_NAME(name) dw_##name##__avx512vnni
/* Inline asm, as gemm's QC_DPBUSD: with the intrinsic GCC 12 copies each accumulator through
 * a spare register on every step. */
#define QC_DW_MADD(acc, x, w) __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w))
#include "conv/dw_avx512_impl.h"

/* ---- 3x3 depthwise on byte quads (dw.h, qc_dw3) ----
 *
 * Read bounds (qc_dw3_geom). Flat outputs run in steps of 64 up to Lr = L rounded up to 64,
 * so the last step starts at u0 = Lr - 64 <= L - 1 and Lr <= L + 63, L = (OH - 1) * Q + OW.
 * Stride 1: the last load of a step starts at u0 + 3 + 2P, its last byte is Lr + 2P + 2 <=
 * (OH + 1) * P + OW + 65 < (OH + 2) * P + 128. Stride 2: the last byte read in E is
 * P + 2 * (Lr - 64) + 66 + 63 = 2Lr + P + 1 <= OH * P + 2 * OW + 127 < (OH + 1) * P + 128,
 * in O 2Lr + 1 < OH * P + 128 (2 * OW < P). */

/* n bytes from src to dst, xor flip (0x80 bytes: int8 to the u8 domain) */
QC_INLINE void dw3_copy(const uint8_t *src, uint8_t *dst, size_t n, __m512i flip) {
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        _mm512_storeu_si512(dst + i, _mm512_xor_si512(_mm512_loadu_si512(src + i), flip));
    if (i < n) {
        const __mmask64 k = ((__mmask64)1 << (n - i)) - 1;
        _mm512_mask_storeu_epi8(dst + i, k,
                                _mm512_xor_si512(_mm512_maskz_loadu_epi8(k, src + i), flip));
    }
}

/* nrows rows of n bytes (src and dst row r at + r * lds, + r * ldd), xor flip: rows of up to
 * 16, 32 or 64 bytes as one load and one masked store each, with the mask made once. The load
 * is masked too unless `whole` (a constant): the flat outputs may be read 64 bytes past their
 * last row (qc_dw3_geom's slack), and there a plain load takes its bytes from the vector store
 * that wrote them, where a masked one waited for that store to reach the cache (on this EPYC,
 * 1 thread, 960 channels of 7x7 x8: 144.5 -> 138.9 us). */
QC_INLINE void dw3_rows(const uint8_t *src, size_t lds, uint8_t *dst, size_t ldd, size_t nrows,
                        size_t n, __m512i flip, const int whole) {
    if (n <= 16) {
        const __mmask16 k = (__mmask16)((1u << n) - 1);
        const __m128i f = _mm512_castsi512_si128(flip);
        for (size_t r = 0; r < nrows; r++, src += lds, dst += ldd) {
            const __m128i v = whole ? _mm_loadu_si128((const __m128i *)(const void *)src)
                                    : _mm_maskz_loadu_epi8(k, src);
            _mm_mask_storeu_epi8(dst, k, _mm_xor_si128(v, f));
        }
    } else if (n <= 32) {
        const __mmask32 k = (__mmask32)(((uint64_t)1 << n) - 1);
        const __m256i f = _mm512_castsi512_si256(flip);
        for (size_t r = 0; r < nrows; r++, src += lds, dst += ldd) {
            const __m256i v = whole ? _mm256_loadu_si256((const __m256i *)(const void *)src)
                                    : _mm256_maskz_loadu_epi8(k, src);
            _mm256_mask_storeu_epi8(dst, k, _mm256_xor_si256(v, f));
        }
    } else if (n < 64) {
        const __mmask64 k = ((__mmask64)1 << n) - 1;
        for (size_t r = 0; r < nrows; r++, src += lds, dst += ldd) {
            const __m512i v = whole ? _mm512_loadu_si512(src) : _mm512_maskz_loadu_epi8(k, src);
            _mm512_mask_storeu_epi8(dst, k, _mm512_xor_si512(v, flip));
        }
    } else {
        for (size_t r = 0; r < nrows; r++, src += lds, dst += ldd) dw3_copy(src, dst, n, flip);
    }
}

/* The region's rows that exist in x, columns [ca, cb) of them, for one channel. */
QC_INLINE void dw3_fill(const qc_dw3 *d, const qc_dw3_layout *g, const uint8_t *x, uint8_t *in,
                        size_t ca, size_t cb, __m512i flip) {
    const size_t nrows = d->s == 1 ? d->OH + 2 : 2 * d->OH + 1;
    const ptrdiff_t H = (ptrdiff_t)d->H;
    const size_t r0 = d->iy0 < 0 ? (size_t)-d->iy0 : 0;
    const size_t r1 = (ptrdiff_t)nrows + d->iy0 <= H ? nrows
                      : H > d->iy0                  ? (size_t)(H - d->iy0)
                                                    : 0;
    if (r0 >= r1) return;
    const uint8_t *src = x + (size_t)(d->iy0 + (ptrdiff_t)r0) * d->W + (size_t)(d->ix0 + (ptrdiff_t)ca);
    if (d->s == 1) {
        dw3_rows(src, d->W, in + r0 * g->P + ca, g->P, r1 - r0, cb - ca, flip, 0);
        return;
    }
    /* stride 2: region row r to plane r % 2 (E, O), row r / 2 there */
    for (size_t r = r0; r < r0 + 2 && r < r1; r++) {
        dw3_rows(src + (r - r0) * d->W, 2 * d->W, in + r % 2 * g->o_plane + r / 2 * g->P + ca,
                 g->P, (r1 - r + 1) / 2, cb - ca, flip, 0);
    }
}

/* Stride 1: 64 outputs from u0, vector k holding outputs u0 + 4i + k. */
QC_INLINE void dw3_step1(const uint8_t *in, size_t P, __m512i w0, __m512i w1, __m512i w2,
                         __m512i *a0, __m512i *a1, __m512i *a2, __m512i *a3) {
    const uint8_t *p1 = in + P, *p2 = in + 2 * P;
    QC_DPBUSD(*a0, _mm512_loadu_si512(in), w0);
    QC_DPBUSD(*a1, _mm512_loadu_si512(in + 1), w0);
    QC_DPBUSD(*a2, _mm512_loadu_si512(in + 2), w0);
    QC_DPBUSD(*a3, _mm512_loadu_si512(in + 3), w0);
    QC_DPBUSD(*a0, _mm512_loadu_si512(p1), w1);
    QC_DPBUSD(*a1, _mm512_loadu_si512(p1 + 1), w1);
    QC_DPBUSD(*a2, _mm512_loadu_si512(p1 + 2), w1);
    QC_DPBUSD(*a3, _mm512_loadu_si512(p1 + 3), w1);
    QC_DPBUSD(*a0, _mm512_loadu_si512(p2), w2);
    QC_DPBUSD(*a1, _mm512_loadu_si512(p2 + 1), w2);
    QC_DPBUSD(*a2, _mm512_loadu_si512(p2 + 2), w2);
    QC_DPBUSD(*a3, _mm512_loadu_si512(p2 + 3), w2);
}

/* Stride 2: 64 outputs from u0 (e, o: E and O at 2 * u0), vectors 0 and 1 holding outputs
 * u0 + 2i and u0 + 2i + 1, vectors 2 and 3 the same 32 further. */
QC_INLINE void dw3_step2(const uint8_t *e, const uint8_t *o, size_t P, __m512i w0, __m512i w1,
                         __m512i w2, __m512i *a0, __m512i *a1, __m512i *a2, __m512i *a3) {
    const uint8_t *e2 = e + P;
    QC_DPBUSD(*a0, _mm512_loadu_si512(e), w0);
    QC_DPBUSD(*a1, _mm512_loadu_si512(e + 2), w0);
    QC_DPBUSD(*a2, _mm512_loadu_si512(e + 64), w0);
    QC_DPBUSD(*a3, _mm512_loadu_si512(e + 66), w0);
    QC_DPBUSD(*a0, _mm512_loadu_si512(o), w1);
    QC_DPBUSD(*a1, _mm512_loadu_si512(o + 2), w1);
    QC_DPBUSD(*a2, _mm512_loadu_si512(o + 64), w1);
    QC_DPBUSD(*a3, _mm512_loadu_si512(o + 66), w1);
    QC_DPBUSD(*a0, _mm512_loadu_si512(e2), w2);
    QC_DPBUSD(*a1, _mm512_loadu_si512(e2 + 2), w2);
    QC_DPBUSD(*a2, _mm512_loadu_si512(e2 + 64), w2);
    QC_DPBUSD(*a3, _mm512_loadu_si512(e2 + 66), w2);
}

/* In place (qc_dw3f_masks): 64 outputs from u0 of the plane at x, vector k holding outputs
 * u0 + 4i + k as in dw3_step1; the bytes outside the plane are zpv's (x_zp as given), then,
 * with FLIP (int8 x), every byte xor flip (to the u8 domain). Masked-off bytes are never
 * read, so the loads reach before and past the plane safely; the addresses are formed as
 * integers. */
QC_INLINE void dw3_step0(const uint8_t *x, size_t W, const uint64_t *m, __m512i zpv,
                         const int FLIP, __m512i flip, __m512i w0, __m512i w1, __m512i w2,
                         __m512i *a0, __m512i *a1, __m512i *a2, __m512i *a3) {
    const uintptr_t b = (uintptr_t)x - W - 1;
    /* the xor only for int8 x: 12 more vector operations per step cost uint8 x 10-15% */
#define QC_LD0(ky, k) _mm512_mask_loadu_epi8(zpv, m[4 * ky + k], (const void *)(b + ky * W + k))
#define QC_LD(ky, k) (FLIP ? _mm512_xor_si512(QC_LD0(ky, k), flip) : QC_LD0(ky, k))
#define QC_ROW(ky, w)                  \
    QC_DPBUSD(*a0, QC_LD(ky, 0), w); \
    QC_DPBUSD(*a1, QC_LD(ky, 1), w); \
    QC_DPBUSD(*a2, QC_LD(ky, 2), w); \
    QC_DPBUSD(*a3, QC_LD(ky, 3), w);
    QC_ROW(0, w0) QC_ROW(1, w1) QC_ROW(2, w2)
#undef QC_ROW
#undef QC_LD
#undef QC_LD0
}

/* 4 vectors of results (in [lo, hi] or beyond: clamped here) to 64 bytes in output order. The
 * packs saturate (int32 -> int16 -> uint8 or int8: hi is the type's maximum) within 128-bit
 * lanes, so lane l of the bytes holds elements 4l..4l+3 of a0, a1, a2, a3 in turn, rearranged
 * by vpshufb (stride 2: and vpermq; see dw3_step1 / dw3_step2 for which outputs each vector
 * holds). RELU: lo is above the type's minimum, one more max. */
QC_INLINE __m512i dw3_bytes(const int U8, const int S, const int RELU, __m512i a0, __m512i a1,
                            __m512i a2, __m512i a3, __m512i lo8, __m512i shuf) {
    const __m512i p01 = _mm512_packs_epi32(a0, a1), p23 = _mm512_packs_epi32(a2, a3);
    __m512i b = U8 ? _mm512_packus_epi16(p01, p23) : _mm512_packs_epi16(p01, p23);
    if (RELU) b = U8 ? _mm512_max_epu8(b, lo8) : _mm512_max_epi8(b, lo8);
    b = _mm512_shuffle_epi8(b, shuf);
    if (S == 2) b = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), b);
    return b;
}

/* The exact epilogue of a channel whose |acc| < 2^24, multiplier s = 0 or in [2^-22, 64) and
 * |acc * s| + 256 < 2^22 (dw3_channel checks; the other channels take lean4 / rq16). Then
 * qc_gemm_requant1's float64 d = acc * s + y_zp is exact wherever it matters: acc * s is exact
 * (24 x 24 bits), and v = acc * s + y_zp is a multiple of s's last bit 2^e, e >= -45, so for
 * |v| < 2^8 it has at most 53 bits; where |v| >= 256 (fl64 is monotone, 256 representable)
 * both results clamp to the same bound, and a tie k + 1/2 that the clamp keeps apart lies in
 * [-127.5, 254.5]. So the result is rint(v) (ties to even) of the exact v, clamped. And
 * fma(float(acc), s, y_zp + 1.5 * 2^23) rounds the exact acc * s + y_zp + 1.5 * 2^23, which lies
 * in [2^23, 2^24) where float32 steps by 1, once, to nearest even: 1.5 * 2^23 + rint(v), whose
 * bits minus those of 1.5 * 2^23 (0x4B400000) are rint(v) as int32. Three operations per 16
 * lanes, no test; the packs clamp. That step is qc_rint16_magic_avx512 (epilogue_avx512.h),
 * shared with the NCHW conv kernel. */

/* The vpshufb of dw3_bytes, per 128-bit lane: byte k from a_(k % 4) element k / 4 (stride 1
 * and in place, S <= 1; stride 2: see dw3_bytes). */
QC_INLINE __m512i dw3_order(const int S) {
    static const int8_t sh1[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
    static const int8_t sh2[16] = {0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15};
    return _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(S <= 1 ? sh1 : sh2)));
}

/* The fields of a qc_dw_tile that lean4's float64 fallback reads (y_zp, lo, hi). */
QC_INLINE qc_dw_tile dw3_bounds(const qc_dw3 *d) {
    qc_dw_tile tv;
    memset(&tv, 0, sizeof tv);
    tv.y_zp = d->y_zp, tv.lo = d->lo, tv.hi = d->hi;
    return tv;
}

/* One channel's flat outputs into out (64-byte aligned); S <= 0: in place (dw3f), in and out
 * the channel's planes of x and y, zpv and flip for dw3_step0 (S == -1: x is int8). */
QC_INLINE void dw3_channel(const qc_dw3 *d, const qc_dw3_layout *g, const int U8, const int S,
                           const uint8_t *in, uint8_t *out, size_t c, int32_t xzp,
                           __m512i shuf, const qc_dw_tile *tv, __m512i zpv, __m512i flip) {
    const int32_t b0 = d->bias ? d->bias[c] : 0;
    const int32_t b = (int32_t)((uint32_t)b0 - (uint32_t)xzp * (uint32_t)d->wsum[c]);
    const __m512i bias = _mm512_set1_epi32(b);
    const __m512i w0 = _mm512_set1_epi32(d->wq[3 * c]);
    const __m512i w1 = _mm512_set1_epi32(d->wq[3 * c + 1]);
    const __m512i w2 = _mm512_set1_epi32(d->wq[3 * c + 2]);
    /* |acc| <= |bias| + 9 * 255 * 128 for the true sum: below 2^24, the float32 conversion is
     * exact */
    const int64_t babs = b0 < 0 ? -(int64_t)b0 : (int64_t)b0;
    const int small = 9 * 255 * 128 + babs < ((int64_t)1 << 24);
    const float sc = d->scale[c];
    const int lean = small && sc >= 0.0f && sc < 64.0f;
    const int exact = lean && (sc == 0.0f || sc >= 0x1p-22f) &&
                      (double)(9 * 255 * 128 + babs) * sc + 256.0 < 0x1p22;
    const __m512 magic = _mm512_set1_ps((float)(d->y_zp + 12582912)); /* y_zp + 1.5 * 2^23 */
    const __m512i zbits = _mm512_set1_epi32(0x4B400000 - d->y_zp);
    const __m512 s = _mm512_set1_ps(sc), zp = _mm512_set1_ps((float)d->y_zp);
    const __m512 lo = _mm512_set1_ps((float)d->lo), hi = _mm512_set1_ps((float)d->hi);
    const __m512i lo8 = _mm512_set1_epi8((char)d->lo);
    const int relu = d->lo > (U8 ? 0 : -128); /* a clamp above the packs' saturation */
    const size_t L = S > 0 ? g->L : d->H * d->W;
    for (size_t u0 = 0; u0 < L; u0 += 64) {
        __m512i a0 = bias, a1 = bias, a2 = bias, a3 = bias;
        if (S <= 0) {
            dw3_step0(in + u0, d->W, d->masks + 12 * (u0 / 64), zpv, S < 0, flip, w0, w1, w2,
                      &a0, &a1, &a2, &a3);
        } else if (S == 1) {
            dw3_step1(in + u0, g->P, w0, w1, w2, &a0, &a1, &a2, &a3);
        } else {
            dw3_step2(in + 2 * u0, in + g->o_plane + 2 * u0, g->P, w0, w1, w2, &a0, &a1, &a2,
                      &a3);
        }
        if (d->rq32 && exact) { /* dw3_bytes saturates and raises to lo */
            a0 = qc_requant16_f32_magic_avx512(a0, s, zbits);
            a1 = qc_requant16_f32_magic_avx512(a1, s, zbits);
            a2 = qc_requant16_f32_magic_avx512(a2, s, zbits);
            a3 = qc_requant16_f32_magic_avx512(a3, s, zbits);
        } else if (d->rq32) {
            qc_requant64_f32_sat_avx512(s, d->y_zp, &a0, &a1, &a2, &a3);
        } else if (exact) {
            a0 = qc_rint16_magic_avx512(a0, s, magic);
            a1 = qc_rint16_magic_avx512(a1, s, magic);
            a2 = qc_rint16_magic_avx512(a2, s, magic);
            a3 = qc_rint16_magic_avx512(a3, s, magic);
        } else if (lean) {
            dw_lean4__avx512vnni(tv, s, zp, &a0, &a1, &a2, &a3);
        } else {
            const int32_t yz = d->y_zp, il = d->lo, ih = d->hi;
            a0 = dw_rq16__avx512vnni(a0, s, zp, lo, hi, small, yz, il, ih);
            a1 = dw_rq16__avx512vnni(a1, s, zp, lo, hi, small, yz, il, ih);
            a2 = dw_rq16__avx512vnni(a2, s, zp, lo, hi, small, yz, il, ih);
            a3 = dw_rq16__avx512vnni(a3, s, zp, lo, hi, small, yz, il, ih);
        }
        const __m512i yb = relu ? dw3_bytes(U8, S, 1, a0, a1, a2, a3, lo8, shuf)
                                : dw3_bytes(U8, S, 0, a0, a1, a2, a3, lo8, shuf);
        if (S > 0) _mm512_store_si512(out + u0, yb);
        else _mm512_mask_storeu_epi8(out + u0, L - u0 >= 64 ? ~(__mmask64)0
                                                            : ((__mmask64)1 << (L - u0)) - 1, yb);
    }
}

/* Channel c's flat outputs (out) to its rows in y. */
QC_INLINE void dw3_unflatten(const qc_dw3 *d, const qc_dw3_layout *g, const uint8_t *out,
                             size_t c) {
    uint8_t *yc = d->y + c * d->ycs;
    dw3_rows(out, g->Q, yc, d->ldy, d->OH, d->OW, _mm512_setzero_si512(), 1);
}

/* Channels in a pipeline of three: fill c + 1's planes, compute c, copy c - 1's outputs out,
 * with two sets of buffers. */
QC_INLINE void dw3_run(const qc_dw3 *d, const int U8, const int S) {
    qc_dw3_layout g;
    qc_dw3_geom(d->OH, d->OW, (size_t)S, &g);
    uint8_t *in[2] = {d->buf, d->buf + g.in_stride};
    uint8_t *out[2] = {d->buf + 2 * g.in_stride, d->buf + 2 * g.in_stride + g.out_bytes};
    const int32_t xzp = d->sx ? d->xzp + 128 : d->xzp; /* the u8 domain */
    const __m512i flip = _mm512_set1_epi8(d->sx ? (char)0x80 : 0);
    /* padding: written once, the channels only overwrite the region's part inside x */
    memset(d->buf, (uint8_t)xzp, 2 * g.in_stride);
    const size_t ncols = S == 1 ? d->OW + 2 : 2 * d->OW + 1;
    const ptrdiff_t W = (ptrdiff_t)d->W;
    const size_t ca = d->ix0 < 0 ? QC_MIN((size_t)-d->ix0, ncols) : 0;
    const size_t cb = (ptrdiff_t)ncols + d->ix0 <= W ? ncols
                      : W > d->ix0 + (ptrdiff_t)ca  ? (size_t)(W - d->ix0)
                                                    : ca;
    const __m512i shuf = dw3_order(S), none = _mm512_setzero_si512();
    const qc_dw_tile tv = dw3_bounds(d);
    if (ca < cb && d->nch) dw3_fill(d, &g, d->x, in[0], ca, cb, flip);
    for (size_t c = 0; c < d->nch; c++) {
        if (ca < cb && c + 1 < d->nch)
            dw3_fill(d, &g, d->x + (c + 1) * d->xcs, in[(c + 1) % 2], ca, cb, flip);
        dw3_channel(d, &g, U8, S, in[c % 2], out[c % 2], c, xzp, shuf, &tv, none, none);
        if (c) dw3_unflatten(d, &g, out[(c - 1) % 2], c - 1);
    }
    if (d->nch) dw3_unflatten(d, &g, out[(d->nch - 1) % 2], d->nch - 1);
}

/* In place (dw3f): every channel straight from its plane of x into its plane of y. */
QC_INLINE void dw3f_run(const qc_dw3 *d, const int U8, const int FLIP) {
    qc_dw3_layout g; /* unused in place */
    memset(&g, 0, sizeof g);
    const int32_t xzp = d->sx ? d->xzp + 128 : d->xzp; /* the u8 domain */
    const __m512i flip = _mm512_set1_epi8((char)0x80); /* FLIP: int8 x */
    const __m512i zpv = _mm512_set1_epi8((char)(uint8_t)d->xzp), shuf = dw3_order(0);
    const qc_dw_tile tv = dw3_bounds(d);
    for (size_t c = 0; c < d->nch; c++)
        dw3_channel(d, &g, U8, FLIP ? -1 : 0, d->x + c * d->xcs, d->y + c * d->ycs, c, xzp, shuf,
                    &tv, zpv, flip);
}

static void dw3f__avx512vnni(const qc_dw3 *d) {
    if (d->hi == 255) {
        if (d->sx) dw3f_run(d, 1, 1);
        else dw3f_run(d, 1, 0);
    } else {
        if (d->sx) dw3f_run(d, 0, 1);
        else dw3f_run(d, 0, 0);
    }
}

static void dw3__avx512vnni(const qc_dw3 *d) {
    if (d->hi == 255) {
        if (d->s == 1) dw3_run(d, 1, 1);
        else dw3_run(d, 1, 2);
    } else {
        if (d->s == 1) dw3_run(d, 0, 1);
        else dw3_run(d, 0, 2);
    }
}

const qc_dw_kernels qc_dw_kernels_avx512vnni = {"conv_dw_pairs_4x16_quads3x3__avx512vnni",
                                                dw_rows__avx512vnni, dw_rows2__avx512vnni, dw_pairs__avx512vnni,
                                                dw_tile__avx512vnni, dw_nhwc__avx512vnni,
                                                dw3__avx512vnni, dw3f__avx512vnni};
#endif
