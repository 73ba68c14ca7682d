/* Quantized operator kernels (pooling, add, concat) built for scalar. */
#define QC_QOPS_NAME(name) qc_qops_##name##__scalar
#include "conv/qops_impl.h"

QC_QOPS_TABLE(qc_qops__scalar)
