#include "util/log.h"

#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <stdlib.h>
#include <time.h>

/* Written by log_init() before threads start, read-only afterwards. */
static struct {
    bool json;
    enum log_level min;
} log_config = {false, LOG_LEVEL_INFO};

static const char *const level_names[] = {"DEBUG", "INFO", "WARNING", "ERROR"};

bool log_env_is_true(const char *value)
{
    if (!value)
        return false;
    return strcasecmp(value, "1") == 0 || strcasecmp(value, "true") == 0 ||
           strcasecmp(value, "yes") == 0;
}

void log_init(bool json, enum log_level min)
{
    log_config.json = json;
    log_config.min = min;
}

void log_set_level(enum log_level min)
{
    log_config.min = min;
}

void log_init_from_env(void)
{
    log_init(log_env_is_true(getenv("PRODUCTION_DEPLOYMENT")),
             log_env_is_true(getenv("ZIPPERFS_DEBUG")) ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO);
}

int log_format(char *buf, unsigned long size, bool json, enum log_level level,
               double unix_time, const char *message)
{
    time_t secs = (time_t)unix_time;
    int micros = (int)((unix_time - (double)secs) * 1e6);
    struct tm tm;
    char stamp[40];

    if (micros < 0)
        micros = 0;
    gmtime_r(&secs, &tm);
    int n = (int)strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof(stamp) - (size_t)n, ".%06dZ", micros);

    if (!json)
        return snprintf(buf, size, "%s zipperfs %s: %s\n", stamp, level_names[level], message);

    /* json-c does the string escaping */
    json_object *obj = json_object_new_object();
    json_object_object_add(obj, "severity", json_object_new_string(level_names[level]));
    json_object_object_add(obj, "message", json_object_new_string(message));
    json_object_object_add(obj, "time", json_object_new_string(stamp));
    int len = snprintf(buf, size, "%s\n",
                       json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(obj);
    return len;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char message[2048];
    char line[4096];
    struct timespec now;
    va_list ap;

    if (level < log_config.min)
        return;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    clock_gettime(CLOCK_REALTIME, &now);
    int len = log_format(line, sizeof(line), log_config.json, level,
                         (double)now.tv_sec + (double)now.tv_nsec / 1e9, message);
    if (len < 0)
        return;
    if ((size_t)len >= sizeof(line) && log_config.json) {
        /* escaping can make a JSON line several times the message: cut,
         * it would no longer be JSON, so it gets a buffer of its size */
        char *big = malloc((size_t)len + 1);
        if (big && log_format(big, (unsigned long)len + 1, true, level,
                              (double)now.tv_sec + (double)now.tv_nsec / 1e9, message) == len) {
            fwrite(big, 1, (size_t)len, stderr);
            free(big);
            return;
        }
        free(big);
    }
    if ((size_t)len >= sizeof(line)) {
        len = (int)sizeof(line) - 1;
        line[len - 1] = '\n';
    }
    /* one write per line keeps lines whole across threads */
    fwrite(line, 1, (size_t)len, stderr);
}
