/* What the two modes of `spindle grammar-bench` share (grammarbench.c: the command, the text
 * mode and the walk; schemabench.c: the schema set): a vocabulary with its byte trie and the
 * mask cache, a walk of a text through a matcher token by token that times what the engine may
 * do at each token, and the rows of the report. Main thread only. */
#ifndef SP_APP_GRAMMARBENCH_H
#define SP_APP_GRAMMARBENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "gguf/gguf.h"
#include "grammar/grammar.h"
#include "grammar/maskcache.h"
#include "grammar/matcher.h"
#include "grammar/trie.h"
#include "tok/tok.h"

/* The times taken per token: the check of the token, the full mask, the mask through the cache. */
enum { SP__GB_CHECK, SP__GB_FULL, SP__GB_CACHED, SP__GB_N_TIMES };

typedef struct sp__gbench {
    sp_gguf *gguf;
    sp_vocab *vocab;
    int32_t n_vocab;
    const uint8_t **bytes; // (n_vocab) each token's bytes, borrowed from the vocabulary
    uint32_t *len;         // (n_vocab)
    sp_token_trie *trie;
    sp_mask_cache *cache; // one for every walk, as the engine shares one across requests
    uint32_t *mask;       // ((n_vocab + 31) / 32) the walk's scratch
    double trie_ms;       // the time the trie took to build
    bool masks;           // time the masks (false: the check of each token only)
    // One entry per token taken by a grammar, in walk order:
    double *us[SP__GB_N_TIMES]; // (cap) microseconds
    uint8_t *hit;               // (cap) the mask came from the cache
    uint8_t *tag;               // (cap) the tag of the walk that took the token
    size_t n, cap;
} sp__gbench;

/* One walk of a text. */
typedef struct sp__gb_walk {
    size_t n_tokens;   // the text's tokens
    size_t n_taken;    // those the grammar took, up to the first it rejects
    size_t n_bytes;    // the bytes of the tokens taken
    size_t n_unmasked; // tokens taken that a mask left out (a matcher bug)
    bool complete;     // the grammar may end after the tokens taken
} sp__gb_walk;

/* Loads the vocabulary of the GGUF file at model and builds its trie and a mask cache of the
 * engine's size. On failure b is left empty (nothing to close) and diag says why. */
SP_MUST_USE sp_err sp__gbench_open(sp__gbench *b, const char *model, bool masks, sp_diag *diag);
void sp__gbench_close(sp__gbench *b);

/* Tokenizes text[len] as a model's output and walks it through m from its start: at each token
 * the check (and, with masks, the full mask and the mask through the cache) is timed and
 * recorded under tag, and the token is accepted if the grammar takes it; the walk stops at the
 * first token it rejects. SP_ERR_NOMEM, a tokenizer's error (diag), the matcher's errors. */
SP_MUST_USE sp_err sp__gbench_walk(sp__gbench *b, sp_matcher *m, const char *text, size_t len,
                                   uint8_t tag, sp__gb_walk *out, sp_diag *diag);

/* Compiles src with compile `times` times (1 to 64); the last grammar into *out and the median
 * time into *us. On failure nothing is kept and diag says why. */
typedef sp_err (*sp__gb_compile_fn)(const void *src, sp_grammar **out, sp_diag *diag);
SP_MUST_USE sp_err sp__gbench_compile(sp__gb_compile_fn compile, const void *src, int times,
                                      sp_grammar **out, double *us, sp_diag *diag);

/* Report rows: a header, then p50, p99 and max of us[n] (sorted in place; n > 0). */
void sp__gbench_print_header(const char *title);
void sp__gbench_print_row(const char *what, double *us, size_t n);

/* The rows of every token recorded: the check, and with masks the full mask and the cache. */
void sp__gbench_print_rows(sp__gbench *b);

/* The schema-set mode (schemabench.c): every schema of the JSON Lines file at path compiled
 * and each of its instances walked. Returns the exit status: 0, or 1 if a schema does not
 * compile, an instance is rejected or the input cannot be read. */
int sp__gbench_schemas(sp__gbench *b, const char *path);

#endif
