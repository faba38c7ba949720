/* Half-precision conversions: exhaustive over every f16 and bf16 bit pattern, every rounding
 * boundary (the midpoint of each pair of neighbours and the floats on either side of it), and a
 * comparison with the compiler's own _Float16 conversion where it has one. */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "base/util.h"
#include "tensor/quant.h"

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The value of an f16 from the IEEE 754 definition, in double. */
static double f16_value(uint16_t h) {
    int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
    double v = exp == 0 ? ldexp(mant, -24) : ldexp(1024 + mant, exp - 25);
    return sign ? -v : v;
}

static void test_f16_to_f32_every_pattern(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sp_f16_to_f32((sp_f16)h);
        uint32_t u = bits_of(f);
        int exp = (h >> 10) & 31, mant = h & 1023;
        assert_int_equal(u >> 31, h >> 15); // sign kept, zeros included
        if (exp == 31 && mant == 0) {
            assert_true(isinf(f));
        } else if (exp == 31) {
            // NaN: quiet, payload kept in the top mantissa bits.
            assert_true(isnan(f));
            assert_int_equal(u & 0x7fc00000u, 0x7fc00000u);
            assert_int_equal((u >> 13) & 0x1ffu, (uint32_t)(mant & 0x1ff));
        } else {
            assert_true((double)f == f16_value((uint16_t)h));
        }
    }
}

static void test_f16_round_trip_every_pattern(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        sp_f16 back = sp_f32_to_f16(sp_f16_to_f32((sp_f16)h));
        if (((h >> 10) & 31) == 31 && (h & 1023))
            assert_int_equal(back, (h & 0x8000u) | 0x7e00u); // every NaN becomes the quiet NaN
        else
            assert_int_equal(back, h);
    }
}

static void test_f16_known_values(void **state) {
    (void)state;
    static const struct {
        uint16_t h;
        float f;
    } known[] = {
        {0x0000, 0.0f},
        {0x3c00, 1.0f},
        {0xc000, -2.0f},
        {0x3800, 0.5f},
        {0x3555, 0.333251953125f},
        {0x7bff, 65504.0f},
        {0x0400, 0x1p-14f},
        {0x0001, 0x1p-24f},
        {0x03ff, 0x3ffp-24f},
        {0x4248, 3.140625f},
        {0xfbff, -65504.0f},
        {0x5640, 100.0f},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(known); i++) {
        assert_true(sp_f16_to_f32(known[i].h) == known[i].f);
        assert_int_equal(sp_f32_to_f16(known[i].f), known[i].h);
    }
    assert_int_equal(sp_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(sp_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(sp_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(sp_f32_to_f16(NAN), 0x7e00);
    assert_int_equal(sp_f32_to_f16(-NAN), 0xfe00);
    assert_int_equal(sp_f32_to_f16(float_of(0x7f800001u)), 0x7e00); // signalling NaN
    assert_int_equal(sp_f32_to_f16(float_of(0xffffffffu)), 0xfe00);
    assert_int_equal(sp_f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(sp_f32_to_f16(-1e10f), 0xfc00);
    assert_int_equal(sp_f32_to_f16(65519.996f), 0x7bff); // just below the tie with 65536
    assert_int_equal(sp_f32_to_f16(65520.0f), 0x7c00);   // the tie rounds to even: infinity
    assert_int_equal(sp_f32_to_f16(0x1p-25f), 0x0000);   // half the smallest subnormal: even
    assert_int_equal(sp_f32_to_f16(nextafterf(0x1p-25f, 1.0f)), 0x0001);
    assert_int_equal(sp_f32_to_f16(0x3p-25f), 0x0002); // 1.5 units: tie to even (2)
    assert_int_equal(sp_f32_to_f16(0x5p-25f), 0x0002); // 2.5 units: tie to even (2)
    assert_int_equal(sp_f32_to_f16(1e-30f), 0x0000);
    assert_int_equal(sp_f32_to_f16(float_of(0x00000001u)), 0x0000); // f32 subnormal
    assert_int_equal(sp_f32_to_f16(-1e-30f), 0x8000);
    assert_int_equal(sp_f32_to_f16(0x1.ffcp-15f), 0x0400); // rounds up into the normals
}

/* For every pair of neighbouring non-negative finite f16 values (and the largest one with
 * infinity), the exact midpoint rounds to the one with an even mantissa, and the floats just
 * below and above it round down and up. Negative values mirror them. */
static void test_f32_to_f16_every_boundary(void **state) {
    (void)state;
    for (uint32_t a = 0; a < 0x7c00; a++) {
        uint32_t b = a + 1;
        double lo = f16_value((uint16_t)a);
        double hi = b == 0x7c00 ? 65536.0 : f16_value((uint16_t)b);
        float mid = (float)((lo + hi) / 2); // 12 significant bits: exact in f32
        assert_true((double)mid == (lo + hi) / 2);
        uint32_t even = (a & 1) ? b : a;
        for (int s = 0; s < 2; s++) {
            float sign = s ? -1.0f : 1.0f;
            uint32_t sbit = s ? 0x8000u : 0;
            assert_int_equal(sp_f32_to_f16(sign * mid), sbit | even);
            assert_int_equal(sp_f32_to_f16(sign * nextafterf(mid, 0.0f)), sbit | a);
            assert_int_equal(sp_f32_to_f16(sign * nextafterf(mid, INFINITY)), sbit | b);
            assert_int_equal(sp_f32_to_f16(sign * (float)lo), sbit | a);
        }
    }
}

/* Against the compiler's conversion (libgcc's, IEEE round to nearest even) on a sample of all
 * 2^32 float patterns: every 251st pattern, plus all patterns around the f16 range. */
static void test_f32_to_f16_vs_compiler(void **state) {
    (void)state;
#ifdef __FLT16_MAX__
    uint64_t checked = 0;
    for (uint64_t u = 0; u < (1ull << 32); u += 251) {
        float f = float_of((uint32_t)u);
        if (isnan(f))
            continue;
        _Float16 c = (_Float16)f;
        uint16_t cb;
        memcpy(&cb, &c, 2);
        if (sp_f32_to_f16(f) != cb)
            fail_msg("f32 %08x: got %04x, compiler %04x", (unsigned)u, sp_f32_to_f16(f), cb);
        checked++;
    }
    // Every float from 2^-26 to 2^17 in steps of 64 ulps.
    for (uint32_t u = 0x32800000u; u < 0x48000000u; u += 64) {
        float f = float_of(u);
        _Float16 c = (_Float16)f;
        uint16_t cb;
        memcpy(&cb, &c, 2);
        assert_int_equal(sp_f32_to_f16(f), cb);
        checked++;
    }
    assert_true(checked > 10000000);
#else
    skip();
#endif
}

static void test_bf16(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sp_bf16_to_f32((sp_bf16)h);
        assert_int_equal(bits_of(f), h << 16);
        sp_bf16 back = sp_f32_to_bf16(f);
        bool nan = ((h >> 7) & 0xff) == 0xff && (h & 0x7f);
        assert_int_equal(back, nan ? (h | 0x40u) : h); // NaNs are forced quiet
        if (h == 0x7f7f || h == 0xff7f || nan || ((h >> 7) & 0xff) == 0xff)
            continue;
        // Ties between h and h+1 (same sign, magnitude increasing with h) round to even.
        uint32_t mid = (h << 16) | 0x8000u;
        uint32_t even = (h & 1) ? h + 1 : h;
        assert_int_equal(sp_f32_to_bf16(float_of(mid)), even);
        assert_int_equal(sp_f32_to_bf16(float_of(mid - 1)), h);
        assert_int_equal(sp_f32_to_bf16(float_of(mid + 1)), h + 1);
    }
    assert_int_equal(sp_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(sp_f32_to_bf16(-2.0f), 0xc000);
    assert_int_equal(sp_f32_to_bf16(3.140625f), 0x4049);
    assert_int_equal(sp_f32_to_bf16(float_of(0x3f808000u)), 0x3f80); // tie, even below
    assert_int_equal(sp_f32_to_bf16(float_of(0x3f818000u)), 0x3f82); // tie, even above
    assert_int_equal(sp_f32_to_bf16(float_of(0x7f7f8000u)), 0x7f80); // tie with infinity
    assert_int_equal(sp_f32_to_bf16(float_of(0x7f7f7fffu)), 0x7f7f);
    assert_int_equal(sp_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(sp_f32_to_bf16(float_of(0x7f800001u)), 0x7fc0); // sNaN -> quiet
    assert_int_equal(sp_f32_to_bf16(float_of(0xffc12345u)), 0xffc1);
    assert_int_equal(sp_f32_to_bf16(float_of(0x00008000u)), 0x0000); // subnormal tie
    assert_int_equal(sp_f32_to_bf16(float_of(0x00018000u)), 0x0002);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_to_f32_every_pattern),
        cmocka_unit_test(test_f16_round_trip_every_pattern),
        cmocka_unit_test(test_f16_known_values),
        cmocka_unit_test(test_f32_to_f16_every_boundary),
        cmocka_unit_test(test_f32_to_f16_vs_compiler),
        cmocka_unit_test(test_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
