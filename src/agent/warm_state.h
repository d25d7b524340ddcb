/* The device-state file of a warm restart and its checksum
 * (docs/warm-restart.md).  QEMU writes STATE.tmp; warm_state_seal() hashes it
 * (SHA-256, OpenSSL libcrypto), writes the hex digest to SUM (through
 * SUM.tmp and a rename) and renames STATE.tmp to STATE.  Before the new QEMU
 * is given the file, warm_state_verify() hashes it again and compares.  Pure
 * file functions: the unit tests drive them directly. */
#ifndef VCR_AGENT_WARM_STATE_H
#define VCR_AGENT_WARM_STATE_H

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
/* Fault injection for tests (agent --test-faults): flips one byte in the
 * middle of the file. */
int warm_state_corrupt(const char *path, vcr_error_t *err);

#endif
