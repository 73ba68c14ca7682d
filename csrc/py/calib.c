/* Bindings for the calib family (to be filled). */
#include "py/pyutil.h"

PyMethodDef qc_calib_methods[] = {
    {NULL, NULL, 0, NULL},
};

int qc_calib_init(PyObject *m) {
    (void)m;
    return 0;
}
