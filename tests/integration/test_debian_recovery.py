"""A real workload recovered end to end (issue 9): a Debian 12 disk-image primary running
nginx and Redis, each service's data on a data volume of its own; a Debian 12 standby VM
(the project's .deb, LXC, CRIU) running the web service's warm container, built from the
ct-nginx image the server delivers (checksummed, cached); the lab's BIND9 serving the names.

The site is changed on the primary (an HTTP PUT into its data volume) and keys are written
to Redis (AOF, fsync always, its dir on its volume) just before `kill -9` of the primary's
QEMU: after the recovery, the client that follows the web name gets the changed page from
the warm container; the one that follows the Redis name finds every key in the COLD
container made at recovery from the delivered ct-redis image, given the volume as the VM
left it; the timelines report the data's age (0: a VM failure).  That Redis container is
then migrated (CRIU, docs/migration.md) to a second Debian standby VM with its data volume:
the keys written before the migration, on the volume's AOF, are served from there.  Both
containers are unprivileged (`standby.privileged: false`, docs/security.md "Standby
containers"): their inits' uid_map is 0 100000 65536 and their seccomp mode 2, the Redis
one's after its migration too.  One boot of each VM.

Images: lab/build-debian (primary, ct-nginx, ct-redis, standby base) and
lab/build-standby-disk."""
import json
import os
import signal
import subprocess
import time

import pytest

import labkit

PRIMARY, P_INDEX, P_ADDR = "debweb", 11, "10.77.0.51"
STANDBY, S_INDEX, S_ADDR = "debsb", 12, "10.77.0.52"
STANDBY2, S2_INDEX, S2_ADDR = "debsb2", 13, "10.77.0.55"  # the migration's target
SERVICE, CT, CT_ADDR = "www", "www-c", "10.77.0.53"
KV, KV_CT, KV_ADDR = "kv", "kv-c", "10.77.0.54"
KV_KEYS = 50
BOOT_TIMEOUT = 420  # two systemd guests booting together under TCG on a shared machine
RECOVERY_TIMEOUT = 240

# Decided at collection, before the lab is up: the images are there or the module skips.
PRIMARY_DISK = labkit.debian_image("primary.qcow2")
STANDBY_IMAGE, NO_STANDBY = labkit.debian_standby_image()
NGINX_META = labkit.debian_image("ct-nginx.json")
REDIS_META = labkit.debian_image("ct-redis.json")
pytestmark = pytest.mark.skipif(
    PRIMARY_DISK is None or STANDBY_IMAGE is None or NGINX_META is None or REDIS_META is None,
    reason=NO_STANDBY or "the Debian images are not built (make image-debian)")


def http(address, path, method="GET", body=None, timeout=5):
    argv = ["curl", "-s", "-f", "-m", str(timeout), "-X", method]
    if body is not None:
        argv += ["--data-binary", body]
    r = labkit.ns_run(argv + [f"http://{address}{path}"], timeout=timeout + 5)
    return r.stdout if r.returncode == 0 else None


# A RESP client run inside the lab's namespace (no redis-cli on the host): argv[1] the
# address, stdin the commands (JSON lists); prints each reply in RESP as received.
REDIS_CLIENT = r"""
import json, socket, sys
cmds = json.load(sys.stdin)
out = b"".join(b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode())
                                             for a in map(str, c)) for c in cmds)
s = socket.create_connection((sys.argv[1], 6379), timeout=float(sys.argv[2]))
s.sendall(out)
f = s.makefile("rb")
for _ in cmds:
    line = f.readline()
    sys.stdout.buffer.write(line)
    if line[:1] == b"$" and int(line[1:]) >= 0:
        sys.stdout.buffer.write(f.read(int(line[1:]) + 2))
"""


def redis(address, *commands, timeout=5):
    """Sends the commands (argument lists) over one connection; their replies in RESP,
    concatenated, or None when Redis did not answer."""
    r = subprocess.run(labkit.in_ns(["python3", "-c", REDIS_CLIENT, address, str(timeout)]),
                       input=json.dumps([list(c) for c in commands]).encode(),
                       capture_output=True, timeout=timeout + 5)
    return r.stdout.decode() if r.returncode == 0 and r.stdout else None


def service(d, name=SERVICE):
    return next(s for s in d.vcr.json("services")["services"] if s["name"] == name)


@pytest.fixture(scope="module")
def rig(lab, tmp_path_factory):
    from conftest import Daemons
    tmp = tmp_path_factory.mktemp("debian-recovery")
    d = Daemons(tmp)
    with open(NGINX_META) as f:
        meta = json.load(f)
    image = {"name": "ct-nginx", "file": labkit.debian_image("ct-nginx.tar.gz"),
             "sha256": meta["sha256"], "cmd": meta["cmd"]}
    with open(REDIS_META) as f:
        meta = json.load(f)
    redis_image = {"name": "ct-redis", "file": labkit.debian_image("ct-redis.tar.gz"),
                   "sha256": meta["sha256"], "cmd": meta["cmd"]}
    # Redis's data on its own volume (label kvdata): cloud-init's last stage stops Redis,
    # mounts the volume over its dir /var/lib/redis, gives it to redis and starts it
    # again (a new, empty AOF there), then says so in a page nginx serves.
    user_data = tmp / "user-data"
    user_data.write_text(
        "#cloud-config\n"
        "runcmd:\n"
        "  - [sh, -c, 'systemctl stop redis-server && mount -o sync LABEL=kvdata "
        "/var/lib/redis && chown redis:redis /var/lib/redis && chmod 750 /var/lib/redis && "
        "systemctl start redis-server && grep \" /var/lib/redis \" /proc/mounts "
        "> /srv/www/redis-dir.txt']\n")
    # The site's data: a volume labelled vcrdata, which the image's fstab mounts at
    # /srv/data (sync) and nginx serves (and takes PUTs) at /data/.
    site = tmp / "site"
    (site / "site").mkdir(parents=True)
    (site / "site").chmod(0o777)
    (site / "site" / "index.html").write_text("version 1\n")
    (site / "site" / "index.html").chmod(0o666)
    vm = dict(labkit.debian_primary_entry(PRIMARY, P_INDEX, P_ADDR, network="nocloud"),
              user_data=str(user_data),
              volumes=[{"name": "vcrdata", "size_mb": 32, "source_dir": str(site),
                        "image": str(tmp / "vcrdata.img"), "mount": "/srv/data",
                        "cache": "none"},
                       {"name": "kvdata", "size_mb": 32, "image": str(tmp / "kvdata.img"),
                        "mount": "/var/lib/redis", "cache": "none"}])
    svc = labkit.service_entry(SERVICE, "debhost", PRIMARY, P_ADDR, "warm", STANDBY, CT,
                               CT_ADDR)
    svc["standby"]["image"] = "ct-nginx"
    # Both containers unprivileged (docs/security.md, "Standby containers").
    svc["standby"]["privileged"] = "false"
    svc["data"] = {"volume": "vcrdata", "path": "/srv/data", "interval_s": 0}
    # 20 failures (10 s): cloud-init's runcmd (below) stops Redis, which had answered, and
    # starts it again on the volume; under TCG on a loaded machine that took more than 3
    # probes (1.5 s) twice, and the recovery then killed the primary during the fixture.
    kv = labkit.service_entry(KV, "debhost", PRIMARY, P_ADDR, "cold", STANDBY, KV_CT, KV_ADDR,
                              port=6379, check={"type": "redis", "interval_ms": 500,
                                                "timeout_ms": 400, "failures": 20})
    kv["standby"]["image"] = "ct-redis"
    kv["standby"]["privileged"] = "false"
    kv["data"] = {"volume": "kvdata", "path": "/var/lib/redis"}
    d.server(heartbeat_ms=500, host_timeout_ms=5000, dns=True, images=[image, redis_image],
             services=[svc, kv])
    d.agent("debhost", [vm])
    # The migration's target boots once the others serve (below): three systemd guests
    # booting at once on two cores slowed the primary's Redis restart by cloud-init past
    # the service's 1.5 s of failed probes, and its recovery killed the primary.
    # One vCPU each: a 2-vCPU standby of this module once hung for good in its boot under
    # multi-threaded TCG (labkit.guest_stall), the agent never connecting.
    d.agent("sbhost", [labkit.debian_standby_vm_entry(STANDBY, S_INDEX, S_ADDR, STANDBY_IMAGE,
                                                      vcpus=1),
                       dict(labkit.debian_standby_vm_entry(STANDBY2, S2_INDEX, S2_ADDR,
                                                           STANDBY_IMAGE, vcpus=1),
                            autostart=False)])
    def booted(vm, check):
        """check() once the VM runs (alive())."""
        return lambda: alive(d, vm) and check()
    labkit.wait_for("nginx of the Debian primary",
                    booted(PRIMARY, lambda: http(P_ADDR, "/data/site/index.html")),
                    BOOT_TIMEOUT, interval=1)
    labkit.wait_for("the warm container from ct-nginx",
                    booted(STANDBY, lambda: http(CT_ADDR, "/", timeout=3)), BOOT_TIMEOUT,
                    interval=1)
    labkit.wait_for("Redis of the Debian primary on its volume",
                    booted(PRIMARY, lambda: http(P_ADDR, "/redis-dir.txt")), BOOT_TIMEOUT,
                    interval=1)
    for name in (SERVICE, KV):
        labkit.wait_for(f"service {name} ok", lambda: service(d, name)["state"] == "ok", 120,
                        interval=1)
    r = d.vcr.run("vm", "start", STANDBY2, timeout=60)
    assert r.returncode == 0, r.stderr
    yield d
    reports = d.stop_all()
    assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)


def alive(d, vm):
    """True while VM has not failed; a VM that failed, or whose kernel stalled
    (labkit.guest_stall), ends the wait at once, saying so."""
    v = d.vcr.vm(vm) or {}
    if v.get("state") in ("failed", "crashed"):
        pytest.fail(f"VM {vm}: {v}")  # BaseException: wait_for does not retry it
    host = "debhost" if vm == PRIMARY else "sbhost"
    stall = labkit.guest_stall(d.tmp / f"agent-{host}" / f"{vm}.serial")
    if stall:
        pytest.fail(f"VM {vm}: its kernel stalled: {stall}")
    return True


def isolation(d, host, name):
    """What the standby agent reads in its VM's /proc for the container's init."""
    c = next((c for h in d.vcr.status()["hosts"] if h["name"] == host
              for c in h.get("containers") or [] if c["name"] == name), None) or {}
    return c.get("isolation") if c.get("privileged") is False else None


UNPRIVILEGED_MAP = "0 100000 65536"


def test_warm_container_is_built_from_the_delivered_image(rig):
    # Its nginx answers (the fixture) a moment before the agent's reply to the create
    # reaches the server: an unprivileged container's first create (its image's shifted
    # copy) showed 'provisioning' then.
    labkit.wait_for("the warm container running in the server's view",
                    lambda: service(rig)["standby"]["container_state"] == "running", 30)
    body = http(CT_ADDR, "/")
    assert "vcr-debian container: nginx" in body, body
    iso = labkit.wait_for("the warm container's isolation", lambda: isolation(rig, STANDBY, CT),
                          30)
    assert iso["uid_map"] == UNPRIVILEGED_MAP and iso["seccomp"] == 2, iso


def test_kill9_of_the_debian_primary_recovers_its_latest_data(rig, record_property):
    d = rig
    stamp = f"version 2, written at {time.time():.3f}\n"
    assert http(P_ADDR, "/data/site/index.html", "PUT", stamp) is not None
    assert http(P_ADDR, "/data/site/index.html") == stamp
    # Redis: keys written just before the kill; each SET is answered once its AOF
    # record is fsync'd (appendfsync always) to the volume.
    d.kv_values = {f"row:{i}": f"{i}-{stamp.strip()}" for i in range(KV_KEYS)}
    replies = redis(P_ADDR, *(("SET", k, v) for k, v in d.kv_values.items()))
    assert replies == "+OK\r\n" * KV_KEYS, replies
    d.kv_killed_ms = labkit.now_ms()
    since = d.vcr.last_event_id()
    pid = d.vcr.vm(PRIMARY)["pid"]
    killed = labkit.now_ms()
    os.kill(pid, signal.SIGKILL)
    labkit.wait_for(f"{SERVICE} served by its standby",
                    lambda: service(d)["state"] == "recovered", RECOVERY_TIMEOUT, interval=0.5)
    answer = labkit.dig(f"{SERVICE}.vcr.lab")
    assert answer == [CT_ADDR], answer
    # The client follows the name and gets the page as the primary last wrote it.
    got = labkit.wait_for("the changed page from the container",
                          lambda: http(answer[0], "/data/site/index.html"), 60, interval=0.5)
    assert got == stamp, got
    assert http(P_ADDR, "/", timeout=2) is None  # the primary is gone (fenced)
    s = service(d)
    data = s.get("data") or {}
    assert data.get("age_ms") is not None and 0 <= data["age_ms"] < 60000, s
    phases = [e for e in d.vcr.events(since) if e["kind"] in ("recovery", "data_copy")]
    record_property("kill_to_recovered_ms", labkit.now_ms() - killed)
    record_property("data_age_ms", data["age_ms"])
    print(f"kill -9 -> recovered with the page: {labkit.now_ms() - killed} ms; "
          f"data age {data['age_ms']} ms; {len(phases)} recovery events")


def test_redis_rows_are_in_the_cold_container_after_kill9(rig, record_property):
    """The same kill -9 (test above) failed the Redis service: its COLD container, made at
    recovery in the Debian standby VM from the delivered ct-redis image, got the kvdata
    volume as the VM left it at /var/lib/redis (the copy given the image's redis owner)
    and serves every key written before the kill."""
    d = rig
    labkit.wait_for(f"{KV} served by its standby",
                    lambda: service(d, KV)["state"] == "recovered", RECOVERY_TIMEOUT,
                    interval=0.5)
    answer = labkit.dig(f"{KV}.vcr.lab")
    assert answer == [KV_ADDR], answer
    keys = sorted(d.kv_values)
    got = labkit.wait_for("Redis in the cold container",
                          lambda: redis(answer[0], *(("GET", k) for k in keys)), 60,
                          interval=0.5)
    want = "".join(f"${len(d.kv_values[k])}\r\n{d.kv_values[k]}\r\n" for k in keys)
    assert got == want, got
    # The container's Redis writes to the copy too (its AOF is its own: not read-only).
    assert redis(answer[0], ("SET", "after", "recovery"), ("DBSIZE",)) == \
        f"+OK\r\n:{KV_KEYS + 1}\r\n"
    s = service(d, KV)
    assert s["standby"]["mode"] == "cold", s
    tl = {e["phase"]: e for e in s["recovery"]["timeline"]}
    copied, attached = tl["data_copied"], tl["data_attached"]
    # A VM failure: the copy is the volume as the dead VM left it, taken after it died.
    assert copied["source"] == "primary" and copied["method"] == "file", copied
    assert copied["taken_ms"] >= d.kv_killed_ms, (copied, d.kv_killed_ms)
    assert attached["path"] == "/var/lib/redis" and attached["data_age_ms"] == 0, attached
    # The root, appendonlydir and its 3 files (at least) were the VM's redis's (101:103), now the
    # image's (100:101); lost+found stays root's.
    assert attached["owner_changed"] >= 5, attached
    assert s["data"]["age_ms"] == 0, s["data"]
    record_property("kv_timeline", s["recovery"]["timeline"])
    print(f"redis: {KV_KEYS} keys in the cold container; data age {attached['data_age_ms']} ms; "
          f"timeline {[(e['phase'], e.get('elapsed_ms')) for e in s['recovery']['timeline']]}")


def test_redis_container_migrates_with_its_aof_volume(rig, record_property):
    """The cold Redis container of the test above (its data volume attached, Redis's AOF on
    it, a key written there after the recovery) is migrated live to the second Debian
    standby VM: the volume is packed after the final dump (consistent with the dumped
    process), copied, installed and mounted there before the restore; Redis, restored
    with its open AOF, serves every key written before the migration and takes writes."""
    d = rig
    labkit.wait_for(f"the standby agent of {STANDBY2}", lambda: alive(d, STANDBY2) and any(
        h["name"] == STANDBY2 and h["state"] == "connected" for h in d.vcr.status()["hosts"]),
        BOOT_TIMEOUT, interval=1)
    assert redis(KV_ADDR, ("SET", "before", "migration")) == "+OK\r\n"
    since = d.vcr.last_event_id()
    r = d.vcr.run("container", "migrate", STANDBY, KV_CT, "--to", STANDBY2, "--json",
                  timeout=900)
    out = json.loads(r.stdout) if r.stdout.strip() else {}
    assert r.returncode == 0 and out.get("ok"), (r.returncode, out, r.stderr)
    data = out["data"]
    assert data and data["path"] == "/var/lib/redis" and data["bytes"] > 0, out
    assert data["raw_bytes"] == 32 << 20, data  # the 32 MiB kvdata volume
    names = [p["phase"] for p in out["phases"]]
    for p in ("space", "dump", "copy", "data_export", "data_copy", "data_install", "restore"):
        assert p in names, names
    # The container answers from the second VM at the same address, with every key.
    keys = sorted(d.kv_values) + ["after", "before"]
    values = dict(d.kv_values, after="recovery", before="migration")
    got = labkit.wait_for("Redis in the migrated container",
                          lambda: redis(KV_ADDR, *(("GET", k) for k in keys)), 60, interval=0.5)
    want = "".join(f"${len(values[k])}\r\n{values[k]}\r\n" for k in keys)
    assert got == want, got
    assert redis(KV_ADDR, ("SET", "after", "migration"), ("DBSIZE",)) == \
        f"+OK\r\n:{KV_KEYS + 2}\r\n"
    def state_on(host):
        return next((c["state"] for h in d.vcr.status()["hosts"] if h["name"] == host
                     for c in h.get("containers") or [] if c["name"] == KV_CT), None)
    labkit.wait_for(f"{STANDBY2} to report {KV_CT} running",
                    lambda: state_on(STANDBY2) == "running", 30, interval=0.5)
    labkit.wait_for(f"{KV_CT} gone from {STANDBY}", lambda: state_on(STANDBY) is None, 30,
                    interval=0.5)
    # Restored unprivileged, with its volume (the copy's owners in its range again).
    iso = labkit.wait_for(f"{KV_CT}'s isolation on {STANDBY2}",
                          lambda: isolation(d, STANDBY2, KV_CT), 30)
    assert iso["uid_map"] == UNPRIVILEGED_MAP and iso["seccomp"] == 2, iso
    journal = [e["detail"]["phase"] for e in d.vcr.events(since) if e["kind"] == "migration"]
    assert "done" in journal, journal
    for k in ("total_ms", "downtime_ms", "pre_bytes", "final_bytes"):
        record_property(k, out[k])
    record_property("data_bytes", data["bytes"])
    print(f"redis migration with its volume: total {out['total_ms']} ms, downtime "
          f"{out['downtime_ms']} ms, images {out['pre_bytes']} + {out['final_bytes']} B, "
          f"volume {data['raw_bytes']} B ({data['alloc_bytes']} B in use) packed to "
          f"{data['bytes']} B; phases {[(p['phase'], p['ms']) for p in out['phases']]}")
