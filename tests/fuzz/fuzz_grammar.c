/* libFuzzer target for grammars: the input is GBNF text, then (after a NUL byte, if any) bytes
 * of output. A grammar that compiles gets a matcher, which takes the output byte by byte until
 * it rejects one, computing the allowed-token mask of a small vocabulary at every step. Any
 * outcome but a crash, a sanitizer report, a leak or a hang is fine: errors and the matcher's
 * limits (SP_ERR_LIMIT) are expected answers to hostile grammars.
 *
 * The seeds are in tests/fuzz/corpus/fuzz_grammar. Fuzz a copy of the corpus:
 *
 *     cp -r tests/fuzz/corpus/fuzz_grammar /tmp/corpus
 *     UBSAN_OPTIONS=halt_on_error=1 build-fuzz/tests/fuzz_grammar -max_total_time=120 /tmp/corpus
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "grammar/grammar.h"
#include "grammar/matcher.h"
#include "grammar/trie.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sp_token_trie *trie; // every byte, and some longer tokens (built once)

static void make_trie(void) {
    static const char *words[] = {"{\"", "\":",      "\", \"",       "true",  "null", "12", "ab",
                                  " \"", "\xc3\xa9", "\xe2\x82\xac", "\\u00", "]}",   "},{"};
    enum { N_WORDS = sizeof words / sizeof *words };
    static uint8_t single[256];
    const uint8_t *bytes[256 + N_WORDS];
    uint32_t len[256 + N_WORDS];
    for (int i = 0; i < 256; i++)
        single[i] = (uint8_t)i, bytes[i] = single + i, len[i] = 1;
    for (int i = 0; i < N_WORDS; i++)
        bytes[256 + i] = (const uint8_t *)words[i], len[256 + i] = (uint32_t)strlen(words[i]);
    if (sp_token_trie_create(bytes, len, 256 + N_WORDS, &trie) != SP_OK)
        trie = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!trie)
        make_trie();
    const uint8_t *nul = memchr(data, 0, size);
    const size_t n_text = nul ? (size_t)(nul - data) : size;
    sp_grammar *g = NULL;
    sp_diag d;
    sp_diag_clear(&d);
    if (sp_grammar_from_gbnf((const char *)data, n_text, &g, &d) != SP_OK)
        return 0;
    sp_matcher *m = NULL;
    if (sp_matcher_create(g, &m) == SP_OK) {
        uint32_t mask[(256 + 13 + 31) / 32 + 1];
        const uint8_t *out = nul ? nul + 1 : data + size;
        const size_t n_out = nul ? size - n_text - 1 : 0;
        for (size_t i = 0; i <= n_out && i < 64; i++) {
            int32_t count;
            if (trie && sp_matcher_fill_mask(m, trie, mask, &count) != SP_OK)
                break;
            bool ok = false;
            if (i == n_out || sp_matcher_accept(m, out + i, 1, &ok) != SP_OK || !ok)
                break;
        }
        (void)sp_matcher_complete(m);
    }
    sp_matcher_destroy(m);
    sp_grammar_release(g);
    return 0;
}
