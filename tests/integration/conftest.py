"""Fixtures for integration tests: the lab (namespace, bridge, taps, BIND9) and the
VCRecovery daemons, built with ASan+UBSan, started inside it."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "lab"))

# The standby VMs of the integration tests run the ASan+UBSan standby agent (make
# image-asan); their consoles are scanned for its reports like the daemons' logs.
os.environ.setdefault("VCR_LAB_STANDBY_INITRD", "initrd-standby-asan.img")

import labkit  # noqa: E402

SANITIZER = labkit.SANITIZER_REPORT


def build_dir():
    return os.environ.get("VCR_ASAN_BUILD", os.path.join(ROOT, "build-asan"))


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, taps)")
    env = labkit.lab_up()
    yield env
    labkit.lab_down()



def cache_file(name):
    """A file of the lab's image cache (VCR_IT_CACHE, else beside the lab's initrd);
    skips the test when it was not built."""
    env = labkit.lab_env()
    cache = os.environ.get("VCR_IT_CACHE") or os.path.dirname(env["VCR_LAB_INITRD"])
    path = os.path.join(cache, name)
    if not os.path.exists(path):
        pytest.skip(f"no {path}: run lab/build-image --standby (VCR_LAB_CACHE={cache})")
    return path

class Daemons:
    """Starts vcr-server and vcr-agent processes; checks their logs for sanitizer reports."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.build = build_dir()
        self.procs = []
        self.vcr = labkit.Vcr(self.build)

    def server(self, heartbeat_ms=500, host_timeout_ms=None, log="server", **config):
        """config: more write_server_config keywords (dns, services, fence_timeout_ms).
        A second call with another `log` restarts on the same journal."""
        cfg = self.tmp / "server.yaml"
        labkit.write_server_config(cfg, self.tmp / "journal.db", heartbeat_ms, host_timeout_ms,
                                   **config)
        p = labkit.Proc([os.path.join(self.build, "src", "server", "vcr-server"),
                         "--config", str(cfg), "--log-level", "debug"],
                        str(self.tmp / f"{log}.log"))
        self.procs.append(p)
        # Its own listeners, not another server's: one left running on the same ports
        # would answer the API while this one exits ("Address already in use").
        labkit.wait_for("the server listening (or exiting)",
                        lambda: not p.alive() or "HTTP API on" in p.log_text(), 15)
        assert p.alive(), f"vcr-server exited: {p.log_text()[-1500:]}"
        labkit.wait_for("the server's API", lambda: self.vcr.run("status").returncode == 0, 15)
        return p

    def agent(self, host, vms, accel="tcg", probe_deadline_ms=20000, name=None):
        state = self.tmp / f"agent-{host}"
        state.mkdir(exist_ok=True)
        cfg = self.tmp / f"agent-{host}.yaml"
        labkit.write_agent_config(cfg, host, str(state), vms, accel, probe_deadline_ms)
        p = labkit.Proc([os.path.join(self.build, "src", "agent", "vcr-agent"),
                         "--config", str(cfg), "--log-level", "debug", "--stop-vms-on-exit"],
                        str(self.tmp / f"{name or 'agent-' + host}.log"))
        self.procs.append(p)
        return p

    def wait_vm_state(self, vm, states, timeout):
        states = {states} if isinstance(states, str) else set(states)

        def check():
            v = self.vcr.vm(vm)
            return v if v and v.get("state") in states else None
        return labkit.wait_for(f"VM {vm} in state {sorted(states)}", check, timeout)

    def stop_all(self):
        """Stops every daemon; returns the problems: sanitizer reports in a daemon's log,
        in a host agent's fence watchdog log or in a guest's console (the standby
        agent's output), and a daemon that was still running but
        did not exit 0 on SIGTERM (docs/server.md, docs/agent.md: exit codes)."""
        reports = []
        for p in reversed(self.procs):
            running = p.alive()
            rc = p.stop(timeout=30)  # an agent stops its VMs first
            if running and rc != 0:
                reports.append(f"{p.log_path}: exited {rc} on SIGTERM, not 0")
            text = p.log_text()
            if SANITIZER.search(text):
                reports.append(f"{p.log_path}:\n{text[-3000:]}")
        for log in self.tmp.glob("agent-*/fence-watchdog.log"):
            text = log.read_text(errors="replace")
            if SANITIZER.search(text):
                reports.append(f"{log}:\n{text[-3000:]}")
        reports += labkit.console_sanitizer_reports(self.consoles())
        return reports

    def consoles(self):
        """Every guest console of the test: the standby agent's output is there."""
        return sorted(self.tmp.glob("agent-*/*.serial"))


@pytest.fixture
def daemons(lab, tmp_path):
    d = Daemons(tmp_path)
    yield d
    reports = d.stop_all()
    assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)
