/* The direct-convolution kernel family (dw.h): registry, best first. */
#include "conv/dw.h"

static const qc_variant dw_variants[] = {
#ifndef QC_NO_X86
    {"conv_dw_pairs_4x16_quads3x3__avx512vnni", QC_ISA_AVX512VNNI, &qc_dw_kernels_avx512vnni},
    {"conv_dw_pairs_4x16__avx512", QC_ISA_AVX512, &qc_dw_kernels_avx512},
    {"conv_dw_pairs_4x8__avx2", QC_ISA_AVX2, &qc_dw_kernels_avx2},
#endif
    {"conv_dw_pairs__scalar", QC_ISA_SCALAR, &qc_dw_kernels_scalar},
};

const qc_family qc_dw_family = {"conv_dw", sizeof dw_variants / sizeof dw_variants[0],
                                dw_variants};
