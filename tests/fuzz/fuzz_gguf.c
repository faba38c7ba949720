/* libFuzzer target for the GGUF reader: parses the input and, when it is accepted, touches
 * every metadata value, array element and tensor byte range the reader vouched for. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gguf/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;

static void touch(const void *p, uint64_t n) {
    const uint8_t *b = p;
    uint8_t acc = 0;
    for (uint64_t i = 0; i < n; i++)
        acc ^= b[i];
    sink ^= acc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sp_gguf *g = NULL;
    sp_diag diag;
    if (sp_gguf_parse(data, size, &g, &diag) != SP_OK)
        return 0;
    for (uint64_t i = 0; i < sp_gguf_n_kv(g); i++) {
        const sp_gguf_kv *kv = sp_gguf_kv_at(g, i);
        touch(kv->key.ptr, kv->key.len);
        char key[256];
        size_t n = kv->key.len < sizeof key - 1 ? (size_t)kv->key.len : sizeof key - 1;
        memcpy(key, kv->key.ptr, n);
        key[n] = '\0';
        int64_t iv;
        double fv;
        bool bv;
        sp_str s;
        if (sp_gguf_get_int(g, key, &iv, &diag) == SP_OK)
            sink ^= (uint8_t)iv;
        if (sp_gguf_get_float(g, key, &fv, &diag) == SP_OK)
            sink ^= (uint8_t)(fv != 0);
        if (sp_gguf_get_bool(g, key, &bv, &diag) == SP_OK)
            sink ^= (uint8_t)bv;
        if (sp_gguf_get_str(g, key, &s, &diag) == SP_OK)
            touch(s.ptr, s.len);
        if (kv->type != SP_GGUF_ARRAY)
            continue;
        for (uint64_t j = 0; j < kv->arr_n; j++) {
            if (kv->arr_type == SP_GGUF_STRING) {
                if (sp_gguf_arr_str(g, kv, j, &s) == SP_OK)
                    touch(s.ptr, s.len);
            } else {
                if (sp_gguf_arr_int(kv, j, &iv) == SP_OK)
                    sink ^= (uint8_t)iv;
                if (sp_gguf_arr_float(kv, j, &fv) == SP_OK)
                    sink ^= (uint8_t)(fv != 0);
            }
        }
    }
    for (uint64_t i = 0; i < sp_gguf_n_tensors(g); i++) {
        const sp_gguf_tensor *t = sp_gguf_tensor_at(g, i);
        touch(t->name.ptr, t->name.len);
        touch(t->data, t->n_bytes);
    }
    sp_gguf_close(g);
    return 0;
}
