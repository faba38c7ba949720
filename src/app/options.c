#include "app/options.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

bool sp_parse_size(const char *s, int64_t *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0) || v > 1e15)
        return false;
    double mul = 1;
    switch (*end) {
    case 'k':
    case 'K':
        mul = 1024.0;
        end++;
        break;
    case 'm':
    case 'M':
        mul = 1024.0 * 1024;
        end++;
        break;
    case 'g':
    case 'G':
        mul = 1024.0 * 1024 * 1024;
        end++;
        break;
    default:
        break;
    }
    if (*end == 'B' || *end == 'b' || *end == 'i')
        end += (*end == 'i' && (end[1] == 'B' || end[1] == 'b')) ? 2 : 1;
    if (*end)
        return false;
    *out = (int64_t)(v * mul);
    return true;
}

bool sp_parse_spec(const char *s, sp_engine_opts *o) {
    if (!strcmp(s, "off") || !strcmp(s, "auto")) {
        o->spec_auto = !strcmp(s, "auto");
        o->spec_off = !o->spec_auto;
        o->spec_k = o->spec_auto ? (o->spec_k ? o->spec_k : SP_ENGINE_SPEC_AUTO_K) : 0;
        return true;
    }
    if (strncmp(s, "fixed:", 6) || !s[6])
        return false;
    char *end;
    const long n = strtol(s + 6, &end, 10);
    if (*end || n < 1 || n > SP_ENGINE_MAX_SPEC)
        return false;
    o->spec_k = (int32_t)n;
    o->spec_auto = o->spec_off = false;
    return true;
}

void sp_engine_options_usage(FILE *f) {
    fprintf(f,
            "  --kv-memory SIZE        KV cache size, e.g. 512M or 2G (default: room for every\n"
            "                          sequence's full context, at most 1G)\n"
            "  --kv-tokens N           KV cache size in tokens (instead of --kv-memory)\n"
            "  --kv-type TYPE          KV cache element type: f16 (default) or f32\n"
            "  --max-batch-tokens N    tokens per engine step, a hard cap (default 512)\n"
            "  --max-step-ms MS        time budget of a step that has decodes running: prompt\n"
            "                          chunks fill it next to the decodes, sized by a model of\n"
            "                          the step time learned from every step; 'auto' (default)\n"
            "                          is 2.25x the time of a step decoding every request\n"
            "                          served, 'off' lets a prompt take the whole token budget\n"
            "                          (streams then pause while it is computed)\n"
            "  --prefer WHAT           latency (default: stall-free steps as above) or\n"
            "                          throughput (no time budget: whole chunks, for offline\n"
            "                          jobs)\n"
            "  --spec MODE             speculative decoding: off (no drafts at all), fixed:K\n"
            "                          (1-16) or auto (the default of serve, and of bench with\n"
            "                          a draft model):\n"
            "                          each decode carries up to K draft tokens, from the\n"
            "                          draft model or by prompt lookup (what followed the\n"
            "                          latest earlier occurrence of its last tokens in the\n"
            "                          prompt and output), checked in the same step; greedy\n"
            "                          output is unchanged, sampled output keeps its\n"
            "                          distribution. auto sizes each request's draft every\n"
            "                          step (0 to --spec-max) for the most tokens per second\n"
            "                          of step time, from its acceptance so far. A request's\n"
            "                          predicted output (the API's \"prediction\") is drafted\n"
            "                          instead of its prompt, unless the mode is off\n"
            "  --spec-max K            longest draft of --spec auto (default 8; implies auto\n"
            "                          unless --spec says otherwise)\n"
            "  --draft-model FILE      a GGUF draft model with the model's vocabulary (a\n"
            "                          smaller model of the same family): drafts for every\n"
            "                          request, run by the engine beside the model, all\n"
            "                          sequences in one forward pass per draft position, its\n"
            "                          KV cache in the same blocks (the pool's memory is\n"
            "                          shared between the two)\n"
            "  --step-log FILE         append one JSON line per engine step to FILE: its\n"
            "                          decode and prompt tokens, logits rows, attended KV\n"
            "                          positions, the step-time model's prediction, the\n"
            "                          measured time and the budget (microseconds), the\n"
            "                          model's coefficients, the draft tokens checked and\n"
            "                          accepted, their price and its measured scale\n"
            "  --max-seqs N            requests running at once (default 64)\n"
            "  -c, --ctx N             context length per request (default: the model's, at\n"
            "                          most 4096)\n"
            "  --no-prefix-cache       do not share cached prompt prefixes between requests\n"
            "  --session-ttl SECONDS   pin each finished turn of a session (the \"user\" or\n"
            "                          \"session_id\" field, or a chat continuing a pinned\n"
            "                          history) this long; 0 never pins (plain LRU caching)\n"
            "                          (default: chosen from the observed gaps between turns,\n"
            "                          at most 60 s)\n"
            "  --admission POLICY      aggressive (admit while the prompt fits), conservative\n"
            "                          (reserve max_tokens for everyone) or past-future (admit\n"
            "                          while the predicted peak KV use fits; default)\n"
            "  -t, --threads N         compute threads (default: all cores)\n");
}

int sp_engine_options_parse(sp_engine_opts *o, int argc, char **argv) {
    const char *a = argv[0];
    if (!strcmp(a, "--no-prefix-cache")) {
        o->prefix_cache = false;
        return 1;
    }
    static const char *const with_value[] = {
        "--kv-memory", "--kv-tokens", "--kv-type", "--admission", "--session-ttl",
        "--max-batch-tokens", "--max-step-ms", "--prefer", "--spec", "--spec-max", "--draft-model", "--step-log", "--max-seqs",
        "-c", "--ctx", "-t", "--threads"};
    bool known = false;
    for (size_t i = 0; i < sizeof with_value / sizeof *with_value; i++)
        known |= !strcmp(a, with_value[i]);
    if (!known)
        return 0;
    if (argc < 2) {
        fprintf(stderr, "spindle: option '%s' needs a value (see --help)\n", a);
        return -1;
    }
    const char *v = argv[1];
    char *end;
    long n = strtol(v, &end, 10);
    bool num = *v && !*end && n > 0 && n <= (1L << 30);
    bool ok = true;
    if (!strcmp(a, "--kv-memory"))
        ok = sp_parse_size(v, &o->kv_bytes);
    else if (!strcmp(a, "--kv-tokens"))
        ok = num && ((o->kv_tokens = (int32_t)n), true);
    else if (!strcmp(a, "--kv-type")) {
        if (!strcmp(v, "f16"))
            o->kv_type = SP_DTYPE_F16;
        else if (!strcmp(v, "f32"))
            o->kv_type = SP_DTYPE_F32;
        else
            ok = false;
    } else if (!strcmp(a, "--admission")) {
        ok = !strcmp(v, "aggressive") || !strcmp(v, "conservative") || !strcmp(v, "past-future");
        if (ok)
            snprintf(o->admission, sizeof o->admission, "%s", v);
    } else if (!strcmp(a, "--session-ttl")) {
        double sec = strtod(v, &end);
        ok = *v && !*end && sec >= 0 && sec <= 86400;
        if (ok)
            o->session_ttl_ms = (int64_t)(sec * 1000.0);
    } else if (!strcmp(a, "--max-step-ms")) {
        if (!strcmp(v, "auto"))
            o->max_step_ms = 0;
        else if (!strcmp(v, "off"))
            o->max_step_ms = -1;
        else
            ok = num && n <= 3600 * 1000 && ((o->max_step_ms = (int32_t)n), true);
    } else if (!strcmp(a, "--prefer")) {
        ok = !strcmp(v, "latency") || !strcmp(v, "throughput");
        o->prefer_throughput = !strcmp(v, "throughput");
    } else if (!strcmp(a, "--spec")) {
        ok = sp_parse_spec(v, o);
    } else if (!strcmp(a, "--spec-max")) {
        // The longest draft of auto, which it implies unless --spec chose a fixed length.
        ok = num && n <= SP_ENGINE_MAX_SPEC;
        if (ok && (o->spec_auto || o->spec_k == 0)) {
            o->spec_k = (int32_t)n;
            o->spec_auto = !o->spec_off;
            if (o->spec_off)
                o->spec_k = 0;
        }
    } else if (!strcmp(a, "--draft-model")) {
        o->draft_model = v;
    } else if (!strcmp(a, "--step-log")) {
        o->step_log = v;
    } else if (!strcmp(a, "--max-batch-tokens"))
        ok = num && ((o->max_batch_tokens = (int32_t)n), true);
    else if (!strcmp(a, "--max-seqs"))
        ok = num && n <= 4096 && ((o->max_seqs = (int32_t)n), true);
    else if (!strcmp(a, "-c") || !strcmp(a, "--ctx"))
        ok = num && ((o->n_ctx = (int32_t)n), true);
    else // -t, --threads
        ok = num && n <= 1024 && ((o->n_threads = (int32_t)n), true);
    if (!ok) {
        fprintf(stderr, "spindle: invalid value '%s' for %s (see --help)\n", v, a);
        return -1;
    }
    return 2;
}

const char *sp_default_data_dir(char *buf, size_t cap) {
    const char *v;
    int n;
    if ((v = getenv("SPINDLE_DATA_DIR")) && *v)
        n = snprintf(buf, cap, "%s", v);
    else if ((v = getenv("XDG_DATA_HOME")) && *v)
        n = snprintf(buf, cap, "%s/spindle", v);
    else if ((v = getenv("HOME")) && *v)
        n = snprintf(buf, cap, "%s/.local/share/spindle", v);
    else
        return NULL;
    return n > 0 && (size_t)n < cap ? buf : NULL;
}
