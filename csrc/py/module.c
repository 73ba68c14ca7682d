/* The quantc._C module: runtime functions (ISA cap, threads, cpu_info) and every family's table. */
#define QC_MODULE_MAIN
#include "py/pyutil.h"
#include "gemm/gemm.h"

static PyObject *py_cpu_info(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    const qc_cpu_features *f = qc_cpu();
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    PyObject *features = Py_BuildValue(
        "{s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O}",
        "sse4.1", f->sse41 ? Py_True : Py_False, "avx", f->avx ? Py_True : Py_False,
        "fma", f->fma ? Py_True : Py_False, "f16c", f->f16c ? Py_True : Py_False,
        "avx2", f->avx2 ? Py_True : Py_False, "bmi2", f->bmi2 ? Py_True : Py_False,
        "avx512f", f->avx512f ? Py_True : Py_False, "avx512bw", f->avx512bw ? Py_True : Py_False,
        "avx512vl", f->avx512vl ? Py_True : Py_False, "avx512dq", f->avx512dq ? Py_True : Py_False,
        "avx512vnni", f->avx512vnni ? Py_True : Py_False,
        "avx512bf16", f->avx512bf16 ? Py_True : Py_False,
        "avx512fp16", f->avx512fp16 ? Py_True : Py_False,
        "avxvnni", f->avxvnni ? Py_True : Py_False, "amx_tile", f->amx_tile ? Py_True : Py_False,
        "amx_int8", f->amx_int8 ? Py_True : Py_False, "amx_bf16", f->amx_bf16 ? Py_True : Py_False,
        "amx_permitted", f->amx_permitted ? Py_True : Py_False);
    PyObject *supported = PyList_New(0);
    PyObject *kernels = PyDict_New();
    PyObject *variants = PyDict_New();
    if (!features || !supported || !kernels || !variants) goto fail;
    for (int i = 0; i < QC_ISA_COUNT; i++) {
        if (qc_isa_supported((qc_isa)i)) {
            PyObject *s = PyUnicode_FromString(qc_isa_name((qc_isa)i));
            if (!s || PyList_Append(supported, s) < 0) { Py_XDECREF(s); goto fail; }
            Py_DECREF(s);
        }
    }
    /* the gemm choice runs the AMX self-check first, so a level it disables is not reported */
    Py_BEGIN_ALLOW_THREADS
    (void)qc_gemm_select();
    Py_END_ALLOW_THREADS
    PyObject *disabled = PyDict_New();
    if (!disabled) goto fail;
    for (int i = 0; i < QC_ISA_COUNT; i++) {
        const char *why = qc_isa_disabled_reason((qc_isa)i);
        if (!why) continue;
        PyObject *s = PyUnicode_FromString(why);
        if (!s || PyDict_SetItemString(disabled, qc_isa_name((qc_isa)i), s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(disabled);
            goto fail;
        }
        Py_DECREF(s);
    }
    if (PyDict_SetItemString(d, "isa_disabled", disabled) < 0) {
        Py_DECREF(disabled);
        goto fail;
    }
    Py_DECREF(disabled);
    for (size_t i = 0; i < qc_family_count(); i++) {
        const qc_family *fam = qc_family_at(i);
        PyObject *chosen = PyUnicode_FromString(qc_family_select(fam)->name);
        if (!chosen || PyDict_SetItemString(kernels, fam->name, chosen) < 0) {
            Py_XDECREF(chosen);
            goto fail;
        }
        Py_DECREF(chosen);
        PyObject *lst = PyList_New(0);
        if (!lst) goto fail;
        for (size_t k = 0; k < fam->count; k++) {
            PyObject *t = Py_BuildValue("(ssO)", fam->variants[k].name,
                                        qc_isa_name(fam->variants[k].isa),
                                        qc_isa_usable(fam->variants[k].isa) ? Py_True : Py_False);
            if (!t || PyList_Append(lst, t) < 0) { Py_XDECREF(t); Py_DECREF(lst); goto fail; }
            Py_DECREF(t);
        }
        if (PyDict_SetItemString(variants, fam->name, lst) < 0) { Py_DECREF(lst); goto fail; }
        Py_DECREF(lst);
    }
    /* PyDict_SetItemString does not steal: the three new values are released below */
    PyObject *vendor = PyUnicode_FromString(f->vendor);
    PyObject *cap = PyUnicode_FromString(qc_isa_name(qc_isa_cap()));
    PyObject *nthreads = PyLong_FromLong(qc_get_num_threads());
    int bad = !vendor || !cap || !nthreads ||
              PyDict_SetItemString(d, "vendor", vendor) < 0 ||
              PyDict_SetItemString(d, "features", features) < 0 ||
              PyDict_SetItemString(d, "isa_supported", supported) < 0 ||
              PyDict_SetItemString(d, "isa_cap", cap) < 0 ||
              PyDict_SetItemString(d, "kernels", kernels) < 0 ||
              PyDict_SetItemString(d, "variants", variants) < 0 ||
              PyDict_SetItemString(d, "num_threads", nthreads) < 0;
    Py_XDECREF(vendor);
    Py_XDECREF(cap);
    Py_XDECREF(nthreads);
    if (bad) goto fail;
    Py_DECREF(features);
    Py_DECREF(supported);
    Py_DECREF(kernels);
    Py_DECREF(variants);
    return d;
fail:
    Py_XDECREF(features);
    Py_XDECREF(supported);
    Py_XDECREF(kernels);
    Py_XDECREF(variants);
    Py_DECREF(d);
    return NULL;
}

static PyObject *py_set_isa_cap(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyUnicode_Check(arg)) return (qc_type_error("isa: expected a string, got %s",
                                                     Py_TYPE(arg)->tp_name), NULL);
    qc_isa isa;
    const char *name = qc_utf8_or_null(arg); /* NULL for NUL or surrogates: no such level */
    if (!name || qc_isa_from_name(name, &isa) < 0) {
        return (qc_value_error("isa: expected one of scalar, avx2, avxvnni, avx512, avx512vnni, "
                               "amx, amxemu, got %R", arg), NULL);
    }
    PyObject *prev = PyUnicode_FromString(qc_isa_name(qc_isa_cap()));
    qc_isa_set_cap(isa);
    return prev;
}

/* Test hooks of the AMX self-check: run it on the gemm variant of a level (corrupt: force a
 * mismatch); returns None when it passed, else the reason (the level is then disabled). */
static PyObject *py_gemm_selfcheck(PyObject *self, PyObject *args) {
    (void)self;
    const char *name;
    int corrupt;
    qc_isa isa;
    if (!PyArg_ParseTuple(args, "sp", &name, &corrupt)) return NULL;
    const qc_variant *v = qc_isa_from_name(name, &isa) == 0 ? qc_family_find(&qc_gemm_family, isa)
                                                            : NULL;
    if (!v || !qc_isa_supported(isa)) {
        PyErr_Format(PyExc_ValueError, "_gemm_selfcheck: no usable gemm variant at level '%s'",
                     name);
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = qc_gemm_selfcheck(v, corrupt);
    Py_END_ALLOW_THREADS
    if (rc == 0) Py_RETURN_NONE;
    return PyUnicode_FromString(qc_isa_disabled_reason(isa));
}

/* Test hook of the fork handler: hold the gemm selection's lock for `seconds` (GIL released). */
static PyObject *py_gemm_select_hold(PyObject *self, PyObject *arg) {
    (void)self;
    const double seconds = PyFloat_AsDouble(arg);
    if (seconds == -1.0 && PyErr_Occurred()) return NULL;
    if (!(seconds >= 0 && seconds <= 60)) {
        PyErr_SetString(PyExc_ValueError, "_gemm_select_hold: seconds must be in [0, 60]");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    qc_gemm_select_hold(seconds);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_gemm_select_busy(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyBool_FromLong(qc_gemm_select_busy());
}

static PyObject *py_isa_reenable(PyObject *self, PyObject *arg) {
    (void)self;
    qc_isa isa;
    const char *name = PyUnicode_Check(arg) ? qc_utf8_or_null(arg) : NULL;
    if (!name || qc_isa_from_name(name, &isa) < 0) {
        PyErr_SetString(PyExc_ValueError, "_isa_reenable: expected an ISA level name");
        return NULL;
    }
    qc_isa_reenable(isa);
    Py_RETURN_NONE;
}

static PyObject *py_get_isa_cap(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    return PyUnicode_FromString(qc_isa_name(qc_isa_cap()));
}

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg) {
    (void)self;
    if (PyBool_Check(arg) || !PyLong_Check(arg)) {
        return (qc_type_error("n: expected an int, got %s", Py_TYPE(arg)->tp_name), NULL);
    }
    Py_ssize_t n;
    if (qc_parse_ssize(arg, "n", &n) < 0) return NULL;
    if (n < 1 || n > qc_max_threads() || qc_set_num_threads((int)n) < 0) {
        return (qc_value_error("n: expected an int in [1, %d], got %zd", qc_max_threads(), n),
                NULL);
    }
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    return PyLong_FromLong(qc_get_num_threads());
}

#ifdef QC_AMX_EMULATE
void qc_amx_model_dpbusd(const uint8_t *a, const int8_t *b, int32_t *c, int rows, int k, int n);

/* Test hook of emulation builds: one TDPBUSD on the tile model. a: rows x 4k bytes (u8),
 * b: k x 4n bytes (s8, dword-grouped), c: rows x n int32 (native order); returns the new c. */
static PyObject *py_amx_model_dpbusd(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer a, b, c;
    int rows, k, n;
    if (!PyArg_ParseTuple(args, "y*y*y*iii", &a, &b, &c, &rows, &k, &n)) return NULL;
    PyObject *res = NULL;
    if (rows < 1 || rows > 16 || k < 1 || k > 16 || n < 1 || n > 16 ||
        a.len != (Py_ssize_t)rows * 4 * k || b.len != (Py_ssize_t)k * 4 * n ||
        c.len != (Py_ssize_t)rows * 4 * n) {
        PyErr_SetString(PyExc_ValueError, "_amx_model_dpbusd: bad shapes");
    } else if ((res = PyBytes_FromStringAndSize(c.buf, c.len)) != NULL) {
        qc_amx_model_dpbusd(a.buf, b.buf, (int32_t *)PyBytes_AS_STRING(res), rows, k, n);
    }
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    PyBuffer_Release(&c);
    return res;
}
#endif

static PyMethodDef runtime_methods[] = {
    {"cpu_info", py_cpu_info, METH_NOARGS, "Detected CPU features and the kernel chosen per family."},
    {"_set_isa_cap", py_set_isa_cap, METH_O, "Cap the ISA level (tests); returns the previous cap."},
    {"_get_isa_cap", py_get_isa_cap, METH_NOARGS, "The current ISA cap."},
    {"_gemm_selfcheck", py_gemm_selfcheck, METH_VARARGS,
     "Run the gemm self-check on a level (tests); None, or the reason it was disabled."},
    {"_gemm_select_hold", py_gemm_select_hold, METH_O,
     "Hold the gemm selection's lock for some seconds (tests of the fork handler)."},
    {"_gemm_select_busy", py_gemm_select_busy, METH_NOARGS,
     "Is the gemm selection's lock held now (tests)?"},
    {"_isa_reenable", py_isa_reenable, METH_O, "Undo a self-check's disabling (tests)."},
    {"set_num_threads", py_set_num_threads, METH_O, "Set the number of threads kernels use."},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "The number of threads kernels use."},
#ifdef QC_AMX_EMULATE
    {"_amx_model_dpbusd", py_amx_model_dpbusd, METH_VARARGS, "One TDPBUSD on the tile model (tests)."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "quantc._C",
                                       "quantc's C kernels (use the quantc package).", -1, NULL,
                                       NULL, NULL, NULL, NULL};

static int add_methods(PyObject *m, PyMethodDef *defs) {
    return PyModule_AddFunctions(m, defs);
}

PyMODINIT_FUNC PyInit__C(void) {
    import_array();
    qc_cpu_init();
    if (qc_pool_init() < 0) {
        PyErr_Format(PyExc_ValueError,
                     "QUANTC_NUM_THREADS: expected an integer in [1, %d], got '%s'",
                     qc_max_threads(), getenv("QUANTC_NUM_THREADS"));
        return NULL;
    }
    qc_gemm_select_init();
    const char *env = getenv("QUANTC_ISA");
    if (env && *env) {
        qc_isa cap;
        if (qc_isa_from_name(env, &cap) < 0) {
            PyErr_Format(PyExc_ValueError,
                         "QUANTC_ISA: expected one of scalar, avx2, avxvnni, avx512, avx512vnni, "
                         "amx, amxemu, got '%s'", env);
            return NULL;
        }
        qc_isa_set_cap(cap);
    }
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    if (add_methods(m, runtime_methods) < 0 || add_methods(m, qc_elementwise_methods) < 0 ||
        add_methods(m, qc_convert_methods) < 0 || add_methods(m, qc_gemm_methods) < 0 ||
        add_methods(m, qc_conv_methods) < 0 || add_methods(m, qc_calib_methods) < 0 ||
        add_methods(m, qc_gguf_methods) < 0 || add_methods(m, qc_q4gemm_methods) < 0 ||
        qc_elementwise_init(m) < 0 || qc_convert_init(m) < 0 || qc_gemm_init(m) < 0 ||
        qc_conv_init(m) < 0 || qc_calib_init(m) < 0 || qc_q4gemm_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
