/* `spindle roofline`: what this machine allows. Measures memory bandwidth (a STREAM-style
 * triad over arrays far larger than the caches, on all threads) and the arithmetic peak of
 * Spindle's own kernels on cache-resident data (int8 via the Q8_0 kernel, F32 via the F32
 * kernel), then, for a model, the bytes and operations of one decode step at batch 1, 8, 32
 * and 64 and of a prefill, and the throughput bounds they imply. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "base/threadpool.h"
#include "base/util.h"
#include "model/model.h"
#include "tensor/kernels.h"
#include "tensor/quant.h"

typedef struct triad_job {
    float *a, *b, *c;
    int64_t n;
} triad_job;

static void triad_worker(void *ctx, int ith, int nth) {
    triad_job *j = ctx;
    int64_t i0, i1;
    sp_split_range(j->n, 1024, ith, nth, &i0, &i1);
    const float s = 3.0f;
    for (int64_t i = i0; i < i1; i++)
        j->a[i] = j->b[i] + s * j->c[i];
}

static void init_worker(void *ctx, int ith, int nth) {
    triad_job *j = ctx;
    int64_t i0, i1;
    sp_split_range(j->n, 1024, ith, nth, &i0, &i1);
    for (int64_t i = i0; i < i1; i++) {
        j->a[i] = 0.0f;
        j->b[i] = 1.0f;
        j->c[i] = 2.0f;
    }
}

/* Best triad bandwidth in GB/s over a few repetitions, counting 3 arrays as STREAM does. */
static double measure_bandwidth(sp_threadpool *pool, size_t bytes_per_array) {
    triad_job j = {.n = (int64_t)(bytes_per_array / sizeof(float))};
    j.a = aligned_alloc(64, bytes_per_array);
    j.b = aligned_alloc(64, bytes_per_array);
    j.c = aligned_alloc(64, bytes_per_array);
    if (!j.a || !j.b || !j.c) {
        free(j.a);
        free(j.b);
        free(j.c);
        return 0.0;
    }
    sp_threadpool_run(pool, init_worker, &j); // first touch on the threads that use the pages
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        int64_t t0 = sp_time_ns();
        sp_threadpool_run(pool, triad_worker, &j);
        double s = (double)(sp_time_ns() - t0) / 1e9;
        best = SP_MAX(best, 3.0 * (double)bytes_per_array / s / 1e9);
    }
    free(j.a);
    free(j.b);
    free(j.c);
    return best;
}

typedef struct mm_job {
    const sp_kernels *k;
    sp_dtype wt;
    const void *w;
    size_t wrb;
    const void *x;
    size_t xrb;
    int64_t n_in, n_out, n_rows, reps;
    float *y; // (threads, n_rows, n_out)
    bool packed; // w is in the table's packed layout
} mm_job;

static void mm_worker(void *ctx, int ith, int nth) {
    (void)nth;
    mm_job *j = ctx;
    float *y = j->y + (size_t)ith * (size_t)(j->n_rows * j->n_out);
    const sp_matmul_fn mm = j->packed ? j->k->matmul_packed[j->wt] : j->k->matmul[j->wt];
    for (int64_t r = 0; r < j->reps; r++)
        mm(j->w, j->wrb, j->x, j->xrb, j->n_in, j->n_rows, y, j->n_out, 0, j->n_out);
}

/* Multiply-adds per second x 2 (GOP/s) of a kernel on a cache-resident weight matrix, every
 * thread working on its own copy of the output; through the table's packed layout when it has
 * one for the type, as the forward pass uses it. Quantized weights: 128 x 2048 and 256 activation
 * rows (enough rows for the kernel's full rate: a prefill runs hundreds; ~0.8 MB per thread); F32:
 * 64 x 1024 and 32 rows (~0.4 MB, within a core's L2). */
static double measure_peak(sp_threadpool *pool, sp_dtype wt) {
    const bool f32 = wt == SP_DTYPE_F32;
    const int64_t n_in = f32 ? 1024 : 2048, n_out = f32 ? 64 : 128, n_rows = f32 ? 32 : 256;
    const sp_dtype vt = sp_dtype_vec_dot_type(wt);
    uint64_t wrb, xrb;
    if (sp_dtype_row_bytes(wt, (uint64_t)n_in, &wrb) || sp_dtype_row_bytes(vt, (uint64_t)n_in, &xrb))
        return 0.0;
    int nth = sp_threadpool_n_threads(pool);
    uint8_t *w = malloc(wrb * (uint64_t)n_out), *x = malloc(xrb * (uint64_t)n_rows);
    float *row = malloc((size_t)n_in * sizeof(float));
    float *y = malloc((size_t)nth * (size_t)(n_rows * n_out) * sizeof(float));
    double best = 0.0;
    if (w && x && row && y) {
        uint64_t s = 1;
        for (int64_t r = 0; r < SP_MAX(n_out, n_rows); r++) {
            for (int64_t i = 0; i < n_in; i++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                row[i] = (float)((int64_t)(s >> 40) - (1 << 23)) / (float)(1 << 23);
            }
            if (r < n_out)
                sp_quantize_row(wt, row, w + (uint64_t)r * wrb, n_in);
            if (r < n_rows)
                sp_quantize_act_row(vt, row, x + (uint64_t)r * xrb, n_in);
        }
        const sp_kernels *k = sp_kernels_get();
        mm_job j = {.k = k, .wt = wt, .w = w, .wrb = wrb, .x = x, .xrb = xrb, .n_in = n_in,
                    .n_out = n_out, .n_rows = n_rows, .reps = f32 ? 100 : 8, .y = y};
        const size_t pb = k->pack_bytes ? k->pack_bytes(wt, n_in, n_out) : 0;
        void *packed = pb ? malloc(pb) : NULL;
        void *xp = pb ? malloc(k->act_pack_bytes(vt, n_in, n_rows)) : NULL;
        if (packed && xp) {
            k->pack(wt, w, wrb, n_in, n_out, packed);
            for (int64_t r = 0; r < n_rows; r++)
                k->act_pack(vt, x + (uint64_t)r * xrb, n_in, r, n_rows, xp);
            j.w = packed;
            j.x = xp;
            j.packed = true;
        }
        for (int rep = 0; rep < 3; rep++) {
            int64_t t0 = sp_time_ns();
            sp_threadpool_run(pool, mm_worker, &j);
            double sec = (double)(sp_time_ns() - t0) / 1e9;
            double ops = 2.0 * (double)(n_in * n_out * n_rows) * (double)j.reps * nth;
            best = SP_MAX(best, ops / sec / 1e9);
        }
        free(packed);
        free(xp);
    }
    free(w);
    free(x);
    free(row);
    free(y);
    return best;
}

static void roofline_usage(FILE *f) {
    fprintf(f,
            "usage: spindle roofline [-m MODEL.gguf] [-t N] [--ctx N] [--mem-mib N]\n\n"
            "Measures memory bandwidth (triad, all threads, arrays of --mem-mib MiB each, default\n"
            "1024, so that they exceed the caches) and the arithmetic peak of Spindle's kernels\n"
            "on cache-resident data (int8: Q8_0 kernel; F32: F32 kernel). With a model, prints\n"
            "the bytes and operations of one decode step at batch 1, 8, 32 and 64 with --ctx\n"
            "tokens of context each (default 512), and of the prefill of a --ctx-token prompt,\n"
            "and the tokens/s bounds they imply (matrices at the int8 peak, attention at the F32\n"
            "peak).\n");
}

int sp_cmd_roofline(int argc, char **argv) {
    const char *model_path = NULL;
    int32_t n_threads = 0, ctx = 512, mem_mib = 1024;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            roofline_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "spindle roofline: option '%s' needs a value (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        char *end;
        long n = strtol(v, &end, 10);
        bool num = *v && !*end && n > 0 && n < (1L << 24);
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            model_path = v;
        else if ((!strcmp(a, "-t") || !strcmp(a, "--threads")) && num && n <= 1024)
            n_threads = (int32_t)n;
        else if (!strcmp(a, "--ctx") && num)
            ctx = (int32_t)n;
        else if (!strcmp(a, "--mem-mib") && num && n >= 16)
            mem_mib = (int32_t)n;
        else {
            fprintf(stderr, "spindle roofline: bad option or value: %s %s (see --help)\n", a, v);
            return 2;
        }
    }
    sp_threadpool *pool;
    if (sp_threadpool_create(n_threads, &pool)) {
        fprintf(stderr, "spindle roofline: cannot start threads\n");
        return 1;
    }
    const int nth = sp_threadpool_n_threads(pool);
    printf("machine: %d threads, kernels %s\n", nth, sp_kernels_get()->isa);
    double bw = measure_bandwidth(pool, (size_t)mem_mib << 20);
    double int8 = measure_peak(pool, SP_DTYPE_Q8_0);
    double f32 = measure_peak(pool, SP_DTYPE_F32);
    printf("memory bandwidth (triad, %d MiB arrays): %.1f GB/s\n", mem_mib, bw);
    printf("int8 peak (Q8_0 kernel, in cache):     %.1f GOP/s\n", int8);
    printf("f32 peak (F32 kernel, in cache):       %.1f GOP/s\n", f32);
    int rc = 0;
    if (model_path) {
        sp_model *m;
        sp_diag d;
        sp_diag_clear(&d);
        if (sp_model_load(model_path, &m, &d)) {
            fprintf(stderr, "spindle roofline: cannot load '%s': %s\n", model_path, d.msg);
            sp_threadpool_destroy(pool);
            return 1;
        }
        const sp_hparams *hp = &m->hp;
        double wbytes = (double)sp_model_weight_bytes(m);
        // Multiply-adds per token in the matrices: every weight value once.
        double params = 0.0;
        for (int il = 0; il < hp->n_layer; il++) {
            const sp_layer *L = &m->layers[il];
            const sp_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up,
                                     &L->w_down};
            for (size_t i = 0; i < SP_ARRAY_LEN(ws); i++)
                params += (double)ws[i]->ne[0] * (double)ws[i]->ne[1];
        }
        params += (double)m->output.ne[0] * (double)m->output.ne[1];
        double kv_per_token = (double)hp->n_layer * 2.0 * hp->n_head_kv * hp->head_dim * 2.0;
        // Scores and weighted values: 2 multiply-adds per head dimension and position.
        double att_ops_per_pos = 4.0 * (double)hp->n_layer * hp->n_head * hp->head_dim;
        printf("\nmodel %s: %.1f MiB of weights, %.0f M parameters in matrices, %d layers\n",
               model_path, wbytes / (1 << 20), params / 1e6, hp->n_layer);
        printf("decode step with %d tokens of context per sequence (F16 KV), and a prefill of a\n"
               "%d-token prompt (matrices at the int8 peak, attention at the F32 peak):\n",
               ctx, ctx);
        printf("%7s %12s %12s %14s %14s %14s\n", "batch", "MB read", "GOP", "bw bound tok/s",
               "op bound tok/s", "bound tok/s");
        const int batches[] = {1, 8, 32, 64};
        for (int i = 0; i <= (int)SP_ARRAY_LEN(batches); i++) {
            // Decode: b tokens, each reading its ctx positions; prefill: ctx tokens, token t
            // reading t + 1 positions, one pass over the weights.
            const bool prefill = i == (int)SP_ARRAY_LEN(batches);
            const double b = prefill ? ctx : batches[i];
            const double positions = prefill ? ctx * (ctx + 1.0) / 2.0 : b * ctx;
            const double bytes = wbytes + (prefill ? 0.0 : positions * kv_per_token);
            const double mat_ops = b * 2.0 * params, att = att_ops_per_pos * positions;
            const double bw_tok = bw > 0 ? b * bw * 1e9 / bytes : 0.0;
            const double op_s = (int8 > 0 ? mat_ops / (int8 * 1e9) : 0.0) +
                                (f32 > 0 ? att / (f32 * 1e9) : 0.0);
            const double op_tok = op_s > 0 ? b / op_s : 0.0;
            char label[16];
            snprintf(label, sizeof label, prefill ? "prefill" : "%d", (int)b);
            printf("%7s %12.1f %12.4g %14.1f %14.1f %14.1f\n", label, bytes / 1e6,
                   (mat_ops + att) / 1e9, bw_tok, op_tok, SP_MIN(bw_tok, op_tok));
        }
        sp_model_destroy(m);
    }
    sp_threadpool_destroy(pool);
    return rc;
}
