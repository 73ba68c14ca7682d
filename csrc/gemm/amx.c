/* AMX-INT8 gemm micro-kernel (32x32, TDPBUSD tiles): amx_kernel.h on the AMX instructions. */
#include "gemm/kernels.h"

#ifndef QC_NO_X86
#define QC_AMX_TILE_FN tile_amx
#include "gemm/amx_kernel.h"

const qc_gemm_kernels qc_gemm_kernels_amx = {"gemm_32x32c4__amx", QC_AMX_MR, QC_AMX_NR, 0,
                                             0, tile_amx};
#endif
