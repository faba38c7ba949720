/* Half-precision conversions.
 *
 * These reproduce ggml's portable scalar conversions bit for bit:
 *  - f16 -> f32 is exact; a signalling NaN comes back quiet (its payload kept), as it does when
 *    ggml scales the value through the FPU;
 *  - f32 -> f16 rounds to nearest, ties to even, with gradual underflow; overflow gives
 *    infinity; every NaN becomes the quiet NaN 0x7e00 with the input's sign;
 *  - bf16 -> f32 is a 16-bit shift (NaN payloads kept as they are);
 *  - f32 -> bf16 rounds to nearest even; a NaN is truncated and forced quiet (bit 6).
 * They are written with integer operations only, so they do not depend on the FPU's rounding
 * mode or on flush-to-zero settings. */
#include <stdint.h>
#include <string.h>

#include "tensor/quant.h"

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

float sp_f16_to_f32(sp_f16 h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        // Infinity, or NaN made quiet.
        bits = sign | 0x7f800000u | (mant << 13);
        if (mant)
            bits |= 0x00400000u;
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {
        // Subnormal: normalise. value = mant * 2^-24.
        int shift = 0;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            shift++;
        }
        // The leading 1 is now at bit 10: value = 1.m * 2^(-14 - shift).
        bits = sign | ((uint32_t)(127 - 14 - shift) << 23) | ((mant & 0x3ffu) << 13);
    }
    return f32_from_bits(bits);
}

sp_f16 sp_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (sp_f16)(sign | 0x7e00u); // NaN
    if (a >= 0x477ff000u)
        return (sp_f16)(sign | 0x7c00u); // rounds to >= 65520: infinity
    uint32_t exp = a >> 23;
    if (exp >= 113) {
        // Normal f16: rebias the exponent, round the 13 dropped mantissa bits to even. A carry
        // out of the mantissa correctly bumps the exponent.
        uint32_t v = a - (112u << 23);
        uint32_t r = v >> 13;
        uint32_t rem = v & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (r & 1u)))
            r++;
        return (sp_f16)(sign | r);
    }
    if (exp < 102)
        return (sp_f16)sign; // below half of the smallest subnormal (2^-25): zero
    // Subnormal f16: value = m * 2^(exp-150) with m the 24-bit significand; result units are
    // 2^-24, so shift right by 126 - exp (14..24) and round to even.
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t s = 126u - exp;
    uint32_t r = m >> s;
    uint32_t rem = m & ((1u << s) - 1u);
    uint32_t half = 1u << (s - 1u);
    if (rem > half || (rem == half && (r & 1u)))
        r++;
    return (sp_f16)(sign | r);
}

float sp_bf16_to_f32(sp_bf16 h) {
    return f32_from_bits((uint32_t)h << 16);
}

sp_bf16 sp_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (sp_bf16)((u >> 16) | 0x40u);
    return (sp_bf16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
