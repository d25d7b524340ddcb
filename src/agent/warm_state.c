/* State file and checksum of a warm restart (see warm_state.h). */
#include "agent/warm_state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/cleanup.h"
#include "common/durable.h"

int warm_state_digest(const char *path, char *out, uint64_t *bytes, vcr_error_t *err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vcr_error_errno(err, "open `%s`", path);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return vcr_error_make(err, ENOMEM, "SHA-256 of `%s`: cannot set up the digest", path);
    }
    static char buf[1 << 16];
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            EVP_MD_CTX_free(ctx);
            return vcr_error_errno(err, "read `%s`", path);
        }
        if (n == 0)
            break;
        EVP_DigestUpdate(ctx, buf, (size_t)n);
        total += (uint64_t)n;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    for (unsigned i = 0; i < len && i < WARM_STATE_HEX_LEN / 2; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    if (bytes)
        *bytes = total;
    return 0;
}

int warm_state_seal(const char *tmp, const char *state, const char *sum, uint64_t *bytes,
                    vcr_error_t *err)
{
    char hex[WARM_STATE_HEX_LEN + 1];
    if (warm_state_digest(tmp, hex, bytes, err) < 0)
        return -1;
    char sum_tmp[4200];
    snprintf(sum_tmp, sizeof(sum_tmp), "%s.tmp", sum);
    cleanup_file FILE *f = fopen(sum_tmp, "we");
    if (f == NULL)
        return vcr_error_errno(err, "create `%s`", sum_tmp);
    if (fprintf(f, "%s\n", hex) < 0 || fflush(f) != 0) {
        unlink(sum_tmp);
        return vcr_error_errno(err, "write `%s`", sum_tmp);
    }
    /* Durable before they are published: after a crash a sealed state is
     * whole, never a renamed file whose data had not reached the disk. */
    if (vcr_rename_durable(sum_tmp, sum, err) < 0) {
        unlink(sum_tmp);
        return -1;
    }
    return vcr_rename_durable(tmp, state, err);
}

int warm_state_verify(const char *state, const char *sum, vcr_error_t *err)
{
    char want[WARM_STATE_HEX_LEN + 2] = "";
    {
        cleanup_file FILE *f = fopen(sum, "re");
        if (f == NULL)
            return vcr_error_errno(err, "checksum file `%s`", sum);
        if (fgets(want, sizeof(want), f) == NULL)
            return vcr_error_make(err, EBADMSG, "checksum file `%s` is empty", sum);
    }
    want[strcspn(want, "\n")] = '\0';
    if (strlen(want) != WARM_STATE_HEX_LEN)
        return vcr_error_make(err, EBADMSG, "checksum file `%s`: `%s` is not a SHA-256 in hex", sum,
                              want);
    char got[WARM_STATE_HEX_LEN + 1];
    if (warm_state_digest(state, got, NULL, err) < 0)
        return -1;
    if (strcasecmp(want, got) != 0)
        return vcr_error_make(err, EBADMSG,
                              "state file `%s` fails its checksum: SHA-256 %s, expected %s", state,
                              got, want);
    return 0;
}

#if VCR_TEST_FAULTS
int warm_state_corrupt(const char *path, vcr_error_t *err)
{
    cleanup_close int fd = open(path, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return vcr_error_errno(err, "open `%s`", path);
    if (st.st_size == 0)
        return vcr_error_make(err, EINVAL, "`%s` is empty", path);
    off_t at = st.st_size / 2;
    unsigned char c;
    if (pread(fd, &c, 1, at) != 1)
        return vcr_error_errno(err, "read `%s`", path);
    c ^= 0xff;
    if (pwrite(fd, &c, 1, at) != 1)
        return vcr_error_errno(err, "write `%s`", path);
    return 0;
}
#endif

int warm_journal_write(const char *path, const struct warm_journal *j, vcr_error_t *err)
{
    cleanup_json json_t *o =
        json_pack("{s:s, s:I, s:i, s:i}", "qemu", j->qemu, "started_ms", (json_int_t)j->started_ms,
                  "old_pid", j->old_pid, "new_pid", j->new_pid);
    if (o == NULL)
        return vcr_error_make(err, ENOMEM, "journal `%s`: out of memory", path);
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (json_dump_file(o, tmp, JSON_COMPACT) < 0) {
        int e = errno ? errno : EIO;
        unlink(tmp);
        return vcr_error_make(err, e, "write `%s`: %s", tmp, strerror(e));
    }
    if (vcr_rename_durable(tmp, path, err) < 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int warm_journal_read(const char *path, struct warm_journal *j, vcr_error_t *err)
{
    memset(j, 0, sizeof(*j));
    if (access(path, F_OK) < 0)
        return vcr_error_errno(err, "journal `%s`", path);
    json_error_t jerr;
    cleanup_json json_t *o = json_load_file(path, 0, &jerr);
    if (o == NULL)
        return vcr_error_make(err, EBADMSG, "journal `%s`: %s (line %d)", path, jerr.text,
                              jerr.line);
    const char *qemu = json_string_value(json_object_get(o, "qemu"));
    json_t *started = json_object_get(o, "started_ms");
    json_t *pid = json_object_get(o, "old_pid");
    json_t *new_pid = json_object_get(o, "new_pid"); /* absent in older journals */
    if (qemu == NULL || qemu[0] != '/' || strlen(qemu) >= sizeof(j->qemu) ||
        !json_is_integer(started) || !json_is_integer(pid) ||
        (new_pid && !json_is_integer(new_pid)))
        return vcr_error_make(err, EBADMSG,
                              "journal `%s`: expected {\"qemu\": ABSOLUTE_PATH, \"started_ms\": "
                              "INT, \"old_pid\": INT, \"new_pid\"?: INT}",
                              path);
    snprintf(j->qemu, sizeof(j->qemu), "%s", qemu);
    j->started_ms = json_integer_value(started);
    j->old_pid = (int)json_integer_value(pid);
    j->new_pid = (int)json_integer_value(new_pid);
    return 0;
}

const char *warm_recovery_name(enum warm_recovery r)
{
    static const char *const names[] = {
        [WARM_RECOVER_NONE] = "none",   [WARM_RECOVER_ADOPT] = "adopt",
        [WARM_RECOVER_ENDED] = "ended", [WARM_RECOVER_ROLLBACK] = "rollback",
        [WARM_RECOVER_CHECK] = "check", [WARM_RECOVER_REDO] = "redo",
        [WARM_RECOVER_COLD] = "cold",   [WARM_RECOVER_FENCED] = "fenced",
    };
    return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}

enum warm_recovery warm_recovery_decide(bool journal, bool fenced, int64_t age_ms,
                                        int64_t window_ms, bool old_alive, bool new_alive,
                                        bool sealed, bool ram_kept)
{
    if (!journal)
        return WARM_RECOVER_NONE;
    /* The watchdog killed the VM's QEMU it knew: the guest must stay down (its
     * services may run elsewhere now), whatever state was sealed. */
    if (fenced)
        return WARM_RECOVER_FENCED;
    /* Past the window the server no longer counts it as maintenance: leave
     * what is found as it is, as for any VM an earlier agent left. */
    if (age_ms < 0 || age_ms > window_ms)
        return old_alive || new_alive ? WARM_RECOVER_ADOPT : WARM_RECOVER_ENDED;
    /* The old QEMU is only ever killed once the state is sealed: while it
     * lives it holds the guest, whatever the new one did. */
    if (old_alive)
        return WARM_RECOVER_ROLLBACK;
    if (new_alive)
        return WARM_RECOVER_CHECK;
    return sealed && ram_kept ? WARM_RECOVER_REDO : WARM_RECOVER_COLD;
}

bool warm_recovery_kills_new(enum warm_recovery r, bool old_alive, bool new_alive)
{
    if (r == WARM_RECOVER_FENCED)
        return new_alive;
    return old_alive && new_alive && (r == WARM_RECOVER_ROLLBACK || r == WARM_RECOVER_ADOPT);
}
