/* Micro-kernel interface of the q4gemm family: a GEMV panel call and a GEMM tile per variant. */
#ifndef QC_Q4GEMM_KERNELS_H
#define QC_Q4GEMM_KERNELS_H

#include "q4gemm/q4gemm.h"

struct qc_q4_kernels {
    const char *name;
    int mr; /* most rows per GEMM tile call */
    /* GEMV path: row i of args, panel p, straight from the packed nibbles; stores the first
     * nc (<= 16) columns of the panel. */
    void (*gemv)(const qc_q4_args *g, int64_t i, int64_t p, int nc);
    /* Unpack panel p to kp * 16 bytes at dst (layout in q4gemm.h; 4-bit only). */
    void (*unpack)(const qc_q4_b *b, int64_t p, uint8_t *dst);
    /* GEMM path: rows [i0, i0 + mr) with the unpacked panel p at u (u in [0, 255] for bits
     * 8); stores nc columns. */
    void (*tile)(const qc_q4_args *g, const uint8_t *u, int64_t i0, int mr, int64_t p, int nc);
};

extern const qc_q4_kernels qc_q4_kernels_scalar;
extern const qc_q4_kernels qc_q4_kernels_avx2;
extern const qc_q4_kernels qc_q4_kernels_avx512vnni;

/* Zero point of panel p, block b, column c (8, or 128 for bits 8, when none is stored). */
QC_INLINE int32_t qc_q4_zu(const qc_q4_b *b, int64_t p, int64_t blk, int c) {
    return b->zp ? (int32_t)b->zp[(p * b->nb + blk) * QC_Q4_NR + c] : b->bits == 8 ? 128 : 8;
}

/* log2 of the default zero point (8 or 128): zu * qsum as a shift */
QC_INLINE int qc_q4_zu_shift(const qc_q4_b *b) { return b->bits == 8 ? 7 : 3; }

/* The packed k range of block blk: [k0, k1), both multiples of 32 (the last block ends at kp). */
QC_INLINE void qc_q4_block_range(const qc_q4_b *b, int64_t blk, int64_t *k0, int64_t *k1) {
    *k0 = blk * b->bs;
    *k1 = QC_MIN(*k0 + b->bs, b->kp);
}

/* The float step of the formula for one element: y + (float)acc * (xs * ws), each op rounded. */
QC_INLINE float qc_q4_step(float y, int32_t acc, float xs, float ws) {
    const float s = xs * ws;
    const float t = (float)acc * s;
    return y + t;
}

#endif
