/* The run-time kernel tables of tensor/kernels.h, for every table this CPU and build have
 * (scalar, avx2, avxvnni, avx512, amx). kernels.h defines one numerics for all of them, so
 * nearly everything here is bit for bit:
 *
 * - matmul of every weight type against sp_vec_dot_ref on random data of odd sizes (one block,
 *   a few blocks, many blocks; odd n_out; n_rows 1..9 and 33): every table equals it bit for
 *   bit, every type (the K-quants in depth in test_kquants).
 * - F32, F16 and BF16 products on every table equal, bit for bit, the 16-lane dot written here
 *   from kernels.h's definition (lanes by position mod 16, fmaf chains, halves added), for
 *   n_in with every tail length, 1..17 rows and odd output counts.
 * - Q8_0 and Q4_0 on every table equal a scalar model of whole-block int32 sums, one fmaf per
 *   block, written here from its definition: packed (pack + matmul_packed) and in the stored
 *   layout (matmul[]), 1..17 rows and more, outputs across the 8- and 16-output tiles, output
 *   pieces that start anywhere; including weights at -128 and 127.
 * - Packed weights go through pack + matmul_packed in every check (budgets, invariance).
 * - The invariance contract: y from one call over all rows equals (memcmp) y from one call per
 *   row, from calls over row windows, and from calls over arbitrary [o0, o1) pieces; a call
 *   writes nothing outside its rows and [o0, o1).
 * - quantize_act is bit-identical to sp_quantize_act_row for F32, F16, BF16, Q8_0 and Q8_K on
 *   random rows, zero blocks, exact rounding ties, and (F16, BF16) arbitrary bit patterns.
 * - sp__exp (exp.h), the exponential of every table: within 0.9 ulp of e^x over floats sampled
 *   across its whole range, and its ends (0, infinity, NaN).
 * - attention: each step (scores, softmax, values) of every table equals the scalar table's bit
 *   for bit, for odd positions, head sizes and GQA groups, F16 and F32 caches; the three steps
 *   together against a double-precision two-pass softmax, for odd block and head sizes; a head
 *   alone equals itself in its group and a token alone equals itself in a tile of tokens.
 * - swiglu: every table equals the scalar one bit for bit (NaN for NaN), across the float range,
 *   subnormal inputs and results, infinities; and silu(g) up in double within 8 u.
 * - round_f16 bit-identical to the scalar F16 round trip.
 * - SPINDLE_ISA picks the table, in child processes of this test (which read it fresh). */
#include "testutil.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/util.h"
#include "tensor/exp.h"
#include "tensor/kernels.h"
#include "tensor/quant.h"

static const char *const isa_names[] = {"scalar", "avx2", "avxvnni", "avx512", "amx"};

static size_t row_bytes(sp_dtype t, int64_t n) {
    uint64_t b = 0;
    assert_int_equal(sp_dtype_row_bytes(t, (uint64_t)n, &b), SP_OK);
    return (size_t)b;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

// ---------------------------------------------------------------- problems

typedef struct problem {
    sp_dtype wt, vt;
    int64_t n_in, n_out, n_rows;
    size_t wrb, xrb;
    uint8_t *w;  // (n_out, wrb): weights in wt
    uint8_t *xq; // (n_rows, xrb): activations in vt, from sp_quantize_act_row
    float *ref;  // (n_rows, n_out): sp_vec_dot_ref
} problem;

static int64_t block_size(sp_dtype t) {
    return sp_dtype_get(t)->block_size;
}

/* Random weights and activations: weight rows N(0,1) at scales 1/16..16; activation rows
 * N(0,1) at scales 1e-3..1e3, row 1 all zeros. Q8_0 weight row 0 starts with a block of
 * -128 and 127 (the extremes of the format). */
static problem make_problem(sp_dtype wt, int64_t n_in, int64_t n_out, int64_t n_rows,
                            uint64_t seed) {
    problem p = {
        .wt = wt, .vt = sp_dtype_vec_dot_type(wt), .n_in = n_in, .n_out = n_out, .n_rows = n_rows};
    p.wrb = row_bytes(wt, n_in);
    p.xrb = row_bytes(p.vt, n_in);
    p.w = xmalloc(p.wrb * (size_t)n_out);
    p.xq = xmalloc(p.xrb * (size_t)n_rows);
    p.ref = xmalloc(sizeof(float) * (size_t)(n_rows * n_out));
    float *f = xmalloc(sizeof(float) * (size_t)n_in);
    uint64_t rng = seed;
    for (int64_t o = 0; o < n_out; o++) {
        const float scale = ldexpf(1.0f, (int)(sp_test_rand(&rng) % 9) - 4);
        for (int64_t i = 0; i < n_in; i++)
            f[i] = scale * sp_test_randn(&rng);
        sp_quantize_row(wt, f, p.w + (size_t)o * p.wrb, n_in);
    }
    if (wt == SP_DTYPE_Q8_0) {
        sp_block_q8_0 *b = (sp_block_q8_0 *)p.w;
        for (int j = 0; j < SP_QK8_0; j++)
            b->qs[j] = (j % 3) ? -128 : 127;
    }
    for (int64_t r = 0; r < n_rows; r++) {
        const float scale = powf(10.0f, (float)(int)(sp_test_rand(&rng) % 7) - 3.0f);
        for (int64_t i = 0; i < n_in; i++)
            f[i] = r == 1 ? 0.0f : scale * sp_test_randn(&rng);
        sp_quantize_act_row(p.vt, f, p.xq + (size_t)r * p.xrb, n_in);
    }
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t o = 0; o < n_out; o++)
            p.ref[r * n_out + o] =
                sp_vec_dot_ref(wt, p.w + (size_t)o * p.wrb, p.xq + (size_t)r * p.xrb, n_in);
    free(f);
    return p;
}

static void free_problem(problem *p) {
    free(p->w);
    free(p->xq);
    free(p->ref);
}

/* Whether table k multiplies weights of type t in a packed layout of its own. */
static bool packs(const sp_kernels *k, sp_dtype t, int64_t n_in, int64_t n_out) {
    return k->pack_bytes && k->pack_bytes(t, n_in, n_out) > 0;
}

/* Rows [r0, r1), outputs [o0, o1), into y (rows ldy apart, row 0 = activation row 0). Weights
 * a table packs are packed first (into a buffer of exactly pack_bytes, so ASan catches reads
 * past it) and go through matmul_packed. */
static void run(const sp_kernels *k, const problem *p, int64_t r0, int64_t r1, int64_t o0,
                int64_t o1, float *y, int64_t ldy) {
    if (packs(k, p->wt, p->n_in, p->n_out)) {
        const size_t n = k->pack_bytes(p->wt, p->n_in, p->n_out);
        void *packed = xmalloc(n);
        k->pack(p->wt, p->w, p->wrb, p->n_in, p->n_out, packed);
        const sp_dtype vt = sp_dtype_vec_dot_type(p->wt);
        void *xp = xmalloc(k->act_pack_bytes(vt, p->n_in, r1 - r0));
        for (int64_t i = 0; i < r1 - r0; i++) { // rows may be packed in any order
            const int64_t r = (r0 + r1) % 2 ? r1 - 1 - i : r0 + i;
            k->act_pack(vt, p->xq + (size_t)r * p->xrb, p->n_in, r - r0, r1 - r0, xp);
        }
        assert_non_null(k->matmul_packed[p->wt]);
        k->matmul_packed[p->wt](packed, 0, xp, 0, p->n_in, r1 - r0, y + r0 * ldy, ldy, o0, o1);
        free(xp);
        free(packed);
        return;
    }
    assert_non_null(k->matmul[p->wt]);
    k->matmul[p->wt](p->w, p->wrb, p->xq + (size_t)r0 * p->xrb, p->xrb, p->n_in, r1 - r0,
                     y + r0 * ldy, ldy, o0, o1);
}

static void check_against_ref(const sp_kernels *k, const problem *p, const float *y, int64_t ldy) {
    for (int64_t r = 0; r < p->n_rows; r++)
        for (int64_t o = 0; o < p->n_out; o++) {
            const float got = y[r * ldy + o], want = p->ref[r * p->n_out + o];
            if (f32_bits(got) != f32_bits(want))
                fail_msg("%s %s n_in=%lld n_rows=%lld y[%lld][%lld] = %.9g, reference %.9g",
                         k->isa, sp_dtype_get(p->wt)->name, (long long)p->n_in,
                         (long long)p->n_rows, (long long)r, (long long)o, (double)got,
                         (double)want);
        }
}

static const sp_kernels *tables[SP_ARRAY_LEN(isa_names)];
static size_t n_tables;

static int setup_tables(void **state) {
    (void)state;
    n_tables = 0;
    for (size_t i = 0; i < SP_ARRAY_LEN(isa_names); i++) {
        const sp_kernels *k = sp_kernels_for(isa_names[i]);
        if (k)
            tables[n_tables++] = k;
        else
            print_message("[ info     ] no %s kernels on this CPU or build\n", isa_names[i]);
    }
    return 0;
}

// ---------------------------------------------------------------- tests

static void test_tables(void **state) {
    (void)state;
    assert_true(n_tables >= 1);
    assert_string_equal(tables[0]->isa, "scalar");
    assert_null(sp_kernels_for("sse9"));
    assert_null(sp_kernels_for(NULL));
    static const sp_dtype types[] = {SP_DTYPE_F32,  SP_DTYPE_F16,  SP_DTYPE_BF16, SP_DTYPE_Q8_0,
                                     SP_DTYPE_Q4_0, SP_DTYPE_Q4_K, SP_DTYPE_Q5_K, SP_DTYPE_Q6_K};
    for (size_t t = 0; t < n_tables; t++) {
        assert_ptr_equal(sp_kernels_for(tables[t]->isa), tables[t]);
        assert_non_null(tables[t]->quantize_act);
        for (size_t i = 0; i < SP_ARRAY_LEN(types); i++)
            assert_non_null(tables[t]->matmul[types[i]]);
    }
    // The default table is one of them, with every entry filled.
    const sp_kernels *def = sp_kernels_get();
    assert_non_null(def);
    bool found = false;
    for (size_t t = 0; t < n_tables; t++)
        found |= def == tables[t];
    assert_true(found);
}

/* Every x86 table multiplies K-quant weights packed (packed_k.h): the kernel files are linked
 * into the tables, and the model loader packs those matrices. */
static void test_kquants_packed(void **state) {
    (void)state;
    static const sp_dtype types[] = {SP_DTYPE_Q4_K, SP_DTYPE_Q5_K, SP_DTYPE_Q6_K};
    for (size_t t = 0; t < n_tables; t++) {
        if (!strcmp(tables[t]->isa, "scalar"))
            continue;
        for (size_t i = 0; i < SP_ARRAY_LEN(types); i++) {
            assert_non_null(tables[t]->matmul_packed[types[i]]);
            assert_true(packs(tables[t], types[i], 256 * 8, 2048));
        }
    }
}

static void check_type_vs_ref(sp_dtype wt, const int64_t *sizes, size_t n_sizes, uint64_t seed) {
    static const int64_t rows[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 33};
    for (size_t s = 0; s < n_sizes; s++)
        for (size_t i = 0; i < SP_ARRAY_LEN(rows); i++) {
            const int64_t n_out = 13 + 2 * (int64_t)(i % 3);
            problem p = make_problem(wt, sizes[s], n_out, rows[i], seed++);
            const int64_t ldy = n_out + 1;
            float *y = xmalloc(sizeof(float) * (size_t)(rows[i] * ldy));
            for (size_t t = 0; t < n_tables; t++) {
                run(tables[t], &p, 0, p.n_rows, 0, n_out, y, ldy);
                check_against_ref(tables[t], &p, y, ldy);
            }
            free(y);
            free_problem(&p);
        }
}

static void test_vs_ref_plain(void **state) {
    (void)state;
    static const int64_t sizes[] = {1, 7, 16, 29, 64, 1031};
    check_type_vs_ref(SP_DTYPE_F32, sizes, SP_ARRAY_LEN(sizes), 1000);
    check_type_vs_ref(SP_DTYPE_F16, sizes, SP_ARRAY_LEN(sizes), 2000);
    check_type_vs_ref(SP_DTYPE_BF16, sizes, SP_ARRAY_LEN(sizes), 3000);
}

static void test_vs_ref_q8_0_q4_0(void **state) {
    (void)state;
    static const int64_t sizes[] = {32, 96, 32 * 65};
    check_type_vs_ref(SP_DTYPE_Q8_0, sizes, SP_ARRAY_LEN(sizes), 4000);
    check_type_vs_ref(SP_DTYPE_Q4_0, sizes, SP_ARRAY_LEN(sizes), 5000);
}

static void test_vs_ref_k_quants(void **state) {
    (void)state;
    static const int64_t sizes[] = {256, 768, 256 * 9};
    check_type_vs_ref(SP_DTYPE_Q4_K, sizes, SP_ARRAY_LEN(sizes), 6000);
    check_type_vs_ref(SP_DTYPE_Q5_K, sizes, SP_ARRAY_LEN(sizes), 6500);
    check_type_vs_ref(SP_DTYPE_Q6_K, sizes, SP_ARRAY_LEN(sizes), 7000);
}

/* The numerics of Q8_0 and Q4_0 on every table (kernels.h), from their definition: per block the
 * exact int32 sum S of the 32 products (Q4_0 weights q - 8); acc = fmaf((float)S, f16(d_w) *
 * f16(d_x), acc), block by block from 0. */
static float block_sum_dot(sp_dtype wt, const uint8_t *w, const sp_block_q8_0 *x, int64_t nb) {
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int32_t s = 0;
        sp_f16 d;
        if (wt == SP_DTYPE_Q8_0) {
            const sp_block_q8_0 *wb = (const sp_block_q8_0 *)w + b;
            for (int j = 0; j < 32; j++)
                s += wb->qs[j] * x[b].qs[j];
            d = wb->d;
        } else {
            const sp_block_q4_0 *wb = (const sp_block_q4_0 *)w + b;
            for (int j = 0; j < 16; j++)
                s += ((wb->qs[j] & 15) - 8) * x[b].qs[j] + ((wb->qs[j] >> 4) - 8) * x[b].qs[j + 16];
            d = wb->d;
        }
        acc = fmaf((float)s, sp_f16_to_f32(d) * sp_f16_to_f32(x[b].d), acc);
    }
    return acc;
}

/* Packed Q8_0 and Q4_0 equal block_sum_dot bit for bit, for row counts across the 16-row tiles
 * (1-2 rows take the VNNI path) and output counts across the 16-output groups. */
static void test_packed_block_sums(void **state) {
    (void)state;
    static const sp_dtype types[] = {SP_DTYPE_Q8_0, SP_DTYPE_Q4_0};
    static const int64_t sizes[] = {32, 96, 32 * 67};
    static const int64_t rows[] = {1, 2, 5, 16, 17, 40};
    static const int64_t outs[] = {1, 16, 29, 50};
    uint64_t seed = 8500;
    size_t checked = 0;
    for (size_t ti = 0; ti < SP_ARRAY_LEN(types); ti++)
        for (size_t t = 0; t < n_tables; t++)
            for (size_t s = 0; s < SP_ARRAY_LEN(sizes); s++)
                for (size_t i = 0; i < SP_ARRAY_LEN(rows); i++) {
                    const sp_dtype wt = types[ti];
                    const int64_t n_out = outs[(s + i) % SP_ARRAY_LEN(outs)];
                    if (!packs(tables[t], wt, sizes[s], n_out))
                        continue;
                    problem p = make_problem(wt, sizes[s], n_out, rows[i], seed++);
                    float *y = xmalloc(sizeof(float) * (size_t)(p.n_rows * p.n_out));
                    run(tables[t], &p, 0, p.n_rows, 0, p.n_out, y, p.n_out);
                    for (int64_t r = 0; r < p.n_rows; r++)
                        for (int64_t o = 0; o < p.n_out; o++) {
                            const float want = block_sum_dot(
                                wt, p.w + (size_t)o * p.wrb,
                                (const sp_block_q8_0 *)(p.xq + (size_t)r * p.xrb), p.n_in / 32);
                            const float got = y[r * p.n_out + o];
                            if (f32_bits(got) != f32_bits(want))
                                fail_msg("%s packed %s n_in=%lld rows=%lld y[%lld][%lld] = %a, "
                                         "block sums %a",
                                         tables[t]->isa, sp_dtype_get(wt)->name, (long long)p.n_in,
                                         (long long)p.n_rows, (long long)r, (long long)o,
                                         (double)got, (double)want);
                            checked++;
                        }
                    free(y);
                    free_problem(&p);
                }
    if (checked == 0)
        print_message("[ info     ] no table packs Q8_0 or Q4_0 on this CPU: nothing to compare\n");
}

static const uint32_t sentinel = 0x7fc0dead; // a NaN no kernel produces

static void fill_sentinel(float *y, size_t n) {
    const float s = f32_from_bits(sentinel);
    for (size_t i = 0; i < n; i++)
        y[i] = s;
}

/* Q8_0 and Q4_0 rows in their stored layout (matmul[], which callers that do not pack use) equal
 * block_sum_dot and sp_vec_dot_ref bit for bit on every table, for 1..17 rows (and 40), output
 * counts across the 8-output tiles, and output pieces that start anywhere. */
static void test_unpacked_block_sums(void **state) {
    (void)state;
    static const sp_dtype types[] = {SP_DTYPE_Q8_0, SP_DTYPE_Q4_0};
    static const int64_t sizes[] = {32, 96, 32 * 67};
    static const int64_t outs[] = {1, 7, 8, 13, 29};
    uint64_t seed = 8700;
    for (size_t ti = 0; ti < SP_ARRAY_LEN(types); ti++)
        for (size_t s = 0; s < SP_ARRAY_LEN(sizes); s++)
            for (int64_t rows = 1; rows <= 18; rows++) {
                const sp_dtype wt = types[ti];
                const int64_t n_rows = rows == 18 ? 40 : rows;
                const int64_t n_out = outs[(s + (size_t)rows) % SP_ARRAY_LEN(outs)];
                problem p = make_problem(wt, sizes[s], n_out, n_rows, seed++);
                float *y = xmalloc(sizeof(float) * (size_t)(n_rows * n_out));
                for (size_t t = 0; t < n_tables; t++) {
                    fill_sentinel(y, (size_t)(n_rows * n_out));
                    // Outputs in pieces of 1..11 from a varying start.
                    for (int64_t o0 = 0, step = 1 + (int64_t)t; o0 < n_out;) {
                        const int64_t o1 = SP_MIN(n_out, o0 + step);
                        tables[t]->matmul[wt](p.w, p.wrb, p.xq, p.xrb, p.n_in, n_rows, y, n_out, o0,
                                              o1);
                        o0 = o1;
                        step = step % 11 + 1;
                    }
                    for (int64_t r = 0; r < n_rows; r++)
                        for (int64_t o = 0; o < n_out; o++) {
                            const float want = block_sum_dot(
                                wt, p.w + (size_t)o * p.wrb,
                                (const sp_block_q8_0 *)(p.xq + (size_t)r * p.xrb), p.n_in / 32);
                            const float got = y[r * n_out + o];
                            if (f32_bits(got) != f32_bits(want) ||
                                f32_bits(want) != f32_bits(p.ref[r * n_out + o]))
                                fail_msg("%s %s (stored layout) n_in=%lld rows=%lld y[%lld][%lld] "
                                         "= %a, block sums %a, sp_vec_dot_ref %a",
                                         tables[t]->isa, sp_dtype_get(wt)->name, (long long)p.n_in,
                                         (long long)n_rows, (long long)r, (long long)o, (double)got,
                                         (double)want, (double)p.ref[r * n_out + o]);
                        }
                }
                free(y);
                free_problem(&p);
            }
}

/* The F32/F16/BF16 dot of every table (kernels.h), from its definition: 16 lanes, lane i % 16 a
 * chain of fmaf over the positions i in order, then the halves added. */
static float lanes16_dot(const float *w, const float *x, int64_t n) {
    float lane[16] = {0};
    for (int64_t i = 0; i < n; i++)
        lane[i % 16] = fmaf(w[i], x[i], lane[i % 16]);
    for (int h = 8; h >= 1; h /= 2)
        for (int i = 0; i < h; i++)
            lane[i] += lane[i + h];
    return lane[0];
}

/* F32, F16 and BF16 products of every table equal lanes16_dot bit for bit: n_in with every tail
 * length (0..15 past a multiple of 16, and below 16), 1..17 rows, odd output counts. */
static void test_float_lanes(void **state) {
    (void)state;
    static const sp_dtype types[] = {SP_DTYPE_F32, SP_DTYPE_F16, SP_DTYPE_BF16};
    static const int64_t sizes[] = {1, 3, 8, 15, 16, 17, 24, 31, 33, 47, 64, 100, 517};
    uint64_t seed = 8800;
    for (size_t ti = 0; ti < SP_ARRAY_LEN(types); ti++)
        for (size_t s = 0; s < SP_ARRAY_LEN(sizes); s++)
            for (int64_t rows = 1; rows <= 17; rows += 1 + (int64_t)(s % 3)) {
                const sp_dtype wt = types[ti];
                const int64_t n_in = sizes[s], n_out = 5 + 2 * (rows % 3);
                problem p = make_problem(wt, n_in, n_out, rows, seed++);
                float *wd = xmalloc(sizeof(float) * (size_t)(n_in * n_out));
                float *xd = xmalloc(sizeof(float) * (size_t)(n_in * rows));
                for (int64_t o = 0; o < n_out; o++)
                    sp_dequantize_row(wt, p.w + (size_t)o * p.wrb, wd + o * n_in, n_in);
                for (int64_t r = 0; r < rows; r++)
                    sp_dequantize_row(p.vt, p.xq + (size_t)r * p.xrb, xd + r * n_in, n_in);
                float *y = xmalloc(sizeof(float) * (size_t)(rows * n_out));
                for (size_t t = 0; t < n_tables; t++) {
                    run(tables[t], &p, 0, rows, 0, n_out, y, n_out);
                    for (int64_t r = 0; r < rows; r++)
                        for (int64_t o = 0; o < n_out; o++) {
                            const float want = lanes16_dot(wd + o * n_in, xd + r * n_in, n_in);
                            const float got = y[r * n_out + o];
                            if (f32_bits(got) != f32_bits(want))
                                fail_msg(
                                    "%s %s n_in=%lld rows=%lld y[%lld][%lld] = %a, 16 lanes %a",
                                    tables[t]->isa, sp_dtype_get(wt)->name, (long long)n_in,
                                    (long long)rows, (long long)r, (long long)o, (double)got,
                                    (double)want);
                        }
                }
                free(y);
                free(wd);
                free(xd);
                free_problem(&p);
            }
}

/* y computed over all rows and outputs equals y computed per row, per row window and per
 * output piece, bit for bit; nothing outside a call's rows and outputs is written. */
static void check_invariance(const sp_kernels *k, sp_dtype wt, int64_t n_in, int64_t n_out,
                             int64_t n_rows, uint64_t seed) {
    problem p = make_problem(wt, n_in, n_out, n_rows, seed);
    const int64_t ldy = n_out + 3;
    const size_t n_y = (size_t)(n_rows * ldy);
    float *all = xmalloc(sizeof(float) * n_y);
    float *part = xmalloc(sizeof(float) * n_y);
    fill_sentinel(all, n_y);
    run(k, &p, 0, n_rows, 0, n_out, all, ldy);
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t o = 0; o < ldy; o++)
            assert_true((o < n_out) != (f32_bits(all[r * ldy + o]) == sentinel));

    // One row at a time.
    fill_sentinel(part, n_y);
    for (int64_t r = 0; r < n_rows; r++)
        run(k, &p, r, r + 1, 0, n_out, part, ldy);
    assert_memory_equal(all, part, n_y * sizeof(float));

    // Random row windows and output pieces.
    uint64_t rng = seed ^ 0x5eed;
    for (int trial = 0; trial < 4; trial++) {
        fill_sentinel(part, n_y);
        int64_t r0 = 0;
        while (r0 < n_rows) {
            // (SP_MIN evaluates its arguments twice: draw first.)
            const int64_t rn = 1 + (int64_t)(sp_test_rand(&rng) % 11);
            const int64_t r1 = SP_MIN(n_rows, r0 + rn);
            int64_t o0 = 0;
            while (o0 < n_out) {
                const int64_t on = 1 + (int64_t)(sp_test_rand(&rng) % 9);
                const int64_t o1 = SP_MIN(n_out, o0 + on);
                run(k, &p, r0, r1, o0, o1, part, ldy);
                o0 = o1;
            }
            r0 = r1;
        }
        assert_memory_equal(all, part, n_y * sizeof(float));
    }

    // A single piece writes only its rows and outputs.
    fill_sentinel(part, n_y);
    const int64_t o0 = n_out / 3, o1 = n_out - n_out / 4, r0 = n_rows / 4, r1 = n_rows - 1;
    run(k, &p, r0, r1, o0, o1, part, ldy);
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t o = 0; o < ldy; o++) {
            const bool inside = r >= r0 && r < r1 && o >= o0 && o < o1;
            if (inside)
                assert_memory_equal(&part[r * ldy + o], &all[r * ldy + o], sizeof(float));
            else
                assert_true(f32_bits(part[r * ldy + o]) == sentinel);
        }
    free(all);
    free(part);
    free_problem(&p);
}

static void test_invariance(void **state) {
    (void)state;
    static const struct {
        sp_dtype t;
        int64_t n_in;
    } cases[] = {
        {SP_DTYPE_Q8_0, 32 * 37}, {SP_DTYPE_Q4_0, 32 * 37}, {SP_DTYPE_F32, 517},
        {SP_DTYPE_F16, 517},      {SP_DTYPE_BF16, 517},     {SP_DTYPE_Q4_K, 256 * 3},
        {SP_DTYPE_Q5_K, 256 * 3}, {SP_DTYPE_Q6_K, 256 * 3},
    };
    static const int64_t rows[] = {9, 33};
    uint64_t seed = 9000;
    for (size_t t = 0; t < n_tables; t++)
        for (size_t c = 0; c < SP_ARRAY_LEN(cases); c++)
            for (size_t i = 0; i < SP_ARRAY_LEN(rows); i++)
                check_invariance(tables[t], cases[c].t, cases[c].n_in, 37, rows[i], seed++);
}

// ---------------------------------------------------------------- attention

/* x rounded to F16 when f16 (the values of an F16 cache), else x. */
static float f16_if(bool f16, float x) {
    return f16 ? sp_f16_to_f32(sp_f32_to_f16(x)) : x;
}

/* The attention of a tile of nt tokens at positions pos0 .. pos0 + nt - 1 of one sequence through
 * a table's three steps, as the forward pass runs them, over positions stored in blocks of bs
 * (keys transposed, values as rows, as the forward pass keeps them). Token t's G heads are rows
 * t * G .. t * G + G - 1 of q (R = nt * G rows). Every row's scores cover the last token's
 * positions, its softmax only its own token's; the values of the positions all tokens read go in
 * one call per block over all rows, then each later token's own positions one at a time.
 * out: R x D. */
static void attend_tile(const sp_kernels *k, const float *q, int32_t G, int32_t D, const void *kt,
                        const void *v, int32_t pos0, int32_t nt, int32_t bs, bool f16,
                        bool round_f16, float *out) {
    const size_t es = f16 ? 2 : 4, head = (size_t)bs * (size_t)D * es;
    const int32_t R = nt * G, n_first = pos0 + 1, n_last = pos0 + nt;
    float *s = xmalloc(sizeof(float) * (size_t)R * (size_t)n_last);
    const float scale = 1.0f / sqrtf((float)D);
    for (int32_t j0 = 0; j0 < n_last; j0 += bs)
        k->attn_scores(q, R, D, scale, (const uint8_t *)kt + (size_t)(j0 / bs) * head, bs,
                       SP_MIN(bs, n_last - j0), f16, s + j0, n_last);
    for (int32_t row = 0; row < R; row++)
        k->attn_softmax(s + (size_t)row * (size_t)n_last, n_first + row / G, round_f16);
    memset(out, 0, sizeof(float) * (size_t)R * (size_t)D);
    for (int32_t j0 = 0; j0 < n_first; j0 += bs)
        k->attn_values(s + j0, n_last, R, D, (const uint8_t *)v + (size_t)(j0 / bs) * head,
                       SP_MIN(bs, n_first - j0), f16, out);
    for (int32_t t = 1; t < nt; t++)
        for (int32_t j = n_first; j < n_first + t; j++)
            k->attn_values(s + (size_t)t * (size_t)G * (size_t)n_last + j, n_last, G, D,
                           (const uint8_t *)v + (size_t)(j / bs) * head +
                               (size_t)(j % bs) * (size_t)D * es,
                           1, f16, out + (size_t)t * (size_t)G * (size_t)D);
    free(s);
}

/* One token's attention over n_pos positions (a tile of one). out: G x D. */
static void attend(const sp_kernels *k, const float *q, int32_t G, int32_t D, const void *kt,
                   const void *v, int32_t n_pos, int32_t bs, bool f16, bool round_f16, float *out) {
    attend_tile(k, q, G, D, kt, v, n_pos - 1, 1, bs, f16, round_f16, out);
}

/* Every table's attention equals a double-precision two-pass softmax within 2e-6 of
 * sum_j w_j |v_j[d]| (F32 weights), and within 2^-9 of it with weights rounded to F16 (a weight
 * may round the other way when the scores differ in the last bit), and the scalar table's
 * result bit for bit. Block sizes that do and do not fill vectors, partly filled last
 * blocks, GQA groups of 1 to 9 heads, head sizes on and off the vector width, F16 caches (and
 * queries rounded to F16, as the forward pass makes them) and F32 caches of full-precision
 * values (whose products, unlike those of F16 values, round: an fma and a multiply-add differ).
 * Bit for bit: each head alone equals itself in its group, and each token of a tile of several
 * tokens (attend_tile, up to 8 rows as the forward pass makes them, and at least 2 tokens)
 * equals that token alone, whose scores stop at its own position (the last cases: the first
 * token's last positions partly fill a vector of 8 that the tile's last token fills). */
static void test_attention(void **state) {
    (void)state;
    static const struct {
        int32_t G, D, n_pos, bs;
    } cases[] = {{1, 64, 1, 16},  {8, 64, 37, 16}, {3, 16, 100, 16}, {9, 128, 50, 32},
                 {4, 24, 33, 7},  {2, 40, 17, 5},  {8, 64, 300, 16}, {1, 8, 9, 64},
                 {2, 64, 74, 16}, {4, 32, 40, 16}};
    uint64_t rng = 4242;
    for (size_t c = 0; c < SP_ARRAY_LEN(cases); c++)
        for (int f16 = 0; f16 < 2; f16++) {
            const int32_t G = cases[c].G, D = cases[c].D, n = cases[c].n_pos, bs = cases[c].bs;
            const int32_t nblk = (n + bs - 1) / bs;
            const size_t es = f16 ? 2 : 4, cells = (size_t)nblk * (size_t)bs * (size_t)D;
            uint8_t *kt = calloc(cells, es), *v = calloc(cells, es);
            float *kf = xmalloc(sizeof(float) * (size_t)n * (size_t)D),
                  *vf = xmalloc(sizeof(float) * (size_t)n * (size_t)D);
            assert_non_null(kt);
            assert_non_null(v);
            // F16 caches: F16-representable queries, as the forward pass makes them.
            const int32_t nt = SP_MIN(n, SP_MAX(2, 8 / G)); // tokens of a tile
            float *q = xmalloc(sizeof(float) * (size_t)nt * (size_t)G * (size_t)D);
            for (int32_t i = 0; i < nt * G * D; i++)
                q[i] = f16_if(f16, 2.0f * sp_test_randn(&rng));
            for (int32_t j = 0; j < n; j++)
                for (int32_t d = 0; d < D; d++) {
                    const float kx = f16_if(f16, sp_test_randn(&rng));
                    const float vx = f16_if(f16, sp_test_randn(&rng));
                    kf[j * D + d] = kx;
                    vf[j * D + d] = vx;
                    const size_t blk = (size_t)(j / bs) * (size_t)bs * (size_t)D;
                    const size_t ki = blk + (size_t)d * (size_t)bs + (size_t)(j % bs);
                    const size_t vi = blk + (size_t)(j % bs) * (size_t)D + (size_t)d;
                    if (f16) {
                        ((sp_f16 *)kt)[ki] = sp_f32_to_f16(kx);
                        ((sp_f16 *)v)[vi] = sp_f32_to_f16(vx);
                    } else {
                        ((float *)kt)[ki] = kx;
                        ((float *)v)[vi] = vx;
                    }
                }
            // Reference: scores, softmax and sums in double.
            double *want = xmalloc(sizeof(double) * (size_t)G * (size_t)D);
            double *mag = xmalloc(sizeof(double) * (size_t)G * (size_t)D);
            double *w = xmalloc(sizeof(double) * (size_t)n);
            for (int32_t hh = 0; hh < G; hh++) {
                double mx = -INFINITY, sum = 0.0;
                for (int32_t j = 0; j < n; j++) {
                    double x = 0.0;
                    for (int32_t d = 0; d < D; d++)
                        x += (double)q[hh * D + d] * kf[j * D + d];
                    w[j] = x / sqrt((double)D);
                    mx = w[j] > mx ? w[j] : mx;
                }
                for (int32_t j = 0; j < n; j++)
                    sum += (w[j] = exp(w[j] - mx));
                for (int32_t d = 0; d < D; d++) {
                    double o = 0.0, a = 0.0;
                    for (int32_t j = 0; j < n; j++) {
                        o += w[j] / sum * vf[j * D + d];
                        a += w[j] / sum * fabs(vf[j * D + d]);
                    }
                    want[hh * D + d] = o;
                    mag[hh * D + d] = a;
                }
            }
            float *got = xmalloc(sizeof(float) * (size_t)G * (size_t)D);
            float *first = xmalloc(sizeof(float) * (size_t)G * (size_t)D);
            float *first_r = xmalloc(sizeof(float) * (size_t)G * (size_t)D);
            float *tile = xmalloc(sizeof(float) * (size_t)nt * (size_t)G * (size_t)D);
            for (size_t t = 0; t < n_tables; t++)
                for (int round = 0; round < 2; round++) {
                    attend(tables[t], q, G, D, kt, v, n, bs, f16, round, got);
                    const double tol = round ? 0x1p-9 : 2e-6;
                    for (int32_t i = 0; i < G * D; i++)
                        if (!(fabs((double)got[i] - want[i]) <= tol * mag[i] + 1e-30))
                            fail_msg("%s attention G=%d D=%d n=%d bs=%d %s%s: out[%d] = %.9g, "
                                     "reference %.9g (tolerance %.3g)",
                                     tables[t]->isa, G, D, n, bs, f16 ? "F16" : "F32",
                                     round ? " rounded weights" : "", i, (double)got[i], want[i],
                                     tol * mag[i]);
                    // The same bits as the scalar table (tables[0]), which ran first.
                    if (t == 0)
                        memcpy(round ? first_r : first, got, sizeof(float) * (size_t)G * (size_t)D);
                    else if (memcmp(got, round ? first_r : first,
                                    sizeof(float) * (size_t)G * (size_t)D))
                        fail_msg("%s attention G=%d D=%d n=%d bs=%d %s%s: differs from scalar",
                                 tables[t]->isa, G, D, n, bs, f16 ? "F16" : "F32",
                                 round ? " rounded weights" : "");
                    // Each head alone gives the same bits as in its group (the heads of a group
                    // share loads, never arithmetic).
                    float one[128];
                    for (int32_t hh = 0; hh < G; hh++) {
                        attend(tables[t], q + hh * D, 1, D, kt, v, n, bs, f16, round, one);
                        if (memcmp(one, got + hh * D, sizeof(float) * (size_t)D))
                            fail_msg("%s attention G=%d D=%d n=%d %s: head %d alone differs",
                                     tables[t]->isa, G, D, n, f16 ? "F16" : "F32", hh);
                    }
                    // Each token of a tile ending at the last position gives the same bits as
                    // that token alone (the rows of a tile share loads, never arithmetic).
                    if (nt < 2)
                        continue;
                    attend_tile(tables[t], q, G, D, kt, v, n - nt, nt, bs, f16, round, tile);
                    for (int32_t k = 0; k < nt; k++) {
                        const size_t at = (size_t)k * (size_t)G * (size_t)D;
                        attend(tables[t], q + at, G, D, kt, v, n - nt + 1 + k, bs, f16, round, got);
                        for (int32_t i = 0; i < G * D; i++)
                            if (f32_bits(got[i]) != f32_bits(tile[at + (size_t)i]))
                                fail_msg("%s attention G=%d D=%d bs=%d %s%s: token %d of a tile of "
                                         "%d at positions %d.. differs from it alone: out[%d] = "
                                         "%.9g, alone %.9g",
                                         tables[t]->isa, G, D, bs, f16 ? "F16" : "F32",
                                         round ? " rounded weights" : "", k, nt, n - nt, i,
                                         (double)tile[at + (size_t)i], (double)got[i]);
                    }
                }
            free(tile);
            free(first);
            free(first_r);
            free(got);
            free(w);
            free(mag);
            free(want);
            free(q);
            free(kf);
            free(vf);
            free(kt);
            free(v);
        }
}

/* n random values, normal with a standard deviation of scale. */
static void fill_randn(float *x, size_t n, float scale, uint64_t *rng) {
    for (size_t i = 0; i < n; i++)
        x[i] = scale * sp_test_randn(rng);
}

static void expect_same_bits(const char *isa, const char *what, const float *got, const float *want,
                             size_t n) {
    for (size_t i = 0; i < n; i++)
        if (f32_bits(got[i]) != f32_bits(want[i]))
            fail_msg("%s %s [%zu]: %a, scalar table %a", isa, what, i, (double)got[i],
                     (double)want[i]);
}

/* Each attention step of every table equals the scalar table's bit for bit (kernels.h defines
 * them down to the order of the fmas), on the same inputs: scores of n positions of a block
 * (partly filled vectors of 8 and 16, ld_k > n), head sizes on and off the vector widths, GQA
 * groups of 1..9 heads, F16 and F32 caches of full-precision values; softmax rows of 1..300
 * scores spread over a wide range (weights down to 0), with and without F16 rounding; values
 * over n positions into accumulators that already hold values. */
static void test_attn_steps_bitwise(void **state) {
    (void)state;
    static const struct {
        int32_t G, D, n;
    } cases[] = {{1, 1, 1},   {1, 8, 9},   {3, 13, 7}, {2, 24, 17},  {4, 40, 31},  {8, 64, 16},
                 {5, 72, 33}, {9, 80, 40}, {1, 96, 3}, {6, 128, 47}, {2, 131, 25}, {7, 16, 64}};
    uint64_t rng = 5151;
    for (size_t c = 0; c < SP_ARRAY_LEN(cases); c++)
        for (int f16 = 0; f16 < 2; f16++) {
            const int32_t G = cases[c].G, D = cases[c].D, n = cases[c].n, ld_k = n + 3;
            const int64_t ld_s = n + 5;
            const size_t es = f16 ? 2 : 4, cells = (size_t)D * (size_t)ld_k;
            float *q = xmalloc(sizeof(float) * (size_t)G * (size_t)D);
            uint8_t *kt = xmalloc(cells * es), *v = xmalloc((size_t)n * (size_t)D * es);
            fill_randn(q, (size_t)G * (size_t)D, 2.0f, &rng);
            for (size_t i = 0; i < cells; i++) {
                const float x = sp_test_randn(&rng);
                if (f16)
                    ((sp_f16 *)kt)[i] = sp_f32_to_f16(x);
                else
                    ((float *)kt)[i] = x;
            }
            for (size_t i = 0; i < (size_t)n * (size_t)D; i++) {
                const float x = sp_test_randn(&rng);
                if (f16)
                    ((sp_f16 *)v)[i] = sp_f32_to_f16(x);
                else
                    ((float *)v)[i] = x;
            }
            const size_t n_s = (size_t)G * (size_t)ld_s, n_acc = (size_t)G * (size_t)D;
            float *w = xmalloc(sizeof(float) * n_s), *acc0 = xmalloc(sizeof(float) * n_acc);
            for (size_t i = 0; i < n_s; i++)
                w[i] = fabsf(sp_test_randn(&rng)) / (float)n;
            fill_randn(acc0, n_acc, 0.5f, &rng);
            float *s_ref = xmalloc(sizeof(float) * n_s), *s_got = xmalloc(sizeof(float) * n_s);
            float *a_ref = xmalloc(sizeof(float) * n_acc), *a_got = xmalloc(sizeof(float) * n_acc);
            const float scale = 1.0f / sqrtf((float)D);
            for (size_t t = 0; t < n_tables; t++) {
                const sp_kernels *k = tables[t];
                float *sc = t ? s_got : s_ref, *ac = t ? a_got : a_ref;
                memset(sc, 0, sizeof(float) * n_s);
                k->attn_scores(q, G, D, scale, kt, ld_k, n, f16, sc, ld_s);
                memcpy(ac, acc0, sizeof(float) * n_acc);
                k->attn_values(w, ld_s, G, D, v, n, f16, ac);
                if (t == 0)
                    continue;
                char what[96];
                snprintf(what, sizeof what, "G=%d D=%d n=%d %s scores", G, D, n,
                         f16 ? "F16" : "F32");
                expect_same_bits(k->isa, what, s_got, s_ref, n_s);
                snprintf(what, sizeof what, "G=%d D=%d n=%d %s values", G, D, n,
                         f16 ? "F16" : "F32");
                expect_same_bits(k->isa, what, a_got, a_ref, n_acc);
            }
            free(q);
            free(kt);
            free(v);
            free(w);
            free(acc0);
            free(s_ref);
            free(s_got);
            free(a_ref);
            free(a_got);
        }
    // The exponential over its whole range, subnormal results included: rows of a 0 and 300
    // scores spread evenly over [-110, 0], so that each weight is e^s / (1 + a little).
    for (int trial = 0; trial < 100; trial++) {
        float row[301], ref[301], got[301];
        row[0] = 0.0f;
        for (int j = 1; j < 301; j++)
            row[j] = -110.0f * (float)(sp_test_rand(&rng) % 1000001) / 1e6f;
        for (size_t t = 0; t < n_tables; t++) {
            float *out = t ? got : ref;
            memcpy(out, row, sizeof row);
            tables[t]->attn_softmax(out, 301, false);
            if (t)
                expect_same_bits(tables[t]->isa, "softmax of [-110, 0]", got, ref, 301);
        }
    }
    // Softmax rows: lengths around the vector widths, scores from N(0, 1) to N(0, 300) (so
    // that weights underflow to 0), a row of ties and one of a single large outlier.
    float row[300], ref[300], got[300];
    for (int32_t n = 1; n <= 300; n += n < 40 ? 1 : 37)
        for (int kind = 0; kind < 4; kind++)
            for (int round = 0; round < 2; round++) {
                static const float spread[] = {1.0f, 30.0f, 300.0f, 0.0f};
                fill_randn(row, (size_t)n, spread[kind], &rng);
                if (kind == 3)
                    row[n / 2] = 1e4f;
                for (size_t t = 0; t < n_tables; t++) {
                    float *out = t ? got : ref;
                    memcpy(out, row, sizeof(float) * (size_t)n);
                    tables[t]->attn_softmax(out, n, round);
                    if (t == 0)
                        continue;
                    char what[64];
                    snprintf(what, sizeof what, "softmax n=%d spread %d%s", n, kind,
                             round ? " rounded" : "");
                    expect_same_bits(tables[t]->isa, what, got, ref, (size_t)n);
                }
            }
}

/* sp__exp, the exponential of every table (exp.h), within 0.9 ulp of e^x (in double) over about
 * a million floats spread evenly by bit pattern over its range [-104, 88.72], and 1 ulp of
 * expf; its ends exactly. */
static void test_exp(void **state) {
    (void)state;
    static const float ranges[][2] = {{-104.0f, -0.0f}, {0.0f, 88.72f}};
    double worst = 0.0, worst_libm = 0.0;
    for (size_t k = 0; k < SP_ARRAY_LEN(ranges); k++) {
        const uint32_t a = f32_bits(ranges[k][0]), b = f32_bits(ranges[k][1]);
        const uint32_t lo = a < b ? a : b, hi = a < b ? b : a;
        for (uint32_t u = lo; u <= hi && u >= lo; u += 1 + (hi - lo) / 500000) {
            const float x = f32_from_bits(u), got = sp__exp(x);
            const double e = exp((double)x);
            int ex;
            frexp(e, &ex);
            const double ulp = fmax(ldexp(1.0, ex - 24), 0x1p-149);
            worst = fmax(worst, fabs((double)got - e) / ulp);
            worst_libm = fmax(worst_libm, fabs((double)got - (double)expf(x)) / ulp);
            if (!(fabs((double)got - e) <= 0.9 * ulp))
                fail_msg("sp__exp(%a) = %a, e^x = %a", (double)x, (double)got, e);
        }
    }
    print_message("[ info     ] sp__exp: at most %.3f ulp from e^x, %.3f from expf\n", worst,
                  worst_libm);
    assert_true(worst_libm <= 1.0);
    assert_true(sp__exp(0.0f) == 1.0f && sp__exp(-0.0f) == 1.0f);
    assert_true(sp__exp(-INFINITY) == 0.0f && sp__exp(-104.0f) == 0.0f);
    assert_true(sp__exp(-200.0f) == 0.0f && sp__exp(-103.9f) == 0x1p-149f);
    assert_true(sp__exp(INFINITY) == INFINITY && sp__exp(88.73f) == INFINITY);
    assert_true(sp__exp(1e30f) == INFINITY && isnan(sp__exp(NAN)));
    assert_true(isfinite(sp__exp(88.72f)));
}

/* swiglu of every table equals the scalar table's bit for bit (both NaN where it is NaN): gates
 * from N(0, 8), finite floats of every magnitude, subnormal gates, and the edges of the
 * exponential's range and beyond (+-88.7, +-104, +-1e30, infinities); up values that make subnormal
 * results; lengths with every tail. */
static void test_swiglu_bitwise(void **state) {
    (void)state;
    static const float edges[] = {0.0f,   -0.0f,    1e-40f,    -1e-40f, 0x1p-149f, 88.7f,
                                  -88.7f, 88.73f,   -88.73f,   104.0f,  -104.0f,   1e30f,
                                  -1e30f, INFINITY, -INFINITY, NAN,     -80.0f,    -87.0f};
    uint64_t rng = 6262;
    const int64_t max_n = 300;
    float *g = xmalloc(sizeof(float) * (size_t)max_n), *u = xmalloc(sizeof(float) * (size_t)max_n);
    float *ref = xmalloc(sizeof(float) * (size_t)max_n),
          *got = xmalloc(sizeof(float) * (size_t)max_n);
    for (int trial = 0; trial < 300; trial++) {
        const int64_t n = trial < 40 ? trial + 1 : 1 + (int64_t)(sp_test_rand(&rng) % max_n);
        for (int64_t i = 0; i < n; i++) {
            const uint64_t pick = sp_test_rand(&rng) % 4;
            if (pick == 0)
                g[i] = edges[sp_test_rand(&rng) % SP_ARRAY_LEN(edges)];
            else if (pick == 1) // a finite float of any sign and magnitude (even exponents)
                g[i] = f32_from_bits(((uint32_t)sp_test_rand(&rng) & 0xff7fffffu));
            else
                g[i] = 8.0f * sp_test_randn(&rng);
            u[i] = sp_test_rand(&rng) % 3 ? sp_test_randn(&rng) : 1e-5f * sp_test_randn(&rng);
        }
        for (size_t t = 0; t < n_tables; t++) {
            float *out = t ? got : ref;
            memcpy(out, g, sizeof(float) * (size_t)n);
            tables[t]->swiglu(out, u, n);
            for (int64_t i = 0; t && i < n; i++)
                if (isnan(ref[i]) ? !isnan(got[i]) : f32_bits(got[i]) != f32_bits(ref[i]))
                    fail_msg("%s swiglu n=%lld [%lld] of g=%a up=%a: %a, scalar table %a",
                             tables[t]->isa, (long long)n, (long long)i, (double)g[i], (double)u[i],
                             (double)got[i], (double)ref[i]);
        }
    }
    free(g);
    free(u);
    free(ref);
    free(got);
}

/* Softmax rows sum to 1 and keep their order; the largest score gets the largest weight. */
static void test_attn_softmax(void **state) {
    (void)state;
    uint64_t rng = 77;
    static const int32_t lens[] = {1, 7, 8, 16, 17, 100};
    for (size_t t = 0; t < n_tables; t++)
        for (size_t i = 0; i < SP_ARRAY_LEN(lens); i++) {
            const int32_t n = lens[i];
            float s[100];
            int32_t best = 0;
            for (int32_t j = 0; j < n; j++) {
                s[j] = 30.0f * sp_test_randn(&rng);
                best = s[j] > s[best] ? j : best;
            }
            tables[t]->attn_softmax(s, n, false);
            double sum = 0.0;
            for (int32_t j = 0; j < n; j++) {
                assert_true(s[j] >= 0.0f && s[j] <= s[best]);
                sum += s[j];
            }
            assert_true(fabs(sum - 1.0) < 1e-5);
        }
}

/* swiglu of every table against silu(g) up in double: relative error within 8 u (the SIMD
 * exp's ~1e-7 and three roundings), odd lengths (tails), and the ends of the range: silu(g) for
 * g < -87 is below 1e-36 (tables may give 0), large g pass through, NaN stays NaN. */
static void test_swiglu(void **state) {
    (void)state;
    uint64_t rng = 91;
    static const int64_t lens[] = {1, 15, 16, 17, 100, 5632};
    static const float edges[] = {0.0f,   -0.0f, 1e-30f, -1e-30f, 20.0f,   -20.0f, 86.9f,
                                  -86.9f, 87.5f, -87.5f, 100.0f,  -100.0f, 1e30f,  -1e30f};
    for (size_t t = 0; t < n_tables; t++)
        for (size_t i = 0; i < SP_ARRAY_LEN(lens); i++) {
            const int64_t n = lens[i];
            float *g = xmalloc((size_t)n * sizeof(float)), *u = xmalloc((size_t)n * sizeof(float));
            float *want = xmalloc((size_t)n * sizeof(float));
            for (int64_t j = 0; j < n; j++) {
                g[j] = (size_t)j < SP_ARRAY_LEN(edges) && i >= 4 ? edges[j]
                                                                 : 8.0f * sp_test_randn(&rng);
                u[j] = sp_test_randn(&rng);
                want[j] = (float)((double)g[j] / (1.0 + exp(-(double)g[j])) * (double)u[j]);
            }
            g[n - 1] = i == 5 ? NAN : g[n - 1];
            tables[t]->swiglu(g, u, n);
            for (int64_t j = 0; j < n - (i == 5); j++) {
                const double err = fabs((double)g[j] - (double)want[j]);
                if (!(err <= 8.0 * 0x1p-24 * fabs((double)want[j]) + 1e-35))
                    fail_msg("%s swiglu n=%lld [%lld]: %a, want %a", tables[t]->isa, (long long)n,
                             (long long)j, (double)g[j], (double)want[j]);
            }
            if (i == 5)
                assert_true(isnan(g[n - 1]));
            free(g);
            free(u);
            free(want);
        }
}

// ---------------------------------------------------------------- activation conversion

/* Fills a row of n values in one of several patterns. finite_only: no NaN or infinity, and
 * magnitudes within 2^-60..2^60 (the Q8 quantizers' domain). */
static void fill_act(float *x, int64_t n, int mode, bool finite_only, uint64_t *rng) {
    switch (mode) {
    case 0: { // N(0,1) at a random scale
        const float scale = ldexpf(1.0f, (int)(sp_test_rand(rng) % 40) - 20);
        for (int64_t i = 0; i < n; i++)
            x[i] = scale * sp_test_randn(rng);
        break;
    }
    case 1: // Q8_0 ties: per 32 values amax = 127 s and the others (m + 0.5) s, s = 2^k
        for (int64_t b = 0; b < n; b += 32) {
            const float s = ldexpf(1.0f, (int)(sp_test_rand(rng) % 21) - 10);
            const int64_t at = b + (int64_t)(sp_test_rand(rng) % 32);
            for (int64_t i = b; i < b + 32 && i < n; i++) {
                const int m = (int)(sp_test_rand(rng) % 253) - 126;
                x[i] = i == at ? (sp_test_rand(rng) & 1 ? 127.0f : -127.0f) * s
                               : ((float)m + (m < 0 ? -0.5f : 0.5f)) * s;
            }
        }
        break;
    case 2: // arbitrary bits
        for (int64_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)sp_test_rand(rng);
            if (finite_only) // exponent in 2^-60..2^60
                u = (u & 0x807fffffu) | ((uint32_t)(67 + (u >> 23) % 120) << 23);
            x[i] = f32_from_bits(u);
        }
        break;
    case 3: // zero blocks, single values, -0.0
        for (int64_t i = 0; i < n; i++) {
            const uint64_t v = sp_test_rand(rng) % 8;
            x[i] = v == 0 ? -0.0f : v < 6 ? 0.0f : sp_test_randn(rng);
        }
        break;
    default: // around F16's subnormal and overflow boundaries; F16 and BF16 rounding ties
        for (int64_t i = 0; i < n; i++) {
            const int e = (int)(sp_test_rand(rng) % 46) - 27; // 2^-27 .. 2^18
            uint32_t mant = (uint32_t)sp_test_rand(rng) & 0x7fffffu;
            const uint64_t pick = sp_test_rand(rng) % 3;
            if (pick == 1)
                mant = (mant & ~0x1fffu) | 0x1000u; // halfway between two F16 (normal) values
            else if (pick == 2)
                mant = (mant & ~0xffffu) | 0x8000u; // halfway between two BF16 values
            float v = f32_from_bits(((uint32_t)(127 + e) << 23) | mant);
            if (finite_only && e > 15)
                v = ldexpf(v, -4);
            x[i] = sp_test_rand(rng) & 1 ? -v : v;
        }
        break;
    }
}

/* round_f16 of every table gives the bits of sp_f16_to_f32(sp_f32_to_f16(x)): all patterns
 * (ties, subnormals, overflow to infinity, NaNs) and lengths with tails. */
static void test_round_f16(void **state) {
    (void)state;
    const int64_t max_n = 300;
    float *x = xmalloc(sizeof(float) * (size_t)max_n),
          *got = xmalloc(sizeof(float) * (size_t)max_n);
    uint64_t rng = 777;
    for (int trial = 0; trial < 200; trial++) {
        const int64_t n = 1 + (int64_t)(sp_test_rand(&rng) % (uint64_t)max_n);
        fill_act(x, n, trial % 5, false, &rng);
        for (size_t t = 0; t < n_tables; t++) {
            assert_non_null(tables[t]->round_f16);
            memcpy(got, x, (size_t)n * sizeof(float));
            tables[t]->round_f16(got, n);
            for (int64_t i = 0; i < n; i++) {
                const float want = sp_f16_to_f32(sp_f32_to_f16(x[i]));
                if (memcmp(&got[i], &want, sizeof want))
                    fail_msg("%s round_f16 [%lld] of %a: %a, want %a", tables[t]->isa, (long long)i,
                             (double)x[i], (double)got[i], (double)want);
            }
        }
    }
    free(x);
    free(got);
}

static void test_quantize_act_bit_identical(void **state) {
    (void)state;
    static const sp_dtype types[] = {SP_DTYPE_F32, SP_DTYPE_F16, SP_DTYPE_BF16, SP_DTYPE_Q8_0,
                                     SP_DTYPE_Q8_K};
    const int64_t max_n = 1024;
    float *x = xmalloc(sizeof(float) * (size_t)max_n);
    uint8_t *want = xmalloc(row_bytes(SP_DTYPE_F32, max_n));
    uint8_t *got = xmalloc(row_bytes(SP_DTYPE_F32, max_n));
    uint64_t rng = 10000;
    for (size_t ti = 0; ti < SP_ARRAY_LEN(types); ti++) {
        const sp_dtype vt = types[ti];
        const int64_t bs = block_size(vt);
        const bool finite_only = vt == SP_DTYPE_Q8_0 || vt == SP_DTYPE_Q8_K;
        for (int trial = 0; trial < 300; trial++) {
            int64_t n = 1 + (int64_t)(sp_test_rand(&rng) % (uint64_t)max_n);
            n = (n + bs - 1) / bs * bs;
            if (n > max_n)
                n -= bs;
            const int mode = trial % 5;
            fill_act(x, n, mode, finite_only, &rng);
            const size_t nb = row_bytes(vt, n);
            memset(want, 0xa5, nb);
            sp_quantize_act_row(vt, x, want, n);
            for (size_t t = 0; t < n_tables; t++) {
                memset(got, 0x5a, nb);
                tables[t]->quantize_act(vt, x, got, n);
                if (memcmp(got, want, nb) != 0)
                    fail_msg("%s quantize_act to %s differs (n=%lld, pattern %d)", tables[t]->isa,
                             sp_dtype_get(vt)->name, (long long)n, mode);
            }
        }
    }
    free(x);
    free(want);
    free(got);
}

// ---------------------------------------------------------------- SPINDLE_ISA

/* Runs this test binary with SPINDLE_ISA=value (unset if NULL) and returns what its
 * sp_kernels_get() chose, in buf. */
static void child_isa(const char *value, char *buf, size_t cap) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        if (value)
            setenv("SPINDLE_ISA", value, 1);
        else
            unsetenv("SPINDLE_ISA");
        setenv("SPINDLE_LOG", "off", 1);
        char *const argv[] = {"test_kernels", "--print-isa", NULL};
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t got;
    while ((got = read(fds[0], buf + len, cap - 1 - len)) > 0 || (got < 0 && errno == EINTR))
        if (got > 0)
            len += (size_t)got;
    close(fds[0]);
    buf[len] = '\0';
    if (len && buf[len - 1] == '\n')
        buf[len - 1] = '\0';
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_spindle_isa(void **state) {
    (void)state;
    // The best table: the last available in order of preference.
    const char *best = tables[n_tables - 1]->isa;
    char buf[64];
    child_isa(NULL, buf, sizeof buf);
    assert_string_equal(buf, best);
    child_isa("", buf, sizeof buf);
    assert_string_equal(buf, best);
    child_isa("auto", buf, sizeof buf);
    assert_string_equal(buf, best);
    child_isa("no-such-isa", buf, sizeof buf);
    assert_string_equal(buf, best);
    for (size_t i = 0; i < SP_ARRAY_LEN(isa_names); i++) {
        child_isa(isa_names[i], buf, sizeof buf);
        assert_string_equal(buf, sp_kernels_for(isa_names[i]) ? isa_names[i] : best);
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--print-isa")) {
        printf("%s\n", sp_kernels_get()->isa);
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_kquants_packed),
        cmocka_unit_test(test_vs_ref_plain),
        cmocka_unit_test(test_vs_ref_q8_0_q4_0),
        cmocka_unit_test(test_vs_ref_k_quants),
        cmocka_unit_test(test_packed_block_sums),
        cmocka_unit_test(test_unpacked_block_sums),
        cmocka_unit_test(test_float_lanes),
        cmocka_unit_test(test_exp),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attn_steps_bitwise),
        cmocka_unit_test(test_attn_softmax),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_swiglu_bitwise),
        cmocka_unit_test(test_invariance),
        cmocka_unit_test(test_quantize_act_bit_identical),
        cmocka_unit_test(test_round_f16),
        cmocka_unit_test(test_spindle_isa),
    };
    return cmocka_run_group_tests(tests, setup_tables, NULL);
}
