/* The AMX tile operations the AMX gemm kernel is written against: configure, load, u8 x s8
 * dot product into int32 (TDPBUSD), store, zero.
 *
 * Normally (amx.c, compiled with -mamx-tile -mamx-int8) they are the AMX intrinsics. With
 * QC_AMX_MODEL defined (amxemu_avx512vnni.c, built only when setup.py sees
 * QUANTC_AMX_EMULATE=1) they are a scalar C model of the same instructions, written from
 * Intel's documented semantics (SDM vol. 2, LDTILECFG / TILELOADD / TDPBUSD / TILESTORED /
 * TILEZERO), so the same kernel source runs, and is tested exactly, on any CPU:
 *   - palette 1: 8 tiles tmm0..tmm7, each at most 16 rows of at most 64 bytes;
 *   - a load copies `rows` rows of `colsb` bytes (row r from base + r * stride) and zeroes
 *     the rest of the tile; a store writes rows x colsb bytes;
 *   - TDPBUSD dst, a, b: for m < rows(dst), k < colsb(a) / 4, n < colsb(dst) / 4:
 *       dst[m].dword[n] += sum_{i<4} u8(a[m].byte[4k + i]) * s8(b[k].byte[4n + i])
 *     in wrapping int32 arithmetic; B is thus the dword-grouped (K/4, N*4) layout;
 *   - shapes that the hardware rejects (#UD / #GP: bad palette, rows > 16, colsb > 64,
 *     rows(dst) != rows(a), colsb(a) != 4 * rows(b), colsb(dst) != colsb(b), an unconfigured
 *     tile) abort() here, so a kernel bug cannot pass in the model and fault on hardware. */
#ifndef QC_GEMM_AMX_TILES_H
#define QC_GEMM_AMX_TILES_H

#include <stdint.h>
#include <string.h>

#include "qc_common.h"

/* The 64-byte LDTILECFG operand. */
typedef struct {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} qc_tilecfg;

#ifdef QC_AMX_MODEL
#include <stdlib.h>

#define QC_AMX_NTILES 8
#define QC_AMX_MAXROWS 16
#define QC_AMX_MAXCOLSB 64

typedef struct {
    int configured;
    int rows[QC_AMX_NTILES], colsb[QC_AMX_NTILES];
    uint8_t t[QC_AMX_NTILES][QC_AMX_MAXROWS][QC_AMX_MAXCOLSB];
} qc_amx_state;

QC_INLINE void qc_amx_ldtilecfg(qc_amx_state *s, const qc_tilecfg *cfg) {
    if (cfg->palette == 0) { /* palette 0: tiles released, state back to init */
        memset(s, 0, sizeof *s);
        return;
    }
    if (cfg->palette != 1) abort();
    for (int i = 0; i < 14; i++)
        if (cfg->reserved[i]) abort();
    for (int i = 0; i < 16; i++) {
        const int rows = cfg->rows[i], colsb = cfg->colsb[i];
        if (i >= QC_AMX_NTILES) {
            if (rows || colsb) abort();
            continue;
        }
        if (rows > QC_AMX_MAXROWS || colsb > QC_AMX_MAXCOLSB || (rows == 0) != (colsb == 0))
            abort();
        s->rows[i] = rows;
        s->colsb[i] = colsb;
    }
    memset(s->t, 0, sizeof s->t);
    s->configured = 1;
}

QC_INLINE void qc_amx_check(const qc_amx_state *s, int i) {
    if (!s->configured || i < 0 || i >= QC_AMX_NTILES || s->rows[i] == 0) abort();
}

QC_INLINE void qc_amx_tilezero(qc_amx_state *s, int i) {
    qc_amx_check(s, i);
    memset(s->t[i], 0, sizeof s->t[i]);
}

QC_INLINE void qc_amx_tileloadd(qc_amx_state *s, int i, const void *base, ptrdiff_t stride) {
    qc_amx_check(s, i);
    memset(s->t[i], 0, sizeof s->t[i]);
    for (int r = 0; r < s->rows[i]; r++)
        memcpy(s->t[i][r], (const char *)base + r * stride, (size_t)s->colsb[i]);
}

QC_INLINE void qc_amx_tilestored(const qc_amx_state *s, int i, void *base, ptrdiff_t stride) {
    qc_amx_check(s, i);
    for (int r = 0; r < s->rows[i]; r++)
        memcpy((char *)base + r * stride, s->t[i][r], (size_t)s->colsb[i]);
}

QC_INLINE void qc_amx_tdpbusd(qc_amx_state *s, int d, int a, int b) {
    qc_amx_check(s, d);
    qc_amx_check(s, a);
    qc_amx_check(s, b);
    if (s->rows[d] != s->rows[a] || s->colsb[a] != 4 * s->rows[b] ||
        s->colsb[d] != s->colsb[b] || (s->colsb[d] & 3) || (s->colsb[a] & 3))
        abort();
    for (int m = 0; m < s->rows[d]; m++) {
        for (int n = 0; n < s->colsb[d] / 4; n++) {
            uint32_t acc;
            memcpy(&acc, &s->t[d][m][4 * n], 4);
            for (int k = 0; k < s->colsb[a] / 4; k++) {
                int32_t dot = 0; /* four products of |x| <= 255 * 128: no overflow */
                for (int q = 0; q < 4; q++)
                    dot += (int32_t)s->t[a][m][4 * k + q] * (int32_t)(int8_t)s->t[b][k][4 * n + q];
                acc += (uint32_t)dot; /* int32 wrap-around */
            }
            memcpy(&s->t[d][m][4 * n], &acc, 4);
        }
    }
}

#define QC_TILES_DECL(s) qc_amx_state s
#define QC_TILE_CONFIG(s, cfg) qc_amx_ldtilecfg(&(s), (cfg))
#define QC_TILE_ZERO(s, i) qc_amx_tilezero(&(s), (i))
#define QC_TILE_LOAD(s, i, p, stride) qc_amx_tileloadd(&(s), (i), (p), (stride))
#define QC_TILE_STORE(s, i, p, stride) qc_amx_tilestored(&(s), (i), (p), (stride))
#define QC_TILE_DPBUSD(s, d, a, b) qc_amx_tdpbusd(&(s), (d), (a), (b))

#else /* the AMX instructions (compile with -mamx-tile -mamx-int8) */
#include <immintrin.h>

#define QC_TILES_DECL(s) int s = 0
#define QC_TILE_CONFIG(s, cfg) ((void)(s), _tile_loadconfig(cfg))
#define QC_TILE_ZERO(s, i) _tile_zero(i)
#define QC_TILE_LOAD(s, i, p, stride) _tile_loadd(i, p, stride)
#define QC_TILE_STORE(s, i, p, stride) _tile_stored(i, p, stride)
#define QC_TILE_DPBUSD(s, d, a, b) _tile_dpbusd(d, a, b)
#endif

#endif
