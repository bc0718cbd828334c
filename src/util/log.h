/* Logging: human-readable lines on stderr, or JSON lines in Cloud Logging's
 * structured format (severity, message, time) when PRODUCTION_DEPLOYMENT is
 * true.  The configuration is set once by log_init() before any thread
 * starts and only read afterwards. */
#ifndef ZIPPERFS_LOG_H
#define ZIPPERFS_LOG_H

#include <stdbool.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARNING, LOG_LEVEL_ERROR };

/* true for "1", "true", "yes" in any case; false for anything else or NULL */
bool log_env_is_true(const char *value);

/* json: structured output; min: lowest level printed */
void log_init(bool json, enum log_level min);
/* reads PRODUCTION_DEPLOYMENT and ZIPPERFS_DEBUG from the environment */
void log_init_from_env(void);
void log_set_level(enum log_level min);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Formats one line into buf without printing it (for tests). Returns length. */
int log_format(char *buf, unsigned long size, bool json, enum log_level level,
               double unix_time, const char *message);

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
