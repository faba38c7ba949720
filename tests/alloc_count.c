#include "alloc_count.h"

#include <errno.h>
#include <stddef.h>

volatile long sp_test_n_allocs;

#if COUNT_ALLOCS
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);

void *malloc(size_t n);
void *calloc(size_t n, size_t size);
void *realloc(void *p, size_t n);
void *aligned_alloc(size_t align, size_t n);
int posix_memalign(void **out, size_t align, size_t n);

void *malloc(size_t n) {
    sp_test_n_allocs++;
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t size) {
    sp_test_n_allocs++;
    return __libc_calloc(n, size);
}
void *realloc(void *p, size_t n) {
    sp_test_n_allocs++;
    return __libc_realloc(p, n);
}
void *aligned_alloc(size_t align, size_t n) {
    sp_test_n_allocs++;
    return __libc_memalign(align, n);
}
int posix_memalign(void **out, size_t align, size_t n) {
    sp_test_n_allocs++;
    void *p = __libc_memalign(align, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}
#endif
