#include "sample/rng.h"

#include "base/hash.h"

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void sp_rng_seed(sp_rng *r, uint64_t seed) {
    uint64_t sm = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = sp_splitmix64(&sm);
    // splitmix64 is a bijection of its counter, so four consecutive outputs cannot all be zero;
    // keep the guard anyway since an all-zero state would output zeros forever.
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 1;
}

uint64_t sp_rng_next(sp_rng *r) {
    uint64_t *s = r->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double sp_rng_uniform(sp_rng *r) { return (double)(sp_rng_next(r) >> 11) * 0x1p-53; }
