#ifndef ZIPPERFS_CLOCK_H
#define ZIPPERFS_CLOCK_H

#include <stdint.h>

/* monotonic milliseconds, for deadlines and TTLs */
int64_t clock_now_ms(void);
/* wall-clock seconds since the epoch */
int64_t clock_wall_s(void);
void clock_sleep_ms(int64_t ms);

#endif
