#include "http/retry.h"

#include <pthread.h>
#include <time.h>

void retry_policy_default(struct retry_policy *p)
{
    p->max_attempts = 6;
    p->base_delay_ms = 200;
    p->max_delay_ms = 10000;
    p->deadline_ms = 120000;
}

static uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

int64_t retry_backoff_ms(const struct retry_policy *p, int retry, uint64_t *rng)
{
    if (retry < 1)
        return 0;
    int64_t ceiling = p->base_delay_ms;
    /* doubling stops at the cap before it can overflow */
    for (int i = 1; i < retry && ceiling < p->max_delay_ms; i++)
        ceiling = ceiling > p->max_delay_ms / 2 ? p->max_delay_ms : ceiling * 2;
    if (ceiling > p->max_delay_ms)
        ceiling = p->max_delay_ms;
    if (ceiling <= 0)
        return 0;
    return (int64_t)(xorshift64(rng) % ((uint64_t)ceiling + 1));
}

bool retry_may_continue(const struct retry_policy *p, int attempts_made, int64_t elapsed_ms,
                        int64_t next_backoff_ms)
{
    if (attempts_made >= p->max_attempts)
        return false;
    if (p->deadline_ms > 0 && elapsed_ms + next_backoff_ms >= p->deadline_ms)
        return false;
    return true;
}

uint64_t retry_rng_seed(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
                    (uint64_t)(uintptr_t)pthread_self();
    return seed ? seed : 0x9e3779b97f4a7c15ull;
}
