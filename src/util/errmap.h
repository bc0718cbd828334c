/* The one place where transport and HTTP failures become errno values.
 * Every layer returns negative errno; nothing else invents its own mapping. */
#ifndef ZIPPERFS_ERRMAP_H
#define ZIPPERFS_ERRMAP_H

#include <stdbool.h>

/* curl_code is a CURLcode (0 = the transfer completed and http_status holds
 * the status). Returns a negative errno, or 0 for a 2xx status. */
int errmap_from_http(int curl_code, long http_status);

/* Whether a failed attempt is worth retrying: 408, 429, 5xx, and transport
 * failures that a new connection can cure (resets, timeouts, refused). */
bool errmap_is_retryable(int curl_code, long http_status);

#endif
