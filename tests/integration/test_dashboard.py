"""The dashboard (docs/dashboard.md) in a real headless Chromium (Debian's `chromium`,
driven by `chromium-driver` over WebDriver) against the busybox lab: real daemons, a
real primary VM and a real standby VM running the warm container.  The page loads with
no console error and shows the topology; the primary's QEMU is killed (kill -9) while
the page is open, and the page shows the service recovering, then recovered, with the
recovery's phases as bars, from its event stream; the failback button brings it back.

VCR_DASHBOARD_SHOTS=DIR keeps the screenshots (docs/dashboard-*.png come from it)."""
import base64
import hashlib
import os
import shutil
import signal
import subprocess

import pytest

import labkit
from conftest import cache_file
from webdriver import Browser

BOOT_TIMEOUT = 240
RECOVERY_TIMEOUT = 120
PHASES = ["detected", "fenced", "container_ready", "port_open", "dns_updated",
          "client_confirmed"]
WEB, WEB_ADDR, CT_ADDR = "web1", "10.77.0.11", "10.77.0.31"
SB, SB_ADDR = "standby1", "10.77.0.21"
URL = f"https://{labkit.SERVER_API}/ui/"

# Every state the service's row has had, as the page showed it: a MutationObserver in
# the page records them, so a state shown between two polls is not missed.
WATCH = """
window.__seen = [];
window.__phases = [];
const note = () => {
  const row = document.querySelector('tr[data-service="web1"]');
  const s = row && row.dataset.state;
  if (s && window.__seen[window.__seen.length - 1] !== s) window.__seen.push(s);
  const p = row && row.querySelector('[data-phase]');
  const sp = p ? s + ':' + p.dataset.phase : null;
  if (sp && window.__phases[window.__phases.length - 1] !== sp) window.__phases.push(sp);
};
new MutationObserver(note).observe(document.querySelector('#services tbody'),
                                   {childList: true, subtree: true, attributes: true});
note();
return true;
"""

TOPOLOGY = """
const q = (s) => document.querySelector(s);
const vm = q('[data-host="host1"] [data-vm="web1"]');
const sb = q('[data-host="host1"] [data-vm="standby1"]');
const ct = sb && sb.querySelector('[data-container="web1-c"]');
return {
  live: q('#live').dataset.live,
  host: q('[data-host="host1"]') && q('[data-host="host1"]').dataset.state,
  vm: vm && vm.dataset.state,
  vm_serves: vm ? [...vm.querySelectorAll('[data-serves]')].map((e) => e.dataset.serves) : null,
  standby_vm: sb && sb.dataset.state,
  container: ct && ct.dataset.state,
  container_serves: ct ? [...ct.querySelectorAll('[data-serves]')].map((e) => e.dataset.serves) : null,
  service: q('tr[data-service="web1"]') && q('tr[data-service="web1"]').dataset.state,
  events: document.querySelectorAll('#events li').length,
  seen: window.__seen || null,
  phases: window.__phases || null,
  chart: [...document.querySelectorAll('.chart[data-service="web1"] g[data-phase]')]
           .map((g) => [g.dataset.phase, Number(g.dataset.ms)]),
  recovery_events: [...document.querySelectorAll('#events li[data-kind="recovery"]')].length,
  actions: [...document.querySelectorAll('#actions li')].map((l) => [l.dataset.ok, l.textContent]),
};
"""


def click_twice(browser, selector):
    """The buttons ask twice: the first click arms, the second sends."""
    return browser.js("const b = document.querySelector(arguments[0]);"
                      "if (!b) return false; b.click(); b.click(); return true;", selector)


@pytest.fixture
def lab_rig(daemons):
    env = labkit.lab_env()
    labkit.set_records({WEB: WEB_ADDR})
    web = labkit.vm_entry(WEB, 0, WEB_ADDR)
    sb = labkit.vm_entry(SB, 2, SB_ADDR, memory_mb=384, vcpus=labkit.STANDBY_VCPUS,
                         extra_args="apparmor=0 vcr.role=standby "
                                    f"vcr.agent_server={env['VCR_LAB_BRIDGE_ADDR']}:"
                                    f"{labkit.SERVER_AGENT_PORT}")
    sb["image"]["initrd"] = cache_file(os.path.basename(labkit.standby_initrd()))
    daemons.server(heartbeat_ms=500, host_timeout_ms=5000, fence_timeout_ms=6000, dns=True,
                   services=[labkit.service_entry(WEB, "host1", WEB, WEB_ADDR, "warm", SB,
                                                  "web1-c", CT_ADDR)])
    daemons.agent("host1", [web, sb])
    yield daemons
    reports = daemons.stop_all()
    assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)


def spki_sha256(cert):
    """base64 SHA-256 of cert's public key: Chromium trusts the server's certificate by
    it (--ignore-certificate-errors-spki-list), the lab CA not being in its store."""
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", cert], check=True,
                         capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         check=True, capture_output=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def sign_in(browser, role="operator"):
    """The page asks for a token (the API authenticates): it is typed in once."""
    labkit.wait_for("the sign-in form", lambda: browser.js(
        "return !document.getElementById('signin').hidden"), 30, interval=0.2)
    with open(labkit.API_CREDENTIALS["tokens"][role]) as f:
        token = f.read().strip()
    browser.js("document.getElementById('token').value = arguments[0];"
               "document.getElementById('signin').requestSubmit(); return true;", token)
    labkit.wait_for("the page signed in", lambda: browser.js(
        "return document.getElementById('signin').hidden && "
        "document.getElementById('who').textContent"), 30, interval=0.2)


@pytest.fixture
def browser(lab, lab_rig, tmp_path):
    b = Browser(str(tmp_path), extra_args=[
        "--ignore-certificate-errors-spki-list=" + spki_sha256(labkit.API_CREDENTIALS["cert"])])
    yield b
    rc = b.quit()
    assert rc == 0, f"chromedriver exited {rc} after its /shutdown"


def shot(browser, tmp_path, name):
    path = tmp_path / f"dashboard-{name}.png"
    browser.screenshot(str(path))
    keep = os.environ.get("VCR_DASHBOARD_SHOTS")
    if keep:
        shutil.copy(path, os.path.join(keep, path.name))


def test_dashboard_shows_a_recovery_as_it_happens(lab_rig, browser, tmp_path):
    d = lab_rig
    # The page is open while the lab comes up: it must follow it, not be reloaded.
    browser.open(URL)
    sign_in(browser)
    browser.js(WATCH)
    d.wait_vm_state(WEB, "running", BOOT_TIMEOUT)
    d.wait_vm_state(SB, "running", BOOT_TIMEOUT)
    page = labkit.wait_for(
        "the page to show host1's web1 serving web1 and the warm container web1-c running "
        "in standby VM standby1",
        lambda: (lambda t: t if t["vm"] == "running" and t["vm_serves"] == [WEB]
                 and t["standby_vm"] == "running" and t["container"] == "running"
                 and t["service"] == "ok" else None)(browser.js(TOPOLOGY)),
        BOOT_TIMEOUT, interval=0.5)
    assert page["live"] == "live" and page["host"] == "connected", page
    assert page["container_serves"] == [], page  # the warm container waits, serves nothing
    assert page["events"] > 0, page
    assert page["chart"] == [], page
    shot(browser, tmp_path, "topology")
    assert browser.errors() == []

    # kill -9 of the primary's QEMU, the page left alone: it must show it from its stream.
    pid = d.vcr.vm(WEB)["pid"]
    os.kill(pid, signal.SIGKILL)
    labkit.wait_for("the page to show web1 recovering",
                    lambda: "recovering" in (browser.js("return window.__seen") or []),
                    RECOVERY_TIMEOUT, interval=0.2)
    page = labkit.wait_for(
        "the page to show web1 recovered, served by web1-c, with its phases as bars",
        lambda: (lambda t: t if t["service"] == "recovered" and len(t["chart"]) == len(PHASES)
                 and t["container_serves"] == [WEB] else None)(browser.js(TOPOLOGY)),
        RECOVERY_TIMEOUT, interval=0.2)
    seen = page["seen"]
    assert seen.index("ok") < seen.index("recovering") < seen.index("recovered"), seen
    assert "failed" not in seen, seen
    # The row showed the phases as they came (a warm recovery here takes ~0.1 s).
    print("states shown:", seen, "phases shown:", page["phases"])
    assert "recovering:detected" in page["phases"], page["phases"]
    assert page["phases"].index("recovering:detected") < \
        page["phases"].index("recovered:client_confirmed"), page["phases"]
    assert [p for p, _ in page["chart"]] == PHASES, page["chart"]
    assert all(ms >= 0 for _, ms in page["chart"]), page["chart"]
    # The bars are the API's timeline: each phase's elapsed_ms less the one before.
    timeline = next(s for s in d.vcr.json("services")["services"]
                    if s["name"] == WEB)["recovery"]["timeline"]
    elapsed = [p["elapsed_ms"] for p in timeline]
    assert [ms for _, ms in page["chart"]] == \
        [b - a for a, b in zip([0] + elapsed, elapsed)], (page["chart"], timeline)
    assert page["vm"] != "running", page
    assert page["recovery_events"] >= len(PHASES), page
    shot(browser, tmp_path, "recovered")
    assert browser.errors() == []

    # The operator's failback, from its button: the primary is started and serves again.
    assert click_twice(browser, 'tr[data-service="web1"] button[data-action$="/failback"]')
    page = labkit.wait_for(
        "the page to show web1 served by its primary again after the failback button",
        lambda: (lambda t: t if t["service"] == "ok" and t["vm"] == "running"
                 and t["vm_serves"] == [WEB] else None)(browser.js(TOPOLOGY)),
        BOOT_TIMEOUT, interval=0.5)
    assert page["actions"][0][0] == "true", page["actions"]  # newest first
    assert "/v1/services/web1/failback: 202" in page["actions"][0][1], page["actions"]
    assert labkit.dig(f"{WEB}.vcr.lab") == [WEB_ADDR]
    assert browser.errors() == []
