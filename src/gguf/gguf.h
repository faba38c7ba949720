/* GGUF reader (v2 and v3, little-endian) and writer.
 *
 * The reader maps the file read-only and validates every count, length, offset and size
 * against the file size with overflow-checked arithmetic before anything is dereferenced, so
 * a truncated or hostile file yields an error with a message and a byte offset, never a crash
 * or an out-of-bounds read. Strings and tensor data are views into the mapping: they stay valid
 * until sp_gguf_close(). A parsed sp_gguf is immutable and may be read from any thread.
 *
 * Parse errors: SP_ERR_TRUNCATED when a fixed-size field runs past the end of the image;
 * SP_ERR_RANGE when a count or length cannot fit in the bytes left, a tensor's data lies past
 * the end, or arithmetic overflows; SP_ERR_FORMAT for a bad magic, unknown metadata type,
 * duplicate key or tensor name, bad n_dims or extent, misaligned or overlapping tensor data,
 * or a general.alignment that is not u32; SP_ERR_RANGE for an alignment that is not a power of
 * two; SP_ERR_UNSUPPORTED for versions other than 2 and 3, big-endian files, nested arrays and
 * unknown tensor types. diag->offset is the file offset of the offending field and
 * diag->param the key or tensor name being read, when there is one. */
#ifndef SP_GGUF_GGUF_H
#define SP_GGUF_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/str.h" // sp_str: keys, string values and tensor names are views into the mapping
#include "tensor/dtype.h"

#define SP_GGUF_MAGIC 0x46554747u // "GGUF" little-endian
#define SP_GGUF_DEFAULT_ALIGNMENT 32
#define SP_GGUF_MAX_DIMS 4

typedef enum sp_gguf_type {
    SP_GGUF_UINT8 = 0,
    SP_GGUF_INT8 = 1,
    SP_GGUF_UINT16 = 2,
    SP_GGUF_INT16 = 3,
    SP_GGUF_UINT32 = 4,
    SP_GGUF_INT32 = 5,
    SP_GGUF_FLOAT32 = 6,
    SP_GGUF_BOOL = 7,
    SP_GGUF_STRING = 8,
    SP_GGUF_ARRAY = 9,
    SP_GGUF_UINT64 = 10,
    SP_GGUF_INT64 = 11,
    SP_GGUF_FLOAT64 = 12,
    SP_GGUF_TYPE__COUNT
} sp_gguf_type;

typedef struct sp_gguf_kv {
    sp_str key;
    sp_gguf_type type;     // value type; SP_GGUF_ARRAY for arrays
    sp_gguf_type arr_type; // element type when type == SP_GGUF_ARRAY
    uint64_t arr_n;        // element count when type == SP_GGUF_ARRAY
    const uint8_t *value;  // raw little-endian value (strings: the u64 length prefix; arrays:
                           // the first element)
    uint64_t offset;       // file offset of `value`
} sp_gguf_kv;

typedef struct sp_gguf_tensor {
    sp_str name;
    uint32_t n_dims;
    int64_t ne[SP_GGUF_MAX_DIMS]; // extents, ne[0] innermost (contiguous); unused dims are 1
    sp_dtype type;
    uint64_t offset;  // relative to the start of the data section
    uint64_t n_bytes; // validated: the data lies inside the file
    const void *data; // view into the mapping
} sp_gguf_tensor;

typedef struct sp_gguf sp_gguf;

/* Maps and parses a GGUF file. On failure returns an error, fills diag (message and file
 * offset) and leaves *out untouched. */
sp_err sp_gguf_open(const char *path, sp_gguf **out, sp_diag *diag) SP_MUST_USE;

/* Parses a GGUF image already in memory. The buffer is borrowed: it must outlive the result
 * and stay unchanged. */
sp_err sp_gguf_parse(const void *buf, size_t n_bytes, sp_gguf **out, sp_diag *diag) SP_MUST_USE;

/* Unmaps and frees; NULL is a no-op. Invalidates every view taken from g. */
void sp_gguf_close(sp_gguf *g);

uint32_t sp_gguf_version(const sp_gguf *g);
uint64_t sp_gguf_alignment(const sp_gguf *g);
/* File offset of the tensor data section (the aligned end of the tensor infos). A file without
 * tensors may end before it, so then it can exceed sp_gguf_file_size(). */
uint64_t sp_gguf_data_offset(const sp_gguf *g);
uint64_t sp_gguf_file_size(const sp_gguf *g);

uint64_t sp_gguf_n_kv(const sp_gguf *g);
const sp_gguf_kv *sp_gguf_kv_at(const sp_gguf *g, uint64_t i);
/* Finds a key (exact match); NULL if absent. */
const sp_gguf_kv *sp_gguf_find(const sp_gguf *g, const char *key);

/* Typed getters. They return SP_ERR_NOT_FOUND when the key is absent and SP_ERR_FORMAT (with
 * diag) when its type does not fit: get_int accepts every integer type (and bool), checking
 * the value fits in int64; get_float accepts FLOAT32, FLOAT64 and integers. */
sp_err sp_gguf_get_int(const sp_gguf *g, const char *key, int64_t *out, sp_diag *diag) SP_MUST_USE;
sp_err sp_gguf_get_float(const sp_gguf *g, const char *key, double *out, sp_diag *diag) SP_MUST_USE;
sp_err sp_gguf_get_bool(const sp_gguf *g, const char *key, bool *out, sp_diag *diag) SP_MUST_USE;
sp_err sp_gguf_get_str(const sp_gguf *g, const char *key, sp_str *out, sp_diag *diag) SP_MUST_USE;

/* Array element access (kv->type must be SP_GGUF_ARRAY; i < kv->arr_n). Strings in arrays are
 * indexed at parse time, so sp_gguf_arr_str is O(1). Numeric getters convert like the scalar
 * getters and return SP_ERR_FORMAT if the element type does not fit. They return SP_ERR_RANGE
 * when i >= kv->arr_n; sp_gguf_arr_str returns SP_ERR_INVALID when kv is not an entry of g. */
sp_err sp_gguf_arr_str(const sp_gguf *g, const sp_gguf_kv *kv, uint64_t i, sp_str *out) SP_MUST_USE;
sp_err sp_gguf_arr_int(const sp_gguf_kv *kv, uint64_t i, int64_t *out) SP_MUST_USE;
sp_err sp_gguf_arr_float(const sp_gguf_kv *kv, uint64_t i, double *out) SP_MUST_USE;

uint64_t sp_gguf_n_tensors(const sp_gguf *g);
const sp_gguf_tensor *sp_gguf_tensor_at(const sp_gguf *g, uint64_t i);
/* Finds a tensor by name; NULL if absent. */
const sp_gguf_tensor *sp_gguf_find_tensor(const sp_gguf *g, const char *name);

/* Short name of a metadata type ("u32", "string", ...; "unknown" when out of range) and the
 * size of a fixed-size type in bytes (0 for STRING, ARRAY and unknown types). */
const char *sp_gguf_type_name(sp_gguf_type t);
size_t sp_gguf_type_size(sp_gguf_type t);

/* ---- Writer ----------------------------------------------------------------------------
 * Builds a GGUF v3 file in memory (metadata and tensor infos) and streams tensor data to disk.
 * Usage: create, add metadata and tensors (data is copied or borrowed as documented), then
 * sp_gguf_writer_save(). Single-threaded. */
typedef struct sp_gguf_writer sp_gguf_writer;

sp_err sp_gguf_writer_create(sp_gguf_writer **out) SP_MUST_USE;
void sp_gguf_writer_destroy(sp_gguf_writer *w);

/* Metadata setters; keys and strings are copied. Setting a key twice replaces the value. */
sp_err sp_gguf_writer_set_u32(sp_gguf_writer *w, const char *key, uint32_t v) SP_MUST_USE;
sp_err sp_gguf_writer_set_i32(sp_gguf_writer *w, const char *key, int32_t v) SP_MUST_USE;
sp_err sp_gguf_writer_set_u64(sp_gguf_writer *w, const char *key, uint64_t v) SP_MUST_USE;
sp_err sp_gguf_writer_set_f32(sp_gguf_writer *w, const char *key, float v) SP_MUST_USE;
sp_err sp_gguf_writer_set_bool(sp_gguf_writer *w, const char *key, bool v) SP_MUST_USE;
sp_err sp_gguf_writer_set_str(sp_gguf_writer *w, const char *key, const char *v) SP_MUST_USE;
/* A raw typed value (any scalar type, or STRING with `value` an sp_str*). */
sp_err sp_gguf_writer_set_raw(sp_gguf_writer *w, const char *key, sp_gguf_type type,
                              const void *value) SP_MUST_USE;
/* An array of n numeric elements of type elem (raw little-endian values, copied) or, for
 * elem == SP_GGUF_STRING, of n sp_str (copied). */
sp_err sp_gguf_writer_set_arr(sp_gguf_writer *w, const char *key, sp_gguf_type elem,
                              const void *elems, uint64_t n) SP_MUST_USE;
/* Copies every key/value of g except those for which skip(key) returns true (skip may be
 * NULL). Used to take a vocabulary from another file. */
sp_err sp_gguf_writer_copy_kv(sp_gguf_writer *w, const sp_gguf *g,
                              bool (*skip)(sp_str key, void *ctx), void *ctx) SP_MUST_USE;

/* Adds a tensor. data (n_bytes = row bytes * rows) is borrowed until save returns. ne has
 * n_dims extents, ne[0] innermost. */
sp_err sp_gguf_writer_add_tensor(sp_gguf_writer *w, const char *name, sp_dtype type,
                                 uint32_t n_dims, const int64_t *ne, const void *data,
                                 uint64_t n_bytes) SP_MUST_USE;

/* Sets general.alignment for the data section (default 32; a power of two). */
sp_err sp_gguf_writer_set_alignment(sp_gguf_writer *w, uint32_t alignment) SP_MUST_USE;

/* Writes the file (to a temporary name, then renames). */
sp_err sp_gguf_writer_save(sp_gguf_writer *w, const char *path, sp_diag *diag) SP_MUST_USE;

/* Serializes into a heap buffer the caller frees (used by tests to build hostile files). */
sp_err sp_gguf_writer_to_buffer(sp_gguf_writer *w, uint8_t **out, size_t *out_len) SP_MUST_USE;

#endif
