"""The Debian packages (scripts/build-deb, docs/packaging.md): their control fields,
their files unpacked into a directory (dpkg-deb -x), `systemd-analyze verify` of the
units in that root and their hardening (docs/security.md), the packaged server run with
the rights its unit gives (an unprivileged user, no capability, no new privileges) with an
agent connected, the packaged libvirt agent run with its unit's rights and reporting to
a server, the standby helper's settings and checks, the restart backoff, lintian.

No lab and no VM: the packages themselves.  VCR_DEB=PATH (and VCR_DEB_LIBVIRT=PATH)
test those .debs instead of building them with scripts/build-deb."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNITS = ("vcr-server.service", "vcr-agent.service", "vcr-agent-standby.service")
LV_UNIT = "vcr-agent-libvirt.service"


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def debs():
    """(vcrecovery .deb, vcr-agent-libvirt .deb): build-deb prints them last-but-one
    (libvirt) and last."""
    path, lv = os.environ.get("VCR_DEB"), os.environ.get("VCR_DEB_LIBVIRT")
    if not path:
        if shutil.which("dpkg-shlibdeps") is None:
            pytest.skip("dpkg-shlibdeps not installed (dpkg-dev)")
        r = run([os.path.join(ROOT, "scripts", "build-deb")], timeout=600)
        assert r.returncode == 0, r.stderr
        lv, path = r.stdout.strip().splitlines()[-2:]
    assert os.path.isfile(path), path
    return path, lv


@pytest.fixture(scope="module")
def deb(debs):
    return debs[0]


@pytest.fixture(scope="module")
def lv_deb(debs):
    if not debs[1]:
        pytest.skip("VCR_DEB given without VCR_DEB_LIBVIRT")
    assert os.path.isfile(debs[1]), debs[1]
    return debs[1]


@pytest.fixture(scope="module")
def root(deb, debs, tmp_path_factory):
    """The packages unpacked (vcr-agent-libvirt's too, when there is one), plus the host's
    own units (targets the ours refer to)."""
    d = tmp_path_factory.mktemp("debroot")
    for p in (deb, debs[1]):
        if p:
            r = run(["dpkg-deb", "-x", p, str(d)])
            assert r.returncode == 0, r.stderr
    return d


def field(deb, name):
    r = run(["dpkg-deb", "-f", deb, name])
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_control_fields(deb):
    version = re.search(r"version\s*:\s*'([^']+)'",
                        open(os.path.join(ROOT, "meson.build")).read()).group(1)
    assert os.path.basename(deb) == f"vcrecovery_{version}_amd64.deb"
    assert field(deb, "Package") == "vcrecovery"
    assert field(deb, "Version") == version
    assert field(deb, "Architecture") == "amd64"
    depends = field(deb, "Depends")
    # What the binaries link, as dpkg-shlibdeps names it.
    for pkg in ("libc6", "liblxc1", "libevent-2.1-7", "libjansson4", "libldns3", "libcyaml1",
                "libsqlite3-0", "libssl3"):
        assert re.search(rf"(^|, ){re.escape(pkg)}( |,|$)", depends), (pkg, depends)
    # Not linked: never a hard dependency.
    for pkg in ("criu", "lxc,", "qemu"):
        assert pkg not in depends + ",", depends
    recommends = [p.strip() for p in field(deb, "Recommends").split(",")]
    for pkg in ("lxc", "criu", "qemu-system-x86", "qemu-utils", "genisoimage"):
        assert pkg in recommends, recommends
    info = run(["dpkg", "-I", deb]).stdout
    for script in ("postinst", "prerm", "postrm", "md5sums"):
        assert script in info, info
    # The libvirt agent and its libraries are the other package's.
    assert "libvirt" not in depends, depends
    assert "vcr-agent-libvirt" not in run(["dpkg-deb", "-c", deb]).stdout


def test_libvirt_package_fields_and_files(lv_deb, deb):
    version = field(deb, "Version")
    assert os.path.basename(lv_deb) == f"vcr-agent-libvirt_{version}_amd64.deb"
    assert field(lv_deb, "Package") == "vcr-agent-libvirt"
    assert field(lv_deb, "Version") == version
    depends = [p.strip() for p in field(lv_deb, "Depends").split(",")]
    assert f"vcrecovery (= {version})" in depends, depends
    assert any(p.startswith("libvirt0") for p in depends), depends
    assert "libvirt-daemon-system" in field(lv_deb, "Recommends")
    files = run(["dpkg-deb", "-c", lv_deb]).stdout
    for rel in ("./usr/bin/vcr-agent-libvirt", f"./lib/systemd/system/{LV_UNIT}",
                "./usr/share/doc/vcr-agent-libvirt/copyright",
                "./usr/share/doc/vcr-agent-libvirt/changelog.gz",
                "./usr/share/doc/vcr-agent-libvirt/examples/agent-libvirt.yaml"):
        assert rel in files, (rel, files)
    info = run(["dpkg", "-I", lv_deb]).stdout
    for script in ("postinst", "prerm", "postrm", "md5sums"):
        assert script in info, info


def test_files_and_binaries(root):
    for rel in ("usr/bin/vcr-server", "usr/bin/vcr-agent", "usr/bin/vcr",
                "usr/lib/vcrecovery/vcr-standby", "usr/lib/vcrecovery/vcr-restart-delay"):
        assert os.access(root / rel, os.X_OK), rel
    for unit in UNITS:
        assert (root / "lib/systemd/system" / unit).is_file(), unit
    for doc in ("copyright", "changelog.gz", "packaging.md", "examples/standby.env"):
        assert (root / "usr/share/doc/vcrecovery" / doc).is_file(), doc
    # The configuration directory exists once installed (`vcr pki init /etc/vcr/pki`).
    assert (root / "etc/vcr").is_dir()
    needed = run(["readelf", "-d", str(root / "usr/bin/vcr-agent")]).stdout
    assert "liblxc.so.1" in needed, needed
    for prog in ("vcr-agent", "vcr-server"):
        r = run([str(root / "usr/bin" / prog), "--version"])
        assert r.returncode == 0 and prog in r.stdout, (prog, r.stdout, r.stderr)
    # The packaged agent has the standby role (liblxc): an unknown role's error lists it.
    r = run([str(root / "usr/bin/vcr-agent"), "--role", "nosuch", "--server", "127.0.0.1:1",
             "--name", "x"])
    assert r.returncode == 2 and "`nosuch`: not a role; the roles are: host, standby" in r.stderr, \
        r.stderr


def test_units_verify(root):
    """systemd-analyze verify --root: every ExecStart* exists in the package and is
    executable, every key is known.  Warnings do not change its exit status, so its
    output must be empty too."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    unit_dir = root / "lib/systemd/system"
    units = UNITS + ((LV_UNIT,) if (unit_dir / LV_UNIT).exists() else ())
    ours = {u: (unit_dir / u).read_text() for u in units}
    for src in ("/lib/systemd/system", "/usr/lib/systemd/system"):
        if os.path.isdir(src):
            for name in os.listdir(src):
                if not (unit_dir / name).exists() and not os.path.isdir(os.path.join(src, name)):
                    shutil.copy(os.path.join(src, name), unit_dir / name, follow_symlinks=False)
    (root / "etc/systemd/system").mkdir(parents=True, exist_ok=True)
    r = run(["systemd-analyze", "verify", f"--root={root}", "--man=no"]
            + [str(unit_dir / u) for u in units])
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr
    for unit, text in ours.items():
        assert "Restart=on-failure" in text, unit
        assert "vcr-restart-delay start" in text and "vcr-restart-delay stop" in text, unit
    assert "KillMode=process" in ours["vcr-agent.service"]
    assert "/etc/vcr/server.yaml" in ours["vcr-server.service"]
    assert "/etc/vcr/agent.yaml" in ours["vcr-agent.service"]
    sb = ours["vcr-agent-standby.service"]
    assert "EnvironmentFile=-/etc/vcr/standby.env" in sb
    assert "ExecStart=/usr/lib/vcrecovery/vcr-standby run" in sb
    # Least privilege (docs/security.md): the server as its own user, hardened.
    srv = ours["vcr-server.service"]
    for line in ("User=vcr", "Group=vcr", "StateDirectory=vcr-server", "NoNewPrivileges=yes",
                 "CapabilityBoundingSet=\n", "ProtectSystem=strict", "ProtectHome=yes",
                 "PrivateTmp=yes", "PrivateDevices=yes",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                 "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes"):
        assert line in srv, line
    agent = ours["vcr-agent.service"]
    for line in ("NoNewPrivileges=yes", "ProtectSystem=full", "ProtectHome=read-only",
                 "RestrictAddressFamilies="):
        assert line in agent, line
    # Root, and the same /tmp as the VMs it leaves running.
    assert not re.search(r"^(User|PrivateTmp)=", agent, re.M), agent
    if LV_UNIT in ours:
        lv = ours[LV_UNIT]
        for line in ("Type=notify", "WatchdogSec=", "KillMode=process",
                     "ExecStart=/usr/bin/vcr-agent-libvirt --config /etc/vcr/agent-libvirt.yaml "
                     "--role libvirt", "ConditionPathExists=/etc/vcr/agent-libvirt.yaml",
                     "CapabilityBoundingSet=CAP_KILL\n", "NoNewPrivileges=yes",
                     "ProtectSystem=strict", "StateDirectory=vcr\n",
                     "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n"):
            assert line in lv, line
    # systemd's own score of the exposure (0 best, 10 worst): the server is hardened.
    r = run(["systemd-analyze", "security", "--offline=true", f"--root={root}", "--no-pager",
             str(unit_dir / "vcr-server.service")])
    m = re.search(r"Overall exposure level for vcr-server.service: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    print(f"systemd-analyze security vcr-server.service: {m.group(1)}")
    assert float(m.group(1)) <= 2.0, r.stdout


def test_postinst_makes_the_server_user(deb, tmp_path):
    r = run(["dpkg-deb", "-I", deb, "postinst"])
    assert r.returncode == 0, r.stderr
    script = tmp_path / "postinst"
    script.write_text(r.stdout)
    assert run(["sh", "-n", str(script)]).returncode == 0
    assert "getent passwd vcr" in r.stdout and "useradd --system --user-group" in r.stdout
    assert "/var/lib/vcr-server/journal.db" in r.stdout  # the old journal moved once


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_server_runs_unprivileged(root):
    """The packaged vcr-server with the rights vcr-server.service gives it: another user
    than root (nobody here: the package's `vcr` is made by its postinst, which this test
    does not run on the machine), every capability dropped, no new privileges; it opens
    its journal in its own state directory, serves its API and takes an agent's hello
    on loopback.  The packaged agent stays root, as its unit says."""
    import json
    import pwd
    import tempfile
    import time
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux)")
    nobody = pwd.getpwnam("nobody")
    top = tempfile.mkdtemp(prefix="vcr-unpriv-")
    os.chmod(top, 0o755)
    state = os.path.join(top, "state")
    os.mkdir(state, 0o750)
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    agent_port, api_port = free_port(), free_port()
    cfg = os.path.join(top, "server.yaml")
    with open(cfg, "w") as f:
        f.write(f"listen: 127.0.0.1:{agent_port}\napi: 127.0.0.1:{api_port}\n"
                f"journal: {state}/journal.db\ninsecure: true\napi_insecure: true\n")
    os.chmod(cfg, 0o644)
    agent_cfg = os.path.join(top, "agent.yaml")
    with open(agent_cfg, "w") as f:
        f.write(f"host: unpriv1\nserver: 127.0.0.1:{agent_port}\nstate_dir: {top}/agent\n"
                "insecure: true\naccel: tcg\nvms:\n")
    os.mkdir(os.path.join(top, "agent"), 0o700)
    server = subprocess.Popen(
        ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
         "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all",
         str(root / "usr/bin/vcr-server"), "--config", cfg],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(top, "server.log"), "w"))
    agent = None
    try:
        def status():
            r = run([str(root / "usr/bin/vcr"), "--server", f"127.0.0.1:{api_port}", "status",
                     "--json"], timeout=10)
            return json.loads(r.stdout) if r.returncode == 0 else None
        deadline = time.monotonic() + 30
        while status() is None:
            assert server.poll() is None, open(os.path.join(top, "server.log")).read()
            assert time.monotonic() < deadline, "the server's API never answered"
            time.sleep(0.2)
        with open(f"/proc/{server.pid}/status") as f:
            proc = dict(line.split(":", 1) for line in f if ":" in line)
        assert proc["Uid"].split() == [str(nobody.pw_uid)] * 4, proc["Uid"]
        assert int(proc["CapEff"], 16) == 0 and int(proc["CapBnd"], 16) == 0, proc
        assert proc["NoNewPrivs"].strip() == "1"
        assert os.stat(f"{state}/journal.db").st_uid == nobody.pw_uid
        agent = subprocess.Popen([str(root / "usr/bin/vcr-agent"), "--config", agent_cfg],
                                 stdout=subprocess.DEVNULL,
                                 stderr=open(os.path.join(top, "agent.log"), "w"))
        deadline = time.monotonic() + 30
        while not any(h["name"] == "unpriv1" and h["state"] == "connected"
                      for h in (status() or {}).get("hosts", [])):
            assert time.monotonic() < deadline, open(os.path.join(top, "server.log")).read()
            time.sleep(0.2)
    finally:
        for p in (agent, server):
            if p:
                p.terminate()
                p.wait(10)
        shutil.rmtree(top, ignore_errors=True)


def test_libvirt_agent_runs_with_its_units_rights(root, lv_deb):
    """The packaged vcr-agent-libvirt with what vcr-agent-libvirt.service gives it (root,
    no new privileges, CAP_KILL alone in its bounding set): `--config-test` of the
    packaged example passes; against a libvirt socket where no libvirtd listens it still
    says hello to the packaged server, reports its domain `unknown` (libvirtd
    unreachable), and keeps its session.  With a real libvirtd: test_libvirt.py."""
    import json
    import tempfile
    import time
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux)")
    top = tempfile.mkdtemp(prefix="vcr-lvdeb-")
    agent_port, api_port = free_port(), free_port()
    server_cfg, agent_cfg = os.path.join(top, "server.yaml"), os.path.join(top, "agent.yaml")
    with open(server_cfg, "w") as f:
        f.write(f"listen: 127.0.0.1:{agent_port}\napi: 127.0.0.1:{api_port}\n"
                f"journal: {top}/journal.db\ninsecure: true\napi_insecure: true\n")
    with open(agent_cfg, "w") as f:
        f.write(f"host: lvdeb1\nserver: 127.0.0.1:{agent_port}\nstate_dir: {top}/agent\n"
                "insecure: true\nlibvirt:\n"
                f"  uri: \"qemu:///system?socket={top}/no-libvirtd-here\"\n"
                "  domains: [dom1]\n")
    exe = str(root / "usr/bin/vcr-agent-libvirt")
    unit_rights = ["setpriv", "--no-new-privs", "--inh-caps=-all",
                   "--bounding-set=-all,+kill"]
    r = run(unit_rights + [exe, "--config", agent_cfg, "--role", "libvirt", "--config-test"])
    assert r.returncode == 0, r.stdout + r.stderr
    server = subprocess.Popen([str(root / "usr/bin/vcr-server"), "--config", server_cfg],
                              stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(top, "server.log"), "w"))
    agent = subprocess.Popen(unit_rights + [exe, "--config", agent_cfg, "--role", "libvirt"],
                             stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(top, "agent.log"), "w"))
    try:
        def vm():
            r = run([str(root / "usr/bin/vcr"), "--server", f"127.0.0.1:{api_port}", "status",
                     "--json"], timeout=10)
            if r.returncode != 0:
                return None
            st = json.loads(r.stdout)
            hosts = [h for h in st.get("hosts", []) if h["name"] == "lvdeb1"]
            vms = [v for h in hosts for v in h.get("vms", []) if v.get("name") == "dom1"]
            return (hosts[0], vms[0]) if vms else None
        deadline = time.monotonic() + 30
        while not (vm() and vm()[0]["state"] == "connected"):
            assert agent.poll() is None, open(os.path.join(top, "agent.log")).read()
            assert time.monotonic() < deadline, open(os.path.join(top, "agent.log")).read()
            time.sleep(0.2)
        h, v = vm()
        assert v["state"] == "unknown" and "unreachable" in v["cause"], v
        with open(f"/proc/{agent.pid}/status") as f:
            proc = dict(line.split(":", 1) for line in f if ":" in line)
        assert int(proc["CapBnd"], 16) == 1 << 5  # CAP_KILL
        assert proc["NoNewPrivs"].strip() == "1"
    finally:
        for p in (agent, server):
            p.terminate()
            p.wait(10)
        shutil.rmtree(top, ignore_errors=True)


def test_packaged_libvirt_example_is_valid(root, lv_deb):
    """The example /etc/vcr/agent-libvirt.yaml of the package passes --config-test but
    for its TLS files, which an operator makes (vcr pki)."""
    ex = root / "usr/share/doc/vcr-agent-libvirt/examples/agent-libvirt.yaml"
    r = run([str(root / "usr/bin/vcr-agent-libvirt"), "--config", str(ex), "--role", "libvirt",
             "--config-test"])
    problems = [x for x in r.stderr.splitlines() if x.startswith("  ") and "tls_" not in x]
    assert r.returncode == 0 or (" problems:" in r.stderr and not problems), r.stdout + r.stderr


def fake_sysfs(base, cgroup, apparmor=None):
    """A /sys with the cgroup layout `cgroup` (v1, hybrid or v2) and AppArmor on/off."""
    cg = base / "fs/cgroup"
    cg.mkdir(parents=True)
    if cgroup == "v2":
        (cg / "cgroup.controllers").write_text("cpu memory\n")
    else:
        (cg / "freezer").mkdir()
        if cgroup == "hybrid":
            (cg / "unified").mkdir()
            (cg / "unified/cgroup.controllers").write_text("\n")
    if apparmor is not None:
        p = base / "module/apparmor/parameters"
        p.mkdir(parents=True)
        (p / "enabled").write_text("Y\n" if apparmor else "N\n")
    return base


def standby(root, tmp_path, args, cmdline, env=None, sysfs=None):
    cl = tmp_path / "cmdline"
    cl.write_text(cmdline + "\n")
    e = {"PATH": os.environ["PATH"], "VCR_STANDBY_CMDLINE": str(cl),
         "VCR_STANDBY_SYSFS": str(sysfs or tmp_path / "nosys")}
    e.update(env or {})
    return run([str(root / "usr/lib/vcrecovery/vcr-standby"), *args], env=e)


def test_standby_settings(root, tmp_path):
    cmd = ("root=/dev/vda rw console=ttyS0 net.ifnames=0 ip=10.77.0.21::10.77.0.1:255.255.255.0:"
           "sb21:eth0:off apparmor=0 vcr.name=sb21 vcr.agent_server=10.77.0.1:7070")
    r = standby(root, tmp_path, ["settings"], cmd)
    assert r.returncode == 0, r.stderr
    assert "server=10.77.0.1:7070 (from the kernel command line" in r.stdout
    assert "name=sb21 (from the kernel command line" in r.stdout
    # /etc/vcr/standby.env (systemd passes its variables) wins over the command line.
    r = standby(root, tmp_path, ["settings"], cmd,
                env={"VCR_AGENT_SERVER": "192.0.2.1:7070", "VCR_AGENT_NAME": "other"})
    assert r.returncode == 0, r.stderr
    assert "server=192.0.2.1:7070 (from the /etc/vcr/standby.env)" in r.stdout
    assert "name=other (from the /etc/vcr/standby.env)" in r.stdout
    # Missing or bad: exit 78, which the unit does not restart on.
    r = standby(root, tmp_path, ["settings"], "root=/dev/vda vcr.name=sb21")
    assert r.returncode == 78 and "vcr.agent_server=HOST:PORT" in r.stderr, r.stderr
    r = standby(root, tmp_path, ["settings"], "vcr.agent_server=10.77.0.1:7070")
    assert r.returncode == 78 and "vcr.name=NAME" in r.stderr, r.stderr
    r = standby(root, tmp_path, ["settings"], "vcr.agent_server=10.77.0.1 vcr.name=x")
    assert r.returncode == 78 and "allowed: HOST:PORT" in r.stderr, r.stderr
    r = standby(root, tmp_path, ["nonsense"], cmd)
    assert r.returncode == 2


def test_standby_tls_identity(root, tmp_path):
    """The standby agent's TLS identity: /etc/vcr/tls, else fw_cfg (the host agent's
    agent_identity), else plain TCP only with vcr.agent_insecure=1 (docs/security.md)."""
    cmd = "vcr.name=sb21 vcr.agent_server=10.77.0.1:7070"
    env = {"VCR_STANDBY_ETC": str(tmp_path / "etc"), "VCR_STANDBY_RUN": str(tmp_path / "run")}
    r = standby(root, tmp_path, ["settings"], cmd, env=env)
    assert r.returncode == 0 and "tls=none" in r.stdout, r.stdout + r.stderr
    r = standby(root, tmp_path, ["settings"], cmd + " vcr.agent_insecure=1", env=env)
    assert "tls=insecure" in r.stdout, r.stdout + r.stderr
    sysfs = tmp_path / "sys"
    for f in ("ca.crt", "agent.crt", "agent.key"):
        d = sysfs / "firmware/qemu_fw_cfg/by_name/opt/vcr" / f
        d.mkdir(parents=True)
        (d / "raw").write_text(f"pem of {f}\n")
    r = standby(root, tmp_path, ["settings"], cmd + " vcr.agent_insecure=1", sysfs=sysfs, env=env)
    assert f"tls=fwcfg ({tmp_path / 'run'}/vcr-tls)" in r.stdout, r.stdout + r.stderr
    (tmp_path / "etc/tls").mkdir(parents=True)
    (tmp_path / "etc/tls/agent.crt").write_text("x")
    r = standby(root, tmp_path, ["settings"], cmd, sysfs=sysfs, env=env)
    assert f"tls=etc ({tmp_path / 'etc'}/tls)" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("cgroup,apparmor,ok,words", [
    ("v1", False, True, ""),
    ("v1", None, True, ""),
    ("v2", False, False, "cgroup v2"),
    ("hybrid", False, False, "hybrid"),
    ("v1", True, False, "apparmor=0"),
])
def test_standby_checks(root, tmp_path, cgroup, apparmor, ok, words):
    sysfs = fake_sysfs(tmp_path / "sys", cgroup, apparmor)
    r = standby(root, tmp_path, ["check"], "vcr.name=x", sysfs=sysfs)
    if ok:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode == 78 and words in r.stderr, r.stderr
        assert "systemd.unified_cgroup_hierarchy=0" in r.stderr or words == "apparmor=0"


def test_restart_delay_backoff(root, tmp_path):
    tool = str(root / "usr/lib/vcrecovery/vcr-restart-delay")
    base = {"PATH": os.environ["PATH"], "VCR_BACKOFF_DIR": str(tmp_path),
            "VCR_BACKOFF_DRY_RUN": "1", "VCR_BACKOFF_MAX_S": "8"}

    def start():
        r = run([tool, "start", "u1"], env=base)
        assert r.returncode == 0, r.stderr
        return int(r.stdout.split()[1])

    def stop(result):
        r = run([tool, "stop", "u1"], env=dict(base, SERVICE_RESULT=result))
        assert r.returncode == 0, r.stderr

    delays = [start()]
    for _ in range(6):
        stop("exit-code")
        delays.append(start())
    assert delays == [0, 1, 2, 4, 8, 8, 8], delays
    stop("success")  # a clean stop starts the count again
    assert start() == 0
    stop("signal")
    assert start() == 1
    assert run([tool, "start", "../x"], env=base).returncode == 2


def test_lintian(deb, debs):
    if shutil.which("lintian") is None:
        pytest.skip("lintian not installed")
    r = run(["lintian", "--fail-on", "error", deb] + ([debs[1]] if debs[1] else []), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    tags = [line for line in r.stdout.splitlines() if line[:2] in ("E:", "W:")]
    # Known and accepted: no manual pages yet (docs/packaging.md, "Not yet").
    assert all("no-manual-page" in t for t in tags), tags


def test_standby_bridge_in_a_namespace(root):
    """`vcr-standby bridge` for real, in a network namespace of its own (no lab, no VM):
    eth0 (one end of a veth pair) with an address and a default route; afterwards br0
    has eth0's MAC, the address and the route, eth0 is its port; a second run changes
    nothing."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a network namespace)")
    ns = f"vcrdebtest{os.getpid()}"
    tool = str(root / "usr/lib/vcrecovery/vcr-standby")

    def nsx(*argv, check=True):
        r = run(["ip", "netns", "exec", ns, *argv])
        assert not check or r.returncode == 0, (argv, r.stdout, r.stderr)
        return r

    r = run(["ip", "netns", "add", ns])
    assert r.returncode == 0, r.stderr
    try:
        nsx("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
        nsx("ip", "link", "set", "eth0", "up")
        nsx("ip", "link", "set", "peer0", "up")
        nsx("ip", "addr", "add", "10.99.0.5/24", "dev", "eth0")
        nsx("ip", "route", "add", "default", "via", "10.99.0.1")
        mac = nsx("cat", "/sys/class/net/eth0/address").stdout.strip()
        first = nsx(tool, "bridge")
        assert "br0 over eth0: 10.99.0.5/24, default via 10.99.0.1" in first.stderr, first.stderr
        assert nsx("cat", "/sys/class/net/br0/address").stdout.strip() == mac
        assert nsx("readlink", "/sys/class/net/eth0/master").stdout.strip().endswith("/br0")
        assert "10.99.0.5/24" in nsx("ip", "-4", "-o", "addr", "show", "dev", "br0").stdout
        assert "inet " not in nsx("ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
        assert "default via 10.99.0.1 dev br0" in nsx("ip", "-4", "route").stdout
        assert nsx("cat", "/sys/class/net/br0/bridge/stp_state").stdout.strip() == "0"
        assert nsx("cat", "/sys/class/net/br0/bridge/forward_delay").stdout.strip() == "0"
        again = nsx(tool, "bridge")
        assert "already a port of br0" in again.stderr, again.stderr
        assert "default via 10.99.0.1 dev br0" in nsx("ip", "-4", "route").stdout
    finally:
        run(["ip", "netns", "delete", ns])
