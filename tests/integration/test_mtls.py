"""Mutual TLS on the agent link (docs/security.md), with real daemons in the lab.

A forged hello (plain TCP, a certificate of another CA, a valid certificate of another
host) is refused and changes nothing: the real agent's session, its VM and the service
it protects stay as they were.  A fake server (plain TCP, a certificate of another CA,
a host certificate of the right CA) gets no order executed and does not feed the
agent's fence watchdog: the agent's VM is self-fenced as without any server.
`insecure: true` still works, and both daemons warn about it."""
import json
import os
import signal
import subprocess

import pytest

import labkit
from test_fencing import ended_within

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "link_peer.py")
VM, INDEX, ADDR = "web1", 0, "10.77.0.11"
FENCE_MS = 3000


def agent_port():
    return f"{labkit.lab_env()['VCR_LAB_BRIDGE_ADDR']}:{labkit.SERVER_AGENT_PORT}"


def peer(*args, timeout=30):
    r = labkit.ns_run(["/usr/bin/python3", PEER, *map(str, args)], timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def other_ca(tmp, name, server=False):
    """A certificate for `name` from a CA that is not the deployment's."""
    other = tmp / "other-pki"
    if not (other / "ca.crt").exists():
        subprocess.run([labkit.vcr_cli(), "pki", "init", str(other)], check=True)
    if not (other / f"{name}.crt").exists():
        extra = ["--server", "--san", labkit.lab_env()["VCR_LAB_BRIDGE_ADDR"]] if server else []
        subprocess.run([labkit.vcr_cli(), "pki", "issue", *extra, str(other), name], check=True)
    return {"cert": other / f"{name}.crt", "key": other / f"{name}.key"}


def kinds_since(d, since):
    return [(e["kind"], e.get("host")) for e in d.vcr.events(since)]


def test_forged_hellos_are_refused_and_change_nothing(daemons):
    d = daemons
    svc = labkit.service_entry(VM, "node1", VM, ADDR, "cold", "sb-absent", "web1-c",
                               "10.77.0.99")
    d.server(heartbeat_ms=500, dns=True, services=[svc])
    agent = d.agent("node1", [labkit.vm_entry(VM, INDEX, ADDR)])
    vm = d.wait_vm_state(VM, "running", 60)
    labkit.wait_for("service web1 ok", lambda: next(
        (s for s in d.vcr.json("services")["services"] if s["name"] == VM and s["state"] == "ok"),
        None), 60)
    since = d.vcr.last_event_id()
    pki = labkit.lab_pki(d.tmp / "server.yaml")

    # 1. Plain TCP: the server speaks TLS only; nothing is read as a frame.
    r = peer("hello", agent_port(), "node1", VM)
    assert not any(f.get("type") == "welcome" for f in r["frames"]), r
    # 2. A certificate of another CA that names node1: the handshake is refused.
    oc = other_ca(d.tmp, "node1")
    r = peer("hello", agent_port(), "node1", VM, "--cert", oc["cert"], "--key", oc["key"])
    assert not any(f.get("type") == "welcome" for f in r["frames"]), r
    assert r["error"] or any("recv_error" in f for f in r["frames"]) or r["stage"] == "closed", r
    # 3. A valid certificate of node2 saying hello as node1: refused, and told why.
    n2 = labkit.lab_cert(pki, "node2")
    r = peer("hello", agent_port(), "node1", VM, "--cert", n2["cert"], "--key", n2["key"])
    errors = [f.get("message", "") for f in r["frames"] if f.get("type") == "error"]
    assert any("does not name host `node1`" in m for m in errors), r
    assert not any(f.get("type") == "welcome" for f in r["frames"]), r
    # Control: the same forger with node2's certificate as node2 is welcomed, so the
    # refusals above are the authentication's, not a malformed hello's.
    r = peer("hello", agent_port(), "node2", "decoy", "--cert", n2["cert"], "--key", n2["key"])
    assert any(f.get("type") == "welcome" for f in r["frames"]), r

    # Nothing changed for node1: each refusal above was answered (closed or told)
    # before the peer returned, so the server has handled it by now.
    events = kinds_since(d, since)
    assert ("hello", "node2") in events, events
    assert not [e for e in events if e[1] == "node1"], events
    # The control's host is lost later (its forger hangs up): node2, not node1.
    assert not [e for e in events if e[0] == "recovery"], events
    after = d.vcr.vm(VM)
    assert after["host"] == "node1" and after["state"] == "running", after
    assert after["pid"] == vm["pid"], (vm, after)
    assert [h["state"] for h in d.vcr.status()["hosts"] if h["name"] == "node1"] == ["connected"]
    assert next(s for s in d.vcr.json("services")["services"] if s["name"] == VM)["state"] == "ok"
    server_log = d.procs[0].log_text()
    assert "the client certificate does not name host `node1`" in server_log
    assert "replaced by a new connection" not in server_log
    assert "connection lost" not in agent.log_text()


def start_agent_alone(d, host):
    """A host agent with one VM and fence_timeout_ms, as test_fencing.py starts it."""
    state = d.tmp / f"agent-{host}"
    state.mkdir(exist_ok=True)
    cfg = d.tmp / f"agent-{host}.yaml"
    labkit.write_agent_config(cfg, host, str(state), [labkit.vm_entry(VM, INDEX, ADDR)])
    with open(cfg, "a") as f:
        f.write(f"fence_timeout_ms: {FENCE_MS}\n")
    p = labkit.Proc([os.path.join(d.build, "src", "agent", "vcr-agent"), "--config", str(cfg),
                     "--log-level", "debug"], str(d.tmp / f"agent-{host}.log"))
    d.procs.append(p)
    return p, state


@pytest.mark.parametrize("fake", ["plain", "other-ca", "host-cert"])
def test_fake_server_gets_no_order_run_and_feeds_no_watchdog(daemons, fake):
    d = daemons
    server = d.server(heartbeat_ms=300, host_timeout_ms=1500, fence_timeout_ms=FENCE_MS)
    agent, state = start_agent_alone(d, "fhost")
    pid = d.wait_vm_state(VM, "running", 60)["pid"]
    # The real server goes; a fake one takes its port and answers at once with an
    # order, a welcome and heartbeat echoes.
    server.signal(signal.SIGKILL)
    server.popen.wait(timeout=10)
    if fake == "plain":
        args = []
    elif fake == "other-ca":
        oc = other_ca(d.tmp, "vcr-server", server=True)
        args = ["--cert", oc["cert"], "--key", oc["key"]]
    else:  # a valid certificate of the deployment, but a host's: not the server's name
        hc = labkit.lab_cert(labkit.lab_pki(d.tmp / "server.yaml"), "fhost2")
        args = ["--cert", hc["cert"], "--key", hc["key"]]
    fake_seconds = (FENCE_MS + 6000) / 1000
    fake_proc = subprocess.Popen(labkit.in_ns(["/usr/bin/python3", PEER, "server", agent_port(),
                                               str(fake_seconds), *map(str, args)]),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # No contact counts: the watchdog kills the VM as if no server answered.
        assert ended_within(pid, (FENCE_MS + 5000) / 1000), \
            f"the VM was not fenced: the fake server ({fake}) fed the watchdog"
    finally:
        out, err = fake_proc.communicate(timeout=fake_seconds + 30)
    report = json.loads(out)
    assert report["connections"] >= 1, (report, err)  # the agent did try the fake
    hellos = [f for f in report["frames"] if f.get("type") == "hello"]
    assert not hellos, f"the agent said hello to a fake server: {report}"
    log = agent.log_text()
    assert "order stop web1" not in log, log[-3000:]
    assert "welcome (server fake" not in log, log[-3000:]
    with open(state / "fenced.json") as f:
        assert pid in json.load(f)["pids"]


def test_insecure_still_works_and_warns(daemons):
    d = daemons
    cfg = d.tmp / "server.yaml"
    labkit.write_server_config(cfg, d.tmp / "journal.db", 500, insecure=True)
    server = labkit.Proc([os.path.join(d.build, "src", "server", "vcr-server"), "--config",
                          str(cfg)], str(d.tmp / "server.log"))
    d.procs.append(server)
    labkit.wait_for("the server's API", lambda: d.vcr.run("status").returncode == 0, 15)
    state = d.tmp / "agent-ihost"
    state.mkdir()
    acfg = d.tmp / "agent-ihost.yaml"
    labkit.write_agent_config(acfg, "ihost", str(state), [], insecure=True)
    agent = labkit.Proc([os.path.join(d.build, "src", "agent", "vcr-agent"), "--config",
                         str(acfg)], str(d.tmp / "agent-ihost.log"))
    d.procs.append(agent)
    labkit.wait_for("ihost connected", lambda: next(
        (h for h in d.vcr.status().get("hosts", [])
         if h["name"] == "ihost" and h["state"] == "connected"), None), 30)
    assert "warn insecure: the agent port is plain TCP" in server.log_text()
    assert "warn insecure: the server link is plain TCP" in agent.log_text()
    # Plain TCP is what it says: an unauthenticated peer gets a welcome.
    r = peer("hello", agent_port(), "ghost", "decoy")
    assert any(f.get("type") == "welcome" for f in r["frames"]), r
    # Without TLS files and without `insecure: true`, neither daemon starts.
    bare = d.tmp / "bare.yaml"
    bare.write_text(f"listen: 127.0.0.1:1\napi: 127.0.0.1:2\njournal: {d.tmp}/j2.db\n")
    r = subprocess.run([os.path.join(d.build, "src", "server", "vcr-server"), "--config-test",
                        str(bare)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "needs TLS" in r.stderr and "insecure: true" in r.stderr, r
    text = acfg.read_text().replace("insecure: true\n", "")
    (d.tmp / "agent-bare.yaml").write_text(text)
    r = subprocess.run([os.path.join(d.build, "src", "agent", "vcr-agent"), "--config-test",
                        "--config", str(d.tmp / "agent-bare.yaml")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "needs TLS" in r.stderr, r


def test_standby_insecure_port_takes_standby_hellos_only(daemons):
    d = daemons
    env = labkit.lab_env()
    cfg = d.tmp / "server.yaml"
    labkit.write_server_config(cfg, d.tmp / "journal.db", 500)
    plain = f"{env['VCR_LAB_BRIDGE_ADDR']}:{labkit.SERVER_AGENT_PORT + 2}"
    with open(cfg, "a") as f:
        f.write(f"standby_insecure_listen: {plain}\n")
    server = labkit.Proc([os.path.join(d.build, "src", "server", "vcr-server"), "--config",
                          str(cfg)], str(d.tmp / "server.log"))
    d.procs.append(server)
    labkit.wait_for("the server's API", lambda: d.vcr.run("status").returncode == 0, 15)
    assert "warn standby_insecure_listen" in server.log_text()
    d.agent("node1", [])
    labkit.wait_for("node1 connected", lambda: next(
        (h for h in d.vcr.status().get("hosts", [])
         if h["name"] == "node1" and h["state"] == "connected"), None), 30)
    # A host's hello, and a standby hello for a host that TLS vouched for: refused.
    r = peer("hello", plain, "node9", "decoy", "--role", "host")
    assert any("accepts role `standby` only" in f.get("message", "") for f in r["frames"]), r
    r = peer("hello", plain, "node1", "decoy", "--role", "standby")
    assert any("connected over TLS" in f.get("message", "") for f in r["frames"]), r
    assert [h["state"] for h in d.vcr.status()["hosts"] if h["name"] == "node1"] == ["connected"]
    # A standby's hello there is welcomed.
    r = peer("hello", plain, "sb9", "decoy", "--role", "standby")
    assert any(f.get("type") == "welcome" for f in r["frames"]), r
