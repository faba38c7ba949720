/* K-quant (Q4_K, Q5_K, Q6_K) products: one numerics on every kernel table.
 *
 * - sp_vec_dot_ref equals, bit for bit, a model of quant.h's K-quant numerics written here from
 *   the GGUF block definitions (exact int32 sumi and summins per super-block, then
 *   fmaf((float)sumi, d_w d_x, acc) and fmaf(-(float)summins, dmin_w d_x, acc)).
 * - Every table this CPU has (scalar, avx2, avxvnni, avx512, amx), packed (pack, act_pack,
 *   matmul_packed) where the table packs the type and unpacked (matmul) always, equals
 *   sp_vec_dot_ref bit for bit: 1 to 17 and 33 activation rows (across the register blocks and
 *   the 16-row slices), output counts that are not multiples of the 16-output groups, one to 22
 *   super-blocks; weights quantized from random rows (scales from 1e-6 to 1e4, zero blocks,
 *   outliers), random bytes (every scale and quant bit pattern, Q6_K scales down to -128), and
 *   the extremes (every quant, scale and min at its maximum, against activations of -128 and
 *   127: the AVX2 kernels' int16 sums at their bound); activations from sp_quantize_act_row, and
 *   random Q8_K blocks with quants down to -128.
 * - pack_bytes is the documented size, and 0 for shapes it cannot pack.
 * - The x86 Q8_K quantizer (sp__quantize_q8_k_avx2) writes the same bytes as
 *   sp_quantize_act_row(SP_DTYPE_Q8_K), on random rows, ties of magnitude between signs, exact
 *   halves, zero and tiny blocks. */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "tensor/kernels.h"
#include "tensor/quant.h"

#if defined(__x86_64__)
#include "tensor/kquants.h"
#endif

static const char *const isa_names[] = {"scalar", "avx2", "avxvnni", "avx512", "amx"};
static const sp_dtype ktypes[] = {SP_DTYPE_Q4_K, SP_DTYPE_Q5_K, SP_DTYPE_Q6_K};

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

// ---------------------------------------------------------------- the numerics, from the formats

/* Super-block b of a weight row as integers: quants q[256] as stored (Q6_K: q + 32, 0..63),
 * sub-block scales (Q4_K/Q5_K: 8 of 6 bits; Q6_K: 16 int8), mins (8) and the F16 scales. From
 * ggml-common.h: Q4_K/Q5_K scales[12] hold scale j in bits 0-5 of byte j and min j in bits 0-5
 * of byte j + 4 for j < 4; for j >= 4, the low 4 bits of scale j in byte j + 4 (bits 0-3) and of
 * min j (bits 4-7), their top 2 bits in bits 6-7 of bytes j - 4 (scale) and j (min). Quant k
 * (sub-block k / 32) is the low (even sub-block) or high (odd) nibble of qs[32 (k / 64) + k % 32];
 * Q5_K's 5th bit is bit k / 32 of qh[k % 32]. Q6_K: value 128 h + 32 c + l takes its low 4 bits
 * from ql[64 h + l + 32 (c & 1)] (low nibble for c < 2) and its top 2 from bits 2c, 2c + 1 of
 * qh[32 h + l]. */
typedef struct ints {
    int q[SP_QK_K], sc[16], mn[8];
    float d, dmin;
} ints;

static ints block_ints(sp_dtype t, const void *row, int64_t b) {
    ints u = {0};
    const uint8_t *p = (const uint8_t *)row + (size_t)b * (size_t)sp_dtype_get(t)->type_size;
    if (t == SP_DTYPE_Q6_K) {
        const sp_block_q6_k *w = (const sp_block_q6_k *)p;
        for (int k = 0; k < SP_QK_K; k++) {
            const int h = k / 128, c = k % 128 / 32, l = k % 32;
            const uint8_t lo = w->ql[64 * h + l + 32 * (c & 1)];
            u.q[k] = (c < 2 ? lo & 15 : lo >> 4) | (((w->qh[32 * h + l] >> (2 * c)) & 3) << 4);
        }
        for (int j = 0; j < 16; j++)
            u.sc[j] = w->scales[j];
        u.d = sp_f16_to_f32(w->d);
        return u;
    }
    const uint8_t *s = p + 4; // d, dmin, then scales[12] in both
    const uint8_t *qs = p + (t == SP_DTYPE_Q5_K ? 48 : 16), *qh = p + 16;
    for (int j = 0; j < 8; j++) {
        u.sc[j] = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        u.mn[j] = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
    for (int k = 0; k < SP_QK_K; k++) {
        const uint8_t byte = qs[32 * (k / 64) + k % 32];
        u.q[k] = (k / 32) % 2 ? byte >> 4 : byte & 15;
        if (t == SP_DTYPE_Q5_K)
            u.q[k] |= ((qh[k % 32] >> (k / 32)) & 1) << 4;
    }
    sp_f16 d, dmin;
    memcpy(&d, p, 2);
    memcpy(&dmin, p + 2, 2);
    u.d = sp_f16_to_f32(d);
    u.dmin = sp_f16_to_f32(dmin);
    return u;
}

static float model_dot(sp_dtype t, const void *w_row, const void *x_row, int64_t n_in) {
    const sp_block_q8_k *x = x_row;
    float acc = 0.0f;
    for (int64_t b = 0; b < n_in / SP_QK_K; b++) {
        const ints u = block_ints(t, w_row, b);
        int64_t sumi = 0, summins = 0;
        const int sub = t == SP_DTYPE_Q6_K ? 16 : 32;
        for (int k = 0; k < SP_QK_K; k++)
            sumi += (int64_t)u.sc[k / sub] * (u.q[k] - (t == SP_DTYPE_Q6_K ? 32 : 0)) * x[b].qs[k];
        for (int j = 0; j < 8; j++)
            summins += (int64_t)u.mn[j] * (x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
        assert_true(sumi == (int32_t)sumi && summins == (int32_t)summins);
        acc = fmaf((float)sumi, u.d * x[b].d, acc);
        if (t != SP_DTYPE_Q6_K)
            acc = fmaf(-(float)summins, u.dmin * x[b].d, acc);
    }
    return acc;
}

// ---------------------------------------------------------------- test data

enum { DATA_QUANT, DATA_RAW, DATA_MAX };

/* A row of n floats whose 256-value blocks have scales spread from 1e-6 to 1e4, with some
 * blocks of zeros, some with a single large outlier and some all positive. */
static void random_floats(uint64_t *rng, float *x, int64_t n) {
    for (int64_t b = 0; b < n / SP_QK_K; b++) {
        float *xb = x + b * SP_QK_K;
        const uint64_t kind = sp_test_rand(rng) % 8;
        const float scale = powf(10.0f, -6.0f + 10.0f * (sp_test_randf(rng) * 0.5f + 0.5f));
        for (int i = 0; i < SP_QK_K; i++)
            xb[i] = kind == 0 ? 0.0f : scale * sp_test_randn(rng);
        if (kind == 1)
            xb[sp_test_rand(rng) % SP_QK_K] = 1000.0f * scale;
        if (kind == 2) // every value positive: Q4_K/Q5_K mins all zero
            for (int i = 0; i < SP_QK_K; i++)
                xb[i] = fabsf(xb[i]) + scale;
    }
}

/* The F16 scale fields of a K block: d (and dmin) finite, either sign, 2^-14..2^3. */
static void set_scales(uint64_t *rng, sp_dtype t, uint8_t *blk) {
    const sp_f16 d = sp_f32_to_f16(ldexpf(sp_test_randf(rng), (int)(sp_test_rand(rng) % 18) - 14));
    const sp_f16 dmin =
        sp_f32_to_f16(ldexpf(sp_test_randf(rng), (int)(sp_test_rand(rng) % 18) - 14));
    if (t == SP_DTYPE_Q6_K) {
        memcpy(blk + offsetof(sp_block_q6_k, d), &d, 2);
    } else {
        memcpy(blk, &d, 2);
        memcpy(blk + 2, &dmin, 2);
    }
}

/* n_out weight rows of type t: quantized random floats, random bytes, or every quant, scale and
 * min at its maximum (Q6_K: scales alternating -128 and 127). */
static uint8_t *make_weights(uint64_t *rng, sp_dtype t, int64_t n_in, int64_t n_out, int data) {
    const size_t rb = row_bytes(t, n_in), bb = (size_t)sp_dtype_get(t)->type_size;
    uint8_t *w = xmalloc(rb * (size_t)n_out);
    float *x = xmalloc((size_t)n_in * sizeof(float));
    for (int64_t o = 0; o < n_out; o++) {
        uint8_t *row = w + (size_t)o * rb;
        if (data == DATA_QUANT) {
            random_floats(rng, x, n_in);
            sp_quantize_row(t, x, row, n_in);
            continue;
        }
        for (int64_t b = 0; b < n_in / SP_QK_K; b++) {
            uint8_t *blk = row + (size_t)b * bb;
            for (size_t i = 0; i < bb; i++)
                blk[i] = data == DATA_RAW ? (uint8_t)sp_test_rand(rng) : 0xff;
            if (data == DATA_MAX && t == SP_DTYPE_Q6_K)
                for (int j = 0; j < 16; j++)
                    blk[offsetof(sp_block_q6_k, scales) + (size_t)j] = j % 2 ? 0x7f : 0x80;
            set_scales(rng, t, blk);
        }
    }
    free(x);
    return w;
}

/* n_rows Q8_K activation rows, with consistent bsums: quantized random floats, random quants
 * in -128..127 (a quarter of them -128), or all -128 / all 127 by super-block. */
static uint8_t *make_acts(uint64_t *rng, int64_t n_in, int64_t n_rows, int data) {
    const size_t rb = row_bytes(SP_DTYPE_Q8_K, n_in);
    uint8_t *a = xmalloc(rb * (size_t)n_rows);
    float *x = xmalloc((size_t)n_in * sizeof(float));
    for (int64_t r = 0; r < n_rows; r++) {
        sp_block_q8_k *blk = (sp_block_q8_k *)(a + (size_t)r * rb);
        if (data == DATA_QUANT) {
            random_floats(rng, x, n_in);
            sp_quantize_act_row(SP_DTYPE_Q8_K, x, blk, n_in);
            continue;
        }
        for (int64_t b = 0; b < n_in / SP_QK_K; b++) {
            blk[b].d = ldexpf(sp_test_randf(rng), (int)(sp_test_rand(rng) % 40) - 20);
            const bool neg = (b + r) % 2 == 0;
            for (int i = 0; i < SP_QK_K; i++) {
                if (data == DATA_MAX)
                    blk[b].qs[i] = (int8_t)(neg ? -128 : 127);
                else
                    blk[b].qs[i] =
                        (int8_t)(sp_test_rand(rng) % 4 == 0 ? 0x80u : (uint8_t)sp_test_rand(rng));
            }
            for (int g = 0; g < SP_QK_K / 16; g++) {
                int s = 0;
                for (int i = 0; i < 16; i++)
                    s += blk[b].qs[16 * g + i];
                blk[b].bsums[g] = (int16_t)s;
            }
        }
    }
    free(x);
    return a;
}

// ---------------------------------------------------------------- the reference

/* sp_vec_dot_ref is the documented numerics. */
static void test_ref_is_the_model(void **state) {
    (void)state;
    uint64_t rng = 11;
    size_t checked = 0;
    for (size_t ti = 0; ti < SP_ARRAY_LEN(ktypes); ti++)
        for (int wd = DATA_QUANT; wd <= DATA_MAX; wd++)
            for (int xd = DATA_QUANT; xd <= DATA_MAX; xd++) {
                const sp_dtype t = ktypes[ti];
                const int64_t n_in = 256 * 5, n_out = 6, n_rows = 3;
                uint8_t *w = make_weights(&rng, t, n_in, n_out, wd);
                uint8_t *x = make_acts(&rng, n_in, n_rows, xd);
                const size_t wrb = row_bytes(t, n_in), xrb = row_bytes(SP_DTYPE_Q8_K, n_in);
                for (int64_t o = 0; o < n_out; o++)
                    for (int64_t r = 0; r < n_rows; r++) {
                        const void *wr = w + (size_t)o * wrb, *xr = x + (size_t)r * xrb;
                        const float got = sp_vec_dot_ref(t, wr, xr, n_in);
                        const float want = model_dot(t, wr, xr, n_in);
                        if (f32_bits(got) != f32_bits(want))
                            fail_msg("%s weights %d acts %d: ref %a, model %a",
                                     sp_dtype_get(t)->name, wd, xd, (double)got, (double)want);
                        checked++;
                    }
                free(x);
                free(w);
            }
    assert_true(checked > 0);
}

// ---------------------------------------------------------------- every table

/* Table k's product of rows [0, n_rows) and outputs [0, n_out): packed when k packs t (into
 * buffers of exactly the sizes asked, rows packed in reverse order), else through matmul. */
static void table_product(const sp_kernels *k, sp_dtype t, bool packed, const uint8_t *w,
                          const uint8_t *x, int64_t n_in, int64_t n_out, int64_t n_rows, float *y,
                          int64_t ldy) {
    const size_t wrb = row_bytes(t, n_in), xrb = row_bytes(SP_DTYPE_Q8_K, n_in);
    if (!packed) {
        assert_non_null(k->matmul[t]);
        k->matmul[t](w, wrb, x, xrb, n_in, n_rows, y, ldy, 0, n_out);
        return;
    }
    void *pw = xmalloc(k->pack_bytes(t, n_in, n_out));
    k->pack(t, w, wrb, n_in, n_out, pw);
    void *px = xmalloc(k->act_pack_bytes(SP_DTYPE_Q8_K, n_in, n_rows));
    for (int64_t r = n_rows - 1; r >= 0; r--)
        k->act_pack(SP_DTYPE_Q8_K, x + (size_t)r * xrb, n_in, r, n_rows, px);
    assert_non_null(k->matmul_packed[t]);
    k->matmul_packed[t](pw, 0, px, 0, n_in, n_rows, y, ldy, 0, n_out);
    free(px);
    free(pw);
}

static size_t check_tables(sp_dtype t, int64_t n_in, int64_t n_out, int64_t n_rows, int wd, int xd,
                           uint64_t seed) {
    uint64_t rng = seed;
    uint8_t *w = make_weights(&rng, t, n_in, n_out, wd);
    uint8_t *x = make_acts(&rng, n_in, n_rows, xd);
    const size_t wrb = row_bytes(t, n_in), xrb = row_bytes(SP_DTYPE_Q8_K, n_in);
    float *ref = xmalloc(sizeof(float) * (size_t)(n_rows * n_out));
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t o = 0; o < n_out; o++)
            ref[r * n_out + o] = sp_vec_dot_ref(t, w + (size_t)o * wrb, x + (size_t)r * xrb, n_in);
    const int64_t ldy = n_out + 2;
    float *y = xmalloc(sizeof(float) * (size_t)(n_rows * ldy));
    size_t checked = 0;
    for (size_t i = 0; i < SP_ARRAY_LEN(isa_names); i++) {
        const sp_kernels *k = sp_kernels_for(isa_names[i]);
        if (!k)
            continue;
        for (int packed = 0; packed < 2; packed++) {
            if (packed && !(k->pack_bytes && k->pack_bytes(t, n_in, n_out) > 0))
                continue;
            memset(y, 0xff, sizeof(float) * (size_t)(n_rows * ldy));
            table_product(k, t, packed, w, x, n_in, n_out, n_rows, y, ldy);
            for (int64_t r = 0; r < n_rows; r++)
                for (int64_t o = 0; o < ldy; o++) {
                    const float got = y[r * ldy + o];
                    if (o >= n_out) {
                        if (f32_bits(got) != 0xffffffffu)
                            fail_msg("%s wrote y[%lld][%lld] past n_out", k->isa, (long long)r,
                                     (long long)o);
                        continue;
                    }
                    const float want = ref[r * n_out + o];
                    if (f32_bits(got) != f32_bits(want))
                        fail_msg("%s %s %s n_in=%lld n_out=%lld n_rows=%lld data %d/%d: "
                                 "y[%lld][%lld] = %a, reference %a",
                                 k->isa, packed ? "packed" : "unpacked", sp_dtype_get(t)->name,
                                 (long long)n_in, (long long)n_out, (long long)n_rows, wd, xd,
                                 (long long)r, (long long)o, (double)got, (double)want);
                    checked++;
                }
        }
    }
    free(y);
    free(ref);
    free(x);
    free(w);
    return checked;
}

/* Row counts 1..17 and 33 against odd output counts and several super-block counts. */
static void test_tables_equal_ref(void **state) {
    (void)state;
    static const int64_t n_ins[] = {256, 256 * 3, 256 * 22};
    static const int64_t outs[] = {1, 5, 16, 17, 29, 33, 50};
    uint64_t seed = 100;
    size_t checked = 0;
    for (size_t ti = 0; ti < SP_ARRAY_LEN(ktypes); ti++)
        for (size_t ni = 0; ni < SP_ARRAY_LEN(n_ins); ni++)
            for (int64_t n_rows = 1; n_rows <= 18; n_rows++) {
                const int64_t rows = n_rows == 18 ? 33 : n_rows;
                const int64_t n_out =
                    n_ins[ni] > 1000 && rows > 3 ? 17 : outs[(size_t)(n_rows + (int64_t)ni) % 7];
                checked += check_tables(ktypes[ti], n_ins[ni], n_out, rows, DATA_QUANT, DATA_QUANT,
                                        seed++);
            }
    print_message("[ info     ] %zu outputs checked\n", checked);
}

/* Random bytes and the extremes of every field, against random and extreme activations. */
static void test_tables_extremes(void **state) {
    (void)state;
    uint64_t seed = 5000;
    for (size_t ti = 0; ti < SP_ARRAY_LEN(ktypes); ti++)
        for (int wd = DATA_QUANT; wd <= DATA_MAX; wd++)
            for (int xd = DATA_QUANT; xd <= DATA_MAX; xd++) {
                if (wd == DATA_QUANT && xd == DATA_QUANT)
                    continue;
                check_tables(ktypes[ti], 256 * 4, 19, 9, wd, xd, seed++);
                check_tables(ktypes[ti], 256, 16, 2, wd, xd, seed++);
            }
}

/* The packed sizes of packed_k.h, and no packing for shapes the layouts do not cover. */
static void test_pack_bytes(void **state) {
    (void)state;
    static const struct {
        sp_dtype t;
        size_t record, trailer;
    } sizes[] = {{SP_DTYPE_Q4_K, 2304, 64}, {SP_DTYPE_Q5_K, 2816, 64}, {SP_DTYPE_Q6_K, 3328, 32}};
    size_t tables = 0;
    for (size_t i = 0; i < SP_ARRAY_LEN(isa_names); i++) {
        const sp_kernels *k = sp_kernels_for(isa_names[i]);
        if (!k || !k->pack_bytes)
            continue;
        tables++;
        for (size_t s = 0; s < SP_ARRAY_LEN(sizes); s++) {
            const sp_dtype t = sizes[s].t;
            for (int64_t nb = 1; nb <= 3; nb++) {
                const size_t trailer = ((size_t)nb * sizes[s].trailer + 63) / 64 * 64;
                const size_t group = (size_t)nb * sizes[s].record + trailer;
                assert_int_equal(k->pack_bytes(t, 256 * nb, 16), group);
                assert_int_equal(k->pack_bytes(t, 256 * nb, 17), 2 * group);
                assert_int_equal(k->pack_bytes(t, 256 * nb, 1), group);
            }
            assert_int_equal(k->pack_bytes(t, 128, 16), 0);
            assert_int_equal(k->pack_bytes(t, 256, 0), 0);
            assert_int_equal(k->pack_bytes(t, 0, 16), 0);
            assert_non_null(k->matmul_packed[t]);
        }
        assert_int_equal(k->act_pack_bytes(SP_DTYPE_Q8_K, 512, 3), 3 * 2 * 320);
        assert_int_equal(k->act_pack_bytes(SP_DTYPE_Q8_K, 100, 3), 0);
        // The other types still go to their own layouts.
        assert_true(k->pack_bytes(SP_DTYPE_Q8_0, 64, 16) > 0);
        assert_true(k->act_pack_bytes(SP_DTYPE_Q8_0, 64, 2) > 0);
        assert_int_equal(k->pack_bytes(SP_DTYPE_F32, 64, 16), 0);
    }
    if (!tables)
        skip();
}

// ---------------------------------------------------------------- Q8_K activations

#if defined(__x86_64__)
static void expect_same_q8_k(const float *x, int64_t n) {
    const size_t rb = row_bytes(SP_DTYPE_Q8_K, n);
    uint8_t *ref = xmalloc(rb), *got = xmalloc(rb);
    memset(ref, 0xa5, rb);
    memset(got, 0x5a, rb);
    sp_quantize_act_row(SP_DTYPE_Q8_K, x, ref, n);
    sp__quantize_q8_k_avx2(x, got, n);
    assert_memory_equal(got, ref, rb);
    free(got);
    free(ref);
}

static void test_quantize_q8_k(void **state) {
    (void)state;
    if (!sp_kernels_for("avx2"))
        skip();
    uint64_t rng = 77;
    const int64_t n = 5632;
    float *x = xmalloc((size_t)n * sizeof(float));
    for (int rep = 0; rep < 20; rep++) {
        random_floats(&rng, x, n);
        expect_same_q8_k(x, n);
    }

    // Ties of magnitude: the first of +a / -a sets the sign of the scale.
    for (int first_neg = 0; first_neg < 2; first_neg++) {
        for (int i = 0; i < SP_QK_K; i++)
            x[i] = 0.25f * sp_test_randf(&rng);
        x[200] = first_neg ? 3.0f : -3.0f;
        x[17] = first_neg ? -3.0f : 3.0f;
        x[90] = first_neg ? 3.0f : -3.0f;
        expect_same_q8_k(x, SP_QK_K);
    }
    // Exact halves: with max -127 the scale is 1, so k + 0.5 must round to even.
    for (int i = 0; i < SP_QK_K; i++)
        x[i] = (float)(i % 250) - 124.5f;
    x[0] = -127.0f;
    expect_same_q8_k(x, SP_QK_K);
    for (int i = 0; i < SP_QK_K; i++)
        x[i] = -x[i];
    expect_same_q8_k(x, SP_QK_K);
    // Zero blocks (including -0), a block with one nonzero value, subnormal and huge values.
    for (int i = 0; i < 3 * SP_QK_K; i++)
        x[i] = (i % 2) ? -0.0f : 0.0f;
    x[SP_QK_K + 255] = -1e-3f;
    for (int i = 2 * SP_QK_K; i < 3 * SP_QK_K; i++)
        x[i] = 1e-40f * (float)(i % 7 - 3) + 1e30f * (i == 2 * SP_QK_K + 5);
    expect_same_q8_k(x, 3 * SP_QK_K);
    expect_same_q8_k(x, 0);
    free(x);
}
#else
static void test_quantize_q8_k(void **state) {
    (void)state;
    skip();
}
#endif

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_is_the_model), cmocka_unit_test(test_tables_equal_ref),
        cmocka_unit_test(test_tables_extremes),  cmocka_unit_test(test_pack_bytes),
        cmocka_unit_test(test_quantize_q8_k),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
