/* NCHW convolution driver: weight preparation, depthwise path, im2col + packed-GEMM path. */
#include "conv/conv.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "conv/nchw.h"
#include "conv/transpose.h"
#include "gemm/gemm.h"
#include "threads/pool.h"

/* ---- weights ---- */

/* Depthwise and small-group convolutions (fewer than QC_DIRECT_MAX_NG outputs per group, at most
 * QC_DIRECT_MAX_TAPS = Cg * kh * kw taps) run the direct per-plane kernel: a GEMM with a handful
 * of columns per group would waste most of its tile. */
#define QC_DIRECT_MAX_NG 16
#define QC_DIRECT_MAX_TAPS 256

void qc_conv_weights_free(qc_conv_weights *cw) {
    if (!cw) return;
    if (cw->gemm) {
        for (size_t g = 0; g < cw->G; g++) free(cw->gemm[g]);
        free(cw->gemm);
    }
    free(cw->wt);
    free(cw->wzp);
    free(cw->wdw);
    free(cw->nchw);
    free(cw->wsum);
    free(cw);
}

/* One group's packed B (= W_g^T, K x Ng) with its column sums, in one allocation:
 * [qc_gemm_b][pad to 64][data][colsum]. */
static qc_gemm_b *pack_group(const int8_t *wt_g, int w_signed, size_t K, size_t Ng) {
    size_t head = (sizeof(qc_gemm_b) + 63) & ~(size_t)63;
    size_t dbytes = (qc_gemm_pack_b_size((int64_t)K, (int64_t)Ng) + 63) & ~(size_t)63;
    size_t np = (Ng + QC_GEMM_NR - 1) / QC_GEMM_NR * QC_GEMM_NR;
    char *mem = aligned_alloc(64, head + dbytes + ((np * sizeof(int32_t) + 63) & ~(size_t)63));
    if (!mem) return NULL;
    qc_gemm_b *b = (qc_gemm_b *)mem;
    qc_gemm_pack_b(wt_g, w_signed, 1, (ptrdiff_t)K, (int64_t)K, (int64_t)Ng,
                   (int8_t *)(mem + head), (int32_t *)(mem + head + dbytes), b);
    return b;
}

qc_conv_weights *qc_conv_weights_create(const void *w, int w_signed, const int32_t *wzp,
                                        int wzp_per_channel, size_t M, size_t Cg, size_t kh,
                                        size_t kw, size_t G) {
    qc_conv_weights *cw = calloc(1, sizeof *cw);
    if (!cw) return NULL;
    const size_t K = kh * kw * Cg, taps = kh * kw;
    cw->M = M, cw->Cg = Cg, cw->kh = kh, cw->kw = kw, cw->G = G, cw->K = K;
    cw->w_signed = w_signed;
    cw->wzp_per_channel = wzp_per_channel;
    cw->wt = malloc(QC_MAX(M * K, (size_t)1));
    cw->wzp = malloc((M ? M : 1) * sizeof(int32_t));
    if (!cw->wt || !cw->wzp) goto fail;
    memcpy(cw->wzp, wzp, M * sizeof(int32_t));
    /* (M, Cg, kh, kw) -> (M, kh, kw, Cg): the layout of an NHWC patch */
    const uint8_t *src = w;
    uint8_t *dst = (uint8_t *)cw->wt;
    for (size_t m = 0; m < M; m++)
        for (size_t c = 0; c < Cg; c++)
            for (size_t t = 0; t < taps; t++)
                dst[m * K + t * Cg + c] = src[(m * Cg + c) * taps + t];
    if (Cg == 1 || (M / G < QC_DIRECT_MAX_NG && K <= QC_DIRECT_MAX_TAPS)) {
        /* the direct path: taps w - w_zp in w's own (c, ky, kx) order */
        cw->wdw = malloc(QC_MAX(M * K, (size_t)1) * sizeof(int16_t));
        if (!cw->wdw) goto fail;
        for (size_t i = 0; i < M * K; i++) {
            int32_t v = w_signed ? (int32_t)((const int8_t *)w)[i] : (int32_t)src[i];
            cw->wdw[i] = (int16_t)(v - wzp[i / K]);
        }
    } else {
        const size_t Ng = M / G;
        cw->gemm = calloc(G, sizeof(void *));
        if (!cw->gemm) goto fail;
        for (size_t g = 0; g < G; g++) {
            cw->gemm[g] = pack_group(cw->wt + g * Ng * K, w_signed, K, Ng);
            if (!cw->gemm[g]) goto fail;
        }
    }
    if (cw->gemm && qc_nchw_may_use(kh == 1 && kw == 1)) {
        /* the NCHW GEMM takes w in its own (c, ky, kx) order */
        const size_t Ng = M / G;
        cw->nchw_group = qc_nchw_pack_w_size(Ng, K);
        cw->nchw = aligned_alloc(64, QC_MAX((G * cw->nchw_group + 63) & ~(size_t)63, 64));
        cw->wsum = malloc(QC_MAX(M, (size_t)1) * sizeof(int32_t));
        if (!cw->nchw || !cw->wsum) goto fail;
        for (size_t g = 0; g < G; g++) {
            qc_nchw_pack_w((const uint8_t *)w + g * Ng * K, w_signed, Ng, K,
                           cw->nchw + g * cw->nchw_group, cw->wsum + g * Ng);
        }
    }
    return cw;
fail:
    qc_conv_weights_free(cw);
    return NULL;
}

const char *qc_conv_path(const qc_conv_weights *w) { return w->wdw ? "direct" : "gemm"; }

/* ---- shared run state ---- */

typedef struct {
    const qc_conv_args *a;
    const qc_qops_impl *ops;
    const qc_gemm_kernels *gk;
    const uint8_t *x;   /* NCHW input */
    const uint8_t *xt;  /* NHWC input (GEMM path) */
    uint8_t *xt_w;
    void *y;
    double lo, hi;
    size_t M, Ng, K, P, pb, nblocks;
    int direct;         /* 1x1, stride 1, no padding: A is a transposed block of x, no im2col */
    int span;           /* GEMM path: blocks run over all images' pixels (n * P + p), so planes
                         * smaller than a block share one GEMM call */
    /* NCHW path: its kernels, per-channel rterm and zw' (nchw.h), rows per task (mchunk, a
     * multiple of QC_NCHW_MR), and whether the pixel sums are needed (some zw' != 0) */
    const qc_nchw_kernels *nk;
    int32_t *rterm, *zwp;
    size_t mchunk, nmchunks;
    int need_xsum;
    int small;          /* |C| < 2^24 for every output (K * 255 * 255 + max |bias|) */
    int lean;           /* small, and every multiplier in [0, 64) (qc_nchw_tile.lean) */
    atomic_int failed;
} run_ctx;

static void bounds(const qc_conv_args *a, double *lo, double *hi) {
    double qmin = a->y_signed ? -128.0 : 0.0, qmax = a->y_signed ? 127.0 : 255.0;
    *lo = a->relu && (double)a->y_zp > qmin ? (double)a->y_zp : qmin;
    *hi = qmax;
}

/* ---- depthwise path: one task per (image, output channel) plane ---- */

/* The scratch of a task (the stride-phase sub-planes and the accumulator) covers a band of
 * output rows, not the whole plane: a band of OHb rows reads the padded rows [oy0 * sh,
 * oy0 * sh + (OHb - 1) * sh + eh), a plane of its own whose phases line up with the whole
 * plane's (oy0 * sh is a multiple of sh), so every output is the same sum of the same taps
 * whatever the banding. Bands hold about QC_DW_BAND_BYTES of scratch; planes of usual sizes
 * (up to a few hundred rows) are one band. */
#define QC_DW_BAND_BYTES ((size_t)1 << 20)
#define QC_BAND_ROWS(budget, per_row) ((per_row) ? (budget) / (per_row) : (budget))
static atomic_size_t g_dw_band_force; /* tests: rows per band (0: from the budget) */

size_t qc_dw_band_force(size_t rows) { return atomic_exchange(&g_dw_band_force, rows); }

/* Output rows per band for this call. */
static size_t dw_band_rows(const qc_conv_args *a) {
    const size_t forced = atomic_load(&g_dw_band_force);
    if (forced) return QC_MIN(forced, QC_MAX(a->OH, (size_t)1));
    const size_t sh = (size_t)a->sh, sw = (size_t)a->sw;
    const size_t PWs = (a->pl + a->W + a->pr + sw - 1) / sw;
    /* per output row: sh padded rows of every sub-plane set (int16) and one accumulator row */
    const size_t per_row = a->w->Cg * sh * sw * PWs * sizeof(int16_t) + PWs * sizeof(int32_t);
    const size_t rows = QC_BAND_ROWS(QC_DW_BAND_BYTES, per_row);
    return QC_MIN(QC_MAX(rows, (size_t)1), QC_MAX(a->OH, (size_t)1));
}

/* Sub-plane geometry for bands of up to `band` output rows; *cs: elements per input channel's
 * set; *nxs: all Cg sets plus slack; *nacc_bytes: the accumulator. */
static void dw_geom(const qc_conv_args *a, size_t band, qc_dw_geom *d, size_t *cs, size_t *nxs,
                    size_t *nacc_bytes) {
    const size_t sh = (size_t)a->sh, sw = (size_t)a->sw;
    const size_t eh = (a->w->kh - 1) * (size_t)a->dh + 1;
    const size_t PH = (band - 1) * sh + eh, PW = a->pl + a->W + a->pr;
    d->PHs = (PH + sh - 1) / sh;
    d->PWs = (PW + sw - 1) / sw;
    d->plane_stride = d->PHs * d->PWs;
    d->ntaps = a->w->K;
    *cs = sh * sw * d->plane_stride;
    *nxs = a->w->Cg * *cs + QC_DW_SLACK;
    *nacc_bytes = (band * d->PWs + QC_DW_SLACK) * sizeof(int32_t);
}

/* One unit (image n, group g), band by band: the group's Cg input planes' rows for the band
 * into their stride-phase sub-planes (see qc_dw_geom; channel c's set at xs + c * cs), then
 * the kernel for each of the group's output channels. xs/acc are the task's scratch. */
static void dw_unit(const run_ctx *ctx, size_t n, size_t grp, const qc_dw_geom *d, size_t cs,
                    size_t band, int16_t *xs, int32_t *acc) {
    const qc_conv_args *a = ctx->a;
    const qc_conv_weights *w = a->w;
    const size_t M = w->M, Cg = w->Cg, Ng = M / w->G;
    const size_t H = a->H, W = a->W, sh = (size_t)a->sh;
    const size_t eh = (w->kh - 1) * (size_t)a->dh + 1;
    for (size_t oy0 = 0; oy0 < a->OH; oy0 += band) {
        const size_t ohb = QC_MIN(band, a->OH - oy0), phb = (ohb - 1) * sh + eh;
        /* input rows of the band's padded rows [oy0 * sh, oy0 * sh + phb) */
        const ptrdiff_t top = (ptrdiff_t)(oy0 * sh) - a->pt;
        const ptrdiff_t iy0 = QC_MAX(top, (ptrdiff_t)0);
        const ptrdiff_t iy1 = QC_MAX(QC_MIN(top + (ptrdiff_t)phb, (ptrdiff_t)H), iy0);
        const size_t hb = (size_t)(iy1 - iy0), ptb = QC_MIN((size_t)(iy0 - top), phb);
        qc_win2d g = {hb, W, ohb, a->OW, (int)w->kh, (int)w->kw, a->sh, a->sw, a->dh, a->dw,
                      (int)ptb, a->pl, (int)(phb - ptb - QC_MIN(hb, phb - ptb)), a->pr};
        for (size_t c = 0; c < Cg; c++) {
            ctx->ops->dw_pack(ctx->x + ((n * a->C + grp * Cg + c) * H + (size_t)iy0) * W,
                              a->x_signed, a->xzp, &g, d, xs + c * cs);
        }
        for (size_t j = 0; j < Ng; j++) {
            const size_t m = grp * Ng + j;
            qc_dw_params p = {a->bias ? a->bias[m] : 0, a->out_int32 ? 0.0 : (double)a->mult[m],
                              (double)a->y_zp, ctx->lo, ctx->hi};
            const size_t out = (n * M + m) * a->OH * a->OW + oy0 * a->OW;
            ctx->ops->dwconv(xs, d, w->wdw + m * w->K, &g, &p, acc,
                             a->out_int32 ? (int32_t *)ctx->y + out : NULL,
                             (int8_t *)ctx->y + out, a->y_signed);
        }
    }
}

/* A task handles units [task * per, ...) of the N * G (image, group) units. */
static void dw_task(void *vctx, size_t task) {
    run_ctx *ctx = vctx;
    const qc_conv_args *a = ctx->a;
    const size_t G = a->w->G, total = a->N * G;
    const size_t u0 = task * ctx->pb, u1 = QC_MIN(total, u0 + ctx->pb);
    const size_t kh = a->w->kh, kw = a->w->kw, sh = (size_t)a->sh, sw = (size_t)a->sw;
    const size_t band = dw_band_rows(a);
    qc_dw_geom d;
    size_t cs, nxs, nacc;
    dw_geom(a, band, &d, &cs, &nxs, &nacc);
    const size_t xbytes = (nxs * sizeof(int16_t) + 63) & ~(size_t)63;
    const size_t obytes = (d.ntaps * sizeof(size_t) + 63) & ~(size_t)63;
    char *mem = malloc(xbytes + obytes + nacc);
    if (!mem) {
        atomic_store(&ctx->failed, 1);
        return;
    }
    size_t *off = (size_t *)(mem + xbytes);
    for (size_t c = 0; c < a->w->Cg; c++) {
        for (size_t ky = 0; ky < kh; ky++) {
            for (size_t kx = 0; kx < kw; kx++) {
                const size_t ry = ky * (size_t)a->dh, rx = kx * (size_t)a->dw;
                off[(c * kh + ky) * kw + kx] = c * cs +
                    (ry % sh * sw + rx % sw) * d.plane_stride + ry / sh * d.PWs + rx / sw;
            }
        }
    }
    d.tap_off = off;
    for (size_t u = u0; u < u1; u++) dw_unit(ctx, u / G, u % G, &d, cs, band, (int16_t *)mem,
                                             (int32_t *)(mem + xbytes + obytes));
    free(mem);
}

/* ---- GEMM path ---- */

/* NCHW -> NHWC, one task per (image, block of 256 pixels). */
static void nhwc_task(void *vctx, size_t task) {
    run_ctx *ctx = vctx;
    const qc_conv_args *a = ctx->a;
    const size_t HW = a->H * a->W, nb = (HW + 255) / 256;
    const size_t n = task / nb, p0 = task % nb * 256, np = QC_MIN(256, HW - p0);
    qc_transpose_u8(ctx->x + n * a->C * HW + p0, a->C, np, HW,
                    ctx->xt_w + (n * HW + p0) * a->C, a->C);
}

/* Rows [p0, p0 + rows) of image n's patch matrix for group g: row i is output pixel p0 + i,
 * K = kh * kw * Cg bytes in (ky, kx, c) order; taps in the padding hold x_zp (ONNX pads the
 * zero-point-subtracted input with 0). */
static void im2col(const run_ctx *ctx, size_t n, size_t g, size_t p0, size_t rows, uint8_t *A) {
    const qc_conv_args *a = ctx->a;
    const qc_conv_weights *w = a->w;
    const size_t Cg = w->Cg, C = a->C, K = ctx->K, kh = w->kh, kw = w->kw;
    const uint8_t *img = ctx->xt + n * a->H * a->W * C + g * Cg;
    const uint8_t fill = (uint8_t)a->xzp;
    for (size_t i = 0; i < rows; i++) {
        const size_t p = p0 + i, oy = p / a->OW, ox = p % a->OW;
        uint8_t *row = A + i * K;
        for (size_t ky = 0; ky < kh; ky++) {
            ptrdiff_t iy = (ptrdiff_t)(oy * a->sh + ky * a->dh) - a->pt;
            for (size_t kx = 0; kx < kw; kx++) {
                ptrdiff_t ix = (ptrdiff_t)(ox * a->sw + kx * a->dw) - a->pl;
                uint8_t *dst = row + (ky * kw + kx) * Cg;
                if (iy < 0 || iy >= (ptrdiff_t)a->H || ix < 0 || ix >= (ptrdiff_t)a->W) {
                    memset(dst, fill, Cg);
                } else {
                    memcpy(dst, img + ((size_t)iy * a->W + (size_t)ix) * C, Cg);
                }
            }
        }
    }
}

/* One task: group g and a block of output pixels (of image n, or with ctx->span of the
 * images' pixels n * P + p in a row): im2col into A (unless direct), the GEMM into a
 * rows x Ng block of C (int32 or requantized bytes), then C transposed into the NCHW output,
 * one image's run of pixels at a time. */
static void gemm_task(void *vctx, size_t task) {
    run_ctx *ctx = vctx;
    const qc_conv_args *a = ctx->a;
    const qc_conv_weights *w = a->w;
    const size_t G = w->G, Ng = ctx->Ng, K = ctx->K, P = ctx->P;
    const size_t blk = task % ctx->nblocks, ng = task / ctx->nblocks;
    const size_t g = ctx->span ? ng : ng % G;
    /* q0: the block's first pixel in the (image, pixel) order of the whole batch */
    const size_t q0 = ctx->span ? blk * ctx->pb : ng / G * P + blk * ctx->pb;
    const size_t qend = ctx->span ? a->N * P : (ng / G + 1) * P;
    const size_t rows = QC_MIN(ctx->pb, qend - q0);
    const size_t esize = a->out_int32 ? sizeof(int32_t) : 1;
    const size_t wsz = (qc_gemm_workspace_size((int64_t)K, (int64_t)Ng) + 63) & ~(size_t)63;
    const size_t cbytes = (rows * Ng * esize + 63) & ~(size_t)63;
    const size_t abytes = (rows * K + 63) & ~(size_t)63;
    char *mem = aligned_alloc(64, wsz + cbytes + abytes + 64);
    if (!mem) {
        atomic_store(&ctx->failed, 1);
        return;
    }
    void *ws = mem;
    void *cbuf = mem + wsz;
    const uint8_t *A;
    ptrdiff_t lda;
    uint8_t *Ab = (uint8_t *)(mem + wsz + cbytes);
    for (size_t q = q0; q < q0 + rows;) { /* each image's run of pixels in the block */
        const size_t n = q / P, p = q % P, seg = QC_MIN(P - p, q0 + rows - q);
        if (ctx->direct) {
            /* 1x1, stride 1, no padding: A is this block of pixels' channels, transposed
             * from NCHW right here (it stays in cache for the GEMM) */
            qc_transpose_u8(ctx->x + (n * a->C + g * w->Cg) * P + p, w->Cg, seg, P,
                            Ab + (q - q0) * w->Cg, w->Cg);
        } else {
            im2col(ctx, n, g, p, seg, Ab + (q - q0) * K);
        }
        q += seg;
    }
    A = Ab;
    lda = (ptrdiff_t)(ctx->direct ? w->Cg : K);
    qc_gemm_args ga;
    memset(&ga, 0, sizeof ga);
    ga.a = A;
    ga.lda = lda;
    ga.a_signed = a->x_signed;
    ga.m = (int64_t)rows;
    ga.a_zp = &a->xzp;
    ga.b = (const qc_gemm_b *)w->gemm[g];
    ga.b_zp = w->wzp_per_channel ? w->wzp + g * Ng : w->wzp;
    ga.b_zp_per_col = w->wzp_per_channel;
    ga.n0 = 0;
    ga.n1 = (int64_t)Ng;
    ga.c = cbuf;
    ga.ldc = (ptrdiff_t)Ng;
    ga.kernels = ctx->gk;
    if (a->out_int32) {
        ga.out = QC_GEMM_OUT_S32;
    } else {
        ga.out = a->y_signed ? QC_GEMM_OUT_S8 : QC_GEMM_OUT_U8;
        ga.bias = a->bias ? a->bias + g * Ng : NULL;
        ga.scale = a->mult + g * Ng;
        ga.scale_per_col = 1;
        ga.y_zp = a->y_zp;
        ga.relu = a->relu;
    }
    qc_gemm_run(&ga, ws);
    const size_t M = w->M;
    for (size_t q = q0; q < q0 + rows;) {
        const size_t n = q / P, p = q % P, seg = QC_MIN(P - p, q0 + rows - q);
        if (a->out_int32) {
            qc_transpose_u32((const uint32_t *)cbuf + (q - q0) * Ng, seg, Ng, Ng,
                             (uint32_t *)ctx->y + (n * M + g * Ng) * P + p, P);
        } else {
            qc_transpose_u8((const uint8_t *)cbuf + (q - q0) * Ng, seg, Ng, Ng,
                            (uint8_t *)ctx->y + (n * M + g * Ng) * P + p, P);
        }
        q += seg;
    }
    free(mem);
}

/* ---- NCHW GEMM path (nchw.h): weights on rows, pixels on columns ---- */

/* Row k = (c, ky, kx) of image n's group-g im2col matrix for the output pixels
 * [p0, p0 + nb): x[c][oy * sh + ky * dh - pt][ox * sw + kx * dw - pl], or x_zp where that
 * falls in the padding (ONNX pads the zero-point-subtracted input with 0). */
static void nchw_row(const run_ctx *ctx, size_t n, size_t g, size_t k, size_t p0, size_t nb,
                     uint8_t *dst) {
    const qc_conv_args *a = ctx->a;
    const qc_conv_weights *w = a->w;
    const size_t taps = w->kh * w->kw, c = k / taps, ky = k % taps / w->kw, kx = k % w->kw;
    const size_t W = a->W, OW = a->OW, sw = (size_t)a->sw;
    const uint8_t *plane = ctx->x + (n * a->C + g * w->Cg + c) * a->H * W;
    const uint8_t fill = (uint8_t)a->xzp;
    const ptrdiff_t dy = (ptrdiff_t)ky * a->dh - a->pt, dx = (ptrdiff_t)kx * a->dw - a->pl;
    /* the output columns [oxa, oxb) read inside the row: 0 <= ox * sw + dx < W */
    size_t oxa = dx < 0 ? (size_t)(-dx + (ptrdiff_t)sw - 1) / sw : 0;
    const ptrdiff_t lim = (ptrdiff_t)W - dx;
    size_t oxb = lim <= 0 ? 0 : (size_t)(lim + (ptrdiff_t)sw - 1) / sw;
    oxb = QC_MIN(oxb, OW);
    oxa = QC_MIN(oxa, oxb);
    for (size_t p = p0, end = p0 + nb; p < end;) {
        const size_t oy = p / OW, ox = p % OW, run = QC_MIN(OW - ox, end - p);
        const ptrdiff_t iy = (ptrdiff_t)(oy * (size_t)a->sh) + dy;
        if (iy < 0 || iy >= (ptrdiff_t)a->H) {
            memset(dst, fill, run);
        } else {
            const uint8_t *src = plane + (size_t)iy * W;
            /* this run's columns [ox, ox + run): fill, then [a0, b0) read, then fill */
            const size_t a0 = QC_MIN(QC_MAX(ox, oxa), ox + run);
            const size_t b0 = QC_MAX(a0, QC_MIN(ox + run, oxb));
            memset(dst, fill, a0 - ox);
            if (sw == 1) {
                memcpy(dst + (a0 - ox), src + (ptrdiff_t)a0 + dx, b0 - a0);
            } else {
                for (size_t o = a0; o < b0; o++) dst[o - ox] = src[(ptrdiff_t)(o * sw) + dx];
            }
            memset(dst + (b0 - ox), fill, ox + run - b0);
        }
        dst += run;
        p += run;
    }
}

/* The pixel panel (nchw.h) of pixels [p0, p0 + nb) for image n, group g: np = round_up(nb,
 * 16) columns, the ones past nb zero; tmp holds 4 rows of np bytes; xsum (np entries, or
 * NULL) gets each pixel's sum of x' over K. A 1x1, stride-1, unpadded conv reads whole blocks
 * of pixels straight from x's planes. */
static void nchw_panel(const run_ctx *ctx, size_t n, size_t g, size_t p0, size_t nb, size_t np,
                       uint8_t *panel, uint8_t *tmp, int32_t *xsum) {
    const qc_conv_args *a = ctx->a;
    const size_t K = ctx->K, kp = qc_nchw_kp(K);
    const uint8_t flip = a->x_signed ? 0x80 : 0;
    for (size_t i = 0; i < 4; i++) memset(tmp + i * np + nb, 0, np - nb);
    for (size_t q = 0; q < kp / 4; q++) {
        const uint8_t *rows[4];
        for (size_t i = 0; i < 4; i++) {
            const size_t k = 4 * q + i;
            if (k >= K) {
                rows[i] = NULL;
            } else if (ctx->direct && p0 + np <= ctx->P) {
                rows[i] = ctx->x + (n * a->C + g * a->w->Cg + k) * ctx->P + p0;
            } else if (ctx->direct) { /* the plane's last block: np would read past it */
                memcpy(tmp + i * np, ctx->x + (n * a->C + g * a->w->Cg + k) * ctx->P + p0, nb);
                rows[i] = tmp + i * np;
            } else {
                nchw_row(ctx, n, g, k, p0, nb, tmp + i * np);
                rows[i] = tmp + i * np;
            }
        }
        qc_nchw_interleave4(rows, flip, np, panel + q * 4 * np);
    }
    if (!xsum) return;
    for (size_t j = 0; j < np; j++) xsum[j] = 0;
    for (size_t q = 0; q < kp / 4; q++) {
        const uint8_t *quad = panel + q * 4 * np;
        for (size_t j = 0; j < np; j++)
            xsum[j] += quad[4 * j] + quad[4 * j + 1] + quad[4 * j + 2] + quad[4 * j + 3];
    }
}

/* One task: image n, group g, a block of pixels and a chunk of the group's output channels.
 * The panel is built once (about 96 KiB, it stays in L2); then each weight tile of the chunk
 * (8 rows, in L1) meets all of it in one kernel call. */
static void nchw_task(void *vctx, size_t task) {
    run_ctx *ctx = vctx;
    const qc_conv_args *a = ctx->a;
    const qc_conv_weights *w = a->w;
    const size_t G = w->G, Ng = ctx->Ng, P = ctx->P, M = w->M;
    const size_t mc = task % ctx->nmchunks, blk = task / ctx->nmchunks % ctx->nblocks;
    const size_t ng = task / ctx->nmchunks / ctx->nblocks, g = ng % G, n = ng / G;
    const size_t p0 = blk * ctx->pb, nb = QC_MIN(ctx->pb, P - p0), np = (nb + 15) & ~(size_t)15;
    const size_t m0 = mc * ctx->mchunk, m1 = QC_MIN(Ng, m0 + ctx->mchunk);
    const size_t kp = qc_nchw_kp(ctx->K);
    const size_t pbytes = (kp * np + 63) & ~(size_t)63;
    char *mem = aligned_alloc(64, pbytes + 4 * np + np * sizeof(int32_t) + 64);
    if (!mem) {
        atomic_store(&ctx->failed, 1);
        return;
    }
    uint8_t *panel = (uint8_t *)mem, *tmp = (uint8_t *)mem + pbytes;
    int32_t *xsum = ctx->need_xsum ? (int32_t *)(mem + pbytes + 4 * np) : NULL;
    nchw_panel(ctx, n, g, p0, nb, np, panel, tmp, xsum);
    const size_t esize = a->out_int32 ? sizeof(int32_t) : 1;
    qc_nchw_tile t;
    t.kp = (int64_t)kp;
    t.xq = (ptrdiff_t)(4 * np);
    t.out = a->out_int32 ? QC_GEMM_OUT_S32 : a->y_signed ? QC_GEMM_OUT_S8 : QC_GEMM_OUT_U8;
    t.y_zp = a->y_zp;
    t.lo = (int32_t)ctx->lo;
    t.hi = (int32_t)ctx->hi;
    t.ldy = (ptrdiff_t)P;
    t.fzp = (float)t.y_zp;
    t.flo = (float)t.lo;
    t.fhi = (float)t.hi;
    t.small = ctx->small;
    t.lean = ctx->lean;
    t.x = panel;
    t.xsum = xsum;
    for (size_t m = m0; m < m1; m += QC_NCHW_MR) {
        const size_t gm = g * Ng + m;
        t.w = w->nchw + g * w->nchw_group + m * kp; /* tile m / MR of MR * kp bytes */
        t.rterm = ctx->rterm + gm;
        t.zwp = ctx->zwp + gm;
        t.scale = a->out_int32 ? NULL : a->mult + gm;
        t.y = (char *)ctx->y + ((n * M + gm) * P + p0) * esize;
        ctx->nk->tile(&t, (int)QC_MIN((size_t)QC_NCHW_MR, m1 - m), (int)nb);
    }
    free(mem);
}

/* The per-channel terms of nchw.h, blocking and tasks of the NCHW path. */
static int nchw_run(run_ctx *ctx) {
    const qc_conv_args *a = ctx->a;
    const qc_conv_weights *w = a->w;
    const size_t M = w->M, K = ctx->K, P = ctx->P, Ng = ctx->Ng, units = a->N * w->G;
    const size_t kp = qc_nchw_kp(K), nt = (size_t)qc_get_num_threads();
    ctx->nk = qc_nchw_select();
    ctx->rterm = malloc(2 * M * sizeof(int32_t));
    if (!ctx->rterm) return -1;
    ctx->zwp = ctx->rterm + M;
    const uint32_t zx = (uint32_t)(a->xzp + (a->x_signed ? 128 : 0));
    ctx->need_xsum = 0;
    uint64_t bmax = 0;
    for (size_t m = 0; m < M; m++) {
        ctx->zwp[m] = w->wzp[m] - (w->w_signed ? 0 : 128);
        ctx->need_xsum |= ctx->zwp[m] != 0;
        const uint32_t bias = a->bias && !a->out_int32 ? (uint32_t)a->bias[m] : 0;
        ctx->rterm[m] = (int32_t)(bias - zx * (uint32_t)w->wsum[m] +
                                  (uint32_t)K * zx * (uint32_t)ctx->zwp[m]);
        const int64_t bm = a->bias && !a->out_int32 ? a->bias[m] : 0;
        bmax = QC_MAX(bmax, (uint64_t)(bm < 0 ? -bm : bm));
    }
    /* each of the K terms (x' - zx')(w' - zw') is at most 255 * 255 in magnitude */
    ctx->small = (uint64_t)K * 255 * 255 + bmax < ((uint64_t)1 << 24);
    ctx->lean = ctx->small && !a->out_int32;
    for (size_t m = 0; m < M && ctx->lean; m++)
        ctx->lean = a->mult[m] >= 0.0f && a->mult[m] < 64.0f;
    /* Pixel blocks of a panel of about 96 KiB. Until there are 4 tasks per thread, split the
     * pixels further while blocks keep 256 pixels (their panels are disjoint), then the output
     * channels into chunks (each chunk builds its block's panel again, a small cost), and only
     * then the pixels below 256 (more partial kernel sub-tiles). */
    const size_t want = 4 * nt, tiles = (Ng + QC_NCHW_MR - 1) / QC_NCHW_MR;
    const size_t target = QC_MAX((size_t)QC_NCHW_NR, (96 << 10) / kp);
    size_t nblocks = (P + target - 1) / target;
    if (units * nblocks < want)
        nblocks = QC_MAX(nblocks, QC_MIN((want + units - 1) / units, QC_MAX(P / 256, (size_t)1)));
    const size_t chunks = QC_MIN(QC_MAX((size_t)1, want / (units * nblocks)), tiles);
    if (units * nblocks * chunks < want)
        nblocks = QC_MAX(nblocks, QC_MIN((want + units * chunks - 1) / (units * chunks),
                                         (P + QC_NCHW_NR - 1) / QC_NCHW_NR));
    ctx->pb = (((P + nblocks - 1) / nblocks) + 31) & ~(size_t)31; /* whole kernel sub-tiles */
    ctx->nblocks = (P + ctx->pb - 1) / ctx->pb;
    ctx->mchunk = (tiles + chunks - 1) / chunks * QC_NCHW_MR;
    ctx->nmchunks = (Ng + ctx->mchunk - 1) / ctx->mchunk;
    const size_t tasks = units * ctx->nblocks;
    qc_parallel_for(tasks * ctx->nmchunks, nchw_task, ctx);
    free(ctx->rterm);
    return atomic_load(&ctx->failed) ? -1 : 0;
}

int qc_conv_run(const qc_conv_args *args, const void *x, void *y) {
    /* a stride along an axis with a single output never matters: make it 1 (the depthwise
     * sub-plane layout grows with sh * sw) */
    qc_conv_args local = *args;
    if (local.OH == 1) local.sh = 1;
    if (local.OW == 1) local.sw = 1;
    const qc_conv_args *a = &local;
    const qc_conv_weights *w = a->w;
    run_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.a = a;
    ctx.x = x;
    ctx.y = y;
    ctx.M = w->M;
    bounds(a, &ctx.lo, &ctx.hi);
    atomic_init(&ctx.failed, 0);
    const size_t P = a->OH * a->OW;
    if (a->N == 0 || w->M == 0 || P == 0) return 0;
    if (w->wdw) {
        ctx.ops = (const qc_qops_impl *)qc_family_select(&qc_qops_family)->impl;
        /* (image, group) units per task: about 16K outputs, at least 4 tasks per thread when
         * possible */
        const size_t total = a->N * w->G, nt = (size_t)qc_get_num_threads();
        size_t per = QC_MAX((size_t)1, (size_t)16384 / (P * (w->M / w->G)));
        while (per > 1 && (total + per - 1) / per < 4 * nt) per /= 2;
        ctx.pb = per;
        qc_parallel_for((total + per - 1) / per, dw_task, &ctx);
        return atomic_load(&ctx.failed) ? -1 : 0;
    }
    const size_t HW = a->H * a->W;
    ctx.Ng = w->M / w->G;
    ctx.K = w->K;
    ctx.P = P;
    ctx.direct = w->kh == 1 && w->kw == 1 && a->sh == 1 && a->sw == 1 && a->pt == 0 &&
                 a->pl == 0 && a->pb == 0 && a->pr == 0;
    /* The NCHW GEMM for pointwise convolutions, except a few pixels with a long K (a 7x7 plane
     * of 512+ channels): its 16-pixel vectors then run mostly empty, and each task's panel
     * and pipeline cost more than the NHWC path's transposes. */
    const int pointwise = w->kh == 1 && w->kw == 1 && (P >= 64 || w->K < 256);
    if (w->nchw && qc_nchw_use(pointwise)) return nchw_run(&ctx);
    ctx.gk = qc_gemm_select();
    /* pixel blocks: A block about 128 KiB (stays in L2 with B), at least 16 rows; split
     * finer when there are too few tasks for the threads */
    size_t pb = (128 * 1024) / (w->K ? w->K : 1);
    pb = QC_MAX(16, QC_MIN(512, pb)) & ~(size_t)15;
    /* planes smaller than a block: blocks run across images (a GEMM call per tiny plane
     * would be mostly overhead) */
    ctx.span = P < pb && a->N > 1;
    const size_t units = ctx.span ? w->G : a->N * w->G, pixels = ctx.span ? a->N * P : P;
    /* at least 4 tasks per thread while each keeps about 1 M multiply-adds (waking a thread
     * for less costs more than it saves) */
    const double work = (double)a->N * (double)P * (double)w->M * (double)w->K;
    const size_t want = (size_t)QC_MAX(1.0, QC_MIN(4.0 * qc_get_num_threads(),
                                                   work / (1 << 20)));
    while (pb > 16 && units * ((pixels + pb - 1) / pb) < want) pb = (pb / 2 + 15) & ~(size_t)15;
    ctx.pb = pb;
    ctx.nblocks = (pixels + pb - 1) / pb;
    /* im2col reads an NHWC copy of x (each pixel serves up to kh * kw patches); the direct
     * path transposes each block of pixels itself, in gemm_task */
    if (!ctx.direct && a->C == 1) {
        ctx.xt = x; /* NCHW and NHWC coincide */
    } else if (!ctx.direct) {
        ctx.xt_w = malloc(QC_MAX(a->N * HW * a->C, (size_t)1));
        if (!ctx.xt_w) return -1;
        ctx.xt = ctx.xt_w;
        qc_parallel_for(a->N * ((HW + 255) / 256), nhwc_task, &ctx);
    }
    qc_parallel_for(units * ctx.nblocks, gemm_task, &ctx);
    free(ctx.xt_w);
    return atomic_load(&ctx.failed) ? -1 : 0;
}
