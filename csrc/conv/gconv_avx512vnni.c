/* AVX-512 VNNI kernel of the small-group convolution (gconv.h): 4 output channels x 64 flat
 * outputs per step (16 accumulators), one vpdpbusd per channel, tap, quad and vector, the
 * inputs loaded once per tap and quad for the 4 channels and the weight dword broadcast. */
#include "conv/gconv.h"

#include <string.h>

#ifndef QC_NO_X86
#include "gemm/epilogue_avx512.h"

#define G_DECL(r)                                                                       \
    __m512i a##r##0 = _mm512_set1_epi32(MR > r ? t->cterm[m0 + r] : 0), a##r##1 = a##r##0, \
            a##r##2 = a##r##0, a##r##3 = a##r##0;
#define G_STEP(r)                                                                       \
    if (MR > r) {                                                                       \
        const __m512i wb = _mm512_set1_epi32(qc_load4(w + r * K + 4 * jq));             \
        QC_DPBUSD(a##r##0, x0, wb);                                                     \
        QC_DPBUSD(a##r##1, x1, wb);                                                     \
        QC_DPBUSD(a##r##2, x2, wb);                                                     \
        QC_DPBUSD(a##r##3, x3, wb);                                                     \
    }
#define G_STORE(r)                                                                      \
    if (MR > r) {                                                                       \
        if (t->out == QC_GEMM_OUT_S32) {                                                \
            store16_s32(t, m0 + r, pos[0], pos[1], a##r##0);                            \
            store16_s32(t, m0 + r, pos[2], pos[3], a##r##1);                            \
            store16_s32(t, m0 + r, pos[4], pos[5], a##r##2);                            \
            store16_s32(t, m0 + r, pos[6], pos[7], a##r##3);                            \
        } else {                                                                        \
            const __m512 s = _mm512_set1_ps(t->scale[m0 + r]);                          \
            store64_u8s8(t, m0 + r, pos[0], pos[1], requant16(t, s, a##r##0),           \
                         requant16(t, s, a##r##1), requant16(t, s, a##r##2),            \
                         requant16(t, s, a##r##3));                                     \
        }                                                                               \
    }

/* int32 output (ConvInteger): the flat outputs p .. p + 15 of channel m, p = oy * Wp + ox
 * (ox < Wp): each run of lanes within one output row, up to its OW valid columns, moved down
 * to lane 0 and stored masked. */
QC_INLINE void store16_s32(const qc_gconv_tile *t, size_t m, size_t oy, size_t ox, __m512i v) {
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (unsigned l = 0; l < 16 && oy < t->OH;) {
        const unsigned run = (unsigned)QC_MIN((size_t)(16 - l), t->Wp - ox);
        if (ox < t->OW) {
            const unsigned n = (unsigned)QC_MIN((size_t)run, t->OW - ox);
            const __m512i idx = _mm512_add_epi32(iota, _mm512_set1_epi32((int)l));
            _mm512_mask_storeu_epi32((int32_t *)t->y + m * t->ldy + oy * t->OW + ox,
                                     (__mmask16)((1u << n) - 1), _mm512_permutexvar_epi32(idx, v));
        }
        l += run;
        ox += run;
        if (ox == t->Wp) {
            ox = 0;
            oy++;
        }
    }
}

/* The requantized C of 16 flat outputs as int32: in [lo, hi] (t->rq32: ONNX Runtime's
 * requantization; else the float64 reference), or (the one-rounding epilogue,
 * whose clamp at hi is left to store64_u8s8's saturating packs) at least lo, and above hi
 * only where the result is hi. With t->fma every |C| < 2^24 (the driver's bound), so that
 * epilogue needs no test. */
QC_INLINE __m512i requant16(const qc_gconv_tile *t, __m512 s, __m512i v) {
    if (t->rq32) return qc_requant16_f32_avx512(v, s, t->y_zp, t->lo, t->hi);
    if (!t->fma) return qc_requant16_avx512(v, s, t->y_zp, t->lo, t->hi, 0xFFFF);
    /* qc_requant16_fma_avx512 before its narrowing */
    const __m512 r = _mm512_fmadd_round_ps(_mm512_cvtepi32_ps(v), s,
                                           _mm512_set1_ps((float)(t->y_zp + 12582912)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 c = _mm512_max_ps(r, _mm512_set1_ps((float)(t->lo + 12582912)));
    return _mm512_sub_epi32(_mm512_castps_si512(c), _mm512_set1_epi32(0x4B400000));
}

/* Bytes out: the 64 flat outputs p .. p + 63 of channel m (four vectors v0..v3 of requantized
 * int32, each >= lo) narrowed in order into one vector: the signed saturating packs per
 * 128-bit lane leave lane i holding bytes 4i..4i+3 of v0, v1, v2, v3, and one dword
 * permutation (a 4 x 4 transpose) puts them in order. Saturation gives min(., hi) for hi the
 * type's largest value (as in qc_requant16_fma_avx512: values above hi are at least 2^10
 * there, or beyond int16 and saturated to 32767 first). Then each run within one output row
 * is stored masked, from p = oy * Wp + ox (ox < Wp). */
QC_INLINE void store64_u8s8(const qc_gconv_tile *t, size_t m, size_t oy, size_t ox, __m512i v0,
                            __m512i v1, __m512i v2, __m512i v3) {
    const __m512i w01 = _mm512_packs_epi32(v0, v1), w23 = _mm512_packs_epi32(v2, v3);
    const __m512i b = t->out == QC_GEMM_OUT_S8 ? _mm512_packs_epi16(w01, w23)
                                               : _mm512_packus_epi16(w01, w23);
    const __m512i q = _mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), b);
    uint8_t lanes[64];
    int spilled = 0;
    for (unsigned l = 0; l < 64 && oy < t->OH;) {
        const unsigned run = (unsigned)QC_MIN((size_t)(64 - l), t->Wp - ox);
        if (ox < t->OW) {
            /* lanes l .. l + n - 1 go to columns ox .. ox + n - 1: a masked store from l
             * bytes before them (only the mask's bytes are written), or byte by byte where
             * that would start before the output */
            const unsigned n = (unsigned)QC_MIN((size_t)run, t->OW - ox);
            const size_t at = m * t->ldy + oy * t->OW + ox;
            if (at >= l) {
                const __mmask64 k = (n == 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1)) << l;
                _mm512_mask_storeu_epi8((uint8_t *)t->y + (at - l), k, q);
            } else {
                if (!spilled) _mm512_storeu_si512(lanes, q);
                spilled = 1;
                memcpy((uint8_t *)t->y + at, lanes + l, n);
            }
        }
        l += run;
        ox += run;
        if (ox == t->Wp) {
            ox = 0;
            oy++;
        }
    }
}

/* Channels m0 .. m0 + MR - 1, outputs p0 .. p0 + 63 (MR a constant at each call site); pos
 * holds (oy, ox) of p0, p0 + 16, p0 + 32 and p0 + 48. */
QC_INLINE void block(const qc_gconv_tile *t, size_t m0, size_t p0, const size_t *pos,
                     const int MR) {
    const size_t cq = t->cq, K = t->ntaps * cq * 4;
    const int8_t *w = t->w + m0 * K;
    G_DECL(0) G_DECL(1) G_DECL(2) G_DECL(3)
    for (size_t j = 0; j < t->ntaps; j++) {
        for (size_t q = 0; q < cq; q++) {
            const size_t jq = j * cq + q;
            const int32_t *x = (const int32_t *)(const void *)t->x4 + q * t->plane + t->off[j] + p0;
            const __m512i x0 = _mm512_loadu_si512(x), x1 = _mm512_loadu_si512(x + 16);
            const __m512i x2 = _mm512_loadu_si512(x + 32), x3 = _mm512_loadu_si512(x + 48);
            G_STEP(0) G_STEP(1) G_STEP(2) G_STEP(3)
        }
    }
    G_STORE(0) G_STORE(1) G_STORE(2) G_STORE(3)
}

static void run_avx512vnni(const qc_gconv_tile *t) {
    for (size_t m0 = 0; m0 < t->nch; m0 += 4) {
        const size_t mr = t->nch - m0 < 4 ? t->nch - m0 : 4;
        size_t oy = 0, ox = 0; /* of p0, advanced without divisions */
        for (size_t p0 = 0; p0 < t->L; p0 += 64) {
            size_t pos[8];
            for (int v = 0; v < 4; v++) {
                pos[2 * v] = oy;
                pos[2 * v + 1] = ox;
                ox += 16;
                while (ox >= t->Wp) {
                    ox -= t->Wp;
                    oy++;
                }
            }
            switch (mr) {
            case 1: block(t, m0, p0, pos, 1); break;
            case 2: block(t, m0, p0, pos, 2); break;
            case 3: block(t, m0, p0, pos, 3); break;
            default: block(t, m0, p0, pos, 4); break;
            }
        }
    }
}

/* 64 pixels per step: byte then word unpacks interleave the 4 rows within each 128-bit lane
 * (u0..u3 hold pixels 16L + 4k .. 16L + 4k + 3 of lane L), and a 4 x 4 transpose of the
 * lanes puts 16 pixels' quads in each output vector; the last n % 64 pixels through masked
 * loads and stores. */
static void quads_avx512vnni(const uint8_t *const rows[4], uint8_t flip, size_t n, uint8_t *dst) {
    const __m512i fl = _mm512_set1_epi8((char)flip);
    for (size_t j = 0; j < n; j += 64) {
        const size_t left = n - j;
        const __mmask64 km = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
        __m512i r[4];
        for (int i = 0; i < 4; i++)
            r[i] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(km, rows[i] + j), fl);
        const __m512i t0 = _mm512_unpacklo_epi8(r[0], r[1]), t1 = _mm512_unpackhi_epi8(r[0], r[1]);
        const __m512i t2 = _mm512_unpacklo_epi8(r[2], r[3]), t3 = _mm512_unpackhi_epi8(r[2], r[3]);
        const __m512i u0 = _mm512_unpacklo_epi16(t0, t2), u1 = _mm512_unpackhi_epi16(t0, t2);
        const __m512i u2 = _mm512_unpacklo_epi16(t1, t3), u3 = _mm512_unpackhi_epi16(t1, t3);
        const __m512i a = _mm512_shuffle_i32x4(u0, u1, 0x44);
        const __m512i b = _mm512_shuffle_i32x4(u2, u3, 0x44);
        const __m512i c = _mm512_shuffle_i32x4(u0, u1, 0xEE);
        const __m512i d = _mm512_shuffle_i32x4(u2, u3, 0xEE);
        const __m512i o[4] = {_mm512_shuffle_i32x4(a, b, 0x88), _mm512_shuffle_i32x4(a, b, 0xDD),
                              _mm512_shuffle_i32x4(c, d, 0x88), _mm512_shuffle_i32x4(c, d, 0xDD)};
        for (size_t k = 0; k < 4; k++) {
            if (left >= 16 * (k + 1)) {
                _mm512_storeu_si512(dst + 4 * (j + 16 * k), o[k]);
            } else if (left > 16 * k) {
                const size_t px = left - 16 * k;
                _mm512_mask_storeu_epi32(dst + 4 * (j + 16 * k), (__mmask16)((1u << px) - 1), o[k]);
            }
        }
    }
}

const qc_gconv_kernels qc_gconv_kernels_avx512vnni = {"conv_gconv_4x64c4__avx512vnni",
                                                      run_avx512vnni, quads_avx512vnni};
#endif
