/* Scalar reference kernel of the NCHW conv GEMM (plain C, the layouts of nchw.h). */
#include "conv/nchw.h"
#include "gemm/kernels.h"

static void tile_scalar(const qc_nchw_tile *t, int mr, int npix) {
    const int64_t quads = t->kp / 4;
    for (int r = 0; r < mr; r++) {
        for (int j = 0; j < npix; j++) {
            uint32_t dot = 0;
            for (int64_t q = 0; q < quads; q++) {
                const int8_t *w = t->w + (q * QC_NCHW_MR + r) * 4;
                const uint8_t *x = t->x + q * t->xq + 4 * j;
                for (int b = 0; b < 4; b++) dot += (uint32_t)((int32_t)x[b] * (int32_t)w[b]);
            }
            /* C = dot - zw' * xsum + rterm, wrapping (gemm.h's qc_gemm_fix1 with za' = 0) */
            const int32_t v = qc_gemm_fix1((int32_t)dot, t->rterm[r], t->zwp[r],
                                           t->xsum ? t->xsum[j] : 0, 0, 0);
            const ptrdiff_t at = r * t->ldy + j;
            if (t->out == QC_GEMM_OUT_S32) {
                ((int32_t *)t->y)[at] = v;
            } else {
                const int32_t q = qc_gemm_requant1_by(t->rq32, v, t->scale[r], t->y_zp, t->lo,
                                                      t->hi);
                if (t->out == QC_GEMM_OUT_S8) ((int8_t *)t->y)[at] = (int8_t)q;
                else ((uint8_t *)t->y)[at] = (uint8_t)q;
            }
        }
    }
}

const qc_nchw_kernels qc_nchw_kernels_scalar = {"conv_nchw_8x48c4__scalar", tile_scalar};
