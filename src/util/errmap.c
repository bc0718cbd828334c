#include "util/errmap.h"

#include <curl/curl.h>
#include <errno.h>

int errmap_from_http(int curl_code, long http_status)
{
    switch ((CURLcode)curl_code) {
    case CURLE_OK:
        break;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    case CURLE_ABORTED_BY_CALLBACK:
    case CURLE_WRITE_ERROR:
        return -ECANCELED;
    default:
        return -EIO;
    }
    if (http_status >= 200 && http_status < 300)
        return 0;
    switch (http_status) {
    case 400:
        return -EINVAL;
    case 401:
    case 403:
        return -EACCES;
    case 404:
    case 410:
        return -ENOENT;
    case 408:
        return -ETIMEDOUT;
    case 412: /* a generation precondition failed: the object changed */
        return -ESTALE;
    case 416:
        return -EINVAL;
    default:
        return -EIO;
    }
}

bool errmap_is_retryable(int curl_code, long http_status)
{
    switch ((CURLcode)curl_code) {
    case CURLE_OK:
        return http_status == 408 || http_status == 429 || http_status >= 500;
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_COULDNT_RESOLVE_HOST:
        return true;
    default:
        return false;
    }
}
