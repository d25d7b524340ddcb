"""DNS UPDATE (src/dns) against the lab's BIND9, driven through vcr-dnsupdate from the
ASan+UBSan build, inside the lab namespace: a signed update switches the A record, a
second one replaces it, one update over IPv6 replaces the A and the AAAA records, a
wrong key is refused and changes nothing, a server that does not answer is retried and
then reported; the fence of redundant servers (docs/ha.md) lets the newest term switch
and refuses an older one (NXRRSET)."""
import json
import os
import shutil
import socket
import subprocess

import pytest

import labkit
from conftest import SANITIZER, build_dir


def tool():
    path = os.path.join(build_dir(), "src", "dns", "vcr-dnsupdate")
    assert os.path.exists(path), f"{path} missing: build {build_dir()} first"
    return path


def server_of(lab):
    return f"{lab['VCR_LAB_DNS']}:{lab.get('VCR_LAB_DNS_PORT') or 53}"


def dnsupdate(lab, name, *addrs, ttl=5, key_file=None, server=None, extra=()):
    """Runs vcr-dnsupdate; returns (exit code, its --json report, stderr)."""
    argv = [tool(), "--server", server or server_of(lab), "--zone", lab["VCR_LAB_ZONE"],
            "--key-file", key_file or lab["VCR_LAB_TSIG_FILE"], "--json", *extra,
            name, str(ttl), *addrs]
    r = labkit.ns_run(argv, timeout=60)
    assert not SANITIZER.search(r.stderr), r.stderr
    return r.returncode, json.loads(r.stdout), r.stderr


def fqdn(lab, label):
    return f"{label}.{lab['VCR_LAB_ZONE']}"


def test_update_sets_the_address(lab):
    name = fqdn(lab, "dns-set")
    rc, report, err = dnsupdate(lab, name, "10.77.0.101")
    assert rc == 0, err
    assert report["ok"] and report["attempts"] == 1 and report["rcode"] == 0
    assert labkit.dig(name) == ["10.77.0.101"]


def test_update_replaces_every_a_record(lab):
    name = fqdn(lab, "dns-replace")
    # Start from two A records (as a botched earlier add would leave) to show that the
    # update deletes the whole RRset rather than one address.
    script = (f"server {lab['VCR_LAB_DNS']}\n"
              f"update add {name} 5 A 10.77.0.102\nupdate add {name} 5 A 10.77.0.103\nsend\n")
    r = subprocess.run(labkit.in_ns(["nsupdate", "-k", lab["VCR_LAB_TSIG_FILE"]]), input=script,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert sorted(labkit.dig(name)) == ["10.77.0.102", "10.77.0.103"]

    rc, _, err = dnsupdate(lab, name, "10.77.0.104")
    assert rc == 0, err
    assert labkit.dig(name) == ["10.77.0.104"]
    rc, _, err = dnsupdate(lab, name, "10.77.0.105", ttl=30)
    assert rc == 0, err
    assert labkit.dig(name) == ["10.77.0.105"]


def test_update_over_ipv6_replaces_a_and_aaaa(lab):
    """One UPDATE sent to BIND's IPv6 address ([fd77::1]:53) replaces both RRsets of a
    dual-stack name; a v6-only update then leaves the A record alone."""
    name = fqdn(lab, "dns-dual")
    server6 = f"[{lab['VCR_LAB_DNS6']}]:{lab.get('VCR_LAB_DNS_PORT') or 53}"
    script = (f"server {lab['VCR_LAB_DNS']}\n"
              f"update add {name} 5 AAAA fd77::108\nupdate add {name} 5 AAAA fd77::109\nsend\n")
    r = subprocess.run(labkit.in_ns(["nsupdate", "-k", lab["VCR_LAB_TSIG_FILE"]]), input=script,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    rc, report, err = dnsupdate(lab, name, "10.77.0.108,fd77::110", server=server6)
    assert rc == 0 and report["ok"] and report["rcode"] == 0, err
    assert labkit.dig(name) == ["10.77.0.108"]
    assert labkit.dig(name, server=lab["VCR_LAB_DNS6"], rtype="AAAA") == ["fd77::110"]
    rc, _, err = dnsupdate(lab, name, "fd77::111", server=server6)
    assert rc == 0, err
    assert labkit.dig(name, rtype="AAAA") == ["fd77::111"]
    assert labkit.dig(name) == ["10.77.0.108"]


def test_wrong_key_is_refused_and_changes_nothing(lab, tmp_path):
    name = fqdn(lab, "dns-wrongkey")
    rc, _, err = dnsupdate(lab, name, "10.77.0.106")
    assert rc == 0, err
    wrong = tmp_path / "wrong.key"
    # Same key name, another secret: BIND answers NOTAUTH with TSIG error BADSIG.
    wrong.write_text(subprocess.run(["tsig-keygen", "-a", "hmac-sha256", lab["VCR_LAB_TSIG_NAME"]],
                                    check=True, capture_output=True, text=True).stdout)
    rc, report, err = dnsupdate(lab, name, "10.77.0.107", key_file=str(wrong))
    assert rc != 0
    assert not report["ok"] and report["attempts"] == 1 and report["rcode"] == 9  # NOTAUTH
    assert "TSIG error BADSIG" in err and "bad key or signature" in err, err
    assert labkit.dig(name) == ["10.77.0.106"]


def test_server_not_answering_is_retried_then_reported(lab):
    name = fqdn(lab, "dns-noserver")
    # The bridge address, on a port where nothing listens.
    server = f"{lab['VCR_LAB_BRIDGE_ADDR']}:5399"
    rc, report, err = dnsupdate(lab, name, "10.77.0.108", server=server,
                                extra=("--attempts", "3", "--timeout-ms", "100"))
    assert rc != 0
    assert not report["ok"] and report["attempts"] == 3 and report["rcode"] == -1
    assert report["elapsed_ms"] >= 100 + 200 + 400 - 5  # doubling waits
    assert f"no answer from `{server}`" in err, err
    assert labkit.dig(name) == []


def test_update_takes_milliseconds(lab):
    # Two addresses in turn, so that every update really changes the zone.
    rc, report, err = dnsupdate(lab, fqdn(lab, "dns-latency"), "10.77.0.120", "10.77.0.121",
                                extra=("--repeat", "50"))
    assert rc == 0, err
    assert report["updates"] == 50
    # About 1 ms in the lab even with sanitizers (docs/dns.md); this bound only catches
    # a regression to waiting for timeouts.
    assert report["median_ms"] < 20, report


def free_udp_tcp_port():
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def test_hmac_sha512_key_signs_updates_a_real_bind_accepts(tmp_path):
    """A key made by `tsig-keygen -a hmac-sha512` (issue: TSIG hmac-sha512 besides
    hmac-sha256): BIND9 on loopback, its own zone, only that key may update it; the
    update is signed with hmac-sha512 and applied, and the same name with a sha256 key
    of another secret is refused (BADSIG / BADKEY)."""
    if shutil.which("named") is None:
        pytest.skip("BIND9 (named) not installed")
    port = free_udp_tcp_port()
    key = tmp_path / "k512.key"
    key.write_text(subprocess.run(["tsig-keygen", "-a", "hmac-sha512", "k512"], check=True,
                                  capture_output=True, text=True).stdout)
    assert "hmac-sha512" in key.read_text()
    (tmp_path / "t.test.zone").write_text(
        "$TTL 5\n@ IN SOA ns.t.test. hostmaster.t.test. 1 3600 600 86400 5\n"
        "@ IN NS ns.t.test.\nns IN A 127.0.0.1\n")
    conf = tmp_path / "named.conf"
    conf.write_text(f'''include "{key}";
options {{
    directory "{tmp_path}"; pid-file none; session-keyfile "{tmp_path}/session.key";
    managed-keys-directory "{tmp_path}"; listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }}; recursion no; dnssec-validation no; notify no;
}};
controls {{ }};
zone "t.test" {{ type master; file "{tmp_path}/t.test.zone";
    update-policy {{ grant k512 zonesub ANY; }}; }};
''')
    named = subprocess.Popen(["named", "-g", "-c", str(conf)], stdin=subprocess.DEVNULL,
                             stdout=open(tmp_path / "named.log", "w"), stderr=subprocess.STDOUT)

    def dig_a(name):
        r = subprocess.run(["dig", "+short", "+time=1", "+tries=1", "-p", str(port), "@127.0.0.1",
                            name, "A"], capture_output=True, text=True, timeout=10)
        return r.stdout.split() if r.returncode == 0 else None

    try:
        labkit.wait_for("named on loopback answers", lambda: dig_a("ns.t.test") == ["127.0.0.1"],
                        30, interval=0.1)

        def update(key_file, addr):
            r = subprocess.run([tool(), "--server", f"127.0.0.1:{port}", "--zone", "t.test",
                                "--key-file", str(key_file), "--json", "www.t.test", "5", addr],
                               capture_output=True, text=True, timeout=60)
            assert not SANITIZER.search(r.stderr), r.stderr
            return r.returncode, json.loads(r.stdout), r.stderr

        rc, report, err = update(key, "10.9.0.1")
        assert rc == 0 and report["ok"] and report["rcode"] == 0, err
        assert dig_a("www.t.test") == ["10.9.0.1"]
        other = tmp_path / "other.key"
        other.write_text(subprocess.run(["tsig-keygen", "-a", "hmac-sha256", "k512"], check=True,
                                        capture_output=True, text=True).stdout)
        rc, report, err = update(other, "10.9.0.2")
        assert rc != 0 and not report["ok"] and "TSIG error" in err, err
        assert dig_a("www.t.test") == ["10.9.0.1"]
    finally:
        named.terminate()
        try:
            named.wait(timeout=10)
        except subprocess.TimeoutExpired:
            named.kill()
            named.wait()


def fence(lab):
    """The zone's fence of redundant servers (docs/ha.md): its TXT strings."""
    return [t.strip('"') for t in labkit.dig(f"_vcr-term.{lab['VCR_LAB_ZONE']}", rtype="TXT")]


def delete_fence(lab):
    """What an operator does after replacing the etcd cluster (its terms start again)."""
    script = (f"server {lab['VCR_LAB_DNS']}\n"
              f"update delete _vcr-term.{lab['VCR_LAB_ZONE']} TXT\nsend\n")
    r = subprocess.run(labkit.in_ns(["nsupdate", "-k", lab["VCR_LAB_TSIG_FILE"]]), input=script,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr


def claim(lab, to, frm=None):
    argv = [tool(), "--server", server_of(lab), "--zone", lab["VCR_LAB_ZONE"],
            "--key-file", lab["VCR_LAB_TSIG_FILE"], "--json", "--fence-claim", str(to)]
    if frm:
        argv += ["--fence-term", str(frm)]
    r = labkit.ns_run(argv, timeout=60)
    assert not SANITIZER.search(r.stderr), r.stderr
    return r.returncode, json.loads(r.stdout), r.stderr


def test_fence_by_term_refuses_a_deposed_leaders_switch(lab):
    """RFC 2136 prerequisites on the real BIND: every switch of a leader requires the
    zone's fence TXT to be its term; a new leader moves it up by a compare-and-swap; the
    old leader's switch then fails with NXRRSET and changes nothing."""
    name = fqdn(lab, "dns-fence")
    delete_fence(lab)
    try:
        # No fence yet: a fenced switch is refused; the first claim requires none.
        rc, report, err = dnsupdate(lab, name, "10.77.0.110", extra=["--fence-term", "5"])
        assert rc != 0 and report["rcode"] == 8, err  # NXRRSET
        assert labkit.dig(name) == []
        rc, _, err = claim(lab, 5)
        assert rc == 0, err
        assert fence(lab) == ["5"]
        rc, _, err = dnsupdate(lab, name, "10.77.0.111", extra=["--fence-term", "5"])
        assert rc == 0, err
        assert labkit.dig(name) == ["10.77.0.111"]
        # Term 9 takes over: claims the zone from 5.
        rc, _, err = claim(lab, 9, frm=5)
        assert rc == 0, err
        assert fence(lab) == ["9"]
        # The deposed leader (term 5) switches: refused, stale, the name unchanged.
        rc, report, err = dnsupdate(lab, name, "10.77.0.112", extra=["--fence-term", "5"])
        assert rc != 0 and report["rcode"] == 8 and report["attempts"] == 1, err
        assert "stale term" in err, err
        assert labkit.dig(name) == ["10.77.0.111"]
        # Nor can it claim back, from what it last knew or from nothing.
        rc, report, _ = claim(lab, 6, frm=5)
        assert rc != 0 and report["rcode"] == 8
        rc, report, _ = claim(lab, 6)
        assert rc != 0 and report["rcode"] == 7  # YXRRSET
        assert fence(lab) == ["9"]
        # The leader of term 9 switches.
        rc, _, err = dnsupdate(lab, name, "10.77.0.113", extra=["--fence-term", "9"])
        assert rc == 0, err
        assert labkit.dig(name) == ["10.77.0.113"]
    finally:
        delete_fence(lab)
