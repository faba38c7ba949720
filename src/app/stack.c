/* Loading what serving needs (stack.h). */
#include "app/stack.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"

bool sp_stack_load(sp_stack *s, const char *cmd, const char *model_path, const char *tmpl_path) {
    memset(s, 0, sizeof *s);
    sp_diag d;
    sp_diag_clear(&d);
    sp_err err = sp_model_load(model_path, &s->m, &d);
    if (err) {
        fprintf(stderr, "spindle %s: cannot load '%s': %s: %s\n", cmd, model_path, sp_err_str(err),
                d.msg);
        return false;
    }
    if ((err = sp_vocab_load(s->m->gguf, &s->v, &d))) {
        fprintf(stderr, "spindle %s: cannot read the vocabulary: %s\n", cmd, d.msg);
        sp_stack_free(s);
        return false;
    }
    sp_str ts = {0};
    if (tmpl_path) {
        size_t len = 0;
        int re = sp_read_file(tmpl_path, &s->tmpl_src, &len);
        if (re) {
            fprintf(stderr, "spindle %s: cannot read '%s': %s\n", cmd, tmpl_path, strerror(-re));
            sp_stack_free(s);
            return false;
        }
        ts = (sp_str){s->tmpl_src, len};
    } else if (sp_gguf_get_str(s->m->gguf, "tokenizer.chat_template", &ts, NULL) != SP_OK) {
        ts = (sp_str){0};
        SP_INFO("the model has no chat template: chat uses ChatML");
    }
    s->tool_format = sp_tools_detect(ts.ptr, ts.len);
    if (ts.ptr && (err = sp_tmpl_compile(ts.ptr, ts.len, &s->t, &d))) {
        fprintf(stderr, "spindle %s: the chat template does not compile: %s\n", cmd, d.msg);
        sp_stack_free(s);
        return false;
    }
    return true;
}

void sp_stack_free(sp_stack *s) {
    sp_tmpl_destroy(s->t);
    free(s->tmpl_src);
    sp_vocab_destroy(s->v);
    sp_model_destroy(s->m);
    memset(s, 0, sizeof *s);
}
