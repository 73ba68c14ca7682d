/* Bindings for the gemm family: PackedMatrix, matmul_integer, qlinear_matmul, requant, Linear. */
#include "py/pyutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemm/dynquant.h"
#include "gemm/gemm.h"
#include "gemm/requant.h"

static const int S8_U8[] = {NPY_INT8, NPY_UINT8, -1};
static const int S32[] = {NPY_INT32, -1};

/* ------------------------------------------------------------------------------------------
 * Zero points and scales
 * ------------------------------------------------------------------------------------------ */

/* A parsed parameter vector: one value (per tensor) or `len` values. */
typedef struct {
    int32_t *v;
    float *f;
    npy_intp count; /* 0: absent, 1: per tensor, else per row/column */
} qc_param;

static void param_free(qc_param *p) {
    PyMem_Free(p->v);
    PyMem_Free(p->f);
    p->v = NULL;
    p->f = NULL;
}

/* A zero point or scale parameter is a scalar (0-d or one element) or, when len >= 0, of
 * shape (len,); else ValueError naming `arg` and what the length is for (`what`). */
static int check_param_shape(PyArrayObject *a, const char *arg, npy_intp len, const char *what) {
    const npy_intp size = PyArray_SIZE(a);
    const int nd = PyArray_NDIM(a);
    if (nd == 0 || (nd == 1 && (size == 1 || (len >= 0 && size == len)))) return 0;
    if (len >= 0) {
        return qc_value_error("%s: expected a scalar or shape (%" NPY_INTP_FMT ",) (%s), got %d "
                              "dimensions of %" NPY_INTP_FMT " elements", arg, len, what, nd,
                              size);
    }
    return qc_value_error("%s: expected a scalar, got %d dimensions of %" NPY_INTP_FMT
                          " elements", arg, nd, size);
}

/* Integer zero point of data of type `typenum`: None (absent), a Python int, or an array of
 * that exact dtype with shape (), (1,) or (len,) when len >= 0. Values are range-checked. */
static int parse_zp(PyObject *obj, const char *arg, int typenum, npy_intp len, const char *what,
                    qc_param *out) {
    memset(out, 0, sizeof *out);
    if (obj == NULL || obj == Py_None) return 0;
    const long lo = typenum == NPY_INT8 ? -128 : 0, hi = typenum == NPY_INT8 ? 127 : 255;
    if (PyLong_Check(obj) && !PyBool_Check(obj)) {
        int overflow = 0;
        long v = PyLong_AsLongAndOverflow(obj, &overflow);
        if (v == -1 && PyErr_Occurred()) return -1;
        if (overflow || v < lo || v > hi) {
            return qc_value_error("%s: expected a value in [%ld, %ld] (%s), got %R", arg, lo, hi,
                                  qc_typename(typenum), obj);
        }
        out->v = PyMem_Malloc(sizeof(int32_t));
        if (!out->v) return (PyErr_NoMemory(), -1);
        out->v[0] = (int32_t)v;
        out->count = 1;
        return 0;
    }
    int32_t z;
    if (qc_zp_scalar(obj, typenum, &z)) { /* a NumPy scalar of the data's dtype */
        out->v = PyMem_Malloc(sizeof(int32_t));
        if (!out->v) return (PyErr_NoMemory(), -1);
        out->v[0] = z;
        out->count = 1;
        return 0;
    }
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_O(obj);
    if (!a) {
        PyErr_Clear();
        return qc_type_error("%s: expected an int or an %s array, got %s", arg,
                             qc_typename(typenum), Py_TYPE(obj)->tp_name);
    }
    if (PyArray_TYPE(a) != typenum) {
        qc_type_error("%s: expected dtype %s (the dtype of its data), got %s", arg,
                      qc_typename(typenum), qc_typename(PyArray_TYPE(a)));
        Py_DECREF(a);
        return -1;
    }
    const npy_intp size = PyArray_SIZE(a);
    if (check_param_shape(a, arg, len, what) < 0) {
        Py_DECREF(a);
        return -1;
    }
    out->v = PyMem_Malloc((size_t)size * sizeof(int32_t));
    if (!out->v) {
        Py_DECREF(a);
        return (PyErr_NoMemory(), -1);
    }
    PyArrayObject *c = (PyArrayObject *)PyArray_GETCONTIGUOUS(a);
    Py_DECREF(a);
    if (!c) return -1;
    for (npy_intp i = 0; i < size; i++) {
        out->v[i] = typenum == NPY_INT8 ? ((const int8_t *)PyArray_DATA(c))[i]
                                        : ((const uint8_t *)PyArray_DATA(c))[i];
    }
    Py_DECREF(c);
    out->count = size;
    return 0;
}

/* Float scale: a positive finite scalar, or (len,) when len >= 0. */
static int parse_scale(PyObject *obj, const char *arg, npy_intp len, const char *what,
                       qc_param *out) {
    memset(out, 0, sizeof *out);
    float v;
    if (qc_float_scalar(obj, &v)) {
        if (qc_check_scales(&v, 1, arg) < 0) return -1;
        out->f = PyMem_Malloc(sizeof(float));
        if (!out->f) return (PyErr_NoMemory(), -1);
        out->f[0] = v;
        out->count = 1;
        return 0;
    }
    PyArrayObject *a = qc_float32_array(obj, arg);
    if (!a) return -1;
    const npy_intp size = PyArray_SIZE(a);
    if (check_param_shape(a, arg, len, what) < 0) {
        Py_DECREF(a);
        return -1;
    }
    if (qc_check_scales((const float *)PyArray_DATA(a), (size_t)size, arg) < 0) {
        Py_DECREF(a);
        return -1;
    }
    out->f = PyMem_Malloc((size_t)size * sizeof(float));
    if (!out->f) {
        Py_DECREF(a);
        return (PyErr_NoMemory(), -1);
    }
    memcpy(out->f, PyArray_DATA(a), (size_t)size * sizeof(float));
    Py_DECREF(a);
    out->count = size;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * PackedMatrix
 * ------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    qc_gemm_b b;
    void *buf;            /* packed data followed by the column sums */
    size_t data_bytes, colsum_bytes;
    const qc_variant *variant;
    int typenum;          /* NPY_INT8 or NPY_UINT8 */
    qc_param zp;          /* b_zero_point given at packing (count 0: none) */
    PyObject *zp_obj;     /* the zero point as given (or None) */
} PackedMatrixObject;

static PyTypeObject PackedMatrixType;

static void packed_dealloc(PackedMatrixObject *self) {
    free(self->buf);
    param_free(&self->zp);
    Py_XDECREF(self->zp_obj);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *packed_get_shape(PackedMatrixObject *self, void *c) {
    (void)c;
    return Py_BuildValue("(LL)", (long long)self->b.k, (long long)self->b.n);
}
static PyObject *packed_get_dtype(PackedMatrixObject *self, void *c) {
    (void)c;
    return (PyObject *)PyArray_DescrFromType(self->typenum);
}
static PyObject *packed_get_variant(PackedMatrixObject *self, void *c) {
    (void)c;
    return PyUnicode_FromString(self->variant->name);
}
static PyObject *packed_get_nbytes(PackedMatrixObject *self, void *c) {
    (void)c;
    return PyLong_FromSize_t(self->data_bytes + self->colsum_bytes);
}
static PyObject *packed_get_data_nbytes(PackedMatrixObject *self, void *c) {
    (void)c;
    return PyLong_FromSize_t(self->data_bytes);
}
static PyObject *packed_get_zp(PackedMatrixObject *self, void *c) {
    (void)c;
    Py_INCREF(self->zp_obj);
    return self->zp_obj;
}

static PyObject *packed_repr(PackedMatrixObject *self) {
    return PyUnicode_FromFormat("PackedMatrix(shape=(%lld, %lld), dtype=%s, variant='%s')",
                                (long long)self->b.k, (long long)self->b.n,
                                qc_typename(self->typenum), self->variant->name);
}

static PyGetSetDef packed_getset[] = {
    {"shape", (getter)packed_get_shape, NULL, "(K, N) of the packed matrix B.", NULL},
    {"dtype", (getter)packed_get_dtype, NULL, "dtype of B (int8 or uint8).", NULL},
    {"variant", (getter)packed_get_variant, NULL, "kernel variant B was packed for.", NULL},
    {"nbytes", (getter)packed_get_nbytes, NULL,
     "bytes held: packed data (K, N padded to 4, 16) plus int32 column sums.", NULL},
    {"data_nbytes", (getter)packed_get_data_nbytes, NULL, "bytes of packed data alone.", NULL},
    {"b_zero_point", (getter)packed_get_zp, NULL, "zero point given to pack_matrix, or None.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PackedMatrixType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "quantc.PackedMatrix",
    .tp_basicsize = sizeof(PackedMatrixObject),
    .tp_dealloc = (destructor)packed_dealloc,
    .tp_repr = (reprfunc)packed_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "B (K x N, int8/uint8) prepacked for this CPU's GEMM kernel, with column sums.\n"
              "Made by quantc.pack_matrix; accepted wherever a matrix b is.",
    .tp_getset = packed_getset,
};

/* An int8/uint8 2-D array packed (GIL released), read through its strides (no copy, so a
 * transposed weight W.T packs directly). New reference or NULL. */
static PackedMatrixObject *pack_array(PyObject *bobj, const char *arg) {
    PyArrayObject *b = (PyArrayObject *)PyArray_FROM_O(bobj);
    if (!b) {
        PyErr_Clear();
        qc_type_error("%s: expected an int8 or uint8 array, got %s", arg, Py_TYPE(bobj)->tp_name);
        return NULL;
    }
    if (PyArray_TYPE(b) != NPY_INT8 && PyArray_TYPE(b) != NPY_UINT8) {
        qc_type_error("%s: expected an array of int8 or uint8, got %s", arg,
                      PyArray_TYPE(b) == NPY_OBJECT ? "object"
                                                    : PyArray_DESCR(b)->typeobj->tp_name);
        Py_DECREF(b);
        return NULL;
    }
    if (PyArray_NDIM(b) != 2) {
        qc_value_error("%s: expected a 2-D (K, N) matrix, got %d dimensions", arg,
                       PyArray_NDIM(b));
        Py_DECREF(b);
        return NULL;
    }
    /* Sizes, checked before anything is allocated: a zero-stride b can claim any shape. K and
     * N up to 2^40 keep the packed size (round_up(K, 4) * round_up(N, 16)) and every
     * workspace computed from K (a few hundred times round_up(K, 4)) far from wrapping. */
    const int64_t kk = PyArray_DIM(b, 0), nn = PyArray_DIM(b, 1);
    const int64_t kmax = (int64_t)1 << 40;
    int64_t packed_elems;
    if (kk > kmax || nn > kmax ||
        __builtin_mul_overflow((kk + 3) / 4 * 4, (nn + QC_GEMM_NR - 1) / QC_GEMM_NR * QC_GEMM_NR,
                               &packed_elems) ||
        packed_elems > ((int64_t)1 << 62)) {
        qc_value_error("%s: expected a (K, N) matrix with K, N <= 2**40 whose packed form fits "
                       "in memory, got shape (%lld, %lld)", arg, (long long)kk, (long long)nn);
        Py_DECREF(b);
        return NULL;
    }
    PackedMatrixObject *p = PyObject_New(PackedMatrixObject, &PackedMatrixType);
    if (!p) {
        Py_DECREF(b);
        return NULL;
    }
    p->buf = NULL;
    memset(&p->zp, 0, sizeof p->zp);
    p->zp_obj = Py_None;
    Py_INCREF(Py_None);
    p->typenum = PyArray_TYPE(b);
    p->variant = qc_family_select(&qc_gemm_family);
    const int64_t k = PyArray_DIM(b, 0), n = PyArray_DIM(b, 1);
    p->data_bytes = qc_gemm_pack_b_size(k, n);
    p->colsum_bytes = (size_t)((n + QC_GEMM_NR - 1) / QC_GEMM_NR * QC_GEMM_NR) * 4;
    const size_t data_alloc = (p->data_bytes + 63) / 64 * 64;
    const size_t total = data_alloc + (p->colsum_bytes + 63) / 64 * 64 + 64;
    p->buf = aligned_alloc(64, total);
    if (!p->buf) {
        Py_DECREF(b);
        Py_DECREF(p);
        PyErr_Format(PyExc_MemoryError, "%s: cannot allocate %zu bytes to pack a (%lld, %lld) "
                     "matrix", arg, total, (long long)k, (long long)n);
        return NULL;
    }
    int8_t *data = (int8_t *)p->buf;
    int32_t *colsum = (int32_t *)((char *)p->buf + data_alloc);
    Py_BEGIN_ALLOW_THREADS
    qc_gemm_pack_b(PyArray_DATA(b), p->typenum == NPY_INT8, PyArray_STRIDE(b, 0),
                   PyArray_STRIDE(b, 1), k, n, data, colsum, &p->b);
    Py_END_ALLOW_THREADS
    Py_DECREF(b);
    return p;
}

static PyObject *py_pack_matrix(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *kwlist[] = {"b", "b_zero_point", NULL};
    PyObject *bobj, *zpobj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:pack_matrix", kwlist, &bobj, &zpobj))
        return NULL;
    if (PyObject_TypeCheck(bobj, &PackedMatrixType)) {
        return (qc_type_error("b: expected an int8/uint8 (K, N) array, got a PackedMatrix "
                              "(already packed)"), NULL);
    }
    PackedMatrixObject *p = pack_array(bobj, "b");
    if (!p) return NULL;
    if (parse_zp(zpobj, "b_zero_point", p->typenum, p->b.n, "one per column of b", &p->zp) < 0) {
        Py_DECREF(p);
        return NULL;
    }
    if (zpobj != Py_None) {
        Py_DECREF(p->zp_obj);
        p->zp_obj = zpobj;
        Py_INCREF(zpobj);
    }
    return (PyObject *)p;
}

/* b argument: a PackedMatrix (checked against the current kernel variant) or an array packed
 * now. Returns a new reference. */
static PackedMatrixObject *get_packed(PyObject *bobj) {
    if (PyObject_TypeCheck(bobj, &PackedMatrixType)) {
        PackedMatrixObject *p = (PackedMatrixObject *)bobj;
        const qc_variant *now = qc_family_select(&qc_gemm_family);
        if (now != p->variant) {
            qc_value_error("b: PackedMatrix was packed for the '%s' gemm kernel but this call "
                           "would use '%s' (the ISA cap or CPU changed); pack b again with "
                           "pack_matrix", p->variant->name, now->name);
            return NULL;
        }
        Py_INCREF(p);
        return p;
    }
    return pack_array(bobj, "b");
}

/* The b zero point of a call: the argument, or the one stored in the PackedMatrix; both given
 * must agree. `out` borrows nothing (its own copy). */
static int resolve_b_zp(PackedMatrixObject *p, PyObject *zpobj, qc_param *out) {
    if (parse_zp(zpobj, "b_zero_point", p->typenum, p->b.n, "one per column of b", out) < 0)
        return -1;
    if (p->zp.count == 0) return 0;
    if (out->count == 0) {
        out->v = PyMem_Malloc((size_t)p->zp.count * sizeof(int32_t));
        if (!out->v) return (PyErr_NoMemory(), -1);
        memcpy(out->v, p->zp.v, (size_t)p->zp.count * sizeof(int32_t));
        out->count = p->zp.count;
        return 0;
    }
    for (int64_t j = 0; j < p->b.n; j++) {
        int32_t x = out->v[out->count == 1 ? 0 : j], y = p->zp.v[p->zp.count == 1 ? 0 : j];
        if (x != y) {
            param_free(out);
            return qc_value_error("b_zero_point: %d at column %lld differs from the zero point "
                                  "%d given to pack_matrix", (int)x, (long long)j, (int)y);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * The A operand: (..., M, K) int8/uint8, or (K,) as one row
 * ------------------------------------------------------------------------------------------ */

typedef struct {
    PyArrayObject *arr; /* C-contiguous */
    int64_t rows, m, k; /* rows = batch * m */
    int typenum;
    int ndim_out;
    npy_intp shape_out[NPY_MAXDIMS];
} qc_a_operand;

static int get_a(PyObject *obj, const PackedMatrixObject *p, qc_a_operand *a) {
    a->arr = NULL;
    PyArrayObject *arr = qc_int_view(obj, "a", S8_U8); /* shape checked before any copy */
    if (!arr) return -1;
    const int nd = PyArray_NDIM(arr);
    if (nd < 1) {
        Py_DECREF(arr);
        return qc_value_error("a: expected at least 1 dimension (..., M, K), got a 0-d array");
    }
    const int64_t k = PyArray_DIM(arr, nd - 1);
    if (k != p->b.k) {
        Py_DECREF(arr);
        return qc_value_error("a: expected K = %lld columns to match b of shape (%lld, %lld), "
                              "got %lld", (long long)p->b.k, (long long)p->b.k,
                              (long long)p->b.n, (long long)k);
    }
    arr = qc_contiguous(arr, "a");
    if (!arr) return -1;
    a->arr = arr;
    a->k = k;
    a->typenum = PyArray_TYPE(arr);
    a->m = nd >= 2 ? PyArray_DIM(arr, nd - 2) : 1;
    a->rows = k > 0 ? PyArray_SIZE(arr) / k : 1;
    if (k == 0) {
        a->rows = 1;
        for (int i = 0; i < nd - 1; i++) a->rows *= PyArray_DIM(arr, i);
    }
    a->ndim_out = nd;
    for (int i = 0; i < nd - 1; i++) a->shape_out[i] = PyArray_DIM(arr, i);
    a->shape_out[nd - 1] = (npy_intp)p->b.n;
    return 0;
}

/* Expand a per-row (M,) zero point to every row of a batched A. */
static int expand_rows(qc_param *zp, int64_t rows, int64_t m) {
    if (zp->count <= 1 || rows == m) return 0;
    int32_t *v = PyMem_Malloc((size_t)rows * sizeof(int32_t));
    if (!v) return (PyErr_NoMemory(), -1);
    for (int64_t i = 0; i < rows; i++) v[i] = zp->v[i % m];
    PyMem_Free(zp->v);
    zp->v = v;
    zp->count = rows;
    return 0;
}

static void fill_args(qc_gemm_args *g, const qc_a_operand *a, const PackedMatrixObject *p,
                      const qc_param *azp, const qc_param *bzp) {
    memset(g, 0, sizeof *g);
    g->a = PyArray_DATA(a->arr);
    g->lda = (ptrdiff_t)a->k;
    g->a_signed = a->typenum == NPY_INT8;
    g->m = a->rows;
    g->a_zp = azp->count ? azp->v : NULL;
    g->a_zp_per_row = azp->count > 1;
    g->b = &p->b;
    g->b_zp = bzp->count ? bzp->v : NULL;
    g->b_zp_per_col = bzp->count > 1;
    g->n0 = 0;
    g->n1 = p->b.n;
    g->ldc = (ptrdiff_t)p->b.n;
    g->kernels = qc_gemm_kernels_of(p->variant);
}

static int run_gemm(const qc_gemm_args *g) {
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = qc_gemm_parallel(g);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * matmul_integer, qlinear_matmul
 * ------------------------------------------------------------------------------------------ */

static PyObject *py_matmul_integer(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *kwlist[] = {"a", "b", "a_zero_point", "b_zero_point", "out", NULL};
    PyObject *aobj, *bobj, *azo = Py_None, *bzo = Py_None, *outo = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|OO$O:matmul_integer", kwlist, &aobj, &bobj,
                                     &azo, &bzo, &outo))
        return NULL;
    PyObject *result = NULL;
    qc_a_operand a = {0};
    qc_param azp = {0}, bzp = {0};
    PackedMatrixObject *p = get_packed(bobj);
    if (!p) return NULL;
    if (get_a(aobj, p, &a) < 0) goto done;
    if (parse_zp(azo, "a_zero_point", a.typenum, a.m, "one per row of a", &azp) < 0) goto done;
    if (expand_rows(&azp, a.rows, a.m) < 0) goto done;
    if (resolve_b_zp(p, bzo, &bzp) < 0) goto done;
    PyArrayObject *out = qc_output(outo, "out", a.ndim_out, a.shape_out, NPY_INT32);
    if (!out) goto done;
    PyArrayObject *dst = qc_out_target(out, &a.arr, 1);
    if (!dst) {
        Py_DECREF(out);
        goto done;
    }
    qc_gemm_args g;
    fill_args(&g, &a, p, &azp, &bzp);
    g.c = PyArray_DATA(dst);
    g.out = QC_GEMM_OUT_S32;
    const int rc = run_gemm(&g);
    qc_out_commit(dst, out);
    if (rc < 0) {
        Py_DECREF(out);
        goto done;
    }
    result = (PyObject *)out;
done:
    Py_XDECREF(a.arr);
    Py_DECREF(p);
    param_free(&azp);
    param_free(&bzp);
    return result;
}

static PyObject *py_qlinear_matmul(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *kwlist[] = {"a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point",
                             "y_scale", "y_zero_point", "bias", "relu", "out", "rq32", NULL};
    PyObject *aobj, *aso, *azo, *bobj, *bso, *bzo, *yso, *yzo, *biaso = Py_None, *outo = Py_None;
    int relu = 0, rq32 = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOOO|$OpOp:qlinear_matmul", kwlist, &aobj,
                                     &aso, &azo, &bobj, &bso, &bzo, &yso, &yzo, &biaso, &relu,
                                     &outo, &rq32))
        return NULL;
    PyObject *result = NULL;
    qc_a_operand a = {0};
    qc_param azp = {0}, bzp = {0}, as = {0}, bs = {0}, ys = {0}, yzp = {0};
    float *mult = NULL;
    PyArrayObject *bias = NULL;
    PackedMatrixObject *p = get_packed(bobj);
    if (!p) return NULL;
    if (get_a(aobj, p, &a) < 0) goto done;
    if (parse_zp(azo, "a_zero_point", a.typenum, a.m, "one per row of a", &azp) < 0) goto done;
    if (expand_rows(&azp, a.rows, a.m) < 0) goto done;
    if (resolve_b_zp(p, bzo, &bzp) < 0) goto done;
    if (parse_scale(aso, "a_scale", -1, "", &as) < 0) goto done;
    if (parse_scale(bso, "b_scale", p->b.n, "one per column of b", &bs) < 0) goto done;
    if (parse_scale(yso, "y_scale", -1, "", &ys) < 0) goto done;
    /* y_zero_point sets the output dtype, so it must carry one. */
    int ytype;
    {
        PyArrayObject *yz = (PyObject_TypeCheck(yzo, &PyGenericArrType_Type) || PyArray_Check(yzo))
                                ? (PyArrayObject *)PyArray_FROM_O(yzo) : NULL;
        if (!yz) {
            PyErr_Clear();
            qc_type_error("y_zero_point: expected an int8 or uint8 NumPy scalar or array (it "
                          "sets the output dtype), got %s", Py_TYPE(yzo)->tp_name);
            goto done;
        }
        ytype = PyArray_TYPE(yz);
        Py_DECREF(yz);
        if (ytype != NPY_INT8 && ytype != NPY_UINT8) {
            qc_type_error("y_zero_point: expected dtype int8 or uint8, got %s",
                          qc_typename(ytype));
            goto done;
        }
    }
    if (parse_zp(yzo, "y_zero_point", ytype, -1, "", &yzp) < 0) goto done;
    if (biaso != Py_None) {
        bias = qc_int_array(biaso, "bias", S32);
        if (!bias) goto done;
        if (PyArray_NDIM(bias) != 1 || PyArray_DIM(bias, 0) != p->b.n) {
            qc_value_error("bias: expected shape (%lld,) (one per column of b), got %d "
                           "dimensions of %" NPY_INTP_FMT " elements", (long long)p->b.n,
                           PyArray_NDIM(bias), PyArray_SIZE(bias));
            goto done;
        }
    }
    /* The multiplier, in float32 like onnx's reference: (a_scale * b_scale) / y_scale. */
    const npy_intp nm = bs.count;
    mult = PyMem_Malloc((size_t)nm * sizeof(float));
    if (!mult) {
        PyErr_NoMemory();
        goto done;
    }
    for (npy_intp j = 0; j < nm; j++) {
        const float ab = as.f[0] * bs.f[j];
        mult[j] = ab / ys.f[0];
        /* as qlinear_conv: a multiplier that overflows float32 (or underflows to 0) is refused
         * rather than left to each kernel's handling of inf */
        if (qc_check_ratio(mult[j], "a_scale * b_scale / y_scale") < 0) goto done;
    }
    PyArrayObject *out = qc_output(outo, "out", a.ndim_out, a.shape_out, ytype);
    if (!out) goto done;
    PyArrayObject *const ins[] = {a.arr, bias};
    PyArrayObject *dst = qc_out_target(out, ins, 2);
    if (!dst) {
        Py_DECREF(out);
        goto done;
    }
    qc_gemm_args g;
    fill_args(&g, &a, p, &azp, &bzp);
    g.c = PyArray_DATA(dst);
    g.out = ytype == NPY_INT8 ? QC_GEMM_OUT_S8 : QC_GEMM_OUT_U8;
    g.bias = bias ? (const int32_t *)PyArray_DATA(bias) : NULL;
    g.scale = mult;
    g.scale_per_col = nm > 1;
    g.y_zp = yzp.v[0];
    g.relu = relu;
    g.rq32 = rq32;
    const int rc = run_gemm(&g);
    qc_out_commit(dst, out);
    if (rc < 0) {
        Py_DECREF(out);
        goto done;
    }
    result = (PyObject *)out;
done:
    Py_XDECREF(a.arr);
    Py_XDECREF(bias);
    Py_DECREF(p);
    PyMem_Free(mult);
    param_free(&azp);
    param_free(&bzp);
    param_free(&as);
    param_free(&bs);
    param_free(&ys);
    param_free(&yzp);
    return result;
}

/* ------------------------------------------------------------------------------------------
 * Linear forward: x float32 (rows, K) quantized per call (one scale and zero point for the
 * whole tensor, or one per row with per_row), then the float epilogue
 * ------------------------------------------------------------------------------------------ */

static PyObject *py_linear_forward(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xobj, *pobj, *wso, *biaso, *outo = Py_None;
    int per_row = 0;
    if (!PyArg_ParseTuple(args, "OO!OO|Op:_linear_forward", &xobj, &PackedMatrixType, &pobj, &wso,
                          &biaso, &outo, &per_row))
        return NULL;
    PyObject *result = NULL;
    PyArrayObject *x = NULL, *ws = NULL, *fb = NULL, *out = NULL, *final = NULL;
    float *scale = NULL, *rscale = NULL;
    int32_t *rzp = NULL;
    uint8_t *q = NULL;
    PackedMatrixObject *p = get_packed(pobj);
    if (!p) return NULL;
    x = qc_any_array(xobj, "x"); /* the shape is checked before x is converted */
    if (!x) goto done;
    const int nd = PyArray_NDIM(x);
    if (nd < 1 || PyArray_DIM(x, nd - 1) != p->b.k) {
        qc_value_error("x: expected shape (..., %lld) (in_features), got %d dimensions with "
                       "last %lld", (long long)p->b.k, nd,
                       nd ? (long long)PyArray_DIM(x, nd - 1) : -1LL);
        goto done;
    }
    {
        PyArrayObject *xf = qc_float32_array((PyObject *)x, "x");
        Py_DECREF(x);
        x = xf;
        if (!x) goto done;
    }
    /* weight_scale and bias are read for every one of the N columns: their sizes and values
     * are checked here too, not only by Linear's constructor */
    ws = qc_float32_array(wso, "weight_scale");
    if (!ws) goto done;
    if (PyArray_NDIM(ws) != 1 || PyArray_DIM(ws, 0) != p->b.n) {
        qc_value_error("weight_scale: expected shape (%lld,) (out_features), got %d dimensions "
                       "of %" NPY_INTP_FMT " elements", (long long)p->b.n, PyArray_NDIM(ws),
                       PyArray_SIZE(ws));
        goto done;
    }
    if (qc_check_scales((const float *)PyArray_DATA(ws), (size_t)p->b.n, "weight_scale") < 0)
        goto done;
    if (biaso != Py_None) {
        fb = qc_float32_array(biaso, "bias");
        if (!fb) goto done;
        if (PyArray_NDIM(fb) != 1 || PyArray_DIM(fb, 0) != p->b.n) {
            qc_value_error("bias: expected shape (%lld,) (out_features) or None, got %d "
                           "dimensions of %" NPY_INTP_FMT " elements", (long long)p->b.n,
                           PyArray_NDIM(fb), PyArray_SIZE(fb));
            goto done;
        }
    }
    const size_t n = (size_t)PyArray_SIZE(x);
    const int64_t k = p->b.k;
    int64_t rows = 1;
    for (int i = 0; i < nd - 1; i++) rows *= PyArray_DIM(x, i);
    npy_intp shape[NPY_MAXDIMS];
    for (int i = 0; i < nd - 1; i++) shape[i] = PyArray_DIM(x, i);
    shape[nd - 1] = (npy_intp)p->b.n;
    out = qc_output(outo, "out", nd, shape, NPY_FLOAT32);
    if (!out) goto done;
    {
        /* out overlapping x, weight_scale or bias: compute into a temporary */
        PyArrayObject *const ins[] = {x, ws, fb};
        if (qc_out_swap(&out, &final, ins, 3) < 0) goto done;
    }
    if (PyArray_SIZE(out) == 0) {
        result = (PyObject *)out;
        out = NULL;
        goto done;
    }
    /* rows * sizeof(float) cannot overflow: out, rows x N float32 with N >= 1 (an empty out
     * returned above), is already allocated */
    scale = PyMem_Malloc((size_t)p->b.n * sizeof(float));
    q = malloc(n ? n : 1);
    if (per_row) {
        rscale = PyMem_Malloc((size_t)rows * sizeof(float));
        rzp = PyMem_Malloc((size_t)rows * sizeof(int32_t));
    }
    if (!scale || !q || (per_row && (!rscale || !rzp))) {
        PyErr_NoMemory();
        goto done;
    }
    float mn = 0.0f, mx = 0.0f, xs = 1.0f;
    int32_t xzp = 0;
    size_t nans = 0, first = 0;
    const float *xd = (const float *)PyArray_DATA(x);
    Py_BEGIN_ALLOW_THREADS
    if (!per_row) {
        qc_dynq_minmax_f32(xd, n, &mn, &mx, &nans, &first);
    } else {
        /* per row: the same DynamicQuantizeLinear parameters from each row's own range */
        for (int64_t i = 0; i < rows; i++) {
            size_t rn, rf;
            qc_dynq_minmax_f32(xd + i * k, (size_t)k, &mn, &mx, &rn, &rf);
            if (rn && !nans) first = (size_t)(i * k) + rf;
            nans += rn;
            qc_dynq_params_u8(mn, mx, &rscale[i], &rzp[i]);
        }
    }
    Py_END_ALLOW_THREADS
    if (nans) {
        qc_value_error("x: expected no NaN, got %zu NaN values (first at flat index %zu)", nans,
                       first);
        goto done;
    }
    const float *wsd = (const float *)PyArray_DATA(ws);
    if (!per_row) {
        qc_dynq_params_u8(mn, mx, &xs, &xzp);
        for (int64_t j = 0; j < p->b.n; j++) scale[j] = xs * wsd[j];
    } else {
        /* the epilogue multiplies rscale[i] * wsd[j] (float32) per element */
        for (int64_t j = 0; j < p->b.n; j++) scale[j] = wsd[j];
    }
    qc_gemm_args g;
    memset(&g, 0, sizeof g);
    g.a = q;
    g.lda = (ptrdiff_t)k;
    g.a_signed = 0;
    g.m = rows;
    g.a_zp = per_row ? rzp : &xzp;
    g.a_zp_per_row = per_row;
    g.row_scale = per_row ? rscale : NULL;
    g.b = &p->b;
    g.b_zp = p->zp.count ? p->zp.v : NULL;
    g.b_zp_per_col = p->zp.count > 1;
    g.n0 = 0;
    g.n1 = p->b.n;
    g.c = PyArray_DATA(out);
    g.ldc = (ptrdiff_t)p->b.n;
    g.out = QC_GEMM_OUT_F32;
    g.scale = scale;
    g.scale_per_col = 1;
    g.fbias = fb ? (const float *)PyArray_DATA(fb) : NULL;
    g.kernels = qc_gemm_kernels_of(p->variant);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    if (!per_row) {
        qc_dynq_quantize_u8(xd, n, xs, xzp, q);
    } else {
        for (int64_t i = 0; i < rows; i++)
            qc_dynq_quantize_u8(xd + i * k, (size_t)k, rscale[i], rzp[i], q + i * k);
    }
    rc = qc_gemm_parallel(&g);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = (PyObject *)out;
    out = NULL;
done:
    result = qc_out_finish(result, final);
    Py_XDECREF(x);
    Py_XDECREF(ws);
    Py_XDECREF(fb);
    Py_XDECREF(out);
    Py_DECREF(p);
    PyMem_Free(scale);
    PyMem_Free(rscale);
    PyMem_Free(rzp);
    free(q);
    return result;
}

/* ------------------------------------------------------------------------------------------
 * quantize_multiplier, requantize_fixed, requantize
 * ------------------------------------------------------------------------------------------ */

static PyObject *py_quantize_multiplier(PyObject *self, PyObject *arg) {
    (void)self;
    PyArrayObject *r = NULL;
    if (PyArray_Check(arg) || qc_is_real_scalar(arg) || PyList_Check(arg) || PyTuple_Check(arg)) {
        PyArrayObject *a = (PyArrayObject *)PyArray_FROM_O(arg);
        if (a) {
            int t = PyArray_TYPE(a);
            if ((PyTypeNum_ISFLOAT(t) && t != NPY_LONGDOUBLE) ||
                (PyTypeNum_ISINTEGER(t) && !PyTypeNum_ISBOOL(t))) {
                r = (PyArrayObject *)PyArray_FromAny((PyObject *)a,
                                                     PyArray_DescrFromType(NPY_FLOAT64), 0, 0,
                                                     NPY_ARRAY_CARRAY | NPY_ARRAY_FORCECAST, NULL);
            }
            Py_DECREF(a);
        }
    }
    if (!r) {
        PyErr_Clear();
        return (qc_type_error("real_multiplier: expected a real number or array of them, got %s",
                              Py_TYPE(arg)->tp_name), NULL);
    }
    const npy_intp n = PyArray_SIZE(r);
    const double *v = (const double *)PyArray_DATA(r);
    for (npy_intp i = 0; i < n; i++) {
        if (!(v[i] >= 0.0) || !(v[i] < 2147483648.0)) {
            PyObject *bad = PyFloat_FromDouble(v[i]);
            if (bad) {
                qc_value_error("real_multiplier: expected finite values in [0, 2**31), got %R at "
                               "index %" NPY_INTP_FMT, bad, i);
                Py_DECREF(bad);
            }
            Py_DECREF(r);
            return NULL;
        }
    }
    PyArrayObject *m = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(r), PyArray_DIMS(r),
                                                          NPY_INT32);
    PyArrayObject *s = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(r), PyArray_DIMS(r),
                                                          NPY_INT32);
    if (!m || !s) {
        Py_XDECREF(m);
        Py_XDECREF(s);
        Py_DECREF(r);
        return NULL;
    }
    for (npy_intp i = 0; i < n; i++) {
        qc_quantize_multiplier(v[i], (int32_t *)PyArray_DATA(m) + i,
                               (int32_t *)PyArray_DATA(s) + i);
    }
    Py_DECREF(r);
    return Py_BuildValue("(NN)", m, s);
}

/* Shared by requantize_fixed and requantize: acc, dtype, axis -> layout and output. */
typedef struct {
    PyArrayObject *acc, *out;
    int out_signed, has_axis;
    size_t outer, channels, inner;
} rq_setup;

static int requant_setup(PyObject *acco, PyObject *dto, PyObject *axo, PyObject *outo,
                         rq_setup *s) {
    memset(s, 0, sizeof *s);
    int typenum;
    if (qc_parse_int_dtype(dto, "dtype", S8_U8, &typenum) < 0) return -1;
    s->acc = qc_int_array(acco, "acc", S32);
    if (!s->acc) return -1;
    const int nd = PyArray_NDIM(s->acc);
    int axis;
    if (qc_parse_axis(axo, "axis", nd, &axis, &s->has_axis) < 0) return -1;
    s->outer = 1;
    s->channels = 1;
    s->inner = (size_t)PyArray_SIZE(s->acc);
    if (s->has_axis) {
        s->inner = 1;
        for (int i = 0; i < axis; i++) s->outer *= (size_t)PyArray_DIM(s->acc, i);
        s->channels = (size_t)PyArray_DIM(s->acc, axis);
        for (int i = axis + 1; i < nd; i++) s->inner *= (size_t)PyArray_DIM(s->acc, i);
    }
    s->out_signed = typenum == NPY_INT8;
    s->out = qc_output(outo, "out", nd, PyArray_DIMS(s->acc), typenum);
    return s->out ? 0 : -1;
}

/* An int32 parameter vector of `count` values (1 or channels) from any integer array-like. */
static int int_params(PyObject *obj, const char *arg, size_t channels, int has_axis,
                      int64_t lo, int64_t hi, qc_param *out) {
    memset(out, 0, sizeof *out);
    PyArrayObject *a = qc_int_array(obj, arg, NULL);
    if (!a) return -1;
    const size_t size = (size_t)PyArray_SIZE(a);
    const int ok = has_axis ? (PyArray_NDIM(a) <= 1 && (size == 1 || size == channels))
                            : size == 1 && PyArray_NDIM(a) <= 1;
    if (!ok) {
        if (has_axis) {
            qc_value_error("%s: expected a scalar or shape (%zu,) (one per channel along axis), "
                           "got %d dimensions of %zu elements", arg, channels, PyArray_NDIM(a),
                           size);
        } else {
            qc_value_error("%s: expected a scalar with axis=None, got %d dimensions of %zu "
                           "elements", arg, PyArray_NDIM(a), size);
        }
        Py_DECREF(a);
        return -1;
    }
    PyArrayObject *c = qc_int64_values(a, arg); /* uint64 2**64 - 1 is not -1 */
    Py_DECREF(a);
    if (!c) return -1;
    out->v = PyMem_Malloc(size * sizeof(int32_t));
    if (!out->v) {
        Py_DECREF(c);
        return (PyErr_NoMemory(), -1);
    }
    const int64_t *d = (const int64_t *)PyArray_DATA(c);
    for (size_t i = 0; i < size; i++) {
        if (d[i] < lo || d[i] > hi) {
            qc_value_error("%s: expected values in [%lld, %lld], got %lld at index %zu", arg,
                           (long long)lo, (long long)hi, (long long)d[i], i);
            Py_DECREF(c);
            param_free(out);
            return -1;
        }
        out->v[i] = (int32_t)d[i];
    }
    Py_DECREF(c);
    out->count = (npy_intp)size;
    return 0;
}

static PyObject *py_requantize_fixed(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *kwlist[] = {"acc", "multiplier", "shift", "zero_point", "dtype", "axis", "out",
                             NULL};
    PyObject *acco, *mo, *so, *zo, *dto = NULL, *axo = Py_None, *outo = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO|O$OO:requantize_fixed", kwlist, &acco, &mo,
                                     &so, &zo, &dto, &axo, &outo))
        return NULL;
    PyObject *dflt = NULL;
    if (!dto) dto = dflt = PyUnicode_FromString("int8");
    rq_setup s;
    qc_param m = {0}, sh = {0}, z = {0};
    PyObject *result = NULL;
    if (requant_setup(acco, dto, axo, outo, &s) < 0) goto done;
    const int64_t zlo = s.out_signed ? -128 : 0, zhi = s.out_signed ? 127 : 255;
    if (int_params(mo, "multiplier", s.channels, s.has_axis, INT32_MIN, INT32_MAX, &m) < 0)
        goto done;
    if (int_params(so, "shift", s.channels, s.has_axis, -31, 31, &sh) < 0) goto done;
    if (int_params(zo, "zero_point", s.channels, s.has_axis, zlo, zhi, &z) < 0) goto done;
    if (m.count != sh.count) {
        qc_value_error("shift: expected as many values as multiplier (%zd), got %zd",
                       (Py_ssize_t)m.count, (Py_ssize_t)sh.count);
        goto done;
    }
    PyArrayObject *dst = qc_out_target(s.out, &s.acc, 1);
    if (!dst) goto done;
    Py_BEGIN_ALLOW_THREADS
    qc_requantize_fixed((const int32_t *)PyArray_DATA(s.acc), s.outer, s.channels, s.inner, m.v,
                        sh.v, m.count > 1, z.v, z.count > 1, s.out_signed, PyArray_DATA(dst));
    Py_END_ALLOW_THREADS
    qc_out_commit(dst, s.out);
    result = (PyObject *)s.out;
    s.out = NULL;
done:
    Py_XDECREF(dflt);
    Py_XDECREF(s.acc);
    Py_XDECREF(s.out);
    param_free(&m);
    param_free(&sh);
    param_free(&z);
    return result;
}

static PyObject *py_requantize(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *kwlist[] = {"acc", "scale", "zero_point", "dtype", "axis", "out", NULL};
    PyObject *acco, *sco, *zo, *dto = NULL, *axo = Py_None, *outo = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|O$OO:requantize", kwlist, &acco, &sco, &zo,
                                     &dto, &axo, &outo))
        return NULL;
    PyObject *dflt = NULL;
    if (!dto) dto = dflt = PyUnicode_FromString("int8");
    rq_setup s;
    qc_param sc = {0}, z = {0};
    PyObject *result = NULL;
    if (requant_setup(acco, dto, axo, outo, &s) < 0) goto done;
    const int64_t zlo = s.out_signed ? -128 : 0, zhi = s.out_signed ? 127 : 255;
    if (parse_scale(sco, "scale", s.has_axis ? (npy_intp)s.channels : -1,
                    "one per channel along axis", &sc) < 0)
        goto done;
    if (int_params(zo, "zero_point", s.channels, s.has_axis, zlo, zhi, &z) < 0) goto done;
    PyArrayObject *dst = qc_out_target(s.out, &s.acc, 1);
    if (!dst) goto done;
    Py_BEGIN_ALLOW_THREADS
    qc_requantize_float((const int32_t *)PyArray_DATA(s.acc), s.outer, s.channels, s.inner, sc.f,
                        sc.count > 1, z.v, z.count > 1, s.out_signed, PyArray_DATA(dst));
    Py_END_ALLOW_THREADS
    qc_out_commit(dst, s.out);
    result = (PyObject *)s.out;
    s.out = NULL;
done:
    Py_XDECREF(dflt);
    Py_XDECREF(s.acc);
    Py_XDECREF(s.out);
    param_free(&sc);
    param_free(&z);
    return result;
}

PyMethodDef qc_gemm_methods[] = {
    {"pack_matrix", (PyCFunction)(void (*)(void))py_pack_matrix, METH_VARARGS | METH_KEYWORDS,
     "Pack B for the current gemm kernel."},
    {"matmul_integer", (PyCFunction)(void (*)(void))py_matmul_integer,
     METH_VARARGS | METH_KEYWORDS, "ONNX MatMulInteger."},
    {"qlinear_matmul", (PyCFunction)(void (*)(void))py_qlinear_matmul,
     METH_VARARGS | METH_KEYWORDS, "ONNX QLinearMatMul."},
    {"_linear_forward", py_linear_forward, METH_VARARGS,
     "Linear forward: dynamic uint8 activations times a PackedMatrix, float32 out."},
    {"quantize_multiplier", py_quantize_multiplier, METH_O, "TFLite QuantizeMultiplier."},
    {"requantize_fixed", (PyCFunction)(void (*)(void))py_requantize_fixed,
     METH_VARARGS | METH_KEYWORDS, "Fixed-point requantization (gemmlowp)."},
    {"requantize", (PyCFunction)(void (*)(void))py_requantize, METH_VARARGS | METH_KEYWORDS,
     "Float requantization."},
    {NULL, NULL, 0, NULL},
};

int qc_gemm_init(PyObject *m) {
    if (PyType_Ready(&PackedMatrixType) < 0) return -1;
    Py_INCREF(&PackedMatrixType);
    if (PyModule_AddObject(m, "PackedMatrix", (PyObject *)&PackedMatrixType) < 0) {
        Py_DECREF(&PackedMatrixType);
        return -1;
    }
    return qc_register_family(&qc_gemm_family) < 0 ? -1 : 0;
}
