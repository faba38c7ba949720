/* Byte-level BPE (placeholder until the pre-tokenizer lands). */
#include <stdlib.h>

#include "tok/tok_impl.h"

sp_err sp__pretok_create(const char *pre, size_t pre_len, sp__pretok **out, sp_diag *diag) {
    (void)pre;
    (void)pre_len;
    (void)out;
    return sp_diag_set(diag, SP_ERR_UNSUPPORTED, UINT64_MAX, "BPE vocabularies not supported yet");
}

void sp__pretok_destroy(sp__pretok *p) { (void)p; }

sp_err sp__bpe_encode(const sp_vocab *v, const char *text, size_t len, sp_tokens *out) {
    (void)v;
    (void)text;
    (void)len;
    (void)out;
    return SP_ERR_UNSUPPORTED;
}
