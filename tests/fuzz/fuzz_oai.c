/* libFuzzer target: the OpenAI request decoder on arbitrary JSON bodies, for both endpoints.
 * Every input must be either accepted with parameters inside their documented ranges, or
 * rejected with a message and a parameter name; never a crash. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "base/err.h"
#include "server/oai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_error_t jerr;
    json_t *body = json_loadb((const char *)data, size, 0, &jerr);
    if (!body)
        return 0;
    for (int kind = 0; kind < 2; kind++) {
        sp_oai_req q;
        sp_diag d;
        sp_diag_clear(&d);
        if (sp_oai_parse(body, (sp_oai_kind)kind, &q, &d) == SP_OK) {
            if (q.n < 1 || q.n > SP_OAI_MAX_N || q.params.max_tokens < 1 ||
                q.params.n_stop > SP_OAI_MAX_STOP || q.logprobs < -1 ||
                q.logprobs > SP_REQ_MAX_TOP_LOGPROBS || !(q.params.sample.temperature >= 0) ||
                sp_oai_n_prompts(&q) < 1 || sp_oai_n_prompts(&q) > SP_OAI_MAX_PROMPTS)
                __builtin_trap();
            for (int i = 0; i < q.params.n_stop; i++)
                if (!q.params.stop[i] || !q.params.stop[i][0])
                    __builtin_trap();
        } else if (!d.msg[0]) {
            __builtin_trap();
        }
    }
    json_decref(body);
    return 0;
}
