#include "model/kvbuf.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

size_t sp_kvbuf_block_bytes(const sp_hparams *hp, sp_dtype type, int32_t block_size) {
    size_t el = type == SP_DTYPE_F32 ? 4 : 2;
    return (size_t)hp->n_layer * 2 * (size_t)hp->n_head_kv * (size_t)block_size *
           (size_t)hp->head_dim * el;
}

sp_err sp_kvbuf_init(sp_kvbuf *kv, const sp_hparams *hp, sp_dtype type, int32_t block_size,
                     int32_t n_blocks) {
    if ((type != SP_DTYPE_F16 && type != SP_DTYPE_F32) || block_size <= 0 || n_blocks <= 0)
        return SP_ERR_INVALID;
    size_t el = type == SP_DTYPE_F32 ? 4 : 2;
    size_t block_bytes = sp_kvbuf_block_bytes(hp, type, block_size);
    size_t total;
    if (!sp_mul_size(block_bytes, (size_t)n_blocks, &total))
        return SP_ERR_NOMEM;
    uint8_t *data = calloc(1, total);
    if (!data)
        return SP_ERR_NOMEM;
    *kv = (sp_kvbuf){
        .type = type,
        .n_layer = hp->n_layer,
        .n_head_kv = hp->n_head_kv,
        .head_dim = hp->head_dim,
        .block_size = block_size,
        .n_blocks = n_blocks,
        .head_bytes = (size_t)block_size * (size_t)hp->head_dim * el,
        .block_bytes = block_bytes,
        .data = data,
    };
    return SP_OK;
}

void sp_kvbuf_deinit(sp_kvbuf *kv) {
    if (!kv)
        return;
    free(kv->data);
    kv->data = NULL;
}

void sp_kvbuf_copy_block(sp_kvbuf *kv, int32_t dst, int32_t src) {
    SP_ASSERT(dst >= 0 && dst < kv->n_blocks && src >= 0 && src < kv->n_blocks);
    if (dst != src)
        memcpy(kv->data + (size_t)dst * kv->block_bytes, kv->data + (size_t)src * kv->block_bytes,
               kv->block_bytes);
    if (kv->twin)
        sp_kvbuf_copy_block(kv->twin, dst, src);
}
