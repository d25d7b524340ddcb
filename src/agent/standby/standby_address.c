/* Address takeover inside a standby VM (docs/recovery.md, "Address
 * takeover"): a primary's service addresses (IPv4, IPv6) added to, or removed
 * from, an interface in a container's network namespace, by rtnetlink (no `ip`
 * binary needed in the VM).  The caller announces a taken IPv4 address with a
 * gratuitous ARP (standby_send_garp), an IPv6 one with an unsolicited
 * neighbour advertisement sent here from a raw ICMPv6 socket (no ndisc6 or
 * ndsend needed either). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/standby/standby_address.h"
#include "common/cleanup.h"

struct addr_request {
    struct nlmsghdr nh;
    struct ifaddrmsg ifa;
    char attrs[64]; /* IFA_LOCAL, IFA_ADDRESS (20 octets each for IPv6), IFA_FLAGS (8) */
};

static void add_attr(struct addr_request *rq, unsigned short type, const void *data, size_t len)
{
    struct rtattr *rta = (struct rtattr *)((char *)rq + NLMSG_ALIGN(rq->nh.nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = (unsigned short)RTA_LENGTH(len);
    memcpy(RTA_DATA(rta), data, len);
    rq->nh.nlmsg_len = NLMSG_ALIGN(rq->nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

/* An address of either family, as rtnetlink takes it. */
struct addr_bytes {
    int family;
    unsigned char prefix;
    size_t len;
    unsigned char bytes[16];
};

static int addr_parse(const char *address, struct addr_bytes *a, vcr_error_t *err)
{
    memset(a, 0, sizeof(*a));
    if (inet_pton(AF_INET, address, a->bytes) == 1) {
        a->family = AF_INET;
        a->prefix = 32;
        a->len = 4;
    } else if (inet_pton(AF_INET6, address, a->bytes) == 1) {
        a->family = AF_INET6;
        a->prefix = 128;
        a->len = 16;
    } else {
        return vcr_error_make(err, EINVAL,
                              "address: `%.60s` is not an IPv4 (A.B.C.D) or IPv6 address", address);
    }
    return 0;
}

/* One RTM_NEWADDR / RTM_DELADDR in the caller's namespace; *answer: the
 * kernel's errno (0: done).  -1 when it could not be asked. */
static int addr_request(int type, unsigned ifindex, const struct addr_bytes *a, int *answer,
                        vcr_error_t *err)
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
    rq.ifa.ifa_family = (unsigned char)a->family;
    rq.ifa.ifa_prefixlen = a->prefix; /* a host address: no second route for the subnet */
    rq.ifa.ifa_scope = RT_SCOPE_UNIVERSE;
    rq.ifa.ifa_index = ifindex;
    add_attr(&rq, IFA_LOCAL, a->bytes, a->len);
    add_attr(&rq, IFA_ADDRESS, a->bytes, a->len);
    if (a->family == AF_INET6 && type == RTM_NEWADDR) {
        /* Usable at once: duplicate address detection would hold the address
         * tentative for a second and fail it if the primary still answered,
         * but the takeover runs only after the primary is fenced. */
        uint32_t flags = IFA_F_NODAD | IFA_F_NOPREFIXROUTE;
        add_attr(&rq, IFA_FLAGS, &flags, sizeof(flags));
    }
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
    struct addr_bytes a;
    if (addr_parse(address, &a, err) < 0)
        return -1;
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
        if (addr_request(take ? RTM_NEWADDR : RTM_DELADDR, ifindex, &a, &answer, err) < 0) {
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

int standby_na_message(const unsigned char mac[6], const char *address6,
                       unsigned char msg[STANDBY_NA_LEN], vcr_error_t *err)
{
    struct in6_addr target;
    if (inet_pton(AF_INET6, address6, &target) != 1)
        return vcr_error_make(err, EINVAL, "address6: `%.60s` is not an IPv6 address", address6);
    memset(msg, 0, STANDBY_NA_LEN);
    msg[0] = ND_NEIGHBOR_ADVERT; /* type 136, code 0, checksum 0 */
    msg[4] = 0x20;               /* flags: Override */
    memcpy(msg + 8, &target, 16);
    msg[24] = ND_OPT_TARGET_LINKADDR; /* option 2, length 1 (8 octets) */
    msg[25] = 1;
    memcpy(msg + 26, mac, 6);
    return 0;
}

/* In the container's namespace: the advertisement from address6 on ifname. */
static int send_na_here(const char *ifname, const char *address6, vcr_error_t *err)
{
    unsigned ifindex = if_nametoindex(ifname);
    if (ifindex == 0)
        return vcr_error_errno(err, "interface `%s` in the container", ifname);
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    cleanup_close int q = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (q < 0 || ioctl(q, SIOCGIFHWADDR, &ifr) < 0)
        return vcr_error_errno(err, "MAC of `%s`", ifname);
    unsigned char msg[STANDBY_NA_LEN];
    if (standby_na_message((unsigned char *)ifr.ifr_hwaddr.sa_data, address6, msg, err) < 0)
        return -1;
    /* The socket belongs to the namespace it was made in. */
    cleanup_close int s = socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMPV6);
    if (s < 0)
        return vcr_error_errno(err, "raw ICMPv6 socket");
    int hops = 255;
    int index = (int)ifindex;
    struct sockaddr_in6 from = {.sin6_family = AF_INET6};
    memcpy(&from.sin6_addr, msg + 8, 16);
    if (setsockopt(s, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof(hops)) < 0 ||
        setsockopt(s, IPPROTO_IPV6, IPV6_MULTICAST_IF, &index, sizeof(index)) < 0)
        return vcr_error_errno(err, "ICMPv6 socket options");
    /* From the taken address itself (RFC 4861 7.2.6: an address of the
     * interface); added without DAD, it is not tentative. */
    if (bind(s, (struct sockaddr *)&from, sizeof(from)) < 0)
        return vcr_error_errno(err, "bind to %s", address6);
    struct sockaddr_in6 to = {.sin6_family = AF_INET6, .sin6_scope_id = ifindex};
    inet_pton(AF_INET6, "ff02::1", &to.sin6_addr);
    if (sendto(s, msg, sizeof(msg), 0, (struct sockaddr *)&to, sizeof(to)) < 0)
        return vcr_error_errno(err, "send the neighbour advertisement on `%s`", ifname);
    return 0;
}

int standby_send_unsolicited_na(int pid, const char *ifname, const char *address6, vcr_error_t *err)
{
    cleanup_close int self = standby_netns_enter(pid, err);
    if (self < 0)
        return -1;
    int rc = send_na_here(ifname, address6, err);
    if (setns(self, CLONE_NEWNET) < 0 && rc == 0)
        rc = vcr_error_errno(err, "setns back to our network namespace");
    return rc;
}
