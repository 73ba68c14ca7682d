/* Binding-layer helpers: argument parsing, validation with clear messages, GIL-free calls.
 * Only csrc/py/ includes Python.h and NumPy; kernels never do. */
#ifndef QC_PYUTIL_H
#define QC_PYUTIL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define PY_ARRAY_UNIQUE_SYMBOL quantc_ARRAY_API
#ifndef QC_MODULE_MAIN
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "qc_common.h"
#include "cpu/cpu.h"
#include "threads/pool.h"

/* Each binding file exposes a method table (NULL-terminated) and an init hook. */
extern PyMethodDef qc_elementwise_methods[];
extern PyMethodDef qc_convert_methods[];
extern PyMethodDef qc_gemm_methods[];
extern PyMethodDef qc_conv_methods[];
extern PyMethodDef qc_calib_methods[];
extern PyMethodDef qc_gguf_methods[];
extern PyMethodDef qc_q4gemm_methods[];
int qc_elementwise_init(PyObject *m);
int qc_convert_init(PyObject *m);
int qc_gemm_init(PyObject *m);
int qc_conv_init(PyObject *m);
int qc_calib_init(PyObject *m);
int qc_q4gemm_init(PyObject *m);

/* ---- argument helpers: all return 0 on success, -1 with a Python error set ---- */

/* "int8"/"uint8"/... or a NumPy dtype/type/scalar type -> NPY typenum. `allowed` is a
 * -1-terminated list of accepted typenums (NULL: any integer type). */
int qc_parse_int_dtype(PyObject *obj, const char *arg, const int *allowed, int *typenum);
/* Name of a typenum for messages ("int8", "int64" for long and long long alike, "bfloat16"). */
const char *qc_typename(int typenum);

/* profile string -> qc_profile. NULL/None -> onnx. */
int qc_parse_profile(PyObject *obj, qc_profile *profile);

/* axis: None -> *has_axis = 0; int in [-ndim, ndim) -> normalized. */
int qc_parse_axis(PyObject *obj, const char *arg, int ndim, int *axis, int *has_axis);

/* Any array-like as an ndarray of its own dtype (new reference); TypeError naming arg for None
 * or an object NumPy cannot convert. */
PyArrayObject *qc_any_array(PyObject *obj, const char *arg);

/* a as an aligned, C-contiguous, native-byte-order array of its own type (new reference: a
 * itself when it already is one, else a copy). */
PyArrayObject *qc_native_array(PyArrayObject *a);

/* An input array of real numbers converted to C-contiguous float32 (new reference).
 * Accepts float16/32/64, integer and ml_dtypes float (bfloat16, float8, float4) arrays;
 * rejects bool, complex, object, strings.
 * The input is never modified: a copy is made whenever conversion is needed. */
PyArrayObject *qc_float32_array(PyObject *obj, const char *arg);
/* 1 when d is one of ml_dtypes' floating types (bfloat16, float8_*, float4_e2m1fn). */
int qc_is_ml_float(PyArray_Descr *d);

/* An integer array of exactly one of `allowed` typenums, C-contiguous (new reference). */
PyArrayObject *qc_int_array(PyObject *obj, const char *arg, const int *allowed);
/* The same in two steps, so that shapes can be checked before anything is copied: the array
 * as given (no copy for an ndarray) with its dtype checked, then its C-contiguous native form
 * (qc_contiguous, which releases `a`). */
PyArrayObject *qc_int_view(PyObject *obj, const char *arg, const int *allowed);
PyArrayObject *qc_contiguous(PyArrayObject *a, const char *arg);

/* Validate `out=`: a writable, C-contiguous, aligned ndarray with this exact shape and dtype.
 * Returns a new reference, or a freshly allocated array when out is NULL/None. */
PyArrayObject *qc_output(PyObject *out, const char *arg, int ndim, const npy_intp *shape,
                         int typenum);

/* Scale values: every one strictly positive and finite, else ValueError naming the index. */
int qc_check_scales(const float *s, size_t n, const char *arg);

/* A float scalar (a Python float, a NumPy float32 or float64 scalar): 1 with NumPy's float32
 * cast of it (round to nearest) in *out, without building arrays; 0 for anything else. */
int qc_float_scalar(PyObject *obj, float *out);

/* A NumPy scalar of dtype typenum (int8 or uint8): 1 with its value in *out, without building
 * arrays; 0 for anything else. */
int qc_zp_scalar(PyObject *obj, int typenum, int32_t *out);

/* A requantization multiplier computed in float32 from scales (x_scale / y_scale ...): it must
 * be positive and finite, else ValueError naming `what` with the value (an overflow to inf or
 * an underflow to 0 would leave the result to each kernel's handling of inf or 0). */
int qc_check_ratio(float r, const char *what);

/* Set ValueError "<arg>: expected ..., got ..." with printf formatting. Returns -1. */
int qc_value_error(const char *fmt, ...);
int qc_type_error(const char *fmt, ...);

/* Type check helper: is obj a real-number scalar (Python int/float or NumPy number)? */
int qc_is_real_scalar(PyObject *obj);

/* An int argument (an object with __index__, not bool) as Py_ssize_t: TypeError naming `arg`
 * for other types, ValueError naming it for an int beyond 64 bits (never a bare
 * OverflowError). */
int qc_parse_ssize(PyObject *obj, const char *arg, Py_ssize_t *out);

/* The UTF-8 text of a str, or NULL (no error set) when obj is not a str, holds an embedded NUL
 * or cannot be encoded (lone surrogates): callers then raise their own ValueError with %R. */
const char *qc_utf8_or_null(PyObject *obj);

/* An integer array's values as a C-contiguous array whose data reads as int64_t (new
 * reference): ValueError naming `arg` and the index for a uint64 value above INT64_MAX, which
 * a cast would wrap to a negative number. */
PyArrayObject *qc_int64_values(PyArrayObject *a, const char *arg);

/* ---- out= that overlaps an input ----
 * The kernels read their inputs while they write the output, so an out= sharing memory with
 * an input would read values already overwritten. As NumPy does, such calls compute into a
 * temporary and copy it into out at the end. qc_out_target returns the array to compute into
 * (a new reference: out itself, or a fresh array of its shape and dtype when out's bytes
 * overlap one of the n inputs; NULL entries are skipped); qc_out_commit copies target into
 * out when they differ and releases target. The bounds check is conservative (interleaved
 * views count as overlapping), which costs a copy, never a wrong result. */
int qc_may_overlap(PyArrayObject *a, PyArrayObject *b);
PyArrayObject *qc_out_target(PyArrayObject *out, PyArrayObject *const *inputs, int n);
void qc_out_commit(PyArrayObject *target, PyArrayObject *out);
/* The same for a binding that fills *out and returns it through one `done:` exit: when *out
 * overlaps one of the n inputs, *out becomes the temporary and *final holds the caller's out
 * (else *final stays NULL); 0, or -1 with an error set (*out unchanged). At the exit,
 * qc_out_finish(result, final) copies result (the filled array, or NULL on error) into
 * final, releases it and returns final; without a final it returns result as it is. */
int qc_out_swap(PyArrayObject **out, PyArrayObject **final, PyArrayObject *const *inputs, int n);
PyObject *qc_out_finish(PyObject *result, PyArrayObject *final);

/* Replace a pending MemoryError with one naming `arg` and the bytes asked for. */
void qc_name_memory_error(const char *arg, const char *what, int ndim, const npy_intp *shape,
                          size_t itemsize);

#endif
