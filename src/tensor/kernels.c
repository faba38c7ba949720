/* Run-time choice of the matrix kernel tables.
 *
 * Every table is built once (pthread_once), on first use: it starts as the scalar table and
 * each instruction-set file then overwrites the entries it implements, lowest level first, so
 * an entry a faster file lacks falls back to the next one down and finally to scalar. */
#include "tensor/kernels.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"

/* Stand-ins for the K-quant kernel files until they exist. They are compiled only when the file
 * is absent: a static library never pulls in an archive member to replace a symbol that is
 * already defined, even weakly, so a stand-in beside the real file would silently hide it. */
#if defined(__x86_64__)
#if !__has_include("kquants_avx2.c")
__attribute__((weak)) void sp__kquants_avx2_init(sp_kernels *k) {
    (void)k;
}
#endif
#if !__has_include("kquants_avx512.c")
__attribute__((weak)) void sp__kquants_avx512_init(sp_kernels *k) {
    (void)k;
}
#endif
#endif

enum { ISA_SCALAR, ISA_AVX2, ISA_AVXVNNI, ISA_AVX512, ISA__COUNT };

static const char *const isa_names[ISA__COUNT] = {"scalar", "avx2", "avxvnni", "avx512"};

static sp_kernels tables[ISA__COUNT];
static bool available[ISA__COUNT];
static const sp_kernels *chosen;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static bool cpu_has(int isa) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      __builtin_cpu_supports("f16c");
    switch (isa) {
    case ISA_SCALAR:
        return true;
    case ISA_AVX2:
        return avx2;
    case ISA_AVXVNNI:
        return avx2 && __builtin_cpu_supports("avxvnni");
    case ISA_AVX512:
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni");
    default:
        return false;
    }
#else
    return isa == ISA_SCALAR;
#endif
}

static void build(int isa, sp_kernels *k) {
    memset(k, 0, sizeof *k);
    sp__kernels_scalar_init(k);
#if defined(__x86_64__)
    if (isa >= ISA_AVX2) {
        sp__kernels_avx2_init(k);
        if (isa == ISA_AVXVNNI)
            sp__kernels_avxvnni_init(k);
        sp__kquants_avx2_init(k);
    }
    if (isa == ISA_AVX512) {
        sp__kernels_avx512_init(k);
        sp__kquants_avx512_init(k);
    }
#endif
    k->isa = isa_names[isa];
}

static int find(const char *name) {
    for (int i = 0; i < ISA__COUNT; i++)
        if (!strcmp(name, isa_names[i]))
            return i;
    return -1;
}

static void init_once(void) {
    int best = ISA_SCALAR;
    for (int i = 0; i < ISA__COUNT; i++) {
        available[i] = cpu_has(i);
        if (available[i]) {
            build(i, &tables[i]);
            best = i; // the list is in order of preference
        }
    }
    int pick = best;
    const char *env = getenv("SPINDLE_ISA");
    if (env && *env && strcmp(env, "auto") != 0) {
        const int i = find(env);
        if (i < 0)
            SP_WARN("SPINDLE_ISA=%s is not one of scalar, avx2, avxvnni, avx512; using %s", env,
                    isa_names[best]);
        else if (!available[i])
            SP_WARN("SPINDLE_ISA=%s is not supported by this CPU or build; using %s", env,
                    isa_names[best]);
        else
            pick = i;
    }
    chosen = &tables[pick];
}

const sp_kernels *sp_kernels_get(void) {
    pthread_once(&once, init_once);
    return chosen;
}

const sp_kernels *sp_kernels_for(const char *isa) {
    pthread_once(&once, init_once);
    const int i = isa ? find(isa) : -1;
    return i >= 0 && available[i] ? &tables[i] : NULL;
}
