#include "base/hash.h"

uint64_t sp_fnv1a64_add(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * UINT64_C(0x100000001b3); // the 64-bit FNV prime
    return h;
}

uint64_t sp_fnv1a64(const void *p, size_t n) {
    return sp_fnv1a64_add(SP_FNV1A64_BASIS, p, n);
}

uint64_t sp_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

uint64_t sp_splitmix64(uint64_t *state) {
    return sp_mix64(*state += UINT64_C(0x9e3779b97f4a7c15));
}
