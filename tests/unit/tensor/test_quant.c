/* Reference quantization, dequantization and dot products.
 *
 * - Blocks built by hand from the GGUF format definitions dequantize to the values the
 *   definitions give.
 * - Quantize/dequantize round trips stay within error budgets (NMSE = sum (x - x')^2 /
 *   sum x^2 on N(0,1) data), which also catch a wrong search in Q4_K/Q5_K/Q6_K; Q5_K's quants
 *   are each the nearest of 0..31 to (x + dmin m) / (d sc) with its block's stored scales, as
 *   ggml's quantize_row_q5_K_ref leaves them.
 * - Quantizing the dequantization of a Q8_0 row gives back the same bytes.
 * - sp_vec_dot_ref equals the double-precision dot of the dequantized rows within a float
 *   rounding budget, on odd numbers of blocks.
 * - sp_matmul_ref is batch invariant and equals sp_vec_dot_ref on converted rows. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "tensor/quant.h"

static size_t row_bytes(sp_dtype t, int64_t n) {
    uint64_t b = 0;
    assert_int_equal(sp_dtype_row_bytes(t, (uint64_t)n, &b), SP_OK);
    return (size_t)b;
}

static float *randn_row(uint64_t *rng, int64_t n, float sigma) {
    float *x = malloc((size_t)n * sizeof(float));
    assert_non_null(x);
    for (int64_t i = 0; i < n; i++)
        x[i] = sigma * sp_test_randn(rng);
    return x;
}

// ---------------------------------------------------------------- layouts

static void test_block_sizes_match_dtype_table(void **state) {
    (void)state;
    static const struct {
        sp_dtype t;
        size_t size;
        int block;
    } b[] = {
        {SP_DTYPE_Q8_0, sizeof(sp_block_q8_0), SP_QK8_0},
        {SP_DTYPE_Q4_0, sizeof(sp_block_q4_0), SP_QK4_0},
        {SP_DTYPE_Q4_K, sizeof(sp_block_q4_k), SP_QK_K},
        {SP_DTYPE_Q5_K, sizeof(sp_block_q5_k), SP_QK_K},
        {SP_DTYPE_Q6_K, sizeof(sp_block_q6_k), SP_QK_K},
        {SP_DTYPE_Q8_K, sizeof(sp_block_q8_k), SP_QK_K},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(b); i++) {
        const sp_dtype_info *info = sp_dtype_get(b[i].t);
        assert_non_null(info);
        assert_int_equal(info->type_size, b[i].size);
        assert_int_equal(info->block_size, b[i].block);
    }
    // Field offsets from ggml-common.h.
    assert_int_equal(offsetof(sp_block_q4_k, scales), 4);
    assert_int_equal(offsetof(sp_block_q4_k, qs), 16);
    assert_int_equal(offsetof(sp_block_q5_k, scales), 4);
    assert_int_equal(offsetof(sp_block_q5_k, qh), 16);
    assert_int_equal(offsetof(sp_block_q5_k, qs), 48);
    assert_int_equal(offsetof(sp_block_q6_k, qh), 128);
    assert_int_equal(offsetof(sp_block_q6_k, scales), 192);
    assert_int_equal(offsetof(sp_block_q6_k, d), 208);
    assert_int_equal(offsetof(sp_block_q8_k, qs), 4);
    assert_int_equal(offsetof(sp_block_q8_k, bsums), 260);
}

static void test_vec_dot_types(void **state) {
    (void)state;
    assert_int_equal(sp_dtype_vec_dot_type(SP_DTYPE_F32), SP_DTYPE_F32);
    assert_int_equal(sp_dtype_vec_dot_type(SP_DTYPE_F16), SP_DTYPE_F16);
    assert_int_equal(sp_dtype_vec_dot_type(SP_DTYPE_BF16), SP_DTYPE_BF16);
    assert_int_equal(sp_dtype_vec_dot_type(SP_DTYPE_Q8_0), SP_DTYPE_Q8_0);
    assert_int_equal(sp_dtype_vec_dot_type(SP_DTYPE_Q4_0), SP_DTYPE_Q8_0);
    assert_int_equal(sp_dtype_vec_dot_type(SP_DTYPE_Q4_K), SP_DTYPE_Q8_K);
    assert_int_equal(sp_dtype_vec_dot_type(SP_DTYPE_Q5_K), SP_DTYPE_Q8_K);
    assert_int_equal(sp_dtype_vec_dot_type(SP_DTYPE_Q6_K), SP_DTYPE_Q8_K);
}

// ---------------------------------------------------------------- hand-built blocks
// Scales are chosen so that every expected value is exact in float whatever the order of
// operations, so the comparisons are exact.

static void test_hand_q8_0(void **state) {
    (void)state;
    sp_block_q8_0 b[2];
    b[0].d = 0x3800; // 0.5
    b[1].d = 0xc400; // -4
    for (int j = 0; j < 32; j++) {
        b[0].qs[j] = (int8_t)(j - 16);
        b[1].qs[j] = (int8_t)(j % 2 ? 127 : -128);
    }
    float y[64];
    sp_dequantize_row(SP_DTYPE_Q8_0, b, y, 64);
    for (int j = 0; j < 32; j++) {
        assert_true(y[j] == 0.5f * (float)(j - 16));
        assert_true(y[32 + j] == (j % 2 ? -508.0f : 512.0f));
    }
}

static void test_hand_q4_0(void **state) {
    (void)state;
    sp_block_q4_0 b;
    b.d = 0x3400; // 0.25
    // Byte j: low nibble is value j, high nibble value j + 16.
    for (int j = 0; j < 16; j++)
        b.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    float y[32];
    sp_dequantize_row(SP_DTYPE_Q4_0, &b, y, 32);
    for (int j = 0; j < 16; j++) {
        assert_true(y[j] == 0.25f * (float)(j - 8));
        assert_true(y[j + 16] == 0.25f * (float)(15 - j - 8));
    }
}

/* Q4_K (ggml-common.h): 8 sub-blocks of 32 values; value = d * sc[j] * q - dmin * m[j] with
 * 6-bit sc and m packed in 12 bytes: byte i (i < 4) holds sc[i] in bits 0-5 and bits 4-5 of
 * sc[i+4] in bits 6-7; byte i+4 the same for m; byte i+8 holds the low 4 bits of sc[i+4]
 * (bits 0-3) and of m[i+4] (bits 4-7). The 4-bit quants of sub-blocks 2k and 2k+1 are the low
 * and high nibbles of qs[32k .. 32k+31]. */
static void test_hand_q4_k(void **state) {
    (void)state;
    static const uint8_t sc[8] = {1, 2, 3, 4, 33, 45, 60, 63};
    static const uint8_t mn[8] = {0, 5, 10, 63, 17, 32, 48, 7};
    sp_block_q4_k b;
    memset(&b, 0, sizeof b);
    b.d = 0x3c00;    // 1
    b.dmin = 0x3800; // 0.5
    for (int i = 0; i < 4; i++) {
        b.scales[i] = (uint8_t)(sc[i] | ((sc[i + 4] >> 4) << 6));
        b.scales[i + 4] = (uint8_t)(mn[i] | ((mn[i + 4] >> 4) << 6));
        b.scales[i + 8] = (uint8_t)((sc[i + 4] & 15) | ((mn[i + 4] & 15) << 4));
    }
    uint8_t q[256];
    for (int k = 0; k < 256; k++) {
        q[k] = (uint8_t)((k * 7 + k / 32) % 16);
        int sub = k / 32, pos = k % 32;
        b.qs[32 * (sub / 2) + pos] |= (uint8_t)(sub % 2 ? q[k] << 4 : q[k]);
    }
    float y[256];
    sp_dequantize_row(SP_DTYPE_Q4_K, &b, y, 256);
    for (int k = 0; k < 256; k++) {
        float want = 1.0f * (float)(sc[k / 32] * q[k]) - 0.5f * (float)mn[k / 32];
        if (y[k] != want)
            fail_msg("q4_k value %d: got %g, want %g", k, y[k], want);
    }
}

/* Q5_K (ggml-common.h): Q4_K's scales, mins and nibbles, plus the 5th bit of value k in bit
 * k / 32 of qh[k % 32]; value = d * sc[j] * q - dmin * m[j] with q 5-bit. */
static void test_hand_q5_k(void **state) {
    (void)state;
    static const uint8_t sc[8] = {63, 2, 17, 4, 33, 45, 60, 1};
    static const uint8_t mn[8] = {9, 5, 10, 63, 17, 0, 48, 7};
    sp_block_q5_k b;
    memset(&b, 0, sizeof b);
    b.d = 0x3800;    // 0.5
    b.dmin = 0x3400; // 0.25
    for (int i = 0; i < 4; i++) {
        b.scales[i] = (uint8_t)(sc[i] | ((sc[i + 4] >> 4) << 6));
        b.scales[i + 4] = (uint8_t)(mn[i] | ((mn[i + 4] >> 4) << 6));
        b.scales[i + 8] = (uint8_t)((sc[i + 4] & 15) | ((mn[i + 4] & 15) << 4));
    }
    uint8_t q[256];
    for (int k = 0; k < 256; k++) {
        q[k] = (uint8_t)((k * 11 + k / 32) % 32);
        int sub = k / 32, pos = k % 32;
        b.qs[32 * (sub / 2) + pos] |= (uint8_t)(sub % 2 ? (q[k] & 15) << 4 : q[k] & 15);
        b.qh[pos] |= (uint8_t)((q[k] >> 4) << sub);
    }
    float y[256];
    sp_dequantize_row(SP_DTYPE_Q5_K, &b, y, 256);
    for (int k = 0; k < 256; k++) {
        float want = 0.5f * (float)(sc[k / 32] * q[k]) - 0.25f * (float)mn[k / 32];
        if (y[k] != want)
            fail_msg("q5_k value %d: got %g, want %g", k, y[k], want);
    }
}

/* Q6_K: 16 sub-blocks of 16 values; value = d * scales[k/16] * (q - 32) with q 6-bit. For the
 * half h (values 128h..128h+127) with ql = ql[64h..], qh = qh[32h..], value 128h + 32c + l
 * (c = 0..3, l = 0..31) has its low 4 bits in ql[l + 32(c&1)] (low nibble for c < 2, high for
 * c >= 2) and its top 2 bits in bits 2c..2c+1 of qh[l]. */
static void test_hand_q6_k(void **state) {
    (void)state;
    sp_block_q6_k b;
    memset(&b, 0, sizeof b);
    b.d = 0x3000; // 0.125
    for (int s = 0; s < 16; s++)
        b.scales[s] = (int8_t)(s * 9 - 70);
    uint8_t q[256];
    for (int k = 0; k < 256; k++) {
        q[k] = (uint8_t)((k * 5 + 3) % 64);
        int h = k / 128, c = (k % 128) / 32, l = k % 32;
        uint8_t *ql = b.ql + 64 * h + l + 32 * (c & 1);
        *ql |= (uint8_t)(c >= 2 ? (q[k] & 15) << 4 : (q[k] & 15));
        b.qh[32 * h + l] |= (uint8_t)((q[k] >> 4) << (2 * c));
    }
    float y[256];
    sp_dequantize_row(SP_DTYPE_Q6_K, &b, y, 256);
    for (int k = 0; k < 256; k++) {
        float want = 0.125f * (float)(b.scales[k / 16] * (q[k] - 32));
        if (y[k] != want)
            fail_msg("q6_k value %d: got %g, want %g", k, y[k], want);
    }
}

static void test_hand_q8_k(void **state) {
    (void)state;
    sp_block_q8_k b;
    b.d = 0.25f;
    for (int k = 0; k < 256; k++)
        b.qs[k] = (int8_t)(k - 128);
    float y[256];
    sp_dequantize_row(SP_DTYPE_Q8_K, &b, y, 256);
    for (int k = 0; k < 256; k++)
        assert_true(y[k] == 0.25f * (float)(k - 128));
}

static void test_plain_types(void **state) {
    (void)state;
    const float x[5] = {1.0f, -2.5f, 65504.0f, 0x1p-24f, 3.0e-3f};
    sp_f16 h[5];
    sp_bf16 bh[5];
    float y[5], z[5];
    sp_quantize_row(SP_DTYPE_F16, x, h, 5);
    sp_dequantize_row(SP_DTYPE_F16, h, y, 5);
    sp_quantize_row(SP_DTYPE_BF16, x, bh, 5);
    sp_dequantize_row(SP_DTYPE_BF16, bh, z, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(h[i], sp_f32_to_f16(x[i]));
        assert_true(y[i] == sp_f16_to_f32(h[i]));
        assert_int_equal(bh[i], sp_f32_to_bf16(x[i]));
        assert_true(z[i] == sp_bf16_to_f32(bh[i]));
    }
    assert_true(y[0] == 1.0f && y[1] == -2.5f && y[2] == 65504.0f && y[3] == 0x1p-24f);
    float c[5];
    sp_quantize_row(SP_DTYPE_F32, x, c, 5);
    sp_dequantize_row(SP_DTYPE_F32, c, y, 5);
    assert_memory_equal(y, x, sizeof x);
}

// ---------------------------------------------------------------- quantization

/* Known quantizations computed from the ggml reference formulas by hand. */
static void test_quantize_known(void **state) {
    (void)state;
    // Q8_0: amax 127 gives d = 1 exactly and q = roundf(x), halves away from zero.
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = (float)j - 15.5f;
    x[31] = -127.0f;
    sp_block_q8_0 b;
    sp_quantize_row(SP_DTYPE_Q8_0, x, &b, 32);
    assert_int_equal(b.d, 0x3c00);
    for (int j = 0; j < 31; j++)
        assert_int_equal(b.qs[j], j < 16 ? j - 16 : j - 15); // -15.5 -> -16, 0.5 -> 1
    assert_int_equal(b.qs[31], -127);

    // Q4_0: the signed extreme -16 maps to q 0 (value -8 d) with d = 2, x = d (q - 8).
    float x4[32];
    for (int j = 0; j < 32; j++)
        x4[j] = (float)((j % 16) - 8) * 2.0f;
    x4[5] = -16.0f;
    sp_block_q4_0 b4;
    sp_quantize_row(SP_DTYPE_Q4_0, x4, &b4, 32);
    assert_int_equal(b4.d, 0x4000); // 2
    float y4[32];
    sp_dequantize_row(SP_DTYPE_Q4_0, &b4, y4, 32);
    assert_memory_equal(y4, x4, sizeof x4);

    // Q8_K: the positive extreme 2 maps to -127 with d = -2/127; the value -2 would be +127.
    float xk[256];
    for (int k = 0; k < 256; k++)
        xk[k] = (float)(k % 9) * 0.25f - 1.0f;
    xk[100] = 2.0f;
    sp_block_q8_k bk;
    sp_quantize_row(SP_DTYPE_Q8_K, xk, &bk, 256);
    assert_true(bk.d == 1 / (-127.f / 2.0f));
    assert_int_equal(bk.qs[100], -127);
    for (int k = 0; k < 256; k++) {
        assert_true(bk.qs[k] >= -127 && bk.qs[k] <= 127);
        assert_int_equal(bk.qs[k], (int)lrintf(-127.f / 2.0f * xk[k]));
    }
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int i = 0; i < 16; i++)
            s += bk.qs[16 * g + i];
        assert_int_equal(bk.bsums[g], s);
    }
}

static void test_quantize_zero_blocks(void **state) {
    (void)state;
    static const sp_dtype types[] = {SP_DTYPE_Q8_0, SP_DTYPE_Q4_0, SP_DTYPE_Q4_K,
                                     SP_DTYPE_Q5_K, SP_DTYPE_Q6_K, SP_DTYPE_Q8_K};
    float x[512] = {0};
    uint8_t buf[2 * 292];
    float y[512];
    for (size_t t = 0; t < SP_ARRAY_LEN(types); t++) {
        memset(buf, 0xa5, sizeof buf);
        sp_quantize_row(types[t], x, buf, 512);
        sp_dequantize_row(types[t], buf, y, 512);
        for (int i = 0; i < 512; i++)
            assert_true(y[i] == 0.0f);
    }
}

static double nmse(const float *x, const float *y, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        den += (double)x[i] * x[i];
    }
    return num / den;
}

/* Error budgets on N(0, 1) data, 64 Ki values. Measured with this code: f16 4.3e-8,
 * bf16 2.8e-6, q8_0 2.9e-5, q8_k 4.8e-5, q6_k 3.1e-4, q5_k 1.3e-3, q4_k 5.1e-3, q4_0 7.3e-3,
 * close to the uniform-noise estimates (step^2/12 relative to the variance). The budgets
 * are 1.4-3.5x those, so a wrong rounding, scale or search fails. */
static void test_round_trip_nmse(void **state) {
    (void)state;
    static const struct {
        sp_dtype t;
        double max_nmse;
    } budget[] = {
        {SP_DTYPE_F16, 1e-7},  {SP_DTYPE_BF16, 5e-6},   {SP_DTYPE_Q8_0, 1e-4},
        {SP_DTYPE_Q8_K, 1e-4}, {SP_DTYPE_Q6_K, 5e-4},   {SP_DTYPE_Q5_K, 2e-3},
        {SP_DTYPE_Q4_K, 7e-3}, {SP_DTYPE_Q4_0, 1.5e-2},
    };
    const int64_t n = 65536;
    uint64_t rng = 42;
    float *x = randn_row(&rng, n, 1.0f);
    float *y = malloc((size_t)n * sizeof(float));
    void *q = malloc(row_bytes(SP_DTYPE_F32, n));
    assert_true(y && q);
    for (size_t i = 0; i < SP_ARRAY_LEN(budget); i++) {
        sp_quantize_row(budget[i].t, x, q, n);
        sp_dequantize_row(budget[i].t, q, y, n);
        double e = nmse(x, y, n);
        print_message("%-5s nmse %.3g (budget %.3g)\n", sp_dtype_get(budget[i].t)->name, e,
                      budget[i].max_nmse);
        assert_true(e < budget[i].max_nmse);
    }
    // The Q4_K scale/min search must beat plain Q4_0 (same 4-bit quants).
    sp_quantize_row(SP_DTYPE_Q4_K, x, q, n);
    sp_dequantize_row(SP_DTYPE_Q4_K, q, y, n);
    double e4k = nmse(x, y, n);
    sp_quantize_row(SP_DTYPE_Q4_0, x, q, n);
    sp_dequantize_row(SP_DTYPE_Q4_0, q, y, n);
    assert_true(e4k < 0.8 * nmse(x, y, n));
    // One more bit: Q5_K's error is about a quarter of Q4_K's.
    sp_quantize_row(SP_DTYPE_Q5_K, x, q, n);
    sp_dequantize_row(SP_DTYPE_Q5_K, q, y, n);
    assert_true(nmse(x, y, n) < 0.35 * e4k);
    free(x);
    free(y);
    free(q);
}

/* Offset data: Q4_K must use its per-sub-block minimum (the format stores value =
 * d*sc*q - dmin*m with m >= 0, so only a negative offset can be taken out). Values in [-2, -1]
 * quantize with steps of about 1/15, where a symmetric 4-bit code would need steps of 1/4. */
static void test_q4_k_offset_data(void **state) {
    (void)state;
    uint64_t rng = 7;
    float x[256], y[256];
    for (int k = 0; k < 256; k++)
        x[k] = -1.5f + 0.5f * sp_test_randf(&rng);
    sp_block_q4_k b;
    sp_quantize_row(SP_DTYPE_Q4_K, x, &b, 256);
    sp_dequantize_row(SP_DTYPE_Q4_K, &b, y, 256);
    for (int k = 0; k < 256; k++)
        assert_true(fabsf(x[k] - y[k]) <= 1.0f / 15 * 0.6f + 0.02f);
    assert_true(nmse(x, y, 256) < 5e-4);
}

/* The same for Q5_K, with steps of about 1/31; and every quant is the nearest of 0..31 to
 * (x + dmin m) / (d sc) under the block's stored scales (the final requantization of ggml's
 * quantize_row_q5_K_ref), so the 5th bits are where dequantization reads them. */
static void test_q5_k_offset_data_and_requant(void **state) {
    (void)state;
    uint64_t rng = 8;
    float x[1024], y[1024];
    for (int k = 0; k < 256; k++)
        x[k] = -1.5f + 0.5f * sp_test_randf(&rng);
    for (int k = 256; k < 1024; k++) // N(0, 1) blocks at three scales
        x[k] = ldexpf(sp_test_randn(&rng), 4 * (k / 256) - 8);
    sp_block_q5_k b[4];
    sp_quantize_row(SP_DTYPE_Q5_K, x, b, 1024);
    sp_dequantize_row(SP_DTYPE_Q5_K, b, y, 1024);
    for (int k = 0; k < 256; k++)
        assert_true(fabsf(x[k] - y[k]) <= 0.04f); // measured 0.033 (Q4_K: 0.033 too)
    assert_true(nmse(x, y, 256) < 1e-4);          // measured 3.6e-5 (Q4_K: 1.6e-4)
    for (int i = 0; i < 4; i++) {
        const float d = sp_f16_to_f32(b[i].d), dmin = sp_f16_to_f32(b[i].dmin);
        for (int k = 0; k < 256; k++) {
            const int j = k / 32;
            const uint8_t *s = b[i].scales;
            const int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
            const int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
            const uint8_t byte = b[i].qs[32 * (j / 2) + k % 32];
            const int q = (j % 2 ? byte >> 4 : byte & 15) | (((b[i].qh[k % 32] >> j) & 1) << 4);
            const float ds = d * (float)sc, dm = dmin * (float)m;
            if (ds == 0.0f)
                continue;
            const float want = fminf(31.0f, fmaxf(0.0f, rintf((x[256 * i + k] + dm) / ds)));
            if (fabsf((float)q - want) > 0.0f)
                fail_msg("q5_k block %d value %d: quant %d, nearest %g", i, k, q, (double)want);
        }
    }
}

static void test_q8_0_requantize_is_identity(void **state) {
    (void)state;
    const int64_t n = 32 * 257;
    uint64_t rng = 3;
    float *x = randn_row(&rng, n, 0.37f);
    for (int64_t i = 0; i < 32; i++) // one all-zero block and one with a single value
        x[i] = 0.0f;
    for (int64_t i = 32; i < 64; i++)
        x[i] = i == 40 ? -3.0f : 0.0f;
    size_t nb = row_bytes(SP_DTYPE_Q8_0, n);
    uint8_t *q1 = malloc(nb), *q2 = malloc(nb);
    float *y = malloc((size_t)n * sizeof(float));
    assert_true(q1 && q2 && y);
    sp_quantize_row(SP_DTYPE_Q8_0, x, q1, n);
    sp_dequantize_row(SP_DTYPE_Q8_0, q1, y, n);
    sp_quantize_row(SP_DTYPE_Q8_0, y, q2, n);
    assert_memory_equal(q1, q2, nb);
    free(x);
    free(y);
    free(q1);
    free(q2);
}

// ---------------------------------------------------------------- dot products

/* sp_vec_dot_ref against the double dot of the dequantized rows. The float accumulation
 * budget is relative to sum |w_i x_i|: per-block products and partial sums are rounded to
 * float a few times per block. */
static void check_vec_dot(sp_dtype wt, int64_t n, uint64_t seed) {
    sp_dtype xt = sp_dtype_vec_dot_type(wt);
    uint64_t rng = seed;
    float *w = randn_row(&rng, n, 0.05f);
    float *x = randn_row(&rng, n, 2.0f);
    void *wq = malloc(row_bytes(wt, n));
    void *xq = malloc(row_bytes(xt, n));
    float *wd = malloc((size_t)n * sizeof(float));
    float *xd = malloc((size_t)n * sizeof(float));
    assert_true(wq && xq && wd && xd);
    sp_quantize_row(wt, w, wq, n);
    sp_quantize_row(xt, x, xq, n);
    sp_dequantize_row(wt, wq, wd, n);
    sp_dequantize_row(xt, xq, xd, n);
    double exact = 0, mag = 0;
    for (int64_t i = 0; i < n; i++) {
        exact += (double)wd[i] * xd[i];
        mag += fabs((double)wd[i] * xd[i]);
    }
    float got = sp_vec_dot_ref(wt, wq, xq, n);
    // Plain types round once per fma of a lane's chain (n / 16 of them) and per addition of
    // the 4 halving steps; block types once per block (plus 8 lane sums); each error at most
    // 2^-24 of a partial sum bounded by mag.
    const sp_dtype_info *info = sp_dtype_get(wt);
    double n_roundings =
        info->block_size == 1 ? (double)((n + 15) / 16) + 5 : (double)(n / info->block_size) + 12;
    double tol = n_roundings * 0x1p-23 * mag;
    if (fabs(got - exact) > tol)
        fail_msg("%s n=%lld: got %.9g, exact %.9g (tol %.3g)", sp_dtype_get(wt)->name, (long long)n,
                 got, exact, tol);
    // A second call gives the same bits.
    float again = sp_vec_dot_ref(wt, wq, xq, n);
    assert_memory_equal(&got, &again, sizeof got);
    free(w);
    free(x);
    free(wq);
    free(xq);
    free(wd);
    free(xd);
}

static void test_vec_dot_vs_double(void **state) {
    (void)state;
    static const int64_t plain_n[] = {1, 7, 33, 1001, 4097};
    static const int64_t blocks32[] = {1, 3, 7, 33, 101};
    static const int64_t blocks256[] = {1, 3, 7, 13};
    for (size_t i = 0; i < SP_ARRAY_LEN(plain_n); i++) {
        check_vec_dot(SP_DTYPE_F32, plain_n[i], 100 + i);
        check_vec_dot(SP_DTYPE_F16, plain_n[i], 200 + i);
        check_vec_dot(SP_DTYPE_BF16, plain_n[i], 300 + i);
    }
    for (size_t i = 0; i < SP_ARRAY_LEN(blocks32); i++) {
        check_vec_dot(SP_DTYPE_Q8_0, 32 * blocks32[i], 400 + i);
        check_vec_dot(SP_DTYPE_Q4_0, 32 * blocks32[i], 500 + i);
    }
    for (size_t i = 0; i < SP_ARRAY_LEN(blocks256); i++) {
        check_vec_dot(SP_DTYPE_Q4_K, 256 * blocks256[i], 600 + i);
        check_vec_dot(SP_DTYPE_Q5_K, 256 * blocks256[i], 650 + i);
        check_vec_dot(SP_DTYPE_Q6_K, 256 * blocks256[i], 700 + i);
    }
}

/* Hand-built Q4_K and Q8_K blocks where every partial sum is a small integer: the dot is
 * exact and can be computed from the format definition. */
static void test_vec_dot_q4_k_exact(void **state) {
    (void)state;
    sp_block_q4_k w;
    memset(&w, 0, sizeof w);
    w.d = 0x3c00;    // 1
    w.dmin = 0x4000; // 2
    static const uint8_t sc[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    static const uint8_t mn[8] = {8, 7, 6, 5, 4, 3, 2, 1};
    for (int i = 0; i < 4; i++) {
        w.scales[i] = sc[i];
        w.scales[i + 4] = mn[i];
        w.scales[i + 8] = (uint8_t)(sc[i + 4] | (mn[i + 4] << 4));
    }
    sp_block_q8_k x;
    x.d = 0.5f;
    long want2 = 0; // twice the exact dot
    for (int k = 0; k < 256; k++) {
        int q = (k * 3) % 16, sub = k / 32;
        w.qs[32 * (sub / 2) + k % 32] |= (uint8_t)(sub % 2 ? q << 4 : q);
        x.qs[k] = (int8_t)((k * 11) % 255 - 127);
        want2 += (long)(sc[sub] * q - 2 * mn[sub]) * x.qs[k];
    }
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int i = 0; i < 16; i++)
            s += x.qs[16 * g + i];
        x.bsums[g] = (int16_t)s;
    }
    assert_true(sp_vec_dot_ref(SP_DTYPE_Q4_K, &w, &x, 256) == (float)want2 * 0.5f);
}

/* The same for Q5_K: quants up to 31 with the 5th bit in qh. */
static void test_vec_dot_q5_k_exact(void **state) {
    (void)state;
    sp_block_q5_k w;
    memset(&w, 0, sizeof w);
    w.d = 0x3c00;    // 1
    w.dmin = 0x4000; // 2
    static const uint8_t sc[8] = {63, 2, 3, 40, 5, 6, 7, 8};
    static const uint8_t mn[8] = {8, 7, 6, 5, 4, 3, 2, 63};
    for (int i = 0; i < 4; i++) {
        w.scales[i] = (uint8_t)(sc[i] | ((sc[i + 4] >> 4) << 6));
        w.scales[i + 4] = (uint8_t)(mn[i] | ((mn[i + 4] >> 4) << 6));
        w.scales[i + 8] = (uint8_t)((sc[i + 4] & 15) | ((mn[i + 4] & 15) << 4));
    }
    sp_block_q8_k x;
    x.d = 0.5f;
    long want2 = 0; // twice the exact dot
    for (int k = 0; k < 256; k++) {
        int q = (k * 7) % 32, sub = k / 32;
        w.qs[32 * (sub / 2) + k % 32] |= (uint8_t)(sub % 2 ? (q & 15) << 4 : q & 15);
        w.qh[k % 32] |= (uint8_t)((q >> 4) << sub);
        x.qs[k] = (int8_t)((k * 11) % 255 - 127);
        want2 += (long)(sc[sub] * q - 2 * mn[sub]) * x.qs[k];
    }
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int i = 0; i < 16; i++)
            s += x.qs[16 * g + i];
        x.bsums[g] = (int16_t)s;
    }
    assert_true(sp_vec_dot_ref(SP_DTYPE_Q5_K, &w, &x, 256) == (float)want2 * 0.5f);
}

static void test_vec_dot_q6_k_exact(void **state) {
    (void)state;
    sp_block_q6_k w;
    memset(&w, 0, sizeof w);
    w.d = 0x3c00;
    for (int s = 0; s < 16; s++)
        w.scales[s] = (int8_t)(s - 8);
    sp_block_q8_k x;
    memset(&x, 0, sizeof x);
    x.d = 0.25f;
    long want4 = 0;
    for (int k = 0; k < 256; k++) {
        int q = (k * 13 + 5) % 64;
        int h = k / 128, c = (k % 128) / 32, l = k % 32;
        w.ql[64 * h + l + 32 * (c & 1)] |= (uint8_t)(c >= 2 ? (q & 15) << 4 : (q & 15));
        w.qh[32 * h + l] |= (uint8_t)((q >> 4) << (2 * c));
        x.qs[k] = (int8_t)((k * 7) % 200 - 100);
        want4 += (long)w.scales[k / 16] * (q - 32) * x.qs[k];
    }
    for (int g = 0; g < 16; g++) { // the offset of 32 comes off with the sums, as made by Q8_K
        int s = 0;
        for (int i = 0; i < 16; i++)
            s += x.qs[16 * g + i];
        x.bsums[g] = (int16_t)s;
    }
    assert_true(sp_vec_dot_ref(SP_DTYPE_Q6_K, &w, &x, 256) == (float)want4 * 0.25f);
}

static void test_vec_dot_q8_0_q4_0_exact(void **state) {
    (void)state;
    sp_block_q8_0 a[2], b[2];
    sp_block_q4_0 c[2];
    long want8 = 0, want4 = 0;
    for (int i = 0; i < 2; i++) {
        a[i].d = i ? 0x4000 : 0x3c00; // 2, 1
        b[i].d = 0x3800;              // 0.5
        c[i].d = i ? 0x4400 : 0x3c00; // 4, 1
        for (int j = 0; j < 32; j++) {
            a[i].qs[j] = (int8_t)(j * 5 - 77 + i);
            b[i].qs[j] = (int8_t)(100 - j * 6);
            want8 += (long)(i ? 2 : 1) * a[i].qs[j] * b[i].qs[j];
        }
        for (int j = 0; j < 16; j++) {
            int lo = (j * 3 + i) % 16, hi = (j * 7 + 1) % 16;
            c[i].qs[j] = (uint8_t)(lo | (hi << 4));
            want4 += (long)(i ? 4 : 1) * ((lo - 8) * b[i].qs[j] + (hi - 8) * b[i].qs[j + 16]);
        }
    }
    assert_true(sp_vec_dot_ref(SP_DTYPE_Q8_0, a, b, 64) == (float)want8 * 0.5f);
    assert_true(sp_vec_dot_ref(SP_DTYPE_Q4_0, c, b, 64) == (float)want4 * 0.5f);
}

// ---------------------------------------------------------------- matmul

static void check_matmul(sp_dtype wt, int64_t n_in, int64_t n_out, int64_t n_rows) {
    uint64_t rng = (uint64_t)wt * 1000 + (uint64_t)n_in;
    float *wf = randn_row(&rng, n_in * n_out, 0.1f);
    float *x = randn_row(&rng, n_in * n_rows, 1.0f);
    size_t wrow = row_bytes(wt, n_in);
    uint8_t *w = malloc(wrow * (size_t)n_out);
    float *y = malloc((size_t)(n_rows * n_out) * sizeof(float));
    float *y1 = malloc((size_t)n_out * sizeof(float));
    size_t sb = sp_matmul_ref_scratch_bytes(wt, n_in, n_rows);
    assert_int_equal(sb, row_bytes(sp_dtype_vec_dot_type(wt), n_in) * (size_t)n_rows);
    void *scratch = malloc(sb);
    void *scratch1 = malloc(sp_matmul_ref_scratch_bytes(wt, n_in, 1));
    float *wd = malloc((size_t)n_in * sizeof(float));
    assert_true(w && y && y1 && scratch && scratch1 && wd);
    for (int64_t o = 0; o < n_out; o++)
        sp_quantize_row(wt, wf + o * n_in, w + (size_t)o * wrow, n_in);

    sp_matmul_ref(wt, w, n_in, n_out, x, n_rows, y, scratch);
    for (int64_t r = 0; r < n_rows; r++) {
        // The same row alone, through a different scratch buffer, gives the same bits.
        sp_matmul_ref(wt, w, n_in, n_out, x + r * n_in, 1, y1, scratch1);
        assert_memory_equal(y1, y + r * n_out, (size_t)n_out * sizeof(float));
        for (int64_t o = 0; o < n_out; o++) {
            float d = sp_vec_dot_ref(wt, w + (size_t)o * wrow, scratch1, n_in);
            assert_memory_equal(&d, &y[r * n_out + o], sizeof d);
            // And it approximates the dot of the dequantized weights with the F32 input,
            // within the activation quantization error.
            sp_dequantize_row(wt, w + (size_t)o * wrow, wd, n_in);
            double exact = 0, norm_w = 0, norm_x = 0;
            for (int64_t i = 0; i < n_in; i++) {
                exact += (double)wd[i] * x[r * n_in + i];
                norm_w += (double)wd[i] * wd[i];
                norm_x += (double)x[r * n_in + i] * x[r * n_in + i];
            }
            double tol = 0.03 * sqrt(norm_w * norm_x);
            assert_true(fabs(d - exact) <= tol);
        }
    }
    free(wf);
    free(x);
    free(w);
    free(y);
    free(y1);
    free(scratch);
    free(scratch1);
    free(wd);
}

static void test_matmul_batch_invariant(void **state) {
    (void)state;
    check_matmul(SP_DTYPE_F32, 33, 5, 4);
    check_matmul(SP_DTYPE_F16, 64, 3, 5);
    check_matmul(SP_DTYPE_BF16, 40, 3, 3);
    check_matmul(SP_DTYPE_Q8_0, 96, 7, 5);
    check_matmul(SP_DTYPE_Q4_0, 160, 4, 3);
    check_matmul(SP_DTYPE_Q4_K, 768, 5, 4);
    check_matmul(SP_DTYPE_Q5_K, 512, 3, 4);
    check_matmul(SP_DTYPE_Q6_K, 512, 6, 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_sizes_match_dtype_table),
        cmocka_unit_test(test_vec_dot_types),
        cmocka_unit_test(test_hand_q8_0),
        cmocka_unit_test(test_hand_q4_0),
        cmocka_unit_test(test_hand_q4_k),
        cmocka_unit_test(test_hand_q5_k),
        cmocka_unit_test(test_hand_q6_k),
        cmocka_unit_test(test_hand_q8_k),
        cmocka_unit_test(test_plain_types),
        cmocka_unit_test(test_quantize_known),
        cmocka_unit_test(test_quantize_zero_blocks),
        cmocka_unit_test(test_round_trip_nmse),
        cmocka_unit_test(test_q4_k_offset_data),
        cmocka_unit_test(test_q5_k_offset_data_and_requant),
        cmocka_unit_test(test_q8_0_requantize_is_identity),
        cmocka_unit_test(test_vec_dot_vs_double),
        cmocka_unit_test(test_vec_dot_q4_k_exact),
        cmocka_unit_test(test_vec_dot_q5_k_exact),
        cmocka_unit_test(test_vec_dot_q6_k_exact),
        cmocka_unit_test(test_vec_dot_q8_0_q4_0_exact),
        cmocka_unit_test(test_matmul_batch_invariant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
