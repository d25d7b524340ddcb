"""GET /metrics scraped by a real Prometheus (Debian `prometheus`) in the lab namespace:
the target is up, a host and its VM's state are there, and a kill -9 of the VM's QEMU
shows as `crashed`.  One busybox VM, one boot."""
import json
import os
import shutil
import signal
import subprocess
import urllib.parse

import pytest

import labkit

PROM_ADDR = "127.0.0.1:19090"  # the namespace's own loopback
BOOT_TIMEOUT = 120


def prom_query(expr):
    """The instant vector of expr as Prometheus answers it ([] when empty)."""
    url = f"http://{PROM_ADDR}/api/v1/query?query={urllib.parse.quote(expr)}"
    r = labkit.ns_run(["curl", "-s", "-f", "-m", "2", url], timeout=10)
    if r.returncode != 0:
        return None
    answer = json.loads(r.stdout)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def prom_value(expr):
    result = prom_query(expr)
    return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus(lab, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("no `prometheus` binary: scripts/install-deps installs the Debian package")
    (tmp_path / "tsdb").mkdir()
    cfg = tmp_path / "prometheus.yml"
    # The API takes tokens over TLS (docs/server.md "Metrics"): Prometheus scrapes with the
    # read token from a file and checks the server's certificate against the lab's CA.
    # write_server_config makes both; the configuration is written before it, so the
    # paths are those the server's will use (its pki/ beside server.yaml).
    labkit.write_server_config(tmp_path / "server.yaml", tmp_path / "journal.db")
    creds = labkit.API_CREDENTIALS
    cfg.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                   "scrape_configs:\n  - job_name: vcr\n    metrics_path: /metrics\n"
                   "    scheme: https\n"
                   f"    tls_config: {{ca_file: '{creds['ca']}'}}\n"
                   f"    authorization: {{credentials_file: '{creds['tokens']['read']}'}}\n"
                   f"    static_configs:\n      - targets: ['{labkit.SERVER_API}']\n")
    p = labkit.Proc([binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                     f"--web.listen-address={PROM_ADDR}", "--log.level=info"],
                    str(tmp_path / "prometheus.log"))
    try:
        labkit.wait_for("Prometheus ready",
                        lambda: labkit.http_get(PROM_ADDR, "/-/ready") is not None, 60)
        yield p
    finally:
        rc = p.stop(timeout=30)
        assert not p.alive()
        assert rc == 0, f"prometheus exited {rc}:\n{p.log_text()[-2000:]}"


def test_prometheus_scrapes_host_and_vm_state(daemons, prometheus):
    daemons.server(heartbeat_ms=300, host_timeout_ms=1500)
    daemons.agent("host1", [labkit.vm_entry("web1", 0, "10.77.0.11")])
    vm = daemons.wait_vm_state("web1", "running", BOOT_TIMEOUT)

    # The exposition as served: content type, and promtool's own check of the text.
    r = labkit.ns_run(labkit.api_curl("/metrics", role="read",
                                      extra=["-f", "-D", "-", "-o", "/dev/null"]))
    assert "Content-Type: text/plain; version=0.0.4; charset=utf-8" in r.stdout, r.stdout
    text = labkit.ns_run(labkit.api_curl("/metrics", role="read", extra=["-f"])).stdout
    if shutil.which("promtool"):
        lint = subprocess.run(["promtool", "check", "metrics"], input=text,
                              capture_output=True, text=True, timeout=30)
        assert lint.returncode == 0, lint.stdout + lint.stderr

    labkit.wait_for("Prometheus's target up == 1",
                    lambda: prom_value('up{job="vcr"}') == 1.0, 30)
    targets = json.loads(labkit.ns_run(["curl", "-s", "-f",
                                        f"http://{PROM_ADDR}/api/v1/targets"]).stdout)
    active = targets["data"]["activeTargets"]
    assert [t["health"] for t in active] == ["up"], active
    assert active[0]["lastError"] == "", active
    labkit.wait_for("vcr_host_connected{host=\"host1\"} == 1",
                    lambda: prom_value('vcr_host_connected{host="host1"}') == 1.0, 30)
    labkit.wait_for("web1 running in Prometheus",
                    lambda: prom_value('vcr_vm_state{vm="web1",state="running"}') == 1.0, 30)
    assert prom_value('vcr_vm_state{vm="web1",state="crashed"}') == 0.0
    labkit.wait_for("web1's RSS in Prometheus",
                    lambda: (prom_value('vcr_vm_rss_bytes{vm="web1"}') or 0) > 0, 30)

    os.kill(vm["pid"], signal.SIGKILL)
    labkit.wait_for("web1 crashed in Prometheus",
                    lambda: prom_value('vcr_vm_state{vm="web1",state="crashed"}') == 1.0, 30)
    assert prom_value('vcr_vm_state{vm="web1",state="running"}') == 0.0
    # A family's series all come from one scrape, HELP/TYPE once each.
    assert text.count("# TYPE vcr_vm_state gauge\n") == 1
