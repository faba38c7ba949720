/* Internals shared by the GGUF reader and writer; not part of the public API. */
#ifndef SP_GGUF_INTERNAL_H
#define SP_GGUF_INTERNAL_H

#include "gguf/gguf.h"

/* Byte extent of kv's value in the image: for a string its length prefix and bytes, for an
 * array its elements only (from kv->value). kv must be an entry of g. */
uint64_t sp__gguf_value_bytes(const sp_gguf *g, const sp_gguf_kv *kv);

#endif
