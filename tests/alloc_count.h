/* A counting malloc for tests that prove a code path allocates nothing.
 *
 * alloc_count.c replaces glibc's malloc family for the test executable that uses
 * sp_test_n_allocs (the object is linked in only then) and forwards to glibc's own allocator
 * (__libc_malloc and friends), which glibc documents as a supported way to replace malloc.
 * AddressSanitizer and ThreadSanitizer interpose malloc themselves, so under them nothing is
 * replaced, COUNT_ALLOCS is 0, and the tests skip their counting assertions. */
#ifndef SP_TESTS_ALLOC_COUNT_H
#define SP_TESTS_ALLOC_COUNT_H

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COUNT_ALLOCS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define COUNT_ALLOCS 0
#endif
#endif
#ifndef COUNT_ALLOCS
#define COUNT_ALLOCS 1
#endif

/* Calls of malloc, calloc, realloc, aligned_alloc and posix_memalign so far. */
extern volatile long sp_test_n_allocs;

#endif
