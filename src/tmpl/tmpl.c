/* Public entry points: compiling, rendering, the chat convenience and the ChatML default. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/util.h"
#include "tmpl/tmpl_int.h"

const char sp_tmpl_chatml[] =
    "{%- for message in messages -%}\n"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}\n"
    "{%- if message['content'] is string -%}\n"
    "{{- message['content'] -}}\n"
    "{%- elif message['content'] is iterable -%}\n"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{- part['text'] -}}{%- endfor -%}\n"
    "{%- endif -%}\n"
    "{{- '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}\n";

/* Offset of the first byte that is not valid UTF-8 (strict: no overlongs, surrogates or
 * code points above U+10FFFF), or len. */
static size_t utf8_check(const unsigned char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0)
                lo = 0xa0;
            if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0)
                lo = 0x90;
            if (c == 0xf4)
                hi = 0x8f;
        } else {
            return i;
        }
        if (len - i <= n)
            return i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= n; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
        i += n + 1;
    }
    return len;
}

sp_err sp_tmpl_compile(const char *src, size_t len, sp_tmpl **out, sp_diag *diag) {
    sp_diag_clear(diag);
    if ((!src && len) || !out)
        return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX, "no template source");
    if (len > UINT32_MAX / 4)
        return sp_diag_set(diag, SP_ERR_RANGE, UINT64_MAX, "template too large (%zu bytes)", len);
    size_t bad = utf8_check((const unsigned char *)src, len);
    if (bad != len)
        return sp_diag_set(diag, SP_ERR_UTF8, bad, "template is not valid UTF-8 at byte %zu", bad);
    sp_tmpl *t = calloc(1, sizeof *t);
    if (!t)
        return sp_diag_set(diag, SP_ERR_NOMEM, UINT64_MAX, "out of memory compiling the template");
    sp__arena_init(&t->arena, 0);
    char *s = sp__arena_alloc(&t->arena, len + 1);
    if (!s) {
        sp_tmpl_destroy(t);
        return sp_diag_set(diag, SP_ERR_NOMEM, UINT64_MAX, "out of memory compiling the template");
    }
    // Jinja normalizes "\r\n" and "\r" to "\n" and drops one trailing newline.
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n && s[n - 1] == '\n')
        n--;
    s[n] = '\0';
    t->src = s;
    t->len = n;
    sp_err e = sp__parse(t, diag);
    if (e) {
        sp_tmpl_destroy(t);
        return e;
    }
    *out = t;
    return SP_OK;
}

void sp_tmpl_destroy(sp_tmpl *t) {
    if (!t)
        return;
    sp__arena_deinit(&t->arena);
    free(t);
}

uint32_t sp_tmpl_line(const sp_tmpl *t, uint64_t offset) {
    return sp__line_of(t->src, t->len, offset > t->len ? t->len : (size_t)offset);
}

sp_err sp_tmpl_render(const sp_tmpl *t, const json_t *context, const sp_tmpl_limits *limits,
                      char **out, size_t *out_len, sp_diag *diag) {
    sp_diag_clear(diag);
    if (!t || !out || !out_len)
        return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX, "no template or output");
    if (context && !json_is_object(context))
        return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX, "the context must be a JSON object");
    sp_tmpl_limits lim = {0};
    if (limits)
        lim = *limits;
    sp__rt r = {.t = t, .diag = diag};
    r.max_steps = lim.max_steps ? lim.max_steps : SP_TMPL_DEFAULT_MAX_STEPS;
    r.max_out = lim.max_output_bytes ? lim.max_output_bytes : SP_TMPL_DEFAULT_MAX_OUTPUT_BYTES;
    r.max_depth = lim.max_depth ? lim.max_depth : SP_TMPL_DEFAULT_MAX_DEPTH;
    r.now = lim.now_unix_s ? lim.now_unix_s : (int64_t)time(NULL);
    sp__arena_init(&r.arena,
                   lim.max_memory_bytes ? lim.max_memory_bytes : SP_TMPL_DEFAULT_MAX_MEMORY_BYTES);
    sp__buf buf = {0};
    r.out = &buf;
    sp_err e = sp__render(&r, context);
    if (!e) {
        char *s = malloc(buf.n + 1);
        if (!s) {
            e = sp_diag_set(diag, SP_ERR_NOMEM, UINT64_MAX, "out of memory");
        } else {
            if (buf.n)
                memcpy(s, buf.p, buf.n);
            s[buf.n] = '\0';
            *out = s;
            *out_len = buf.n;
        }
    }
    sp__arena_deinit(&r.arena);
    return e;
}

sp_err sp_chat_render(const sp_tmpl *t, const json_t *messages, const json_t *extra,
                      const char *bos_token, const char *eos_token, bool add_generation_prompt,
                      const sp_tmpl_limits *limits, char **out, size_t *out_len, sp_diag *diag) {
    sp_diag_clear(diag);
    if (!messages || !json_is_array(messages))
        return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX, "messages must be a JSON array");
    if (extra && !json_is_object(extra))
        return sp_diag_set(diag, SP_ERR_INVALID, UINT64_MAX, "extra must be a JSON object");
    sp_tmpl *own = NULL;
    sp_err e = SP_OK;
    if (!t) {
        if ((e = sp_tmpl_compile(sp_tmpl_chatml, sizeof sp_tmpl_chatml - 1, &own, diag)))
            return e;
        t = own;
    }
    json_t *ctx = json_object();
    // The context only borrows: json_object_set takes a reference, released with ctx.
    // extra first: the four variables of the call are set last and cannot be replaced by it.
    if (!ctx || (extra && json_object_update(ctx, (json_t *)extra)) ||
        json_object_set(ctx, "messages", (json_t *)messages) ||
        json_object_set_new(ctx, "bos_token", json_string(bos_token ? bos_token : "")) ||
        json_object_set_new(ctx, "eos_token", json_string(eos_token ? eos_token : "")) ||
        json_object_set_new(ctx, "add_generation_prompt", json_boolean(add_generation_prompt))) {
        e = sp_diag_set(diag, SP_ERR_NOMEM, UINT64_MAX, "cannot build the template context");
        goto done;
    }
    e = sp_tmpl_render(t, ctx, limits, out, out_len, diag);
done:
    json_decref(ctx);
    sp_tmpl_destroy(own);
    return e;
}
