/* libFuzzer target for the tool-call reader (server/tools.h), which reads model output: the
 * input's first byte chooses the format (% 3) and whether the output starts inside the calls
 * (bit 2), its second the size of the pieces the output is fed in (1 + b % 16); the rest is the
 * output. Read whole and read in pieces, the output must give the same content and the same
 * calls, and the steps given while reading in pieces must add up to them: every call started
 * once, in order, with its arguments' fragments in order. Never a crash.
 *
 * The seeds are in tests/fuzz/corpus/fuzz_tools (tests/unit/server/test_tools.c replays them).
 * Fuzz a copy of the corpus:
 *
 *     cp -r tests/fuzz/corpus/fuzz_tools /tmp/corpus
 *     UBSAN_OPTIONS=halt_on_error=1 build-fuzz/tests/fuzz_tools -max_total_time=120 /tmp/corpus
 */
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "server/tools.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    const sp_tool_format f = (sp_tool_format)(data[0] % 3);
    const bool in_call = data[0] & 4;
    const size_t piece = 1 + data[1] % 16, n = size - 2;
    const char *text = (const char *)data + 2;
    sp_tools_reader *whole = NULL, *parts = NULL;
    size_t *sent = calloc(n + 1, sizeof *sent); // (calls) argument bytes given out per call
    size_t content_len = 0;
    int32_t started = 0;
    if (!sent || sp_tools_reader_create(f, in_call, 1, &whole) ||
        sp_tools_reader_create(f, in_call, 1, &parts) || sp_tools_reader_feed(whole, text, n, true))
        goto done;
    for (size_t at = 0;;) {
        const size_t k = SP_MIN(piece, n - at);
        if (sp_tools_reader_feed(parts, text + at, k, at + k == n))
            goto done;
        at += k;
        const sp_str c = sp_tools_reader_take_content(parts);
        const sp_str all = sp_tools_reader_content(parts);
        if (content_len + c.len != all.len || memcmp(all.ptr + content_len, c.ptr, c.len))
            __builtin_trap();
        content_len += c.len;
        sp_tool_delta d;
        while (sp_tools_reader_next_delta(parts, &d)) {
            if (d.id) { // a call starts: the next one, with no arguments yet
                if (d.index != started++ || d.args_len || !d.name)
                    __builtin_trap();
                continue;
            }
            // The next fragment of a started call's arguments, which only ever grow.
            const sp_tool_call call = sp_tools_reader_call(parts, d.index);
            if (d.index >= started || sent[d.index] + d.args_len > call.args_len ||
                memcmp(call.args + sent[d.index], d.args, d.args_len))
                __builtin_trap();
            sent[d.index] += d.args_len;
        }
        if (at == n)
            break;
    }
    const sp_str a = sp_tools_reader_content(whole), b = sp_tools_reader_content(parts);
    if (a.len != b.len || memcmp(a.ptr, b.ptr, a.len) || content_len != b.len ||
        sp_tools_reader_n_calls(whole) != sp_tools_reader_n_calls(parts) ||
        started != sp_tools_reader_n_calls(parts))
        __builtin_trap();
    for (int32_t i = 0; i < started; i++) {
        const sp_tool_call x = sp_tools_reader_call(whole, i), y = sp_tools_reader_call(parts, i);
        if (strcmp(x.id, y.id) || strcmp(x.name, y.name) || x.args_len != y.args_len ||
            memcmp(x.args, y.args, x.args_len) || x.complete != y.complete || sent[i] != y.args_len)
            __builtin_trap();
    }
done:
    sp_tools_reader_destroy(whole);
    sp_tools_reader_destroy(parts);
    free(sent);
    return 0;
}
