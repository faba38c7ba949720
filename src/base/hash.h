/* Non-cryptographic hashes and the splitmix64 generator, the one copy for every layer. None of
 * them resists chosen inputs: they are for tables keyed by trusted or seeded data, ids and
 * seeding, never for secrets. Pure functions; any thread. */
#ifndef SP_BASE_HASH_H
#define SP_BASE_HASH_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a, 64-bit (Fowler, Noll, Vo): the offset basis a hash starts from. */
#define SP_FNV1A64_BASIS UINT64_C(0xcbf29ce484222325)

/* FNV-1a 64 of the n bytes at p (p may be NULL when n is 0). */
uint64_t sp_fnv1a64(const void *p, size_t n);

/* Continues an FNV-1a 64 hash: h (SP_FNV1A64_BASIS or an earlier result) folded with the n bytes
 * at p, so hashing a message piece by piece gives the hash of the whole. */
uint64_t sp_fnv1a64_add(uint64_t h, const void *p, size_t n);

/* splitmix64's output function (Stafford's Mix13): a bijection of 64 bits in which every input
 * bit reaches every output bit. */
uint64_t sp_mix64(uint64_t z);

/* One step of splitmix64 (Vigna) on *state: adds the golden-ratio increment to it and returns
 * sp_mix64 of the result. Any state, 0 included, starts a full-period sequence; used to expand a
 * 64-bit seed into a larger generator's state. */
uint64_t sp_splitmix64(uint64_t *state);

#endif
