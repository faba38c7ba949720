#include "fault_alloc.h"

#include <execinfo.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static atomic_bool armed;
static atomic_bool hit;
static atomic_long countdown, seen;
static atomic_ulong target; // a pthread_t (an unsigned long on Linux)
static void *where[16];     // the failed allocation's call stack
static int n_where;

void sp_fault_print_where(void) {
    backtrace_symbols_fd(where, n_where, 2);
}

void sp_fault_arm(pthread_t thread, long n) {
    static bool warm;
    if (!warm) { // backtrace() loads its unwinder on first use, allocating: not while armed
        void *f[2];
        backtrace(f, 2);
        warm = true;
    }
    atomic_store(&armed, false);
    atomic_store(&target, (unsigned long)thread);
    atomic_store(&countdown, n);
    atomic_store(&seen, 0);
    atomic_store(&hit, false);
    atomic_store(&armed, true);
}

bool sp_fault_disarm(void) {
    atomic_store(&armed, false);
    return atomic_load(&hit);
}

long sp_fault_seen(void) {
    return atomic_load(&seen);
}

// True if this allocation is the one to fail.
static bool fail_now(void) {
    if (!atomic_load(&armed) || !pthread_equal(pthread_self(), (pthread_t)atomic_load(&target)))
        return false;
    atomic_fetch_add(&seen, 1);
    if (atomic_fetch_sub(&countdown, 1) == 1) {
        n_where = backtrace(where, 16);
        atomic_store(&hit, true);
        return true;
    }
    return false;
}

void *__wrap_malloc(size_t n) {
    return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size) {
    return fail_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n) {
    return fail_now() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = __wrap_malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

char *__wrap_strndup(const char *s, size_t n) {
    size_t len = strnlen(s, n);
    char *d = __wrap_malloc(len + 1);
    if (!d)
        return NULL;
    memcpy(d, s, len);
    d[len] = 0;
    return d;
}
