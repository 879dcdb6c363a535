/* The query's hot loops in C: a slot's best cosines to the score cohort (mean, spread), a
 * query's best stored files from its FAISS hits, and where a slot is heard. weighter/scoring.py
 * (top_stats), weighter/index/query.py (file_hits) and weighter/embedding_set.py (spans) call
 * them, each beside its numpy reference, which runs where this module was not built;
 * tests/test_ranking.py checks the two agree.
 *
 * Plain CPython and the buffer protocol: no numpy headers at build time. Scores are computed in
 * float32 in numpy's order of operations, so both paths give the same bits. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A C-contiguous buffer of ``ndim`` dimensions whose items are of ``kind`` ('f': float32; 'q':
 * int64, format "q" or "l"; 'w': float32 or float16, format "f" or "e"); the caller releases
 * it. Returns 0, or -1 with a Python error set. */
static int get_buffer(PyObject *obj, Py_buffer *view, int ndim, char kind, int writable, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    int is_f32 = strcmp(f, "f") == 0 && view->itemsize == 4, is_f16 = strcmp(f, "e") == 0 && view->itemsize == 2;
    int ok = kind == 'f' ? is_f32 : kind == 'w' ? (is_f32 || is_f16)
                         : ((strcmp(f, "q") == 0 || strcmp(f, "l") == 0) && view->itemsize == 8);
    if (!ok || view->ndim != ndim) {
        PyErr_Format(PyExc_TypeError, "%s: expected a C-contiguous %dd %s array", name, ndim,
                     kind == 'f' ? "float32" : kind == 'w' ? "float32 or float16" : "int64");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Reorders row[0:n] so that row[first:n] holds its n - first largest values (Hoare's select). */
static void select_top(float *row, Py_ssize_t n, Py_ssize_t first) {
    Py_ssize_t lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = row[lo + (hi - lo) / 2];
        Py_ssize_t i = lo, j = hi;
        while (i <= j) {
            while (row[i] < pivot) i++;
            while (row[j] > pivot) j--;
            if (i <= j) {
                float t = row[i]; row[i] = row[j]; row[j] = t;
                i++; j--;
            }
        }
        if (first <= j) hi = j;
        else if (first >= i) lo = i;
        else return;
    }
}

static PyObject *top_stats(PyObject *self, PyObject *args) {
    PyObject *products_obj, *mean_obj, *spread_obj;
    Py_ssize_t top;
    double min_spread;
    if (!PyArg_ParseTuple(args, "OndOO", &products_obj, &top, &min_spread, &mean_obj, &spread_obj))
        return NULL;
    Py_buffer products, mean, spread;
    if (get_buffer(products_obj, &products, 2, 'f', 1, "products") < 0)
        return NULL;
    if (get_buffer(mean_obj, &mean, 1, 'f', 1, "mean") < 0) {
        PyBuffer_Release(&products);
        return NULL;
    }
    if (get_buffer(spread_obj, &spread, 1, 'f', 1, "spread") < 0) {
        PyBuffer_Release(&products); PyBuffer_Release(&mean);
        return NULL;
    }
    Py_ssize_t rows = products.shape[0], cols = products.shape[1];
    if (mean.shape[0] != rows || spread.shape[0] != rows || top < 1 || top > cols) {
        PyBuffer_Release(&products); PyBuffer_Release(&mean); PyBuffer_Release(&spread);
        PyErr_SetString(PyExc_ValueError, "top_stats: need 1 <= top <= columns and one mean and spread per row");
        return NULL;
    }
    float *data = products.buf, *m = mean.buf, *s = spread.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++) {
        float *row = data + r * cols;
        select_top(row, cols, cols - top);
        double sum = 0.0, squares = 0.0;
        for (Py_ssize_t c = cols - top; c < cols; c++)
            sum += row[c];
        double mu = sum / (double)top;
        for (Py_ssize_t c = cols - top; c < cols; c++)
            squares += (row[c] - mu) * (row[c] - mu);
        double sd = sqrt(squares / (double)top);
        m[r] = (float)mu;
        s[r] = (float)(sd > min_spread ? sd : min_spread);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&products); PyBuffer_Release(&mean); PyBuffer_Release(&spread);
    Py_RETURN_NONE;
}

typedef struct {
    int64_t file;
    float score, cosine;
    int32_t row, slot;  /* query slot row, stored slot number */
} Hit;

/* Does hit x rank before hit y: score descending, then file ascending? */
static inline int ranks_before(const Hit *x, const Hit *y) {
    return x->score > y->score || (x->score == y->score && x->file < y->file);
}

static PyObject *best_files(PyObject *self, PyObject *args) {
    PyObject *cos_obj, *ids_obj, *qmean_obj, *qspread_obj, *table_obj;
    long long exclude;
    Py_ssize_t want;
    int slot_bits;
    if (!PyArg_ParseTuple(args, "OOOOOLni", &cos_obj, &ids_obj, &qmean_obj, &qspread_obj, &table_obj,
                          &exclude, &want, &slot_bits))
        return NULL;
    Py_buffer cos, ids, qmean = {0}, qspread = {0}, table = {0};
    int normalise = qmean_obj != Py_None;
    PyObject *out = NULL;
    Hit *files = NULL, *top = NULL;
    int32_t *buckets = NULL;
    if (want < 0)
        want = 0;
    if (get_buffer(cos_obj, &cos, 2, 'f', 0, "cosines") < 0)
        return NULL;
    if (get_buffer(ids_obj, &ids, 2, 'q', 0, "ids") < 0) {
        PyBuffer_Release(&cos);
        return NULL;
    }
    if (normalise && (get_buffer(qmean_obj, &qmean, 1, 'f', 0, "query mean") < 0 ||
                      get_buffer(qspread_obj, &qspread, 1, 'f', 0, "query spread") < 0 ||
                      get_buffer(table_obj, &table, 3, 'f', 0, "statistics table") < 0))
        goto done;
    Py_ssize_t rows = cos.shape[0], depth = cos.shape[1];
    if (ids.shape[0] != rows || ids.shape[1] != depth ||
        (normalise && (qmean.shape[0] != rows || qspread.shape[0] != rows || table.shape[2] != 2))) {
        PyErr_SetString(PyExc_ValueError, "best_files: cosines, ids and statistics disagree in shape");
        goto done;
    }
    Py_ssize_t hits = rows * depth, bits = 4;
    if (want > hits)  /* never more files than hits: a huge k allocates nothing more */
        want = hits;
    while (((Py_ssize_t)1 << bits) < 2 * hits)
        bits++;
    Py_ssize_t capacity = (Py_ssize_t)1 << bits;  /* open addressing, at most half full */
    files = PyMem_Malloc(sizeof(Hit) * (size_t)(hits + 1));
    top = PyMem_Malloc(sizeof(Hit) * (size_t)(want + 1));
    buckets = PyMem_Malloc(sizeof(int32_t) * (size_t)capacity);
    if (!files || !top || !buckets) {
        PyErr_NoMemory();
        goto done;
    }
    memset(buckets, 0xff, sizeof(int32_t) * (size_t)capacity);  /* -1: empty */
    const float *c = cos.buf, *stats = table.buf;
    const int64_t *id = ids.buf;
    int64_t slot_mask = ((int64_t)1 << slot_bits) - 1;
    Py_ssize_t count = 0, kept = 0, table_files = normalise ? table.shape[0] : 0;
    Py_ssize_t table_slots = normalise ? table.shape[1] : 0;
    for (Py_ssize_t r = 0; r < rows; r++)
        for (Py_ssize_t j = 0; j < depth; j++) {
            int64_t v = id[r * depth + j];
            if (v < 0 || (v >> slot_bits) == exclude)  /* FAISS's padding; the query's own file */
                continue;
            Hit h = {v >> slot_bits, 0.0f, c[r * depth + j], (int32_t)r, (int32_t)(v & slot_mask)};
            h.score = h.cosine;
            if (normalise) {  /* s-norm in float32, as scoring.normalised computes it */
                float mean = 0.0f, spread = 1.0f;
                if (h.file < table_files && h.slot < table_slots) {
                    const float *cell = stats + 2 * (h.file * table_slots + h.slot);
                    mean = cell[0];
                    spread = cell[1];
                }
                float a = (h.cosine - ((const float *)qmean.buf)[r]) / ((const float *)qspread.buf)[r];
                float b = (h.cosine - mean) / spread;
                h.score = 0.5f * (a + b);
            }
            /* each file's best hit; on a tie the first (numpy's stable sort keeps it too) */
            size_t bucket = (size_t)(((uint64_t)h.file * 0x9E3779B97F4A7C15ULL) >> (64 - bits));
            while (buckets[bucket] >= 0 && files[buckets[bucket]].file != h.file)
                bucket = (bucket + 1) & (size_t)(capacity - 1);
            if (buckets[bucket] < 0) {
                buckets[bucket] = (int32_t)count;
                files[count++] = h;
            } else if (h.score > files[buckets[bucket]].score) {
                files[buckets[bucket]] = h;
            }
        }
    for (Py_ssize_t i = 0; want > 0 && i < count; i++) {  /* the best ``want`` files, by insertion */
        if (kept == want && !ranks_before(&files[i], &top[kept - 1]))
            continue;
        Py_ssize_t at = kept < want ? kept++ : kept - 1;
        while (at > 0 && ranks_before(&files[i], &top[at - 1])) {
            top[at] = top[at - 1];
            at--;
        }
        top[at] = files[i];
    }
    out = PyList_New(kept);
    for (Py_ssize_t i = 0; out && i < kept; i++) {
        PyObject *item = Py_BuildValue("(Lddii)", (long long)top[i].file, (double)top[i].score,
                                       (double)top[i].cosine, top[i].row, top[i].slot);
        if (!item) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, item);
    }
done:
    PyMem_Free(files); PyMem_Free(top); PyMem_Free(buckets);
    PyBuffer_Release(&cos); PyBuffer_Release(&ids);
    if (qmean.obj) PyBuffer_Release(&qmean);
    if (qspread.obj) PyBuffer_Release(&qspread);
    if (table.obj) PyBuffer_Release(&table);
    return out;
}

/* x rounded to 2 decimals exactly as Python's round(x, 2). Below 2^26 hundredths (186 hours)
 * the product x * 100 is off by at most 1.5e-8, so away from a tie (its fraction within 1e-7 of
 * one half) its nearest integer, divided by 100 (a correctly rounded division), is that value;
 * elsewhere glibc's printf rounds the binary value correctly, as Python's formatting does. */
static double round2(double x) {
    double scaled = x * 100.0, below = floor(scaled);
    if (fabs(scaled) < 67108864.0 && fabs(scaled - below - 0.5) > 1e-7)
        return floor(scaled + 0.5) / 100.0;
    char text[64];
    snprintf(text, sizeof text, "%.2f", x);
    return strtod(text, NULL);
}

/* An IEEE half-precision value (numpy's float16) as a float: exact, every half is a float. */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
    if (exponent == 0x1fu) {  /* infinity or NaN */
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {  /* normal: rebias 15 -> 127 */
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {  /* signed zero */
        bits = sign;
    } else {  /* subnormal half: mantissa * 2^-24, a normal float */
        float value = (float)mantissa * 5.9604644775390625e-8f;
        return sign ? -value : value;
    }
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

/* For a positive level: the least bit pattern of a non-negative half whose value is at least
 * level. Non-negative halves up to infinity (0x7c00) order as their bit patterns do, so a half h
 * is at least level exactly when level_bits <= h <= 0x7c00 (negatives and NaNs lie above). */
static uint16_t half_level_bits(float level) {
    uint16_t lo = 0, hi = 0x7c00u;  /* half_to_float(0x7c00) is infinity, at least any level */
    while (lo < hi) {
        uint16_t mid = (uint16_t)(lo + (hi - lo) / 2);
        if (half_to_float(mid) >= level)
            hi = mid;
        else
            lo = (uint16_t)(mid + 1);
    }
    return lo;
}

/* A weighting read as float32: float32 values, or float16 ones compared by bit pattern (a
 * positive level) or converted (any other). */
typedef struct {
    const float *value;
    const uint16_t *half;
    float level;
    int by_bits;
    uint16_t least;
} Timeline;

/* The first t' >= t whose "at or above the level" differs from ``above``, else length. One tight
 * loop per kind, without a branch on the kind per value: an hour at 10 Hz is 36,000 values. */
static Py_ssize_t next_change(const Timeline *w, Py_ssize_t t, Py_ssize_t length, int above) {
    if (w->value) {
        const float *v = w->value, level = w->level;
        if (above) while (t < length && v[t] >= level) t++;
        else while (t < length && !(v[t] >= level)) t++;
    } else if (w->by_bits) {
        const uint16_t *h = w->half, least = w->least;
        if (above) while (t < length && (uint16_t)(h[t] - least) <= (uint16_t)(0x7c00u - least)) t++;
        else while (t < length && (uint16_t)(h[t] - least) > (uint16_t)(0x7c00u - least)) t++;
    } else {
        while (t < length && (half_to_float(w->half[t]) >= w->level) == above) t++;
    }
    return t;
}

static PyObject *spans(PyObject *self, PyObject *args) {
    PyObject *weighting_obj;
    double rate, duration, threshold, min_seconds;
    if (!PyArg_ParseTuple(args, "Odddd", &weighting_obj, &rate, &duration, &threshold, &min_seconds))
        return NULL;
    Py_buffer buffer;
    if (get_buffer(weighting_obj, &buffer, 1, 'w', 0, "weighting") < 0)
        return NULL;
    if (rate <= 0.0) {
        PyBuffer_Release(&buffer);
        PyErr_SetString(PyExc_ValueError, "spans: the rate must be positive");
        return NULL;
    }
    /* numpy's reference compares the weighting as float32 with a float32 threshold */
    Timeline w = {buffer.itemsize == 4 ? buffer.buf : NULL, buffer.itemsize == 2 ? buffer.buf : NULL,
                  (float)threshold, 0, 0};
    w.by_bits = w.half && w.level > 0.0f;
    w.least = w.by_bits ? half_level_bits(w.level) : 0;
    Py_ssize_t length = buffer.shape[0], t = 0;
    PyObject *out = PyList_New(0);
    while (out && t < length) {
        Py_ssize_t start = next_change(&w, t, length, 0);  /* the next run's first value */
        if (start >= length)
            break;
        t = next_change(&w, start, length, 1);  /* one past its last */
        if ((double)(t - start) / rate >= min_seconds) {
            double end = (double)t / rate;
            PyObject *span = Py_BuildValue("(dd)", round2((double)start / rate), round2(end < duration ? end : duration));
            if (!span || PyList_Append(out, span) < 0)
                Py_CLEAR(out);
            Py_XDECREF(span);
        }
    }
    PyBuffer_Release(&buffer);
    return out;
}

static PyMethodDef methods[] = {
    {"top_stats", top_stats, METH_VARARGS,
     "top_stats(products, top, min_spread, mean, spread): each row's mean and spread (floored at\n"
     "min_spread) of its top largest values, written into mean and spread (float32, one per row);\n"
     "products (float32, rows x columns) is reordered in place."},
    {"best_files", best_files, METH_VARARGS,
     "best_files(cosines, ids, query_mean, query_spread, table, exclude, want, slot_bits): a query's\n"
     "best files from its FAISS hits, [(file, score, cosine, row, slot)], by score descending then\n"
     "file id; table (files x slots x 2, float32) holds each stored slot's mean and spread;\n"
     "query_mean None scores raw cosines."},
    {"spans", spans, METH_VARARGS,
     "spans(weighting, rate, duration, threshold, min_seconds): the runs of a float32 or float16\n"
     "weighting at or above threshold lasting min_seconds or more, [(start, end)] in seconds\n"
     "rounded to 10 ms."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ranking", "A query's hot loops in C.", -1, methods};

PyMODINIT_FUNC PyInit__ranking(void) { return PyModule_Create(&module); }
