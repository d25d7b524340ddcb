/* The tap of a running QEMU, handed to the next one (docs/warm-restart.md
 * "The tap").  A tap (not multi-queue) is attached to one open file of
 * /dev/net/tun: a second QEMU opening it by name gets EBUSY while the first
 * holds it.  The agent takes a copy of the first QEMU's descriptor
 * (pidfd_getfd) and the new QEMU inherits it (`-netdev tap,fd=N`): both then
 * share the one open file, and the tap never goes down.
 *
 * A QEMU (7.2) starting on a tap descriptor resets the tap's vnet header size
 * (TUNSETVNETHDRSZ to 10 bytes) and its offloads (TUNSETOFFLOAD 0): the old
 * QEMU, still running the guest with a 12-byte header, then misreads every
 * frame.  The agent reads the size before and puts it back once the new
 * QEMU's QMP greets (its tap set up); the offloads stay off until the new
 * QEMU loads the guest's device state, which sets them again (off only means
 * the kernel checksums and segments for the guest: nothing is wrong). */
#ifndef VCR_AGENT_TAP_FD_H
#define VCR_AGENT_TAP_FD_H

#include <stdbool.h>
#include <sys/types.h>

#include "common/err.h"

/* Whether /proc/PID/fdinfo/N text is that of a tun file attached to ifname
 * (its `iff:` line). */
bool tap_fdinfo_is(const char *fdinfo, const char *ifname);
/* The number, in process pid, of its descriptor of tap ifname; -1 with *err
 * (ENOENT when it has none). */
int tap_fd_of_process(pid_t pid, const char *ifname, vcr_error_t *err);
/* A copy of that descriptor (O_CLOEXEC): tap_fd_of_process + pidfd_getfd. */
int tap_fd_take(pid_t pid, const char *ifname, vcr_error_t *err);
/* TUNGETVNETHDRSZ / TUNSETVNETHDRSZ on a tap descriptor. */
int tap_vnet_hdr_get(int fd, int *len, vcr_error_t *err);
int tap_vnet_hdr_set(int fd, int len, vcr_error_t *err);

#endif
