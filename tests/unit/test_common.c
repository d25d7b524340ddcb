/* Unit tests for the error convention (src/common/err.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "common/cleanup.h"
#include "common/err.h"

static int fails_with_enoent(vcr_error_t *err)
{
    errno = ENOENT;
    return vcr_error_errno(err, "open `%s`", "/nonexistent");
}

static void test_errno_message_and_status(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(fails_with_enoent(&err), -1);
    assert_non_null(err);
    assert_int_equal(vcr_error_status(err), ENOENT);
    assert_string_equal(vcr_error_msg(err), "open `/nonexistent`: No such file or directory");
}

static void test_wrap_adds_context_and_keeps_status(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    fails_with_enoent(&err);
    vcr_error_wrap(&err, "load VM `%s`", "web1");
    assert_string_equal(vcr_error_msg(err),
                        "load VM `web1`: open `/nonexistent`: No such file or directory");
    assert_int_equal(vcr_error_status(err), ENOENT);
}

static void test_first_error_is_kept(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    vcr_error_make(&err, EINVAL, "root cause");
    vcr_error_make(&err, EIO, "later failure");
    assert_string_equal(vcr_error_msg(err), "root cause");
    assert_int_equal(vcr_error_status(err), EINVAL);
}

static void test_null_err_is_allowed(void **state)
{
    (void)state;
    assert_int_equal(vcr_error_make(NULL, EINVAL, "nobody listens"), -1);
    assert_int_equal(vcr_error_wrap(NULL, "ctx"), -1);
}

static void test_steal_pointer(void **state)
{
    (void)state;
    cleanup_free char *p = strdup("x");
    char *q = steal_pointer(&p);
    assert_null(p);
    assert_string_equal(q, "x");
    free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errno_message_and_status),
        cmocka_unit_test(test_wrap_adds_context_and_keeps_status),
        cmocka_unit_test(test_first_error_is_kept),
        cmocka_unit_test(test_null_err_is_allowed),
        cmocka_unit_test(test_steal_pointer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
