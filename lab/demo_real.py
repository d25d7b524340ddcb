"""`lab/demo --real`: the demo's story on real Debian 12 guests.

Two Debian 12 primaries of lab/build-debian's image (which runs both nginx and Redis):
`debweb` serves the site (service `www`, nginx, its pages on the data volume `vcrdata`
that nginx serves and takes WebDAV PUTs for under /data/), `debkv` serves Redis
(service `kv`, its AOF on that VM's own `vcrdata` volume, bind-mounted over
/var/lib/redis by a cloud-init bootcmd before Redis starts).  Each service declares its
data (docs/data.md), so the volume follows it.  One Debian standby VM (the disk of
lab/build-standby-disk: the project's .deb, LXC, CRIU) holds both warm containers,
built from the ct-nginx and ct-redis images the server delivers (`images:`, checked by
SHA-256, cached in the standby VM).

Story: write a page and a Redis key on the primaries; kill -9 both primaries' QEMU;
print each recovery's timeline with the data's age; read the page and the key from the
containers through their DNS names; change the page and add a key in the containers;
fail both services back (their data copied back into the primaries' volumes, the
primaries booted again) and read the changes from the primaries.  Each step prints its
time; the end is PASS or FAIL (exit 1), and --json FILE writes the summary.

One primary per service because failback copies a service's data back into its
primary's volume while the primary is stopped (docs/data.md, "Failback"): two services
with data on one VM could not both come back."""
import json
import os
import signal
import time

import harness
import labkit

BOOT_TIMEOUT = 600  # three systemd guests booting together under TCG on a shared machine
RECOVERY_TIMEOUT = 240
# service: (primary VM, tap index, primary address, container, container address, port)
SERVICES = {
    "www": ("debweb", 11, "10.77.0.51", "www-c", "10.77.0.53", 80),
    "kv": ("debkv", 13, "10.77.0.54", "kv-c", "10.77.0.55", 6379),
}
STANDBY, S_INDEX, S_ADDR = "debsb", 12, "10.77.0.52"
KV_DIR = "/srv/data/redis"
# The primary's Redis keeps its AOF on the volume: mounted by the bootcmd if systemd
# has not yet (udev names the disk late under TCG), then bind-mounted over Redis's dir,
# whose unit may write only there (ProtectSystem=strict, ReadWritePaths).
KV_USER_DATA = f"""#cloud-config
bootcmd:
  - [sh, -c, "mountpoint -q /srv/data || mount -o sync LABEL=vcrdata /srv/data; mkdir -p {KV_DIR}; chown -R redis:redis {KV_DIR}; mount --bind {KV_DIR} /var/lib/redis"]
"""
# The container's Redis: the image's command with its data directory on the attached
# volume; its redis user has another uid than the primary's, hence the chown.
KV_CT_CMD = (f'sh -c "mkdir -p {KV_DIR} && chown -R redis:redis {KV_DIR} && exec setpriv '
             f'--reuid=redis --regid=redis --init-groups redis-server /etc/redis/redis.conf '
             f'--dir {KV_DIR}"')

# A RESP client run inside the lab namespace: argv = address, command words; prints the
# reply as JSON (errors as {"error": text}).
RESP = r"""
import json, socket, sys
s = socket.create_connection((sys.argv[1], 6379), timeout=5)
words = [w.encode() for w in sys.argv[2:]]
s.sendall(b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
f = s.makefile("rb")
def read():
    line = f.readline().rstrip(b"\r\n")
    t, rest = line[:1], line[1:].decode()
    if t == b"+": return rest
    if t == b"-": return {"error": rest}
    if t == b":": return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0: return None
        data = f.read(n + 2)[:-2]
        return data.decode(errors="replace")
    if t == b"*": return [read() for _ in range(int(rest))]
    raise SystemExit("bad reply %r" % line)
print(json.dumps(read()))
"""


class Failed(Exception):
    pass


def say(msg):
    harness.say(msg, digits=2)


def redis(address, *words):
    """The reply of one Redis command, or None when the server did not answer."""
    r = labkit.ns_run(["/usr/bin/python3", "-c", RESP, address, *words], timeout=10)
    return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else None


def http(address, path, method="GET", body=None, timeout=5):
    argv = ["curl", "-s", "-f", "-m", str(timeout), "-X", method]
    if body is not None:
        argv += ["--data-binary", body]
    r = labkit.ns_run(argv + [f"http://{address}{path}"], timeout=timeout + 5)
    return r.stdout if r.returncode == 0 else None


def check(what, ok, detail=""):
    if not ok:
        raise Failed(f"{what}{': ' + str(detail) if detail else ''}")
    say(f"ok: {what}")


def service(vcr, name):
    return next(s for s in vcr.json("services")["services"] if s["name"] == name)


def image_entry(name, cmd=None):
    with open(labkit.debian_image(f"{name}.json")) as f:
        meta = json.load(f)
    return {"name": name, "file": labkit.debian_image(f"{name}.tar.gz"),
            "sha256": meta["sha256"], "cmd": cmd or meta["cmd"]}


def print_timeline(name, s, killed_ms, seen_ms):
    rec = s.get("recovery") or {}
    print(f"    recovery of {name} ({s['standby']['mode']} mode); ms from detection "
          f"(detected {rec.get('started_ms', killed_ms) - killed_ms} ms after the kill):",
          flush=True)
    for e in rec.get("timeline") or []:
        extra = ""
        if e["phase"] == "data_copied":
            extra = f"  (from {e.get('source')}, {e.get('bytes')} bytes packed)"
        elif e["phase"] == "data_attached":
            extra = f"  (data age {e.get('data_age_ms')} ms, at {e.get('path')})"
        print(f"      {e.get('elapsed_ms', 0):7d} ms  {e['phase']}{extra}")
    print(f"      {seen_ms - killed_ms:7d} ms after the kill: a client resolving "
          f"{name}.vcr.lab reads the data from the container", flush=True)


def run(build, tmp, procs, summary):
    """The story; raises Failed (or labkit.Timeout) at the first thing not as expected."""
    standby_image, why = labkit.debian_standby_image()
    primary = labkit.debian_image("primary.qcow2")
    if standby_image is None or primary is None or not labkit.debian_image("ct-redis.json"):
        raise Failed(why or "the Debian images are not built (make image-debian, then "
                     "lab/build-standby-disk)")
    summary["load_start"] = [round(x, 2) for x in os.getloadavg()]
    say(f"load average {summary['load_start']} (a shared machine: other jobs may run)")
    say("lab up: namespace, bridge, taps, BIND9 for zone vcr.lab")
    env = labkit.lab_up()
    say(f"lab ready; DNS {env['VCR_LAB_DNS']}; logs in {tmp}")

    images = [image_entry("ct-nginx"), image_entry("ct-redis", KV_CT_CMD)]
    services, vms = [], []
    for name, (vm, index, addr, ct, ct_addr, port) in SERVICES.items():
        check_cfg = {"type": "redis", "interval_ms": 500, "timeout_ms": 400, "failures": 3} \
            if name == "kv" else None
        svc = labkit.service_entry(name, "debhost", vm, addr, "warm", STANDBY, ct, ct_addr,
                                   port=port, check=check_cfg)
        svc["standby"]["image"] = "ct-nginx" if name == "www" else "ct-redis"
        svc["data"] = {"volume": "vcrdata", "path": "/srv/data", "interval_s": 0}
        services.append(svc)
        src = os.path.join(tmp, f"{vm}-data")
        os.makedirs(src)
        if name == "www":
            os.makedirs(os.path.join(src, "site"))
            os.chmod(os.path.join(src, "site"), 0o777)
            with open(os.path.join(src, "site", "index.html"), "w") as f:
                f.write("version 1\n")
            os.chmod(os.path.join(src, "site", "index.html"), 0o666)
            entry = labkit.debian_primary_entry(vm, index, addr)
        else:
            user_data = os.path.join(tmp, "kv-user-data")
            with open(user_data, "w") as f:
                f.write(KV_USER_DATA)
            entry = labkit.debian_primary_entry(vm, index, addr, network="nocloud")
            entry["user_data"] = user_data
        entry["volumes"] = [{"name": "vcrdata", "size_mb": 32, "source_dir": src,
                             "image": os.path.join(tmp, f"{vm}-vcrdata.img"),
                             "mount": "/srv/data", "cache": "none"}]
        vms.append(entry)

    cfg = os.path.join(tmp, "server.yaml")
    labkit.write_server_config(cfg, os.path.join(tmp, "journal.db"), 500, 5000, dns=True,
                               services=services, images=images)
    procs["server"] = harness.server_proc(build, cfg, os.path.join(tmp, "server.log"))
    vcr = labkit.Vcr(build)
    harness.wait_server(vcr, procs["server"])
    say("vcr-server up: services www (nginx) and kv (Redis), warm in the Debian standby "
        "VM debsb, containers from the delivered images ct-nginx and ct-redis")
    hosts = {"debhost": vms,
             "sbhost": [labkit.debian_standby_vm_entry(STANDBY, S_INDEX, S_ADDR,
                                                       standby_image)]}
    for host, specs in hosts.items():
        state = os.path.join(tmp, f"agent-{host}")
        os.mkdir(state)
        acfg = os.path.join(tmp, f"agent-{host}.yaml")
        labkit.write_agent_config(acfg, host, state, specs)
        procs[host] = harness.agent_proc(build, acfg, os.path.join(tmp, f"agent-{host}.log"),
                                         "--stop-vms-on-exit")
    say("host agents started: debhost boots debweb and debkv (Debian 12, nginx + Redis), "
        "sbhost boots the Debian standby VM debsb")

    def booted(vm, probe):
        def f():
            v = vcr.vm(vm) or {}
            if v.get("state") in ("failed", "crashed"):
                raise Failed(f"VM {vm}: {v}")
            return probe()
        return f
    t = time.monotonic()
    www_addr, kv_addr = SERVICES["www"][2], SERVICES["kv"][2]
    try:
        labkit.wait_for("nginx of debweb", booted("debweb", lambda: http(
            www_addr, "/data/site/index.html")), BOOT_TIMEOUT, interval=1)
        say(f"debweb serves the site ({time.monotonic() - t:.1f} s after the agents started)")
        labkit.wait_for("Redis of debkv", booted("debkv", lambda: redis(kv_addr, "PING")
                                                  == "PONG"), BOOT_TIMEOUT, interval=1)
        say(f"debkv's Redis answers ({time.monotonic() - t:.1f} s)")
        for name in SERVICES:
            ct_addr = SERVICES[name][4]
            probe = (lambda a=ct_addr: http(a, "/", timeout=3)) if name == "www" else \
                (lambda a=ct_addr: redis(a, "PING") == "PONG")
            labkit.wait_for(f"the warm container of {name}", booted(STANDBY, probe),
                            BOOT_TIMEOUT, interval=1)
            say(f"warm container {SERVICES[name][3]} at {ct_addr} answers "
                f"({time.monotonic() - t:.1f} s)")
    except labkit.Timeout:
        raise
    summary["boot_s"] = round(time.monotonic() - t, 1)
    for name in SERVICES:
        labkit.wait_for(f"service {name} ok", lambda n=name: service(vcr, n)["state"] == "ok",
                        120, interval=1)
    print(vcr.run("services").stdout, flush=True)
    for name in SERVICES:
        img = [e for e in vcr.events() if e["kind"] == "provision" and
               (e.get("detail") or {}).get("service") == name]
        detail = (img[-1]["detail"] if img else {}).get("image") or {}
        if detail:
            say(f"{name}: image {detail.get('name')} {detail.get('bytes')} bytes, "
                f"{'fetched' if detail.get('fetched') else 'cached'} (download "
                f"{detail.get('download_ms')} ms, SHA-256 {detail.get('verify_ms')} ms, unpack "
                f"{detail.get('unpack_ms')} ms)")

    page = f"version 2, written at {time.strftime('%H:%M:%S')}\n"
    check("PUT of the page on debweb", http(www_addr, "/data/site/index.html", "PUT", page)
          is not None)
    check("the page reads back from debweb", http(www_addr, "/data/site/index.html") == page)
    key, value = "demo:key", f"set at {time.strftime('%H:%M:%S')}"
    check("SET of the key on debkv", redis(kv_addr, "SET", key, value) == "OK")
    check("GET of the key on debkv", redis(kv_addr, "GET", key) == value)

    since = vcr.last_event_id()
    pids = {n: vcr.vm(SERVICES[n][0])["pid"] for n in SERVICES}
    killed_ms = labkit.now_ms()
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    say(f"failure: kill -9 of both primaries' QEMU (debweb {pids['www']}, debkv {pids['kv']})")
    seen = {}

    def served():
        for name, (_, _, _, _, ct_addr, _) in SERVICES.items():
            if name in seen or labkit.dig(f"{name}.vcr.lab") != [ct_addr]:
                continue
            got = http(ct_addr, "/data/site/index.html", timeout=2) if name == "www" else \
                redis(ct_addr, "GET", key)
            if got == (page if name == "www" else value):
                seen[name] = labkit.now_ms()
                say(f"{name}.vcr.lab -> {ct_addr}: the container serves the "
                    f"{'page' if name == 'www' else 'key'} written before the kill "
                    f"({seen[name] - killed_ms} ms after it)")
        return len(seen) == len(SERVICES)
    labkit.wait_for("the page and the key from the containers", served, RECOVERY_TIMEOUT,
                    interval=0.2)
    summary["recoveries"] = {}
    for name in SERVICES:
        labkit.wait_for(f"{name} recovered", lambda n=name: service(vcr, n)["state"] ==
                        "recovered", 60, interval=0.5)
        s = service(vcr, name)
        print_timeline(name, s, killed_ms, seen[name])
        tl = {e["phase"]: e for e in s["recovery"]["timeline"]}
        attached = tl.get("data_attached") or {}
        check(f"{name}: data attached in the container, data age "
              f"{attached.get('data_age_ms')} ms", attached.get("data_age_ms") is not None,
              attached)
        summary["recoveries"][name] = {
            "kill_to_served_ms": seen[name] - killed_ms,
            "data_age_ms": attached.get("data_age_ms"),
            "timeline": {p: e.get("elapsed_ms") for p, e in tl.items()}}
    check("the primaries are silent", http(www_addr, "/", timeout=2) is None and
          redis(kv_addr, "PING") is None)

    page3 = f"version 3, written in the container at {time.strftime('%H:%M:%S')}\n"
    check("PUT of a new page in the container", http(SERVICES["www"][4], "/data/site/index.html",
                                                      "PUT", page3) is not None)
    check("SET of a second key in the container",
          redis(SERVICES["kv"][4], "SET", "demo:in-container", "yes") == "OK")
    t = time.monotonic()
    for name in SERVICES:
        r = vcr.run("failback", name, timeout=30)
        check(f"vcr failback {name} accepted", r.returncode == 0, r.stderr.strip())
    say("failback: each container stopped, its data copied back into its primary's volume, "
        "the primary booted again")
    for name in SERVICES:
        labkit.wait_for(f"{name} back on its primary", lambda n=name: service(vcr, n)["state"]
                        == "ok", BOOT_TIMEOUT, interval=1)
        say(f"{name}.vcr.lab -> {labkit.dig(name + '.vcr.lab')} ({time.monotonic() - t:.1f} s "
            "after the failback orders)")
    summary["failback_s"] = round(time.monotonic() - t, 1)
    check("debweb serves the page written in the container",
          labkit.wait_for("the page on debweb", lambda: http(www_addr, "/data/site/index.html")
                          == page3, 60, interval=1))
    got = labkit.wait_for("Redis on debkv", lambda: redis(kv_addr, "MGET", key,
                                                           "demo:in-container"), 60, interval=1)
    check("debkv's Redis has both keys (the one from before the kill, the one set in the "
          "container)", got == [value, "yes"], got)
    returned = [e["detail"] for e in vcr.events(since) if e["kind"] == "failback" and
                (e.get("detail") or {}).get("phase") == "data_returned"]
    for d in returned:
        say(f"data_returned: {d.get('service')}: {d.get('bytes')} bytes packed in "
            f"{d.get('elapsed_ms')} ms")
    summary["data_returned"] = {d.get("service"): {"bytes": d.get("bytes"),
                                                   "elapsed_ms": d.get("elapsed_ms")}
                                for d in returned}
    print(vcr.run("services").stdout, flush=True)
    summary["load_end"] = [round(x, 2) for x in os.getloadavg()]
    say(f"load average {summary['load_end']}")
