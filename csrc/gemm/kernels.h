/* Micro-kernel interface of the gemm family: one tile call per variant, shared scalar epilogue. */
#ifndef QC_GEMM_KERNELS_H
#define QC_GEMM_KERNELS_H

#include <math.h>

#include "gemm/gemm.h"

/* One tile: rows [0, mr) of the packed A block times the panels starting at column j0.
 * Every per-column array is indexed from j0 and readable for the whole tile width (the driver
 * pads them), so kernels load full vectors; only C stores are masked to nc columns. */
typedef struct {
    int64_t kp;
    const uint8_t *a;      /* row r: a + r * kp, values a' (u8), zero-padded to kp; with
                            * a16 the same values as uint16 (row r at a16 + r * kp) */
    const uint16_t *a16;
    const int32_t *rsum;   /* per row: rowsum(a') */
    const int32_t *zap;    /* per row: za' */
    const int8_t *b;       /* panel holding column j0; the next panel is kp * 16 bytes on */
    int pw0, pw1;          /* widths of those two panels (16, or narrower: the last panel of
                            * B; group stride 4 * width); pw1 = 0 when B has no next panel */
    const int32_t *zbp;    /* per column: zb' */
    const int32_t *bcorr;  /* per column: colsum(b') - K * zb' */
    const int32_t *cterm;  /* per column: bias (0 without bias) */
    const float *scale;    /* per column: requant/float scale (unused for int32 output) */
    const float *fbias;    /* per column: float bias (0 without; float output only) */
    void *c;               /* element (r, j0 + x) at c + r * ldc + x (in output elements) */
    ptrdiff_t ldc;
    qc_gemm_out out;
    int32_t y_zp, lo, hi;  /* requant: zero point and clamp bounds (relu already in lo) */
} qc_gemm_tile;

struct qc_gemm_kernels {
    const char *name;
    int mr;  /* most rows per tile call */
    int nr;  /* most columns per tile call (multiple of QC_GEMM_NR) */
    int a16; /* 1: the kernel reads A widened to uint16 (tile.a16), else u8 (tile.a) */
    void (*tile)(const qc_gemm_tile *t, int mr, int nc);
};

extern const qc_gemm_kernels qc_gemm_kernels_scalar;
extern const qc_gemm_kernels qc_gemm_kernels_avx2;
extern const qc_gemm_kernels qc_gemm_kernels_avxvnni;
extern const qc_gemm_kernels qc_gemm_kernels_avx512vnni;

/* The exact value of C: wrapping 32-bit arithmetic (see gemm.h). */
QC_INLINE int32_t qc_gemm_fix1(int32_t dot, int32_t cterm, int32_t zbp, int32_t rsum,
                                int32_t zap, int32_t bcorr) {
    uint32_t v = (uint32_t)dot + (uint32_t)cterm - (uint32_t)zbp * (uint32_t)rsum -
                 (uint32_t)zap * (uint32_t)bcorr;
    return (int32_t)v;
}

/* The requant epilogue for one element: float64 like onnx's reference, ties to even.
 *
 * SIMD kernels may take an exact float32 shortcut per vector (qc_gemm_requant_f32 lanes),
 * falling back to this float64 arithmetic for any vector where it is not proven equal:
 *   p = (float)v * scale, t = p + (float)y_zp (float32, two roundings, no FMA), y = clamp(rint(t))
 * is used only when every lane has |v| < 2^24 and either |p| >= 2^10, or |p| < 2^10 and
 * |t - rint(t)| < 1/2 - 2^-10. Proof that y then equals the float64 result:
 *   - |v| < 2^24: (float)v == v exactly, and v * scale (24 x 24 significant bits) is exact in
 *     float64, so the reference computes d = fl64(x) with x = v * scale + y_zp exactly known;
 *     |d - x| <= 2^-53 |x| < 2^-40 for |x| < 2^12.
 *   - |p| < 2^10: then |v * scale| <= 2^10 (rounding is monotone), so |p - v * scale| <=
 *     ulp(2^9)/2 = 2^-15 (absolute error below 2^-149 in the subnormal range); |p + y_zp| <
 *     2^10 + 256 < 2^11, so the add errs by at most ulp(2^10)/2 = 2^-14. Hence |t - x| <
 *     2^-15 + 2^-14 < 2^-13. If t lies in (k - 1/2 + 2^-10, k + 1/2 - 2^-10) for an integer k
 *     (that is |t - rint(t)| < 1/2 - 2^-10; t - rint(t) is exact in float32), then x and d,
 *     within 2^-13 + 2^-40 of t, lie strictly inside (k - 1/2, k + 1/2): rint(d) = k = rint(t),
 *     and the clamps agree.
 *   - |p| >= 2^10: |v * scale| >= 2^10 (1 - 2^-24) > 1023 with the sign of p, so |x|, |d|
 *     and |t| all exceed 1023 - 255 = 768 with that same sign; every clamp bound is in
 *     [-128, 255], so both sides clamp to hi (positive) or to lo (negative).
 *   - NaN (a zero times an infinite multiplier) fails both |p| tests and falls back.
 * Ties exactly at k + 1/2 (|t - rint(t)| = 1/2) always fall back, so ties to even are the
 * float64 path's. */
QC_INLINE int32_t qc_gemm_requant1(int32_t v, float scale, int32_t y_zp, int32_t lo,
                                    int32_t hi) {
    double d = (double)v * (double)scale + (double)y_zp;
    d = rint(d);
    if (d < (double)lo) d = (double)lo;
    if (d > (double)hi) d = (double)hi;
    return (int32_t)d;
}

#endif
