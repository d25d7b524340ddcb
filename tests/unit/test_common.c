/* Unit tests for the error convention (src/common/err.c) and durable renames
 * (src/common/durable.c). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/cleanup.h"
#include "common/durable.h"
#include "common/err.h"
#include "page_cache.h"

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

/* A renamed file's data is on disk when vcr_rename_durable returns: the
 * fsync comes before the rename. */
static void test_rename_durable(void **state)
{
    (void)state;
    char dir[] = "/tmp/vcr-test-durable-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char tmp[64], path[64];
    snprintf(tmp, sizeof(tmp), "%s/f.tmp", dir);
    snprintf(path, sizeof(path), "%s/f", dir);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    for (int i = 0; i < 65536; i++)
        fputc('d', f);
    fclose(f);
    long before = unsynced_pages(tmp);
    assert_int_equal(vcr_rename_durable(tmp, path, NULL), 0);
    assert_int_equal(access(tmp, F_OK), -1);
    if (before >= 0) { /* kernels with cachestat(2) */
        assert_true(before > 0);
        assert_int_equal(unsynced_pages(path), 0);
    }
    /* A missing tmp: errno stays the failing call's, the message names it. */
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(vcr_rename_durable(tmp, path, NULL), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(vcr_rename_durable(tmp, path, &err), -1);
    assert_int_equal(vcr_error_status(err), ENOENT);
    assert_non_null(strstr(vcr_error_msg(err), tmp));
    assert_int_equal(access(path, F_OK), 0); /* untouched */
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errno_message_and_status),
        cmocka_unit_test(test_wrap_adds_context_and_keeps_status),
        cmocka_unit_test(test_first_error_is_kept),
        cmocka_unit_test(test_null_err_is_allowed),
        cmocka_unit_test(test_steal_pointer),
        cmocka_unit_test(test_rename_durable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
