/* Internals of the tokenizer module shared between its files. Not for use outside src/tok. */
#ifndef SP_TOK_TOK_IMPL_H
#define SP_TOK_TOK_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tok/tok.h"

/* Internal attribute bit (beyond llama.cpp's): the token ends generation. */
#define SP__ATTR_EOG (1u << 16)

/* ---- hashing and an open-addressing table from byte strings to uint32 values -------------- */

uint64_t sp__hash_bytes(const void *p, size_t n, uint64_t seed);

/* A slot holds a value index (UINT32_MAX = empty) and 32 bits of its hash. The caller keeps
 * the keys: `key_of(ctx, value, &ptr, &len)` returns the bytes a value is keyed by. */
typedef struct sp__map_slot {
    uint32_t hash;
    uint32_t value;
} sp__map_slot;

typedef struct sp__map {
    sp__map_slot *slots; // [mask + 1], a power of two at least twice the entries
    size_t mask;
} sp__map;

/* ---- pre-tokenizer (byte-level BPE) ------------------------------------------------------- */

typedef struct sp__pretok sp__pretok;

/* Words of a text for BPE: half-open byte ranges into the text, in order, covering it. */
typedef struct sp__spans {
    uint32_t *off; // [cap] start offsets
    uint32_t *len; // [cap] lengths
    size_t n, cap;
} sp__spans;

/* ---- the vocabulary ----------------------------------------------------------------------- */

struct sp_vocab {
    sp_vocab_type type;
    uint32_t n_tokens;

    char *text_pool;    // every token text, each followed by a NUL
    uint32_t *text_off; // [n_tokens] offset into text_pool
    uint32_t *text_len; // [n_tokens]
    float *scores;      // [n_tokens]
    uint32_t *attr;     // [n_tokens] SP_TOKEN_ATTR_* | SP__ATTR_EOG
    sp__map tok_map;    // text -> id

    char *piece_pool;    // token_to_piece(special = true) of every token, NUL after each
    uint32_t *piece_off; // [n_tokens]
    uint32_t *piece_len; // [n_tokens]
    uint32_t max_piece_len;

    sp_token byte_tok[256]; // byte -> its fallback token (SPM) or byte-level token (BPE)

    sp_token *specials; // control / user-defined / unknown tokens, longest text first
    uint32_t n_specials;

    sp_token bos, eos, eot, eom, unk, sep, pad;
    sp_token fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;
    bool add_bos, add_eos, add_space_prefix;
    bool clean_spaces;  // BPE: llama.cpp's clean_up_tokenization_spaces passes on decode
    bool ignore_merges; // BPE: a word that is a token is taken whole (llama3 pre-tokenizer)

    // BPE merges: "left right" stored as left+right without the space, split after left.
    char *merge_pool;
    uint32_t *merge_off;   // [n_merges]
    uint32_t *merge_len;   // [n_merges] bytes of left+right
    uint32_t *merge_split; // [n_merges] bytes of left
    uint32_t n_merges;
    sp__map merge_map; // (left+right, split) -> rank

    sp__pretok *pretok; // BPE pre-tokenizer (NULL for SPM)
};

/* Looks up a token by text; SP_TOKEN_NULL if absent. */
sp_token sp__vocab_lookup(const sp_vocab *v, const char *s, size_t n);

/* Rank of the merge of the adjacent strings s[0, split) and s[split, n); -1 if none. */
int32_t sp__vocab_merge_rank(const sp_vocab *v, const char *s, size_t n, size_t split);

/* Byte length of the UTF-8 sequence starting with lead byte c (1 for stray bytes), as
 * llama.cpp's unicode_len_utf8. */
static inline size_t sp__utf8_len(unsigned char c) {
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

/* Returns the offset of the first byte that is not part of valid UTF-8 (no overlong forms, no
 * surrogates, nothing above U+10FFFF), or n if s is valid. */
size_t sp__utf8_validate(const char *s, size_t n);

/* Decodes one code point of valid UTF-8 at s (n bytes available); returns its length. */
size_t sp__utf8_decode(const char *s, size_t n, uint32_t *cp);
/* Encodes cp as UTF-8 into out[4]; returns the length. */
size_t sp__utf8_encode(uint32_t cp, char *out);

/* GPT-2 byte-level mapping: the code point standing for a byte, and back (-1 if cp stands for
 * no byte). */
uint32_t sp__gpt2_byte_to_cp(uint8_t b);
int sp__gpt2_cp_to_byte(uint32_t cp);

/* Tokenizes one text fragment (no special tokens inside) with the vocabulary's algorithm,
 * appending to out. SPM: `text` is already escaped (spaces as ▁, optional prefix). */
sp_err sp__spm_encode(const sp_vocab *v, const char *text, size_t len, sp_tokens *out);
sp_err sp__bpe_encode(const sp_vocab *v, const char *text, size_t len, sp_tokens *out);

/* Settings that come with a pre-tokenizer (llama.cpp sets them by tokenizer.ggml.pre). */
typedef struct sp__pre_flags {
    bool clean_spaces, ignore_merges, add_bos;
} sp__pre_flags;

/* Compiles the pre-tokenizer named `pre` (len 0: llama.cpp's "default"; unknown: GPT-2's, with
 * a warning). */
sp_err sp__pretok_create(const char *pre, size_t pre_len, sp__pretok **out, sp__pre_flags *flags,
                         sp_diag *diag);
void sp__pretok_destroy(sp__pretok *p);
/* Splits text into words, appending to spans (cleared first). */
sp_err sp__pretok_split(const sp__pretok *p, const char *text, size_t len, sp__spans *spans);
void sp__spans_deinit(sp__spans *s);

#endif
