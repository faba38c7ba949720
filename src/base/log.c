#include "base/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_int level = -1;

static sp_log_level level_from_env(void) {
    const char *s = getenv("SPINDLE_LOG");
    if (!s)
        return SP_LOG_INFO;
    if (!strcmp(s, "debug"))
        return SP_LOG_DEBUG;
    if (!strcmp(s, "warn"))
        return SP_LOG_WARN;
    if (!strcmp(s, "error"))
        return SP_LOG_ERROR;
    if (!strcmp(s, "off"))
        return SP_LOG_OFF;
    return SP_LOG_INFO;
}

void sp_log_set_level(sp_log_level l) { atomic_store(&level, (int)l); }

sp_log_level sp_log_get_level(void) {
    int l = atomic_load(&level);
    if (l < 0) {
        l = (int)level_from_env();
        atomic_store(&level, l);
    }
    return (sp_log_level)l;
}

void sp_log(sp_log_level l, const char *fmt, ...) {
    if (l < sp_log_get_level())
        return;
    static const char *const tags[] = {"debug", "info", "warn", "error"};
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "spindle: %s: %s\n", tags[l], line);
}
