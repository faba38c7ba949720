/* Logging to stderr with a level threshold. Thread-safe (one fprintf per line). */
#ifndef SP_BASE_LOG_H
#define SP_BASE_LOG_H

#include "base/err.h"

typedef enum sp_log_level { SP_LOG_DEBUG, SP_LOG_INFO, SP_LOG_WARN, SP_LOG_ERROR, SP_LOG_OFF } sp_log_level;

/* Sets the minimum level printed (default SP_LOG_INFO, or SPINDLE_LOG=debug|info|warn|error|off). */
void sp_log_set_level(sp_log_level level);
sp_log_level sp_log_get_level(void);

void sp_log(sp_log_level level, const char *fmt, ...) SP_PRINTF(2, 3);

#define SP_DEBUG(...) sp_log(SP_LOG_DEBUG, __VA_ARGS__)
#define SP_INFO(...) sp_log(SP_LOG_INFO, __VA_ARGS__)
#define SP_WARN(...) sp_log(SP_LOG_WARN, __VA_ARGS__)
#define SP_ERROR(...) sp_log(SP_LOG_ERROR, __VA_ARGS__)

#endif
