/* Rewriting weight matrices into the layout the CPU's kernels prefer (tensor/kernels.h,
 * pack_bytes/pack), once at load (internal to src/model). */
#ifndef SP_MODEL_PACK_H
#define SP_MODEL_PACK_H

#include "base/err.h"
#include "model/model.h"

/* For every matrix the forward pass multiplies (Q/K/V/O, gate/up/down, the output head) whose
 * type the kernel table packs, writes the packed form into one anonymous mapping owned by m
 * (m->packed_mem) and points the weight's `packed` at it; then tells the kernel the file pages
 * of those matrices are no longer needed (the reference forward and embedding lookups still
 * read them, faulting them back in). Nothing to do: SP_OK with no mapping. */
sp_err sp__model_pack(sp_model *m) SP_MUST_USE;

/* Releases m->packed_mem. */
void sp__model_unpack(sp_model *m);

#endif
