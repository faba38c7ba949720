/* UTF-8 helpers, the GPT-2 byte <-> code point mapping and the byte-string hash. */
#include <string.h>

#include "tok/tok_impl.h"

size_t sp__utf8_validate(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t min;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            min = 0x10000;
        } else {
            return i; // continuation byte, C0/C1 (always overlong) or F5..FF
        }
        if (n - i < len)
            return i;
        uint32_t cp = c & (0x7F >> len);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += len;
    }
    return n;
}

size_t sp__utf8_decode(const char *str, size_t n, uint32_t *cp) {
    const unsigned char *s = (const unsigned char *)str;
    size_t len = sp__utf8_len(s[0]);
    if (len > n)
        len = n;
    if (len == 1) {
        *cp = s[0];
        return 1;
    }
    uint32_t c = s[0] & (0x7F >> len);
    for (size_t k = 1; k < len; k++)
        c = (c << 6) | (s[k] & 0x3F);
    *cp = c;
    return len;
}

size_t sp__utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* GPT-2's bytes_to_unicode(): the printable bytes '!'..'~', '¡'..'¬' and '®'..'ÿ' stand for
 * themselves; the other 68 bytes take the code points 256, 257, ... in byte order. */
static bool gpt2_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t sp__gpt2_byte_to_cp(uint8_t b) {
    if (gpt2_printable(b))
        return b;
    uint32_t k = 0;
    for (unsigned x = 0; x < b; x++)
        k += !gpt2_printable(x);
    return 256 + k;
}

int sp__gpt2_cp_to_byte(uint32_t cp) {
    if (cp < 256)
        return gpt2_printable(cp) ? (int)cp : -1;
    uint32_t k = cp - 256;
    for (unsigned x = 0; x < 256; x++) {
        if (!gpt2_printable(x)) {
            if (k == 0)
                return (int)x;
            k--;
        }
    }
    return -1;
}

/* A 64-bit multiply-xorshift hash over 8-byte words (in the spirit of MurmurHash64A); plenty
 * for table lookups of token texts, not for adversarial keys. */
uint64_t sp__hash_bytes(const void *p, size_t n, uint64_t seed) {
    const uint64_t m = 0xc6a4a7935bd1e995ull;
    const unsigned char *s = p;
    uint64_t h = seed ^ (n * m);
    while (n >= 8) {
        uint64_t k;
        memcpy(&k, s, 8);
        k *= m;
        k ^= k >> 47;
        k *= m;
        h ^= k;
        h *= m;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t k = 0;
        for (size_t i = 0; i < n; i++)
            k |= (uint64_t)s[i] << (8 * i);
        h ^= k;
        h *= m;
    }
    h ^= h >> 47;
    h *= m;
    h ^= h >> 47;
    return h;
}
