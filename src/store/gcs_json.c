#include "store/gcs_json.h"

#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"

static json_object *parse(const char *json, size_t len)
{
    if (len > (size_t)INT32_MAX)
        return NULL;
    json_tokener *tok = json_tokener_new();
    if (!tok)
        return NULL;
    json_object *obj = json_tokener_parse_ex(tok, json, (int)len);
    /* trailing garbage or a truncated document is not a response */
    if (obj && (json_tokener_get_error(tok) != json_tokener_success ||
                (size_t)json_tokener_get_parse_end(tok) < len)) {
        size_t end = json_tokener_get_parse_end(tok);
        while (end < len && isspace((unsigned char)json[end]))
            end++;
        if (end < len) {
            json_object_put(obj);
            obj = NULL;
        }
    }
    json_tokener_free(tok);
    return obj;
}

/* A decimal string (GCS sends int64 as strings) or a JSON integer. */
static int get_u64(json_object *parent, const char *key, uint64_t *out)
{
    json_object *v;
    if (!json_object_object_get_ex(parent, key, &v))
        return -EPROTO;
    if (json_object_is_type(v, json_type_int)) {
        /* json-c clamps integers past int64 to INT64_MAX for get_int64
         * (and past uint64 to UINT64_MAX): read the unsigned value, which
         * callers range-check */
        if (json_object_get_int64(v) < 0)
            return -EPROTO;
        *out = json_object_get_uint64(v);
        return 0;
    }
    if (!json_object_is_type(v, json_type_string))
        return -EPROTO;
    const char *s = json_object_get_string(v);
    if (!*s || strlen(s) > 20)
        return -EPROTO;
    uint64_t acc = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EPROTO;
        unsigned digit = (unsigned)(*p - '0');
        if (acc > (UINT64_MAX - digit) / 10)
            return -EPROTO;
        acc = acc * 10 + digit;
    }
    *out = acc;
    return 0;
}

static int days_from_civil(int64_t y, unsigned m, unsigned d, int64_t *out)
{
    /* Howard Hinnant's algorithm: days since 1970-01-01 */
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    *out = era * 146097 + (int64_t)doe - 719468;
    return 0;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return days[m - 1] + (m == 2 && is_leap(y));
}

static int read_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -EINVAL;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

int gcs_parse_rfc3339(const char *s, int64_t *sec, int32_t *nsec)
{
    int year, mon, day, hour, min, secs;
    int32_t frac = 0;
    const char *p = s;

    if (read_digits(&p, 4, &year) || *p++ != '-' || read_digits(&p, 2, &mon) || *p++ != '-' ||
        read_digits(&p, 2, &day) || (*p != 'T' && *p != 't' && *p != ' '))
        return -EINVAL;
    p++;
    if (read_digits(&p, 2, &hour) || *p++ != ':' || read_digits(&p, 2, &min) || *p++ != ':' ||
        read_digits(&p, 2, &secs))
        return -EINVAL;
    if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) || hour > 23 ||
        min > 59 || secs > 60)
        return -EINVAL;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (digits < 9) {
                frac = frac * 10 + (*p - '0');
                digits++;
            }
            p++;
        }
        if (digits == 0)
            return -EINVAL;
        while (digits++ < 9)
            frac *= 10;
    }
    int64_t offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        int oh, om;
        p++;
        if (read_digits(&p, 2, &oh) || *p++ != ':' || read_digits(&p, 2, &om) || oh > 23 ||
            om > 59)
            return -EINVAL;
        offset = sign * (oh * 3600 + om * 60);
    } else {
        return -EINVAL;
    }
    if (*p)
        return -EINVAL;
    int64_t days;
    days_from_civil(year, (unsigned)mon, (unsigned)day, &days);
    *sec = days * 86400 + hour * 3600 + min * 60 + secs - offset;
    *nsec = frac;
    return 0;
}

static int parse_attr(json_object *item, struct store_attr *out)
{
    json_object *v;
    uint64_t gen;
    /* a size must fit off_t */
    if (get_u64(item, "size", &out->size) < 0 || out->size > INT64_MAX ||
        get_u64(item, "generation", &gen) < 0 || gen > INT64_MAX)
        return -EPROTO;
    out->generation = (int64_t)gen;
    out->mtime_sec = 0;
    out->mtime_nsec = 0;
    if (json_object_object_get_ex(item, "updated", &v))
        if (!json_object_is_type(v, json_type_string) ||
            gcs_parse_rfc3339(json_object_get_string(v), &out->mtime_sec, &out->mtime_nsec) < 0)
            return -EPROTO;
    return 0;
}

static int parse_list(const char *json, size_t len, const char *dir_prefix, bool flat,
                      struct store_listing *out, char **next_page_token)
{
    size_t plen = strlen(dir_prefix);
    json_object *root = parse(json, len);
    json_object *arr, *v;
    int rc = 0;

    *next_page_token = NULL;
    if (!root || !json_object_is_type(root, json_type_object)) {
        rc = -EPROTO;
        goto out;
    }
    if (flat && json_object_object_get_ex(root, "prefixes", &arr) &&
        (!json_object_is_type(arr, json_type_array) || json_object_array_length(arr) > 0)) {
        rc = -EPROTO; /* no delimiter was asked */
        goto out;
    }
    if (json_object_object_get_ex(root, "items", &arr)) {
        if (!json_object_is_type(arr, json_type_array)) {
            rc = -EPROTO;
            goto out;
        }
        size_t n = json_object_array_length(arr);
        for (size_t i = 0; i < n; i++) {
            json_object *item = json_object_array_get_idx(arr, i);
            struct store_attr attr;
            if (!json_object_is_type(item, json_type_object) ||
                !json_object_object_get_ex(item, "name", &v) ||
                !json_object_is_type(v, json_type_string)) {
                rc = -EPROTO;
                goto out;
            }
            const char *name = json_object_get_string(v);
            size_t nlen = (size_t)json_object_get_string_len(v);
            if (nlen < plen || memcmp(name, dir_prefix, plen) != 0) {
                rc = -EPROTO; /* the server answered another question */
                goto out;
            }
            if (nlen == plen)
                continue; /* this directory's own marker */
            if ((rc = parse_attr(item, &attr)) < 0)
                goto out;
            const char *rel = name + plen;
            size_t rlen = nlen - plen;
            const char *slash = flat ? NULL : memchr(rel, '/', rlen);
            if (memchr(rel, '\0', slash ? (size_t)(slash - rel) : rlen)) {
                /* a C string cannot hold this name: cut at its NUL, it would
                 * pass for another object */
                log_warn("skipping an object name holding a NUL byte");
                continue;
            }
            if (slash && (size_t)(slash - rel) == rlen - 1) {
                /* "child/" marker that a delimiter-less server sent as an item */
                rc = store_listing_add(out, rel, rlen - 1, true, NULL);
            } else if (slash) {
                rc = store_listing_add(out, rel, (size_t)(slash - rel), true, NULL);
            } else {
                rc = store_listing_add(out, rel, rlen, false, &attr);
            }
            if (rc < 0)
                goto out;
        }
    }
    if (json_object_object_get_ex(root, "prefixes", &arr)) {
        if (!json_object_is_type(arr, json_type_array)) {
            rc = -EPROTO;
            goto out;
        }
        size_t n = json_object_array_length(arr);
        for (size_t i = 0; i < n; i++) {
            v = json_object_array_get_idx(arr, i);
            if (!json_object_is_type(v, json_type_string)) {
                rc = -EPROTO;
                goto out;
            }
            const char *name = json_object_get_string(v);
            size_t nlen = (size_t)json_object_get_string_len(v);
            if (nlen <= plen || memcmp(name, dir_prefix, plen) != 0 || name[nlen - 1] != '/') {
                rc = -EPROTO;
                goto out;
            }
            /* one level below dir_prefix: its first component */
            const char *rel = name + plen;
            size_t rlen = nlen - plen - 1;
            const char *slash = memchr(rel, '/', rlen);
            if (slash)
                rlen = (size_t)(slash - rel);
            if (memchr(rel, '\0', rlen)) {
                log_warn("skipping a prefix holding a NUL byte");
                continue;
            }
            if ((rc = store_listing_add(out, rel, rlen, true, NULL)) < 0)
                goto out;
        }
    }
    if (json_object_object_get_ex(root, "nextPageToken", &v)) {
        if (!json_object_is_type(v, json_type_string)) {
            rc = -EPROTO;
            goto out;
        }
        if (json_object_get_string_len(v) > 0) {
            *next_page_token = strdup(json_object_get_string(v));
            if (!*next_page_token)
                rc = -ENOMEM;
        }
    }
out:
    json_object_put(root);
    return rc;
}

int gcs_json_parse_list(const char *json, size_t len, const char *dir_prefix,
                        struct store_listing *out, char **next_page_token)
{
    return parse_list(json, len, dir_prefix, false, out, next_page_token);
}

int gcs_json_parse_tree_page(const char *json, size_t len, const char *dir_prefix,
                             struct store_listing *out, char **next_page_token)
{
    return parse_list(json, len, dir_prefix, true, out, next_page_token);
}

int gcs_json_list_nonempty(const char *json, size_t len)
{
    json_object *root = parse(json, len);
    json_object *arr;
    int rc = 0;
    if (!root || !json_object_is_type(root, json_type_object)) {
        rc = -EPROTO;
        goto out;
    }
    static const char *const keys[] = {"items", "prefixes"};
    for (int i = 0; i < 2; i++) {
        if (!json_object_object_get_ex(root, keys[i], &arr))
            continue;
        if (!json_object_is_type(arr, json_type_array)) {
            rc = -EPROTO; /* malformed, not empty */
            goto out;
        }
        if (json_object_array_length(arr) > 0)
            rc = 1;
    }
out:
    json_object_put(root);
    return rc;
}

int gcs_json_parse_object(const char *json, size_t len, struct store_attr *out)
{
    json_object *root = parse(json, len);
    int rc;
    if (!root || !json_object_is_type(root, json_type_object))
        rc = -EPROTO;
    else
        rc = parse_attr(root, out);
    json_object_put(root);
    return rc;
}

int gcs_format_rfc3339(int64_t sec, char *out, size_t size)
{
    struct tm tm;
    time_t t = (time_t)sec;
    if ((int64_t)t != sec || !gmtime_r(&t, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900)
        return -EINVAL;
    /* not strftime's %Y, which leaves a year before 1000 short of four
     * digits ("24-01-01"), which is no RFC 3339 time */
    int n = snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.000Z", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (n < 0 || (size_t)n >= size)
        return -EINVAL;
    return 0;
}

static int add_string(json_object *obj, const char *key, const char *value)
{
    json_object *v = json_object_new_string(value);
    if (!v)
        return -ENOMEM;
    if (json_object_object_add(obj, key, v) < 0) {
        json_object_put(v);
        return -ENOMEM;
    }
    return 0;
}

char *gcs_json_upload_metadata(const char *name, const char *content_type,
                               int64_t custom_time_sec)
{
    char when[32];
    char *out = NULL;
    json_object *root = json_object_new_object();
    if (!root)
        return NULL;
    /* json-c escapes the strings: a name may hold quotes or control bytes */
    if (add_string(root, "name", name) < 0 || add_string(root, "contentType", content_type) < 0)
        goto out;
    if (custom_time_sec != 0 && (gcs_format_rfc3339(custom_time_sec, when, sizeof(when)) < 0 ||
                                 add_string(root, "customTime", when) < 0))
        goto out;
    const char *text = json_object_to_json_string_ext(
        root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (text)
        out = strdup(text);
out:
    json_object_put(root);
    return out;
}
