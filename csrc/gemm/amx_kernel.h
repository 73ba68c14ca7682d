/* The AMX gemm micro-kernel, 32x32 per call, written against the tile layer of amx_tiles.h:
 * included by amx.c (the AMX instructions) and amxemu_avx512vnni.c (the scalar tile model),
 * so both variants run this exact source. Include after defining QC_AMX_TILE_FN (the tile
 * function's name); needs AVX-512 VNNI for the shared epilogue.
 *
 * Tiles (palette 1, every tile 16 rows x 64 bytes): C00 C01 C10 C11 (tmm0-3, int32, rows
 * 16h..16h+15 x panel p), A0 A1 (tmm4-5, 16 rows x 64 K bytes of the packed A block),
 * B0 B1 (tmm6-7, 16 groups x 16 columns x 4 bytes of a B panel).
 *
 * Packed B (gemm.h) is already TDPBUSD's dword-grouped layout: group g of a full panel is the
 * 64-byte tile row g, so 16 consecutive groups (64 bytes of K) load with stride 64. A narrow
 * last panel (stride 4w), the last K chunk (kp % 64 != 0) and a partial row block (mr not a
 * multiple of 16) are copied into zero-padded 16 x 64 buffers first: zero bytes add nothing,
 * tiles never read past A or B, and one tile configuration serves every call. C tiles go
 * through a 32 x 32 int32 buffer to the AVX-512 epilogue of the VNNI kernel. */
#include "gemm/amx_tiles.h"
#include "gemm/epilogue_avx512.h"

#define QC_AMX_MR 32
#define QC_AMX_NR 32

static void QC_AMX_TILE_FN(const qc_gemm_tile *t, int mr, int nc) {
    const int64_t kp = t->kp, groups = kp / 4;
    const int nh = mr > 16 ? 2 : 1;   /* row halves */
    const int np = nc > 16 ? 2 : 1;   /* panels */
    const int pw[2] = {t->pw0, t->pw1};
    const int8_t *bp[2] = {t->b, t->b + kp * QC_GEMM_NR};
    _Alignas(64) uint8_t abuf[16 * 64];
    _Alignas(64) int8_t bbuf[16 * 64];
    _Alignas(64) int32_t cbuf[QC_AMX_MR * QC_AMX_NR];

    qc_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = 64;
    }
    QC_TILES_DECL(ts);
    QC_TILE_CONFIG(ts, &cfg);
    QC_TILE_ZERO(ts, 0);
    QC_TILE_ZERO(ts, 1);
    QC_TILE_ZERO(ts, 2);
    QC_TILE_ZERO(ts, 3);

    for (int64_t g0 = 0; g0 < groups; g0 += 16) {
        const int gn = (int)(groups - g0 < 16 ? groups - g0 : 16); /* groups in this chunk */
        /* A halves: rows 16h.., K bytes [4 g0, 4 (g0 + gn)) */
        for (int h = 0; h < nh; h++) {
            const int rows = mr - 16 * h < 16 ? mr - 16 * h : 16;
            const uint8_t *src = t->a + (int64_t)16 * h * kp + 4 * g0;
            if (rows == 16 && gn == 16) {
                if (h == 0) QC_TILE_LOAD(ts, 4, src, kp);
                else QC_TILE_LOAD(ts, 5, src, kp);
            } else {
                memset(abuf, 0, sizeof abuf);
                for (int r = 0; r < rows; r++) memcpy(abuf + 64 * r, src + r * kp, (size_t)(4 * gn));
                if (h == 0) QC_TILE_LOAD(ts, 4, abuf, 64);
                else QC_TILE_LOAD(ts, 5, abuf, 64);
            }
        }
        for (int p = 0; p < np; p++) {
            const int64_t gs = 4 * pw[p]; /* group stride of this panel */
            const int8_t *src = bp[p] + g0 * gs;
            if (pw[p] == 16 && gn == 16) {
                if (p == 0) QC_TILE_LOAD(ts, 6, src, 64);
                else QC_TILE_LOAD(ts, 7, src, 64);
            } else {
                memset(bbuf, 0, sizeof bbuf);
                for (int g = 0; g < gn; g++) memcpy(bbuf + 64 * g, src + g * gs, (size_t)gs);
                if (p == 0) QC_TILE_LOAD(ts, 6, bbuf, 64);
                else QC_TILE_LOAD(ts, 7, bbuf, 64);
            }
        }
        QC_TILE_DPBUSD(ts, 0, 4, 6);
        if (np == 2) QC_TILE_DPBUSD(ts, 1, 4, 7);
        if (nh == 2) {
            QC_TILE_DPBUSD(ts, 2, 5, 6);
            if (np == 2) QC_TILE_DPBUSD(ts, 3, 5, 7);
        }
    }
    QC_TILE_STORE(ts, 0, cbuf, QC_AMX_NR * 4);
    if (np == 2) QC_TILE_STORE(ts, 1, cbuf + 16, QC_AMX_NR * 4);
    if (nh == 2) {
        QC_TILE_STORE(ts, 2, cbuf + 16 * QC_AMX_NR, QC_AMX_NR * 4);
        if (np == 2) QC_TILE_STORE(ts, 3, cbuf + 16 * QC_AMX_NR + 16, QC_AMX_NR * 4);
    }

    const __mmask16 m0 = nc >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nc) - 1);
    const __mmask16 m1 = nc >= 32 ? (__mmask16)0xFFFF
                         : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1)
                                   : (__mmask16)0;
    for (int r = 0; r < mr; r++) {
        qc_gemm_store_row16(t, r, 0, _mm512_load_si512(cbuf + r * QC_AMX_NR), m0);
        if (np == 2)
            qc_gemm_store_row16(t, r, 1, _mm512_load_si512(cbuf + r * QC_AMX_NR + 16), m1);
    }
}
