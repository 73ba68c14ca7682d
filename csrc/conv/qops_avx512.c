/* Quantized operator kernels (pooling, add, concat, depthwise conv) built for avx512. */
#define QC_QOPS_NAME(name) qc_qops_##name##__avx512
#include "conv/qops_impl.h"

QC_QOPS_TABLE(qc_qops__avx512)
