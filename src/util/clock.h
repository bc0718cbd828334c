#ifndef ZIPPERFS_CLOCK_H
#define ZIPPERFS_CLOCK_H

#include <pthread.h>
#include <stdint.h>

/* monotonic milliseconds, for deadlines and TTLs */
int64_t clock_now_ms(void);
/* wall-clock seconds since the epoch */
int64_t clock_wall_s(void);
void clock_sleep_ms(int64_t ms);
/* Initializes c to time its waits on the clock of clock_now_ms. */
void clock_cond_init(pthread_cond_t *c);
/* Waits on c (m held) until clock_now_ms() reaches until_ms at the latest.
 * Returns what pthread_cond_timedwait returns (ETIMEDOUT at the end). */
int clock_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, int64_t until_ms);

#endif
