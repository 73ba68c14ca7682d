/* Quantized operator kernels built for AVX2: qops_impl.h plus hand-written pooling, add, mul
 * and requantizing copies. */
#include <immintrin.h>

#include "conv/qops.h"

#define QC_QOPS_NAME(name) qc_qops_##name##__avx2
#include "conv/qops_impl.h"

/* ---- element-wise: 16 elements per step, scalar tails (the same formula element by element) */

QC_INLINE __m256i load8_i32(const void *p, int is_signed) {
    const __m128i v = _mm_loadl_epi64((const __m128i *)p);
    return is_signed ? _mm256_cvtepi8_epi32(v) : _mm256_cvtepu8_epi32(v);
}

/* clamp to [lo, hi], round to nearest even, add the zero point; two halves narrowed to 16
 * bytes (in range already, so the saturating packs do not change values) */
QC_INLINE __m256i round8(__m256 v, __m256 lo, __m256 hi, __m256i yzp) {
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm256_add_epi32(_mm256_cvttps_epi32(v), yzp);
}

QC_INLINE void store16(void *y, int sy, __m256i r0, __m256i r1) {
    __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(r0, r1), 0xD8);
    __m128i lo = _mm256_castsi256_si128(w), hi = _mm256_extracti128_si256(w, 1);
    _mm_storeu_si128((__m128i *)y, sy ? _mm_packs_epi16(lo, hi) : _mm_packus_epi16(lo, hi));
}

/* 16 outputs per step of the add in either arithmetic (qops.h); returns where it stopped. With
 * ORT no zero point is subtracted or added after the rounding (`fixed` holds them) and the
 * bounds are the ones with the zero point; else the definition's products and sum of q - zp. */
QC_INLINE size_t add16_avx2(const int8_t *pa, int sa, const int8_t *pb, int sb, int8_t *py,
                            int sy, size_t n, const qc_add_params *p, const int ORT) {
    const __m256i azp = _mm256_set1_epi32(ORT ? 0 : p->azp);
    const __m256i bzp = _mm256_set1_epi32(ORT ? 0 : p->bzp);
    const __m256i yzp = _mm256_set1_epi32(ORT ? 0 : p->yzp);
    const __m256 ma = _mm256_set1_ps(p->ma), mb = _mm256_set1_ps(p->mb);
    const __m256 fx = _mm256_set1_ps(p->fixed);
    const float shift = ORT ? (float)p->yzp : 0.0f;
    const __m256 lo = _mm256_set1_ps(p->lo + shift), hi = _mm256_set1_ps(p->hi + shift);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i r[2];
        for (int h = 0; h < 2; h++) {
            __m256 va = _mm256_cvtepi32_ps(_mm256_sub_epi32(load8_i32(pa + i + 8 * h, sa), azp));
            __m256 vb = _mm256_cvtepi32_ps(_mm256_sub_epi32(load8_i32(pb + i + 8 * h, sb), bzp));
            const __m256 v = ORT ? _mm256_fmadd_ps(va, ma, _mm256_fmadd_ps(vb, mb, fx))
                                 : _mm256_add_ps(_mm256_mul_ps(va, ma), _mm256_mul_ps(vb, mb));
            r[h] = round8(v, lo, hi, yzp);
        }
        store16(py + i, sy, r[0], r[1]);
    }
    return i;
}

static void add_avx2(const void *a, int sa, const void *b, int sb, void *y, int sy, size_t n,
                     const qc_add_params *p) {
    const int8_t *pa = a, *pb = b;
    int8_t *py = y;
    const size_t i = p->ort ? add16_avx2(pa, sa, pb, sb, py, sy, n, p, 1)
                            : add16_avx2(pa, sa, pb, sb, py, sy, n, p, 0);
    if (i < n) {
        QC_QOPS_NAME(add)(pa + i, sa, pb + i, sb, py + i, sy, n - i, p);
    }
}

/* 16 outputs per step of the multiply (qops.h: qc_mul_params), scalar tails. The differences
 * q - zp convert exactly; with ORT their product is exact too (|.| <= 65025), then scaled and
 * the zero point added, rounded (out of int32 range: cvttps's INT32_MIN, which the clamp in
 * int32 takes to lo, as MLAS's conversion and saturating packs do); else the definition's
 * dequantized product and quotient, clamped, rounded. */
QC_INLINE size_t mul16_avx2(const int8_t *pa, int sa, const int8_t *pb, int sb, int8_t *py,
                            int sy, size_t n, const qc_mul_params *p, const int ORT) {
    const __m256i azp = _mm256_set1_epi32(p->azp), bzp = _mm256_set1_epi32(p->bzp);
    const __m256 ratio = _mm256_set1_ps(p->ratio), fz = _mm256_set1_ps((float)p->yzp);
    const __m256 ms = _mm256_set1_ps(p->sa), mt = _mm256_set1_ps(p->sb);
    const __m256 sy_ = _mm256_set1_ps(p->sy);
    const __m256 zlo = _mm256_set1_ps(p->lo - (float)p->yzp);
    const __m256 zhi = _mm256_set1_ps(p->hi - (float)p->yzp);
    const __m256i qlo = _mm256_set1_epi32((int32_t)p->lo), qhi = _mm256_set1_epi32((int32_t)p->hi);
    const __m256i yzp = _mm256_set1_epi32(p->yzp);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i r[2];
        for (int h = 0; h < 2; h++) {
            __m256 va = _mm256_cvtepi32_ps(_mm256_sub_epi32(load8_i32(pa + i + 8 * h, sa), azp));
            __m256 vb = _mm256_cvtepi32_ps(_mm256_sub_epi32(load8_i32(pb + i + 8 * h, sb), bzp));
            if (ORT) {
                __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(va, vb), ratio), fz);
                v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                r[h] = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvttps_epi32(v), qlo), qhi);
            } else {
                const __m256 v = _mm256_mul_ps(_mm256_mul_ps(va, ms), _mm256_mul_ps(vb, mt));
                r[h] = round8(_mm256_div_ps(v, sy_), zlo, zhi, yzp);
            }
        }
        store16(py + i, sy, r[0], r[1]);
    }
    return i;
}

static void mul_avx2(const void *a, int sa, const void *b, int sb, void *y, int sy, size_t n,
                     const qc_mul_params *p) {
    const int8_t *pa = a, *pb = b;
    int8_t *py = y;
    const size_t i = p->ort ? mul16_avx2(pa, sa, pb, sb, py, sy, n, p, 1)
                            : mul16_avx2(pa, sa, pb, sb, py, sy, n, p, 0);
    if (i < n) QC_QOPS_NAME(mul)(pa + i, sa, pb + i, sb, py + i, sy, n - i, p);
}

/* Table lookup, 32 bytes per step (scalar tail): the table as 16 rows of 16 bytes in both
 * 128-bit lanes, every byte's low nibble looked up in each row (vpshufb), then a tree of
 * blends on the high nibble's bits 4 to 7 (each shifted to bit 7, which vpblendvb reads). */
static void lut8_avx2(const uint8_t *x, uint8_t *y, size_t n, const uint8_t *table) {
    __m256i row[16];
    for (int k = 0; k < 16; k++)
        row[k] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(table + 16 * k)));
    const __m256i nib = _mm256_set1_epi8(0x0F);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(x + i));
        const __m256i lo = _mm256_and_si256(v, nib);
        __m256i r[8];
        __m256i bit = _mm256_slli_epi16(v, 3);
        for (int j = 0; j < 8; j++)
            r[j] = _mm256_blendv_epi8(_mm256_shuffle_epi8(row[2 * j], lo),
                                      _mm256_shuffle_epi8(row[2 * j + 1], lo), bit);
        for (int level = 1, m = 8; level < 4; level++, m /= 2) {
            bit = _mm256_slli_epi16(v, 3 - level);
            for (int j = 0; j < m / 2; j++) r[j] = _mm256_blendv_epi8(r[2 * j], r[2 * j + 1], bit);
        }
        _mm256_storeu_si256((__m256i *)(y + i), r[0]);
    }
    if (i < n) QC_QOPS_NAME(lut8)(x + i, y + i, n - i, table);
}

static void requant_avx2(const void *x, int sx, void *y, int sy, size_t n, const qc_rq_params *p) {
    const __m256i zp = _mm256_set1_epi32(p->zp), yzp = _mm256_set1_epi32(p->yzp);
    const __m256 m = _mm256_set1_ps(p->m), lo = _mm256_set1_ps(p->lo), hi = _mm256_set1_ps(p->hi);
    const int8_t *px = x;
    int8_t *py = y;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i r[2];
        for (int h = 0; h < 2; h++) {
            __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(load8_i32(px + i + 8 * h, sx), zp));
            r[h] = round8(_mm256_mul_ps(v, m), lo, hi, yzp);
        }
        store16(py + i, sy, r[0], r[1]);
    }
    if (i < n) QC_QOPS_NAME(requant)(px + i, sx, py + i, sy, n - i, p);
}

/* ---- max pooling: vertical maxima of all output rows first (rows of pw in ws, so the
 * horizontal loads never hit bytes just stored), then the horizontal max; 32 bytes per step,
 * the last step moved back to end at the row's end (recomputing a few equal values), scalar
 * only for rows under 32; stride 2 through 16-bit lanes (even/odd bytes of words at
 * ws + 2i + (kx & ~1),
 * which may read one byte past a row: ws has slack) ---- */

#define QC_DEF_MAXPOOL256(T, TMIN, MAX8, EVEN16, ODD16, MAX16, PACK16, NAME)                  \
    static void NAME(const T *x, T *y, const qc_win2d *g, T *ws) {                            \
        const size_t W = g->W, pw = (size_t)g->pl + W + (size_t)g->pr, OW = g->OW;             \
        const int kw = g->kw;                                                                 \
        for (size_t oy = 0; oy < g->OH; oy++) {                                               \
            T *wrow = ws + oy * pw;                                                           \
            for (size_t i = 0; i < (size_t)g->pl; i++) wrow[i] = TMIN;                        \
            for (size_t i = (size_t)g->pl + W; i < pw; i++) wrow[i] = TMIN;                   \
            T *row = wrow + g->pl;                                                            \
            ptrdiff_t y0 = (ptrdiff_t)oy * g->sh - g->pt, y1 = y0 + g->kh;                    \
            if (y0 < 0) y0 = 0;                                                               \
            if (y1 > (ptrdiff_t)g->H) y1 = (ptrdiff_t)g->H;                                   \
            size_t i = 0;                                                                     \
            if (W >= 32) {                                                                    \
                /* the last step overlaps the previous one: same values written again */     \
                for (size_t s0 = 0; s0 < W; s0 += 32) {                                       \
                    const size_t j = s0 + 32 <= W ? s0 : W - 32;                              \
                    __m256i v = _mm256_loadu_si256((const __m256i *)(x + (size_t)y0 * W + j)); \
                    for (ptrdiff_t iy = y0 + 1; iy < y1; iy++) {                              \
                        const T *src = x + (size_t)iy * W + j;                                \
                        v = MAX8(v, _mm256_loadu_si256((const __m256i *)src));                \
                    }                                                                         \
                    _mm256_storeu_si256((__m256i *)(row + j), v);                             \
                }                                                                             \
                i = W;                                                                        \
            }                                                                                 \
            for (; i < W; i++) {                                                              \
                T m = x[(size_t)y0 * W + i];                                                  \
                for (ptrdiff_t iy = y0 + 1; iy < y1; iy++) {                                  \
                    T v = x[(size_t)iy * W + i];                                              \
                    m = v > m ? v : m;                                                        \
                }                                                                             \
                row[i] = m;                                                                   \
            }                                                                                 \
        }                                                                                     \
        const size_t sw = (size_t)g->sw;                                                      \
        for (size_t oy = 0; oy < g->OH; oy++) {                                               \
            const T *hrow = ws + oy * pw;                                                     \
            T *out = y + oy * OW;                                                             \
            size_t i = 0;                                                                     \
            if (sw == 1 && OW >= 32) {                                                        \
                for (size_t s0 = 0; s0 < OW; s0 += 32) {                                      \
                    const size_t j = s0 + 32 <= OW ? s0 : OW - 32;                            \
                    __m256i v = _mm256_loadu_si256((const __m256i *)(hrow + j));              \
                    for (int kx = 1; kx < kw; kx++)                                           \
                        v = MAX8(v, _mm256_loadu_si256((const __m256i *)(hrow + j + kx)));    \
                    _mm256_storeu_si256((__m256i *)(out + j), v);                             \
                }                                                                             \
                i = OW;                                                                       \
            } else if (sw == 2 && OW >= 32) {                                                 \
                for (size_t s0 = 0; s0 < OW; s0 += 32) {                                      \
                    const size_t j = s0 + 32 <= OW ? s0 : OW - 32;                            \
                    __m256i r[2];                                                             \
                    for (int h = 0; h < 2; h++) {                                             \
                        const T *s = hrow + 2 * (j + 16 * (size_t)h);                         \
                        __m256i v = EVEN16(_mm256_loadu_si256((const __m256i *)s));           \
                        for (int kx = 1; kx < kw; kx++) {                                     \
                            __m256i wv = _mm256_loadu_si256((const __m256i *)(s + (kx & ~1))); \
                            v = MAX16(v, (kx & 1) ? ODD16(wv) : EVEN16(wv));                  \
                        }                                                                     \
                        r[h] = v;                                                             \
                    }                                                                         \
                    _mm256_storeu_si256((__m256i *)(out + j),                                 \
                                        _mm256_permute4x64_epi64(PACK16(r[0], r[1]), 0xD8));  \
                }                                                                             \
                i = OW;                                                                       \
            }                                                                                 \
            QC_MAXPOOL_ROW(T, out, hrow, i, OW, sw, kw);                                      \
        }                                                                                     \
    }

#define QC_EVEN_U16(v) _mm256_and_si256((v), _mm256_set1_epi16(0xFF))
#define QC_ODD_U16(v) _mm256_srli_epi16((v), 8)
#define QC_EVEN_S16(v) _mm256_srai_epi16(_mm256_slli_epi16((v), 8), 8)
#define QC_ODD_S16(v) _mm256_srai_epi16((v), 8)
QC_DEF_MAXPOOL256(uint8_t, 0, _mm256_max_epu8, QC_EVEN_U16, QC_ODD_U16, _mm256_max_epu16,
                  _mm256_packus_epi16, maxpool_u8_avx2)
QC_DEF_MAXPOOL256(int8_t, INT8_MIN, _mm256_max_epi8, QC_EVEN_S16, QC_ODD_S16, _mm256_max_epi16,
                  _mm256_packs_epi16, maxpool_s8_avx2)

/* ---- average pooling, as the AVX-512 kernel (qops_avx512.c): raw 16-bit vertical sums for all
 * output rows first (kh <= 256), per-column multipliers float32(m / cnt) and offsets
 * nrow * (real columns) * xzp cached per number of real rows, then 8 outputs per step. Steps
 * cover whole rows by moving the last one back (recomputing equal values); rows shorter than
 * a step use the scalar formula. The stride-2 step reads one 16-bit element past its row,
 * inside ws. ws: OH * pw int16, then 2 * (OW + 8) 32-bit values. ---- */

/* ---- average pooling with stride 2 and kw <= 4, as the AVX-512 kernel (qops_avx512.c,
 * avgpool_s2_avx512) with 32-byte loads: half h of a step (outputs 16h .. 16h + 15) loads from
 * column c = 32h - pl (and c + c1 for a second tap). AVX2 has no masked byte loads: a load
 * before the row (the left padding) takes the row's first 32 bytes moved up in the register,
 * one reaching past its end copies the row's bytes into a zeroed buffer, so padding adds 0.
 * Halves with all loads inside the row have whole windows (constant multiplier and offset).
 * The last step's outputs past OW go through a buffer too.
 * ws, per step of 32 outputs: the table (2 * 32 32-bit values), the shared row's sums (32
 * 16-bit values). ---- */

/* Output offset within a step of 32 of lane j of quarter q: half q / 2 holds outputs
 * 16 * (q / 2) + [0, 16) as 16-bit lanes, unpacklo (q even) takes words 0-3 of each 128-bit
 * lane l, unpackhi words 4-7: outputs 8l + [0, 4) and 8l + [4, 8). */
QC_INLINE size_t s2_lane(int q, int j) {
    return (size_t)(16 * (q >> 1) + 8 * (j >> 2) + 4 * (q & 1) + (j & 3));
}

/* mc and the offsets for every step in the quarter order, for windows of nrow real rows
 * (lanes past OW get a count of at least 1 and are never stored) */
static void s2_table(const qc_win2d *g, const qc_avgpool_params *p, int is_signed, int32_t nrow,
                     size_t nst, float *mc, float *off) {
    for (size_t st = 0; st < nst; st++) {
        for (int q = 0; q < 4; q++) {
            for (int j = 0; j < 8; j++) {
                const ptrdiff_t i = (ptrdiff_t)(32 * st + s2_lane(q, j));
                const ptrdiff_t x0 = 2 * i - g->pl, x1 = QC_MIN(x0 + g->kw, (ptrdiff_t)g->W);
                const int32_t real = nrow * (int32_t)(x1 - QC_MAX(x0, 0));
                const int32_t cnt = QC_MAX(p->count_include_pad ? g->kh * g->kw : real, 1);
                const size_t at = (4 * st + (size_t)q) * 8 + (size_t)j;
                mc[at] = p->m / (float)cnt;
                off[at] = (float)(real * p->xzp + s2_off_bias(is_signed));
            }
        }
    }
}

/* the plane's constants; halves [h_lo, h_hi) load in place */
typedef struct {
    size_t W, h_lo, h_hi;
    ptrdiff_t pl, c1;
    int taps, is_signed, clamp;
    __m256i w0, w1;      /* byte weights of the taps */
    __m256 lo, hi;
    __m256i yzp16;
} s2_plane;

/* vpmaddubsw takes unsigned bytes first: uint8 data first, int8 data second */
QC_INLINE __m256i s2_madd(__m256i v, __m256i w, int is_signed) {
    return is_signed ? _mm256_maddubs_epi16(w, v) : _mm256_maddubs_epi16(v, w);
}

/* the 32 bytes at row + c for -3 <= c < 0: those at row, moved up by -c bytes (zeros below) */
QC_INLINE __m256i s2_load_left(const uint8_t *row, ptrdiff_t c) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)row);
    const __m256i lo = _mm256_permute2x128_si256(v, v, 0x08); /* 0, v's low lane */
    switch (c) {
    case -1: return _mm256_alignr_epi8(v, lo, 15);
    case -2: return _mm256_alignr_epi8(v, lo, 14);
    default: return _mm256_alignr_epi8(v, lo, 13);
    }
}

/* the 32 bytes at row + c, those outside the row's columns [0, W) as 0 */
QC_INLINE __m256i s2_load(const s2_plane *s, const uint8_t *row, ptrdiff_t c, int whole) {
    if (whole || (c >= 0 && c + 32 <= (ptrdiff_t)s->W))
        return _mm256_loadu_si256((const __m256i *)(row + c));
    if (c < 0 && 32 <= s->W) return s2_load_left(row, c);
    uint8_t buf[32] = {0};
    const ptrdiff_t a = QC_MAX(c, 0), b = QC_MIN(c + 32, (ptrdiff_t)s->W);
    if (b > a) memcpy(buf + (a - c), row + a, (size_t)(b - a));
    return _mm256_loadu_si256((const __m256i *)buf);
}

/* one row's 16-bit sums for the 16 outputs of half h */
QC_INLINE __m256i s2_row(const s2_plane *s, const uint8_t *row, size_t h, int whole) {
    const ptrdiff_t c = 32 * (ptrdiff_t)h - s->pl;
    __m256i v = s2_madd(s2_load(s, row, c, whole), s->w0, s->is_signed);
    if (s->taps > 1)
        v = _mm256_add_epi16(v, s2_madd(s2_load(s, row, c + s->c1, whole), s->w1, s->is_signed));
    return v;
}

/* 16-bit window sums of the 16 outputs of half h; kept: that half's shared-row sums */
QC_INLINE __m256i s2_sum16(const s2_plane *s, const s2_rows *r, size_t h, int16_t *kept,
                           int whole) {
    __m256i v = r->from_kept ? _mm256_loadu_si256((const __m256i *)kept) : _mm256_setzero_si256();
    for (ptrdiff_t j = 0; j < r->n; j++)
        v = _mm256_add_epi16(v, s2_row(s, r->mid + (size_t)j * s->W, h, whole));
    if (r->shared) {
        const __m256i l = r->last ? s2_row(s, r->last, h, whole) : _mm256_setzero_si256();
        _mm256_storeu_si256((__m256i *)kept, l);
        v = _mm256_add_epi16(v, l);
    }
    return v;
}

typedef struct {
    const float *mc, *off;
    __m256 mci, offi;
} s2_scale;

/* quarter a (floats 2^23 + u) minus the offsets, times the multipliers, clamped unless the
 * packs do it, rounded to nearest even */
QC_INLINE __m256i s2_requant(const s2_plane *s, __m256i a, __m256 mc, __m256 off) {
    __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_castsi256_ps(a), off), mc);
    if (s->clamp) v = _mm256_min_ps(_mm256_max_ps(v, s->lo), s->hi);
    return _mm256_cvttps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* 16 sums v of a half as int16 plus yzp (saturating, as in qops_avx512.c) */
QC_INLINE __m256i s2_finish16(const s2_plane *s, __m256i v, __m256 mc0, __m256 mc1,
                              __m256 off0, __m256 off1) {
    const __m256i fhi = _mm256_set1_epi16(QC_S2_FLOAT_HI);
    if (s->is_signed) v = _mm256_xor_si256(v, _mm256_set1_epi16(INT16_MIN));
    const __m256i lo = s2_requant(s, _mm256_unpacklo_epi16(v, fhi), mc0, off0);
    const __m256i hi = s2_requant(s, _mm256_unpackhi_epi16(v, fhi), mc1, off1);
    return _mm256_adds_epi16(_mm256_packs_epi32(lo, hi), s->yzp16);
}

QC_INLINE __m256i s2_half(const s2_plane *s, const s2_rows *r, const s2_scale *t, size_t h,
                          int16_t *kept) {
    if (h >= s->h_lo && h < s->h_hi) {
        const __m256i v = s2_sum16(s, r, h, kept + 16 * h, 1);
        return s2_finish16(s, v, t->mci, t->mci, t->offi, t->offi);
    }
    const __m256i v = s2_sum16(s, r, h, kept + 16 * h, 0);
    const float *mc = t->mc + 16 * h, *off = t->off + 16 * h;
    return s2_finish16(s, v, _mm256_loadu_ps(mc), _mm256_loadu_ps(mc + 8), _mm256_loadu_ps(off),
                       _mm256_loadu_ps(off + 8));
}

/* one output row, 32 outputs (two halves) per step */
QC_INLINE void s2_out_row(const s2_plane *s, const s2_rows *r, const s2_scale *t, int16_t *kept,
                          uint8_t *out, size_t OW) {
    for (size_t i0 = 0, h = 0; i0 < OW; i0 += 32, h += 2) {
        const __m256i w01 = s2_half(s, r, t, h, kept);
        const __m256i w23 = s2_half(s, r, t, h + 1, kept);
        /* the qwords of the two halves interleave */
        __m256i b = s->is_signed ? _mm256_packs_epi16(w01, w23) : _mm256_packus_epi16(w01, w23);
        b = _mm256_permute4x64_epi64(b, 0xD8);
        if (OW - i0 >= 32) {
            _mm256_storeu_si256((__m256i *)(out + i0), b);
        } else {
            uint8_t tmp[32];
            _mm256_storeu_si256((__m256i *)tmp, b);
            memcpy(out + i0, tmp, OW - i0);
        }
    }
}

QC_INLINE void avgpool_s2_avx2(const void *x, int is_signed, void *yv, const qc_win2d *g,
                               const qc_avgpool_params *p, int32_t *ws, int clamp) {
    const size_t OW = g->OW, nst = (OW + 31) / 32;
    const int kw = g->kw, taps = kw > 2 ? 2 : 1;
    float *mc = (float *)ws;
    float *off = (float *)(ws + 32 * nst);
    int16_t *kept = (int16_t *)(ws + 64 * nst);
    /* byte weights as in the AVX-512 kernel: kw = 3 takes its third column from c + 1 */
    s2_plane s = {g->W, 2 * nst, 0, g->pl, kw == 3 ? 1 : 2, taps, is_signed, clamp,
                  _mm256_set1_epi16(kw == 1 ? 0x0001 : 0x0101),
                  _mm256_set1_epi16(kw == 3 ? 0x0100 : 0x0101),
                  _mm256_set1_ps(p->lo), _mm256_set1_ps(p->hi),
                  _mm256_set1_epi16((int16_t)p->yzp)};
    for (size_t h = 0; h < 2 * nst; h++) {
        const ptrdiff_t c = 32 * (ptrdiff_t)h - s.pl;
        if (c >= 0 && c + (taps > 1 ? s.c1 : 0) + 32 <= (ptrdiff_t)g->W) {
            s.h_lo = QC_MIN(s.h_lo, h);
            s.h_hi = h + 1;
        }
    }
    s2_scale t = {mc, off, _mm256_setzero_ps(), _mm256_setzero_ps()};
    const int shared = g->kh == g->sh + 1;
    ptrdiff_t last_nrow = -1;
    for (size_t oy = 0; oy < g->OH; oy++) {
        const ptrdiff_t y0 = (ptrdiff_t)oy * g->sh - g->pt;
        const ptrdiff_t nrow = QC_MIN(y0 + g->kh, (ptrdiff_t)g->H) - QC_MAX(y0, 0);
        if (nrow != last_nrow) {
            last_nrow = nrow;
            s2_table(g, p, is_signed, (int32_t)nrow, nst, mc, off);
            const int32_t real = (int32_t)(nrow * kw);
            t.mci = _mm256_set1_ps(p->m / (float)(p->count_include_pad ? g->kh * kw : real));
            t.offi = _mm256_set1_ps((float)(real * p->xzp + s2_off_bias(is_signed)));
        }
        const s2_rows r = s2_rows_of(x, g, oy, shared);
        uint8_t *out = (uint8_t *)yv + oy * OW;
        if (r.from_kept && r.last && r.n == 1) {
            /* the inner rows of 3x3/2, with the row pattern fixed for the compiler */
            const s2_rows r3 = {r.mid, r.last, 1, 1, 1};
            s2_out_row(&s, &r3, &t, kept, out, OW);
        } else {
            s2_out_row(&s, &r, &t, kept, out, OW);
        }
    }
}

#define QC_DEF_AVGPOOL256(T, T16, CVT16, WIDEN16, EVEN32, GENERIC, NAME)                      \
    static void NAME(const T *x, T *y, const qc_win2d *g, const qc_avgpool_params *p,         \
                     int32_t *ws) {                                                           \
        if (avgpool_s2_fits(g, (T)-1 < 0)) {                                                  \
            if (s2_packs_clamp(p, (T)-1 < 0))                                                 \
                avgpool_s2_avx2(x, (T)-1 < 0, y, g, p, ws, 0);                                \
            else                                                                              \
                avgpool_s2_avx2(x, (T)-1 < 0, y, g, p, ws, 1);                                \
            return;                                                                           \
        }                                                                                     \
        if (g->kh > 256) {                                                                    \
            GENERIC(x, y, g, p, ws);                                                          \
            return;                                                                           \
        }                                                                                     \
        const size_t W = g->W, pw = (size_t)g->pl + W + (size_t)g->pr, OW = g->OW;             \
        const size_t sw = (size_t)g->sw;                                                      \
        const int kw = g->kw;                                                                 \
        T16 *rows16 = (T16 *)ws;                                                              \
        for (size_t oy = 0; oy < g->OH; oy++) {                                               \
            T16 *wrow = rows16 + oy * pw;                                                     \
            for (size_t i = 0; i < (size_t)g->pl; i++) wrow[i] = 0;                           \
            for (size_t i = (size_t)g->pl + W; i < pw; i++) wrow[i] = 0;                      \
            T16 *row = wrow + g->pl;                                                          \
            ptrdiff_t y0 = (ptrdiff_t)oy * g->sh - g->pt, y1 = y0 + g->kh;                    \
            if (y0 < 0) y0 = 0;                                                               \
            if (y1 > (ptrdiff_t)g->H) y1 = (ptrdiff_t)g->H;                                   \
            if (W >= 16) {                                                                    \
                for (size_t s0 = 0; s0 < W; s0 += 16) {                                       \
                    const size_t j = s0 + 16 <= W ? s0 : W - 16;                              \
                    __m256i v = _mm256_setzero_si256();                                       \
                    for (ptrdiff_t iy = y0; iy < y1; iy++) {                                  \
                        const T *src = x + (size_t)iy * W + j;                                \
                        v = _mm256_add_epi16(v, CVT16(_mm_loadu_si128((const __m128i *)src))); \
                    }                                                                         \
                    _mm256_storeu_si256((__m256i *)(row + j), v);                             \
                }                                                                             \
            } else {                                                                          \
                for (size_t i = 0; i < W; i++) {                                              \
                    int32_t a = 0;                                                            \
                    for (ptrdiff_t iy = y0; iy < y1; iy++) a += x[(size_t)iy * W + i];        \
                    row[i] = (T16)a;                                                          \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        const __m256 lo = _mm256_set1_ps(p->lo), hi = _mm256_set1_ps(p->hi);                  \
        const __m256i yzp = _mm256_set1_epi32(p->yzp);                                        \
        float *mcrow = (float *)(ws + (g->OH * pw + 1) / 2);                                  \
        int32_t *offrow = (int32_t *)(mcrow + OW + 8);                                        \
        ptrdiff_t last_nrow = -1;                                                             \
        for (size_t oy = 0; oy < g->OH; oy++) {                                               \
            const T16 *hrow = rows16 + oy * pw;                                               \
            ptrdiff_t y0 = (ptrdiff_t)oy * g->sh - g->pt, y1 = y0 + g->kh;                    \
            if (y0 < 0) y0 = 0;                                                               \
            if (y1 > (ptrdiff_t)g->H) y1 = (ptrdiff_t)g->H;                                   \
            if (y1 - y0 != last_nrow) {                                                       \
                last_nrow = y1 - y0;                                                          \
                for (size_t i = 0; i < OW; i++) {                                             \
                    ptrdiff_t x0 = (ptrdiff_t)(i * sw) - g->pl, x1 = x0 + kw;                 \
                    x0 = x0 < 0 ? 0 : x0;                                                     \
                    x1 = x1 > (ptrdiff_t)W ? (ptrdiff_t)W : x1;                               \
                    const int32_t real = (int32_t)(last_nrow * (x1 - x0));                    \
                    const int32_t cnt = p->count_include_pad ? g->kh * kw : real;             \
                    mcrow[i] = p->m / (float)cnt;                                             \
                    offrow[i] = real * p->xzp;                                                \
                }                                                                             \
            }                                                                                 \
            T *out = y + oy * OW;                                                             \
            size_t i = 0;                                                                     \
            if (OW >= 8 && sw <= 2) {                                                         \
                for (size_t s0 = 0; s0 < OW; s0 += 8) {                                       \
                    const size_t j = s0 + 8 <= OW ? s0 : OW - 8;                              \
                    __m256i acc = _mm256_setzero_si256();                                     \
                    for (int kx = 0; kx < kw; kx++) {                                         \
                        if (sw == 1) {                                                        \
                            const __m128i v = _mm_loadu_si128((const __m128i *)(hrow + j + kx)); \
                            acc = _mm256_add_epi32(acc, WIDEN16(v));                          \
                        } else {                                                              \
                            const __m256i v =                                                 \
                                _mm256_loadu_si256((const __m256i *)(hrow + 2 * j + kx));     \
                            acc = _mm256_add_epi32(acc, EVEN32(v));                           \
                        }                                                                     \
                    }                                                                         \
                    acc = _mm256_sub_epi32(acc, _mm256_loadu_si256((const __m256i *)(offrow + j))); \
                    __m256i r = round8(_mm256_mul_ps(_mm256_cvtepi32_ps(acc),                 \
                                                     _mm256_loadu_ps(mcrow + j)), lo, hi, yzp); \
                    __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(r),                  \
                                                  _mm256_extracti128_si256(r, 1));            \
                    _mm_storel_epi64((__m128i *)(out + j), (T)-1 < 0                          \
                                                               ? _mm_packs_epi16(w16, w16)   \
                                                               : _mm_packus_epi16(w16, w16)); \
                }                                                                             \
                i = OW;                                                                       \
            }                                                                                 \
            for (; i < OW; i++) {                                                             \
                int32_t a = -offrow[i];                                                       \
                for (int kx = 0; kx < kw; kx++) a += hrow[i * sw + (size_t)kx];               \
                out[i] = (T)qc_requant_f32((float)a * mcrow[i], p->lo, p->hi, p->yzp);        \
            }                                                                                 \
        }                                                                                     \
    }

#define QC_EVEN32_U(v) _mm256_and_si256((v), _mm256_set1_epi32(0xFFFF))
#define QC_EVEN32_S(v) _mm256_srai_epi32(_mm256_slli_epi32((v), 16), 16)
QC_DEF_AVGPOOL256(uint8_t, uint16_t, _mm256_cvtepu8_epi16, _mm256_cvtepu16_epi32, QC_EVEN32_U,
                  QC_QOPS_NAME(avgpool_u8), avgpool_u8_avx2)
QC_DEF_AVGPOOL256(int8_t, int16_t, _mm256_cvtepi8_epi16, _mm256_cvtepi16_epi32, QC_EVEN32_S,
                  QC_QOPS_NAME(avgpool_s8), avgpool_s8_avx2)

/* Each plane in 32-byte pieces summed by vpsadbw against zero (int8 as q + 128, then 128 per
 * element taken off), the last n % 32 bytes one at a time. */
static void plane_sums_avx2(const void *x, int sx, size_t nplanes, size_t n, int32_t *sums) {
    const __m256i flip = _mm256_set1_epi8(sx ? (char)0x80 : 0), zero = _mm256_setzero_si256();
    const size_t nfull = n / 32 * 32;
    for (size_t i = 0; i < nplanes; i++) {
        const uint8_t *p = (const uint8_t *)x + i * n;
        __m256i acc = zero;
        for (size_t j = 0; j < nfull; j += 32)
            acc = _mm256_add_epi64(
                acc, _mm256_sad_epu8(
                         _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(p + j)), flip),
                         zero));
        const __m128i h = _mm_add_epi64(_mm256_castsi256_si128(acc),
                                        _mm256_extracti128_si256(acc, 1));
        int64_t s = _mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1);
        if (sx) s -= 128 * (int64_t)nfull;
        for (size_t j = nfull; j < n; j++) s += sx ? (int64_t)(int8_t)p[j] : (int64_t)p[j];
        sums[i] = (int32_t)s;
    }
}

const qc_qops_impl qc_qops__avx2 = {
    maxpool_s8_avx2,
    maxpool_u8_avx2,
    avgpool_s8_avx2,
    avgpool_u8_avx2,
    add_avx2,
    mul_avx2,
    lut8_avx2,
    requant_avx2,
    plane_sums_avx2,
};
