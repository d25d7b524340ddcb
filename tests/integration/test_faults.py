"""A short seeded run of the fault campaign of issue 13 (lab/faultkit.py; the full one is
`make bench-faults`): the cheapest distinct faults, one round each, on one rig (three host
agents with one busybox primary each, a standby VM with LXC, BIND9), the ASan+UBSan
daemons.  Every invariant must hold: nobody served twice, no false failover, nothing
stuck, no event lost; nothing left behind once the rig is stopped."""
import os

import pytest

import faultkit
import labkit

SEED = 13


@pytest.fixture(scope="module")
def fault_rig(lab, tmp_path_factory):
    from conftest import build_dir
    if not os.path.exists(labkit.standby_initrd()):
        pytest.skip(f"no {labkit.standby_initrd()}: run `make image-asan`")
    tmp = tmp_path_factory.mktemp("faults")
    rig = faultkit.Rig(build_dir(), tmp)
    try:
        rig.up()
        yield rig
    finally:
        reports = rig.stop()
        assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)


def test_short_seeded_campaign(fault_rig):
    faults = faultkit.by_name(faultkit.SHORT)
    rounds, samples, events, error = faultkit.run_campaign(
        fault_rig, SEED, len(faults), faults, str(fault_rig.run))
    assert error is None, error
    assert {r.fault.name for r in rounds} == set(faultkit.SHORT)
    rows = [faultkit.check_round(r, samples, events) for r in rounds]
    for r in rows:
        print(r)
    assert samples, "the pollers took no sample"
    bad = [(r["round"], r["fault"], r["target"], {k: r[k] for k in (
        "served_twice", "served_twice_first", "false_failover_services", "stuck",
        "lost_detail", "false_state_detail", "note") if r[k]}) for r in rows
        if r["served_twice"] or r["false_failovers"] or r["stuck"] or r["lost_events"]
        or r["false_states"]]
    assert bad == []
    assert faultkit.journal_gaps(events, 0) == []
    # The faults that must fail the target over did (the campaign is not vacuous).
    vm_kill = next(r for r in rows if r["fault"] == "vm_kill9")
    assert vm_kill["failovers"] == vm_kill["target"], vm_kill


def test_nothing_left_behind(fault_rig):
    reports = fault_rig.stop()
    assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)
    assert fault_rig.leaks() == []
