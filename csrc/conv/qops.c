/* The qops kernel family: AVX-512, AVX2 and scalar builds of qops_impl.h, best first. */
#include "conv/qops.h"

static const qc_variant qops_variants[] = {
#ifndef QC_NO_X86
    {"qops__avx512", QC_ISA_AVX512, &qc_qops__avx512},
    {"qops__avx2", QC_ISA_AVX2, &qc_qops__avx2},
#endif
    {"qops__scalar", QC_ISA_SCALAR, &qc_qops__scalar},
};

const qc_family qc_qops_family = {"qops", sizeof qops_variants / sizeof qops_variants[0],
                                  qops_variants};
