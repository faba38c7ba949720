/* Small helpers: overflow-checked arithmetic, alignment, min/max, monotonic time. */
#ifndef SP_BASE_UTIL_H
#define SP_BASE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SP_MAX(a, b) ((a) > (b) ? (a) : (b))
#define SP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* X(1) X(2) ... X(n): the cases of a switch over a small count that a kernel turns into a
 * compile-time constant (each case its own unrolled code). */
#define SP_EACH_4(X) X(1) X(2) X(3) X(4)
#define SP_EACH_8(X) SP_EACH_4(X) X(5) X(6) X(7) X(8)
#define SP_EACH_16(X) SP_EACH_8(X) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16)

/* Overflow-checked arithmetic: return false (and leave *out unspecified) on overflow. */
static inline bool sp_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
static inline bool sp_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool sp_mul_size(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

/* Rounds x up to a multiple of align (a power of two or any positive value); false on
 * overflow. */
static inline bool sp_align_up_u64(uint64_t x, uint64_t align, uint64_t *out) {
    uint64_t r = x % align;
    if (r == 0) {
        *out = x;
        return true;
    }
    return sp_add_u64(x, align - r, out);
}

/* Monotonic clock in microseconds / nanoseconds. */
int64_t sp_time_us(void);
int64_t sp_time_ns(void);

/* Grows the heap array *p of *cap elements of `size` bytes to hold at least `need` (doubling,
 * from `first` when empty), keeping its contents. Returns false, changing nothing, when out of
 * memory or when the capacity would pass UINT32_MAX / 2. */
bool sp_grow(void **p, uint32_t *cap, uint64_t need, size_t size, uint32_t first);

/* Reads a whole file into a NUL-terminated heap buffer (*out_len excludes the NUL).
 * Returns 0 on success, -errno on failure. The caller frees *out. */
int sp_read_file(const char *path, char **out, size_t *out_len);

#endif
