/* Scalar reference kernel of the small-group convolution (gconv.h), and the family. */
#include "conv/gconv.h"
#include "gemm/kernels.h"

static void run_scalar(const qc_gconv_tile *t) {
    const size_t K = t->ntaps * t->cq * 4;
    for (size_t m = 0; m < t->nch; m++) {
        const int8_t *w = t->w + m * K;
        for (size_t p = 0; p < t->L; p++) {
            uint32_t acc = (uint32_t)t->cterm[m];
            for (size_t j = 0; j < t->ntaps; j++) {
                for (size_t q = 0; q < t->cq; q++) {
                    const uint8_t *x = t->x4 + (q * t->plane + t->off[j] + p) * 4;
                    const int8_t *wq = w + (j * t->cq + q) * 4;
                    for (int b = 0; b < 4; b++)
                        acc += (uint32_t)((int32_t)x[b] * (int32_t)wq[b]);
                }
            }
            const size_t oy = p / t->Wp, ox = p % t->Wp;
            if (ox >= t->OW) continue;
            const size_t at = m * t->ldy + oy * t->OW + ox;
            if (t->out == QC_GEMM_OUT_S32) {
                ((int32_t *)t->y)[at] = (int32_t)acc;
            } else {
                const int32_t y = qc_gemm_requant1_by(t->rq32, (int32_t)acc, t->scale[m],
                                                      t->y_zp, t->lo, t->hi);
                if (t->out == QC_GEMM_OUT_S8) ((int8_t *)t->y)[at] = (int8_t)y;
                else ((uint8_t *)t->y)[at] = (uint8_t)y;
            }
        }
    }
}

static void quads_scalar(const uint8_t *const rows[4], uint8_t flip, size_t n, uint8_t *dst) {
    for (size_t j = 0; j < n; j++)
        for (int i = 0; i < 4; i++) dst[4 * j + (size_t)i] = (uint8_t)(rows[i][j] ^ flip);
}

const qc_gconv_kernels qc_gconv_kernels_scalar = {"conv_gconv_quads__scalar", run_scalar,
                                                  quads_scalar};

static const qc_variant gconv_variants[] = {
#ifndef QC_NO_X86
    {"conv_gconv_4x64c4__avx512vnni", QC_ISA_AVX512VNNI, &qc_gconv_kernels_avx512vnni},
#endif
    {"conv_gconv_quads__scalar", QC_ISA_SCALAR, &qc_gconv_kernels_scalar},
};

const qc_family qc_gconv_family = {"conv_gconv", sizeof gconv_variants / sizeof gconv_variants[0],
                                   gconv_variants};
