/* edge-gw's optional C code for the cloud receiver's hottest per-reading steps. Each function gives exactly what the
 * pure-Python code it stands for gives (tests/cloud/test_speedups.py holds them together), or None where that code
 * would take its general path, which then decides and words any error:
 * - line(): cloud/lineproto.py's Encoder.line(), one InfluxDB line. It writes only what the Python encoder writes,
 *   byte for byte, and returns None for anything else: a field key the caller has not escaped yet (or not a
 *   plain str), a string, a non-finite float, an int outside int64, a subclass of a number type, no fields.
 * - fingerprint(): cloud/dedup.py's fingerprint(), the same hash (the dedup journal keeps them across restarts).
 * - df5_fields(): cloud/formats/ruuvi_gateway.py's _df5_fields(), the usual data format 5 advert's fields.
 *
 * Why C: per Ruuvi Gateway message the Python encoder took about 26,000 instructions (11 fields), mostly turning
 * ints into text and assembling the f-string; this line about 5,000 (docs/benchmarks.md). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
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
        /* An exact str: looking it up runs no Python code, which could change `fields` under PyDict_Next. */
        PyObject *escaped = PyUnicode_CheckExact(key) ? escaped_key(keys, key, i) : NULL;
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

/* fingerprint(fields, names) -> int: hash of the tuple of fields.get(name, -1) for each name, as Python's. */
static PyObject *minus_one;

static PyObject *fingerprint(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2 || !PyDict_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "fingerprint(dict, tuple)");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(args[1]);
    PyObject *values = PyTuple_New(n);
    if (values == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyDict_GetItemWithError(args[0], PyTuple_GET_ITEM(args[1], i));
        if (v == NULL && PyErr_Occurred()) {
            Py_DECREF(values);
            return NULL;
        }
        PyTuple_SET_ITEM(values, i, Py_NewRef(v != NULL ? v : minus_one));
    }
    Py_hash_t h = PyObject_Hash(values);
    Py_DECREF(values);
    return h == -1 && PyErr_Occurred() ? NULL : PyLong_FromSsize_t(h);
}

/* df5_fields(data) -> dict | None: the 31-byte advert (flags, then Ruuvi's data format 5) in 62 hex digits. */
enum { TEMPERATURE, HUMIDITY, PRESSURE, ACC_X, ACC_Y, ACC_Z, BATTERY, TX_POWER, MOVEMENT, SEQUENCE, N_KEYS };
static const char *const key_names[N_KEYS] = {
    "temperature", "humidity", "pressure", "acceleration_x", "acceleration_y", "acceleration_z",
    "battery_voltage", "tx_power", "movement_counter", "measurement_sequence_number",
};
static PyObject *keys[N_KEYS];
static const unsigned char df5_start[8] = {0x02, 0x01, 0x06, 0x1b, 0xff, 0x99, 0x04, 0x05};

static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int put_field(PyObject *out, int key, PyObject *value) {
    if (value == NULL)
        return -1;
    int rc = PyDict_SetItem(out, keys[key], value);
    Py_DECREF(value);
    return rc;
}

static PyObject *df5_fields(PyObject *self, PyObject *data) {
    (void)self;
    if (!PyUnicode_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "df5_fields(str)");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(data) || PyUnicode_GET_LENGTH(data) != 62)
        Py_RETURN_NONE;
    const unsigned char *hex = PyUnicode_1BYTE_DATA(data);
    unsigned char raw[31];
    for (int i = 0; i < 31; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            Py_RETURN_NONE;  /* bytes.fromhex() would refuse it, or skip spaces and give fewer bytes */
        raw[i] = (unsigned char)(hi << 4 | lo);
    }
    if (memcmp(raw, df5_start, sizeof df5_start) != 0)
        Py_RETURN_NONE;
#define U16(at) ((unsigned)raw[at] << 8 | raw[at + 1])
#define S16(at) ((int)(int16_t)U16(at))
    int t = S16(8), ax = S16(14), ay = S16(16), az = S16(18);
    unsigned h = U16(10), p = U16(12), power = U16(20), movement = raw[22], seq = U16(23);
#undef U16
#undef S16
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    /* Python's int / int of values below 2**53 is the correctly rounded double division, as here. */
    if ((t != -32768 && put_field(out, TEMPERATURE, PyFloat_FromDouble((double)t / 200)) < 0)
        || (h != 0xFFFF && put_field(out, HUMIDITY, PyFloat_FromDouble((double)h / 400)) < 0)
        || (p != 0xFFFF && put_field(out, PRESSURE, PyFloat_FromDouble((double)p + 50000.0)) < 0)
        || (ax != -32768 && put_field(out, ACC_X, PyLong_FromLong(ax)) < 0)
        || (ay != -32768 && put_field(out, ACC_Y, PyLong_FromLong(ay)) < 0)
        || (az != -32768 && put_field(out, ACC_Z, PyLong_FromLong(az)) < 0)
        || ((power >> 5) != 2047 && put_field(out, BATTERY, PyLong_FromLong((long)(power >> 5) + 1600)) < 0)
        || ((power & 0x1F) != 31 && put_field(out, TX_POWER, PyLong_FromLong((long)(power & 0x1F) * 2 - 40)) < 0)
        || (movement != 0xFF && put_field(out, MOVEMENT, PyLong_FromLong((long)movement)) < 0)
        || (seq != 0xFFFF && put_field(out, SEQUENCE, PyLong_FromLong((long)seq)) < 0)) {
        Py_DECREF(out);
        return NULL;
    }
    if (PyDict_GET_SIZE(out) == 0) {
        Py_DECREF(out);
        Py_RETURN_NONE;  /* nothing available: the general path decides what that is */
    }
    return out;
}

/* keep_arenas(count): CPython's small-object allocator returns each of its 1 MiB arenas to the kernel as soon as it
 * is empty. The receiver frees its readings a batch at a time, in the order they came, so whole arenas empty and
 * are mapped again moments later, and the kernel zeroes every page anew: 13-16 % of the receiver's CPU samples went
 * to those page faults (perf, docs/benchmarks.md). This keeps up to `count` empty arenas for reuse instead. The
 * allocator is called with the GIL held, as these lists need. */
#define MAX_KEPT_ARENAS 1024
static void *kept_arenas[MAX_KEPT_ARENAS];
static size_t n_kept, max_kept, kept_size;
static PyObjectArenaAllocator default_arenas;

static void *arena_alloc(void *ctx, size_t size) {
    if (n_kept > 0 && size == kept_size)
        return kept_arenas[--n_kept];
    return default_arenas.alloc(ctx, size);
}

static void arena_free(void *ctx, void *ptr, size_t size) {
    if (n_kept < max_kept && (kept_size == 0 || size == kept_size)) {
        kept_size = size;
        kept_arenas[n_kept++] = ptr;
        return;
    }
    default_arenas.free(ctx, ptr, size);
}

static PyObject *keep_arenas(PyObject *self, PyObject *arg) {
    (void)self;
    Py_ssize_t count = PyLong_AsSsize_t(arg);
    if (count == -1 && PyErr_Occurred())
        return NULL;
    if (count < 0 || count > MAX_KEPT_ARENAS) {
        PyErr_Format(PyExc_ValueError, "keep_arenas: count must be 0..%d", MAX_KEPT_ARENAS);
        return NULL;
    }
    if (default_arenas.alloc == NULL) {
        PyObject_GetArenaAllocator(&default_arenas);
        PyObjectArenaAllocator mine = {default_arenas.ctx, arena_alloc, arena_free};
        PyObject_SetArenaAllocator(&mine);
    }
    max_kept = (size_t)count;
    while (n_kept > max_kept) {
        n_kept--;
        default_arenas.free(default_arenas.ctx, kept_arenas[n_kept], kept_size);
    }
    return PyLong_FromSize_t(n_kept);
}

static PyMethodDef methods[] = {
    {"keep_arenas", keep_arenas, METH_O,
     "keep_arenas(count) -> int: keep up to `count` empty 1 MiB object arenas for reuse (0: none); the number kept now."},
    {"fingerprint", (PyCFunction)(void (*)(void))fingerprint, METH_FASTCALL,
     "fingerprint(fields, names) -> int: hash((fields.get(name, -1) for name in names)) as a tuple."},
    {"df5_fields", df5_fields, METH_O,
     "df5_fields(data) -> dict | None: the fields of the usual data format 5 advert, or None."},
    {"line", (PyCFunction)(void (*)(void))line, METH_FASTCALL,
     "line(series, fields, time_ns, keys, floats, max_floats) -> str | None: one line, or None for the caller's "
     "own path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_speedups", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    minus_one = PyLong_FromLong(-1);
    if (minus_one == NULL)
        return NULL;
    for (int i = 0; i < N_KEYS; i++)
        if ((keys[i] = PyUnicode_InternFromString(key_names[i])) == NULL)
            return NULL;
    return PyModule_Create(&module);
}
