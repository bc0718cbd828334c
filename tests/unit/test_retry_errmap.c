/* Retry policy (backoff with full jitter, budget, deadline) and the mapping
 * of transport and HTTP failures to errno values. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "http/retry.h"
#include "util/errmap.h"

#define DRAWS 20000

static int64_t ceiling_of(const struct retry_policy *p, int retry)
{
    int64_t c = p->base_delay_ms;
    for (int i = 1; i < retry; i++) {
        if (c >= p->max_delay_ms)
            break;
        c *= 2;
    }
    return c < p->max_delay_ms ? c : p->max_delay_ms;
}

static void test_default_policy(void **state)
{
    (void)state;
    struct retry_policy p;
    memset(&p, 0, sizeof(p));
    retry_policy_default(&p);
    assert_true(p.max_attempts >= 2);
    assert_true(p.base_delay_ms > 0);
    assert_true(p.max_delay_ms >= p.base_delay_ms);
    assert_true(p.deadline_ms > p.max_delay_ms);
}

static void test_backoff_within_bounds_and_jittered(void **state)
{
    (void)state;
    struct retry_policy p = {.max_attempts = 10, .base_delay_ms = 100, .max_delay_ms = 5000,
                             .deadline_ms = 60000};
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    double prev_mean = -1;

    for (int retry = 1; retry <= 12; retry++) {
        int64_t ceiling = ceiling_of(&p, retry);
        int64_t lo = INT64_MAX, hi = -1;
        double sum = 0;
        int64_t first = -1;
        bool varied = false;
        for (int i = 0; i < DRAWS; i++) {
            int64_t b = retry_backoff_ms(&p, retry, &rng);
            if (b < 0 || b > ceiling)
                fail_msg("retry %d: backoff %lld outside [0, %lld]", retry, (long long)b,
                         (long long)ceiling);
            if (first < 0)
                first = b;
            else if (b != first)
                varied = true;
            lo = b < lo ? b : lo;
            hi = b > hi ? b : hi;
            sum += (double)b;
        }
        double mean = sum / DRAWS;
        /* full jitter: spread over the whole range, mean near ceiling/2 */
        assert_true(varied);
        assert_true(lo <= ceiling / 20);
        assert_true(hi >= ceiling - ceiling / 20);
        if (mean < 0.45 * (double)ceiling || mean > 0.55 * (double)ceiling)
            fail_msg("retry %d: mean %.1f for ceiling %lld", retry, mean, (long long)ceiling);
        /* grows until the cap */
        if (ceiling < p.max_delay_ms)
            assert_true(mean > prev_mean * 1.6);
        prev_mean = mean;
    }
    /* the ceilings: 100, 200, 400, ..., 3200, then the 5000 cap */
    assert_int_equal(ceiling_of(&p, 1), 100);
    assert_int_equal(ceiling_of(&p, 6), 3200);
    assert_int_equal(ceiling_of(&p, 7), 5000);
}

static void test_backoff_first_retry_below_base(void **state)
{
    (void)state;
    struct retry_policy p = {.max_attempts = 5, .base_delay_ms = 7, .max_delay_ms = 1000,
                             .deadline_ms = 0};
    uint64_t rng = 12345;
    bool seen[8] = {0};
    for (int i = 0; i < DRAWS; i++) {
        int64_t b = retry_backoff_ms(&p, 1, &rng);
        assert_true(b >= 0 && b <= 7);
        seen[b] = true;
    }
    /* every value of [0, 7] comes up, both ends included */
    for (int i = 0; i <= 7; i++)
        assert_true(seen[i]);
}

static void test_backoff_capped(void **state)
{
    (void)state;
    struct retry_policy p = {.max_attempts = 100, .base_delay_ms = 250, .max_delay_ms = 2000,
                             .deadline_ms = 0};
    uint64_t rng = 777;
    int64_t hi = 0;
    for (int retry = 4; retry <= 1000; retry += 7) {
        for (int i = 0; i < 200; i++) {
            int64_t b = retry_backoff_ms(&p, retry, &rng);
            assert_true(b >= 0 && b <= 2000);
            hi = b > hi ? b : hi;
        }
    }
    assert_true(hi > 1900);
    /* very large retry numbers do not overflow */
    for (int i = 0; i < 1000; i++) {
        int64_t b = retry_backoff_ms(&p, INT32_MAX, &rng);
        assert_true(b >= 0 && b <= 2000);
    }
}

static void test_backoff_huge_cap(void **state)
{
    (void)state;
    /* a cap near INT64_MAX: doubling must not overflow on the way up */
    struct retry_policy p = {.max_attempts = 100, .base_delay_ms = 200,
                             .max_delay_ms = INT64_MAX, .deadline_ms = 0};
    uint64_t rng = 99;
    int nonzero = 0;
    int64_t hi = 0;
    for (int i = 0; i < 1000; i++) {
        int64_t b = retry_backoff_ms(&p, 100, &rng);
        assert_true(b >= 0);
        if (b > 0)
            nonzero++;
        hi = b > hi ? b : hi;
    }
    assert_true(nonzero > 990);
    assert_true(hi > INT64_MAX / 2); /* the ceiling reached the cap */
    /* below the cap the ceiling is still base * 2^(n-1) */
    for (int i = 0; i < 1000; i++)
        assert_true(retry_backoff_ms(&p, 3, &rng) <= 800);
}

static void test_backoff_degenerate(void **state)
{
    (void)state;
    struct retry_policy p = {.max_attempts = 3, .base_delay_ms = 100, .max_delay_ms = 1000,
                             .deadline_ms = 0};
    uint64_t rng = 42;
    /* no backoff before the first attempt */
    assert_int_equal(retry_backoff_ms(&p, 0, &rng), 0);
    assert_int_equal(retry_backoff_ms(&p, -3, &rng), 0);
    p.base_delay_ms = 0;
    for (int retry = 1; retry < 20; retry++)
        assert_int_equal(retry_backoff_ms(&p, retry, &rng), 0);
    p.base_delay_ms = 100;
    p.max_delay_ms = 0;
    for (int retry = 1; retry < 20; retry++)
        assert_int_equal(retry_backoff_ms(&p, retry, &rng), 0);
}

static void test_backoff_rng_advances(void **state)
{
    (void)state;
    struct retry_policy p = {.max_attempts = 3, .base_delay_ms = 1000000, .max_delay_ms = 1000000,
                             .deadline_ms = 0};
    uint64_t a = 5, b = 5;
    /* the same seed gives the same sequence; the state moves on */
    for (int i = 0; i < 100; i++)
        assert_int_equal(retry_backoff_ms(&p, 1, &a), retry_backoff_ms(&p, 1, &b));
    assert_int_equal(a, b);
    assert_true(a != 5);
    uint64_t before = a;
    retry_backoff_ms(&p, 1, &a);
    assert_true(a != before && a != 0);
}

static void test_rng_seed(void **state)
{
    (void)state;
    for (int i = 0; i < 100; i++)
        assert_true(retry_rng_seed() != 0);
}

static void test_may_continue_budget(void **state)
{
    (void)state;
    struct retry_policy p = {.max_attempts = 3, .base_delay_ms = 100, .max_delay_ms = 1000,
                             .deadline_ms = 0};
    assert_true(retry_may_continue(&p, 0, 0, 0));
    assert_true(retry_may_continue(&p, 1, 0, 100));
    assert_true(retry_may_continue(&p, 2, 100000000, 100));
    assert_false(retry_may_continue(&p, 3, 0, 0));
    assert_false(retry_may_continue(&p, 4, 0, 0));
    p.max_attempts = 1;
    assert_false(retry_may_continue(&p, 1, 0, 0));
}

static void test_may_continue_deadline(void **state)
{
    (void)state;
    struct retry_policy p = {.max_attempts = 100, .base_delay_ms = 100, .max_delay_ms = 1000,
                             .deadline_ms = 10000};
    assert_true(retry_may_continue(&p, 1, 0, 0));
    assert_true(retry_may_continue(&p, 1, 5000, 4999));
    assert_true(retry_may_continue(&p, 1, 9998, 1));
    /* the sleep would end at or past the deadline */
    assert_false(retry_may_continue(&p, 1, 5000, 5000));
    assert_false(retry_may_continue(&p, 1, 9999, 1));
    assert_false(retry_may_continue(&p, 1, 10000, 0));
    assert_false(retry_may_continue(&p, 1, 20000, 0));
    assert_false(retry_may_continue(&p, 1, 0, 10000));
    /* both limits apply */
    p.max_attempts = 2;
    assert_false(retry_may_continue(&p, 2, 0, 0));
}

static void test_may_continue_simulated(void **state)
{
    (void)state;
    /* a loop of failing attempts stops within budget and deadline */
    struct retry_policy p;
    retry_policy_default(&p);
    p.deadline_ms = 3000;
    p.max_attempts = 50;
    uint64_t rng = 2024;
    for (int trial = 0; trial < 200; trial++) {
        int attempts = 1;
        int64_t elapsed = 10; /* the first attempt */
        for (;;) {
            int64_t b = retry_backoff_ms(&p, attempts, &rng);
            if (!retry_may_continue(&p, attempts, elapsed, b))
                break;
            elapsed += b + 10;
            attempts++;
        }
        assert_true(attempts <= p.max_attempts);
        assert_true(elapsed <= p.deadline_ms + 10);
    }
}

/* ---- errmap ----------------------------------------------------------- */

static void test_errmap_http(void **state)
{
    (void)state;
    assert_int_equal(errmap_from_http(CURLE_OK, 200), 0);
    assert_int_equal(errmap_from_http(CURLE_OK, 201), 0);
    assert_int_equal(errmap_from_http(CURLE_OK, 204), 0);
    assert_int_equal(errmap_from_http(CURLE_OK, 206), 0);
    assert_int_equal(errmap_from_http(CURLE_OK, 299), 0);
    assert_int_equal(errmap_from_http(CURLE_OK, 400), -EINVAL);
    assert_int_equal(errmap_from_http(CURLE_OK, 401), -EACCES);
    assert_int_equal(errmap_from_http(CURLE_OK, 403), -EACCES);
    assert_int_equal(errmap_from_http(CURLE_OK, 404), -ENOENT);
    assert_int_equal(errmap_from_http(CURLE_OK, 410), -ENOENT);
    assert_int_equal(errmap_from_http(CURLE_OK, 412), -ESTALE);
    assert_int_equal(errmap_from_http(CURLE_OK, 408), -ETIMEDOUT);
    assert_int_equal(errmap_from_http(CURLE_OK, 416), -EINVAL);
    assert_int_equal(errmap_from_http(CURLE_OK, 429), -EIO);
    assert_int_equal(errmap_from_http(CURLE_OK, 500), -EIO);
    assert_int_equal(errmap_from_http(CURLE_OK, 502), -EIO);
    assert_int_equal(errmap_from_http(CURLE_OK, 503), -EIO);
    assert_int_equal(errmap_from_http(CURLE_OK, 504), -EIO);
    /* neither success nor a known error */
    assert_int_equal(errmap_from_http(CURLE_OK, 0), -EIO);
    assert_int_equal(errmap_from_http(CURLE_OK, 100), -EIO);
    assert_int_equal(errmap_from_http(CURLE_OK, 199), -EIO);
    assert_int_equal(errmap_from_http(CURLE_OK, 300), -EIO);
    assert_int_equal(errmap_from_http(CURLE_OK, 302), -EIO);
    assert_int_equal(errmap_from_http(CURLE_OK, 418), -EIO);
    assert_int_equal(errmap_from_http(CURLE_OK, 999), -EIO);
}

static void test_errmap_transport(void **state)
{
    (void)state;
    /* a transport failure wins over whatever status was seen */
    assert_int_equal(errmap_from_http(CURLE_OPERATION_TIMEDOUT, 0), -ETIMEDOUT);
    assert_int_equal(errmap_from_http(CURLE_OPERATION_TIMEDOUT, 200), -ETIMEDOUT);
    assert_int_equal(errmap_from_http(CURLE_RECV_ERROR, 0), -EIO);
    assert_int_equal(errmap_from_http(CURLE_RECV_ERROR, 200), -EIO);
    assert_int_equal(errmap_from_http(CURLE_SEND_ERROR, 0), -EIO);
    assert_int_equal(errmap_from_http(CURLE_COULDNT_CONNECT, 0), -EIO);
    assert_int_equal(errmap_from_http(CURLE_COULDNT_RESOLVE_HOST, 0), -EIO);
    assert_int_equal(errmap_from_http(CURLE_PARTIAL_FILE, 206), -EIO);
    assert_int_equal(errmap_from_http(CURLE_GOT_NOTHING, 0), -EIO);
    assert_int_equal(errmap_from_http(CURLE_OUT_OF_MEMORY, 0), -ENOMEM);
    assert_int_equal(errmap_from_http(CURLE_ABORTED_BY_CALLBACK, 0), -ECANCELED);
    assert_int_equal(errmap_from_http(CURLE_WRITE_ERROR, 200), -ECANCELED);
    /* every transport code is an error, never success */
    for (int code = 1; code < CURL_LAST; code++)
        assert_true(errmap_from_http(code, 200) < 0);
}

static void test_errmap_retryable(void **state)
{
    (void)state;
    static const long yes[] = {408, 429, 500, 502, 503, 504};
    static const long no[] = {200, 204, 206, 301, 304, 400, 401, 403, 404, 410, 412, 416};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (!errmap_is_retryable(CURLE_OK, yes[i]))
            fail_msg("%ld should be retryable", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (errmap_is_retryable(CURLE_OK, no[i]))
            fail_msg("%ld should not be retryable", no[i]);

    /* resets, timeouts, refused connections */
    assert_true(errmap_is_retryable(CURLE_RECV_ERROR, 0));
    assert_true(errmap_is_retryable(CURLE_SEND_ERROR, 0));
    assert_true(errmap_is_retryable(CURLE_OPERATION_TIMEDOUT, 0));
    assert_true(errmap_is_retryable(CURLE_COULDNT_CONNECT, 0));
    assert_true(errmap_is_retryable(CURLE_PARTIAL_FILE, 206));
    assert_true(errmap_is_retryable(CURLE_GOT_NOTHING, 0));
    assert_true(errmap_is_retryable(CURLE_HTTP2_STREAM, 0));
    /* a failed transfer is judged by the transport, not by a stale status */
    assert_true(errmap_is_retryable(CURLE_RECV_ERROR, 404));
    /* what a new connection cannot cure */
    assert_false(errmap_is_retryable(CURLE_URL_MALFORMAT, 0));
    assert_false(errmap_is_retryable(CURLE_UNSUPPORTED_PROTOCOL, 0));
    assert_false(errmap_is_retryable(CURLE_OUT_OF_MEMORY, 0));
    assert_false(errmap_is_retryable(CURLE_ABORTED_BY_CALLBACK, 0));
    assert_false(errmap_is_retryable(CURLE_WRITE_ERROR, 500));
    assert_false(errmap_is_retryable(CURLE_PEER_FAILED_VERIFICATION, 0));
}

static void test_errmap_consistent(void **state)
{
    (void)state;
    /* whatever is retryable is an error */
    for (long status = 100; status < 600; status++)
        if (errmap_is_retryable(CURLE_OK, status))
            assert_true(errmap_from_http(CURLE_OK, status) < 0);
    /* and no 2xx is retried */
    for (long status = 200; status < 300; status++)
        assert_false(errmap_is_retryable(CURLE_OK, status));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_policy),
        cmocka_unit_test(test_backoff_within_bounds_and_jittered),
        cmocka_unit_test(test_backoff_first_retry_below_base),
        cmocka_unit_test(test_backoff_capped),
        cmocka_unit_test(test_backoff_huge_cap),
        cmocka_unit_test(test_backoff_degenerate),
        cmocka_unit_test(test_backoff_rng_advances),
        cmocka_unit_test(test_rng_seed),
        cmocka_unit_test(test_may_continue_budget),
        cmocka_unit_test(test_may_continue_deadline),
        cmocka_unit_test(test_may_continue_simulated),
        cmocka_unit_test(test_errmap_http),
        cmocka_unit_test(test_errmap_transport),
        cmocka_unit_test(test_errmap_retryable),
        cmocka_unit_test(test_errmap_consistent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
