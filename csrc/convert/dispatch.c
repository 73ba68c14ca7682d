/* The conversion families and their variants, best first (scalar last), for dispatch and cpu_info. */
#include "convert/convert.h"

#ifdef QC_NO_X86
#define QC_CONVERT_FAMILY(var, fname, type)                                              \
    static const qc_variant var##_variants[] = {                                         \
        {fname "__scalar", QC_ISA_SCALAR, &type##__scalar},                               \
    };                                                                                   \
    const qc_family var = {fname, 1, var##_variants};
#else
#define QC_CONVERT_FAMILY(var, fname, type)                                              \
    static const qc_variant var##_variants[] = {                                         \
        {fname "__avx512", QC_ISA_AVX512, &type##__avx512},                               \
        {fname "__avx2", QC_ISA_AVX2, &type##__avx2},                                     \
        {fname "__scalar", QC_ISA_SCALAR, &type##__scalar},                               \
    };                                                                                   \
    const qc_family var = {fname, 3, var##_variants};
#endif

QC_CONVERT_FAMILY(qc_round_family, "round", qc_round_kernels)
QC_CONVERT_FAMILY(qc_clamp_family, "clamp", qc_clamp_kernels)
QC_CONVERT_FAMILY(qc_saturate_cast_family, "saturate_cast", qc_saturate_kernels)
QC_CONVERT_FAMILY(qc_float16_family, "to_float16", qc_float16_kernels)
QC_CONVERT_FAMILY(qc_bfloat16_family, "bfloat16", qc_bfloat16_kernels)
