/* Scalar reference kernels of the q4gemm family (plain C, the formula of q4gemm.h). */
#include "q4gemm/kernels.h"

/* u[16p + c][kk] from the packed panel (layout in q4gemm.h) */
QC_INLINE int32_t nibble(const uint8_t *panel, int64_t kk, int c) {
    const uint8_t v = panel[qc_q4_nibble_byte(kk, c)];
    return qc_q4_nibble_high(kk) ? v >> 4 : v & 15;
}

/* y[i][16p + c] by the formula, the weights read from the packed panel (u == NULL: the GEMV
 * path) or from an unpacked one (the GEMM path) */
static void cell(const qc_q4_args *g, int64_t i, int64_t p, int c, const uint8_t *u) {
    const qc_q4_b *b = g->b;
    const int8_t *q = g->q + i * b->kp;
    const uint8_t *panel = b->data + p * b->kp * 8;
    float y = 0.0f;
    for (int64_t blk = 0; blk < b->nb; blk++) {
        int64_t k0, k1;
        qc_q4_block_range(b, blk, &k0, &k1);
        int32_t dot = 0;
        for (int64_t kk = k0; kk < k1; kk++)
            dot += (int32_t)q[kk] * (u ? (int32_t)u[qc_q4_unpacked_byte(kk, c)]
                                       : nibble(panel, kk, c));
        const int32_t acc = dot - qc_q4_zu(b, p, blk, c) * g->qsum[i * b->nb + blk];
        y = qc_q4_step(y, acc, g->xs[i], b->scale[(p * b->nb + blk) * QC_Q4_NR + c]);
    }
    if (g->bias) y = y + g->bias[p * QC_Q4_NR + c];
    g->y[i * g->ldy + p * QC_Q4_NR + c] = y;
}

static void gemv_scalar(const qc_q4_args *g, int64_t i, int64_t p, int nc) {
    for (int c = 0; c < nc; c++) cell(g, i, p, c, NULL);
}

static void unpack_scalar(const qc_q4_b *b, int64_t p, uint8_t *dst) {
    const uint8_t *panel = b->data + p * b->kp * 8;
    for (int64_t kk = 0; kk < b->kp; kk++)
        for (int c = 0; c < QC_Q4_NR; c++)
            dst[qc_q4_unpacked_byte(kk, c)] = (uint8_t)nibble(panel, kk, c);
}

static void tile_scalar(const qc_q4_args *g, const uint8_t *u, int64_t i0, int mr, int64_t p,
                        int nc) {
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < nc; c++) cell(g, i0 + r, p, c, u);
}

const qc_q4_kernels qc_q4_kernels_scalar = {"q4gemm_4x16c32__scalar", 4, gemv_scalar,
                                            unpack_scalar, tile_scalar};
