/* Allocation failure injection for tests of out-of-memory paths.
 *
 * A test executable linked with fault_alloc.c and the linker options
 *   -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup
 * has every call of those functions in its own objects and in the project's static libraries
 * routed through the wrappers below (the C library's and shared libraries' internal calls are
 * not: jansson's allocations are not failed, since its lexer drops characters silently when
 * an allocation fails, which would test jansson rather than the project). This works under
 * AddressSanitizer,
 * whose allocator the wrappers call in turn, so leaks on failure paths are still caught.
 *
 * sp_fault_arm(thread, n) makes the n-th allocation made on `thread` from now on fail (return
 * NULL); allocations on other threads are never failed. */
#ifndef SP_TESTS_FAULT_ALLOC_H
#define SP_TESTS_FAULT_ALLOC_H

#include <pthread.h>
#include <stdbool.h>

/* Arms the fault: the n-th (n >= 1) allocation on `thread` from now on fails. */
void sp_fault_arm(pthread_t thread, long n);

/* Disarms it; returns true if the armed allocation was reached (and failed). */
bool sp_fault_disarm(void);

/* Prints the call stack of the allocation that failed (to stderr). */
void sp_fault_print_where(void);

/* Allocations counted on the armed thread since sp_fault_arm. */
long sp_fault_seen(void);

#endif
