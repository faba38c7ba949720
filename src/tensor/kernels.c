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

enum { ISA_SCALAR, ISA_AVX2, ISA_AVXVNNI, ISA_AVX512, ISA_AMX, ISA__COUNT };

static const char *const isa_names[ISA__COUNT] = {"scalar", "avx2", "avxvnni", "avx512", "amx"};

static sp_kernels tables[ISA__COUNT];
static bool available[ISA__COUNT];
static const sp_kernels *chosen;
static pthread_once_t once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The CPU's features from CPUID (not __builtin_cpu_supports, whose feature names differ between
 * compilers), and whether the OS saves the AVX and AVX-512 register state (XGETBV). */
typedef struct cpu_features {
    bool avx2, fma, f16c, avxvnni, avx512f, avx512bw, avx512vl, avx512dq, avx512vnni;
    bool amx_int8; // AMX-TILE and AMX-INT8, with the OS saving the tile state
} cpu_features;

/* Linux hands out the AMX tile data state (XFEATURE 18) only to processes that ask for it. */
static bool amx_permitted(void) {
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
#if defined(SYS_arch_prctl)
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return false;
#endif
}

static cpu_features cpu_detect(void) {
    cpu_features f = {0};
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return f;
    const bool osxsave = c >> 27 & 1, fma = c >> 12 & 1, f16c = c >> 29 & 1;
    if (!osxsave)
        return f;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    const bool os_avx = (lo & 0x6) == 0x6, os_avx512 = (lo & 0xe6) == 0xe6;
    if (!os_avx || !__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return f;
    f.avx2 = b >> 5 & 1;
    f.fma = fma;
    f.f16c = f16c;
    if (os_avx512) {
        f.avx512f = b >> 16 & 1;
        f.avx512dq = b >> 17 & 1;
        f.avx512bw = b >> 30 & 1;
        f.avx512vl = b >> 31 & 1;
        f.avx512vnni = c >> 11 & 1;
    }
    const bool os_amx = (lo >> 17 & 3) == 3; // XTILECFG and XTILEDATA
    f.amx_int8 = os_amx && (d >> 24 & 1) && (d >> 25 & 1);
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d))
        f.avxvnni = a >> 4 & 1;
    return f;
}
#endif

static bool cpu_has(int isa) {
#if defined(__x86_64__)
    const cpu_features f = cpu_detect();
    const bool avx2 = f.avx2 && f.fma && f.f16c;
    switch (isa) {
    case ISA_SCALAR:
        return true;
    case ISA_AVX2:
        return avx2;
    case ISA_AVXVNNI:
        return avx2 && f.avxvnni;
    case ISA_AVX512:
        return avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni;
    case ISA_AMX:
        return cpu_has(ISA_AVX512) && f.amx_int8 && amx_permitted();
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
        sp__packed_avx2_init(k);
        if (isa == ISA_AVXVNNI)
            sp__packed_avxvnni_init(k);
        sp__packed_k_avx2_init(k, isa == ISA_AVXVNNI);
    }
    if (isa >= ISA_AVX512) {
        sp__kernels_avx512_init(k);
        sp__packed_avx512_init(k);
        sp__packed_k_avx512_init(k);
    }
    if (isa == ISA_AMX)
        sp__kernels_amx_init(k);
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
            SP_WARN("SPINDLE_ISA=%s is not one of scalar, avx2, avxvnni, avx512, amx; using %s",
                    env, isa_names[best]);
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
