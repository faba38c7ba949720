/* What serving needs loaded, for the commands that serve (serve, batch): the model, its
 * vocabulary, its chat template and tool-call format. Main thread. */
#ifndef SP_APP_STACK_H
#define SP_APP_STACK_H

#include "model/model.h"
#include "server/tools.h"
#include "tmpl/tmpl.h"
#include "tok/tok.h"

typedef struct sp_stack {
    sp_model *m;
    sp_vocab *v;
    sp_tmpl *t; // NULL: ChatML
    sp_tool_format tool_format;
    char *tmpl_src; // the template file's text, when one was given
} sp_stack;

/* Loads model_path and its vocabulary, and compiles the chat template (tmpl_path, else the
 * model's, else none: ChatML). On failure prints why, prefixed by `cmd`, and returns false
 * (the stack freed). */
bool sp_stack_load(sp_stack *s, const char *cmd, const char *model_path, const char *tmpl_path);
void sp_stack_free(sp_stack *s);

#endif
