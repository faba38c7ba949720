/* Storage of the paged KV cache: n_blocks fixed-size blocks, each holding the keys and values
 * of block_size consecutive positions of one sequence, for every layer.
 *
 * This file owns only the memory and its layout; which block belongs to which sequence (block
 * tables, reference counts, prefix sharing) is the business of src/kv/. Within a block the
 * layout is (n_layer, 2 [K, V], n_head_kv, head), so one head's keys or values over a block are
 * contiguous; a head's keys are stored transposed, (head_dim, block_size), so the scores of a
 * query against a block's positions are vector operations over the positions; its values as
 * rows, (block_size, head_dim). Owned by the engine thread. */
#ifndef SP_MODEL_KVBUF_H
#define SP_MODEL_KVBUF_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/model.h"
#include "tensor/dtype.h"

typedef struct sp_kvbuf {
    sp_dtype type;       // SP_DTYPE_F16 (default) or SP_DTYPE_F32
    int32_t n_layer;
    int32_t n_head_kv;
    int32_t head_dim;
    int32_t block_size;  // positions per block
    int32_t n_blocks;
    size_t head_bytes;   // one head of one block: block_size * head_dim elements
    size_t block_bytes;  // one block, all layers, K and V
    uint8_t *data;       // (n_blocks, n_layer, 2, n_head_kv, head_bytes)
    struct sp_kvbuf *twin; // another buffer indexed by the same blocks (a draft model's, with
                           // as many blocks), whose blocks are copied with these; NULL: none
} sp_kvbuf;

/* Allocates the storage for n_blocks blocks once (zeroed). SP_ERR_NOMEM if it cannot;
 * SP_ERR_INVALID for a type other than F16/F32 or non-positive sizes. */
sp_err sp_kvbuf_init(sp_kvbuf *kv, const sp_hparams *hp, sp_dtype type, int32_t block_size,
                     int32_t n_blocks) SP_MUST_USE;
void sp_kvbuf_deinit(sp_kvbuf *kv);

/* Bytes one block takes for a model (to size a pool from a memory budget). */
size_t sp_kvbuf_block_bytes(const sp_hparams *hp, sp_dtype type, int32_t block_size);

/* Address of the keys (kv_idx 0) or values (1) of one head of a layer in a block. */
static inline void *sp_kvbuf_head(const sp_kvbuf *kv, int32_t block, int32_t layer, int kv_idx,
                                  int32_t head) {
    size_t off = (size_t)block * kv->block_bytes +
                 (((size_t)layer * 2 + (size_t)kv_idx) * (size_t)kv->n_head_kv + (size_t)head) *
                     kv->head_bytes;
    return kv->data + off;
}

/* Copies the whole contents of block src to block dst (copy-on-write), and in the twin. */
void sp_kvbuf_copy_block(sp_kvbuf *kv, int32_t dst, int32_t src);

#endif
