/* TEMPORARY stand-in for the gemm branch's kernels (same API, plain loops); removed at merge. */
#include <string.h>

#include "conv/qops.h"
#include "gemm/gemm.h"

struct qc_gemm_kernels {
    int dummy;
};
static const qc_gemm_kernels stub_kernels = {0};
static const qc_variant stub_variants[] = {{"gemm_stub__scalar", QC_ISA_SCALAR, &stub_kernels}};
const qc_family qc_gemm_family = {"gemm_stub", 1, stub_variants};
const qc_gemm_kernels *qc_gemm_kernels_of(const qc_variant *v) { return v->impl; }

size_t qc_gemm_pack_b_size(int64_t k, int64_t n) {
    return (size_t)((k + 3) / 4 * 4) * (size_t)((n + 15) / 16 * 16);
}

/* stub layout: b' row-major k x n */
void qc_gemm_pack_b(const void *b, int b_signed, ptrdiff_t row_stride, ptrdiff_t col_stride,
                    int64_t k, int64_t n, int8_t *data, int32_t *colsum, qc_gemm_b *out) {
    const char *p = b;
    memset(colsum, 0, sizeof(int32_t) * (size_t)((n + 15) / 16 * 16));
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = 0; j < n; j++) {
            int v = b_signed ? (int)*(const int8_t *)(p + i * row_stride + j * col_stride)
                             : (int)*(const uint8_t *)(p + i * row_stride + j * col_stride) - 128;
            data[i * n + j] = (int8_t)v;
            colsum[j] += v;
        }
    out->k = k, out->n = n, out->kp = (k + 3) / 4 * 4, out->np = (n + 15) / 16 * 16;
    out->b_signed = b_signed, out->data = data, out->colsum = colsum;
}

size_t qc_gemm_workspace_size(int64_t k, int64_t ncols) {
    (void)k, (void)ncols;
    return 64;
}

void qc_gemm_run(const qc_gemm_args *a, void *workspace) {
    (void)workspace;
    const qc_gemm_b *b = a->b;
    for (int64_t i = 0; i < a->m; i++) {
        const char *ar = (const char *)a->a + i * a->lda;
        int32_t za = a->a_zp ? a->a_zp[a->a_zp_per_row ? i : 0] : 0;
        for (int64_t j = a->n0; j < a->n1; j++) {
            int32_t zb = a->b_zp ? a->b_zp[a->b_zp_per_col ? j : 0] : 0;
            if (!b->b_signed) zb -= 128;
            uint32_t acc = 0;
            for (int64_t k = 0; k < b->k; k++) {
                int32_t av = a->a_signed ? (int32_t)((const int8_t *)ar)[k]
                                         : (int32_t)((const uint8_t *)ar)[k];
                acc += (uint32_t)((av - za) * ((int32_t)b->data[k * b->n + j] - zb));
            }
            if (a->bias) acc += (uint32_t)a->bias[j];
            if (a->out == QC_GEMM_OUT_S32) {
                ((int32_t *)a->c)[i * a->ldc + j] = (int32_t)acc;
            } else {
                int s = a->out == QC_GEMM_OUT_S8;
                double qmin = s ? -128 : 0, qmax = s ? 127 : 255;
                double lo = a->relu && a->y_zp > qmin ? a->y_zp : qmin;
                int32_t v = qc_requant_f64((int32_t)acc, (double)a->scale[a->scale_per_col ? j : 0],
                                           (double)a->y_zp, lo, qmax);
                if (s) ((int8_t *)a->c)[i * a->ldc + j] = (int8_t)v;
                else ((uint8_t *)a->c)[i * a->ldc + j] = (uint8_t)v;
            }
        }
    }
}
