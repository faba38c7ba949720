/* Vocabularies and tokenizers: SentencePiece-style (`tokenizer.ggml.model = "llama"`) and
 * GPT-2 byte-level BPE (`"gpt2"`), matching llama.cpp's tokenization token for token.
 *
 * A vocabulary is built once (from a GGUF file or from arrays) and is immutable afterwards:
 * every function taking a `const sp_vocab *` may be called from any number of threads at once.
 * Encoding keeps its scratch memory per call; there is no global state. sp_detok streams
 * generated ids back to text without splitting UTF-8 characters.
 *
 * Token ids are int32 (`sp_token`), SP_TOKEN_NULL (-1) meaning "none". */
#ifndef SP_TOK_TOK_H
#define SP_TOK_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "gguf/gguf.h"

typedef int32_t sp_token;
#define SP_TOKEN_NULL (-1)

typedef enum sp_vocab_type {
    SP_VOCAB_SPM = 1, // "llama": score-driven merges, byte fallback, ▁ for spaces
    SP_VOCAB_BPE = 2, // "gpt2": byte-level BPE with merge ranks and a regex pre-tokenizer
} sp_vocab_type;

/* Token attributes, bit flags with llama.cpp's values (llama_token_attr). The GGUF token type
 * (tokenizer.ggml.token_type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)
 * gives the initial attribute; loading then applies llama.cpp's name-based fix-ups. */
enum {
    SP_TOKEN_ATTR_UNDEFINED = 0,
    SP_TOKEN_ATTR_UNKNOWN = 1 << 0,
    SP_TOKEN_ATTR_UNUSED = 1 << 1,
    SP_TOKEN_ATTR_NORMAL = 1 << 2,
    SP_TOKEN_ATTR_CONTROL = 1 << 3,
    SP_TOKEN_ATTR_USER_DEFINED = 1 << 4,
    SP_TOKEN_ATTR_BYTE = 1 << 5,
    SP_TOKEN_ATTR_NORMALIZED = 1 << 6,
    SP_TOKEN_ATTR_LSTRIP = 1 << 7,
    SP_TOKEN_ATTR_RSTRIP = 1 << 8,
    SP_TOKEN_ATTR_SINGLE_WORD = 1 << 9,
};

typedef struct sp_vocab sp_vocab;

/* ---- Building ------------------------------------------------------------------------------ */

/* Everything a vocabulary is made of, as borrowed arrays. sp_vocab_load() fills one from GGUF
 * metadata; tests and tools may fill one by hand. Call sp_vocab_spec_init() first: it marks
 * every optional field as absent, so that llama.cpp's defaults apply. */
typedef struct sp_vocab_spec {
    sp_str model;         // tokenizer.ggml.model: "llama" or "gpt2" (required)
    sp_str pre;           // tokenizer.ggml.pre (gpt2 only); len 0 = absent
    sp_str name;          // general.name; selects llama.cpp's per-model quirks (Phi-3)
    uint32_t n_tokens;    // > 0
    const sp_str *tokens; // [n_tokens] token texts (required)
    const float *scores;  // [n_tokens] or NULL (all 0)
    const int32_t *types; // [n_tokens] GGUF token types or NULL (all normal)
    const sp_str *merges; // [n_merges] "left right" (gpt2: required, may be empty)
    uint64_t n_merges;
    // Special token ids as stored in the file; SP_VOCAB_SPEC_ABSENT when the key is absent.
    // Out-of-range values are ignored with a warning (llama.cpp keeps its default then).
    int64_t bos_id, eos_id, eot_id, eom_id, unk_id, sep_id, pad_id;
    int64_t fim_pre_id, fim_suf_id, fim_mid_id, fim_pad_id, fim_rep_id, fim_sep_id;
    // Flags: -1 absent, 0 false, 1 true.
    int8_t add_bos, add_eos, add_space_prefix;
} sp_vocab_spec;

#define SP_VOCAB_SPEC_ABSENT INT64_MIN

void sp_vocab_spec_init(sp_vocab_spec *spec);

/* Builds a vocabulary from a spec. Everything is copied: the spec's arrays may be freed after
 * the call. Errors: SP_ERR_INVALID / SP_ERR_FORMAT (with diag) for a missing or malformed
 * field, a duplicate token text or an unknown model; SP_ERR_UNSUPPORTED for a tokenizer model
 * other than "llama"/"gpt2"; SP_ERR_NOMEM. *out is written only on success. */
sp_err sp_vocab_build(const sp_vocab_spec *spec, sp_vocab **out, sp_diag *diag) SP_MUST_USE;

/* Reads the tokenizer.ggml.* keys (and general.name) of an open GGUF file and builds the
 * vocabulary. The result copies what it needs: g may be closed afterwards. Errors as for
 * sp_vocab_build, plus SP_ERR_NOT_FOUND when tokenizer.ggml.model or .tokens is absent. */
sp_err sp_vocab_load(const sp_gguf *g, sp_vocab **out, sp_diag *diag) SP_MUST_USE;

/* Frees a vocabulary; NULL is a no-op. No encode or decode may be running on it. */
void sp_vocab_destroy(sp_vocab *v);

/* ---- Accessors (any thread) --------------------------------------------------------------- */

sp_vocab_type sp_vocab_get_type(const sp_vocab *v);
uint32_t sp_vocab_n_tokens(const sp_vocab *v);
sp_token sp_vocab_bos(const sp_vocab *v); // SP_TOKEN_NULL if none
sp_token sp_vocab_eos(const sp_vocab *v);
sp_token sp_vocab_eot(const sp_vocab *v);
sp_token sp_vocab_unk(const sp_vocab *v);
sp_token sp_vocab_pad(const sp_vocab *v);
bool sp_vocab_add_bos(const sp_vocab *v); // encode(add_special) prepends BOS
bool sp_vocab_add_eos(const sp_vocab *v); // encode(add_special) appends EOS
bool sp_vocab_add_space_prefix(const sp_vocab *v);
/* End of generation: EOS, EOT, EOM and the tokens llama.cpp recognizes by their text
 * (<|eot_id|>, <|im_end|>, <|end|>, <|endoftext|>, <end_of_turn>, ...). False for bad ids. */
bool sp_vocab_is_eog(const sp_vocab *v, sp_token id);
bool sp_vocab_is_control(const sp_vocab *v, sp_token id); // false for bad ids
/* Attribute bits (SP_TOKEN_ATTR_*) of a token; 0 for an id out of range. */
uint32_t sp_vocab_token_attr(const sp_vocab *v, sp_token id);
float sp_vocab_token_score(const sp_vocab *v, sp_token id); // 0 for bad ids
/* The stored text of a token (e.g. "▁the", "<0x0A>", "Ġthe"), NUL-terminated, valid while v
 * lives; {NULL, 0} for an id out of range. */
sp_str sp_vocab_token_text(const sp_vocab *v, sp_token id);
/* The id of a token text (exact match); SP_TOKEN_NULL if absent. */
sp_token sp_vocab_find(const sp_vocab *v, const char *text, size_t len);

/* ---- Encoding ------------------------------------------------------------------------------ */

/* A growable array of token ids, owned by its user (one thread at a time). */
typedef struct sp_tokens {
    sp_token *ids; // [cap]
    size_t n;
    size_t cap;
} sp_tokens;

void sp_tokens_init(sp_tokens *t);   // empty, no allocation
void sp_tokens_deinit(sp_tokens *t); // frees; t is empty afterwards
sp_err sp_tokens_push(sp_tokens *t, sp_token id) SP_MUST_USE;
sp_err sp_tokens_reserve(sp_tokens *t, size_t n_total) SP_MUST_USE;

/* Tokenizes len bytes of UTF-8 text (no NUL needed; NUL bytes are ordinary characters) and
 * APPENDS the ids to out, exactly as llama.cpp's llama_tokenize(text, add_special,
 * parse_special):
 *   add_special    add BOS / EOS as the vocabulary asks (sp_vocab_add_bos/eos);
 *   parse_special  text equal to a control or unknown-type token becomes that token
 *                  (user-defined tokens are always matched, as in llama.cpp).
 * Characters that a vocabulary without byte fallback cannot represent become its unknown
 * token (consecutive ones fused, as Hugging Face's fuse_unk does), never an error.
 * Errors: SP_ERR_UTF8 (diag offset = first bad byte) for invalid UTF-8; SP_ERR_NOMEM;
 * SP_ERR_LIMIT if a BPE split regex hits PCRE2's match limits (not seen in practice).
 * On error out->n is unchanged (its capacity may have grown). Any thread. */
sp_err sp_tok_encode(const sp_vocab *v, const char *text, size_t len, bool add_special,
                     bool parse_special, sp_tokens *out, sp_diag *diag) SP_MUST_USE;

/* Tokenizes text as the continuation of earlier text (a model's output, a predicted output):
 * as sp_tok_encode without special tokens, and without the space a SentencePiece vocabulary
 * puts before a text's first word (its space prefix, which belongs to the start of a prompt):
 * the text of a generated token sequence gives that sequence back when it is the canonical
 * tokenization. Same errors. */
sp_err sp_tok_encode_continuation(const sp_vocab *v, const char *text, size_t len, sp_tokens *out,
                                  sp_diag *diag) SP_MUST_USE;

/* ---- Decoding ------------------------------------------------------------------------------ */

/* The bytes of one token, as llama.cpp's llama_token_to_piece(id, lstrip = 0, special):
 * byte-fallback tokens give their byte, ▁ becomes a space (SPM), byte-level BPE text is mapped
 * back to bytes; control and unknown-type tokens give nothing unless `special`. Copies
 * min(length, cap) bytes into buf (no NUL) and returns the full length. Returns 0 for an id
 * out of range. A piece may be part of a UTF-8 sequence. */
size_t sp_tok_piece(const sp_vocab *v, sp_token id, bool special, char *buf, size_t cap);

/* The same piece as a view into the vocabulary (valid while v lives). */
sp_str sp_tok_piece_ref(const sp_vocab *v, sp_token id, bool special);

enum {
    /* Render control / unknown-type tokens as their text (llama.cpp "unparse_special"). */
    SP_DECODE_SPECIAL = 1 << 0,
    /* Drop a leading BOS and trailing EOS when the vocabulary adds them (llama.cpp
     * "remove_special"). */
    SP_DECODE_REMOVE_SPECIAL = 1 << 1,
};

/* Detokenizes n ids as llama.cpp's llama_detokenize(): pieces concatenated; with
 * add_space_prefix the leading space of the first piece is dropped (unless the first token is a
 * removed BOS); BPE vocabularies with clean_up_tokenization_spaces get llama.cpp's clean-up
 * passes. The result is a heap buffer, NUL-terminated, that the caller frees; it may contain
 * invalid UTF-8 when the ids end inside a character. Errors: SP_ERR_RANGE (diag offset = index
 * of the bad id) for an id out of range; SP_ERR_NOMEM. Any thread. */
sp_err sp_tok_decode(const sp_vocab *v, const sp_token *ids, size_t n, unsigned flags, char **out,
                     size_t *out_len, sp_diag *diag) SP_MUST_USE;

/* ---- Streaming ---------------------------------------------------------------------------- */

enum {
    /* sp_detok: drop the leading space of the first piece when the vocabulary adds a space
     * prefix (as sp_tok_decode does); off by default, as for llama-server's streamed pieces,
     * which continue a prompt. */
    SP_DETOK_STRIP_SPACE = 1 << 2,
    /* sp_detok: replace each maximal invalid UTF-8 subpart by U+FFFD (what llama-server's JSON
     * output does), so that every chunk is valid UTF-8. Off: invalid bytes pass through. */
    SP_DETOK_REPLACE_INVALID = 1 << 3,
};

/* Incremental detokenizer for streaming: feed ids one by one and get the bytes that became
 * complete. A chunk never ends inside a UTF-8 character: an incomplete character (byte-fallback
 * or byte-level BPE tokens split it) is held until the next id completes or breaks it. Control
 * tokens are hidden unless SP_DECODE_SPECIAL. No clean-up of spaces (llama.cpp streams pieces
 * as they are). Owned by one thread; the vocabulary must outlive it. */
typedef struct sp_detok {
    const sp_vocab *v;
    unsigned flags;  // SP_DECODE_SPECIAL | SP_DETOK_*
    bool first;      // no id pushed yet
    uint8_t held[4]; // the start of an incomplete UTF-8 character
    uint32_t n_held;
    char *buf; // [cap] output of the last push
    size_t cap;
} sp_detok;

/* Allocates the output buffer once (sized for the vocabulary's longest piece): pushing never
 * allocates. SP_ERR_NOMEM. */
sp_err sp_detok_init(sp_detok *d, const sp_vocab *v, unsigned flags) SP_MUST_USE;
void sp_detok_deinit(sp_detok *d);

/* Feeds one id; *out is set to the bytes now complete (possibly none), a view valid until the
 * next call on d. SP_ERR_RANGE for an id out of range (nothing changes then). */
sp_err sp_detok_push(sp_detok *d, sp_token id, sp_str *out) SP_MUST_USE;

/* Ends the stream: returns the held bytes of an incomplete character (as U+FFFD with
 * SP_DETOK_REPLACE_INVALID) and resets d for a new stream. The view is valid until the next
 * call on d. */
sp_str sp_detok_flush(sp_detok *d);

#endif
