/* Retry policy: exponential backoff with full jitter, bounded by a number
 * of attempts (the budget) and a deadline for the whole operation. */
#ifndef ZIPPERFS_RETRY_H
#define ZIPPERFS_RETRY_H

#include <stdbool.h>
#include <stdint.h>

struct retry_policy {
    int max_attempts;      /* total attempts, the first included; >= 1 */
    int64_t base_delay_ms; /* backoff before the first retry, doubled each time */
    int64_t max_delay_ms;  /* cap on one backoff */
    int64_t deadline_ms;   /* cap on the whole operation, attempts and sleeps */
};

void retry_policy_default(struct retry_policy *p);

/* Backoff before retry number `retry` (1 = the first retry): a uniformly
 * random delay in [0, min(max, base * 2^(retry-1))]. *rng is a per-caller
 * xorshift state (never 0). */
int64_t retry_backoff_ms(const struct retry_policy *p, int retry, uint64_t *rng);

/* Whether another attempt may start: attempts made so far, time used,
 * and the backoff that would come first. */
bool retry_may_continue(const struct retry_policy *p, int attempts_made, int64_t elapsed_ms,
                        int64_t next_backoff_ms);

uint64_t retry_rng_seed(void);

#endif
