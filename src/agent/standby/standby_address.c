/* Address takeover inside a standby VM (docs/recovery.md, "Address
 * takeover"): a primary's service address added to, or removed from, an
 * interface in a container's network namespace, by rtnetlink (no `ip` binary
 * needed in the VM).  The caller announces a taken address with a gratuitous
 * ARP (standby_send_garp). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/standby/standby_address.h"
#include "common/cleanup.h"

struct addr_request {
    struct nlmsghdr nh;
    struct ifaddrmsg ifa;
    char attrs[64];
};

static void add_attr(struct addr_request *rq, unsigned short type, const void *data, size_t len)
{
    struct rtattr *rta = (struct rtattr *)((char *)rq + NLMSG_ALIGN(rq->nh.nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = (unsigned short)RTA_LENGTH(len);
    memcpy(RTA_DATA(rta), data, len);
    rq->nh.nlmsg_len = NLMSG_ALIGN(rq->nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

/* One RTM_NEWADDR / RTM_DELADDR in the caller's namespace; *answer: the
 * kernel's errno (0: done).  -1 when it could not be asked. */
static int addr_request(int type, unsigned ifindex, struct in_addr a, int *answer, vcr_error_t *err)
{
    cleanup_close int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0)
        return vcr_error_errno(err, "netlink socket");
    struct addr_request rq = {0};
    rq.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
    rq.nh.nlmsg_type = (unsigned short)type;
    rq.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    if (type == RTM_NEWADDR)
        rq.nh.nlmsg_flags |= NLM_F_CREATE | NLM_F_EXCL;
    rq.nh.nlmsg_seq = 1;
    rq.ifa.ifa_family = AF_INET;
    rq.ifa.ifa_prefixlen = 32; /* a host address: no second route for the subnet */
    rq.ifa.ifa_scope = RT_SCOPE_UNIVERSE;
    rq.ifa.ifa_index = ifindex;
    add_attr(&rq, IFA_LOCAL, &a, sizeof(a));
    add_attr(&rq, IFA_ADDRESS, &a, sizeof(a));
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, &rq, rq.nh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
        return vcr_error_errno(err, "netlink send");
    char buf[512];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return vcr_error_errno(err, "netlink receive");
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)n);
             h = NLMSG_NEXT(h, n))
            if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);
                *answer = -e->error;
                return 0;
            }
    }
}

int standby_netns_enter(int pid, vcr_error_t *err)
{
    if (pid <= 0)
        return vcr_error_make(err, ESRCH, "the container has no init process");
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/ns/net", pid);
    cleanup_close int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    cleanup_close int ns = open(path, O_RDONLY | O_CLOEXEC);
    if (self < 0 || ns < 0)
        return vcr_error_errno(err, "open `%s`", self < 0 ? "/proc/self/ns/net" : path);
    if (setns(ns, CLONE_NEWNET) < 0)
        return vcr_error_errno(err, "setns `%s`", path);
    return steal_fd(&self);
}

int standby_address_apply(int pid, const char *ifname, const char *address, bool take,
                          vcr_error_t *err)
{
    struct in_addr a;
    if (inet_pton(AF_INET, address, &a) != 1)
        return vcr_error_make(err, EINVAL, "address: `%.40s` is not an IPv4 address (A.B.C.D)",
                              address);
    cleanup_close int self = standby_netns_enter(pid, err);
    if (self < 0)
        return -1;
    int rc = 0;
    unsigned ifindex = if_nametoindex(ifname);
    if (ifindex == 0) {
        rc = vcr_error_errno(err, "interface `%s` in the container", ifname);
    } else {
        int answer = 0;
        /* Both ways are idempotent: a repeated take (a recovery resumed after
         * a restart) or release finds the work done. */
        if (addr_request(take ? RTM_NEWADDR : RTM_DELADDR, ifindex, a, &answer, err) < 0) {
            rc = -1;
        } else if (answer != 0 && !(answer == EEXIST && take) &&
                   !(answer == EADDRNOTAVAIL && !take)) {
            errno = answer;
            rc = vcr_error_errno(err, "%s %s on `%s`", take ? "add" : "remove", address, ifname);
        }
    }
    if (setns(self, CLONE_NEWNET) < 0 && rc == 0)
        rc = vcr_error_errno(err, "setns back to our network namespace");
    return rc;
}
