#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "store/gcs_json.h"

static void test_placeholder(void **state)
{
    (void)state;
    int64_t s;
    int32_t ns;
    assert_int_equal(gcs_parse_rfc3339("1970-01-01T00:00:01Z", &s, &ns), 0);
    assert_int_equal(s, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_placeholder)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
