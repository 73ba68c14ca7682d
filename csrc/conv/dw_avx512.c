/* AVX-512 (BW) direct-convolution kernels: int16 pairs by vpmaddwd, summed by vpaddd. */
#ifndef QC_NO_X86
#define QC_DW_NAME(name) dw_##name##__avx512
#define QC_DW_MADD(acc, x, w) ((acc) = _mm512_add_epi32((acc), _mm512_madd_epi16((x), (w))))
#include "conv/dw_avx512_impl.h"

const qc_dw_kernels qc_dw_kernels_avx512 = {"conv_dw_pairs_4x16__avx512", dw_rows__avx512, dw_rows2__avx512,
                                            dw_pairs__avx512, dw_tile__avx512, dw_nhwc__avx512,
                                            NULL, NULL};
#endif
