/* libFuzzer target for chat templates: the input is a template, compiled and rendered with a
 * fixed chat context under tight limits. Any outcome but a crash, a sanitizer report, a leak
 * or a hang is fine; the limits make every render finish quickly.
 *
 * The seeds are in tests/fuzz/corpus/fuzz_tmpl (the unit test tmpl/test_fuzz_corpus replays
 * them in every build); the .jinja files in ../shared/templates and the templates of
 * tests/unit/tmpl/jinja_cases.json make good extra seeds. Fuzz a copy of the corpus, so that
 * the fuzzer's finds do not land in the repository, and let UBSan stop at its first report:
 *
 *     cp -r tests/fuzz/corpus/fuzz_tmpl /tmp/corpus
 *     UBSAN_OPTIONS=halt_on_error=1 build-fuzz/tests/fuzz_tmpl -max_total_time=120 /tmp/corpus
 *
 * A crash found that way becomes a seed named crash-<what>, minimized (-minimize_crash=1). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tmpl/tmpl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char context_json[] =
    "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"add_generation_prompt\": true,"
    " \"messages\": ["
    "  {\"role\": \"system\", \"content\": \"Be brief.\"},"
    "  {\"role\": \"user\", \"content\": \"Weather in Paris? \\u00dcn\\u00efc\\u00f6d\\u00e9 \\ud83d\\ude42\"},"
    "  {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\","
    "    \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}}]},"
    "  {\"role\": \"tool\", \"tool_call_id\": \"c1\", \"content\": \"{\\\"temp\\\": 18}\"},"
    "  {\"role\": \"assistant\", \"content\": \"<think>hm</think>18 degrees.\"},"
    "  {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"thanks\"}]}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\","
    "   \"description\": \"Weather\", \"parameters\": {\"type\": \"object\", \"properties\": {"
    "     \"city\": {\"type\": \"string\"}, \"days\": {\"type\": [\"integer\", \"null\"], \"default\": 1},"
    "     \"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}}}, \"required\": [\"city\"]}}}],"
    " \"numbers\": [3, -1, 2.5, 1e300, 0, true], \"empty\": {}}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static json_t *ctx;
    if (!ctx) {
        ctx = json_loads(context_json, 0, NULL);
        if (!ctx)
            abort();
    }
    sp_tmpl *t = NULL;
    sp_diag d;
    if (sp_tmpl_compile((const char *)data, size, &t, &d) != SP_OK)
        return 0;
    sp_tmpl_limits lim = {
        .max_steps = 50000,
        .max_output_bytes = 1 << 16,
        .max_memory_bytes = 8 << 20,
        .max_depth = 200,
        .now_unix_s = 1768478400,
    };
    char *out = NULL;
    size_t n = 0;
    if (sp_tmpl_render(t, ctx, &lim, &out, &n, &d) == SP_OK) {
        if (strlen(out) > n) // the output is NUL-terminated at n (it may hold NULs before)
            abort();
        free(out);
    }
    sp_tmpl_destroy(t);
    return 0;
}
