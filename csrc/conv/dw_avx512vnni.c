/* AVX-512 VNNI direct-convolution kernels: int16 pairs multiplied and summed by vpdpwssd. */
#ifndef QC_NO_X86
#define QC_DW_NAME(name) dw_##name##__avx512vnni
/* Inline asm, as gemm's QC_DPBUSD: with the intrinsic GCC 12 copies each accumulator through
 * a spare register on every step. */
#define QC_DW_MADD(acc, x, w) __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w))
#include "conv/dw_avx512_impl.h"

const qc_dw_kernels qc_dw_kernels_avx512vnni = {"conv_dw_pairs_4x16__avx512vnni",
                                                dw_rows__avx512vnni, dw_rows2__avx512vnni, dw_pairs__avx512vnni,
                                                dw_tile__avx512vnni, dw_nhwc__avx512vnni};
#endif
