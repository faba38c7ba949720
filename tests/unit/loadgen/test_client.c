#include "testutil.h"

#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/util.h"
#include "loadgen/client.h"
#include "loadgen/report.h"

#define assert_near(a, b, eps)                                                                     \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (!(fabs(a_ - b_) <= (eps)))                                                             \
            fail_msg("%.17g != %.17g (eps %g)", a_, b_, (double)(eps));                            \
    } while (0)

/* ---- Metrics from results (vLLM's calculate_metrics, worked by hand) ----------------------- */

static sp_lg_result mk(bool ok, double start, double ttft, const double *itl, int n_itl,
                       int out_tokens, int prompt) {
    sp_lg_result r = {.success = ok,
                      .start_s = start,
                      .ttft_s = ttft,
                      .output_tokens = out_tokens,
                      .prompt_len = prompt,
                      .n_chunks = n_itl + 1};
    r.itl_s = malloc((size_t)(n_itl ? n_itl : 1) * sizeof(double));
    double lat = ttft;
    for (int i = 0; i < n_itl; i++) {
        r.itl_s[i] = itl[i];
        lat += itl[i];
    }
    r.n_itl = r.cap_itl = n_itl;
    r.latency_s = lat;
    if (!ok)
        r.error = strdup("boom");
    return r;
}

static void test_metrics(void **state) {
    (void)state;
    double i0[] = {0.05, 0.05, 0.1}, i3[] = {0.25};
    sp_lg_result res[4] = {
        mk(true, 0.0, 0.1, i0, 3, 4, 10),   // e2el 0.3, tpot 0.2 / 3
        mk(true, 0.5, 0.2, NULL, 0, 1, 20), // one token: no TPOT (0 for goodput)
        mk(false, 0.6, 0, NULL, 0, 0, 30),
        mk(true, 0.25, 0.5, i3, 1, 2, 5), // e2el 0.75: overlaps the first two
    };
    double pcts[] = {50, 99};
    sp_lg_metrics m;
    assert_int_equal(sp_lg_metrics_compute(res, 4, 2.0, NULL, pcts, 2, &m), SP_OK);
    assert_int_equal(m.completed, 3);
    assert_int_equal(m.failed, 1);
    assert_int_equal(m.total_input, 35); // successful requests only
    assert_int_equal(m.total_output, 7);
    assert_near(m.request_throughput, 1.5, 1e-12);
    assert_near(m.output_throughput, 3.5, 1e-12);
    assert_near(m.total_token_throughput, 21.0, 1e-12);
    assert_false(m.has_goodput);
    // TTFT: {100, 200, 500} ms.
    assert_near(m.ttft_ms.mean, 800.0 / 3, 1e-9);
    assert_near(m.ttft_ms.median, 200, 1e-9);
    assert_near(m.ttft_ms.pct_val[1], 200 + 300 * 0.98, 1e-9); // index 1.98
    assert_near(
        m.ttft_ms.std,
        sqrt(((100 - 800.0 / 3) * (100 - 800.0 / 3) + (200 - 800.0 / 3) * (200 - 800.0 / 3) +
              (500 - 800.0 / 3) * (500 - 800.0 / 3)) /
             3),
        1e-9);
    // TPOT excludes the first token and one-token requests: {200/3, 250} ms.
    assert_int_equal(m.tpot_ms.n, 2);
    assert_near(m.tpot_ms.mean, (200.0 / 3 + 250) / 2, 1e-9);
    // ITL pools every gap: {50, 50, 100, 250}.
    assert_int_equal(m.itl_ms.n, 4);
    assert_near(m.itl_ms.mean, 112.5, 1e-9);
    assert_near(m.itl_ms.median, 75, 1e-9);
    // E2EL: {300, 200, 750}.
    assert_near(m.e2el_ms.median, 300, 1e-9);
    // Peaks: token times 0.1 0.15 0.2 0.3 | 0.7 | 0.75 1.0 from the first start: six in the
    // first one-second bucket, one in the second; at most two requests overlap.
    assert_near(m.max_output_tokens_per_s, 6, 0);
    assert_int_equal(m.max_concurrent_requests, 2);

    // Goodput: every given objective must hold (SLO >= value).
    sp_lg_slo slo = {.ttft_ms = 200, .tpot_ms = -1, .e2el_ms = -1};
    assert_int_equal(sp_lg_metrics_compute(res, 4, 2.0, &slo, pcts, 2, &m), SP_OK);
    assert_true(m.has_goodput);
    assert_near(m.request_goodput, 1.0, 1e-12); // 100 and 200 ms pass
    slo = (sp_lg_slo){.ttft_ms = 1000, .tpot_ms = 100, .e2el_ms = -1};
    assert_int_equal(sp_lg_metrics_compute(res, 4, 2.0, &slo, pcts, 2, &m), SP_OK);
    assert_near(m.request_goodput, 1.0, 1e-12); // 66.7 and 0 pass, 250 fails
    slo = (sp_lg_slo){.ttft_ms = -1, .tpot_ms = -1, .e2el_ms = 299};
    assert_int_equal(sp_lg_metrics_compute(res, 4, 2.0, &slo, pcts, 2, &m), SP_OK);
    assert_near(m.request_goodput, 0.5, 1e-12);

    // The JSON carries vLLM's names.
    sp_lg_run_info info = {.date = "20250101-000000",
                           .backend = "openai",
                           .endpoint = "/v1/x",
                           .model_id = "m",
                           .dataset = "random",
                           .num_prompts = 4,
                           .request_rate = INFINITY,
                           .burstiness = 1.0};
    sp_lg_server_counters delta = {.valid = true, .preemptions = 2, .prefix_hit_tokens = 64};
    json_t *j = sp_lg_result_json(&info, &m, res, 4, &delta);
    assert_non_null(j);
    static const char *const keys[] = {"date",
                                       "backend",
                                       "model_id",
                                       "num_prompts",
                                       "request_rate",
                                       "burstiness",
                                       "max_concurrency",
                                       "duration",
                                       "completed",
                                       "failed",
                                       "total_input_tokens",
                                       "total_output_tokens",
                                       "request_throughput",
                                       "request_goodput",
                                       "output_throughput",
                                       "total_token_throughput",
                                       "mean_ttft_ms",
                                       "median_ttft_ms",
                                       "std_ttft_ms",
                                       "p99_ttft_ms",
                                       "p50_ttft_ms",
                                       "mean_tpot_ms",
                                       "median_tpot_ms",
                                       "std_tpot_ms",
                                       "p99_tpot_ms",
                                       "mean_itl_ms",
                                       "median_itl_ms",
                                       "std_itl_ms",
                                       "p99_itl_ms",
                                       "mean_e2el_ms",
                                       "median_e2el_ms",
                                       "std_e2el_ms",
                                       "p99_e2el_ms",
                                       "input_lens",
                                       "output_lens",
                                       "ttfts",
                                       "itls",
                                       "errors",
                                       "max_output_tokens_per_s",
                                       "max_concurrent_requests"};
    for (size_t i = 0; i < SP_ARRAY_LEN(keys); i++)
        if (!json_object_get(j, keys[i]))
            fail_msg("missing '%s'", keys[i]);
    assert_string_equal(json_string_value(json_object_get(j, "request_rate")), "inf");
    assert_true(json_is_null(json_object_get(j, "max_concurrency")));
    assert_int_equal(json_integer_value(json_object_get(j, "completed")), 3);
    assert_int_equal(json_array_size(json_object_get(j, "itls")), 4);
    assert_int_equal(json_array_size(json_array_get(json_object_get(j, "itls"), 0)), 3);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "errors"), 2)), "boom");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(j, "output_lens"), 2)), 0);
    assert_true(json_real_value(
                    json_object_get(json_object_get(j, "server_metrics"), "num_preemptions")) == 2);
    json_decref(j);

    // The SVG: CDFs for one run; the throughput-latency panels for a sweep.
    double a[] = {1, 2, 3}, b[] = {2, 4};
    sp_lg_plot_run runs[2] = {
        {.label = "rate 1 <&>",
         .ttft_ms = a,
         .tpot_ms = a,
         .e2el_ms = a,
         .n_ttft = 3,
         .n_tpot = 3,
         .n_e2el = 3,
         .m = &m},
        {.label = "rate 2",
         .ttft_ms = b,
         .tpot_ms = b,
         .e2el_ms = b,
         .n_ttft = 2,
         .n_tpot = 2,
         .n_e2el = 2,
         .m = &m},
    };
    char path[4096];
    snprintf(path, sizeof path, "%s/p.svg", sp_test_tmpdir());
    for (int n = 1; n <= 2; n++) {
        assert_int_equal(sp_lg_plot_svg(path, runs, n, "t"), SP_OK);
        char *svg = sp_test_read_file(path, NULL);
        assert_true(!strncmp(svg, "<?xml", 5));
        assert_non_null(strstr(svg, "<svg "));
        assert_non_null(strstr(svg, "TTFT CDF"));
        assert_non_null(strstr(svg, "rate 1 &lt;&amp;&gt;"));
        assert_non_null(strstr(svg, "</svg>\n"));
        assert_true((strstr(svg, "Throughput vs TTFT") != NULL) == (n == 2));
        free(svg);
    }
    assert_int_equal(sp_lg_plot_svg("/nonexistent/dir/p.svg", runs, 1, "t"), SP_ERR_IO);
    for (int i = 0; i < 4; i++)
        sp_lg_result_free(&res[i]);
}

static void test_prometheus(void **state) {
    (void)state;
    const char *text = "# HELP spindle_engine_steps_total Steps.\n"
                       "# TYPE spindle_engine_steps_total counter\n"
                       "spindle_engine_steps_total 1234\n"
                       "spindle_engine_steps_total_extra 5\n"
                       "spindle_request_success_total{finished_reason=\"stop\"} 3\n"
                       "spindle_request_success_total{finished_reason=\"len}gth\"} 4.5\n"
                       "spindle_num_preemptions_total 7\n"
                       "spindle_prefix_cache_hits_total 2.5e3";
    double v;
    assert_true(sp_lg_prom_sum(text, "spindle_engine_steps_total", &v) && v == 1234);
    assert_true(sp_lg_prom_sum(text, "spindle_request_success_total", &v) && v == 7.5);
    assert_false(sp_lg_prom_sum(text, "spindle_missing", &v));
    sp_lg_server_counters c;
    sp_lg_server_counters_parse(text, &c);
    assert_true(c.valid && c.preemptions == 7 && c.prefix_hit_tokens == 2500);
    sp_lg_server_counters_parse("vllm:num_requests_running 3\n", &c);
    assert_false(c.valid); // not Spindle
}

/* ---- Against the stub endpoint over loopback ----------------------------------------------- */

typedef struct stub_proc {
    pid_t pid;
    int port;
} stub_proc;

static void write_port(int port, void *ctx) {
    int fd = *(int *)ctx;
    assert_true(write(fd, &port, sizeof port) == sizeof port);
}

static stub_proc stub_start(double itl_ms) {
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); // a failed test must not leave the server behind
        close(p[0]);
        sp_err err = sp_lg_stub_serve(0, itl_ms, NULL, true, write_port, &p[1]);
        _exit(err == SP_OK ? 0 : 1);
    }
    close(p[1]);
    stub_proc s = {.pid = pid};
    assert_true(read(p[0], &s.port, sizeof s.port) == sizeof s.port);
    close(p[0]);
    return s;
}

static void stub_stop(stub_proc *s) {
    kill(s->pid, SIGTERM);
    int st = 0;
    assert_int_equal(waitpid(s->pid, &st, 0), s->pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static sp_lg_target target_for(int port) {
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    sp_lg_target t;
    sp_diag d;
    assert_int_equal(sp_lg_target_parse(url, &t, &d), SP_OK);
    return t;
}

static const char *const k_words[] = {"one", "two", "three"};

static void test_run_paced_stub(void **state) {
    (void)state;
    stub_proc s = stub_start(20.0); // a chunk every 20 ms
    sp_lg_target t = target_for(s.port);
    sp_lg_ds_opts dso = {
        .kind = SP_LG_DS_RANDOM, .num_prompts = 12, .input_len = 8, .output_len = 4, .seed = 1};
    sp_lg_dataset ds;
    sp_diag d;
    assert_int_equal(sp_lg_dataset_build(&dso, (sp_lg_words){k_words, 3}, &ds, &d), SP_OK);
    sp_lg_run_opts o = {.target = &t,
                        .endpoint = "/v1/completions",
                        .body = {.ignore_eos = true, .temperature = -1},
                        .request_rate = INFINITY,
                        .burstiness = 1,
                        .max_concurrency = 3,
                        .n_special = 1};
    sp_lg_result res[12];
    double dur = 0;
    assert_int_equal(sp_lg_run(&o, &ds, res, &dur, &d), SP_OK);
    double itl_sum = 0;
    int itl_n = 0;
    int queued = 0;
    for (int i = 0; i < 12; i++) {
        if (!res[i].success)
            fail_msg("request %d: %s", i, res[i].error);
        assert_int_equal(res[i].http_status, 200);
        assert_int_equal(res[i].output_tokens, 4); // from the usage chunk
        assert_int_equal(res[i].prompt_len, 8);    // the stub's usage says 8
        assert_int_equal(res[i].n_chunks, 4);
        assert_int_equal(res[i].n_itl, 3);
        // Three 20 ms gaps after the first token.
        assert_true(res[i].latency_s - res[i].ttft_s >= 0.055);
        for (int k = 0; k < 3; k++)
            itl_sum += res[i].itl_s[k], itl_n++;
        queued += res[i].queue_s > 0.04;
    }
    double mean_itl = itl_sum / itl_n;
    assert_true(mean_itl > 0.015 && mean_itl < 0.1);
    // Under the cap of 3, 12 requests go in about four waves of ~60 ms.
    assert_true(queued >= 6);
    assert_true(dur >= 0.2 && dur < 5);
    sp_lg_metrics m;
    double p99 = 99;
    assert_int_equal(sp_lg_metrics_compute(res, 12, dur, NULL, &p99, 1, &m), SP_OK);
    assert_true(m.max_concurrent_requests <= 3);
    for (int i = 0; i < 12; i++)
        sp_lg_result_free(&res[i]);
    sp_lg_dataset_free(&ds);
    stub_stop(&s);
}

/* A chat stream opens with a role-only chunk at once; the first token follows 30 ms later. The
 * role chunk must not count as the first token. */
static void test_run_chat_role_chunk(void **state) {
    (void)state;
    stub_proc s = stub_start(30.0);
    sp_lg_target t = target_for(s.port);
    sp_lg_ds_opts dso = {
        .kind = SP_LG_DS_RANDOM, .num_prompts = 4, .input_len = 8, .output_len = 3, .seed = 1};
    sp_lg_dataset ds;
    sp_diag d;
    assert_int_equal(sp_lg_dataset_build(&dso, (sp_lg_words){k_words, 3}, &ds, &d), SP_OK);
    sp_lg_run_opts o = {.target = &t,
                        .endpoint = "/v1/chat/completions",
                        .body = {.chat = true, .ignore_eos = true, .temperature = -1},
                        .request_rate = INFINITY,
                        .burstiness = 1};
    sp_lg_result res[4];
    double dur = 0;
    assert_int_equal(sp_lg_run(&o, &ds, res, &dur, &d), SP_OK);
    for (int i = 0; i < 4; i++) {
        assert_true(res[i].success);
        assert_int_equal(res[i].n_chunks, 3);
        assert_int_equal(res[i].n_itl, 2);
        assert_int_equal(res[i].output_tokens, 3);
        assert_true(res[i].ttft_s >= 0.025);
        sp_lg_result_free(&res[i]);
    }
    sp_lg_dataset_free(&ds);
    stub_stop(&s);
}

static void test_run_rate_and_multi_turn(void **state) {
    (void)state;
    stub_proc s = stub_start(0);
    sp_lg_target t = target_for(s.port);
    sp_diag d;
    // 40 Poisson arrivals at 40/s: the last one is scheduled at exactly 1 s.
    sp_lg_ds_opts dso = {
        .kind = SP_LG_DS_RANDOM, .num_prompts = 40, .input_len = 4, .output_len = 2, .seed = 2};
    sp_lg_dataset ds;
    assert_int_equal(sp_lg_dataset_build(&dso, (sp_lg_words){k_words, 3}, &ds, &d), SP_OK);
    sp_lg_run_opts o = {.target = &t,
                        .endpoint = "/v1/completions",
                        .body = {.ignore_eos = true, .temperature = -1},
                        .request_rate = 40,
                        .burstiness = 1,
                        .seed = 3};
    sp_lg_result res[40];
    double dur = 0;
    assert_int_equal(sp_lg_run(&o, &ds, res, &dur, &d), SP_OK);
    assert_true(dur >= 0.99 && dur < 1.5);
    double last = 0;
    for (int i = 0; i < 40; i++) {
        assert_true(res[i].success);
        last = SP_MAX(last, res[i].start_s);
        sp_lg_result_free(&res[i]);
    }
    assert_true(last >= 0.99 && last < 1.2);
    sp_lg_dataset_free(&ds);

    // Multi-turn: 2 sessions of 3 turns; a turn starts after the previous one ended.
    dso = (sp_lg_ds_opts){.kind = SP_LG_DS_MULTI_TURN,
                          .num_prompts = 6,
                          .input_len = 4,
                          .output_len = 3,
                          .turns = 3,
                          .seed = 4};
    assert_int_equal(sp_lg_dataset_build(&dso, (sp_lg_words){k_words, 3}, &ds, &d), SP_OK);
    o.request_rate = INFINITY;
    o.think_time_s = 0.05;
    o.body.chat = false;
    sp_lg_result mt[6];
    assert_int_equal(sp_lg_run(&o, &ds, mt, &dur, &d), SP_OK);
    for (int i = 0; i < 6; i++) {
        assert_true(mt[i].success);
        assert_string_equal(mt[i].text, " word word word"); // kept for the history
        if (i % 3)
            assert_true(mt[i].start_s >= mt[i - 1].start_s + mt[i - 1].latency_s);
    }
    assert_true(dur > 0.05); // two think times per session, exponential with mean 50 ms
    for (int i = 0; i < 6; i++)
        sp_lg_result_free(&mt[i]);
    sp_lg_dataset_free(&ds);
    stub_stop(&s);
}

static void test_run_refused(void **state) {
    (void)state;
    // A port with nobody listening.
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    sp_lg_target t = target_for(ntohs(a.sin_port));
    sp_diag d;
    sp_lg_ds_opts dso = {
        .kind = SP_LG_DS_RANDOM, .num_prompts = 5, .input_len = 4, .output_len = 2};
    sp_lg_dataset ds;
    assert_int_equal(sp_lg_dataset_build(&dso, (sp_lg_words){k_words, 3}, &ds, &d), SP_OK);
    sp_lg_run_opts o = {.target = &t,
                        .endpoint = "/v1/completions",
                        .request_rate = INFINITY,
                        .burstiness = 1,
                        .body = {.temperature = -1}};
    sp_lg_result res[5];
    double dur;
    assert_int_equal(sp_lg_run(&o, &ds, res, &dur, &d), SP_OK);
    for (int i = 0; i < 5; i++) {
        assert_false(res[i].success);
        assert_non_null(strstr(res[i].error, "refused"));
        sp_lg_result_free(&res[i]);
    }
    // The blocking fetch fails the same way.
    int status;
    char *body = NULL;
    assert_int_equal(sp_lg_fetch(&t, "GET", "/metrics", NULL, 1000, &status, &body, NULL, &d),
                     SP_ERR_IO);
    sp_lg_dataset_free(&ds);
    // URLs.
    sp_lg_target u;
    assert_int_equal(sp_lg_target_parse("https://x", &u, &d), SP_ERR_INVALID);
    assert_int_equal(sp_lg_target_parse("http://127.0.0.1:80x", &u, &d), SP_ERR_INVALID);
    assert_int_equal(sp_lg_target_parse("http://127.0.0.1:9/api/", &u, &d), SP_OK);
    assert_string_equal(u.prefix, "/api");
    assert_string_equal(u.host_header, "127.0.0.1:9");
    assert_int_equal(sp_lg_target_parse("127.0.0.1", &u, &d), SP_OK);
}

static void test_fetch_stub(void **state) {
    (void)state;
    stub_proc s = stub_start(0);
    sp_lg_target t = target_for(s.port);
    int status = 0;
    char *body = NULL;
    size_t len = 0;
    sp_diag d;
    assert_int_equal(sp_lg_fetch(&t, "POST", "/v1/completions", "{\"max_tokens\": 2}", 5000,
                                 &status, &body, &len, &d),
                     SP_OK);
    assert_int_equal(status, 200);
    assert_int_equal(strlen(body), len);
    assert_non_null(strstr(body, "\"completion_tokens\":2"));
    assert_non_null(strstr(body, "data: [DONE]\n\n"));
    free(body);
    stub_stop(&s);
}

/* ---- A scripted server: stale keep-alive connections and silence --------------------------- */

enum { SCRIPT_CLOSE_SECOND, SCRIPT_SILENT };

/* Reads one request (headers and Content-Length body); false at EOF. */
static bool read_request(int fd) {
    char buf[8192];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            return false;
        len += (size_t)n;
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            char *cl = strcasestr(buf, "Content-Length:");
            size_t want = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
            if (len >= want)
                return true;
        }
    }
}

/* SCRIPT_CLOSE_SECOND answers the first request on each connection (a Content-Length SSE
 * body) and closes the connection when a second one arrives, as a server whose keep-alive
 * timeout fired just then would. SCRIPT_SILENT reads requests and never answers. */
static stub_proc script_start(int mode) {
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 16), 0);
    getsockname(lfd, (struct sockaddr *)&a, &al);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        static const char body[] =
            "data: {\"choices\":[{\"index\":0,\"text\":\" a\",\"finish_reason\":null}]}\n\n"
            "data: {\"choices\":[{\"index\":0,\"text\":\" b\",\"finish_reason\":\"length\"}]}\n\n"
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n"
            "data: [DONE]\n\n";
        char resp[1024];
        int rl = snprintf(resp, sizeof resp,
                          "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                          "Content-Length: %zu\r\n\r\n%s",
                          sizeof body - 1, body);
        for (;;) {
            int fd = accept(lfd, NULL, NULL);
            if (fd < 0)
                _exit(0);
            if (!read_request(fd)) {
                close(fd);
                continue;
            }
            if (mode == SCRIPT_SILENT)
                continue; // keep the connection open and say nothing
            if (write(fd, resp, (size_t)rl) != rl)
                _exit(1);
            read_request(fd); // the next request on this connection: hang up on it
            close(fd);
        }
    }
    close(lfd);
    return (stub_proc){.pid = pid, .port = ntohs(a.sin_port)};
}

static void script_stop(stub_proc *s) {
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
}

static void test_run_stale_keep_alive(void **state) {
    (void)state;
    stub_proc s = script_start(SCRIPT_CLOSE_SECOND);
    sp_lg_target t = target_for(s.port);
    sp_lg_ds_opts dso = {
        .kind = SP_LG_DS_RANDOM, .num_prompts = 4, .input_len = 4, .output_len = 2};
    sp_lg_dataset ds;
    sp_diag d;
    assert_int_equal(sp_lg_dataset_build(&dso, (sp_lg_words){k_words, 3}, &ds, &d), SP_OK);
    // One at a time, so every request after the first reuses a kept-alive connection that the
    // server then closes: each must be sent again on a fresh connection and succeed.
    sp_lg_run_opts o = {.target = &t,
                        .endpoint = "/v1/completions",
                        .request_rate = INFINITY,
                        .burstiness = 1,
                        .max_concurrency = 1,
                        .body = {.temperature = -1}};
    sp_lg_result res[4];
    double dur;
    assert_int_equal(sp_lg_run(&o, &ds, res, &dur, &d), SP_OK);
    for (int i = 0; i < 4; i++) {
        if (!res[i].success)
            fail_msg("request %d: %s", i, res[i].error);
        assert_int_equal(res[i].output_tokens, 2);
        assert_int_equal(res[i].prompt_len, 3);
        assert_int_equal(res[i].n_itl, 1);
        sp_lg_result_free(&res[i]);
    }
    sp_lg_dataset_free(&ds);
    script_stop(&s);
}

static void test_run_timeout(void **state) {
    (void)state;
    stub_proc s = script_start(SCRIPT_SILENT);
    sp_lg_target t = target_for(s.port);
    sp_lg_ds_opts dso = {
        .kind = SP_LG_DS_RANDOM, .num_prompts = 3, .input_len = 4, .output_len = 2};
    sp_lg_dataset ds;
    sp_diag d;
    assert_int_equal(sp_lg_dataset_build(&dso, (sp_lg_words){k_words, 3}, &ds, &d), SP_OK);
    sp_lg_run_opts o = {.target = &t,
                        .endpoint = "/v1/completions",
                        .request_rate = INFINITY,
                        .burstiness = 1,
                        .timeout_s = 0.3,
                        .body = {.temperature = -1}};
    sp_lg_result res[3];
    double dur;
    int64_t t0 = sp_time_ns();
    assert_int_equal(sp_lg_run(&o, &ds, res, &dur, &d), SP_OK);
    double took = (double)(sp_time_ns() - t0) / 1e9;
    assert_true(took >= 0.3 && took < 3.0);
    for (int i = 0; i < 3; i++) {
        assert_false(res[i].success);
        assert_non_null(strstr(res[i].error, "timed out"));
        sp_lg_result_free(&res[i]);
    }
    sp_lg_dataset_free(&ds);
    script_stop(&s);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_prometheus),
        cmocka_unit_test(test_run_paced_stub),
        cmocka_unit_test(test_run_chat_role_chunk),
        cmocka_unit_test(test_run_rate_and_multi_turn),
        cmocka_unit_test(test_run_refused),
        cmocka_unit_test(test_fetch_stub),
        cmocka_unit_test(test_run_stale_keep_alive),
        cmocka_unit_test(test_run_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
