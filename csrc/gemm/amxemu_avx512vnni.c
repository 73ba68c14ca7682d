/* The AMX gemm micro-kernel on the scalar tile model (test builds: QUANTC_AMX_EMULATE=1). */
#include "gemm/kernels.h"

#if !defined(QC_NO_X86) && defined(QC_AMX_EMULATE)
#define QC_AMX_MODEL 1
#define QC_AMX_TILE_FN tile_amxemu
#include "gemm/amx_kernel.h"

const qc_gemm_kernels qc_gemm_kernels_amxemu = {"gemm_32x32c4__amx_emulated", QC_AMX_MR,
                                                QC_AMX_NR, 0, 0, tile_amxemu};

/* One TDPBUSD on the model, for the tests: c (rows x n int32) += a (rows x 4k u8) times b
 * (k x 4n s8, dword-grouped), through configure, load, dot product and store. */
void qc_amx_model_dpbusd(const uint8_t *a, const int8_t *b, int32_t *c, int rows, int k, int n) {
    qc_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    cfg.rows[0] = (uint8_t)rows;
    cfg.colsb[0] = (uint16_t)(4 * n);
    cfg.rows[1] = (uint8_t)rows;
    cfg.colsb[1] = (uint16_t)(4 * k);
    cfg.rows[2] = (uint8_t)k;
    cfg.colsb[2] = (uint16_t)(4 * n);
    QC_TILES_DECL(ts);
    QC_TILE_CONFIG(ts, &cfg);
    QC_TILE_LOAD(ts, 0, c, 4 * n);
    QC_TILE_LOAD(ts, 1, a, 4 * k);
    QC_TILE_LOAD(ts, 2, b, 4 * n);
    QC_TILE_DPBUSD(ts, 0, 1, 2);
    QC_TILE_STORE(ts, 0, c, 4 * n);
}
#endif
