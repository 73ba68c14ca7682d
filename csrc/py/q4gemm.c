/* Bindings for the q4gemm family: pack 4-bit blocked weights, the 4-bit Linear forward. */
#include "py/pyutil.h"

#include <stdlib.h>
#include <string.h>

#include "gemm/dynquant.h"
#include "q4gemm/kernels.h"

#define Q4_CAPSULE "quantc.Q4Matrix"

/* The packed weights behind a capsule (freed with it). */
typedef struct {
    qc_q4_b b;
    uint8_t *data, *zp;
    float *scale;
    size_t nbytes;
} q4_packed;

static void q4_capsule_free(PyObject *cap) {
    q4_packed *p = PyCapsule_GetPointer(cap, Q4_CAPSULE);
    if (!p) return;
    PyMem_Free(p->data);
    PyMem_Free(p->scale);
    PyMem_Free(p->zp);
    PyMem_Free(p);
}

static q4_packed *get_q4(PyObject *obj) {
    if (!PyCapsule_IsValid(obj, Q4_CAPSULE)) {
        qc_type_error("packed: expected a 4-bit packed matrix (quantc.Q4Matrix capsule), got %s",
                      Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return PyCapsule_GetPointer(obj, Q4_CAPSULE);
}

static const int S8[] = {NPY_INT8, -1};
static const int U8[] = {NPY_UINT8, -1};

/* _q4_pack(w, scale, zero_point, block_size, signed, bits=4) -> capsule.
 * bits 4: w int8 (N, K) values (int4 in [-8, 7] when signed, else uint4 in [0, 15]);
 * bits 8: w int8 (signed) or uint8 values. scale: float32 (N, ceil(K / block_size)) positive
 * finite; zero_point: None or of w's dtype and scale's shape, in w's range; block_size: a
 * multiple of 32 in [32, 65536]. */
static PyObject *py_q4_pack(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *wo, *so, *zo, *bso;
    int is_signed, bits = 4;
    if (!PyArg_ParseTuple(args, "OOOOp|i:_q4_pack", &wo, &so, &zo, &bso, &is_signed, &bits))
        return NULL;
    if (bits != 4 && bits != 8) {
        qc_value_error("bits: expected 4 or 8, got %d", bits);
        return NULL;
    }
    const int *wtypes = bits == 4 || is_signed ? S8 : U8;
    Py_ssize_t bs;
    if (qc_parse_ssize(bso, "block_size", &bs) < 0) return NULL;
    if (bs < QC_Q4_KC || bs > 65536 || bs % QC_Q4_KC) {
        qc_value_error("block_size: expected a multiple of 32 in [32, 65536], got %zd", bs);
        return NULL;
    }
    PyObject *result = NULL;
    PyArrayObject *w = NULL, *s = NULL, *z = NULL;
    q4_packed *p = NULL;
    w = qc_int_array(wo, "w", wtypes);
    if (!w) goto done;
    if (PyArray_NDIM(w) != 2 || PyArray_DIM(w, 0) < 1 || PyArray_DIM(w, 1) < 1) {
        qc_value_error("w: expected a non-empty 2-d (out_features, in_features) array, got %d "
                       "dimensions", PyArray_NDIM(w));
        goto done;
    }
    const int64_t n = PyArray_DIM(w, 0), k = PyArray_DIM(w, 1), nb = (k + bs - 1) / bs;
    const int lo = is_signed ? -8 : 0, hi = is_signed ? 7 : 15;
    const int8_t *wd = (const int8_t *)PyArray_DATA(w);
    for (int64_t i = 0; bits == 4 && i < n * k; i++) {
        if (wd[i] < lo || wd[i] > hi) {
            qc_value_error("w: expected %s values in [%d, %d], got %d at flat index %lld",
                           is_signed ? "int4" : "uint4", lo, hi, wd[i], (long long)i);
            goto done;
        }
    }
    s = qc_float32_array(so, "scale");
    if (!s) goto done;
    if (PyArray_NDIM(s) != 2 || PyArray_DIM(s, 0) != n || PyArray_DIM(s, 1) != nb) {
        qc_value_error("scale: expected shape (%lld, %lld) (out_features, blocks), got %d "
                       "dimensions of %" NPY_INTP_FMT " elements", (long long)n, (long long)nb,
                       PyArray_NDIM(s), PyArray_SIZE(s));
        goto done;
    }
    if (qc_check_scales((const float *)PyArray_DATA(s), (size_t)(n * nb), "scale") < 0) goto done;
    if (zo != Py_None) {
        z = qc_int_array(zo, "zero_point", wtypes);
        if (!z) goto done;
        if (PyArray_NDIM(z) != 2 || PyArray_DIM(z, 0) != n || PyArray_DIM(z, 1) != nb) {
            qc_value_error("zero_point: expected shape (%lld, %lld) like scale, got %d "
                           "dimensions of %" NPY_INTP_FMT " elements", (long long)n,
                           (long long)nb, PyArray_NDIM(z), PyArray_SIZE(z));
            goto done;
        }
        const int8_t *zd = (const int8_t *)PyArray_DATA(z);
        for (int64_t i = 0; bits == 4 && i < n * nb; i++) {
            if (zd[i] < lo || zd[i] > hi) {
                qc_value_error("zero_point: expected values in [%d, %d], got %d at flat index "
                               "%lld", lo, hi, zd[i], (long long)i);
                goto done;
            }
        }
    }
    const size_t dsize = qc_q4_data_size(n, k, bits), pcount = qc_q4_param_count(n, k, bs);
    if (!dsize || !pcount || pcount > PY_SSIZE_T_MAX / sizeof(float)) {
        qc_value_error("w: shape (%lld, %lld) is too large to pack", (long long)n, (long long)k);
        goto done;
    }
    p = PyMem_Calloc(1, sizeof *p);
    if (!p) {
        PyErr_NoMemory();
        goto done;
    }
    const int need_zp = z != NULL || !is_signed;
    p->data = PyMem_Malloc(dsize);
    p->scale = PyMem_Malloc(pcount * sizeof(float));
    p->zp = need_zp ? PyMem_Malloc(pcount) : NULL;
    if (!p->data || !p->scale || (need_zp && !p->zp)) {
        PyErr_NoMemory();
        goto done;
    }
    p->nbytes = dsize + pcount * sizeof(float) + (need_zp ? pcount : 0);
    const float *sd = (const float *)PyArray_DATA(s);
    const int8_t *zd = z ? (const int8_t *)PyArray_DATA(z) : NULL;
    Py_BEGIN_ALLOW_THREADS
    if (bits == 4)
        qc_q4_pack(wd, sd, zd, is_signed, n, k, bs, p->data, p->scale, p->zp, &p->b);
    else
        qc_q8b_pack(wd, sd, zd, is_signed, n, k, bs, p->data, p->scale, p->zp, &p->b);
    Py_END_ALLOW_THREADS
    result = PyCapsule_New(p, Q4_CAPSULE, q4_capsule_free);
    if (result) p = NULL;
done:
    if (p) {
        PyMem_Free(p->data);
        PyMem_Free(p->scale);
        PyMem_Free(p->zp);
        PyMem_Free(p);
    }
    Py_XDECREF(w);
    Py_XDECREF(s);
    Py_XDECREF(z);
    return result;
}

/* _q4_info(packed) -> (out_features, in_features, block_size, nbytes, bits) */
static PyObject *py_q4_info(PyObject *self, PyObject *obj) {
    (void)self;
    q4_packed *p = get_q4(obj);
    if (!p) return NULL;
    return Py_BuildValue("LLLni", (long long)p->b.n, (long long)p->b.k, (long long)p->b.bs,
                         (Py_ssize_t)p->nbytes, p->b.bits);
}

/* _q4_linear_forward(x, packed, bias, out, per_row, isa=None, path=0): x float (..., K) ->
 * float32 (..., N). isa (tests): the variant of that exact level; path (tests): 1 GEMV,
 * 2 GEMM, 0 automatic. */
static PyObject *py_q4_linear_forward(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xobj, *pobj, *biaso, *outo = Py_None, *isao = Py_None;
    int per_row = 0, path = 0;
    if (!PyArg_ParseTuple(args, "OOO|OpOi:_q4_linear_forward", &xobj, &pobj, &biaso, &outo,
                          &per_row, &isao, &path))
        return NULL;
    q4_packed *p = get_q4(pobj);
    if (!p) return NULL;
    const qc_q4_b *B = &p->b;
    const qc_q4_kernels *kern = NULL;
    if (isao != Py_None) {
        const char *name = qc_utf8_or_null(isao);
        qc_isa isa;
        const qc_variant *v = name && qc_isa_from_name(name, &isa) == 0
                                  ? qc_family_find(&qc_q4gemm_family, isa) : NULL;
        if (!v || !qc_isa_supported(isa)) {
            qc_value_error("isa: expected a level with a usable q4gemm variant, got %R", isao);
            return NULL;
        }
        kern = qc_q4_kernels_of(v);
    }
    if (path < 0 || path > 2) {
        qc_value_error("path: expected 0, 1 or 2, got %d", path);
        return NULL;
    }
    PyObject *result = NULL;
    PyArrayObject *x = NULL, *fb = NULL, *out = NULL, *final = NULL;
    int8_t *q = NULL;
    float *xs = NULL;
    int32_t *qsum = NULL;
    x = qc_any_array(xobj, "x");
    if (!x) goto done;
    const int nd = PyArray_NDIM(x);
    if (nd < 1 || PyArray_DIM(x, nd - 1) != B->k) {
        qc_value_error("x: expected shape (..., %lld) (in_features), got %d dimensions with "
                       "last %lld", (long long)B->k, nd,
                       nd ? (long long)PyArray_DIM(x, nd - 1) : -1LL);
        goto done;
    }
    {
        PyArrayObject *xf = qc_float32_array((PyObject *)x, "x");
        Py_DECREF(x);
        x = xf;
        if (!x) goto done;
    }
    if (biaso != Py_None) {
        fb = qc_float32_array(biaso, "bias");
        if (!fb) goto done;
        if (PyArray_NDIM(fb) != 1 || PyArray_DIM(fb, 0) != B->n) {
            qc_value_error("bias: expected shape (%lld,) (out_features) or None, got %d "
                           "dimensions of %" NPY_INTP_FMT " elements", (long long)B->n,
                           PyArray_NDIM(fb), PyArray_SIZE(fb));
            goto done;
        }
    }
    const int64_t k = B->k;
    int64_t rows = 1;
    for (int i = 0; i < nd - 1; i++) rows *= PyArray_DIM(x, i);
    npy_intp shape[NPY_MAXDIMS];
    for (int i = 0; i < nd - 1; i++) shape[i] = PyArray_DIM(x, i);
    shape[nd - 1] = (npy_intp)B->n;
    out = qc_output(outo, "out", nd, shape, NPY_FLOAT32);
    if (!out) goto done;
    {
        PyArrayObject *const ins[] = {x, fb};
        if (qc_out_swap(&out, &final, ins, 2) < 0) goto done;
    }
    if (PyArray_SIZE(out) == 0) {
        result = (PyObject *)out;
        out = NULL;
        goto done;
    }
    /* rows * kp int8 and rows * nb int32: checked products (x itself, rows * k float32,
     * exists, but kp and nb can exceed k) */
    size_t qbytes, sbytes;
    if (__builtin_mul_overflow((size_t)rows, (size_t)B->kp, &qbytes) ||
        __builtin_mul_overflow((size_t)rows, (size_t)B->nb * sizeof(int32_t), &sbytes)) {
        PyErr_NoMemory();
        goto done;
    }
    q = malloc(qbytes);
    xs = PyMem_Malloc((size_t)rows * sizeof(float));
    qsum = malloc(sbytes);
    if (!q || !xs || !qsum) {
        PyErr_NoMemory();
        goto done;
    }
    const float *xd = (const float *)PyArray_DATA(x);
    size_t nans = 0, first = 0;
    Py_BEGIN_ALLOW_THREADS
    float mn, mx;
    qc_dynq_minmax_f32(xd, (size_t)(rows * k), &mn, &mx, &nans, &first);
    Py_END_ALLOW_THREADS
    if (nans) {
        qc_value_error("x: expected no NaN, got %zu NaN values (first at flat index %zu)", nans,
                       first);
        goto done;
    }
    qc_q4_args g;
    memset(&g, 0, sizeof g);
    g.q = q;
    g.xs = xs;
    g.qsum = qsum;
    g.m = rows;
    g.b = B;
    g.y = (float *)PyArray_DATA(out);
    g.ldy = (ptrdiff_t)B->n;
    g.bias = fb ? (const float *)PyArray_DATA(fb) : NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    qc_q4_quantize_x(xd, (ptrdiff_t)k, rows, k, B->kp, B->bs, per_row, q, xs, qsum);
    rc = qc_q4_gemm(&g, kern, path);
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
    Py_XDECREF(fb);
    Py_XDECREF(out);
    free(q);
    PyMem_Free(xs);
    free(qsum);
    return result;
}

PyMethodDef qc_q4gemm_methods[] = {
    {"_q4_pack", py_q4_pack, METH_VARARGS, "Pack 4-bit blocked weights for the q4gemm kernels."},
    {"_q4_info", py_q4_info, METH_O, "(out_features, in_features, block_size, nbytes, bits)."},
    {"_q4_linear_forward", py_q4_linear_forward, METH_VARARGS,
     "4-bit Linear forward: per-row int8 activations times packed 4-bit weights, float32 out."},
    {NULL, NULL, 0, NULL},
};

int qc_q4gemm_init(PyObject *m) {
    (void)m;
    return qc_register_family(&qc_q4gemm_family) < 0 ? -1 : 0;
}
