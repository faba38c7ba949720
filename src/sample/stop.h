/* Stop strings on streamed text.
 *
 * Generated text arrives in chunks (one per token, split anywhere, even inside a stop string or
 * a UTF-8 character). The matcher tells, after each chunk:
 *   - whether a stop string has now occurred, and where the output must be cut (the output is
 *     the text before the stop string's first byte; the stop string itself is not returned);
 *   - otherwise, how many bytes may be released now and how many trailing bytes must be held
 *     back because they begin some stop string, so a stream never sends text that later turns
 *     out to be part of a stop string.
 *
 * Which stop wins. Matches are found as the bytes arrive: the first byte at which any stop
 * string is complete decides; if several end at that byte, the longest wins (it starts
 * earliest), then the lowest index. This depends only on the text, never on how it was split
 * into chunks. With stops "abcd" and "bc", the text "abcd" stops at "bc" (output "a").
 *
 * The caller keeps the pending bytes (fed but not yet released). After each feed it releases the
 * first emit_bytes of them; hold_bytes remain pending (none after a match).
 *
 * Implementation: an Aho-Corasick automaton over the stop strings. Its state is the longest
 * suffix of the text that is a prefix of some stop string, so the hold-back is the state's depth
 * and no text is buffered at all; memory is O(total length of the stop strings), allocated once
 * in sp_stop_create. Feeding costs amortized O(1) per byte and never allocates.
 *
 * Text and stop strings are bytes. If the stop strings and the text are valid UTF-8 and chunks
 * end on character boundaries, every cut and hold-back falls on a character boundary, because a
 * held suffix starts with the first byte of a stop string.
 *
 * A matcher belongs to one request and its owning thread. */
#ifndef SP_SAMPLE_STOP_H
#define SP_SAMPLE_STOP_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define SP_STOP_MAX_STRINGS 64 // stop strings per request
#define SP_STOP_MAX_BYTES 4096 // bytes per stop string

typedef struct sp_stop sp_stop;

typedef struct sp_stop_status {
    int32_t stop;        // index of the stop string that matched, or -1
    size_t emit_bytes;   // pending bytes the caller may release now, from the first pending one
    size_t hold_bytes;   // trailing pending bytes withheld (0 after a match: drop the rest)
    uint64_t cut_offset; // total bytes released so far; after a match, the offset in the whole
                         // text where the output ends (the stop string's first byte)
} sp_stop_status;

/* Creates a matcher for stops[n_stops] (NUL-terminated, copied). n_stops may be 0: nothing is
 * ever held or matched. Returns SP_ERR_INVALID, with d->param = "stop", for n_stops < 0 or
 * > SP_STOP_MAX_STRINGS, a NULL or empty string, or one longer than SP_STOP_MAX_BYTES;
 * SP_ERR_NOMEM if allocation fails. *out is written only on success. */
SP_MUST_USE sp_err sp_stop_create(const char *const *stops, int32_t n_stops, sp_stop **out,
                                  sp_diag *d);

/* Frees the matcher; NULL is a no-op. */
void sp_stop_destroy(sp_stop *m);

/* Appends text[len] (borrowed) to the stream and reports the result in *out. Once a stop string
 * has matched, further feeds change nothing and report the same match with emit_bytes 0. Must
 * not be called after sp_stop_finish. Does not allocate. */
void sp_stop_feed(sp_stop *m, const char *text, size_t len, sp_stop_status *out);

/* Ends the stream (end of sequence, length limit): returns how many held bytes the caller may
 * now release, 0 after a match. */
size_t sp_stop_finish(sp_stop *m);

/* Forgets the stream, for reuse on a new one. */
void sp_stop_reset(sp_stop *m);

#endif
