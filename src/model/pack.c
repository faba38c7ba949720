#include "model/pack.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/log.h"
#include "tensor/kernels.h"

enum { ALIGN = 64 };

/* The matrices of m that sp__linear multiplies, in a fixed order. Returns their count; fills
 * out (capacity cap) when out is not NULL. */
static size_t matrices(sp_model *m, sp_weight **out, size_t cap) {
    size_t n = 0;
#define ADD(w)                                                                                     \
    do {                                                                                           \
        if ((w)->data && out && n < cap)                                                           \
            out[n] = (w);                                                                          \
        n += (w)->data != NULL;                                                                    \
    } while (0)
    for (int il = 0; il < m->hp.n_layer; il++) {
        sp_layer *L = &m->layers[il];
        ADD(&L->wq);
        ADD(&L->wk);
        ADD(&L->wv);
        ADD(&L->wo);
        ADD(&L->w_gate);
        ADD(&L->w_up);
        ADD(&L->w_down);
    }
    ADD(&m->output);
#undef ADD
    return n;
}

static size_t packed_size(const sp_kernels *k, const sp_weight *w) {
    const size_t b = k->pack_bytes ? k->pack_bytes(w->type, w->ne[0], w->ne[1]) : 0;
    return (b + ALIGN - 1) / ALIGN * ALIGN;
}

/* The whole pages inside [p, p + len). */
static void drop_pages(const void *p, size_t len) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = ((uintptr_t)p + page - 1) / page * page;
    const uintptr_t hi = ((uintptr_t)p + len) / page * page;
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

sp_err sp__model_pack(sp_model *m) {
    const sp_kernels *k = sp_kernels_get();
    if (!k->pack_bytes)
        return SP_OK;
    const size_t n = matrices(m, NULL, 0);
    sp_weight **ws = calloc(n ? n : 1, sizeof *ws);
    if (!ws)
        return SP_ERR_NOMEM;
    matrices(m, ws, n);
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += packed_size(k, ws[i]);
    if (total == 0) {
        free(ws);
        return SP_OK;
    }
    void *mem = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        free(ws);
        return SP_ERR_NOMEM;
    }
#ifdef MADV_HUGEPAGE
    (void)madvise(mem, total, MADV_HUGEPAGE); // fewer TLB misses while streaming the weights
#endif
    uint8_t *at = mem;
    for (size_t i = 0; i < n; i++) {
        sp_weight *w = ws[i];
        const size_t sz = packed_size(k, w);
        if (!sz)
            continue;
        // A tied head shares the embedding's data; the embedding keeps its file pages.
        const bool tied = w == &m->output && w->data == m->tok_embd.data;
        k->pack(w->type, w->data, w->row_bytes, w->ne[0], w->ne[1], at);
        if (!tied)
            drop_pages(w->data, w->row_bytes * (size_t)w->ne[1]);
        w->packed = at;
        at += sz;
    }
    free(ws);
    (void)mprotect(mem, total, PROT_READ);
    m->packed_mem = mem;
    m->packed_size = total;
    SP_DEBUG("packed %zu MiB of weights for the %s kernels", total >> 20, k->isa);
    return SP_OK;
}

void sp__model_unpack(sp_model *m) {
    if (m->packed_mem)
        munmap(m->packed_mem, m->packed_size);
    m->packed_mem = NULL;
    m->packed_size = 0;
}
