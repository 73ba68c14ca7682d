/* Micro-kernel interface of the gemm family: one tile call per variant, shared scalar epilogue. */
#ifndef QC_GEMM_KERNELS_H
#define QC_GEMM_KERNELS_H

#include <math.h>

#include "gemm/gemm.h"
#include "gemm/requant.h"

/* One tile: rows [0, mr) of the packed A block times the panels starting at column j0.
 * Every per-column array is indexed from j0 and readable for the whole tile width (the driver
 * pads them), so kernels load full vectors; only C stores are masked to nc columns. */
typedef struct {
    int64_t kp;
    const uint8_t *a;      /* row r: a + r * kp, values a' (u8), zero-padded to kp; with
                            * a16 the same values as uint16 (row r at a16 + r * kp). For a
                            * kernel with a_seg: row r at a + r * lda, as nseg segments of
                            * seg_groups groups, segment s at a + r * lda + seg[s] */
    ptrdiff_t lda;
    const ptrdiff_t *arow; /* a_seg kernels: NULL, or row r at a + arow[r] (lda unused) */
    const ptrdiff_t *seg;
    int64_t seg_groups;
    int nseg;
    const uint16_t *a16;
    const int32_t *rsum;   /* per row: rowsum(a') */
    const int32_t *zap;    /* per row: za' (0 when the driver folded a per-tensor za' into
                            * cterm, see cterm) */
    const int8_t *b;       /* panel holding column j0; the next panel is kp * 16 bytes on */
    int pw0, pw1;          /* widths of those two panels (16, or narrower: the last panel of
                            * B; group stride 4 * width); pw1 = 0 when B has no next panel */
    const int32_t *zbp;    /* per column: zb' */
    const int32_t *bcorr;  /* per column: colsum(b') - K * zb' */
    const int32_t *cterm;  /* per column: bias (0 without bias), minus za' * bcorr when za' is
                            * per tensor (wrapping; zap[r] is then 0) */
    int zbp_zero, zap_zero; /* 1: every zbp of the call / every zap is 0, so SIMD kernels
                             * may skip those products (the values are still valid) */
    const float *scale;    /* per column: requant/float scale (unused for int32 output) */
    const float *fbias;    /* per column: float bias (0 without; float output only) */
    const float *rscale;   /* float output only: NULL, or per row: the scale of row r is
                            * rscale[r] * scale[x] (rounded to float32, then used as above) */
    void *c;               /* element (r, j0 + x) at c + r * ldc + x (in output elements) */
    ptrdiff_t ldc;
    qc_gemm_out out;
    int32_t y_zp, lo, hi;  /* requant: zero point and clamp bounds (relu already in lo) */
    int rq_fma;            /* requant: 1 when every scale of the call is 0 or a finite float
                            * of magnitude >= 2^-20, so SIMD kernels may use the one-rounding
                            * FMA epilogue (epilogue_avx512.h) for |C| < 2^24 */
    int small;             /* 1 when |C| < 2^24 for every element of the call (no zero-point
                            * products, kp * 255 * 128 + max |cterm| < 2^24): no need to test */
    int rq32;              /* requant: ONNX Runtime's float32 arithmetic (qc_gemm_requant1_f32)
                            * instead of the float64 one; rq_fma is then 0 */
    int rq32_bound;        /* rq32, small, and |C * scale| + 256 < 2^22 for every element of
                            * the call (qc_requant16_f32_magic_avx512 applies) */
} qc_gemm_tile;

struct qc_gemm_kernels {
    const char *name;
    int mr;  /* most rows per tile call */
    int nr;  /* most columns per tile call (multiple of QC_GEMM_NR) */
    int a16; /* 1: the kernel reads A widened to uint16 (tile.a16), else u8 (tile.a) */
    int a_seg; /* 1: the kernel reads A through tile.lda and tile.seg (then A is read in
                * place whenever a' = a and no row sums are needed) */
    void (*tile)(const qc_gemm_tile *t, int mr, int nc);
};

extern const qc_gemm_kernels qc_gemm_kernels_scalar;
extern const qc_gemm_kernels qc_gemm_kernels_avx2;
extern const qc_gemm_kernels qc_gemm_kernels_avxvnni;
extern const qc_gemm_kernels qc_gemm_kernels_avx512vnni;
extern const qc_gemm_kernels qc_gemm_kernels_amx;
extern const qc_gemm_kernels qc_gemm_kernels_amxemu; /* QC_AMX_EMULATE builds only */

/* The exact value of C: wrapping 32-bit arithmetic (see gemm.h). */
QC_INLINE int32_t qc_gemm_fix1(int32_t dot, int32_t cterm, int32_t zbp, int32_t rsum,
                                int32_t zap, int32_t bcorr) {
    uint32_t v = (uint32_t)dot + (uint32_t)cterm - (uint32_t)zbp * (uint32_t)rsum -
                 (uint32_t)zap * (uint32_t)bcorr;
    return (int32_t)v;
}

/* The requant epilogue for one element: float64 like onnx's reference, ties to even.
 *
 * SIMD kernels may take an exact float32 shortcut per vector, falling back to this float64
 * arithmetic for any vector where it is not proven equal. With f = (float)v,
 *   t = clamp((float)(f * scale) + (float)y_zp, lo, hi)   (float32, two roundings, no FMA)
 *   y = rint(t)
 * is used only when every lane has |f| < 2^24 and |t - rint(t)| < 1/2 - 2^-10 (so t is at
 * least 2^-10 away from every tie k + 1/2). Proof that y equals the float64 result Y:
 *   - |f| < 2^24 means |v| < 2^24 ((float) is monotone), so f == v, and v * scale (24 x 24
 *     significant bits) is exact in float64: the reference computes d = fl64(x) with
 *     x = v * scale + y_zp, |d - x| <= 2^-53 |x|.
 *   - Let u = fl32(fl32(v * scale) + y_zp) (t before the clamp), p = fl32(v * scale).
 *     Case |p| < 2^10: |v * scale| <= 2^10 (rounding is monotone), so |p - v * scale| <=
 *     ulp(2^9)/2 = 2^-15 (below 2^-149 if subnormal); |p + y_zp| < 2^10 + 256 < 2^11, so the
 *     add errs by at most ulp(2^10)/2 = 2^-14: |u - x| < 2^-15 + 2^-14 < 2^-13, and
 *     |d - x| < 2^-40. Case |p| >= 2^10: |v * scale| > 1023, so u, x and d all have the sign
 *     of p and magnitude above 1023 - 255 = 768, beyond both clamp bounds (in [-128, 255]).
 *   - u in [lo, hi] (then |p| < 2^10, t = u): t lies in (k - 1/2 + 2^-10, k + 1/2 - 2^-10)
 *     for an integer k in [lo, hi]; x and d, within 2^-13 + 2^-40 of t, lie strictly inside
 *     (k - 1/2, k + 1/2), so rint(d) = k = y and the clamp keeps k.
 *   - u < lo (t = lo, y = lo): either |p| >= 2^10 (d < -768, Y = lo), or x < lo + 2^-13 and
 *     d < lo + 1/2, so rint(d) <= lo and Y = lo. u > hi likewise gives Y = hi = y.
 *   - t - rint(t) is exact in float32 (|t| <= 255). Exact ties fail the test and fall back,
 *     so ties to even are always the float64 path's. NaN (0 times an infinite multiplier):
 *     max(NaN, lo) is lo on both paths (x86 max returns the second operand).
 * (Monotone rounding and float32-representable ties actually make any non-tie t exact; the
 * 2^-10 margin keeps the argument independent of that.) */
QC_INLINE int32_t qc_gemm_requant1(int32_t v, float scale, int32_t y_zp, int32_t lo,
                                    int32_t hi) {
    double d = (double)v * (double)scale + (double)y_zp;
    d = rint(d);
    if (d < (double)lo) d = (double)lo;
    if (d > (double)hi) d = (double)hi;
    return (int32_t)d;
}

/* ONNX Runtime's requantization (MLAS MlasRequantizeOutput and its ConvSym kernels on x86-64):
 * the float32 product, clamped to the bounds shifted by the zero point, rounded to nearest
 * even, then the zero point added (qc_requant_f32):
 *   y = clamp(rint(fl32(fl32(v) * scale)), lo - y_zp, hi - y_zp) + y_zp
 * It differs from qc_gemm_requant1 only where fl32(v * scale) lands on a tie k + 1/2 (or where
 * |v| >= 2^24 loses bits in fl32(v)). The product is never NaN: the callers' scales are finite
 * (the bindings refuse others). */
QC_INLINE int32_t qc_gemm_requant1_f32(int32_t v, float scale, int32_t y_zp, int32_t lo,
                                        int32_t hi) {
    /* float32 (SSE arithmetic; -ffp-contract=off: no FMA) */
    return qc_requant_f32((float)v * scale, (float)(lo - y_zp), (float)(hi - y_zp), y_zp);
}

/* rq32: ONNX Runtime's requantization, else the float64 reference. */
QC_INLINE int32_t qc_gemm_requant1_by(int rq32, int32_t v, float scale, int32_t y_zp,
                                      int32_t lo, int32_t hi) {
    return rq32 ? qc_gemm_requant1_f32(v, scale, y_zp, lo, hi)
                : qc_gemm_requant1(v, scale, y_zp, lo, hi);
}

#endif
