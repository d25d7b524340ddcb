"""Container migration between two standby VMs (docs/migration.md), end to end: two
TCG standby guests (initrd-standby.img: LXC + CRIU) under one host agent, a container
on the first serving HTTP on its own lab address, moved with `vcr container migrate`
(CRIU pre-dump, final dump, images agent to agent over the stream, restore) and back
with `--copy server` (the images through the server in chunks); it answers at the
same address from the second VM, its processes kept their memory (the template's
in-memory counter went on instead of starting again at 1), and nothing is left on
the first VM.  The container is unprivileged (`--unprivileged`, docs/security.md
"Standby containers"): CRIU restores it in its user namespace with its seccomp filter.

The same two standby VMs then serve a warm service whose standby host is lost (issue 13,
items 5 and 6): its containers read `unknown`, a recovery onto it fails at once saying
why when no fallback is configured and falls over to the fallback host when one is, and
a recovery that fails at the port phase keeps the last attempt's cause, once.

Image: `make image` (lab/build-image --standby --standby-agent BUILD/src/agent/vcr-agent)."""
import json
import os
import signal
import subprocess
import threading
import time

import pytest

import labkit

SB = [("sb21", 0, "10.77.0.21"), ("sb22", 1, "10.77.0.22")]
CT, SERVICE, CT_ADDR = "mig1", "mig", "10.77.0.35"
UNPRIVILEGED_MAP = "0 100000 65536"  # its init's uid_map (docs/security.md)
BOOT_TIMEOUT = 300
# A primary on its own host agent (booted with the standby VMs, used by the lost-standby
# test only): name, tap index, address; its warm container and where it goes.
WEB, WEB_INDEX, WEB_ADDR = "web6", 2, "10.77.0.16"
WEB_CT, WEB_CT_ADDR = "web6-c", "10.77.0.36"
PORT_TIMEOUT_MS = 4000  # the recovery's port deadline (server default 60000)


def standby_vm(name, index, address):
    vm = labkit.standby_vm_entry(name, index, address, memory_mb=512)
    if vm is None:
        pytest.skip(f"no {labkit.standby_initrd()}: run `make image-asan`")
    return vm


def standby_host(d, name):
    return next((h for h in d.vcr.status()["hosts"]
                 if h["name"] == name and h.get("role") == "standby"
                 and h["state"] == "connected"), None)


def container_on(d, host, name=CT):
    h = standby_host(d, host)
    return next((c for c in (h or {}).get("containers") or [] if c["name"] == name), None)


def counter():
    text = (labkit.http_get(CT_ADDR, "/count") or "").strip()
    return int(text) if text.isdigit() else None


@pytest.fixture(scope="module")
def pair(lab, tmp_path_factory):
    from conftest import Daemons
    d = Daemons(tmp_path_factory.mktemp("migration"))
    d.srv = d.server(heartbeat_ms=500, host_timeout_ms=5000)
    d.agent("host1", [standby_vm(*sb) for sb in SB])
    d.agent("host2", [labkit.vm_entry(WEB, WEB_INDEX, WEB_ADDR)])
    for name, _, _ in SB:
        d.wait_vm_state(name, "running", BOOT_TIMEOUT)
    for name, _, _ in SB:
        labkit.wait_for(f"the standby agent of {name}", lambda n=name: standby_host(d, n),
                        BOOT_TIMEOUT)
    yield d
    reports = d.stop_all()
    assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)


def test_bad_migrations_are_refused(pair):
    d = pair
    r = d.vcr.run("container", "migrate", "sb21", "nosuch", "--to", "sb22")
    assert r.returncode != 0 and "no container `nosuch`" in r.stderr, r.stderr
    r = d.vcr.run("container", "migrate", "sb21", "nosuch", "--to", "sb21")
    assert r.returncode != 0 and "another standby host" in r.stderr, r.stderr
    r = d.vcr.run("container", "migrate", "sb21", "nosuch", "--to", "host1")
    assert r.returncode != 0 and "no standby host `host1`" in r.stderr, r.stderr
    r = d.vcr.run("container", "migrate", "sb21", "nosuch")
    assert r.returncode == 2 and "--to" in r.stderr


def test_standby_agents_fill_criu_kernel_cache_at_start(pair):
    """Each standby agent runs `criu check` once at start, so that CRIU's kernel probes
    (~0.2 s under TCG) are cached before a migration's restore, inside the downtime,
    would pay them (docs/migration.md "Where the 2 s of downtime go")."""
    line = "criu: kernel features probed and cached for this boot"
    for name, _, _ in SB:
        console = pair.tmp / "agent-host1" / f"{name}.serial"
        labkit.wait_for(f"{name}'s agent to say `{line}`",
                        lambda c=console: line in c.read_text(errors="replace"), 120)
        # ... and that CRIU locks the network through nftables, in its own process (no
        # iptables-restore execs inside the downtime): the migrations below use it.
        said = [x for x in console.read_text(errors="replace").splitlines() if line in x]
        assert "network lock: nftables" in said[-1], said[-1]


def test_container_moves_with_its_memory_and_address(pair, record_property):
    d = pair
    create = d.vcr.json("container", "create", "sb21", CT, "--address", f"{CT_ADDR}/24",
                        "--service", SERVICE, "--unprivileged")
    assert create["result"] == "done", create
    assert create["container"]["isolation"]["uid_map"] == UNPRIVILEGED_MAP, create
    labkit.wait_for(f"{CT} to answer HTTP",
                    lambda: (labkit.http_get(CT_ADDR) or "").strip() == SERVICE, 60)
    labkit.wait_for("its counter to pass 5", lambda: (counter() or 0) > 5, 60)

    # A client polls the service all along; the longest gap is the downtime it saw.
    polls, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            t = time.monotonic()
            polls.append((t, (labkit.http_get(CT_ADDR, timeout=0.3) or "").strip() == SERVICE))
            time.sleep(0.05)
    poller = threading.Thread(target=poll)
    poller.start()
    since = d.vcr.last_event_id()
    c0 = counter()
    try:
        r = d.vcr.run("container", "migrate", "sb21", CT, "--to", "sb22", "--json", timeout=900)
    finally:
        labkit.wait_for(f"{CT} to answer after the migration",
                        lambda: (labkit.http_get(CT_ADDR) or "").strip() == SERVICE, 60)
        # The client (0.3 s timeout) may need a few more polls: a restored container's
        # first answers are slow under TCG (its memory is faulted back in).
        try:
            labkit.wait_for("the polling client to get an answer again",
                            lambda: bool(polls) and polls[-1][1], 30)
        finally:
            stop.set()
            poller.join(10)
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["ok"], out
    assert out["from"] == "sb21" and out["to"] == "sb22"
    assert out["final_bytes"] > 0 and out["downtime_ms"] > 0
    # Both images went agent to agent (docs/migration.md "The stream"), whole.
    assert out["copy_method"] == "stream" and out["copy_mb_s"] > 0, out
    copies = {p["phase"]: p for p in out["phases"] if p["phase"] in ("copy_pre", "copy")}
    assert set(copies) == {"copy_pre", "copy"}, out["phases"]
    assert all(p["method"] == "stream" for p in copies.values()), out["phases"]
    # pre.tar was checked and unpacked on the target before the final dump (unpack_pre),
    # so the restore in the downtime unpacked only final.tar; the agents' own times ride
    # in the phases (docs/migration.md).
    names = [p["phase"] for p in out["phases"]]
    assert names.index("copy_pre") < names.index("unpack_pre") < names.index("dump"), names
    by_name = {p["phase"]: p for p in out["phases"]}
    assert by_name["unpack_pre"].get("unpack_ms", -1) >= 0, out["phases"]
    assert "dump_ms" in by_name["dump"] and "restore_ms" in by_name["restore"], out["phases"]
    for k in ("total_ms", "downtime_ms", "pre_bytes", "final_bytes", "copy_mb_s"):
        record_property(k, out[k])
    good = [t for t, ok in polls if ok]
    gap = max((b - a for a, b in zip(good, good[1:])), default=0.0)
    print(f"migration: total {out['total_ms']} ms, downtime {out['downtime_ms']} ms "
          f"(client: longest gap between answers {gap:.2f} s over {len(polls)} polls, "
          f"{len(polls) - len(good)} failed), pre-dump {out['predump']} {out['pre_bytes']} B, "
          f"final {out['final_bytes']} B, phases {out['phases']}")

    # The client saw it answer before the switch and again after its downtime.
    bad = [i for i, (_, ok) in enumerate(polls) if not ok]
    assert polls and any(ok for _, ok in polls[:5]), polls[:5]
    assert not bad or any(ok for _, ok in polls[bad[-1]:]), (len(polls), bad[:3], bad[-3:])
    # The processes went on: the in-memory counter did not start again at 1, and it still
    # counts (a stalled or frozen restore would keep its value).
    c1 = counter()
    assert c1 is not None and c1 >= c0, f"counter {c0} -> {c1}: the container was restarted"
    labkit.wait_for(f"the counter to go on past {c1}", lambda: (counter() or 0) > c1, 30)
    # It runs on sb22 now and is gone from sb21.
    labkit.wait_for("sb22 to report the container running", lambda: (
        (container_on(d, "sb22") or {}).get("state") == "running"), 30)
    # Restored as it was: unprivileged, in its user namespace, its seccomp filter on.
    moved = labkit.wait_for("sb22 to report its isolation", lambda: (
        container_on(d, "sb22") or {}).get("isolation"), 30)
    assert container_on(d, "sb22")["privileged"] is False
    assert moved["uid_map"] == UNPRIVILEGED_MAP and moved["seccomp"] == 2, moved
    labkit.wait_for("sb21 to report it gone", lambda: container_on(d, "sb21") is None, 30)
    phases = [e["detail"]["phase"] for e in d.vcr.events(since) if e["kind"] == "migration"]
    for p in ("started", "dump", "copy", "restore", "port_open", "destroy", "done"):
        assert p in phases, phases

    # And back: the restored container is checkpointed again; this time the images go
    # through the server in chunks, as asked (the benchmark's baseline).
    r = d.vcr.run("container", "migrate", "sb22", CT, "--to", "sb21", "--copy", "server",
                  "--json", timeout=900)
    back = json.loads(r.stdout)
    assert r.returncode == 0 and back["ok"], back
    assert back["copy_method"] == "server", back
    assert all(p["method"] == "server" for p in back["phases"]
               if p["phase"] in ("copy_pre", "copy")), back["phases"]
    labkit.wait_for(f"{CT} to answer from sb21 again",
                    lambda: (labkit.http_get(CT_ADDR) or "").strip() == SERVICE, 60)
    c2 = counter()
    assert c2 is not None and c2 >= c1
    labkit.wait_for(f"the counter to go on past {c2}", lambda: (counter() or 0) > c2, 30)
    back_iso = labkit.wait_for("sb21 to report its isolation again", lambda: (
        container_on(d, "sb21") or {}).get("isolation"), 30)
    assert back_iso["uid_map"] == UNPRIVILEGED_MAP and back_iso["seccomp"] == 2, back_iso
    gone = d.vcr.json("container", "destroy", "sb21", CT)
    assert gone["result"] == "done"


# --- a lost standby host (issue 13, items 5 and 6; docs/recovery.md) ---

# --- hostile migration archives (docs/security.md, "Root actions") ---

EVIL, EVIL_ADDR = "evil", "10.77.0.39"
# A file outside the migration directory of the target VM whose appearance the server
# can see: the image cache's files are listed by `vcr image prune`.
VICTIM_SHA = "e" * 64
VICTIM = f"/var/lib/vcr/images/{VICTIM_SHA}.tar.gz"


def tar_of(path, members):
    """A tar file of members (name, kind, data-or-target), made by tarfile so that any
    name goes in as it is (`..`, absolute)."""
    import io
    import tarfile
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as t:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(value)
                t.addfile(info, io.BytesIO(value))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = value
                t.addfile(info)
    return str(path)


GOOD_PRE = [("pre/inventory.img", "file", b"x")]
GOOD_FINAL = [("final/inventory.img", "file", b"not a CRIU image"),
              ("delta/etc/hostname", "file", b"evil\n"), ("config", "file", b"# lxc\n")]


def migrate_from_forged_source(d, src, pre, final, stream="none"):
    """`vcr container migrate SRC evil --to sb22`, SRC being a forged standby agent (a
    compromised standby VM with a certificate of the deployment) whose archives are
    pre and final.  Returns the CLI's result and what the forged agent was asked.
    stream: its answer to stream_send (link_peer.py): `none` (an unknown order: the
    server copies through itself) or `wrong-token`."""
    pki = os.path.join(str(d.tmp), "pki")
    cert = labkit.lab_cert(pki, src)
    peer = subprocess.Popen(labkit.in_ns([
        "/usr/bin/python3", os.path.join(os.path.dirname(__file__), "link_peer.py"), "source",
        f"{labkit.lab_env()['VCR_LAB_BRIDGE_ADDR']}:{labkit.SERVER_AGENT_PORT}", src, EVIL,
        EVIL_ADDR, "90", "--pre", pre, "--final", final, "--cert", cert["cert"],
        "--key", cert["key"], "--stream", stream]), stdout=subprocess.PIPE, text=True)
    try:
        labkit.wait_for(f"the forged standby agent {src}", lambda: container_on(d, src, EVIL),
                        30)
        r = d.vcr.run("container", "migrate", src, EVIL, "--to", "sb22", timeout=200)
    finally:
        peer.terminate()
        out, _ = peer.communicate(timeout=30)
    return r, json.loads(out.strip().splitlines()[-1]) if out.strip() else {}


def test_hostile_migration_archives_are_refused(pair, tmp_path):
    """A standby VM whose agent is someone else's sends the target archives of its own
    making: the target's agent checks every member before unpacking (nothing is
    extracted from a refused archive) and never writes or reads through a link.  The
    symlink trick: a pre.tar that plants `final.tar` as a link to a file outside; on an
    agent that unpacked it beside the archives, the next migration wrote final.tar
    through it (here: into the image cache, which `vcr image prune` lists)."""
    d = pair
    final = tar_of(tmp_path / "final.tar", GOOD_FINAL)
    cases = [
        ("symlink trick", tar_of(tmp_path / "trick.tar", GOOD_PRE + [
            ("final.tar", "symlink", VICTIM)]), final, "member `final.tar` is outside pre/"),
        ("`..`", tar_of(tmp_path / "pre.tar", GOOD_PRE), tar_of(tmp_path / "dotdot.tar", [
            ("final/../../../../etc/vcr-evil", "file", b"x")] + GOOD_FINAL),
         "member `final/../../../../etc/vcr-evil`: an absolute name, a `..` component"),
        ("absolute", tar_of(tmp_path / "pre.tar", GOOD_PRE), tar_of(tmp_path / "abs.tar", [
            ("/etc/vcr-evil", "file", b"x")] + GOOD_FINAL), "member `/etc/vcr-evil`: an absolute"),
        ("hard link", tar_of(tmp_path / "pre.tar", GOOD_PRE), tar_of(tmp_path / "hard.tar", [
            ("final/shadow", "hardlink", "/etc/shadow")] + GOOD_FINAL),
         "member `final/shadow` is a hard link (to `/etc/shadow`)"),
    ]
    for i, (what, pre, fin, says) in enumerate(cases):
        # One forged host per attempt: none waits for the last one to be seen gone.
        r, peer = migrate_from_forged_source(d, f"sbx{i}", pre, fin)
        print(what, r.returncode, r.stdout, r.stderr, peer)
        assert r.returncode != 0 and says in r.stderr, (what, r.stderr)
        # It went that far: the target's stream_receive answered, the source refused
        # stream_send as unknown, and the server fell back to the chunks.
        assert "stream_send" in peer.get("orders", []), peer
        assert "container_image_read" in peer.get("orders", []), peer
        assert container_on(d, "sb22", EVIL) is None
    # A second migration after the symlink trick, with archives that pass the checks:
    # its final.tar goes where final.tar belongs, never to the file the link named.
    r, _ = migrate_from_forged_source(d, "sbx9", tar_of(tmp_path / "pre.tar", GOOD_PRE), final)
    assert r.returncode != 0  # not a CRIU image: the restore fails, but only there
    assert "criu" in r.stderr.lower() or "restore" in r.stderr, r.stderr
    r = d.vcr.run("image", "prune", "sb22", "--json", timeout=200)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    seen = [e["sha256"] for e in out["removed"] + out["kept"]]
    assert VICTIM_SHA not in seen, out
    assert container_on(d, "sb22", EVIL) is None


def test_stream_with_a_wrong_token_is_refused(pair, tmp_path):
    """The stream (docs/migration.md): a sender that does not hold the token the server
    gave the target (here a forged source one bit off) is refused by the real target
    agent on its first bytes (verdict 1), and the migration fails before anything
    stopped, saying so; the target has no container of that name."""
    d = pair
    r, peer = migrate_from_forged_source(d, "sbt0", tar_of(tmp_path / "pre.tar", GOOD_PRE),
                                         tar_of(tmp_path / "final.tar", GOOD_FINAL),
                                         stream="wrong-token")
    print(r.returncode, r.stdout, r.stderr, peer)
    assert peer.get("stream_status") == 1, peer  # STANDBY_STREAM_BAD_TOKEN from sb22
    assert r.returncode != 0 and "stream_send" in r.stderr, r.stderr
    orders = peer.get("orders", [])
    assert "container_image_read" not in orders, orders  # no fallback on a refusal
    assert orders.count("container_checkpoint") == 1, orders  # the pre-dump only
    assert container_on(d, "sb22", EVIL) is None


def host_entry(d, name):
    return next((h for h in d.vcr.status()["hosts"] if h["name"] == name), None)


def web_service(d):
    return next(s for s in d.vcr.json("services")["services"] if s["name"] == WEB)


def web_events(d, since):
    return [e for e in d.vcr.events(since)
            if e["kind"] == "recovery" and (e.get("detail") or {}).get("service") == WEB]


def restart_server(d, log, fallback):
    """The server again on its journal, now with service WEB: warm, standby.host sb21,
    standby.fallback_host sb22 when `fallback`; DNS switched in the lab's BIND9."""
    rc = d.srv.stop(timeout=30)
    assert rc == 0, f"vcr-server exited {rc} on SIGTERM"
    svc = labkit.service_entry(WEB, "host2", WEB, WEB_ADDR, "warm", "sb21", WEB_CT, WEB_CT_ADDR)
    if fallback:
        svc["standby"]["fallback_host"] = "sb22"
    d.srv = d.server(heartbeat_ms=500, host_timeout_ms=5000, log=log, dns=True,
                     services=[svc], port_timeout_ms=PORT_TIMEOUT_MS)
    for h in ["host1", "host2"] + ([] if fallback else ["sb21"]) + ["sb22"]:
        labkit.wait_for(f"{h} connected to the new server", lambda h=h: (
            host_entry(d, h) or {}).get("state") == "connected", 60, interval=0.2)


def wait_web_state(d, state, timeout):
    return labkit.wait_for(f"service {WEB} {state}", lambda: (
        lambda s: s if s["state"] == state else None)(web_service(d)), timeout, interval=0.2)


def test_lost_standby_host_fails_over_at_once_and_keeps_its_cause(pair):
    d = pair
    labkit.wait_for(f"{WEB} to answer HTTP", lambda: (
        labkit.http_get(WEB_ADDR) or "").strip() == WEB, BOOT_TIMEOUT, interval=0.5)
    fqdn = f"{WEB}.{labkit.lab_env()['VCR_LAB_ZONE']}"
    labkit.set_records({WEB: WEB_ADDR})

    # 1. No fallback: the warm container is provisioned on sb21, then sb21's VM killed.
    restart_server(d, "server-nofallback", fallback=False)
    labkit.wait_for(f"{WEB_CT} provisioned on sb21 and answering", lambda: (
        web_service(d)["standby"]["container_state"] == "running" and
        web_service(d)["standby"]["host"] == "sb21" and
        (labkit.http_get(WEB_CT_ADDR, timeout=1) or "").strip() == WEB), 120, interval=0.5)
    assert wait_web_state(d, "ok", 30)["served_by"] == "primary"
    since = d.vcr.last_event_id()
    os.kill(d.vcr.vm("sb21")["pid"], signal.SIGKILL)
    lost = labkit.wait_for("sb21 lost", lambda: (lambda h: h if h and h["state"] == "lost"
                                                 else None)(host_entry(d, "sb21")), 30)
    # A container is only as known as its host.
    cts = {c["name"]: c for c in lost.get("containers") or []}
    assert cts[WEB_CT]["state"] == "unknown" and cts[WEB_CT]["last_state"] == "running", cts
    assert web_service(d)["standby"]["container_state"] == "unknown"

    # The primary killed: the recovery may not count on the container sb21 last
    # reported; with no fallback it fails at once, saying why (it waited for the port
    # deadline before, then failed with a port timeout).
    os.kill(d.vcr.vm(WEB)["pid"], signal.SIGKILL)
    s = wait_web_state(d, "failed", 60)
    assert s["recovery"]["phase"] == "fenced", s["recovery"]
    assert s["recovery"]["error"] == (f"no standby can take container {WEB_CT}: standby host "
                                      "sb21 is lost; no standby.fallback_host is configured"), \
        s["recovery"]
    evs = web_events(d, since)
    assert [e["detail"]["phase"] for e in evs] == ["detected", "fenced", "failed"], evs
    assert evs[2]["ts_ms"] - evs[1]["ts_ms"] < 1000, evs  # at once: no port wait

    # 2. A fallback configured (server restarted), and the container's port unreachable
    # from the server: `vcr failover` retries after `fenced`, creates the container on
    # sb22 at once, then fails at the port phase with the last attempt's cause, once.
    restart_server(d, "server-fallback", fallback=True)
    assert web_service(d)["state"] == "failed"
    route = ["ip", "-n", labkit.NS, "route", "add", "unreachable", f"{WEB_CT_ADDR}/32"]
    subprocess.run(route, check=True)
    try:
        since = d.vcr.last_event_id()
        r = d.vcr.run("failover", WEB)
        assert r.returncode == 0, r.stderr
        s = wait_web_state(d, "failed", PORT_TIMEOUT_MS / 1000 + 60)
    finally:
        route[4] = "del"
        subprocess.run(route, check=True)
    evs = web_events(d, since)
    assert [e["detail"]["phase"] for e in evs] == ["retry", "container_ready", "failed"], evs
    # Created on the fallback by an order (`order_ms`), not taken as running.
    assert evs[1]["detail"]["host"] == "sb22" and "order_ms" in evs[1]["detail"], evs[1]
    err = s["recovery"]["error"]
    head = f"port {WEB_CT_ADDR}:80 of container {WEB_CT} not open within {PORT_TIMEOUT_MS} ms: "
    assert err.startswith(head) and err.count("not open within") == 1, err
    cause = err[len(head):]
    assert WEB_CT_ADDR in cause and "connect" in cause, err
    assert evs[2]["detail"]["error"] == err, evs[2]
    assert s["recovery"]["phase"] == "container_ready", s["recovery"]

    # The route back: the retry finishes on sb22, and clients get the container.
    since = d.vcr.last_event_id()
    r = d.vcr.run("failover", WEB)
    assert r.returncode == 0, r.stderr
    s = wait_web_state(d, "recovered", 120)
    assert s["served_by"] == "standby" and s["standby"]["host"] == "sb22", s
    assert [e["detail"]["phase"] for e in web_events(d, since)] == [
        "retry", "port_open", "dns_updated", "client_confirmed"]
    assert labkit.dig(fqdn) == [WEB_CT_ADDR]
    assert (labkit.http_get(WEB_CT_ADDR) or "").strip() == WEB
    assert (container_on(d, "sb22", WEB_CT) or {}).get("state") == "running"
