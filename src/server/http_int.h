/* Internals shared by the HTTP parser (http.c) and the server (http_server.c). */
#ifndef SP_SERVER_HTTP_INT_H
#define SP_SERVER_HTTP_INT_H

#include "server/http.h"

/* sp_http_parse, and on SP_HTTP_PARSE_ERROR also a reason in diag (a fixed English sentence
 * with no request bytes in it, so it can be put in a JSON string as is; offset = the byte
 * where the request went wrong). diag may be NULL. */
sp_http_parse_result sp__http_parse(const char *buf, size_t len, size_t max_header_bytes,
                                    sp_http_req *req, size_t *consumed, uint64_t *content_length,
                                    int *status, sp_diag *diag);

/* True if a and b (b NUL-terminated) are equal ignoring ASCII case. */
bool sp__http_str_ieq(sp_str a, const char *b);

#endif
