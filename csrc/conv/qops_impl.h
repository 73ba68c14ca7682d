/* Quantized operator kernels written once; included by qops_scalar.c, qops_avx2.c, qops_avx512.c.
 *
 * Every loop here is integer arithmetic or IEEE float arithmetic in a fixed order (no fused
 * multiply-add but the explicit fmaf of the ort add, one rounding on every ISA: the build
 * passes -ffp-contract=off), so the per-ISA compilations (auto-vectorized with that file's -m
 * flags) are bit-identical to the scalar build by construction.
 * The including file defines QC_QOPS_NAME(name) to suffix each function with its ISA; an ISA
 * file may replace some with hand-written kernels in its own table (hence "unused"). */
#include <math.h>
#include <string.h>

#define QC_KERNEL static __attribute__((unused))

#include "conv/qops.h"

/* ---- max pooling ---- */

/* One output row at a time: vertical max of the window's rows into ws (padding columns hold the
 * type's minimum, neutral for max), then the horizontal max with the stride. Every window holds
 * at least one real cell (pads < kernel is checked by the caller). */
/* Horizontal max of one pooled row for any stride, the ground truth the SIMD paths share:
 * out[i] = max over kx in [0, kw) of src[i * sw + kx], for i in [i0, OW). Type-generic in T
 * so the scalar, AVX2 and AVX-512 files use this one loop for their general-stride cases. */
#define QC_MAXPOOL_ROW(T, out, src, i0, OW, sw, kw)                                              \
    for (size_t i_ = (i0); i_ < (OW); i_++) {                                                    \
        T m_ = (src)[i_ * (sw)];                                                                 \
        for (int kx_ = 1; kx_ < (kw); kx_++) {                                                   \
            const T v_ = (src)[i_ * (sw) + (size_t)kx_];                                         \
            m_ = v_ > m_ ? v_ : m_;                                                              \
        }                                                                                        \
        (out)[i_] = m_;                                                                          \
    }

#define QC_DEF_MAXPOOL(T, TMIN, NAME)                                                              \
    QC_KERNEL void QC_QOPS_NAME(NAME)(const T *restrict x, T *restrict y, const qc_win2d *g,       \
                                   T *restrict ws) {                                               \
        const size_t W = g->W, pw = (size_t)g->pl + W + (size_t)g->pr;                             \
        for (size_t i = 0; i < (size_t)g->pl; i++) ws[i] = TMIN;                                   \
        for (size_t i = (size_t)g->pl + W; i < pw; i++) ws[i] = TMIN;                              \
        T *restrict row = ws + g->pl;                                                              \
        for (size_t oy = 0; oy < g->OH; oy++) {                                                    \
            ptrdiff_t y0 = (ptrdiff_t)oy * g->sh - g->pt;                                          \
            ptrdiff_t y1 = y0 + g->kh;                                                             \
            if (y0 < 0) y0 = 0;                                                                    \
            if (y1 > (ptrdiff_t)g->H) y1 = (ptrdiff_t)g->H;                                        \
            memcpy(row, x + (size_t)y0 * W, W * sizeof(T));                                        \
            for (ptrdiff_t iy = y0 + 1; iy < y1; iy++) {                                           \
                const T *restrict src = x + (size_t)iy * W;                                        \
                for (size_t i = 0; i < W; i++) row[i] = src[i] > row[i] ? src[i] : row[i];         \
            }                                                                                      \
            T *restrict out = y + oy * g->OW;                                                      \
            const size_t OW = g->OW;                                                               \
            const int kw = g->kw;                                                                  \
            if (g->sw == 1) {                                                                      \
                memcpy(out, ws, OW * sizeof(T));                                                   \
                for (int kx = 1; kx < kw; kx++) {                                                  \
                    const T *restrict s = ws + kx;                                                 \
                    for (size_t i = 0; i < OW; i++) out[i] = s[i] > out[i] ? s[i] : out[i];        \
                }                                                                                  \
            } else if (g->sw == 2) {                                                               \
                for (size_t i = 0; i < OW; i++) out[i] = ws[2 * i];                                \
                for (int kx = 1; kx < kw; kx++) {                                                  \
                    const T *restrict s = ws + kx;                                                 \
                    for (size_t i = 0; i < OW; i++) {                                              \
                        T v = s[2 * i];                                                            \
                        out[i] = v > out[i] ? v : out[i];                                          \
                    }                                                                              \
                }                                                                                  \
            } else {                                                                               \
                const size_t sw = (size_t)g->sw;                                                   \
                QC_MAXPOOL_ROW(T, out, ws, 0, OW, sw, kw);                                         \
            }                                                                                      \
        }                                                                                          \
    }

QC_DEF_MAXPOOL(int8_t, INT8_MIN, maxpool_s8)
QC_DEF_MAXPOOL(uint8_t, 0, maxpool_u8)

/* ---- average pooling ---- */

/* As max pooling, with sums of (q - xzp) in int32 (padding columns 0), then the horizontal sums
 * into ws + pw. The count of a window is kh*kw with count_include_pad, else (real rows) x (real
 * columns); the multiplier float32(m / float(cnt)) is a true division, so every build agrees. */
#define QC_DEF_AVGPOOL(T, NAME)                                                                    \
    QC_KERNEL void QC_QOPS_NAME(NAME)(const T *restrict x, T *restrict y, const qc_win2d *g,       \
                                   const qc_avgpool_params *p, int32_t *restrict ws) {             \
        const size_t W = g->W, pw = (size_t)g->pl + W + (size_t)g->pr, OW = g->OW;                 \
        const int32_t xzp = p->xzp, yzp = p->yzp;                                                  \
        const float m = p->m, lo = p->lo, hi = p->hi;                                              \
        const int kw = g->kw, pl = g->pl, inc = p->count_include_pad;                              \
        const int32_t Wi = (int32_t)W, swi = g->sw;                                                \
        for (size_t i = 0; i < (size_t)g->pl; i++) ws[i] = 0;                                      \
        for (size_t i = (size_t)g->pl + W; i < pw; i++) ws[i] = 0;                                 \
        int32_t *restrict row = ws + g->pl;                                                        \
        int32_t *restrict acc = ws + pw;                                                           \
        for (size_t oy = 0; oy < g->OH; oy++) {                                                    \
            ptrdiff_t y0 = (ptrdiff_t)oy * g->sh - g->pt;                                          \
            ptrdiff_t y1 = y0 + g->kh;                                                             \
            if (y0 < 0) y0 = 0;                                                                    \
            if (y1 > (ptrdiff_t)g->H) y1 = (ptrdiff_t)g->H;                                        \
            const int32_t nrow = (int32_t)(y1 - y0);                                               \
            const int32_t off = -nrow * xzp;                                                       \
            for (size_t i = 0; i < W; i++) row[i] = off;                                           \
            for (ptrdiff_t iy = y0; iy < y1; iy++) {                                               \
                const T *restrict src = x + (size_t)iy * W;                                        \
                for (size_t i = 0; i < W; i++) row[i] += (int32_t)src[i];                          \
            }                                                                                      \
            if (g->sw == 1) {                                                                      \
                memcpy(acc, ws, OW * sizeof(int32_t));                                             \
                for (int kx = 1; kx < kw; kx++) {                                                  \
                    const int32_t *restrict s = ws + kx;                                           \
                    for (size_t i = 0; i < OW; i++) acc[i] += s[i];                                \
                }                                                                                  \
            } else if (g->sw == 2) {                                                               \
                for (size_t i = 0; i < OW; i++) acc[i] = ws[2 * i];                                \
                for (int kx = 1; kx < kw; kx++) {                                                  \
                    const int32_t *restrict s = ws + kx;                                           \
                    for (size_t i = 0; i < OW; i++) acc[i] += s[2 * i];                            \
                }                                                                                  \
            } else {                                                                               \
                const size_t sw = (size_t)g->sw;                                                   \
                for (size_t i = 0; i < OW; i++) {                                                  \
                    int32_t a = 0;                                                                 \
                    for (int kx = 0; kx < kw; kx++) a += ws[i * sw + (size_t)kx];                  \
                    acc[i] = a;                                                                    \
                }                                                                                  \
            }                                                                                      \
            T *restrict out = y + oy * OW;                                                         \
            const int32_t full = g->kh * kw;                                                       \
            for (size_t i = 0; i < OW; i++) {                                                      \
                int32_t x0 = (int32_t)i * swi - pl, x1 = x0 + kw;                                  \
                x0 = x0 < 0 ? 0 : x0;                                                              \
                x1 = x1 > Wi ? Wi : x1;                                                            \
                int32_t cnt = inc ? full : nrow * (x1 - x0);                                       \
                float mc = m / (float)cnt;                                                         \
                out[i] = (T)qc_requant_f32((float)acc[i] * mc, lo, hi, yzp);                       \
            }                                                                                      \
        }                                                                                          \
    }

QC_DEF_AVGPOOL(int8_t, avgpool_s8)
QC_DEF_AVGPOOL(uint8_t, avgpool_u8)

/* ---- stride-2 average pooling: what the AVX2 and AVX-512 kernels (avgpool_s2_*) share ---- */

/* Windows of kw <= 4 columns at stride 2, with 16-bit sums: |sum| <= kh * kw * 255 (uint8,
 * unsigned) or kh * kw * 128 (int8, signed) fits for kh * kw <= 257 or 255. */
QC_INLINE int avgpool_s2_fits(const qc_win2d *g, int is_signed) {
    return g->sw == 2 && g->kw <= 4 && g->kh * g->kw <= (is_signed ? 255 : 257);
}

/* The 16-bit sums u (int8: biased by 2^15 to unsigned) become floats without a conversion:
 * the bits 0x4B00 above them make the float 2^23 + u, and subtracting the float
 * 2^23 + bias + real * xzp (the offsets) leaves acc = sum - real * xzp exactly (both are
 * integers below 2^24 and so is their difference), the float(acc) the requantization
 * multiplies. */
#define QC_S2_FLOAT_HI 0x4B00
QC_INLINE int32_t s2_off_bias(int is_signed) { return (1 << 23) + (is_signed ? 1 << 15 : 0); }

/* Results are clamped to the output type by the saturating packs that narrow them, the same
 * as clamping v to [lo, hi] first (rounding and clamping to integer bounds commute), when
 * [lo, hi] is the type's whole range and v cannot overflow int32: |v| <= 255 * m * (1 + 2^-23)
 * < 2^31 for m <= 2^22. */
QC_INLINE int s2_packs_clamp(const qc_avgpool_params *p, int is_signed) {
    const int32_t qmin = is_signed ? INT8_MIN : 0, qmax = is_signed ? INT8_MAX : UINT8_MAX;
    return p->m <= 4194304.0f && p->lo == (float)(qmin - p->yzp) &&
           p->hi == (float)(qmax - p->yzp);
}

/* The input rows of one output row's windows: the n rows from `mid` are summed. With a shared
 * row (kh = sh + 1: each window's first row is the previous one's last), the sums start from
 * the kept ones (from_kept), and the sums of row `last` (0 if it is not a real row:
 * last == NULL) are added and kept for the next output row. */
typedef struct {
    const uint8_t *mid, *last;
    ptrdiff_t n;
    int shared, from_kept;
} s2_rows;

QC_INLINE s2_rows s2_rows_of(const uint8_t *x, const qc_win2d *g, size_t oy, int shared) {
    const ptrdiff_t H = (ptrdiff_t)g->H, ya = (ptrdiff_t)oy * g->sh - g->pt, yb = ya + g->kh;
    s2_rows r;
    r.shared = shared;
    r.from_kept = shared && oy > 0;
    const ptrdiff_t r0 = QC_MAX(r.from_kept ? ya + 1 : ya, 0);
    const ptrdiff_t r1 = QC_MIN(shared ? yb - 1 : yb, H);
    r.n = QC_MAX(r1 - r0, 0);
    r.mid = x + (size_t)r0 * g->W;
    r.last = shared && yb - 1 < H ? x + (size_t)(yb - 1) * g->W : NULL;
    return r;
}

/* The eight int8/uint8 instantiations OP_sss .. OP_uuu (a, b, y: s int8, u uint8) of an
 * element-wise op's DEF(TA, TB, TY, NAME), and OP itself, which picks one by the operands'
 * signedness (sa/sb/sy = 1: int8). */
#define QC_DEF_BINARY8(OP, DEF, PARAMS)                                                            \
    DEF(int8_t, int8_t, int8_t, OP##_sss)                                                          \
    DEF(int8_t, int8_t, uint8_t, OP##_ssu)                                                         \
    DEF(int8_t, uint8_t, int8_t, OP##_sus)                                                         \
    DEF(int8_t, uint8_t, uint8_t, OP##_suu)                                                        \
    DEF(uint8_t, int8_t, int8_t, OP##_uss)                                                         \
    DEF(uint8_t, int8_t, uint8_t, OP##_usu)                                                        \
    DEF(uint8_t, uint8_t, int8_t, OP##_uus)                                                        \
    DEF(uint8_t, uint8_t, uint8_t, OP##_uuu)                                                       \
    QC_KERNEL void QC_QOPS_NAME(OP)(const void *a, int sa, const void *b, int sb, void *y,         \
                                    int sy, size_t n, const PARAMS *p) {                           \
        switch ((sa ? 0 : 4) + (sb ? 0 : 2) + (sy ? 0 : 1)) {                                      \
        case 0: QC_QOPS_NAME(OP##_sss)(a, b, y, n, p); break;                                      \
        case 1: QC_QOPS_NAME(OP##_ssu)(a, b, y, n, p); break;                                      \
        case 2: QC_QOPS_NAME(OP##_sus)(a, b, y, n, p); break;                                      \
        case 3: QC_QOPS_NAME(OP##_suu)(a, b, y, n, p); break;                                      \
        case 4: QC_QOPS_NAME(OP##_uss)(a, b, y, n, p); break;                                      \
        case 5: QC_QOPS_NAME(OP##_usu)(a, b, y, n, p); break;                                      \
        case 6: QC_QOPS_NAME(OP##_uus)(a, b, y, n, p); break;                                      \
        default: QC_QOPS_NAME(OP##_uuu)(a, b, y, n, p); break;                                     \
        }                                                                                          \
    }

/* ---- elementwise add ---- */

#define QC_DEF_ADD(TA, TB, TY, NAME)                                                               \
    QC_KERNEL void QC_QOPS_NAME(NAME)(const TA *restrict a, const TB *restrict b, TY *restrict y,  \
                                   size_t n, const qc_add_params *p) {                             \
        const int32_t azp = p->azp, bzp = p->bzp, yzp = p->yzp;                                    \
        const float ma = p->ma, mb = p->mb, lo = p->lo, hi = p->hi;                                \
        if (p->ort) { /* bounds with the zero point, which `fixed` holds */                        \
            const float fx = p->fixed, alo = lo + (float)yzp, ahi = hi + (float)yzp;               \
            for (size_t i = 0; i < n; i++)                                                         \
                y[i] = (TY)qc_requant_f32(fmaf((float)a[i], ma, fmaf((float)b[i], mb, fx)), alo,   \
                                          ahi, 0);                                                 \
            return;                                                                                \
        }                                                                                          \
        for (size_t i = 0; i < n; i++) {                                                           \
            float va = (float)((int32_t)a[i] - azp) * ma;                                          \
            float vb = (float)((int32_t)b[i] - bzp) * mb;                                          \
            y[i] = (TY)qc_requant_f32(va + vb, lo, hi, yzp);                                       \
        }                                                                                          \
    }

QC_DEF_BINARY8(add, QC_DEF_ADD, qc_add_params)

/* ---- elementwise multiply ---- */

#define QC_DEF_MUL(TA, TB, TY, NAME)                                                               \
    QC_KERNEL void QC_QOPS_NAME(NAME)(const TA *restrict a, const TB *restrict b, TY *restrict y,  \
                                   size_t n, const qc_mul_params *p) {                             \
        const int32_t azp = p->azp, bzp = p->bzp;                                                  \
        const float lo = p->lo, hi = p->hi;                                                        \
        if (p->ort) {                                                                              \
            const float r = p->ratio, fz = (float)p->yzp;                                          \
            for (size_t i = 0; i < n; i++) {                                                       \
                float v = (float)(((int32_t)a[i] - azp) * ((int32_t)b[i] - bzp)) * r + fz;         \
                v = v >= -2147483648.0f && v < 2147483648.0f ? v : lo;                             \
                y[i] = (TY)qc_requant_f32(v, lo, hi, 0);                                           \
            }                                                                                      \
            return;                                                                                \
        }                                                                                          \
        const float sa = p->sa, sb = p->sb, sy = p->sy, zlo = lo - (float)p->yzp,                  \
                    zhi = hi - (float)p->yzp;                                                      \
        const int32_t yzp = p->yzp;                                                                \
        for (size_t i = 0; i < n; i++) {                                                           \
            float va = (float)((int32_t)a[i] - azp) * sa;                                          \
            float vb = (float)((int32_t)b[i] - bzp) * sb;                                          \
            y[i] = (TY)qc_requant_f32(va * vb / sy, zlo, zhi, yzp);                                \
        }                                                                                          \
    }

QC_DEF_BINARY8(mul, QC_DEF_MUL, qc_mul_params)

/* ---- table lookup ---- */

QC_KERNEL void QC_QOPS_NAME(lut8)(const uint8_t *restrict x, uint8_t *restrict y, size_t n,
                                  const uint8_t *restrict table) {
    for (size_t i = 0; i < n; i++) y[i] = table[x[i]];
}

/* ---- requantizing copy (concat) ---- */

#define QC_DEF_RQ(TX, TY, NAME)                                                                    \
    QC_KERNEL void QC_QOPS_NAME(NAME)(const TX *restrict x, TY *restrict y, size_t n,              \
                                   const qc_rq_params *p) {                                        \
        const int32_t zp = p->zp, yzp = p->yzp;                                                    \
        const float m = p->m, lo = p->lo, hi = p->hi;                                              \
        for (size_t i = 0; i < n; i++) {                                                           \
            y[i] = (TY)qc_requant_f32((float)((int32_t)x[i] - zp) * m, lo, hi, yzp);               \
        }                                                                                          \
    }

QC_DEF_RQ(int8_t, int8_t, rq_ss)
QC_DEF_RQ(int8_t, uint8_t, rq_su)
QC_DEF_RQ(uint8_t, int8_t, rq_us)
QC_DEF_RQ(uint8_t, uint8_t, rq_uu)

QC_KERNEL void QC_QOPS_NAME(requant)(const void *x, int sx, void *y, int sy, size_t n,
                                     const qc_rq_params *p) {
    switch ((sx ? 0 : 2) + (sy ? 0 : 1)) {
    case 0: QC_QOPS_NAME(rq_ss)(x, y, n, p); break;
    case 1: QC_QOPS_NAME(rq_su)(x, y, n, p); break;
    case 2: QC_QOPS_NAME(rq_us)(x, y, n, p); break;
    default: QC_QOPS_NAME(rq_uu)(x, y, n, p); break;
    }
}

/* ---- global pooling: the sum of each plane ---- */

QC_KERNEL void QC_QOPS_NAME(plane_sums)(const void *x, int sx, size_t nplanes, size_t n,
                                        int32_t *sums) {
    for (size_t i = 0; i < nplanes; i++) {
        int32_t s = 0;
        if (sx) {
            const int8_t *p = (const int8_t *)x + i * n;
            for (size_t j = 0; j < n; j++) s += p[j];
        } else {
            const uint8_t *p = (const uint8_t *)x + i * n;
            for (size_t j = 0; j < n; j++) s += p[j];
        }
        sums[i] = s;
    }
}

/* ---- float64 requantization of int32 accumulators (conv epilogue) ---- */

#define QC_QOPS_TABLE(NAME_)                                                                       \
    const qc_qops_impl NAME_ = {                                                                   \
        QC_QOPS_NAME(maxpool_s8), QC_QOPS_NAME(maxpool_u8), QC_QOPS_NAME(avgpool_s8),              \
        QC_QOPS_NAME(avgpool_u8),                                                                  \
        QC_QOPS_NAME(add),        QC_QOPS_NAME(mul),            QC_QOPS_NAME(lut8),                \
        QC_QOPS_NAME(requant),    QC_QOPS_NAME(plane_sums),                                        \
    };
