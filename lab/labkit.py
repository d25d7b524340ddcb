"""Helpers shared by the lab demo, the integration tests and the benchmarks.

Everything runs inside the lab's network namespace (lab/lab up creates it).
Waiting is always on a real condition with a deadline (wait_for), never a bare sleep.
"""
import base64
import json
import os
import pwd
import re
import shlex
import signal
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB = os.path.join(ROOT, "lab", "lab")
NS = os.environ.get("VCR_LAB_NS", "vcrlab")
RUN_DIR = f"/run/{NS}"
SERVER_AGENT_PORT = 7070
SERVER_API = "127.0.0.1:7080"
IMAGES_PORT = 7071  # the server's image listener (images_listen), on the lab bridge
# Redundant servers (docs/ha.md): the lab's etcd members listen on the namespace's
# loopback, client port ETCD_PORT + 2i, peer port ETCD_PORT + 2i + 1.
ETCD_PORT = 12379


class Timeout(Exception):
    pass


def wait_for(what, predicate, timeout, interval=0.05):
    """Polls predicate() until it returns a truthy value; raises Timeout naming `what`."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # the condition may not be checkable yet (server starting)
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc})" if last_exc else ""
            raise Timeout(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(interval)


def lab(*args, check=True):
    return subprocess.run([LAB, *args], check=check, capture_output=True, text=True)


def lab_up():
    r = subprocess.run([LAB, "up"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"lab up failed:\n{r.stdout}\n{r.stderr}")
    return lab_env()


def lab_down():
    subprocess.run([LAB, "down"], check=True, capture_output=True, text=True)


def lab_env():
    env = {}
    with open(os.path.join(RUN_DIR, "lab.env")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            k, v = line.split("=", 1)
            env[k] = " ".join(shlex.split(v))
    return env


def in_ns(argv):
    return ["ip", "netns", "exec", NS, *argv]


def ns_run(argv, timeout=30, check=False):
    return subprocess.run(in_ns(argv), capture_output=True, text=True, timeout=timeout,
                          check=check)


def dig(name, server=None, rtype="A"):
    server = server or lab_env()["VCR_LAB_DNS"]
    r = ns_run(["dig", f"@{server}", "+short", "+time=1", "+tries=1", name, rtype], timeout=10)
    return [x for x in r.stdout.split() if x]


def http_get(address, path="/", timeout=2.0):
    """Body of http://address/path from inside the lab, or None if it did not answer.
    An IPv6 address goes in brackets, and curl's -g keeps them from being a glob."""
    host = f"[{address}]" if address.count(":") >= 2 and address[0] != "[" else address
    r = ns_run(["curl", "-g", "-s", "-f", "-m", str(timeout), f"http://{host}{path}"],
               timeout=timeout + 5)
    return r.stdout if r.returncode == 0 else None


class Proc:
    """A daemon started inside the namespace, with its log in a file."""

    def __init__(self, argv, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.popen = subprocess.Popen(in_ns(argv), stdin=subprocess.DEVNULL, stdout=self.log,
                                      stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self):
        # `ip netns exec` execs the program, so this is the daemon's own pid.
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def signal(self, sig):
        os.kill(self.popen.pid, sig)

    def stop(self, timeout=10):
        if self.alive():
            try:
                os.kill(self.popen.pid, signal.SIGCONT)
                self.popen.terminate()
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()
        return self.popen.returncode

    def log_text(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path) as f:
            return f.read()


def set_records(addresses):
    """NAME.ZONE -> address in the lab's BIND9 for each {NAME: address} (an A record, or
    AAAA for an IPv6 address; signed UPDATE
    by nsupdate: a name an earlier run left on a container is put back).  Raises
    RuntimeError with nsupdate's error."""
    env = lab_env()
    script = f"server {env['VCR_LAB_DNS']}\nzone {env['VCR_LAB_ZONE']}\n"
    for name, address in addresses.items():
        fqdn = f"{name}.{env['VCR_LAB_ZONE']}"
        rtype = "AAAA" if ":" in address else "A"
        script += f"update delete {fqdn} {rtype}\nupdate add {fqdn} 5 {rtype} {address}\n"
    r = subprocess.run(in_ns(["nsupdate", "-k", env["VCR_LAB_TSIG_FILE"]]),
                       input=script + "send\n", capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"nsupdate: {r.stderr}")


def vcr_cli():
    """The `vcr` binary for `vcr pki`: VCR_ASAN_BUILD's (the integration tests), else
    build/'s."""
    for build in (os.environ.get("VCR_ASAN_BUILD"), os.path.join(ROOT, "build-asan"),
                  os.path.join(ROOT, "build")):
        if build and os.access(os.path.join(build, "src", "cli", "vcr"), os.X_OK):
            return os.path.join(build, "src", "cli", "vcr")
    raise RuntimeError("no vcr binary for `vcr pki`: run make build")


def lab_pki(config_path):
    """The lab's certificate authority for the agent link (docs/security.md): one per
    directory of configs (a test's tmp dir, a demo run), made with `vcr pki init` on
    first use, with the server's certificate naming the lab bridge's address (what
    the agents connect to).  Returns the directory."""
    pki = os.path.join(os.path.dirname(os.path.abspath(str(config_path))), "pki")
    if not os.path.exists(os.path.join(pki, "ca.crt")):
        subprocess.run([vcr_cli(), "pki", "init", pki], check=True, capture_output=True)
        sans = [lab_env()["VCR_LAB_BRIDGE_ADDR"], "127.0.0.1", "::1"]
        if lab_env().get("VCR_LAB_BRIDGE_ADDR6"):
            sans.append(lab_env()["VCR_LAB_BRIDGE_ADDR6"])
        subprocess.run([vcr_cli(), "pki", "issue", "--server",
                        *[a for san in sans for a in ("--san", san)], pki, "vcr-server"],
                       check=True, capture_output=True)
    return pki


def lab_cert(pki, name):
    """{ca, cert, key} of `name` in pki, issued with `vcr pki issue` if missing."""
    files = {"ca": os.path.join(pki, "ca.crt"), "cert": os.path.join(pki, f"{name}.crt"),
             "key": os.path.join(pki, f"{name}.key")}
    if not os.path.exists(files["cert"]):
        subprocess.run([vcr_cli(), "pki", "issue", pki, name], check=True, capture_output=True)
    return files


# The HTTP API's credentials of the last server configuration written (write_server_config):
# the CA its certificate is checked against and a token file per role (docs/security.md).
# Vcr and api_curl() use them; None for an `api_insecure` server.
API_CREDENTIALS = None


def lab_api_tokens(pki):
    """Tokens of the API in pki (`vcr pki token`): lab-operator (operator) and lab-reader
    (read), and pki/api-tokens, the server's api_tokens_file.  Returns {role: token file}."""
    files = {}
    for name, role in (("lab-operator", "operator"), ("lab-reader", "read")):
        path = os.path.join(pki, f"{name}.token")
        if not os.path.exists(path):
            subprocess.run([vcr_cli(), "pki", "token", "--role", role, pki, name], check=True,
                           capture_output=True)
        files[role] = path
        # For curl -H @FILE: the token stays off command lines.
        header = os.path.join(pki, f"{name}.header")
        with open(path) as f, open(header, "w") as h:
            os.fchmod(h.fileno(), 0o600)
            h.write(f"Authorization: Bearer {f.read().strip()}\n")
    return files


def api_url(path):
    scheme = "https" if API_CREDENTIALS else "http"
    return f"{scheme}://{SERVER_API}{path}"


def api_curl(path, method="GET", body=None, role="operator", timeout=30, extra=()):
    """curl argv (to run with ns_run) for the lab server's API: TLS checked against the
    lab's CA and the role's token (API_CREDENTIALS), a JSON body as JSON."""
    argv = ["curl", "-s", "-m", str(timeout)]
    if API_CREDENTIALS:
        argv += ["--cacert", API_CREDENTIALS["ca"],
                 "-H", "@" + API_CREDENTIALS["tokens"][role].replace(".token", ".header")]
    if method != "GET":
        argv += ["-X", method]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    return argv + list(extra) + [api_url(path)]


def tls_lines(files):
    return [f"tls_ca_file: {files['ca']}", f"tls_cert_file: {files['cert']}",
            f"tls_key_file: {files['key']}"]


def write_server_config(path, journal, heartbeat_ms=500, host_timeout_ms=None, dns=False,
                        services=(), fence_timeout_ms=None, port_timeout_ms=None, images=(),
                        insecure=False, api_insecure=False, agent_port=SERVER_AGENT_PORT,
                        api=SERVER_API, ha=None, listen=None):
    """dns=True: the lab's BIND9 (server, zone, TSIG key from lab.env).  services: dicts
    from service_entry(), written as the `services:` list (docs/server.md).
    port_timeout_ms: how long a recovery waits for the container's port (server default
    when None).  images: dicts {name, file, sha256, cmd?} (the `images:` list), served on
    the lab bridge's address (IMAGES_PORT), which the standby VMs reach.
    The agent port runs mutual TLS with lab_pki()'s certificates, or plain TCP with
    insecure=True.
    The HTTP API takes tokens over TLS (lab_api_tokens(), the server's certificate),
    recorded in API_CREDENTIALS for Vcr and api_curl(); api_insecure=True makes it plain
    and open.
    heartbeat_ms=None writes no heartbeat, host or fence timeout: the server's own
    defaults (heartbeat 250 ms, host timeout 1250 ms, fence timeout 1250 ms).  Otherwise,
    with fence_timeout_ms None, the fence timeout written is host timeout + 2 heartbeats
    (the server's default before the 250 ms heartbeat), which the lab's tests were tuned
    with.
    ha: {name, etcd: [urls], lease_ttl_s?}: one of redundant servers (docs/ha.md), with
    its own agent_port and api.
    listen: the agent port's HOST:PORT (default: the bridge's IPv4 address and
    agent_port), e.g. "[::]:7070" for both families."""
    global API_CREDENTIALS
    env = lab_env()
    lines = [
        f"listen: '{listen or env['VCR_LAB_BRIDGE_ADDR'] + ':' + str(agent_port)}'",
        f"api: '{api}'",
        f"journal: {journal}",
    ]
    if heartbeat_ms is not None:
        lines.append(f"heartbeat_ms: {heartbeat_ms}")
        if not fence_timeout_ms:
            fence_timeout_ms = (host_timeout_ms or 3 * heartbeat_ms + 500) + 2 * heartbeat_ms
    if insecure:
        lines.append("insecure: true")
    else:
        lines += tls_lines(lab_cert(lab_pki(path), "vcr-server"))
    if api_insecure:
        lines.append("api_insecure: true")
        API_CREDENTIALS = None
    else:
        pki = lab_pki(path)
        server = lab_cert(pki, "vcr-server")
        tokens = lab_api_tokens(pki)
        lines += [f"api_tokens_file: {os.path.join(pki, 'api-tokens')}",
                  f"api_tls_cert_file: {server['cert']}", f"api_tls_key_file: {server['key']}"]
        API_CREDENTIALS = {"ca": server["ca"], "cert": server["cert"], "tokens": tokens}
    if host_timeout_ms:
        lines.append(f"host_timeout_ms: {host_timeout_ms}")
    if fence_timeout_ms:
        lines.append(f"fence_timeout_ms: {fence_timeout_ms}")
    if port_timeout_ms:
        lines.append(f"port_timeout_ms: {port_timeout_ms}")
    if dns:
        port = env.get("VCR_LAB_DNS_PORT") or "53"
        lines += ["dns:", f"  server: {env['VCR_LAB_DNS']}:{port}",
                  f"  zone: {env['VCR_LAB_ZONE']}", f"  key_file: {env['VCR_LAB_TSIG_FILE']}"]
    if images:
        lines.append(f"images_listen: {env['VCR_LAB_BRIDGE_ADDR']}:{IMAGES_PORT}")
        lines.append("images:")
        for img in images:
            lines.append(f"  - name: {img['name']}")
            for k in ("file", "sha256", "cmd"):
                if img.get(k):
                    lines.append(f"    {k}: {json.dumps(img[k])}")
    if ha:
        lines += ["ha:", f"  name: {ha['name']}",
                  "  etcd: [" + ", ".join(f"'{u}'" for u in ha["etcd"]) + "]"]
        if ha.get("lease_ttl_s"):
            lines.append(f"  lease_ttl_s: {ha['lease_ttl_s']}")
    if services:
        lines.append("services:")
        for s in services:
            lines.append(f"  - name: {s['name']}")
            for k, v in s.items():
                if k == "name":
                    continue
                if isinstance(v, dict):
                    inner = ", ".join(f"{ik}: {iv}" for ik, iv in v.items())
                    lines.append(f"    {k}: {{{inner}}}")
                else:
                    lines.append(f"    {k}: {v}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def service_entry(name, host, vm, address, mode, standby_host, container, standby_address,
                  port=80, ttl=5, check=None, zone=None):
    """One `services:` entry: primary VM `vm` of agent `host` at `address`; standby
    container `container` at `standby_address` in standby VM (agent) `standby_host`."""
    zone = zone or lab_env()["VCR_LAB_ZONE"]
    return {
        "name": name,
        "dns_name": f"{name}.{zone}",
        "ttl": ttl,
        "primary": {"host": host, "vm": vm, "address": address, "port": port},
        "check": check or {"type": "http", "path": "/", "interval_ms": 500, "timeout_ms": 400,
                           "failures": 3},
        "standby": {"mode": mode, "host": standby_host, "container": container,
                    "address": standby_address, "gateway": lab_env()["VCR_LAB_BRIDGE_ADDR"]},
    }


def vm_entry(name, index, address, memory_mb=256, vcpus=1, extra_args="", address6=None):
    """address6: an IPv6 address of the lab's prefix too (the guest's vcr.ip6=)."""
    env = lab_env()
    if address6:
        extra_args = f"vcr.ip6={address6}/{env.get('VCR_LAB_PREFIX6', '64')} {extra_args}"
    return {
        "name": name,
        "memory_mb": memory_mb,
        "vcpus": vcpus,
        "image": {"kernel": env["VCR_LAB_KERNEL"], "initrd": env["VCR_LAB_INITRD"]},
        "mac": f"52:54:00:77:00:{0x10 + index:02x}",
        "tap": f"tap{index}",
        "address": f"{address}/24",
        "gateway": env["VCR_LAB_BRIDGE_ADDR"],
        "kernel_args": f"vcr.dns={env['VCR_LAB_DNS']} {extra_args}".strip(),
    }


def standby_initrd():
    """The standby initramfs in the lab's image cache: VCR_LAB_STANDBY_INITRD names it
    (the integration tests' conftest: initrd-standby-asan.img, the ASan+UBSan standby
    agent), else initrd-standby.img (the normal build: demo, benchmarks)."""
    name = os.environ.get("VCR_LAB_STANDBY_INITRD") or "initrd-standby.img"
    return os.path.join(os.path.dirname(lab_env()["VCR_LAB_INITRD"]), name)


# The standby VMs of the tests: one vCPU.  Under multi-threaded TCG (QEMU 7.2) a 2-vCPU
# guest can hang in the kernel's live code patching: a vCPU loops in asm_exc_int3 and
# the kernel reports an RCU stall (seen on a busybox standby in test_libvirt and on a
# Debian standby, each a lost host to the server).  One vCPU has no second thread to race.
STANDBY_VCPUS = 1


def standby_vm_entry(name, index, address, memory_mb=256, vcpus=STANDBY_VCPUS,
                     extra_args=""):
    """A standby VM (standby_initrd(): LXC + CRIU, the standby agent started by its
    init and pointed at the lab server), or None when the image was not built."""
    env = lab_env()
    initrd = standby_initrd()
    if not os.path.exists(initrd):
        return None
    vm = vm_entry(name, index, address, memory_mb=memory_mb, vcpus=vcpus,
                  extra_args=f"apparmor=0 vcr.role=standby {extra_args} "
                             f"vcr.agent_server={env['VCR_LAB_BRIDGE_ADDR']}:{SERVER_AGENT_PORT}")
    vm["image"]["initrd"] = initrd
    return vm


DEBIAN_CACHE = os.environ.get("VCR_DEBIAN_CACHE", "/var/cache/vcr-lab/debian")


def debian_image(name):
    """Path of an artifact of lab/build-debian (primary.qcow2, primary-vmlinuz, ...), or
    None when it was not built."""
    path = os.path.join(DEBIAN_CACHE, name)
    return path if os.path.exists(path) else None


def debian_primary_entry(name, index, address, memory_mb=512, network="kernel"):
    """A disk-image VM of the Debian 12 primary image (nginx + redis; lab/build-debian),
    booted by the image's own kernel; None when the image was not built."""
    parts = [debian_image(f) for f in ("primary.qcow2", "primary-vmlinuz", "primary-initrd.img")]
    if None in parts:
        return None
    vm = vm_entry(name, index, address, memory_mb=memory_mb)
    vm["image"] = {"disk": parts[0], "kernel": parts[1], "initrd": parts[2]}
    # With ip= nothing needs cloud-init, whose Python stages delay nginx by 12-15 s
    # under TCG (lab/README.md, "Debian images").
    vm["kernel_args"] = "cloud-init=disabled" if network == "kernel" else None
    vm["network"] = network
    return vm


def debian_grub_entry(name, index, address, memory_mb=512):
    """A disk-image VM of primary-grub.qcow2 (lab/build-debian: the Debian 12 primary on
    a partitioned disk with GRUB in its MBR gap), booted by the firmware and that GRUB:
    no kernel, the address by the NoCloud seed; None when the image was not built."""
    disk = debian_image("primary-grub.qcow2")
    if disk is None:
        return None
    vm = vm_entry(name, index, address, memory_mb=memory_mb)
    vm["image"] = {"disk": disk}
    vm["kernel_args"] = None
    vm["network"] = "nocloud"
    return vm


def deb_closure(deb, installed, deb_dirs):
    """The .deb files to `dpkg -i` together with the package `deb` on a system whose
    installed packages are `installed` (names): deb itself and, recursively, every
    dependency not installed (first alternative of each, versions not compared), taken
    from the .debs in deb_dirs (the image caches: DEBIAN_CACHE/debs, standby-disk-debs).
    Raises LookupError naming a package found in none of them."""
    def depends(path):
        out = subprocess.run(["dpkg-deb", "-f", path, "Depends", "Pre-Depends"],
                             capture_output=True, text=True, check=True).stdout
        names = []
        for item in re.split(r"[,\n]", re.sub(r"^[A-Za-z-]+:", "", out, flags=re.M)):
            name = re.sub(r"\(.*?\)|:any", "", item.split("|")[0]).strip()
            if name:
                names.append(name)
        return names

    available = {}
    for d in deb_dirs:
        for f in sorted(os.listdir(d)) if os.path.isdir(d) else ():
            if f.endswith(".deb"):
                available[f.split("_")[0]] = os.path.join(d, f)  # sorted: newest last
    chosen, seen, queue = [deb], set(installed), depends(deb)
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        if name not in available:
            raise LookupError(f"no .deb of `{name}` (needed by {os.path.basename(deb)}) in "
                              f"{', '.join(deb_dirs)}")
        chosen.append(available[name])
        queue += depends(available[name])
    return chosen


def debian_standby_image():
    """The Debian 12 standby VM disk of lab/build-standby-disk: (paths, None) with paths a
    dict of disk, kernel, initrd and cmdline (the kernel arguments every standby VM needs),
    or (None, reason) when it is not built (whether it is up to date with its inputs:
    lab/build-standby-disk --list)."""
    d = DEBIAN_CACHE
    files = {"disk": "standby.qcow2", "kernel": "standby-disk-vmlinuz",
             "initrd": "standby-disk-initrd.img", "cmdline": "standby-disk.cmdline",
             "inputs": "standby-disk.inputs"}
    paths = {k: os.path.join(d, f) for k, f in files.items()}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        how = ("lab/build-debian --only standby, then lab/build-standby-disk"
               if not os.path.isfile(os.path.join(d, "standby-base.tar"))
               else "lab/build-standby-disk")
        return None, f"no Debian standby disk in {d} (missing {', '.join(missing)}): run {how}"
    with open(paths.pop("inputs")) as f:
        paths["inputs"] = f.read().strip()
    with open(paths["cmdline"]) as f:
        paths["cmdline"] = f.read().strip()
    return paths, None


def debian_standby_vm_entry(name, index, address, image, memory_mb=1024, vcpus=2):
    """A disk-image standby VM (docs/config-vm.md "Disk-image VMs") booting the Debian
    standby disk `image` (from debian_standby_image()): its own overlay, direct kernel
    boot, the address by `ip=` (network: kernel), and on the kernel command line the
    standby's cgroup v1 / AppArmor arguments and the agent's settings (vcr.name=,
    vcr.agent_server=), read by vcr-agent-standby.service (docs/packaging.md).  Its
    agent's TLS identity: write_agent_config() gives the VM an agent_identity (a
    certificate naming the VM), which vcr-standby reads from fw_cfg."""
    env = lab_env()
    return {
        "name": name,
        "memory_mb": memory_mb,
        "vcpus": vcpus,
        "image": {"disk": image["disk"], "kernel": image["kernel"], "initrd": image["initrd"]},
        "network": "kernel",
        "mac": f"52:54:00:77:00:{0x10 + index:02x}",
        "tap": f"tap{index}",
        "address": f"{address}/24",
        "gateway": env["VCR_LAB_BRIDGE_ADDR"],
        "kernel_args": f"{image['cmdline']} vcr.name={name} "
                       f"vcr.agent_server={env['VCR_LAB_BRIDGE_ADDR']}:{SERVER_AGENT_PORT}",
    }


QEMU_USER = "vcr-qemu"


def ensure_qemu_user():
    """The user the agents' QEMU runs as (`qemu_user`, default vcr-qemu; docs/security.md,
    "Least privilege"), made as the package's postinst makes it."""
    try:
        pwd.getpwnam(QEMU_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--home-dir", "/nonexistent",
                        "--no-create-home", "--shell", "/usr/sbin/nologin", "--comment",
                        "VCRecovery QEMU", QEMU_USER], check=True)


def process_ids(pid):
    """(uid, gid) of a process, from the Uid: and Gid: lines of /proc/PID/status
    (real, effective, saved and filesystem ids all equal, or None)."""
    ids = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Uid", "Gid"):
                values = set(int(v) for v in rest.split())
                ids[key] = values.pop() if len(values) == 1 else None
    return ids["Uid"], ids["Gid"]


def qemu_run_dir(host, state_dir):
    """The agent's directory for its QEMU's user, /run/vcr-qemu/HOST-HASH (HASH: FNV-1a
    of the state directory, vm_state_dir_hash; docs/security.md, "Least privilege")."""
    h = 2166136261
    for b in str(state_dir).encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return f"/run/vcr-qemu/{host}-{h:08x}"


def write_agent_config(path, host, state_dir, vms, accel="tcg", probe_deadline_ms=20000,
                       ram_dir=None, insecure=False, cert=None, qemu_allowed=None, servers=None,
                       fence_timeout_ms=None, server=None):
    """vms: list of dicts from vm_entry().  Written as YAML by hand: values are simple.
    ram_dir: where the VMs' RAM files go (tmpfs or hugetlbfs); the agent's default
    (/dev/shm) when None.  The server link runs mutual TLS with a certificate of
    lab_pki() naming `host` (cert: another name's, for tests), or plain TCP with
    insecure=True.  A VM whose kernel arguments start an agent (vcr.agent_server=: a
    standby VM) gets its own certificate as agent_identity (fw_cfg), unless insecure.
    qemu_allowed: the QEMU binaries a warm restart may name (the agent's default when
    None: the configured qemu and the system's qemu-system-*).
    servers: the agent ports of redundant servers (`server:` as a list, docs/ha.md);
    fence_timeout_ms: the agent's self-fence (docs/fencing.md).
    server: the server's HOST:PORT (default: the bridge's IPv4 address), e.g.
    "[fd77::1]:7070" to connect over IPv6."""
    env = lab_env()
    ensure_qemu_user()
    pki = None if insecure else lab_pki(path)
    if server:
        server = f"'{server}'"
    elif not servers:
        server = f"{env['VCR_LAB_BRIDGE_ADDR']}:{SERVER_AGENT_PORT}"
    else:
        server = "[" + ", ".join(f"{env['VCR_LAB_BRIDGE_ADDR']}:{p}" for p in servers) + "]"
    out = [
        f"host: {host}",
        f"server: {server}",
        f"state_dir: {state_dir}",
    ] + ([f"ram_dir: {ram_dir}"] if ram_dir else []) + (
        ["insecure: true"] if insecure else tls_lines(lab_cert(pki, cert or host))) + [
        f"accel: {accel}",
        "qemu: /usr/bin/qemu-system-x86_64",
    ] + (["qemu_allowed:"] + [f"  - {q}" for q in qemu_allowed] if qemu_allowed else []) + [
        "sample_interval_ms: 1000",
    ] + ([f"fence_timeout_ms: {fence_timeout_ms}"] if fence_timeout_ms else []) + [
        "probe:",
        f"  kernel: {env['VCR_LAB_KERNEL']}",
        f"  initrd: {env['VCR_LAB_INITRD']}",
        f"  deadline_ms: {probe_deadline_ms}",
        "vms:",
    ]
    for vm in vms:
        out.append(f"  - name: {vm['name']}")
        for k in ("memory_mb", "vcpus"):
            out.append(f"    {k}: {vm[k]}")
        out.append("    image:")
        for k, v in vm["image"].items():
            out.append(f"      {k}: {v}")
        for k in ("mac", "tap", "address", "gateway", "kernel_args", "network", "user_data"):
            if vm.get(k) is not None:
                out.append(f"    {k}: \"{vm[k]}\"")
        if "autostart" in vm:
            out.append(f"    autostart: {'true' if vm['autostart'] else 'false'}")
        args = vm.get("kernel_args") or ""
        if pki and "vcr.agent_server=" in args and "vcr.agent_insecure=1" not in args:
            ident = lab_cert(pki, vm["name"])
            out.append("    agent_identity: {" + ", ".join(f"{k}: {v}" for k, v in ident.items())
                       + "}")
        if vm.get("volumes"):
            out.append("    volumes:")
            for v in vm["volumes"]:
                out.append("      - {" + ", ".join(f"{k}: {x}" for k, x in v.items()) + "}")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def etcd_cluster(tmp, n=3):
    """Starts an n-member etcd cluster on the namespace's loopback (no systemd), with a
    300 ms election timeout so that it grants 1 s leases (docs/ha.md); returns (procs,
    client URLs) once it answers."""
    peers = ",".join(f"e{i}=http://127.0.0.1:{ETCD_PORT + 2 * i + 1}" for i in range(n))
    procs, urls = [], []
    for i in range(n):
        url = f"http://127.0.0.1:{ETCD_PORT + 2 * i}"
        peer = f"http://127.0.0.1:{ETCD_PORT + 2 * i + 1}"
        data = os.path.join(str(tmp), f"etcd-e{i}")
        procs.append(Proc(["etcd", "--name", f"e{i}", "--data-dir", data,
                           "--listen-client-urls", url, "--advertise-client-urls", url,
                           "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                           "--initial-cluster", peers, "--initial-cluster-state", "new",
                           "--heartbeat-interval", "30", "--election-timeout", "300"],
                          os.path.join(str(tmp), f"etcd-e{i}.log")))
        urls.append(url)
    try:
        wait_for("the etcd cluster to grant a lease",
                 lambda: '"TTL"' in ns_run(["curl", "-s", "-m", "2", "-X", "POST",
                                            urls[0] + "/v3/lease/grant", "-d",
                                            '{"TTL":5}']).stdout, 30, interval=0.2)
    except Exception:
        for p in procs:
            p.stop()
        raise
    return procs, urls


def etcd_raft_leader(urls):
    """The index of the member that is etcd's raft leader now."""
    ids = []
    for u in urls:
        r = ns_run(["curl", "-s", "-m", "2", "-X", "POST", u + "/v3/maintenance/status",
                    "-d", "{}"])
        st = json.loads(r.stdout or "{}")
        ids.append((st.get("header", {}).get("member_id"), st.get("leader")))
    leader = next(lid for _, lid in ids if lid)
    return next(i for i, (mid, _) in enumerate(ids) if mid == leader)


def delete_dns_fence():
    """Deletes the zone's DNS fence (_vcr-term TXT, docs/ha.md), as an operator does after
    replacing the etcd cluster: a new cluster's terms start again."""
    env = lab_env()
    script = (f"server {env['VCR_LAB_DNS']}\n"
              f"update delete _vcr-term.{env['VCR_LAB_ZONE']} TXT\nsend\n")
    r = subprocess.run(in_ns(["nsupdate", "-k", env["VCR_LAB_TSIG_FILE"]]), input=script,
                       capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        raise RuntimeError(f"deleting the DNS fence: {r.stderr.strip()}")


def etcd_range(urls, prefix):
    """Every key under prefix in etcd (its JSON gateway): {key: (value, create_revision,
    mod_revision)}."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                       "range_end": base64.b64encode(end.encode()).decode()})
    for u in urls:
        r = ns_run(["curl", "-s", "-m", "2", "-X", "POST", u + "/v3/kv/range", "-d", body])
        if r.returncode == 0 and r.stdout.startswith("{"):
            return {base64.b64decode(kv["key"]).decode():
                    (json.loads(base64.b64decode(kv["value"])), int(kv["create_revision"]),
                     int(kv["mod_revision"]))
                    for kv in json.loads(r.stdout).get("kvs", [])}
    raise RuntimeError(f"no etcd member answered a range of {prefix}")


def dns_changes(name):
    """The A records BIND added to NAME.ZONE, in order, from the zone's own journal
    (named-journalprint): every DNS switch the lab's server applied, whoever sent it."""
    env = lab_env()
    jnl = os.path.join(env["VCR_LAB_RUN"], f"{env['VCR_LAB_ZONE']}.zone.jnl")
    if not os.path.exists(jnl):
        return []
    r = subprocess.run(["named-journalprint", jnl], capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        raise RuntimeError(f"named-journalprint {jnl}: {r.stderr.strip()}")
    fqdn = f"{name}.{env['VCR_LAB_ZONE']}."
    return [f[-1] for f in (line.split() for line in r.stdout.splitlines())
            if len(f) >= 6 and f[0] == "add" and f[1] == fqdn and f[-2] == "A"]


class Vcr:
    """The `vcr` CLI run inside the namespace against the lab server (api: another
    server's API, e.g. one of redundant servers)."""

    def __init__(self, build, role="operator", api=SERVER_API):
        self.bin = os.path.join(build, "src", "cli", "vcr")
        self.role = role
        self.api = api

    def argv(self, *args):
        """The command line: the server's API with API_CREDENTIALS (the CA, this
        role's token file), read when called (the server may be configured later)."""
        creds = []
        if API_CREDENTIALS:
            creds = ["--ca", API_CREDENTIALS["ca"],
                     "--token-file", API_CREDENTIALS["tokens"][self.role]]
        return [self.bin, "--server", self.api, *creds, *args]

    def run(self, *args, timeout=15):
        return ns_run(self.argv(*args), timeout=timeout)

    def json(self, *args):
        r = self.run(*args, "--json")
        if r.returncode != 0:
            raise RuntimeError(f"vcr {' '.join(args)} failed: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def status(self):
        return self.json("status")

    def vm(self, name):
        for host in self.status().get("hosts", []):
            for vm in host.get("vms", []):
                if vm.get("name") == name:
                    return dict(vm, host=host.get("name"), host_state=host.get("state"))
        return None

    def events(self, since=0):
        """Every event after `since` (the API pages: one call returns at most `limit`)."""
        out = []
        while True:
            page = self.json("events", "--since", str(since), "--limit", "1000").get("events", [])
            if not page:
                return out
            out += page
            since = page[-1]["id"]

    def last_event_id(self):
        """Id of the newest event (without --since the API returns the newest ones)."""
        return max([e["id"] for e in self.json("events", "--limit", "1")["events"]] or [0])


def initrd_with_files(base, path, files):
    """Writes `base` + a gzip'd newc cpio archive of files {path: (mode, bytes or None for a
    directory)} to `path`: the kernel unpacks concatenated archives in order, so the
    guest gets the extra files without rebuilding its image."""
    import gzip
    import io
    out = io.BytesIO()
    for ino, (name, (mode, data)) in enumerate(list(files.items()) + [("TRAILER!!!", (0, b""))],
                                               1):
        data = data or b""
        raw = name.encode() + b"\0"
        hdr = b"070701" + b"".join(b"%08X" % v for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0))
        out.write(hdr + raw + b"\0" * ((4 - (len(hdr) + len(raw)) % 4) % 4))
        out.write(data + b"\0" * ((4 - len(data) % 4) % 4))
    with open(base, "rb") as f:
        blob = f.read()
    with open(path, "wb") as f:
        f.write(blob + gzip.compress(out.getvalue()))


SANITIZER_REPORT = re.compile(r"(ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer)")


def console_sanitizer_reports(paths):
    """Sanitizer reports in guest consoles (a standby VM's agent writes its output,
    reports included, to its serial console: AGENT_STATE/VM.serial): a list of
    "path: excerpt" strings, empty when there is none."""
    out = []
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        m = SANITIZER_REPORT.search(text)
        if m:
            out.append(f"{path}:\n{text[max(0, m.start() - 500):m.start() + 3000]}")
    return out


GUEST_STALL = re.compile(r"rcu: INFO: rcu_\w+ detected stalls|watchdog: BUG: soft lockup")


def guest_stall(path):
    """The first kernel stall report in a guest's serial console (a line), or None. Under
    multi-threaded TCG a 2-vCPU Debian guest was seen hanging for good in its boot (one
    vCPU looping in asm_exc_int3, the other in getrandom, RCU stalled): a wait for it
    can end at once, naming that, instead of at its deadline."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    m = GUEST_STALL.search(text)
    return text[m.start():text.find("\n", m.start())] if m else None


def now_ms():
    return int(time.time() * 1000)
