/* Bindings for the GGUF block quantizers (Q8_0, Q4_0). */
#include "py/pyutil.h"

#include <math.h>
#include <string.h>

#include "gguf/blocks.h"

/* _gguf_quantize(x, kind): x float32 (..., K) with K % 32 == 0 and finite values;
 * kind "q8_0" | "q4_0" -> uint8 (..., K / 32 * bytes per block). */
static PyObject *py_gguf_quantize(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xobj;
    const char *kind;
    if (!PyArg_ParseTuple(args, "Os:_gguf_quantize", &xobj, &kind)) return NULL;
    int bytes;
    if (strcmp(kind, "q8_0") == 0) {
        bytes = QC_GGUF_Q8_0_BYTES;
    } else if (strcmp(kind, "q4_0") == 0) {
        bytes = QC_GGUF_Q4_0_BYTES;
    } else {
        return (qc_value_error("dtype: expected 'q8_0' or 'q4_0', got '%s'", kind), NULL);
    }
    PyArrayObject *x = qc_float32_array(xobj, "x");
    if (!x) return NULL;
    const int nd = PyArray_NDIM(x);
    if (nd < 1 || PyArray_DIM(x, nd - 1) % QC_GGUF_QK != 0) {
        qc_value_error("x: expected a last dimension that is a multiple of 32 (the block "
                       "size), got %lld", nd ? (long long)PyArray_DIM(x, nd - 1) : -1LL);
        Py_DECREF(x);
        return NULL;
    }
    const float *xd = (const float *)PyArray_DATA(x);
    const npy_intp n = PyArray_SIZE(x);
    for (npy_intp i = 0; i < n; i++) {
        if (!isfinite(xd[i])) {
            qc_value_error("x: expected finite values, got %s at flat index %lld",
                           isnan(xd[i]) ? "nan" : xd[i] > 0 ? "inf" : "-inf", (long long)i);
            Py_DECREF(x);
            return NULL;
        }
    }
    npy_intp shape[NPY_MAXDIMS];
    for (int i = 0; i < nd - 1; i++) shape[i] = PyArray_DIM(x, i);
    /* K / 32 * bytes <= K * 34 / 32 < 2 K: no overflow beyond what NumPy already holds */
    shape[nd - 1] = PyArray_DIM(x, nd - 1) / QC_GGUF_QK * bytes;
    PyArrayObject *y = (PyArrayObject *)PyArray_SimpleNew(nd, shape, NPY_UINT8);
    if (!y) {
        Py_DECREF(x);
        return NULL;
    }
    const int64_t nblocks = (int64_t)(n / QC_GGUF_QK);
    uint8_t *yd = (uint8_t *)PyArray_DATA(y);
    Py_BEGIN_ALLOW_THREADS
    if (bytes == QC_GGUF_Q8_0_BYTES)
        qc_gguf_quantize_q8_0(xd, nblocks, yd);
    else
        qc_gguf_quantize_q4_0(xd, nblocks, yd);
    Py_END_ALLOW_THREADS
    Py_DECREF(x);
    return (PyObject *)y;
}

PyMethodDef qc_gguf_methods[] = {
    {"_gguf_quantize", py_gguf_quantize, METH_VARARGS,
     "llama.cpp Q8_0 / Q4_0 blocks of float32 rows (ggml's reference quantizers)."},
    {NULL, NULL, 0, NULL},
};
