/* The server's compiled grammars (grammars.h). */
#include "server/grammars.h"

#include <stdlib.h>
#include <string.h>

#include "grammar/schema.h"

sp_err sp_grammars_get(sp_grammars *c, const char *gbnf, size_t n, json_t *schema, sp_grammar **out,
                       sp_diag *d) {
    // The key: a kind letter, then the source (a schema in canonical form: sorted, compact).
    char *dump = schema && !gbnf
                     ? json_dumps(schema, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS)
                     : NULL;
    if (schema && !gbnf && !dump)
        return SP_ERR_NOMEM;
    const char *src = gbnf ? gbnf : dump ? dump : "";
    const size_t n_src = gbnf ? n : strlen(src);
    const char kind = gbnf ? 'g' : dump ? 's' : 'j';
    int slot = 0;
    for (int i = 0; i < SP_GRAMMARS_KEPT; i++) {
        if (c->e[i].key && c->e[i].n_key == n_src + 1 && c->e[i].key[0] == kind &&
            !memcmp(c->e[i].key + 1, src, n_src)) {
            c->e[i].used = ++c->clock;
            c->hits++;
            *out = sp_grammar_ref(c->e[i].g);
            free(dump);
            return SP_OK;
        }
        if (c->e[i].used < c->e[slot].used)
            slot = i;
    }
    sp_grammar *g = NULL;
    sp_err err = gbnf     ? sp_grammar_from_gbnf(gbnf, n, &g, d)
                 : schema ? sp_grammar_from_json_schema(schema, &g, d)
                          : sp_grammar_json_object(&g, d);
    char *key = err ? NULL : malloc(n_src + 1);
    if (key) { // kept (if memory allows: the grammar serves all the same)
        key[0] = kind;
        memcpy(key + 1, src, n_src);
        sp_grammar_release(c->e[slot].g);
        free(c->e[slot].key);
        c->e[slot].key = key;
        c->e[slot].n_key = n_src + 1;
        c->e[slot].g = sp_grammar_ref(g);
        c->e[slot].used = ++c->clock;
    }
    c->compiles += !err;
    free(dump);
    if (!err)
        *out = g;
    return err;
}

void sp_grammars_clear(sp_grammars *c) {
    for (int i = 0; i < SP_GRAMMARS_KEPT; i++) {
        sp_grammar_release(c->e[i].g);
        free(c->e[i].key);
    }
    memset(c, 0, sizeof *c);
}
