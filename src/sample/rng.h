/* Per-request pseudo-random numbers: xoshiro256** (Blackman and Vigna, 2018) seeded through
 * splitmix64.
 *
 * An sp_rng is a plain value with no global state: two generators seeded alike produce the same
 * sequence on every platform. Not thread-safe; each one belongs to the thread that owns the
 * request (the engine loop). Not for cryptography. */
#ifndef SP_SAMPLE_RNG_H
#define SP_SAMPLE_RNG_H

#include <stdint.h>

typedef struct sp_rng {
    uint64_t s[4]; // xoshiro256** state; never all zero once seeded
} sp_rng;

/* Seeds r from a 64-bit seed: the four state words are the first four splitmix64 outputs for
 * `seed` (sp_splitmix64 of base/hash.h). Every seed, 0 included, gives a valid (non-zero) state. */
void sp_rng_seed(sp_rng *r, uint64_t seed);

/* Next 64 random bits (the xoshiro256** output function). */
uint64_t sp_rng_next(sp_rng *r);

/* Uniform double in [0, 1) with 53 random bits (consumes one sp_rng_next). */
double sp_rng_uniform(sp_rng *r);

#endif
