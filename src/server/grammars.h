/* The server's compiled grammars, kept by source: requests that bring the same grammar, schema
 * or JSON mode share one compiled grammar (and with it the engine's cache of its masks)
 * instead of compiling it again. Least recently used replaced. Not thread-safe: the API's
 * thread only. */
#ifndef SP_SERVER_GRAMMARS_H
#define SP_SERVER_GRAMMARS_H

#include <jansson.h>

#include "base/err.h"
#include "grammar/grammar.h"

enum { SP_GRAMMARS_KEPT = 32 };

typedef struct sp_grammars {
    struct {
        char *key; // the source: "g" + GBNF text, "s" + the schema's canonical JSON, "j"
        size_t n_key;
        sp_grammar *g; // one reference
        uint64_t used;
    } e[SP_GRAMMARS_KEPT];
    uint64_t clock;
    uint64_t hits, compiles;
} sp_grammars;

/* The grammar of a GBNF text (gbnf, n bytes), else of a JSON schema (schema), else of JSON mode
 * (both NULL): one reference to *out, from the kept ones or compiled (and kept). Errors as the
 * compilers'. */
SP_MUST_USE sp_err sp_grammars_get(sp_grammars *c, const char *gbnf, size_t n, json_t *schema,
                                   sp_grammar **out, sp_diag *d);

/* Releases every kept grammar. */
void sp_grammars_clear(sp_grammars *c);

#endif
