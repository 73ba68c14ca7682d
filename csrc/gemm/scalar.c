/* Scalar reference micro-kernel of the gemm family (any tile shape, plain C). */
#include "gemm/kernels.h"

static void tile_scalar(const qc_gemm_tile *t, int mr, int nc) {
    const int64_t kp = t->kp;
    for (int r = 0; r < mr; r++) {
        const uint8_t *a = t->a + r * kp;
        for (int x = 0; x < nc; x++) {
            const int p = x / QC_GEMM_NR;
            const int64_t gs = 4 * (p == 0 ? t->pw0 : t->pw1);
            const int8_t *b = t->b + p * kp * QC_GEMM_NR + (x % QC_GEMM_NR) * 4;
            uint32_t dot = 0;
            for (int64_t g = 0; g < kp / 4; g++) {
                for (int q = 0; q < 4; q++) {
                    dot += (uint32_t)((int32_t)a[4 * g + q] * (int32_t)b[g * gs + q]);
                }
            }
            int32_t v = qc_gemm_fix1((int32_t)dot, t->cterm[x], t->zbp[x], t->rsum[r], t->zap[r],
                                     t->bcorr[x]);
            switch (t->out) {
            case QC_GEMM_OUT_S32:
                ((int32_t *)t->c)[r * t->ldc + x] = v;
                break;
            case QC_GEMM_OUT_S8:
                ((int8_t *)t->c)[r * t->ldc + x] =
                    (int8_t)qc_gemm_requant1_by(t->rq32, v, t->scale[x], t->y_zp, t->lo, t->hi);
                break;
            case QC_GEMM_OUT_U8:
                ((uint8_t *)t->c)[r * t->ldc + x] =
                    (uint8_t)qc_gemm_requant1_by(t->rq32, v, t->scale[x], t->y_zp, t->lo, t->hi);
                break;
            case QC_GEMM_OUT_F32:
                ((float *)t->c)[r * t->ldc + x] =
                    (float)v * (t->rscale ? t->rscale[r] * t->scale[x] : t->scale[x]) +
                    t->fbias[x];
                break;
            }
        }
    }
}

const qc_gemm_kernels qc_gemm_kernels_scalar = {"gemm_4x16c4__scalar", 4, QC_GEMM_NR, 0, 0, tile_scalar};
