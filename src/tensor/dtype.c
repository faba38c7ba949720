#include "tensor/dtype.h"

#include <strings.h>

#include "base/util.h"

// Block layouts of every ggml type id GGUF files may carry (ggml's type_traits).
static const sp_dtype_info infos[SP_DTYPE__COUNT] = {
    [SP_DTYPE_F32] = {"f32", 1, 4, true},
    [SP_DTYPE_F16] = {"f16", 1, 2, true},
    [SP_DTYPE_Q4_0] = {"q4_0", 32, 18, true},
    [SP_DTYPE_Q4_1] = {"q4_1", 32, 20, false},
    [SP_DTYPE_Q5_0] = {"q5_0", 32, 22, false},
    [SP_DTYPE_Q5_1] = {"q5_1", 32, 24, false},
    [SP_DTYPE_Q8_0] = {"q8_0", 32, 34, true},
    [SP_DTYPE_Q8_1] = {"q8_1", 32, 36, false},
    [SP_DTYPE_Q2_K] = {"q2_k", 256, 84, false},
    [SP_DTYPE_Q3_K] = {"q3_k", 256, 110, false},
    [SP_DTYPE_Q4_K] = {"q4_k", 256, 144, true},
    [SP_DTYPE_Q5_K] = {"q5_k", 256, 176, true},
    [SP_DTYPE_Q6_K] = {"q6_k", 256, 210, true},
    [SP_DTYPE_Q8_K] = {"q8_k", 256, 292, true},
    [SP_DTYPE_IQ2_XXS] = {"iq2_xxs", 256, 66, false},
    [SP_DTYPE_IQ2_XS] = {"iq2_xs", 256, 74, false},
    [SP_DTYPE_IQ3_XXS] = {"iq3_xxs", 256, 98, false},
    [SP_DTYPE_IQ1_S] = {"iq1_s", 256, 50, false},
    [SP_DTYPE_IQ4_NL] = {"iq4_nl", 32, 18, false},
    [SP_DTYPE_IQ3_S] = {"iq3_s", 256, 110, false},
    [SP_DTYPE_IQ2_S] = {"iq2_s", 256, 82, false},
    [SP_DTYPE_IQ4_XS] = {"iq4_xs", 256, 136, false},
    [SP_DTYPE_I8] = {"i8", 1, 1, false},
    [SP_DTYPE_I16] = {"i16", 1, 2, false},
    [SP_DTYPE_I32] = {"i32", 1, 4, false},
    [SP_DTYPE_I64] = {"i64", 1, 8, false},
    [SP_DTYPE_F64] = {"f64", 1, 8, false},
    [SP_DTYPE_IQ1_M] = {"iq1_m", 256, 56, false},
    [SP_DTYPE_BF16] = {"bf16", 1, 2, true},
    [SP_DTYPE_TQ1_0] = {"tq1_0", 256, 54, false},
    [SP_DTYPE_TQ2_0] = {"tq2_0", 256, 66, false},
};

const sp_dtype_info *sp_dtype_get(uint32_t type) {
    if (type >= SP_DTYPE__COUNT || !infos[type].name)
        return NULL;
    return &infos[type];
}

sp_err sp_dtype_row_bytes(uint32_t type, uint64_t n, uint64_t *out) {
    const sp_dtype_info *t = sp_dtype_get(type);
    if (!t || n % (uint64_t)t->block_size)
        return SP_ERR_INVALID;
    uint64_t bytes;
    if (!sp_mul_u64(n / (uint64_t)t->block_size, (uint64_t)t->type_size, &bytes))
        return SP_ERR_RANGE;
    *out = bytes;
    return SP_OK;
}

bool sp_dtype_from_name(const char *name, sp_dtype *out) {
    for (uint32_t i = 0; i < SP_DTYPE__COUNT; i++) {
        if (infos[i].name && !strcasecmp(infos[i].name, name)) {
            *out = (sp_dtype)i;
            return true;
        }
    }
    return false;
}
