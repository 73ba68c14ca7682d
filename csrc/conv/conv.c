/* NCHW convolution driver: weight preparation, depthwise path, im2col + packed-GEMM path. */
#include "conv/conv.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifndef QC_NO_X86
#include <emmintrin.h> /* SSE2: part of the x86-64 baseline */
#endif

#include "conv/dw.h"
#include "conv/gconv.h"
#include "conv/nchw.h"
#include "conv/transpose.h"
#include "gemm/gemm.h"
#include "gemm/kernels.h"
#include "threads/pool.h"

/* ---- weights ---- */

/* One pair operation of dw.h: taps k0 and k1 (k1 = SIZE_MAX: none) of input channel ci of a
 * group, reading sub-plane `phase` at row a, column b of the tile (tile-relative). */
typedef struct {
    size_t k0, k1, ci, phase, a, b;
} dw_op;

/* Pair the taps (Cg x kh x kw in (c, ky, kx) order) for a tap step: taps kx and kx + step of
 * one kernel row read adjacent columns of one sub-plane row when step = sw / dw (rx = kx * dw
 * grows by sw), so they make one pair operation; greedy left to right, the rest single (step 0:
 * all single). Fills k0, k1 and ci of ops (K entries); used: K bytes of scratch. Returns the
 * number of operations. */
static size_t dw_pair_taps(size_t Cg, size_t kh, size_t kw, size_t step, dw_op *ops,
                           char *used) {
    size_t nops = 0;
    memset(used, 0, Cg * kh * kw);
    for (size_t ci = 0; ci < Cg; ci++) {
        for (size_t ky = 0; ky < kh; ky++) {
            for (size_t kx = 0; kx < kw; kx++) {
                const size_t k0 = (ci * kh + ky) * kw + kx;
                if (used[k0]) continue;
                used[k0] = 1;
                size_t k1 = SIZE_MAX;
                if (step && kx + step < kw && !used[k0 + step]) {
                    k1 = k0 + step;
                    used[k1] = 1;
                }
                dw_op o = {k0, k1, ci, 0, 0, 0};
                ops[nops++] = o;
            }
        }
    }
    return nops;
}

/* wp (M x nops) in the NHWC block layout: per block of 16 channels, nops x 16 (0 past M). */
static void dw_lane_pairs(const int32_t *wp, size_t M, size_t nops, int32_t *wl) {
    for (size_t blk = 0; blk < (M + 15) / 16; blk++)
        for (size_t j = 0; j < nops; j++)
            for (size_t c = 0; c < 16; c++) {
                const size_t m = blk * 16 + c;
                wl[(blk * nops + j) * 16 + c] = m < M ? wp[m * nops + j] : 0;
            }
}

/* Each output channel's weight pairs (w[k0], w[k1] or 0) for ops: M x nops. */
static void dw_weight_pairs(const int16_t *wdw, size_t M, size_t K, const dw_op *ops,
                            size_t nops, int32_t *wp) {
    for (size_t m = 0; m < M; m++) {
        const int16_t *wk = wdw + m * K;
        for (size_t j = 0; j < nops; j++) {
            const uint32_t w0 = (uint16_t)wk[ops[j].k0];
            const uint32_t w1 = ops[j].k1 == SIZE_MAX ? 0 : (uint16_t)wk[ops[j].k1];
            wp[m * nops + j] = (int32_t)(w0 | w1 << 16);
        }
    }
}


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
    free(cw->dwp[0]);
    free(cw->dwp[1]);
    free(cw->dwl[0]);
    free(cw->dwl[1]);
    free(cw->dw3q);
    free(cw->dw3sum);
    free(cw->nchw);
    free(cw->wsum);
    free(cw);
}

/* The byte quads of a depthwise 3x3 (qc_conv_weights.dw3q, dw3sum) when every w' fits int8.
 * Returns -1 when out of memory. */
static int dw3_weights(qc_conv_weights *cw) {
    const size_t M = cw->M;
    for (size_t i = 0; i < M * 9; i++)
        if (cw->wdw[i] < -128 || cw->wdw[i] > 127) return 0;
    cw->dw3q = malloc(QC_MAX(M * 3, (size_t)1) * sizeof(int32_t));
    cw->dw3sum = malloc(QC_MAX(M, (size_t)1) * sizeof(int32_t));
    if (!cw->dw3q || !cw->dw3sum) return -1;
    for (size_t m = 0; m < M; m++) {
        const int16_t *wk = cw->wdw + m * 9;
        int32_t sum = 0;
        for (size_t ky = 0; ky < 3; ky++) {
            uint32_t q = 0;
            for (size_t kx = 0; kx < 3; kx++) {
                q |= (uint32_t)(uint8_t)(int8_t)wk[ky * 3 + kx] << (8 * kx);
                sum += wk[ky * 3 + kx];
            }
            cw->dw3q[m * 3 + ky] = (int32_t)q;
        }
        cw->dw3sum[m] = sum;
    }
    return 0;
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
        /* weight pairs for tap steps 1 (stride 1) and 2 (stride 2), dilation 1 */
        dw_op *ops = malloc(QC_MAX(K, (size_t)1) * sizeof(dw_op));
        char *used = malloc(QC_MAX(K, (size_t)1));
        int ok = ops && used;
        for (size_t st = 1; st <= 2 && ok; st++) {
            const size_t n = dw_pair_taps(Cg, kh, kw, st, ops, used);
            cw->dwp[st - 1] = malloc(QC_MAX(M * n, (size_t)1) * sizeof(int32_t));
            ok = cw->dwp[st - 1] != NULL;
            if (ok) dw_weight_pairs(cw->wdw, M, K, ops, n, cw->dwp[st - 1]);
            cw->dwp_n[st - 1] = n;
            if (ok && Cg == 1 && M == G) {
                cw->dwl[st - 1] = malloc(QC_MAX((M + 15) / 16 * 16 * n, (size_t)1) * 4);
                ok = cw->dwl[st - 1] != NULL;
                if (ok) dw_lane_pairs(cw->dwp[st - 1], M, n, cw->dwl[st - 1]);
            }
        }
        free(ops);
        free(used);
        if (!ok) goto fail;
        if (Cg == 1 && M == G && kh == 3 && kw == 3 && dw3_weights(cw) < 0) goto fail;
    } else {
        const size_t Ng = M / G;
        cw->gemm = calloc(G, sizeof(void *));
        if (!cw->gemm) goto fail;
        for (size_t g = 0; g < G; g++) {
            cw->gemm[g] = pack_group(cw->wt + g * Ng * K, w_signed, K, Ng);
            if (!cw->gemm[g]) goto fail;
        }
    }
    if (cw->gemm && qc_nchw_may_use((kh == 1 && kw == 1) || (G == 1 && Cg <= QC_NCHW_SMALL_CG))) {
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
    const qc_gemm_kernels *gk;
    const uint8_t *x;   /* NCHW input */
    const uint8_t *xt;  /* NHWC input (GEMM path) */
    uint8_t *xt_w;
    void *y;
    double lo, hi;
    size_t M, Ng, K, P, pb, nblocks;
    size_t tpb;         /* pixels per task of the NCHW -> NHWC transpose */
    int direct;         /* 1x1, stride 1, no padding: A is a transposed block of x, no im2col */
    int span;           /* GEMM path: blocks run over all images' pixels (n * P + p), so planes
                         * smaller than a block share one GEMM call */
    size_t ncb, cb;     /* GEMM path: output channels split in ncb blocks of cb (a multiple of
                         * 32) per task, over patches built once for all pixels in a_all
                         * (ungrouped convolutions with few pixels), else 1 and Ng */
    uint8_t *a_all;     /* that shared patch matrix: row n * P + p, K bytes each; or NULL */
    /* Indirect rows (ix): the GEMM reads every patch where it lies in a padded NHWC copy of
     * x (xp: N images of Hp x Wp pixels, ximg bytes each, x_zp in the padding): output pixel
     * q's row at xrow[q] (image n's offset included with span, else added per task), as
     * xnseg segments at the offsets xseg: kh runs of kw * C bytes (ungrouped, one column
     * step) or kh * kw runs of the group's Cg channels. No im2col copies at all. */
    int ix;
    uint8_t *xp;
    size_t Hp, Wp, ximg, xrows; /* xrows: padded rows per task of the copy from NCHW x */
    ptrdiff_t *xrow, *xseg;
    int xnseg;
    /* Without span, xp holds images xn0 .. xn0 + xcn - 1 at a time, each chunk's tasks run
     * right after it is built (task0: the first task's number), so it stays in cache. */
    size_t xn0, xcn, task0;
    /* NCHW path: its kernels, per-channel rterm and zw' (nchw.h), rows per task (mchunk, a
     * multiple of QC_NCHW_MR), and whether the pixel sums are needed (some zw' != 0) */
    const qc_nchw_kernels *nk;
    int32_t *rterm, *zwp;
    size_t mchunk, nmchunks;
    int need_xsum;
    int small;          /* |C| < 2^24 for every output (K * 255 * 255 + max |bias|) */
    int lean;           /* small, and every multiplier in [0, 64) (qc_nchw_tile.lean) */
    int exact;          /* qc_nchw_tile.exact */
    qc_gemm_cols *cols; /* GEMM path: the column terms of group g's chunk c at g * ncb + c,
                         * made once for all its pixel blocks */
    void *cols_mem;
    const struct dw_plan_s *dw; /* direct path */
    const struct dw_nhwc_plan_s *dwn;
    const struct dw3_plan_s *dw3;
    atomic_int failed;
} run_ctx;

static void bounds(const qc_conv_args *a, double *lo, double *hi) {
    double qmin = a->y_signed ? -128.0 : 0.0, qmax = a->y_signed ? 127.0 : 255.0;
    *lo = a->relu && (double)a->y_zp > qmin ? (double)a->y_zp : qmin;
    *hi = qmax;
}

/* ---- direct path (dw.h): bounded tiles of the output planes ---- */

/* Tests: tiles of at most this many output rows and 3x as many columns, and never the NHWC
 * variant (0: tiles from the scratch budget). Any tiling gives the same outputs. */
static atomic_size_t g_dw_tile_force;

size_t qc_dw_tile_force(size_t rows) { return atomic_exchange(&g_dw_tile_force, rows); }

/* The direct path's plan, shared by every task: the tile grid, the pair operations, every
 * output channel's weight pairs, scratch sizes. */
typedef struct dw_plan_s {
    const qc_dw_kernels *k;
    size_t nops;
    dw_op *ops;
    const int32_t *wp;         /* M x nops */
    size_t TH, TW, nty, ntx;   /* output tile rows and columns, tiles per plane */
    size_t B, ngb;             /* groups per unit, and group batches */
    size_t per;                /* units per task */
    size_t xs_elems, buf_elems;
} dw_plan;


/* Product a * b, or SIZE_MAX when it overflows (allocation sizes: SIZE_MAX fails). */
static size_t mul_sat(size_t a, size_t b) {
    size_t r;
    return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
}
static size_t add_sat(size_t a, size_t b) { return a + b < a ? SIZE_MAX : a + b; }

/* Sub-plane geometry of a tile of th x tw outputs: rows and columns of each sub-plane. */
static void dw_tile_geom(const qc_conv_args *a, size_t th, size_t tw, size_t *PHs, size_t *PWs) {
    const size_t sh = (size_t)a->sh, sw = (size_t)a->sw;
    const size_t RH = add_sat(mul_sat(th - 1, sh), mul_sat(a->w->kh - 1, (size_t)a->dh)) + 1;
    const size_t RW = add_sat(mul_sat(tw - 1, sw), mul_sat(a->w->kw - 1, (size_t)a->dw)) + 1;
    *PHs = RH / sh + (RH % sh != 0);
    *PWs = RW / sw + (RW % sw != 0);
}

/* Elements of one input channel's sub-plane set for a tile (saturating). */
static size_t dw_set_elems(const qc_conv_args *a, size_t th, size_t tw) {
    size_t PHs, PWs;
    dw_tile_geom(a, th, tw, &PHs, &PWs);
    return mul_sat(mul_sat((size_t)a->sh * (size_t)a->sw, PHs), PWs);
}

/* Fill the sub-plane sets of groups [g0, g0 + B) of image n for the tile at output (oy0, ox0)
 * of th x tw (dw.h, step 1): zeros, then the region's real input rows, phase by phase. */
static void dw_pack_tile(const run_ctx *ctx, const dw_plan *pl, size_t n, size_t g0, size_t B,
                         size_t oy0, size_t ox0, size_t th, size_t tw, int16_t *xs, size_t cs,
                         size_t ps, size_t PWs) {
    const qc_conv_args *a = ctx->a;
    const size_t Cg = a->w->Cg, sh = (size_t)a->sh, sw = (size_t)a->sw;
    const size_t H = a->H, W = a->W, pt = (size_t)a->pt, plft = (size_t)a->pl;
    const size_t R0 = oy0 * sh, C0 = ox0 * sw;
    const size_t RH = (th - 1) * sh + (a->w->kh - 1) * (size_t)a->dh + 1;
    const size_t RW = (tw - 1) * sw + (a->w->kw - 1) * (size_t)a->dw + 1;
    memset(xs, 0, (B * Cg * cs + QC_DW_SLACK_T + 1) * sizeof(int16_t));
    /* padded rows [r0, r1) and region columns [ca, cb) hold real input */
    const size_t r0 = QC_MAX(R0, pt), r1 = QC_MIN(R0 + RH, pt + H);
    const size_t ca = plft > C0 ? QC_MIN(plft - C0, RW) : 0;
    const size_t cb = QC_MAX(ca, QC_MIN(RW, plft + W > C0 ? plft + W - C0 : 0));
    if (r0 >= r1 || ca >= cb) return;
    for (size_t py = 0; py < sh; py++) {
        /* padded rows r = R0 + py + j * sh in [r0, r1): sub-plane rows ry0 + j */
        const size_t first = R0 + py >= r0 ? 0 : (r0 - R0 - py + sh - 1) / sh;
        if (R0 + py + first * sh >= r1) continue;
        const size_t nrows = (r1 - 1 - (R0 + py + first * sh)) / sh + 1;
        const size_t rfirst = R0 + py + first * sh;
        if (sw == 2) {
            /* region columns ca + j: even j in phase ca % 2 from column ca / 2, odd j in the
             * other phase from (ca + 1) / 2 */
            const size_t soff = (rfirst - pt) * W + (C0 + ca - plft);
            const size_t de = (py * 2 + ca % 2) * ps + first * PWs + ca / 2;
            const size_t dod = (py * 2 + (ca + 1) % 2) * ps + first * PWs + (ca + 1) / 2;
            for (size_t gi = 0; gi < B; gi++) {
                for (size_t ci = 0; ci < Cg; ci++) {
                    const uint8_t *plane = ctx->x + (n * a->C + (g0 + gi) * Cg + ci) * H * W;
                    int16_t *set = xs + (gi * Cg + ci) * cs;
                    pl->k->rows2(plane + soff, sh * W, a->x_signed, cb - ca, nrows, a->xzp,
                                 set + de, set + dod, PWs);
                }
            }
            continue;
        }
        for (size_t px = 0; px < sw; px++) {
            /* region columns cc = cc0 + i * sw in [ca, cb): sub-plane columns cc0 / sw + i */
            const size_t cc0 = ca + (px + sw - ca % sw) % sw;
            if (cc0 >= cb) continue;
            const size_t cnt = (cb - cc0 + sw - 1) / sw;
            const size_t soff = (rfirst - pt) * W + (C0 + cc0 - plft);
            const size_t doff = (py * sw + px) * ps + first * PWs + cc0 / sw;
            for (size_t gi = 0; gi < B; gi++) {
                for (size_t ci = 0; ci < Cg; ci++) {
                    const uint8_t *plane = ctx->x + (n * a->C + (g0 + gi) * Cg + ci) * H * W;
                    pl->k->rows(plane + soff, sh * W, a->x_signed, sw, cnt, nrows, a->xzp,
                                xs + (gi * Cg + ci) * cs + doff, PWs);
                }
            }
        }
    }
}

/* A task handles units [task * per, ...) of N x ngb x nty x ntx (image, group batch, tile). */
static void dw_task(void *vctx, size_t task) {
    run_ctx *ctx = vctx;
    const dw_plan *pl = ctx->dw;
    const qc_conv_args *a = ctx->a;
    const qc_conv_weights *w = a->w;
    const size_t G = w->G, Cg = w->Cg, Ng = w->M / G, nops = pl->nops;
    const size_t total = a->N * pl->ngb * pl->nty * pl->ntx;
    const size_t u0 = task * pl->per, u1 = QC_MIN(total, u0 + pl->per);
    const size_t xsb = (pl->xs_elems * sizeof(int16_t) + 63) & ~(size_t)63;
    const size_t xpb = (pl->xs_elems * sizeof(int32_t) + 63) & ~(size_t)63;
    const size_t offb = (nops * sizeof(size_t) + 63) & ~(size_t)63;
    const size_t bufb = (pl->buf_elems * sizeof(int32_t) + 63) & ~(size_t)63;
    char *mem = malloc(xsb + xpb + offb + bufb + (pl->buf_elems / 16 + 1) * sizeof(uint16_t));
    if (!mem) {
        atomic_store(&ctx->failed, 1);
        return;
    }
    int16_t *xs = (int16_t *)mem;
    int32_t *xp = (int32_t *)(mem + xsb);
    size_t *off = (size_t *)(mem + xsb + xpb);
    void *buf = mem + xsb + xpb + offb;
    const size_t esize = a->out_int32 ? sizeof(int32_t) : 1;
    uint16_t *masks = (uint16_t *)(mem + xsb + xpb + offb + bufb);
    size_t mTH = 0, mPWs = 0, mTW = 0;
    for (size_t u = u0; u < u1; u++) {
        const size_t tx = u % pl->ntx, ty = u / pl->ntx % pl->nty;
        const size_t gb = u / (pl->ntx * pl->nty) % pl->ngb, n = u / (pl->ntx * pl->nty * pl->ngb);
        const size_t g0 = gb * pl->B, B = QC_MIN(pl->B, G - g0);
        const size_t oy0 = ty * pl->TH, ox0 = tx * pl->TW;
        const size_t th = QC_MIN(pl->TH, a->OH - oy0), tw = QC_MIN(pl->TW, a->OW - ox0);
        size_t PHs, PWs;
        dw_tile_geom(a, th, tw, &PHs, &PWs);
        const size_t ps = PHs * PWs, cs = (size_t)a->sh * (size_t)a->sw * ps;
        dw_pack_tile(ctx, pl, n, g0, B, oy0, ox0, th, tw, xs, cs, ps, PWs);
        pl->k->pairs(xs, B * Cg * cs + QC_DW_SLACK_T, xp);
        for (size_t j = 0; j < nops; j++) {
            const dw_op *o = &pl->ops[j];
            off[j] = o->ci * cs + o->phase * ps + o->a * PWs + o->b;
        }
        const size_t m0 = g0 * Ng;
        qc_dw_tile t;
        t.nch = B * Ng;
        t.per_xp = Ng;
        t.xp = xp;
        t.xp_stride = Cg * cs;
        t.nops = nops;
        t.off = off;
        t.wp = pl->wp + m0 * nops;
        t.L = (th - 1) * PWs + tw;
        t.TH = th;
        t.TW = tw;
        t.PWs = PWs;
        t.bias = a->bias && !a->out_int32 ? a->bias + m0 : NULL;
        t.scale = a->out_int32 ? NULL : a->mult + m0;
        t.y_zp = a->y_zp;
        t.lo = (int32_t)ctx->lo;
        t.hi = (int32_t)ctx->hi;
        t.out32 = a->out_int32;
        t.rq32 = a->rq32;
        t.y = (char *)ctx->y + (((n * w->M + m0) * a->OH + oy0) * a->OW + ox0) * esize;
        t.ldc = a->OH * a->OW;
        t.ldy = a->OW;
        t.buf = buf;
        if (th != mTH || PWs != mPWs || tw != mTW) { /* a new tile shape */
            qc_dw_masks(th, PWs, tw, masks);
            mTH = th, mPWs = PWs, mTW = tw;
        }
        t.masks = masks;
        pl->k->tile(&t);
    }
    free(mem);
}

/* ---- direct path, channels across the lanes (qc_dw_nhwc): small depthwise planes ---- */

typedef struct dw_nhwc_plan_s {
    const dw_plan *pl;
    size_t PH, PW, pd;
    const size_t *poff;
    size_t nblk;            /* blocks of 16 channels per image */
    /* per block: nops x 16 weight pairs, 16 biases, 16 scales (lane = channel, 0 past C), and
     * whether the block is lean (qc_dw_nhwc.lean) */
    const int32_t *wp;
    int32_t *bias;
    float *scale;
    int *lean;
} dw_nhwc_plan;

/* A task: units [task * per, ...) of N x nblk (image, block of 16 channels). */
static void dw_nhwc_task(void *vctx, size_t task) {
    run_ctx *ctx = vctx;
    const dw_nhwc_plan *np_ = ctx->dwn;
    const dw_plan *pl = np_->pl;
    const qc_conv_args *a = ctx->a;
    const size_t C = a->C, H = a->H, W = a->W, HW = H * W, OHW = a->OH * a->OW;
    const size_t PH = np_->PH, PW = np_->PW, npix = PH * PW, nops = pl->nops;
    const size_t total = a->N * np_->nblk;
    const size_t u0 = task * pl->per, u1 = QC_MIN(total, u0 + pl->per);
    const size_t esize = a->out_int32 ? sizeof(int32_t) : 1;
    const size_t xbb = ((npix + np_->pd) * 16 + 63) & ~(size_t)63;
    const size_t tb = (HW * 16 + 63) & ~(size_t)63;
    const size_t xpb = npix * 16 * sizeof(int32_t);
    const size_t obb = (OHW * 16 * esize + 63) & ~(size_t)63;
    char *mem = aligned_alloc(64, xbb + tb + xpb + obb);
    if (!mem) {
        atomic_store(&ctx->failed, 1);
        return;
    }
    uint8_t *xb = (uint8_t *)mem, *T = (uint8_t *)(mem + xbb);
    int32_t *xp = (int32_t *)(mem + xbb + tb);
    void *ob = mem + xbb + tb + xpb;
    for (size_t u = u0; u < u1; u++) {
        const size_t n = u / np_->nblk, c0 = u % np_->nblk * 16, nch = QC_MIN((size_t)16, C - c0);
        /* x's planes c0.. to NHWC, then into the padded block (x_zp around) */
        qc_transpose_u8(ctx->x + (n * C + c0) * HW, nch, HW, HW, T, 16);
        memset(xb, (uint8_t)a->xzp, (npix + np_->pd) * 16);
        for (size_t iy = 0; iy < H; iy++) {
            memcpy(xb + ((iy + (size_t)a->pt) * PW + (size_t)a->pl) * 16, T + iy * W * 16,
                   W * 16);
        }
        qc_dw_nhwc b;
        b.xb = xb;
        b.PH = PH, b.PW = PW, b.pd = np_->pd;
        b.sx = a->x_signed;
        b.xzp = a->xzp;
        b.OH = a->OH, b.OW = a->OW, b.sh = (size_t)a->sh, b.sw = (size_t)a->sw;
        b.nops = nops;
        b.poff = np_->poff;
        const size_t blk = c0 / 16;
        b.wp = np_->wp + blk * nops * 16;
        b.bias = np_->bias + blk * 16;
        b.scale = np_->scale + blk * 16;
        b.y_zp = a->y_zp;
        b.rq32 = a->rq32;
        b.lo = (int32_t)ctx->lo;
        b.hi = (int32_t)ctx->hi;
        b.out32 = a->out_int32;
        b.lean = np_->lean[blk];
        b.ob = ob;
        b.xp = xp;
        pl->k->nhwc(&b);
        if (a->out_int32) {
            qc_transpose_u32((const uint32_t *)ob, OHW, nch, 16,
                             (uint32_t *)ctx->y + (n * C + c0) * OHW, OHW);
        } else {
            qc_transpose_u8((const uint8_t *)ob, OHW, nch, 16,
                            (uint8_t *)ctx->y + (n * C + c0) * OHW, OHW);
        }
    }
    free(mem);
}

/* Depthwise (one input and one output channel per group) with a padded plane of at most
 * QC_DW_NHWC_MAX_PIX pixels: blocks of 16 channels with the channels across the lanes, no
 * per-plane sub-planes, garbage columns or stride phases. */
static int dw_nhwc_run(run_ctx *ctx, dw_plan *pl, size_t step) {
    const qc_conv_args *a = ctx->a;
    const size_t kw = a->w->kw, kh = a->w->kh, nt = (size_t)qc_get_num_threads();
    dw_nhwc_plan np_;
    np_.pl = pl;
    np_.PH = (size_t)a->pt + a->H + (size_t)a->pb;
    np_.PW = (size_t)a->pl + a->W + (size_t)a->pr;
    np_.pd = step ? step * (size_t)a->dw : 1;
    np_.nblk = (a->C + 15) / 16;
    size_t *poff = malloc(QC_MAX(pl->nops, (size_t)1) * sizeof(size_t));
    if (!poff) return -1;
    for (size_t j = 0; j < pl->nops; j++) {
        const size_t k0 = pl->ops[j].k0, ky = k0 / kw % kh, kx = k0 % kw;
        poff[j] = ky * (size_t)a->dh * np_.PW + kx * (size_t)a->dw;
    }
    np_.poff = poff;
    const size_t nb = np_.nblk, nops = pl->nops, C = a->C;
    const int cached = (step == 1 || step == 2) && a->w->dwl[step - 1];
    int32_t *mem = malloc(mul_sat(nb * 16, (cached ? 0 : nops) + 2) * sizeof(int32_t));
    np_.lean = malloc(nb * sizeof(int));
    if (!mem || !np_.lean) {
        free(poff);
        free(mem);
        free(np_.lean);
        return -1;
    }
    np_.bias = mem;
    np_.scale = (float *)(mem + nb * 16);
    if (cached) {
        np_.wp = a->w->dwl[step - 1];
    } else {
        np_.wp = mem + nb * 32;
        dw_lane_pairs(pl->wp, C, nops, mem + nb * 32);
    }
    for (size_t blk = 0; blk < nb; blk++) {
        int lean = !a->out_int32;
        for (size_t c = 0; c < 16; c++) {
            const size_t m = blk * 16 + c;
            const int in = m < C;
            const int32_t bc = in && a->bias && !a->out_int32 ? a->bias[m] : 0;
            const float sc = in && !a->out_int32 ? a->mult[m] : 0.0f;
            np_.bias[blk * 16 + c] = bc;
            np_.scale[blk * 16 + c] = sc;
            const int64_t babs = bc < 0 ? -(int64_t)bc : (int64_t)bc;
            lean = lean && (int64_t)nops * 2 * 255 * 255 + babs < ((int64_t)1 << 24) &&
                   sc >= 0.0f && sc < 64.0f;
        }
        np_.lean[blk] = lean;
    }
    const size_t units = a->N * np_.nblk, ntasks = QC_MIN(units, 16 * nt);
    pl->per = (units + ntasks - 1) / ntasks;
    ctx->dwn = &np_;
    qc_parallel_for((units + pl->per - 1) / pl->per, dw_nhwc_task, ctx);
    free(poff);
    free(mem);
    free(np_.lean);
    return atomic_load(&ctx->failed) ? -1 : 0;
}

/* ---- direct path, depthwise 3x3 on byte quads (qc_dw3) ---- */

/* Budget of a band's input planes, bytes: the two sets and two flat outputs of qc_dw3 stay
 * near an L1 */
#define QC_DW3_BAND_BYTES (8 * 1024)
/* Output columns the byte-quad kernel takes at most (its bands span whole rows; wider planes
 * take the tiles of the pair kernels, which keep the scratch bounded) */
#define QC_DW3_MAX_OW 4096

typedef struct dw3_plan_s {
    const qc_dw_kernels *k;
    size_t TH, nty;         /* output rows of a band, bands per plane */
    size_t chunk, nchunks;  /* channels per task, tasks per band */
    size_t bytes;           /* scratch per task */
    int flat;               /* in place (dw3f): whole planes, no scratch, these masks */
    uint64_t masks[12 * ((QC_DW3F_MAX_HW + 63) / 64)];
} dw3_plan;

/* A task: channels [c0, c0 + chunk) of one band of one image. */
static void dw3_task(void *vctx, size_t task) {
    run_ctx *ctx = vctx;
    const dw3_plan *pl = ctx->dw3;
    const qc_conv_args *a = ctx->a;
    const size_t C = a->C, H = a->H, W = a->W, OH = a->OH, OW = a->OW, s = (size_t)a->sh;
    const size_t c0 = task % pl->nchunks * pl->chunk, ty = task / pl->nchunks % pl->nty;
    const size_t n = task / (pl->nchunks * pl->nty);
    const size_t oy0 = ty * pl->TH;
    uint8_t *buf = pl->flat ? NULL : aligned_alloc(64, pl->bytes);
    if (!buf && !pl->flat) {
        atomic_store(&ctx->failed, 1);
        return;
    }
    qc_dw3 d;
    d.x = ctx->x + (n * C + c0) * H * W;
    d.H = H, d.W = W, d.xcs = H * W;
    d.sx = a->x_signed;
    d.xzp = a->xzp;
    d.iy0 = (ptrdiff_t)(oy0 * s) - a->pt;
    d.ix0 = -(ptrdiff_t)a->pl;
    d.OH = QC_MIN(pl->TH, OH - oy0), d.OW = OW, d.s = s;
    d.nch = QC_MIN(pl->chunk, C - c0);
    d.wq = a->w->dw3q + c0 * 3;
    d.wsum = a->w->dw3sum + c0;
    d.bias = a->bias ? a->bias + c0 : NULL;
    d.scale = a->mult + c0;
    d.y_zp = a->y_zp;
    d.rq32 = a->rq32;
    d.lo = (int32_t)ctx->lo;
    d.hi = (int32_t)ctx->hi;
    d.y = (uint8_t *)ctx->y + ((n * C + c0) * OH + oy0) * OW;
    d.ycs = OH * OW;
    d.ldy = OW;
    d.buf = buf;
    d.masks = pl->masks;
    if (pl->flat) pl->k->dw3f(&d);
    else pl->k->dw3(&d);
    free(buf);
}

/* Bands of output rows whose input planes stay within QC_DW3_BAND_BYTES (tests: `forced`
 * rows), and runs of channels per task, at least 4 tasks per thread where there are enough
 * channels. */
static int dw3_run(run_ctx *ctx, const qc_dw_kernels *k, size_t forced) {
    const qc_conv_args *a = ctx->a;
    const size_t OH = a->OH, OW = a->OW, s = (size_t)a->sh, C = a->C;
    const size_t nt = (size_t)qc_get_num_threads();
    dw3_plan pl;
    pl.k = k;
    /* in place: stride 1, padding 1 all round, small planes (not when tests force bands) */
    pl.flat = k->dw3f && !forced && s == 1 && a->pt == 1 && a->pl == 1 && OH == a->H &&
              OW == a->W && OH * OW <= QC_DW3F_MAX_HW;
    qc_dw3_layout g;
    size_t TH = forced ? QC_MIN(forced, OH) : OH;
    for (;;) {
        qc_dw3_geom(TH, OW, s, &g);
        if (TH == 1 || g.in_bytes <= QC_DW3_BAND_BYTES) break;
        TH = (TH + 1) / 2;
    }
    pl.nty = (OH + TH - 1) / TH;
    pl.TH = (OH + pl.nty - 1) / pl.nty;
    qc_dw3_geom(pl.TH, OW, s, &g);
    pl.bytes = g.bytes;
    if (pl.flat) {
        pl.nty = 1, pl.TH = OH;
        qc_dw3f_masks(OH, OW, pl.masks);
    }
    const size_t bands = a->N * pl.nty, want = 4 * nt;
    const size_t split = QC_MIN(C, (want + bands - 1) / bands);
    pl.chunk = (C + split - 1) / split;
    pl.nchunks = (C + pl.chunk - 1) / pl.chunk;
    ctx->dw3 = &pl;
    qc_parallel_for(bands * pl.nchunks, dw3_task, ctx);
    return atomic_load(&ctx->failed) ? -1 : 0;
}

/* Plan and run the direct path: pair the taps, build the weight pairs, choose the tiles
 * (at most QC_DW_TILE_OW columns, rows while a channel's sub-planes stay near
 * QC_DW_TILE_ELEMS; small planes batch several groups per unit) and the tasks. */
static int dw_run(run_ctx *ctx) {
    const qc_conv_args *a = ctx->a;
    const qc_conv_weights *w = a->w;
    const size_t M = w->M, G = w->G, Cg = w->Cg, kh = w->kh, kw = w->kw, K = w->K;
    const size_t sh = (size_t)a->sh, sw = (size_t)a->sw, dh = (size_t)a->dh, dwl = (size_t)a->dw;
    const qc_dw_kernels *k = qc_dw_select();
    const size_t forced = atomic_load(&g_dw_tile_force);
    /* a 3x3 depthwise with bytes out: the byte quads where the ISA has them */
    if (k->dw3 && w->dw3q && !a->out_int32 && dh == 1 && dwl == 1 && sh == sw &&
        (sh == 1 || sh == 2) && a->OW <= QC_DW3_MAX_OW)
        return dw3_run(ctx, k, forced);
    dw_plan pl;
    memset(&pl, 0, sizeof pl);
    pl.k = k;
    pl.ops = malloc(QC_MAX(K, (size_t)1) * sizeof(dw_op));
    char *used = malloc(QC_MAX(K, (size_t)1));
    if (!pl.ops || !used) {
        free(pl.ops);
        free(used);
        return -1;
    }
    const size_t step = sw % dwl == 0 ? sw / dwl : 0;
    pl.nops = dw_pair_taps(Cg, kh, kw, step, pl.ops, used);
    free(used);
    for (size_t j = 0; j < pl.nops; j++) { /* where each operation's first tap reads */
        dw_op *o = &pl.ops[j];
        const size_t ky = o->k0 / kw % kh, kx = o->k0 % kw, ry = ky * dh, rx = kx * dwl;
        o->phase = ry % sh * sw + rx % sw;
        o->a = ry / sh;
        o->b = rx / sw;
    }
    int32_t *wp_own = NULL;
    if (step == 1 || step == 2) {
        pl.wp = w->dwp[step - 1];
    } else {
        wp_own = malloc(QC_MAX(mul_sat(M, pl.nops), (size_t)1) * sizeof(int32_t));
        if (!wp_own) {
            free(pl.ops);
            return -1;
        }
        dw_weight_pairs(w->wdw, M, K, pl.ops, pl.nops, wp_own);
        pl.wp = wp_own;
    }
    if (!forced && pl.k->nhwc && Cg == 1 && M == G && QC_DW_NHWC_MAX_PIX / QC_MAX(a->H + (size_t)a->pt +
                                                         (size_t)a->pb, (size_t)1) >=
                                        a->W + (size_t)a->pl + (size_t)a->pr) {
        const int rc = dw_nhwc_run(ctx, &pl, step);
        free(pl.ops);
        free(wp_own);
        return rc;
    }
    /* tiles: columns first, then as many rows as the budget allows, both balanced */
    const size_t OH = a->OH, OW = a->OW, nt = (size_t)qc_get_num_threads();
    const size_t tile_ow = forced ? 3 * forced : QC_DW_TILE_OW;
    pl.ntx = (OW + tile_ow - 1) / tile_ow;
    pl.TW = (OW + pl.ntx - 1) / pl.ntx;
    size_t TH = forced ? QC_MAX(QC_MIN(forced, OH), (size_t)1) : OH;
    while (TH > 1 && dw_set_elems(a, TH, pl.TW) > QC_DW_TILE_ELEMS) TH = (TH + 1) / 2;
    pl.nty = (OH + TH - 1) / TH;
    pl.TH = (OH + pl.nty - 1) / pl.nty;
    const size_t cs = dw_set_elems(a, pl.TH, pl.TW);
    /* small planes: several groups per unit while their sets stay within twice the budget,
     * keeping at least 4 units per thread where there are enough */
    pl.B = 1;
    if (pl.nty == 1 && pl.ntx == 1) {
        const size_t gcs = mul_sat(Cg, cs);
        pl.B = QC_MAX((size_t)1, QC_MIN(G, 2 * QC_DW_TILE_ELEMS / QC_MAX(gcs, (size_t)1)));
        while (pl.B > 1 && a->N * ((G + pl.B - 1) / pl.B) < 4 * nt) pl.B = (pl.B + 1) / 2;
    }
    pl.ngb = (G + pl.B - 1) / pl.B;
    pl.xs_elems = add_sat(mul_sat(mul_sat(pl.B, Cg), cs), QC_DW_SLACK_T + 1);
    size_t PHs, PWs;
    dw_tile_geom(a, pl.TH, pl.TW, &PHs, &PWs);
    pl.buf_elems = add_sat(mul_sat(pl.TH - 1, PWs), pl.TW + QC_DW_SLACK_T);
    const size_t units = a->N * pl.ngb * pl.nty * pl.ntx;
    const size_t ntasks = QC_MIN(units, 16 * nt);
    pl.per = (units + ntasks - 1) / ntasks;
    int rc = 0;
    if (pl.xs_elems == SIZE_MAX || pl.buf_elems == SIZE_MAX ||
        mul_sat(pl.xs_elems, 6) == SIZE_MAX) {
        rc = -1;
    } else {
        ctx->dw = &pl;
        qc_parallel_for((units + pl.per - 1) / pl.per, dw_task, ctx);
        rc = atomic_load(&ctx->failed) ? -1 : 0;
    }
    free(pl.ops);
    free(wp_own);
    return rc;
}

/* ---- GEMM path ---- */

/* NCHW -> NHWC, one task per (image, block of ctx->tpb pixels). */
static void nhwc_task(void *vctx, size_t task) {
    run_ctx *ctx = vctx;
    const qc_conv_args *a = ctx->a;
    const size_t HW = a->H * a->W, nb = (HW + ctx->tpb - 1) / ctx->tpb;
    const size_t n = task / nb, p0 = task % nb * ctx->tpb, np = QC_MIN(ctx->tpb, HW - p0);
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
        /* the columns ix0 .. ix0 + (kw - 1) * dw this row reads: all inside, each kernel row
         * copies its taps without tests, and with dw 1 in a dense conv (Cg == C) they are one
         * run of kw * Cg bytes of the NHWC image */
        const ptrdiff_t ix0 = (ptrdiff_t)(ox * a->sw) - a->pl;
        const int inside = ix0 >= 0 && ix0 + (ptrdiff_t)((kw - 1) * a->dw) < (ptrdiff_t)a->W;
        const int run = inside && a->dw == 1 && Cg == C;
        for (size_t ky = 0; ky < kh; ky++) {
            ptrdiff_t iy = (ptrdiff_t)(oy * a->sh + ky * a->dh) - a->pt;
            if (inside && iy >= 0 && iy < (ptrdiff_t)a->H) {
                const uint8_t *src = img + ((size_t)iy * a->W + (size_t)ix0) * C;
                uint8_t *dst = row + ky * kw * Cg;
                if (run) {
                    memcpy(dst, src, kw * Cg);
                } else {
                    for (size_t kx = 0; kx < kw; kx++)
                        memcpy(dst + kx * Cg, src + kx * a->dw * C, Cg);
                }
                continue;
            }
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

/* ---- indirect rows (run_ctx.ix) ---- */

static atomic_int g_ix_force; /* tests: < 0 never (im2col); otherwise wherever they suit */

int qc_conv_ix_force(int force) { return atomic_exchange(&g_ix_force, force); }

/* Whether the patches suit indirect rows, and their layout: not the direct 1x1 (A is x as it
 * lies there), and every segment whole 4-byte groups (a K group of the GEMM never straddles
 * two). The padded extent covers every row and column a tap reads. 1 thread, this EPYC,
 * against the row copies (3x3 64 @56: 600 -> 589 us) and im2col (3x3/2 128 @56: 575 -> 577
 * us) they replace; they also need no patch matrix for the output-channel split. */
static int ix_plan(run_ctx *ctx) {
    const qc_conv_args *a = ctx->a;
    const qc_conv_weights *w = a->w;
    if (atomic_load(&g_ix_force) < 0 || ctx->direct) return 0;
    const int runs = w->G == 1 && (a->dw == 1 || w->kw == 1);
    if ((runs ? w->kw * a->C : w->Cg) % 4 != 0) return 0;
    ctx->xnseg = (int)(runs ? w->kh : w->kh * w->kw);
    ctx->Hp = QC_MAX((size_t)a->pt + a->H, (a->OH - 1) * (size_t)a->sh +
                                               (w->kh - 1) * (size_t)a->dh + 1);
    ctx->Wp = QC_MAX((size_t)a->pl + a->W, (a->OW - 1) * (size_t)a->sw +
                                               (w->kw - 1) * (size_t)a->dw + 1);
    ctx->ximg = mul_sat(mul_sat(ctx->Hp, ctx->Wp), a->C);
    return 1;
}

/* A task of the padded copy from NHWC x: 8 padded rows of one image (x_zp around the
 * image's rows, which are copied). */
static void xp_rows_task(void *vctx, size_t task) {
    run_ctx *ctx = vctx;
    const qc_conv_args *a = ctx->a;
    const size_t C = a->C, Wp = ctx->Wp, per = (ctx->Hp + 7) / 8;
    const size_t i = task / per, n = ctx->xn0 + i, y0 = task % per * 8;
    const size_t y1 = QC_MIN(ctx->Hp, y0 + 8);
    const uint8_t fill = (uint8_t)a->xzp;
    uint8_t *img = ctx->xp + i * ctx->ximg;
    for (size_t yp = y0; yp < y1; yp++) {
        uint8_t *row = img + yp * Wp * C;
        if (yp < (size_t)a->pt || yp >= a->pt + a->H) {
            memset(row, fill, Wp * C);
            continue;
        }
        memset(row, fill, (size_t)a->pl * C);
        memcpy(row + a->pl * C, ctx->x + ((n * a->H + yp - a->pt) * a->W) * C, a->W * C);
        memset(row + (a->pl + a->W) * C, fill, (Wp - a->pl - a->W) * C);
    }
}

/* A task of the padded copy from NCHW x: one image, a band of its padded rows (xrows of them:
 * the whole image unless there are too few tasks for the threads), every channel transposed
 * into its bytes of every pixel (x_zp in the padding). Bands of rows, not of channels: tasks
 * of 16 channels on other threads wrote into the same lines, or their neighbours, which the
 * cores' prefetchers pull in pairs (3x3/2 128 @56 at batch 1, 547 us on 1 thread; on 2,
 * tasks of 16 channels 406 us, of 64 channels 360, bands of rows 282). Long runs of each
 * plane to read, which the prefetchers follow (tasks of a few rows of every channel ran at a
 * quarter of the speed once x left the L2 cache: 3x3/2 128 @56 at batch 8). */
static void xp_band_task(void *vctx, size_t task) {
    run_ctx *ctx = vctx;
    const qc_conv_args *a = ctx->a;
    const size_t C = a->C, Wp = ctx->Wp, HW = a->H * a->W, H = a->H, W = a->W;
    const size_t bands = (ctx->Hp + ctx->xrows - 1) / ctx->xrows;
    const size_t band = task % bands, i = task / bands, n = ctx->xn0 + i;
    const size_t pt = (size_t)a->pt, pl = (size_t)a->pl;
    const size_t y0 = band * ctx->xrows, y1 = QC_MIN(ctx->Hp, y0 + ctx->xrows);
    const uint8_t fill = (uint8_t)a->xzp;
    uint8_t *img = ctx->xp + i * ctx->ximg;
    for (size_t yp = y0; yp < y1; yp++) {
        uint8_t *row = img + yp * Wp * C;
        if (yp < pt || yp >= pt + H) {
            memset(row, fill, Wp * C);
            continue;
        }
        memset(row, fill, pl * C);
        memset(row + (pl + W) * C, fill, (Wp - pl - W) * C);
    }
    /* the image rows [ya, yb) inside this band */
    const size_t ya = QC_MIN(H, QC_MAX(y0, pt) - pt), yb = QC_MIN(H, y1 > pt ? y1 - pt : 0);
    if (ya < yb)
        qc_transpose_u8_wrap(ctx->x + n * C * HW + ya * W, C, (yb - ya) * W, HW,
                             img + ((ya + pt) * Wp + pl) * C, C, W, Wp - W);
}

/* Images xn0 .. xn0 + n - 1 into the padded copy. From NCHW x: bands of padded rows until
 * every thread has two tasks (batch 1), at least 8 rows a band. */
static void ix_fill(run_ctx *ctx, size_t n) {
    const qc_conv_args *a = ctx->a;
    if (a->x_nhwc) {
        qc_parallel_for(n * ((ctx->Hp + 7) / 8), xp_rows_task, ctx);
        return;
    }
    const size_t want = 2 * (size_t)qc_get_num_threads();
    const size_t nb = QC_MIN((want + n - 1) / n, QC_MAX((size_t)1, ctx->Hp / 8));
    ctx->xrows = (ctx->Hp + nb - 1) / nb;
    qc_parallel_for(n * ((ctx->Hp + ctx->xrows - 1) / ctx->xrows), xp_band_task, ctx);
}

/* GEMM tasks per image without span: a group, a pixel block and a column chunk each. */
static inline size_t image_tasks(const run_ctx *ctx) {
    return ctx->a->w->G * ctx->nblocks * ctx->ncb;
}

/* Images per chunk of the padded copy: what the threads' L2 caches (taken as 1 MiB each) hold
 * beside the weights every task streams (K x cb bytes), at least 256 KiB a thread; then at
 * least 4 tasks a thread where the batch has them, and chunks of equal size. */
static size_t chunk_images(const run_ctx *ctx) {
    const qc_conv_args *a = ctx->a;
    const size_t nt = (size_t)qc_get_num_threads(), l2 = (size_t)1 << 20;
    const size_t wbytes = mul_sat(ctx->K, ctx->cb), per = image_tasks(ctx);
    const size_t room = wbytes + ((size_t)256 << 10) <= l2 ? l2 - wbytes : (size_t)256 << 10;
    size_t n = QC_MAX((size_t)1, QC_MIN(a->N, mul_sat(nt, room) / ctx->ximg));
    while (n < a->N && n * per < 4 * nt) n++;
    const size_t chunks = (a->N + n - 1) / n;
    return (a->N + chunks - 1) / chunks;
}

/* The padded copy's memory (all images with span, else chunks (chunk_images), each read
 * right after it is built: a copy of all images at once left the caches before the tasks
 * read it; 1 thread, batch 8, against the row copies and im2col of the whole batch: 3x3/2
 * 128 @56 5.4 -> 4.9 ms, 3x3 64 @56 6.7 -> 4.7 ms) and the row and segment offsets
 * (ctx->ix). -1 when out of memory. */
static int ix_build(run_ctx *ctx) {
    const qc_conv_args *a = ctx->a;
    const qc_conv_weights *w = a->w;
    const size_t C = a->C, Wp = ctx->Wp, P = ctx->P, rows = ctx->span ? a->N * P : P;
    ctx->xcn = ctx->span ? a->N : chunk_images(ctx);
    /* 64-byte aligned: the row bands of the copy (ix_fill) share no line where Wp * C is
     * a multiple of 64 */
    const size_t xpb = QC_MAX(mul_sat(ctx->ximg, ctx->xcn), (size_t)1);
    ctx->xp = aligned_alloc(64, add_sat(xpb, 63) & ~(size_t)63);
    ctx->xrow = malloc(QC_MAX(mul_sat(rows, sizeof(ptrdiff_t)), (size_t)1));
    ctx->xseg = malloc((size_t)ctx->xnseg * sizeof(ptrdiff_t));
    if (!ctx->xp || !ctx->xrow || !ctx->xseg) return -1;
    /* pixel (n, oy, ox) at image n's (oy * sh, ox * sw) */
    for (size_t q = 0, n = 0; q < rows; n++) {
        for (size_t oy = 0; oy < a->OH; oy++) {
            const size_t r = n * ctx->ximg + oy * a->sh * Wp * C;
            for (size_t ox = 0; ox < a->OW; ox++, q++)
                ctx->xrow[q] = (ptrdiff_t)(r + ox * a->sw * C);
        }
    }
    const size_t kx_n = (size_t)ctx->xnseg / w->kh; /* 1 for runs of kw * C bytes */
    for (size_t ky = 0; ky < w->kh; ky++)
        for (size_t kx = 0; kx < kx_n; kx++)
            ctx->xseg[ky * kx_n + kx] = (ptrdiff_t)((ky * a->dh * Wp + kx * a->dw) * C);
    return 0;
}

/* Rows [64 * task, + 64) of the shared patch matrix (ctx->a_all: G == 1, rows n * P + p). */
static void im2col_task(void *vctx, size_t task) {
    run_ctx *ctx = vctx;
    const size_t P = ctx->P, total = ctx->a->N * P;
    for (size_t q = task * 64, end = QC_MIN(total, q + 64); q < end;) {
        const size_t n = q / P, p = q % P, seg = QC_MIN(P - p, end - q);
        im2col(ctx, n, 0, p, seg, ctx->a_all + q * ctx->K);
        q += seg;
    }
}

/* The fields of group g's GEMM call for output channels [n0, n1) of the group that every
 * pixel block shares (the column terms depend on these alone). */
static void gemm_call_args(const run_ctx *ctx, size_t g, size_t n0, size_t n1, qc_gemm_args *ga) {
    const qc_conv_args *a = ctx->a;
    const qc_conv_weights *w = a->w;
    const size_t Ng = ctx->Ng;
    memset(ga, 0, sizeof *ga);
    ga->a_signed = a->x_signed;
    ga->a_zp = &a->xzp;
    ga->b = (const qc_gemm_b *)w->gemm[g];
    ga->b_zp = w->wzp_per_channel ? w->wzp + g * Ng : w->wzp;
    ga->b_zp_per_col = w->wzp_per_channel;
    ga->n0 = (int64_t)n0;
    ga->n1 = (int64_t)n1;
    ga->kernels = ctx->gk;
    if (a->out_int32) {
        ga->out = QC_GEMM_OUT_S32;
    } else {
        ga->out = a->y_signed ? QC_GEMM_OUT_S8 : QC_GEMM_OUT_U8;
        ga->bias = a->bias ? a->bias + g * Ng : NULL;
        ga->scale = a->mult + g * Ng;
        ga->scale_per_col = 1;
        ga->y_zp = a->y_zp;
        ga->rq32 = a->rq32;
        ga->relu = a->relu;
    }
}

/* One task: group g and a block of output pixels (of image n, or with ctx->span of the
 * images' pixels n * P + p in a row): im2col into A (unless direct or indirect rows), the
 * GEMM into a rows x Ng block of C (int32 or requantized bytes), then C transposed into the
 * NCHW output, one image's run of pixels at a time; an NHWC output takes the GEMM's rows in
 * place. */
static void gemm_task(void *vctx, size_t task) {
    run_ctx *ctx = vctx;
    task += ctx->task0;
    const qc_conv_args *a = ctx->a;
    const qc_conv_weights *w = a->w;
    const size_t G = w->G, Ng = ctx->Ng, K = ctx->K, P = ctx->P;
    const size_t n0 = task % ctx->ncb * ctx->cb, n1 = QC_MIN(Ng, n0 + ctx->cb);
    task /= ctx->ncb;
    const size_t blk = task % ctx->nblocks, ng = task / ctx->nblocks;
    const size_t g = ctx->span ? ng : ng % G;
    /* q0: the block's first pixel in the (image, pixel) order of the whole batch */
    const size_t q0 = ctx->span ? blk * ctx->pb : ng / G * P + blk * ctx->pb;
    const size_t qend = ctx->span ? a->N * P : (ng / G + 1) * P;
    const size_t rows = QC_MIN(ctx->pb, qend - q0);
    const size_t esize = a->out_int32 ? sizeof(int32_t) : 1;
    const size_t wsz = (qc_gemm_workspace_size((int64_t)K, (int64_t)Ng) + 63) & ~(size_t)63;
    /* an NHWC y takes the GEMM's rows in place */
    const size_t cbytes = a->y_nhwc ? 0 : (rows * Ng * esize + 63) & ~(size_t)63;
    /* an NHWC x of a 1x1 convolution is A itself: pixel q's Cg bytes at q * C + g * Cg */
    const int a_x = ctx->direct && a->x_nhwc;
    /* the direct path's rows of Cg bytes: a multiple of 256 one cache line longer where the
     * kernel reads A in place at any stride, so the transpose's stores (and the kernel's
     * loads) down a column of rows spread over the L1 sets instead of a few (1 thread, this
     * EPYC, 1x1 1024 -> 256 @14: 262 -> 253 us) */
    const size_t ldd = ctx->direct && ctx->gk->a_seg && w->Cg % 256 == 0 ? w->Cg + 64 : w->Cg;
    const size_t abytes = ctx->a_all || a_x || ctx->ix ? 0
                          : (rows * (ctx->direct ? ldd : K) + 63) & ~(size_t)63;
    char *mem = aligned_alloc(64, wsz + cbytes + abytes + 64);
    if (!mem) {
        atomic_store(&ctx->failed, 1);
        return;
    }
    void *ws = mem;
    void *cbuf = mem + wsz;
    const uint8_t *A;
    ptrdiff_t lda;
    uint8_t *Ab = ctx->a_all ? ctx->a_all + q0 * K : (uint8_t *)(mem + wsz + cbytes);
    for (size_t q = q0; q < q0 + rows && !ctx->a_all && !ctx->ix && !a_x;) {
        const size_t n = q / P, p = q % P, seg = QC_MIN(P - p, q0 + rows - q);
        if (ctx->direct) {
            /* 1x1, stride 1, no padding: A is this block of pixels' channels, transposed
             * from NCHW right here (it stays in cache for the GEMM) */
            qc_transpose_u8(ctx->x + (n * a->C + g * w->Cg) * P + p, w->Cg, seg, P,
                            Ab + (q - q0) * ldd, ldd);
        } else {
            im2col(ctx, n, g, p, seg, Ab + (q - q0) * K);
        }
        q += seg;
    }
    A = a_x ? ctx->x + q0 * a->C + g * w->Cg : Ab;
    lda = (ptrdiff_t)(a_x ? a->C : ctx->direct ? ldd : K);
    qc_gemm_args ga;
    gemm_call_args(ctx, g, n0, n1, &ga);
    ga.cols = ctx->cols ? &ctx->cols[g * ctx->ncb + n0 / ctx->cb] : NULL;
    if (ctx->ix) { /* rows in place in the padded copy: image q0 / P's unless span */
        A = ctx->xp + (ctx->span ? 0 : (q0 / P - ctx->xn0) * ctx->ximg) + g * w->Cg;
        ga.a_row = ctx->xrow + (ctx->span ? q0 : q0 % P);
        ga.a_seg = ctx->xseg;
        ga.a_nseg = ctx->xnseg;
    }
    ga.a = A;
    ga.lda = lda;
    ga.m = (int64_t)rows;
    const size_t M = w->M;
    if (a->y_nhwc) { /* rows q0.. of the (N * P, M) output, group g's columns */
        ga.c = (char *)ctx->y + (q0 * M + g * Ng) * esize;
        ga.ldc = (ptrdiff_t)M;
    } else {
        ga.c = cbuf;
        ga.ldc = (ptrdiff_t)Ng;
    }
    qc_gemm_run(&ga, ws);
    for (size_t q = q0; q < q0 + rows && !a->y_nhwc;) {
        const size_t n = q / P, p = q % P, seg = QC_MIN(P - p, q0 + rows - q);
        if (a->out_int32) {
            qc_transpose_u32((const uint32_t *)cbuf + (q - q0) * Ng + n0, seg, n1 - n0, Ng,
                             (uint32_t *)ctx->y + (n * M + g * Ng + n0) * P + p, P);
        } else {
            qc_transpose_u8((const uint8_t *)cbuf + (q - q0) * Ng + n0, seg, n1 - n0, Ng,
                            (uint8_t *)ctx->y + (n * M + g * Ng + n0) * P + p, P);
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
                size_t o = a0;
#ifndef QC_NO_X86
                if (sw == 2) {
                    /* 16 outputs from the even bytes of 32 (SSE2 is baseline): only while all
                     * 32 belong to the row, the last byte read being src[2 * (b0 - 1) + dx] */
                    const __m128i m = _mm_set1_epi16(0xFF);
                    for (; o + 16 < b0; o += 16) {
                        const uint8_t *s2 = src + (ptrdiff_t)(2 * o) + dx;
                        const __m128i lo = _mm_and_si128(_mm_loadu_si128((const __m128i *)s2), m);
                        const __m128i hi =
                            _mm_and_si128(_mm_loadu_si128((const __m128i *)(s2 + 16)), m);
                        _mm_storeu_si128((__m128i *)(dst + (o - ox)), _mm_packus_epi16(lo, hi));
                    }
                }
#endif
                for (; o < b0; o++) dst[o - ox] = src[(ptrdiff_t)(o * sw) + dx];
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
            /* direct: row k is the block in channel k's plane, at `at` in x */
            const size_t at = (n * a->C + g * a->w->Cg + k) * ctx->P + p0;
            if (k >= K) {
                rows[i] = NULL;
            } else if (ctx->direct && at + np <= a->N * a->C * ctx->P) {
                /* in place, the np - nb bytes past a plane's last block included: the next
                 * plane's, in columns whose outputs are never stored */
                rows[i] = ctx->x + at;
            } else if (ctx->direct) { /* the end of x: np would read past it */
                memcpy(tmp + i * np, ctx->x + at, nb);
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
    t.rq32 = a->rq32;
    t.lo = (int32_t)ctx->lo;
    t.hi = (int32_t)ctx->hi;
    t.ldy = (ptrdiff_t)P;
    t.fzp = (float)t.y_zp;
    t.flo = (float)t.lo;
    t.fhi = (float)t.hi;
    t.small = ctx->small;
    t.lean = ctx->lean;
    t.exact = ctx->exact;
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
    /* each of the K terms (x' - zx')(w' - zw') is at most 255 * 255 in magnitude: |C| <= cmax */
    const uint64_t cmax = (uint64_t)K * 255 * 255 + bmax;
    ctx->small = cmax < ((uint64_t)1 << 24);
    ctx->lean = ctx->small && !a->out_int32;
    for (size_t m = 0; m < M && ctx->lean; m++)
        ctx->lean = a->mult[m] >= 0.0f && a->mult[m] < 64.0f;
    ctx->exact = ctx->lean;
    for (size_t m = 0; m < M && ctx->exact; m++)
        ctx->exact = a->mult[m] == 0.0f ||
                     (a->mult[m] >= 0x1p-22f && (double)cmax * a->mult[m] + 256.0 < 0x1p22);
    /* Pixel blocks of a panel of about 96 KiB. Until there are 4 tasks per thread, split the
     * pixels further while blocks keep 256 pixels (their panels are disjoint), then the output
     * channels into chunks (each chunk builds its block's panel again, a small cost), and only
     * then the pixels below 256 (more partial kernel sub-tiles). */
    /* (one thread: one task per block, each chunk would build the panel again: 1x1 96 ->
     * 576 @14 70 -> 66 us) */
    const size_t want = nt > 1 ? 4 * nt : 1, tiles = (Ng + QC_NCHW_MR - 1) / QC_NCHW_MR;
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

/* ---- small-group path on channel quads (gconv.h) ---- */

static atomic_int g_gconv_force; /* tests: > 0 with any kernel where suited, < 0 never */

int qc_conv_gconv_force(int force) { return atomic_exchange(&g_gconv_force, force); }

/* A direct-route convolution the quad path can run: grouped with whole quads of input
 * channels (depthwise stays on the direct kernels), stride 1, int8 weights with zero point 0
 * (zb' = 0: no pixel sums needed). */
static int gconv_suited(const qc_conv_args *a) {
    const qc_conv_weights *w = a->w;
    if (w->G < 2 || w->Cg % 4 != 0 || a->sh != 1 || a->sw != 1 || !w->w_signed) return 0;
    for (size_t m = 0; m < w->M; m++)
        if (w->wzp[m] != 0) return 0;
    return 1;
}

/* Taken with the AVX-512 VNNI kernel (1 thread, this EPYC, 3x3 pad 1, batch 1: ResNeXt's g32
 * 128 @56 420 -> 162 us, g32 256 @28 403 -> 145 us, g16 64 @56 215 -> 83 us); the direct
 * path's int16 pairs are faster than the scalar kernel, which runs only when tests force
 * this path. Not for 16+ outputs per group (the GEMM path's route): g32 512 @14 138 -> 153
 * us and g32 1024 @7 110 -> 211 us there. */
static int gconv_use(const qc_conv_args *a) {
    const int force = atomic_load(&g_gconv_force);
    if (force < 0 || !gconv_suited(a)) return 0;
    return force > 0 || qc_family_select(&qc_gconv_family)->isa == QC_ISA_AVX512VNNI;
}

typedef struct {
    const qc_conv_args *a;
    const uint8_t *x;
    void *y;
    const qc_gconv_kernels *k;
    qc_gconv_tile t0;   /* the fields every task shares */
    size_t Hp, Wp, Ng, esize, xbytes;
    uint8_t flip, fill;
    atomic_int failed;
} gconv_ctx;

/* Row iyp of the padded input (Wp pixels) of quad q (channels c0 .. c0 + 3) of image n. */
static void gconv_quad_row(const gconv_ctx *c, size_t n, size_t c0, size_t iyp, uint32_t *row) {
    const qc_conv_args *a = c->a;
    const uint32_t fill4 = (uint32_t)c->fill * 0x01010101u;
    const ptrdiff_t iy = (ptrdiff_t)iyp - a->pt;
    const size_t lp = QC_MIN((size_t)a->pl, c->Wp);
    const size_t nw = iy < 0 || iy >= (ptrdiff_t)a->H ? 0 : QC_MIN(a->W, c->Wp - lp);
    const size_t pre = nw ? lp : c->Wp;
    for (size_t i = 0; i < pre; i++) row[i] = fill4;
    if (!nw) return;
    const uint8_t *rows[4];
    for (int i = 0; i < 4; i++)
        rows[i] = c->x + ((n * a->C + c0 + (size_t)i) * a->H + (size_t)iy) * a->W;
    c->k->quads(rows, c->flip, nw, (uint8_t *)(row + lp));
    for (size_t i = lp + nw; i < c->Wp; i++) row[i] = fill4;
}

/* One task: image n, group g: its quad planes, then every output channel of the group. */
static void gconv_task(void *vctx, size_t task) {
    gconv_ctx *c = vctx;
    const qc_conv_args *a = c->a;
    const qc_conv_weights *w = a->w;
    const size_t G = w->G, n = task / G, g = task % G, Cg = w->Cg, Ng = c->Ng;
    uint8_t *mem = aligned_alloc(64, c->xbytes);
    if (!mem) {
        atomic_store(&c->failed, 1);
        return;
    }
    qc_gconv_tile t = c->t0;
    const uint32_t fill4 = (uint32_t)c->fill * 0x01010101u;
    for (size_t q = 0; q < t.cq; q++) {
        uint32_t *plane = (uint32_t *)(void *)mem + q * t.plane;
        for (size_t iyp = 0; iyp < c->Hp; iyp++)
            gconv_quad_row(c, n, g * Cg + 4 * q, iyp, plane + iyp * c->Wp);
        for (size_t i = c->Hp * c->Wp; i < t.plane; i++) plane[i] = fill4;
    }
    t.x4 = mem;
    t.w = w->wt + g * Ng * w->K;
    t.cterm += g * Ng;
    if (t.scale) t.scale += g * Ng;
    t.y = (char *)c->y + (n * w->M + g * Ng) * t.ldy * c->esize;
    c->k->run(&t);
    free(mem);
}

static int gconv_run(const qc_conv_args *a, const void *x, void *y) {
    const qc_conv_weights *w = a->w;
    const size_t M = w->M, K = w->K, Ng = M / w->G, ntaps = w->kh * w->kw;
    gconv_ctx c;
    memset(&c, 0, sizeof c);
    c.a = a;
    c.x = x;
    c.y = y;
    c.k = qc_gconv_select();
    c.Ng = Ng;
    c.esize = a->out_int32 ? sizeof(int32_t) : 1;
    c.Hp = a->OH + (w->kh - 1) * (size_t)a->dh;
    c.Wp = a->OW + (w->kw - 1) * (size_t)a->dw;
    c.flip = a->x_signed ? 0x80 : 0;
    const int32_t xzp = a->xzp + (a->x_signed ? 128 : 0); /* x_zp' in [0, 255] */
    c.fill = (uint8_t)xzp;
    atomic_init(&c.failed, 0);
    qc_gconv_tile *t = &c.t0;
    t->cq = w->Cg / 4;
    t->ntaps = ntaps;
    t->nch = Ng;
    t->rq32 = a->rq32;
    t->L = (a->OH - 1) * c.Wp + a->OW;
    t->Wp = c.Wp;
    t->OH = a->OH;
    t->OW = a->OW;
    t->ldy = a->OH * a->OW;
    t->plane = add_sat(mul_sat(c.Hp, c.Wp), QC_GCONV_SLACK);
    c.xbytes = mul_sat(mul_sat(t->cq, t->plane), 4);
    if (c.xbytes > SIZE_MAX - 64) return -1;
    c.xbytes = (c.xbytes + 63) & ~(size_t)63;
    size_t *off = malloc(ntaps * sizeof(size_t));
    int32_t *cterm = malloc(M * sizeof(int32_t));
    if (!off || !cterm) {
        free(off);
        free(cterm);
        return -1;
    }
    for (size_t ky = 0; ky < w->kh; ky++)
        for (size_t kx = 0; kx < w->kw; kx++)
            off[ky * w->kw + kx] = ky * (size_t)a->dh * c.Wp + kx * (size_t)a->dw;
    /* cterm = bias - x_zp' * sum_k w, and the bound 255 * sum_k |w| + |cterm| on |C| */
    int64_t cmax = 0;
    for (size_t m = 0; m < M; m++) {
        const int8_t *wm = w->wt + m * K;
        int32_t sum = 0;
        int64_t asum = 0;
        for (size_t k = 0; k < K; k++) {
            sum += wm[k];
            asum += wm[k] < 0 ? -wm[k] : wm[k];
        }
        cterm[m] = (int32_t)((uint32_t)(a->bias ? a->bias[m] : 0) - (uint32_t)xzp * (uint32_t)sum);
        cmax = QC_MAX(cmax, 255 * asum + (cterm[m] < 0 ? -(int64_t)cterm[m] : cterm[m]));
    }
    t->off = off;
    t->cterm = cterm;
    if (a->out_int32) {
        t->out = QC_GEMM_OUT_S32;
    } else {
        t->out = a->y_signed ? QC_GEMM_OUT_S8 : QC_GEMM_OUT_U8;
        t->scale = a->mult;
        t->y_zp = a->y_zp;
        t->lo = a->y_signed ? -128 : 0;
        t->hi = a->y_signed ? 127 : 255;
        if (a->relu && a->y_zp > t->lo) t->lo = a->y_zp;
        int fma = cmax < ((int64_t)1 << 24);
        for (size_t m = 0; m < M && fma; m++) {
            const float s = fabsf(a->mult[m]);
            fma = s == 0.0f || (s >= 0x1p-20f && s <= FLT_MAX);
        }
        t->fma = fma;
    }
    qc_parallel_for(a->N * w->G, gconv_task, &c);
    free(off);
    free(cterm);
    return atomic_load(&c.failed) ? -1 : 0;
}

/* The convolution with a stride along an axis with a single output made 1 there (it never
 * matters; the depthwise sub-plane layout grows with sh * sw). */
static qc_conv_args normalized(const qc_conv_args *args) {
    qc_conv_args local = *args;
    if (local.OH == 1) local.sh = 1;
    if (local.OW == 1) local.sw = 1;
    return local;
}

/* 1x1, stride 1, no padding: a GEMM over the pixels as they are, without im2col. The output
 * plane must be the input plane: normalized() drops the stride of a dimension with one output,
 * but a 1x1 kernel at stride 2 over 2 columns reads column 0 of 2, not a plane of 1. */
static int is_direct(const qc_conv_args *a) {
    const qc_conv_weights *w = a->w;
    return w->kh == 1 && w->kw == 1 && a->sh == 1 && a->sw == 1 && a->pt == 0 && a->pl == 0 &&
           a->pb == 0 && a->pr == 0 && a->OH == a->H && a->OW == a->W;
}

/* qc_conv_route of a normalized convolution */
static int route(const qc_conv_args *a) {
    const qc_conv_weights *w = a->w;
    if (w->wdw) return QC_CONV_ROUTE_DIRECT;
    const size_t P = a->OH * a->OW;
    const size_t Ng = w->M / w->G;
    /* The NCHW GEMM for pointwise convolutions, except planes of under 64 pixels with K >= 64
     * (a 7x7 plane of 160+ channels): its 16-pixel vectors then run partly empty, and each
     * task's panel and pipeline cost more than the NHWC path's transposes (1 thread, us on
     * the NCHW GEMM -> the NHWC one: 160->960 @7 63 -> 51, @7 x8 407 -> 336, @3 29 -> 19,
     * 96->576 @6 25 -> 19; 2 threads 160->960 @7 x8 262 -> 210); tiny K stays (16->96 @7 x8,
     * 2 threads: 10 vs 14 us). From 64 pixels on the two are within 8% at batch 1 (96->576
     * @8 28 us either way, @10 44 vs 41) and the NCHW GEMM pulls ahead with the batch and the
     * threads (@14 x8 491 vs 517, 64->384 @14 x8 on 2 threads 127 vs 172). And for
     * ungrouped kh x kw kernels over few input channels (a network's first layer, C = 3):
     * the NHWC im2col copies runs of only Cg bytes per tap there, where the NCHW rows are
     * whole runs of a plane's row (stride 1) or a byte gather (stride 2, worth it up to 8
     * channels). 1 thread, 224^2: ResNet-18's 7x7/2 3->64 2.8 -> 0.9 ms, MobileNetV2's
     * 3x3/2 3->32 681 -> 138 us. Not for groups: ResNeXt's g32 512 @14 (16 channels per
     * group) is 333 us NHWC, 573 us NCHW. */
    /* Pointwise: not for strided planes of a few hundred pixels (the NCHW gather of short
     * rows costs more than the NHWC transposes: 128->256 @28/2 131 -> 59 us) nor for
     * projections (K > N) onto under 256 pixels (576->96 @14 77 -> 67 us, 384->64 @14 48 ->
     * 36 us); expansions onto such planes stay (96->576 @14 100 -> 75 us). */
    const int strided = a->sh != 1 || a->sw != 1;
    const int pointwise = w->kh == 1 && w->kw == 1 && (P >= 64 || w->K < 64) &&
                          !(strided && P < 512) && !(P < 256 && w->K > Ng);
    /* Small-C kernels on NCHW: each plane costs a fixed set-up, so only where planes are big
     * enough for the Cg (1 thread, 3x3 pad 1, gemm -> NCHW us: 16->32 @8 x64 209 -> 726,
     * 8->16 @8 x64 135 -> 317, 8->32 @28/2 13 -> 56, 8->16 @56 91 -> 61, 4->16 @8 x64
     * 120 -> 170, 4->16 @28 x8 162 -> 94, 3->32 @14 x8 59 -> 40, 2->16 @8 x64 127 -> 93) */
    const int small_cg = w->kh * w->kw > 1 && w->G == 1 &&
                         (w->Cg <= 2 || (w->Cg <= 4 && P >= 128) ||
                          (w->Cg <= QC_NCHW_SMALL_CG / 2 && P >= 1024 && a->sw == 1));
    return w->nchw && qc_nchw_use(pointwise || small_cg) ? QC_CONV_ROUTE_NCHW : QC_CONV_ROUTE_GEMM;
}

int qc_conv_route(const qc_conv_args *args) {
    const qc_conv_args a = normalized(args);
    return route(&a);
}

/* One image's (rows, cols) bytes or int32 values at src transposed into dst: a task of
 * qc_conv_layout. */
typedef struct {
    const void *src;
    void *dst;
    size_t rows, cols, esize;
} layout_ctx;

static void layout_task(void *vctx, size_t n) {
    const layout_ctx *l = vctx;
    const size_t off = n * l->rows * l->cols * l->esize;
    if (l->esize == 4)
        qc_transpose_u32((const uint32_t *)(const void *)((const char *)l->src + off), l->rows,
                         l->cols, l->cols, (uint32_t *)(void *)((char *)l->dst + off), l->rows);
    else
        qc_transpose_u8((const uint8_t *)l->src + off, l->rows, l->cols, l->cols,
                        (uint8_t *)l->dst + off, l->rows);
}

void qc_conv_layout(const void *src, void *dst, size_t n, size_t rows, size_t cols,
                    size_t esize) {
    layout_ctx l = {src, dst, rows, cols, esize};
    qc_parallel_for(n, layout_task, &l);
}

/* The direct path with an NHWC x or y: through NCHW copies (that path's kernels read and
 * write planes). */
static int run_via_nchw(const qc_conv_args *a, const void *x, void *y) {
    const size_t HW = a->H * a->W, P = a->OH * a->OW, M = a->w->M;
    const size_t esize = a->out_int32 ? sizeof(int32_t) : 1;
    qc_conv_args local = *a;
    local.x_nhwc = local.y_nhwc = 0;
    void *xc = NULL, *yc = NULL;
    int rc = -1;
    if (a->x_nhwc) {
        xc = malloc(QC_MAX(mul_sat(mul_sat(a->N, HW), a->C), (size_t)1));
        if (!xc) goto done;
        qc_conv_layout(x, xc, a->N, HW, a->C, 1);
    }
    if (a->y_nhwc) {
        yc = malloc(QC_MAX(mul_sat(mul_sat(mul_sat(a->N, P), M), esize), (size_t)1));
        if (!yc) goto done;
    }
    rc = qc_conv_run(&local, xc ? xc : x, yc ? yc : y);
    if (rc == 0 && yc) {
        qc_conv_layout(yc, y, a->N, M, P, esize);
    }
done:
    free(xc);
    free(yc);
    return rc;
}

int qc_conv_run(const qc_conv_args *args, const void *x, void *y) {
    const qc_conv_args local = normalized(args);
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
    const int r = route(a);
    if (r == QC_CONV_ROUTE_DIRECT) {
        if (a->x_nhwc || a->y_nhwc) return run_via_nchw(a, x, y);
        return gconv_use(a) ? gconv_run(a, x, y) : dw_run(&ctx);
    }
    const size_t HW = a->H * a->W;
    ctx.Ng = w->M / w->G;
    ctx.K = w->K;
    ctx.P = P;
    ctx.direct = is_direct(a);
    /* the NCHW GEMM reads and writes planes: with either side NHWC, the NHWC GEMM (which
     * then skips its transposes) */
    if (r == QC_CONV_ROUTE_NCHW && !a->x_nhwc && !a->y_nhwc) return nchw_run(&ctx);
    ctx.gk = qc_gemm_select();
    ctx.ix = ix_plan(&ctx);
    /* pixel blocks: A block about 128 KiB (stays in L2 with B), at least 16 rows; split
     * finer when there are too few tasks for the threads */
    size_t pb = (128 * 1024) / (w->K ? w->K : 1);
    pb = QC_MAX(16, QC_MIN(512, pb)) & ~(size_t)15;
    /* planes smaller than a block: blocks run across images (a GEMM call per tiny plane
     * would be mostly overhead) */
    ctx.span = P < pb && a->N > 1;
    size_t units = ctx.span ? w->G : a->N * w->G;
    const size_t pixels = ctx.span ? a->N * P : P;
    /* at least 4 tasks per thread while each keeps about 1 M multiply-adds (waking a thread
     * for less costs more than it saves) */
    const double work = (double)a->N * (double)P * (double)w->M * (double)w->K;
    const size_t want = (size_t)QC_MAX(1.0, QC_MIN(4.0 * qc_get_num_threads(),
                                                   work / (1 << 20)));
    while (pb > 16 && units * ((pixels + pb - 1) / pb) < want) pb = (pb / 2 + 15) & ~(size_t)15;
    ctx.pb = pb;
    ctx.nblocks = (pixels + pb - 1) / pb;
    ctx.ncb = 1;
    ctx.cb = ctx.Ng;
    /* Few pixels for many weights (ResNet's 7x7 planes at batch 1: 49 pixels, K 4608, 512
     * outputs): too few pixel blocks to share out evenly (16 + 16 + 16 + 1 rows on 2 threads)
     * and each would stream all of B. Split the output channels instead, over patches built
     * once: each task runs every pixel against its slice of B, and B is read once. */
    const size_t all_px = a->N * P; /* rows of the shared patch matrix */
    if (!ctx.direct && w->G == 1 && units * ctx.nblocks < want && ctx.Ng >= 64 &&
        mul_sat(all_px, ctx.K) <= ((size_t)512 << 10)) {
        size_t cb = (ctx.Ng * units + want - 1) / want;
        cb = QC_MAX((size_t)32, (cb + 31) & ~(size_t)31);
        if (cb < ctx.Ng) {
            if (!ctx.ix) { /* indirect rows need no patches: every task reads them in place */
                ctx.a_all = malloc(QC_MAX(all_px * ctx.K, (size_t)1));
                if (!ctx.a_all) return -1;
            }
            ctx.cb = cb;
            ctx.ncb = (ctx.Ng + cb - 1) / cb;
            ctx.pb = all_px; /* one block of every image's pixels (span) */
            ctx.span = 1;
            units = w->G;
            ctx.nblocks = 1;
        }
    }
    /* im2col reads an NHWC copy of x (each pixel serves up to kh * kw patches); the direct
     * path transposes each block of pixels itself, in gemm_task */
    if (ctx.ix) {
        if (ix_build(&ctx) < 0) {
            free(ctx.xp);
            free(ctx.xrow);
            free(ctx.xseg);
            return -1;
        }
    } else if (!ctx.direct && (a->C == 1 || a->x_nhwc)) {
        ctx.xt = x; /* NHWC already (with C == 1, NCHW and NHWC coincide) */
    } else if (!ctx.direct) {
        ctx.xt_w = malloc(QC_MAX(a->N * HW * a->C, (size_t)1));
        if (!ctx.xt_w) {
            free(ctx.a_all);
            return -1;
        }
        ctx.xt = ctx.xt_w;
        /* blocks of 256 pixels, or down to 32 until every thread gets two */
        const size_t two = 2 * (size_t)qc_get_num_threads();
        for (ctx.tpb = 256; ctx.tpb > 32 && a->N * ((HW + ctx.tpb - 1) / ctx.tpb) < two;)
            ctx.tpb /= 2;
        qc_parallel_for(a->N * ((HW + ctx.tpb - 1) / ctx.tpb), nhwc_task, &ctx);
    }
    if (ctx.a_all) {
        const size_t chunks = (all_px + 63) / 64;
        qc_parallel_for(chunks, im2col_task, &ctx);
    }
    /* the column terms, once per group and chunk instead of once per pixel block */
    const size_t ncalls = w->G * ctx.ncb, colsb = qc_gemm_cols_size((int64_t)ctx.cb);
    ctx.cols = malloc(ncalls * sizeof(qc_gemm_cols));
    ctx.cols_mem = malloc(QC_MAX(mul_sat(ncalls, colsb), (size_t)1));
    if (ctx.cols && ctx.cols_mem) {
        for (size_t i = 0; i < ncalls; i++) {
            qc_gemm_args ga;
            const size_t n0 = i % ctx.ncb * ctx.cb;
            gemm_call_args(&ctx, i / ctx.ncb, n0, QC_MIN(ctx.Ng, n0 + ctx.cb), &ga);
            qc_gemm_cols_prepare(&ga, (char *)ctx.cols_mem + i * colsb, &ctx.cols[i]);
        }
    } else {
        free(ctx.cols); /* each call makes its own */
        ctx.cols = NULL;
    }
    /* chunks of images (one chunk of all of them without indirect rows): the padded copy,
     * then their tasks (image-major without span) */
    if (!ctx.ix) ctx.xcn = a->N;
    const size_t per = image_tasks(&ctx);
    for (ctx.xn0 = 0; ctx.xn0 < a->N; ctx.xn0 += ctx.xcn) {
        const size_t n = QC_MIN(ctx.xcn, a->N - ctx.xn0);
        if (ctx.ix) ix_fill(&ctx, n);
        ctx.task0 = ctx.span ? 0 : ctx.xn0 * per;
        qc_parallel_for(ctx.span ? units * ctx.nblocks * ctx.ncb : n * per, gemm_task, &ctx);
    }
    free(ctx.cols);
    free(ctx.cols_mem);
    free(ctx.xt_w);
    free(ctx.a_all);
    free(ctx.xp);
    free(ctx.xrow);
    free(ctx.xseg);
    return atomic_load(&ctx.failed) ? -1 : 0;
}
