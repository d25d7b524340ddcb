/* The switch's way `hook` (switch.h; docs/recovery.md, "Switch hook"): the
 * service's own program (`hook.run`, an argv run without a shell) moves
 * traffic this engine does not move itself, e.g. a cloud provider's DNS API
 * or a load balancer's pool.  It runs after the address and DNS ways, with
 * what moved where in its environment; exit status 0 completes the phase
 * `hook_run`, any other status, or its deadline (`hook.timeout_ms`, after
 * which its process group is killed), fails the recovery.  At failback, once
 * the name is back on the primary, it runs again with VCR_PHASE=failback and
 * the primary's addresses; a failure there fails the failback.
 *
 * The child: its own process group, stdin /dev/null, stdout and stderr the
 * server's (its log), no descriptor of the server's above 2, an environment
 * of its own (PATH and the VCR_* below, nothing of the server's).  Its end is
 * seen through a pidfd on the loop, with the deadline as that event's timeout. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/clock.h"
#include "common/log.h"
#include "server/recovery/recovery_priv.h"
#include "server/recovery/switch.h"

struct hook_run {
    struct svc *s;
    pid_t pid;
    int pidfd;
    struct event *ev;
    int64_t started;              /* monotonic */
    bool killed;                  /* at its deadline */
    switch_released_fn back_done; /* failback; NULL while recovering */
};

static bool hook_selected(const struct svc *s)
{
    return s->cfg->hook.argv != NULL;
}

static void hook_free(struct hook_run *h)
{
    event_free(h->ev);
    close(h->pidfd);
    free(h);
}

/* Why the hook failed, "" when it exited 0. */
static void hook_outcome(const struct hook_run *h, int wstatus, char *why, size_t size)
{
    const char *prog = h->s->cfg->hook.argv[0];
    int64_t ms = vcr_mono_ms() - h->started;
    why[0] = '\0';
    if (h->killed)
        snprintf(why, size, "hook `%s` killed at its deadline (hook.timeout_ms %u)", prog,
                 h->s->cfg->hook.timeout_ms);
    else if (WIFSIGNALED(wstatus))
        snprintf(why, size, "hook `%s` killed by signal %d after %lld ms", prog, WTERMSIG(wstatus),
                 (long long)ms);
    else if (WEXITSTATUS(wstatus) != 0)
        snprintf(why, size, "hook `%s` exited with status %d after %lld ms", prog,
                 WEXITSTATUS(wstatus), (long long)ms);
}

static void on_hook_event(evutil_socket_t fd, short what, void *arg)
{
    struct hook_run *h = arg;
    (void)fd;
    if (what & EV_TIMEOUT) {
        /* The whole group: a shell script's children too.  Its end comes next. */
        h->killed = true;
        kill(-h->pid, SIGKILL);
        event_add(h->ev, NULL);
        return;
    }
    int wstatus = 0;
    if (waitpid(h->pid, &wstatus, 0) < 0)
        wstatus = W_EXITCODE(127, 0);
    struct svc *s = h->s;
    int64_t ms = vcr_mono_ms() - h->started;
    char why[300];
    hook_outcome(h, wstatus, why, sizeof(why));
    switch_released_fn back_done = h->back_done;
    s->switch_io = NULL;
    hook_free(h);
    if (back_done) {
        back_done(s, why[0] ? why : NULL);
        return;
    }
    if (why[0]) {
        recovery_fail(s, "%s", why);
        return;
    }
    recovery_phase_done(
        s, PH_HOOK_RUN,
        json_pack("{s:s, s:I}", "program", s->cfg->hook.argv[0], "hook_ms", (json_int_t)ms));
}

/* Starts the program with what it is told; s->error on failure. */
static int hook_start(struct svc *s, switch_released_fn back_done)
{
    const struct service_config *c = s->cfg;
    /* Where the name now points (recovering: the standby; failback: the primary). */
    const char *address, *address6;
    recovery_dns_target(s, &address, &address6);
    const char *old = back_done ? c->standby.address : c->primary.address;
    char env_phase[32], env_service[96], env_name[300], env_address[96], env_address6[96],
        env_old[96];
    snprintf(env_phase, sizeof(env_phase), "VCR_PHASE=%s", back_done ? "failback" : "recover");
    snprintf(env_service, sizeof(env_service), "VCR_SERVICE=%s", c->name);
    snprintf(env_name, sizeof(env_name), "VCR_DNS_NAME=%s", c->dns_name);
    snprintf(env_address, sizeof(env_address), "VCR_ADDRESS=%s", address);
    snprintf(env_address6, sizeof(env_address6), "VCR_ADDRESS6=%s", address6 ? address6 : "");
    snprintf(env_old, sizeof(env_old), "VCR_OLD_ADDRESS=%s", old);
    char *envp[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    env_phase,
                    env_service,
                    env_name,
                    env_address,
                    env_address6,
                    env_old,
                    NULL};

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, 2, 1);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&attr, 0);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    pid_t pid;
    int rc = posix_spawn(&pid, c->hook.argv[0], &fa, &attr, c->hook.argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        snprintf(s->error, sizeof(s->error), "hook `%s`: %s", c->hook.argv[0], strerror(rc));
        return -1;
    }
    struct hook_run *h = calloc(1, sizeof(*h));
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    struct event *ev =
        h && pidfd >= 0 ? event_new(s->rc->base, pidfd, EV_READ, on_hook_event, h) : NULL;
    struct timeval deadline = {.tv_sec = c->hook.timeout_ms / 1000,
                               .tv_usec = (c->hook.timeout_ms % 1000) * 1000};
    if (ev == NULL || event_add(ev, &deadline) < 0) {
        snprintf(s->error, sizeof(s->error), "hook `%s`: watching its process: %s", c->hook.argv[0],
                 pidfd < 0 ? strerror(errno) : "out of memory");
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        if (ev)
            event_free(ev);
        if (pidfd >= 0)
            close(pidfd);
        free(h);
        return -1;
    }
    *h = (struct hook_run){.s = s,
                           .pid = pid,
                           .pidfd = pidfd,
                           .ev = ev,
                           .started = vcr_mono_ms(),
                           .back_done = back_done};
    s->switch_io = h;
    log_info("service %s: hook `%s` started (%s, pid %d)", c->name, c->hook.argv[0],
             back_done ? "failback" : "recover", (int)pid);
    return 0;
}

static int hook_take(struct svc *s)
{
    s->step = STEP_SWITCH;
    s->step_started = vcr_mono_ms();
    return hook_start(s, NULL);
}

static int hook_give_back(struct svc *s, switch_released_fn done)
{
    return hook_start(s, done);
}

/* The recovery or failback is abandoned: the program is killed and reaped
 * here (SIGKILL: its end is a matter of the kernel's), its callback never runs. */
static void hook_cancel(struct svc *s)
{
    struct hook_run *h = s->switch_io;
    if (h == NULL)
        return;
    kill(-h->pid, SIGKILL);
    waitpid(h->pid, NULL, 0);
    s->switch_io = NULL;
    hook_free(h);
}

const struct switch_ops switch_hook_ops = {
    .name = "hook",
    .selected = hook_selected,
    .done_phase = PH_HOOK_RUN,
    .take = hook_take,
    .cancel = hook_cancel,
    .give_back = hook_give_back,
};
