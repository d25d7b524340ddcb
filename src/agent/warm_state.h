/* The device-state file of a warm restart and its checksum
 * (docs/warm-restart.md).  QEMU writes STATE.tmp; warm_state_seal() hashes it
 * (SHA-256, OpenSSL libcrypto), writes the hex digest to SUM (through
 * SUM.tmp and a rename) and renames STATE.tmp to STATE.  Before the new QEMU
 * is given the file, warm_state_verify() hashes it again and compares.  Pure
 * file functions: the unit tests drive them directly. */
#ifndef VCR_AGENT_WARM_STATE_H
#define VCR_AGENT_WARM_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

#define WARM_STATE_HEX_LEN 64

/* Hex SHA-256 of a file (out: WARM_STATE_HEX_LEN + 1 bytes); *bytes gets its size. */
int warm_state_digest(const char *path, char *out, uint64_t *bytes, vcr_error_t *err);
/* Checksum tmp, write sum, rename tmp to state.  *bytes: the state's size. */
int warm_state_seal(const char *tmp, const char *state, const char *sum, uint64_t *bytes,
                    vcr_error_t *err);
/* 0 when state's SHA-256 is the one in sum; -1 with *err naming both digests
 * ("checksum mismatch") or why the files could not be read. */
int warm_state_verify(const char *state, const char *sum, vcr_error_t *err);
#if VCR_TEST_FAULTS
/* Fault injection for tests (agent --test-faults): flips one byte in the
 * middle of the file. */
int warm_state_corrupt(const char *path, vcr_error_t *err);
#endif

/* The journal of a warm restart under way (STATE_DIR/NAME.warm), written
 * before the new QEMU is started and removed with the state files, so that an
 * agent that died mid-way finishes or rolls back the restart when it comes
 * back. */
struct warm_journal {
    char qemu[4096];    /* the binary the new QEMU runs */
    int64_t started_ms; /* wall clock: when the restart began */
    int old_pid;        /* the QEMU being replaced */
    int new_pid;        /* the new QEMU once spawned (0: not yet, or an older journal) */
};

/* Written through PATH.tmp and a rename: a reader sees all of it or nothing. */
int warm_journal_write(const char *path, const struct warm_journal *j, vcr_error_t *err);
/* -1 with errno ENOENT in *err when there is none. */
int warm_journal_read(const char *path, struct warm_journal *j, vcr_error_t *err);

/* What an agent does at start with the warm restart of a VM that an earlier
 * agent left unfinished (docs/warm-restart.md "Agent restart"). */
enum warm_recovery {
    WARM_RECOVER_NONE,     /* no journal: adopt or report as usual */
    WARM_RECOVER_ADOPT,    /* too late: adopt the QEMU found as it is, the old one if it
                            * lives (a new one beside it is killed; the server decides) */
    WARM_RECOVER_ENDED,    /* too late and no QEMU: report it ended (the server decides) */
    WARM_RECOVER_ROLLBACK, /* the old QEMU still holds the guest: kill the new one if
                            * any, cancel and `cont` the old */
    WARM_RECOVER_CHECK,    /* only a new QEMU runs: done if it runs the guest, else redo */
    WARM_RECOVER_REDO,     /* no QEMU, state sealed: a new QEMU loads the state */
    WARM_RECOVER_COLD,     /* no QEMU, no sealed state: the guest is lost, boot cold */
    WARM_RECOVER_FENCED,   /* the VM was self-fenced meanwhile: start nothing; the old
                            * QEMU is adopted if it lives, a new one is killed */
};

const char *warm_recovery_name(enum warm_recovery r);
/* journal: one was found; fenced: the VM is in fenced.json (host_fence.h), so
 * no QEMU may be started for it; age_ms: since it began; window_ms: how long after
 * its start a restart may still be finished; old_alive: the journal's old
 * QEMU still runs; new_alive: another QEMU of the VM runs (the new one,
 * pre-launched or already loaded); sealed: the state file and its checksum
 * file exist; ram_kept: the guest's RAM file is still there (a host that
 * restarted lost its tmpfs, while the state files, fsync'd, survived: that
 * state without its RAM is worth nothing). */
enum warm_recovery warm_recovery_decide(bool journal, bool fenced, int64_t age_ms,
                                        int64_t window_ms, bool old_alive, bool new_alive,
                                        bool sealed, bool ram_kept);
/* Whether that action kills a new QEMU found beside the old one. */
bool warm_recovery_kills_new(enum warm_recovery r, bool old_alive, bool new_alive);

#endif
