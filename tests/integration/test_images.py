"""Container images delivered by the product (docs/server.md "Container images",
docs/agent.md "Container images"): the server serves rootfs tarballs named in its
`images:` on `images_listen` (the lab bridge's address); a warm service whose
`standby.image` names one gets its container provisioned in a real standby VM
(initrd-standby.img, LXC 5.0.2, TCG): the standby agent downloads the tarball,
checks its SHA-256, keeps it in /var/lib/vcr/images and unpacks it once as the
overlay's lower dir; the container runs the image's `cmd`.

The image is made here: busybox-static from the lab's image cache, a marker page,
`cmd` = busybox httpd.  A second image names the same file with a wrong SHA-256:
its container is refused (code image_checksum), nothing is started or kept.  When
another build has left Debian's ct-nginx image in /var/cache/vcr-lab/debian, it is
tried too, and its timings printed.

Its container then migrates (CRIU) to a second standby VM whose cache is empty.

`vcr container create --image NAME` makes a container from an image no service names
(an unknown name and a checksum mismatch are refused, nothing started); `vcr image
prune` keeps that image while the container exists, removes it once the container is
gone, and keeps the images configured services name.

The primaries of these services never run (their host never connects, boot grace
0): provisioning works while a primary serves, which a never-failing service does.

Image: `make image` (the standby agent from this build)."""
import glob
import hashlib
import io
import json
import os
import tarfile
import time
import uuid

import pytest

import labkit

VM, VM_INDEX, VM_ADDR = "sb21", 0, "10.77.0.21"
VM2, VM2_INDEX, VM2_ADDR = "sb22", 1, "10.77.0.22"  # migration target: its cache starts empty
GOOD, GOOD_CT, GOOD_ADDR = "bbweb", "bbwebct", "10.77.0.35"
BAD, BAD_CT, BAD_ADDR = "bbbad", "bbbadct", "10.77.0.36"
NGINX, NGINX_CT, NGINX_ADDR = "nginx", "nginxct", "10.77.0.37"
EXTRA, EXTRA_CT, EXTRA_ADDR = "bbextra", "bbextract", "10.77.0.38"  # no service names it
NGINX_DIR = "/var/cache/vcr-lab/debian"
BOOT_TIMEOUT = 300  # TCG: a standby guest copies its initramfs, then LXC checks
# Download + SHA-256 + unpack + LXC start of a small image under TCG; a provisioning
# order may take up to 120 s (RECOVERY_CONTAINER_ORDER_MS) and is retried after 5 s.
PROVISION_TIMEOUT = 240


def busybox_static():
    env = labkit.lab_env()
    cache = os.path.dirname(env["VCR_LAB_KERNEL"])
    found = sorted(glob.glob(os.path.join(cache, "extract", "busybox-static_*", "bin", "busybox")))
    if not found:
        pytest.skip("no busybox-static in the lab image cache: run `make image`")
    return found[-1]


def make_busybox_image(path, marker):
    """A rootfs tarball: busybox as /bin/busybox and /bin/sh, the dirs LXC mounts on,
    and /www/index.html holding marker.  Owned by root, as a real image is."""
    def add(tar, name, kind, data=b"", mode=0o755, link=""):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid = kind, mode, 0, 0
        info.mtime = int(time.time())
        if link:
            info.linkname = link
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    with open(busybox_static(), "rb") as f:
        busybox = f.read()
    with tarfile.open(path, "w:gz") as tar:
        for d in ("bin", "dev", "proc", "sys", "tmp", "etc", "run", "www"):
            add(tar, d, tarfile.DIRTYPE)
        add(tar, "bin/busybox", tarfile.REGTYPE, busybox)
        add(tar, "bin/sh", tarfile.SYMTYPE, link="busybox")
        add(tar, "www/index.html", tarfile.REGTYPE, marker.encode(), mode=0o644)
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def service(name, container, address, image, primary_address):
    s = labkit.service_entry(name, "node9", f"{name}-primary", primary_address, "warm", VM,
                             container, address,
                             check={"type": "http", "path": "/", "interval_ms": 500,
                                    "timeout_ms": 400, "failures": 3, "boot_grace_ms": 0})
    s["standby"]["image"] = image
    return s


def standby_host(d, vm=VM):
    return next((h for h in d.vcr.status()["hosts"]
                 if h["name"] == vm and h.get("role") == "standby"
                 and h["state"] == "connected"), None)


def container(d, name, vm=VM):
    h = standby_host(d, vm)
    return next((c for c in (h or {}).get("containers") or [] if c["name"] == name), None)


def provisions(d, svc, since=0, with_ts=False):
    return [dict(e["detail"], ts_ms=e["ts_ms"]) if with_ts else e["detail"]
            for e in d.vcr.events(since)
            if e["kind"] == "provision" and e["detail"].get("service") == svc]


def cached(sha, suffix=".tar.gz", vm_addr=VM_ADDR):
    """Whether the standby guest's image cache holds SHA+suffix (its lab-only httpd,
    lab/guest/init, serves /var/lib/vcr/images as /vcr-images)."""
    r = labkit.ns_run(["curl", "-s", "-o", "/dev/null", "-m", "30", "-w", "%{http_code}",
                       f"http://{vm_addr}/vcr-images/{sha}{suffix}"], timeout=40)
    assert r.stdout in ("200", "404"), f"guest httpd answered {r.stdout!r} {r.stderr!r}"
    return r.stdout == "200"


def cached_sha256(sha, vm_addr=VM_ADDR):
    r = labkit.ns_run(["sh", "-c", f"curl -s -f -m 60 http://{vm_addr}/vcr-images/{sha}.tar.gz"
                       " | sha256sum"], timeout=70)
    out = r.stdout.split()
    return out[0] if r.returncode == 0 and out else None


def nginx_image():
    base = os.path.join(NGINX_DIR, "ct-nginx")
    if not all(os.path.exists(base + ext) for ext in (".tar.gz", ".json")):
        return None
    with open(base + ".json") as f:
        meta = json.load(f)
    return {"name": NGINX, "file": base + ".tar.gz", "sha256": meta["sha256"],
            "cmd": meta.get("cmd")}


@pytest.fixture(scope="module")
def rig(lab, tmp_path_factory):
    from conftest import Daemons
    tmp = tmp_path_factory.mktemp("images")
    d = Daemons(tmp)
    marker = f"vcr image marker {uuid.uuid4()}"
    tarball = str(tmp / "bbweb.tar.gz")
    sha = make_busybox_image(tarball, marker)
    wrong = hashlib.sha256(b"not the image").hexdigest()
    extra_marker = f"vcr extra image {uuid.uuid4()}"
    extra_tarball = str(tmp / "bbextra.tar.gz")
    extra_sha = make_busybox_image(extra_tarball, extra_marker)
    images = [{"name": GOOD, "file": tarball, "sha256": sha,
               "cmd": "/bin/busybox httpd -f -p 80 -h /www"},
              {"name": BAD, "file": tarball, "sha256": wrong},
              {"name": EXTRA, "file": extra_tarball, "sha256": extra_sha,
               "cmd": "/bin/busybox httpd -f -p 80 -h /www"}]
    services = [service(GOOD, GOOD_CT, GOOD_ADDR, GOOD, "10.77.0.45"),
                service(BAD, BAD_CT, BAD_ADDR, BAD, "10.77.0.46")]
    d.config = {"dns": True, "images": images, "services": services}
    d.server(heartbeat_ms=500, host_timeout_ms=5000, **d.config)
    # ct-nginx needs room: the standby VM's root is a tmpfs (image + unpacked rootfs).
    vm = labkit.standby_vm_entry(VM, VM_INDEX, VM_ADDR,
                                 memory_mb=1024 if nginx_image() else 256)
    vm2 = labkit.standby_vm_entry(VM2, VM2_INDEX, VM2_ADDR, memory_mb=256)
    if vm is None or vm2 is None:
        pytest.skip("no initrd-standby.img: run `make image`")
    d.agent("host1", [vm, vm2])
    for name in (VM, VM2):
        d.wait_vm_state(name, "running", BOOT_TIMEOUT)
        labkit.wait_for(f"the standby agent of {name}", lambda n=name: standby_host(d, n),
                        BOOT_TIMEOUT)
    d.marker, d.sha, d.wrong, d.tarball = marker, sha, wrong, tarball
    d.extra_marker, d.extra_sha, d.extra_tarball = extra_marker, extra_sha, extra_tarball
    yield d
    reports = d.stop_all()
    assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)


def test_image_is_downloaded_verified_cached_and_served(rig, record_property):
    d = rig
    labkit.wait_for(f"container {GOOD_CT} running",
                    lambda: (container(d, GOOD_CT) or {}).get("state") == "running",
                    PROVISION_TIMEOUT)
    labkit.wait_for(f"http://{GOOD_ADDR}/ to answer the image's marker",
                    lambda: (labkit.http_get(GOOD_ADDR) or "").strip() == d.marker, 60)
    done = [p for p in provisions(d, GOOD) if p["ok"]]
    assert done and done[0]["action"] == "container_create", provisions(d, GOOD)
    img = done[0]["image"]
    assert img["name"] == GOOD and img["sha256"] == d.sha and img["fetched"], img
    assert img["bytes"] == os.path.getsize(d.tarball), img
    for k in ("download_ms", "verify_ms", "unpack_ms"):
        record_property(k, img[k])
    record_property("order_ms", done[0]["ms"])
    print(f"busybox image ({img['bytes']} bytes) in the guest: download {img['download_ms']} ms, "
          f"verify {img['verify_ms']} ms, unpack {img['unpack_ms']} ms, LXC create+start "
          f"{done[0].get('create_start_ms')} ms; whole order {done[0]['ms']} ms")
    # The cache holds the verified tarball, byte for byte, and no temporary file.
    assert cached_sha256(d.sha) == d.sha
    assert cached(d.sha, ".rootfs/www/index.html")
    assert not cached(d.sha, ".tar.gz.tmp") and not cached(d.sha, ".rootfs.tmp/www/index.html")
    # The server's image listener served it once.
    served = [line for line in d.procs[0].log_text().splitlines()
              if f"image server: image `{GOOD}`" in line]
    assert len(served) == 1, served
    svc = next(s for s in d.vcr.json("services")["services"] if s["name"] == GOOD)
    assert svc["standby"]["container_state"] == "running", svc


def test_wrong_checksum_is_refused_and_nothing_kept(rig):
    d = rig
    failed = labkit.wait_for(f"a failed provisioning of {BAD_CT}",
                             lambda: [p for p in provisions(d, BAD) if not p["ok"]],
                             PROVISION_TIMEOUT)[0]
    assert failed["code"] == "image_checksum", failed
    err = failed["error"]
    for part in (f"image `{BAD}`", "checksum mismatch", f"expected SHA-256 {d.wrong}",
                 f"got {d.sha}", "nothing was started"):
        assert part in err, err
    print(f"refusal: {err}")
    svc = next(s for s in d.vcr.json("services")["services"] if s["name"] == BAD)
    assert "checksum mismatch" in (svc["standby"].get("provision_error") or ""), svc
    assert container(d, BAD_CT) is None
    assert labkit.http_get(BAD_ADDR, timeout=1) is None
    assert not cached(d.wrong) and not cached(d.wrong, ".tar.gz.tmp")
    assert not cached(d.wrong, ".rootfs/bin/busybox")
    # After image_checksum the server waits the longest backoff (60 s) between attempts.
    times = [p["ts_ms"] for p in provisions(d, BAD, with_ts=True) if not p["ok"]]
    assert all(b - a >= 55000 for a, b in zip(times, times[1:])), times


def test_cached_image_is_not_fetched_again(rig):
    d = rig
    labkit.wait_for(f"{GOOD_CT} running", lambda: (container(d, GOOD_CT) or {}).get("state")
                    == "running", PROVISION_TIMEOUT)
    since = d.vcr.last_event_id()
    gone = d.vcr.json("container", "destroy", VM, GOOD_CT)
    assert gone["result"] == "done"
    # Provisioning makes it again, from the cache.
    again = labkit.wait_for(f"{GOOD_CT} provisioned again",
                            lambda: [p for p in provisions(d, GOOD, since) if p["ok"]],
                            PROVISION_TIMEOUT)[0]
    assert again["image"]["cached"] and not again["image"]["fetched"], again
    print(f"re-created from the cache: order {again['ms']} ms")
    labkit.wait_for(f"http://{GOOD_ADDR}/ back", lambda: (labkit.http_get(GOOD_ADDR) or "")
                    .strip() == d.marker, 60)
    served = [line for line in d.procs[0].log_text().splitlines()
              if f"image server: image `{GOOD}`" in line]
    assert len(served) == 1, served


def test_container_create_names_an_image(rig):
    """vcr container create --image: the server's `images:` entry in the order; an
    unknown name and a checksum mismatch are refused with their reason."""
    d = rig
    r = d.vcr.run("container", "create", VM, "nosuchct", "--image", "nosuch", "--address",
                  "10.77.0.39")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "no image `nosuch` in the server's `images:`" in r.stderr, r.stderr
    assert f"known: {GOOD}, {BAD}, {EXTRA}" in r.stderr, r.stderr
    r = d.vcr.run("container", "create", VM, "badct2", "--image", BAD, "--address",
                  "10.77.0.39", timeout=200)
    assert r.returncode == 1, (r.stdout, r.stderr)
    for part in (f"image `{BAD}`", "checksum mismatch", f"expected SHA-256 {d.wrong}",
                 "nothing was started"):
        assert part in r.stderr, r.stderr
    assert container(d, "badct2") is None
    assert not cached(d.wrong)
    r = d.vcr.run("container", "create", VM, "x", "--image", EXTRA, "--template", "busybox",
                  "--address", "10.77.0.39")
    assert r.returncode == 2 and "--template and --image" in r.stderr, r.stderr
    assert not cached(d.extra_sha)
    r = d.vcr.run("container", "create", VM, EXTRA_CT, "--image", EXTRA, "--address",
                  EXTRA_ADDR, "--json", timeout=200)
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = json.loads(r.stdout)
    assert out["result"] == "done" and out["container"]["state"] == "running", out
    labkit.wait_for(f"http://{EXTRA_ADDR}/ to answer the extra image's marker",
                    lambda: (labkit.http_get(EXTRA_ADDR) or "").strip() == d.extra_marker, 60)
    assert cached_sha256(d.extra_sha) == d.extra_sha
    print(f"container from --image {EXTRA}: {out['ms']} ms")


def test_prune_removes_unused_images_and_keeps_used_ones(rig):
    d = rig
    labkit.wait_for(f"{EXTRA_CT} reported", lambda: container(d, EXTRA_CT), 30)

    def prune():
        r = d.vcr.run("image", "prune", VM, "--json", timeout=200)
        assert r.returncode == 0, (r.stdout, r.stderr)
        out = json.loads(r.stdout)
        return ({e["sha256"] for e in out["removed"]},
                {e["sha256"]: e["why"] for e in out["kept"]}, out)
    removed, kept, out = prune()
    # In use by its container (made by hand, no service names it): kept.
    assert d.extra_sha not in removed and kept.get(d.extra_sha) == \
        f"used by container {EXTRA_CT}", out
    assert kept.get(d.sha) == f"configured for service {GOOD}", out
    assert cached(d.extra_sha) and cached(d.extra_sha, ".rootfs/www/index.html")
    assert (labkit.http_get(EXTRA_ADDR) or "").strip() == d.extra_marker
    gone = d.vcr.json("container", "destroy", VM, EXTRA_CT)
    assert gone["result"] == "done"
    removed, kept, out = prune()
    assert removed == {d.extra_sha}, out
    assert [e["bytes"] for e in out["removed"]] == [os.path.getsize(d.extra_tarball)], out
    assert kept.get(d.sha) == f"configured for service {GOOD}", out
    # The refused image left only its lock: no image, so not reported as kept.
    assert d.wrong not in kept and d.wrong not in removed, out
    assert not cached(d.extra_sha) and not cached(d.extra_sha, ".rootfs/www/index.html")
    assert cached(d.sha) and cached(d.sha, ".rootfs/www/index.html")
    # The service's container still serves from its kept image.
    assert (labkit.http_get(GOOD_ADDR) or "").strip() == d.marker
    r = d.vcr.run("image", "prune", VM)
    assert r.returncode == 0 and "0 image(s) removed" in r.stdout, (r.stdout, r.stderr)
    print(f"prune: {out}")


def test_image_container_migrates_to_a_vm_without_the_image(rig, record_property):
    """Live migration (CRIU, docs/migration.md) of the image's container to the second
    standby VM, whose cache is empty: the restore order carries the image, the target
    fetches and checks it first, and the container's /.vcr-init (its cmd) travels in its
    overlay delta."""
    d = rig
    labkit.wait_for(f"{GOOD_CT} running on {VM}", lambda: (container(d, GOOD_CT) or {})
                    .get("state") == "running", PROVISION_TIMEOUT)
    assert not cached(d.sha, vm_addr=VM2_ADDR)
    r = d.vcr.run("container", "migrate", VM, GOOD_CT, "--to", VM2, "--json", timeout=900)
    out = json.loads(r.stdout or "{}")
    assert r.returncode == 0 and out.get("ok"), (r.stdout, r.stderr)
    labkit.wait_for(f"http://{GOOD_ADDR}/ to answer from {VM2}",
                    lambda: (labkit.http_get(GOOD_ADDR) or "").strip() == d.marker, 60)
    labkit.wait_for(f"{VM2} to report {GOOD_CT} running", lambda: (
        container(d, GOOD_CT, VM2) or {}).get("state") == "running", 30)
    labkit.wait_for(f"{VM} to report it gone", lambda: container(d, GOOD_CT) is None, 30)
    assert cached_sha256(d.sha, VM2_ADDR) == d.sha
    record_property("migration_total_ms", out["total_ms"])
    print(f"migration with the image fetched on the target: total {out['total_ms']} ms, "
          f"downtime {out['downtime_ms']} ms, phases {out['phases']}")


def test_debian_nginx_image(rig, record_property):
    """ct-nginx (another build's Debian rootfs, ~26 MB) through the same path: the
    server restarted with it added to `images:` and a service naming it."""
    d = rig
    img = nginx_image()
    if img is None:
        pytest.skip(f"no ct-nginx image in {NGINX_DIR}")
    d.procs[0].stop()  # kept in procs: stop_all still checks its log
    config = dict(d.config)
    config["images"] = d.config["images"] + [img]
    config["services"] = d.config["services"] + [
        service(NGINX, NGINX_CT, NGINX_ADDR, NGINX, "10.77.0.47")]
    since = 0
    d.server(heartbeat_ms=500, host_timeout_ms=5000, log="server-nginx", **config)
    d.procs.insert(0, d.procs.pop())
    t0 = time.monotonic()
    done = labkit.wait_for("ct-nginx provisioned", lambda: [
        p for p in provisions(d, NGINX, since) if p["ok"]], 2 * PROVISION_TIMEOUT, interval=1)[0]
    body = labkit.wait_for(f"nginx answering at {NGINX_ADDR}",
                           lambda: labkit.http_get(NGINX_ADDR, timeout=5), 120, interval=1)
    served_s = time.monotonic() - t0
    im = done["image"]
    for k in ("download_ms", "verify_ms", "unpack_ms"):
        record_property(f"nginx_{k}", im[k])
    record_property("nginx_order_ms", done["ms"])
    print(f"ct-nginx ({im['bytes']} bytes): download {im['download_ms']} ms, verify "
          f"{im['verify_ms']} ms, unpack {im['unpack_ms']} ms, LXC create+start "
          f"{done.get('create_start_ms')} ms; order {done['ms']} ms; "
          f"nginx answered {served_s:.1f} s after the server started: {body[:80]!r}")
    failures = [p for p in provisions(d, NGINX, since) if not p["ok"]]
    print(f"failed attempts before: {failures}")
    assert "nginx" in body.lower()
