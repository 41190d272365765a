/* The hot part of cloud/lineproto.py's Encoder.line() in C: one InfluxDB line from a series key that is already
 * escaped, a dict of fields and a time in ns. It writes only what the pure-Python encoder writes, byte for byte
 * (tests/cloud/test_speedups.py holds the two together), and returns None for anything else: a field key that the
 * caller has not escaped yet, a string, a non-finite float, an int outside int64, a subclass of a number type, no
 * fields. The caller then takes its own path, which decides and words the error.
 *
 * Why C: the Python encoder spends about 26,000 instructions per Ruuvi point (11 fields), mostly turning ints into
 * text and assembling the f-string; this takes a few thousand (docs/benchmarks.md). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
    int ascii;  /* all of it: the str is then made without decoding */
    char small[1024];
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t more) {
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap * 2;
    while (cap < b->len + more)
        cap *= 2;
    char *data;
    if (b->data == b->small) {
        data = PyMem_Malloc(cap);
        if (data != NULL)
            memcpy(data, b->small, b->len);
    } else {
        data = PyMem_Realloc(b->data, cap);
    }
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline int buf_put(Buf *b, const char *s, Py_ssize_t n) {
    if (b->len + n > b->cap && buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

static int buf_put_str(Buf *b, PyObject *text) {
    if (PyUnicode_IS_ASCII(text))
        return buf_put(b, (const char *)PyUnicode_1BYTE_DATA(text), PyUnicode_GET_LENGTH(text));
    b->ascii = 0;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    return s == NULL ? -1 : buf_put(b, s, n);
}

static int buf_put_int(Buf *b, long long v) {
    char digits[24];
    int i = sizeof digits;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        digits[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        digits[--i] = '-';
    return buf_put(b, digits + i, sizeof digits - i);
}

/* repr() of a finite float, remembered in `floats` as cloud.lineproto.float_text() does (zeros are not: 0.0 and
 * -0.0 are one key there but two texts). Returns 0, 1 for "not this path", -1 on an error. */
static int put_float(Buf *b, PyObject *value, PyObject *floats, Py_ssize_t max_floats) {
    double v = PyFloat_AS_DOUBLE(value);
    if (!isfinite(v))
        return 1;
    PyObject *text = PyDict_GetItemWithError(floats, value);
    if (text != NULL)
        return buf_put_str(b, text);
    if (PyErr_Occurred())
        return -1;
    char *repr = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);  /* what float.__repr__ does */
    if (repr == NULL)
        return -1;
    int rc = buf_put(b, repr, (Py_ssize_t)strlen(repr));
    if (rc == 0 && v != 0.0) {
        if (PyDict_GET_SIZE(floats) >= max_floats)
            PyDict_Clear(floats);
        PyObject *s = PyUnicode_FromString(repr);
        rc = s == NULL ? -1 : PyDict_SetItem(floats, value, s);
        Py_XDECREF(s);
    }
    PyMem_Free(repr);
    return rc;
}

/* The escaped text of the field key at each position of the last fields seen: a point's keys are the same str
 * objects as its predecessor's (the parsers' constants), so a pointer comparison replaces a dict lookup. Strong
 * references; an escaped text depends on its key alone, so a remembered one stays right. */
#define KNOWN_KEYS 64
static PyObject *known_key[KNOWN_KEYS], *known_escaped[KNOWN_KEYS];

static PyObject *escaped_key(PyObject *keys, PyObject *key, Py_ssize_t i) {
    if (i < KNOWN_KEYS && known_key[i] == key)
        return known_escaped[i];
    PyObject *escaped = PyDict_GetItemWithError(keys, key);
    if (escaped != NULL && i < KNOWN_KEYS) {
        Py_XSETREF(known_key[i], Py_NewRef(key));
        Py_XSETREF(known_escaped[i], Py_NewRef(escaped));
    }
    return escaped;
}

/* line(series, fields, time_ns, keys, floats, max_floats) -> str | None */
static PyObject *line(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "line() takes 6 arguments");
        return NULL;
    }
    PyObject *series = args[0], *fields = args[1], *time_ns = args[2], *keys = args[3], *floats = args[4];
    if (!PyUnicode_Check(series) || !PyDict_Check(fields) || !PyDict_Check(keys) || !PyDict_Check(floats)) {
        PyErr_SetString(PyExc_TypeError, "line(str, dict, int, dict, dict, int)");
        return NULL;
    }
    Py_ssize_t max_floats = PyLong_AsSsize_t(args[5]);
    if (max_floats == -1 && PyErr_Occurred())
        return NULL;
    if (!PyLong_CheckExact(time_ns) || PyDict_GET_SIZE(fields) == 0)
        Py_RETURN_NONE;
    int overflow = 0;
    long long t = PyLong_AsLongLongAndOverflow(time_ns, &overflow);
    if (overflow || (t == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }

    Buf b = {.len = 0, .cap = sizeof b.small, .ascii = 1};
    b.data = b.small;
    PyObject *result = NULL;
    int rc = buf_put_str(&b, series);
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    char sep = ' ';
    for (Py_ssize_t i = 0; rc == 0 && PyDict_Next(fields, &pos, &key, &value); i++) {
        PyObject *escaped = escaped_key(keys, key, i);
        if (escaped == NULL) {
            rc = PyErr_Occurred() ? -1 : 1;
            break;
        }
        if ((rc = buf_put(&b, &sep, 1)) < 0 || (rc = buf_put_str(&b, escaped)) < 0 || (rc = buf_put(&b, "=", 1)) < 0)
            break;
        sep = ',';
        if (PyFloat_CheckExact(value)) {
            rc = put_float(&b, value, floats, max_floats);
        } else if (PyLong_CheckExact(value)) {
            long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (overflow || (v == -1 && PyErr_Occurred())) {
                PyErr_Clear();
                rc = 1;
            } else if ((rc = buf_put_int(&b, v)) == 0) {
                rc = buf_put(&b, "i", 1);
            }
        } else if (PyBool_Check(value)) {  /* bool cannot be subclassed */
            rc = value == Py_True ? buf_put(&b, "true", 4) : buf_put(&b, "false", 5);
        } else {
            rc = 1;
        }
    }
    if (rc == 0 && (rc = buf_put(&b, " ", 1)) == 0 && (rc = buf_put_int(&b, t)) == 0) {
        if (b.ascii) {
            result = PyUnicode_New(b.len, 127);
            if (result != NULL)
                memcpy(PyUnicode_1BYTE_DATA(result), b.data, b.len);
        } else {
            result = PyUnicode_DecodeUTF8(b.data, b.len, NULL);
        }
    }
    else if (rc == 1)
        result = Py_NewRef(Py_None);
    if (b.data != b.small)
        PyMem_Free(b.data);
    return result;
}

static PyMethodDef methods[] = {
    {"line", (PyCFunction)(void (*)(void))line, METH_FASTCALL,
     "line(series, fields, time_ns, keys, floats, max_floats) -> str | None: one line, or None for the caller's "
     "own path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_lineproto", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__lineproto(void) { return PyModule_Create(&module); }
