#include "loadgen/sampler.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "base/util.h"
#include "loadgen/report.h"

struct sp_lg_sampler {
    const sp_lg_target *target;
    double period_s;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    int64_t t0;
    double preempt0;
    bool have_preempt0;
    sp_lg_series s;
    size_t cap;
};

static void add_sample(sp_lg_sampler *s, double t, double used, double preempt) {
    if (s->s.n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        double *a = realloc(s->s.t, cap * sizeof(double));
        if (a)
            s->s.t = a;
        double *b = realloc(s->s.kv_used, cap * sizeof(double));
        if (b)
            s->s.kv_used = b;
        double *c = realloc(s->s.preemptions, cap * sizeof(double));
        if (c)
            s->s.preemptions = c;
        if (!a || !b || !c)
            return; // out of memory: the series ends here
        s->cap = cap;
    }
    s->s.t[s->s.n] = t;
    s->s.kv_used[s->s.n] = used;
    s->s.preemptions[s->s.n] = preempt;
    s->s.n++;
}

static void sample_once(sp_lg_sampler *s) {
    int status = 0;
    char *body = NULL;
    sp_diag d;
    const double t = (double)(sp_time_ns() - s->t0) / 1e9;
    if (sp_lg_fetch(s->target, "GET", "/metrics", NULL, 2000, &status, &body, NULL, &d) == SP_OK &&
        status == 200) {
        double used = 0, preempt = 0;
        if (sp_lg_prom_sum(body, "spindle_kv_cache_usage_perc", &used)) {
            sp_lg_prom_sum(body, "spindle_num_preemptions_total", &preempt);
            if (!s->have_preempt0) {
                s->preempt0 = preempt;
                s->have_preempt0 = true;
            }
            add_sample(s, t, used, preempt - s->preempt0);
        }
    }
    free(body);
}

static void *sampler_main(void *arg) {
    sp_lg_sampler *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        pthread_mutex_unlock(&s->mu);
        sample_once(s);
        pthread_mutex_lock(&s->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        const int64_t ns = until.tv_nsec + (int64_t)(s->period_s * 1e9);
        until.tv_sec += (time_t)(ns / 1000000000);
        until.tv_nsec = (long)(ns % 1000000000);
        while (!s->stop && pthread_cond_timedwait(&s->cv, &s->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

sp_err sp_lg_sampler_start(const sp_lg_target *t, double period_s, sp_lg_sampler **out) {
    SP_ASSERT(period_s > 0);
    sp_lg_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return SP_ERR_NOMEM;
    s->target = t;
    s->period_s = period_s;
    s->t0 = sp_time_ns();
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, sampler_main, s)) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return SP_ERR_NOMEM;
    }
    *out = s;
    return SP_OK;
}

void sp_lg_sampler_stop(sp_lg_sampler *s, sp_lg_series *series) {
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    *series = s->s;
    free(s);
}

void sp_lg_series_free(sp_lg_series *s) {
    free(s->t);
    free(s->kv_used);
    free(s->preemptions);
    *s = (sp_lg_series){0};
}
