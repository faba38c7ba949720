/* `spindle tokenize` and `spindle chat-template`: the tokenizer and the chat template of a GGUF
 * file (a model or a vocabulary-only file) on the command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "app/commands.h"
#include "base/util.h"
#include "gguf/gguf.h"
#include "tmpl/tmpl.h"
#include "tok/tok.h"

static int open_vocab(const char *cmd, const char *path, sp_gguf **g, sp_vocab **v) {
    sp_diag d;
    sp_diag_clear(&d);
    sp_err err = sp_gguf_open(path, g, &d);
    if (!err && (err = sp_vocab_load(*g, v, &d)))
        sp_gguf_close(*g);
    if (err) {
        fprintf(stderr, "spindle %s: cannot read the vocabulary of '%s': %s: %s\n", cmd, path,
                sp_err_str(err), d.msg);
        return 1;
    }
    return 0;
}

int sp_cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL;
    bool special = false, bos = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: spindle tokenize -m MODEL.gguf [--special] [--no-bos] TEXT\n\n"
                   "Prints the token ids of TEXT on one line, space-separated.\n\n"
                   "  -m, --model FILE  GGUF model or vocabulary file\n"
                   "  --special         match special tokens written in the text (<s>, ...)\n"
                   "  --no-bos          do not add the BOS/EOS tokens the vocabulary asks for\n");
            return 0;
        } else if (!strcmp(a, "--special")) {
            special = true;
        } else if (!strcmp(a, "--no-bos")) {
            bos = false;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            model = argv[++i];
        } else if (a[0] == '-' && a[1] && !text) {
            fprintf(stderr, "spindle tokenize: unknown option '%s' (see --help)\n", a);
            return 2;
        } else if (!text) {
            text = a;
        } else {
            fprintf(stderr, "spindle tokenize: give the text as one argument (quote it)\n");
            return 2;
        }
    }
    if (!model || !text) {
        fprintf(stderr, "spindle tokenize: -m MODEL and TEXT are required (see --help)\n");
        return 2;
    }
    sp_gguf *g;
    sp_vocab *v;
    if (open_vocab("tokenize", model, &g, &v))
        return 1;
    sp_tokens toks;
    sp_tokens_init(&toks);
    sp_diag d;
    sp_diag_clear(&d);
    int rc = 0;
    sp_err err = sp_tok_encode(v, text, strlen(text), bos, special, &toks, &d);
    if (err) {
        fprintf(stderr, "spindle tokenize: %s: %s\n", sp_err_str(err), d.msg);
        rc = 1;
    } else {
        for (size_t i = 0; i < toks.n; i++)
            printf("%s%d", i ? " " : "", toks.ids[i]);
        printf("\n");
    }
    sp_tokens_deinit(&toks);
    sp_vocab_destroy(v);
    sp_gguf_close(g);
    return rc;
}

int sp_cmd_chat_template(int argc, char **argv) {
    const char *model = NULL, *messages_path = NULL, *tmpl_path = NULL;
    bool gen_prompt = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: spindle chat-template -m MODEL.gguf --messages FILE.json\n"
                   "                             [--add-generation-prompt] [--chat-template FILE]\n\n"
                   "Renders a conversation with the model's chat template (tokenizer.chat_template,\n"
                   "or ChatML when the file has none) and prints the prompt.\n\n"
                   "  -m, --model FILE         GGUF model or vocabulary file\n"
                   "  --messages FILE          JSON array of {\"role\", \"content\"} messages, or an\n"
                   "                           object with \"messages\" (and \"tools\", ...)\n"
                   "  --add-generation-prompt  end with the assistant's turn header\n"
                   "  --chat-template FILE     use this Jinja template instead of the model's\n");
            return 0;
        } else if (!strcmp(a, "--add-generation-prompt")) {
            gen_prompt = true;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(a, "--messages") && i + 1 < argc) {
            messages_path = argv[++i];
        } else if (!strcmp(a, "--chat-template") && i + 1 < argc) {
            tmpl_path = argv[++i];
        } else {
            fprintf(stderr, "spindle chat-template: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!model || !messages_path) {
        fprintf(stderr, "spindle chat-template: -m MODEL and --messages FILE are required\n");
        return 2;
    }
    int rc = 1;
    sp_gguf *g;
    sp_vocab *v;
    if (open_vocab("chat-template", model, &g, &v))
        return 1;
    json_error_t jerr;
    json_t *root = json_load_file(messages_path, 0, &jerr);
    sp_tmpl *t = NULL;
    char *src = NULL, *out = NULL;
    size_t src_len = 0, out_len = 0;
    sp_diag d;
    sp_diag_clear(&d);
    if (!root) {
        fprintf(stderr, "spindle chat-template: %s: %s (line %d)\n", messages_path, jerr.text,
                jerr.line);
        goto done;
    }
    json_t *messages = json_is_object(root) ? json_object_get(root, "messages") : root;
    if (!json_is_array(messages)) {
        fprintf(stderr, "spindle chat-template: %s holds no array of messages\n", messages_path);
        goto done;
    }
    sp_str ts = {0};
    if (tmpl_path) {
        int e = sp_read_file(tmpl_path, &src, &src_len);
        if (e) {
            fprintf(stderr, "spindle chat-template: cannot read '%s': %s\n", tmpl_path,
                    strerror(-e));
            goto done;
        }
        ts = (sp_str){src, src_len};
    } else if (sp_gguf_get_str(g, "tokenizer.chat_template", &ts, NULL) != SP_OK) {
        ts = (sp_str){0};
    }
    sp_err err = SP_OK;
    if (ts.ptr && (err = sp_tmpl_compile(ts.ptr, ts.len, &t, &d))) {
        fprintf(stderr, "spindle chat-template: the template does not compile: %s\n", d.msg);
        goto done;
    }
    sp_str bos = sp_vocab_token_text(v, sp_vocab_bos(v));
    sp_str eos = sp_vocab_token_text(v, sp_vocab_eos(v));
    json_t *extra = json_is_object(root) ? root : NULL;
    if ((err = sp_chat_render(t, messages, extra, bos.ptr, eos.ptr, gen_prompt, NULL, &out,
                              &out_len, &d))) {
        fprintf(stderr, "spindle chat-template: %s: %s\n", sp_err_str(err), d.msg);
        goto done;
    }
    fwrite(out, 1, out_len, stdout);
    rc = 0;
done:
    free(out);
    free(src);
    sp_tmpl_destroy(t);
    json_decref(root);
    sp_vocab_destroy(v);
    sp_gguf_close(g);
    return rc;
}
