/* test_agent_ids.c - the ids the agent makes itself: agent_uuid() gives RFC 4122 version 4 UUIDs
 * in the canonical 8-4-4-4-12 lowercase form, NUL-terminated, a new one every call. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "agent/agent.h"

static void uuids_are_canonical_version_4_and_new_each_time(void **state)
{
    (void)state;
    char prev[40] = "";
    for (int n = 0; n < 1000; n++) {
        char id[40];
        memset(id, 'x', sizeof id);
        agent_uuid(id);
        assert_int_equal(strlen(id), 36);
        for (int i = 0; i < 36; i++) {
            if (i == 8 || i == 13 || i == 18 || i == 23)
                assert_int_equal(id[i], '-');
            else
                assert_non_null(strchr("0123456789abcdef", id[i]));
        }
        assert_int_equal(id[14], '4');           /* version 4 */
        assert_non_null(strchr("89ab", id[19])); /* RFC 4122 variant */
        assert_int_equal(id[37], 'x');           /* nothing written past the NUL */
        assert_string_not_equal(id, prev);
        memcpy(prev, id, sizeof prev);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(uuids_are_canonical_version_4_and_new_each_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
