/* multipart/form-data bodies (RFC 7578), as clients upload files: the parts of a body, each
 * with its field name, its filename if it is a file, its Content-Type and its bytes, as views
 * into the body. Pure; any thread. */
#ifndef SP_SERVER_MULTIPART_H
#define SP_SERVER_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"
#include "gguf/gguf.h" // sp_str

typedef struct sp_multipart_part {
    sp_str name;     // the form field's name
    sp_str filename; // the file's name (has_filename), else empty
    bool has_filename;
    sp_str content_type; // empty when the part has none
    sp_str data;         // the part's bytes
} sp_multipart_part;

/* Splits body[len], sent with the Content-Type header value content_type (which must be
 * multipart/form-data with a boundary), into at most cap parts (*n of them). SP_ERR_FORMAT with
 * a message in d for a body that is not multipart/form-data or is malformed (no boundary, a
 * missing delimiter, a part without a name, more than cap parts); d->offset is where in the
 * body it went wrong. */
SP_MUST_USE sp_err sp_multipart_parse(sp_str content_type, const char *body, size_t len,
                                      sp_multipart_part *parts, int cap, int *n, sp_diag *d);

#endif
