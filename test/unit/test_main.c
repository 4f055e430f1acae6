/*
 * test_main.c - runs the bus unit tests: one Suite made of the per-file
 * TCases (*_tcase()), Check's standard summary (CK_NORMAL), exit status
 * non-zero if any test failed. Set CK_RUN_CASE / CK_RUN_TEST to run a part,
 * SSE_TEST_KEEP=1 to keep the temporary directories.
 */
#include <stdlib.h>

#include "test_helpers.h"

int main(void)
{
    Suite *s = suite_create("sse_bus");
    suite_add_tcase(s, format_tcase());
    suite_add_tcase(s, publish_tcase());
    suite_add_tcase(s, read_tcase());
    suite_add_tcase(s, guard_tcase());
    suite_add_tcase(s, procs_tcase());
    suite_add_tcase(s, ordered_tcase());
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
