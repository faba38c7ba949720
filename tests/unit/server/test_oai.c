/* Decoding of OpenAI request bodies: defaults, accepted forms, and one error per bad parameter,
 * naming it. */
#include "testutil.h"

#include <string.h>

#include "server/oai.h"

/* The last parsed body stays alive (q points into it) until the next parse. */
static json_t *last_body;

static sp_err parse(const char *text, sp_oai_kind kind, sp_oai_req *q, sp_diag *d) {
    json_error_t jerr;
    json_decref(last_body);
    last_body = json_loads(text, 0, &jerr);
    assert_non_null(last_body);
    sp_diag_clear(d);
    return sp_oai_parse(last_body, kind, q, d);
}

static void test_defaults(void **state) {
    (void)state;
    sp_oai_req q;
    sp_diag d;
    assert_int_equal(parse("{\"prompt\": \"hi\"}", SP_OAI_COMPLETION, &q, &d), SP_OK);
    assert_int_equal(q.params.max_tokens, 16);
    assert_true(q.params.sample.temperature == 1.0f);
    assert_true(q.params.sample.top_p == 1.0f);
    assert_int_equal(q.params.sample.top_k, 0);
    assert_int_equal(q.n, 1);
    assert_false(q.stream);
    assert_int_equal(q.logprobs, -1);
    assert_int_equal(q.params.n_stop, 0);
}

static void test_accepted_forms(void **state) {
    (void)state;
    sp_oai_req q;
    sp_diag d;
    const char *ok[] = {
        "{\"prompt\": [1, 2, 3]}",
        "{\"prompt\": [\"a\", \"b\"], \"n\": 2}",
        "{\"prompt\": [[1, 2], [3]]}",
        "{\"prompt\": \"x\", \"stop\": \"\\n\", \"max_tokens\": 3.0, \"seed\": -5}",
        "{\"prompt\": \"x\", \"stop\": [\"a\", \"b\"], \"logprobs\": 5, \"echo\": true}",
        "{\"prompt\": \"x\", \"stream\": true, \"stream_options\": {\"include_usage\": true}}",
        "{\"prompt\": \"x\", \"unknown_field\": {\"ignored\": 1}, \"user\": \"u\"}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (parse(ok[i], SP_OAI_COMPLETION, &q, &d) != SP_OK)
            fail_msg("rejected %s: %s", ok[i], d.msg);
    assert_int_equal(parse(ok[1], SP_OAI_COMPLETION, &q, &d), SP_OK);
    assert_int_equal(sp_oai_n_prompts(&q), 2);
    assert_int_equal(parse(ok[0], SP_OAI_COMPLETION, &q, &d), SP_OK);
    assert_int_equal(sp_oai_n_prompts(&q), 1);
    assert_int_equal(
        parse("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", "
              "\"text\": \"hi\"}]}], \"max_completion_tokens\": 9, \"logprobs\": true, "
              "\"top_logprobs\": 4}",
              SP_OAI_CHAT, &q, &d),
        SP_OK);
    assert_int_equal(q.params.max_tokens, 9);
    assert_int_equal(q.logprobs, 4);
    assert_int_equal(parse("{\"prompt\": \"x\", \"stop_after\": 7, \"priority\": -2, "
                           "\"user\": \"u1\"}",
                           SP_OAI_COMPLETION, &q, &d),
                     SP_OK);
    assert_int_equal(q.params.stop_after, 7);
    assert_int_equal(q.params.priority, -2);
    assert_string_equal(q.session, "u1");
    // Every role of OpenAI's API, and template keyword arguments the server does not set.
    assert_int_equal(
        parse("{\"messages\": [{\"role\": \"system\", \"content\": \"a\"}, {\"role\": "
              "\"developer\", \"content\": \"b\"}, {\"role\": \"user\", \"content\": \"c\"}, "
              "{\"role\": \"assistant\", \"content\": \"d\"}, {\"role\": \"tool\", \"content\": "
              "\"e\"}, {\"role\": \"function\", \"content\": \"f\"}], \"chat_template_kwargs\": "
              "{\"enable_thinking\": false}}",
              SP_OAI_CHAT, &q, &d),
        SP_OK);
    assert_non_null(json_object_get(q.template_extra, "enable_thinking"));
}

static void test_errors_name_the_parameter(void **state) {
    (void)state;
    static const struct {
        const char *body;
        sp_oai_kind kind;
        const char *param;
    } cases[] = {
        {"[]", SP_OAI_COMPLETION, ""},
        {"{}", SP_OAI_COMPLETION, "prompt"},
        {"{\"prompt\": \"\"}", SP_OAI_COMPLETION, "prompt"},
        {"{\"prompt\": []}", SP_OAI_COMPLETION, "prompt"},
        {"{\"prompt\": 5}", SP_OAI_COMPLETION, "prompt"},
        {"{\"prompt\": [1, \"a\"]}", SP_OAI_COMPLETION, "prompt"},
        {"{\"prompt\": \"x\", \"max_tokens\": -1}", SP_OAI_COMPLETION, "max_tokens"},
        {"{\"prompt\": \"x\", \"max_tokens\": 0}", SP_OAI_COMPLETION, "max_tokens"},
        {"{\"prompt\": \"x\", \"max_tokens\": 1e30}", SP_OAI_COMPLETION, "max_tokens"},
        {"{\"prompt\": \"x\", \"max_tokens\": \"5\"}", SP_OAI_COMPLETION, "max_tokens"},
        {"{\"prompt\": \"x\", \"temperature\": 2.5}", SP_OAI_COMPLETION, "temperature"},
        {"{\"prompt\": \"x\", \"temperature\": \"hot\"}", SP_OAI_COMPLETION, "temperature"},
        {"{\"prompt\": \"x\", \"top_p\": 0}", SP_OAI_COMPLETION, "top_p"},
        {"{\"prompt\": \"x\", \"top_p\": 1.5}", SP_OAI_COMPLETION, "top_p"},
        {"{\"prompt\": \"x\", \"n\": 0}", SP_OAI_COMPLETION, "n"},
        {"{\"prompt\": \"x\", \"n\": 1000000}", SP_OAI_COMPLETION, "n"},
        {"{\"prompt\": \"x\", \"stop\": 5}", SP_OAI_COMPLETION, "stop"},
        {"{\"prompt\": \"x\", \"stop\": [1]}", SP_OAI_COMPLETION, "stop"},
        {"{\"prompt\": \"x\", \"presence_penalty\": 3}", SP_OAI_COMPLETION, "presence_penalty"},
        {"{\"prompt\": \"x\", \"frequency_penalty\": -3}", SP_OAI_COMPLETION,
         "frequency_penalty"},
        {"{\"prompt\": \"x\", \"logprobs\": 100}", SP_OAI_COMPLETION, "logprobs"},
        {"{\"prompt\": \"x\", \"stream\": \"yes\"}", SP_OAI_COMPLETION, "stream"},
        {"{\"prompt\": \"x\", \"seed\": 1.5}", SP_OAI_COMPLETION, "seed"},
        {"{\"prompt\": \"x\", \"model\": 7}", SP_OAI_COMPLETION, "model"},
        {"{\"prompt\": \"x\", \"stream_options\": 1}", SP_OAI_COMPLETION, "stream_options"},
        {"{\"prompt\": \"x\", \"stop_after\": -1}", SP_OAI_COMPLETION, "stop_after"},
        {"{\"prompt\": \"x\", \"priority\": \"high\"}", SP_OAI_COMPLETION, "priority"},
        {"{\"prompt\": \"x\", \"session_id\": 5}", SP_OAI_COMPLETION, "session_id"},
        {"{}", SP_OAI_CHAT, "messages"},
        {"{\"messages\": []}", SP_OAI_CHAT, "messages"},
        {"{\"messages\": [1]}", SP_OAI_CHAT, "messages"},
        {"{\"messages\": [{\"content\": \"x\"}]}", SP_OAI_CHAT, "messages"},
        {"{\"messages\": [{\"role\": \"user\"}]}", SP_OAI_CHAT, "messages"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}",
         SP_OAI_CHAT, "messages"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"top_logprobs\": 2}",
         SP_OAI_CHAT, "top_logprobs"},
        {"{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}", SP_OAI_CHAT,
         "messages"},
#define KWARGS(k)                                                                                  \
    "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"chat_template_kwargs\": "        \
    "{\"" k "\": 1}}"
        {KWARGS("messages"), SP_OAI_CHAT, "chat_template_kwargs"},
        {KWARGS("tools"), SP_OAI_CHAT, "chat_template_kwargs"},
        {KWARGS("bos_token"), SP_OAI_CHAT, "chat_template_kwargs"},
        {KWARGS("eos_token"), SP_OAI_CHAT, "chat_template_kwargs"},
        {KWARGS("add_generation_prompt"), SP_OAI_CHAT, "chat_template_kwargs"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sp_oai_req q;
        sp_diag d;
        sp_err err = parse(cases[i].body, cases[i].kind, &q, &d);
        if (err != SP_ERR_INVALID)
            fail_msg("accepted %s", cases[i].body);
        if (strcmp(d.param, cases[i].param))
            fail_msg("%s: param '%s', expected '%s'", cases[i].body, d.param, cases[i].param);
        assert_true(strlen(d.msg) > 5);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_accepted_forms),
        cmocka_unit_test(test_errors_name_the_parameter),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    json_decref(last_body);
    return rc;
}
