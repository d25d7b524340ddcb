/* The host role's side of self-fencing (docs/fencing.md): starts the fence
 * watchdog (fence_watchdog.h) or re-attaches to the one an earlier agent
 * left, feeds it each time the server is heard from, keeps its list of QEMU
 * processes current, and tells the server which VM deaths were self-fences. */
#ifndef VCR_AGENT_HOST_FENCE_H
#define VCR_AGENT_HOST_FENCE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/types.h>

#include "agent/host/vm.h"
#include "common/err.h"

struct event_base;
struct host_vm;
struct host_fence;

/* Called when what host_fence_report says changed (the watchdog was paused or
 * its pause ended, it went down or came back, its timeout was lowered). */
typedef void (*host_fence_changed_fn)(void *opaque);

/* timeout_ms 0: self-fencing off (a watchdog left by an earlier agent is told
 * it has nothing to fence, so it exits).  exe: the vcr-agent binary to run as
 * the watchdog (NULL: /proc/self/exe).  changed may be NULL. */
struct host_fence *host_fence_new(struct event_base *base, const char *state_dir,
                                  uint32_t timeout_ms, const char *exe,
                                  host_fence_changed_fn changed, void *opaque, vcr_error_t *err);
/* What the server may count on (new reference; docs/protocol.md `self_fence`):
 * {timeout_ms: in effect, watchdog: armed|paused|down|off, pause_ms?: left}.
 * down: no watchdog attached (it died; being respawned). */
json_t *host_fence_report(const struct host_fence *f);
/* The server waits fence_after_ms after the last contact before it switches
 * services away: the watchdog's timeout is lowered to that when the configured
 * fence_timeout_ms is longer (never raised, never turned on when off). */
void host_fence_limit(struct host_fence *f, uint32_t fence_after_ms);
/* The timeout the watchdog should use: configured, capped by the server's limit. */
uint32_t host_fence_effective_timeout(uint32_t configured_ms, uint32_t fence_after_ms);
/* Contact with the server at evidence_ms (fence_wd_now_ms() clock). */
void host_fence_feed(struct host_fence *f, int64_t evidence_ms);
/* The VMs' current QEMU processes: sent to the watchdog when they changed. */
void host_fence_sync(struct host_fence *f, struct host_vm *const *vms, size_t n);
/* The same from names and pids (pids[i] <= 1: not listed), for a role whose VMs
 * are not host_vm (the libvirt role: the QEMU processes libvirtd runs). */
void host_fence_sync_pids(struct host_fence *f, const char *const *names, const pid_t *pids,
                          size_t n);
/* obj: the `vm` object or vm_event body of VM name, made from its state, cause
 * and QEMU pid (0: none).  If the watchdog killed that QEMU, obj's cause
 * becomes `self-fenced: no server contact for N ms (<cause>)`. */
void host_fence_patch(struct host_fence *f, const char *name, enum vm_state state,
                      const char *cause, pid_t pid, json_t *obj);
/* Whether VM name was self-fenced and has not run since: it is not autostarted. */
bool host_fence_blocks_autostart(struct host_fence *f, const char *name);
/* Closes the connection; the watchdog keeps counting (docs/fencing.md). */
void host_fence_free(struct host_fence *f);

#endif
