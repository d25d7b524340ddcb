#!/usr/bin/env python3
"""bench-faults (issue 13): a seeded fault campaign on the real lab.

Rig (lab/faultkit.py): vcr-server, three host agents each running one busybox primary
(web1 warm, web2 cold, web3 warm), a fourth host agent running the standby VM (LXC,
the standby agent inside), the lab's BIND9; QEMU under TCG.  Each round picks a fault
with the seeded RNG (each block of rounds is a shuffle of the whole matrix, so every
fault comes up), injects it while pollers sample every service every 100 ms (primary
address, container address, DNS), waits for the system to settle, brings recovered
services back (`vcr failback`), and checks the invariants.  Writes OUT/faults.md,
OUT/faults.csv (one row per fault kind), OUT/faults-rounds.csv (one row per round).

Runs in its own lab namespace (VCR_LAB_NS, default vcrfaults) and tears it down.
"""
import argparse
import csv
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("VCR_LAB_NS", "vcrfaults")
sys.path.insert(0, os.path.join(ROOT, "lab"))
import faultkit  # noqa: E402
import labkit  # noqa: E402
from harness import machine  # noqa: E402

SUMMARY_COLS = ["fault", "rounds", "served_twice", "false_failovers", "stuck", "lost_events",
                "false_states", "leaks", "max_recovery_ms", "failovers"]
ROUND_COLS = ["round", "fault", "target", "hits", "seconds", "failovers", "expected", "settled",
              "served_twice", "served_twice_first", "false_failovers",
              "false_failover_services", "stuck", "lost_events", "lost_detail",
              "false_states", "false_state_detail", "max_recovery_ms", "events", "load1",
              "note"]

MEANING = [
    ("served_twice", "poller samples (one every 100 ms per service, during the round, "
     "failback windows left out) where the service answered at two places: its primary "
     "answered while DNS gave its container, or, cold services, its primary and its "
     "container both answered (the cold container exists only once the primary is "
     "fenced). Failback is make-before-break by design (the primary answers, then DNS "
     "moves back, then the cold container stops), hence left out."),
    ("false_failovers", "services with a recovery `detected` in the round's journal whose "
     "primary the fault did not touch (for `vm_restart_by_hand`: any detection, since a "
     "stop + start by hand must cause none)."),
    ("stuck", "services not `ok`/`recovered` (and unchanged for 6 s) within 120 s of the "
     "injection's end, or not back on their primary within 300 s of `vcr failback`."),
    ("lost_events", "journal ids of the round not contiguous, or an expected event "
     "missing: a recovery without `detected`, a `detected` followed by neither `fenced` "
     "nor `failed`, a `fenced` phase without its `fenced` event, `client_confirmed` "
     "without every earlier phase, a service settled `recovered` without "
     "`client_confirmed`, a failback not `started`..`done`, a killed primary without its "
     "`vm_event` crashed, a standby host fault without the standby's `host_lost`."),
    ("false_states", "standby host faults: containers of the lost standby host (in `vcr "
     "status`) or services' `container_state` (in `vcr services`) shown in a state other "
     "than `unknown` once the server called the host lost (issue 13 item 5: a container "
     "is only as known as its host)."),
    ("leaks", "after the campaign and `lab down`: processes whose command line names the "
     "run directory (QEMU, agents, watchdogs), /dev/shm/vcr-HOST-* files of the run's "
     "hosts, the journal's tmpfs still mounted, the lab namespace still there. Measured "
     "once for the campaign: in the `all` row."),
    ("max_recovery_ms", "the longest `detected` -> `client_confirmed` (journal ts_ms, "
     "server clock) of the rounds of that fault."),
]

FAULT_DOC = {
    "vm_kill9": "kill -9 of the target primary's QEMU.",
    "agent_kill9": "kill -9 of the target's host agent, restarted 0.5 s later (VMs adopted).",
    "server_kill9": "kill -9 of vcr-server, restarted 0.5 s later on the same journal.",
    "vm_stop_1s": "SIGSTOP of the primary's QEMU for 1 s (less than 3 probes), SIGCONT.",
    "vm_stop_5s": "SIGSTOP of the primary's QEMU for 5 s (probes fail: failed over), SIGCONT.",
    "agent_stop_2s": "SIGSTOP of the host agent for 2 s (below host_timeout 5 s).",
    "agent_stop_7s": "SIGSTOP of the host agent for 7 s: past the host timeout (5 s), "
                     "below its watchdog's 10 s: on SIGCONT it reconnects, its watchdog is fed "
                     "again and never fires, its VM keeps running.",
    "agent_stop_12s": "SIGSTOP of the host agent for 12 s: past the host timeout (5 s) and "
                      "its watchdog's 10 s: its VM is self-fenced, the service failed over.",
    "server_stop_2s": "SIGSTOP of vcr-server for 2 s.",
    "server_stop_7s": "SIGSTOP of vcr-server for 7 s: past its host timeout (5 s), below the "
                      "agents' self-fence (10 s): the primaries were never touched.",
    "link_cut": "`ip link set TAP down` of the primary's tap in the lab namespace for 6 s.",
    "dns_down_failure": "named SIGSTOPped, the primary killed: the recovery fails at DNS; "
                        "SIGCONT, `vcr failover` retries.",
    "disk_full": "the journal's tmpfs filled (dd), the primary killed, freed 5 s later.",
    "fd_exhaustion": "`prlimit --nofile=512:HARD` on the server (soft limit 512; the hard "
                     "one kept: raising it back needs CAP_SYS_RESOURCE, absent here), ~2000 "
                     "connections to the agent port from the namespace for 15 s, limit "
                     "restored.",
    "agent_restart_mid_recovery": "the primary killed; once `detected` is journaled, its "
                                  "host agent killed -9 and restarted.",
    "vm_restart_by_hand": "`vcr vm stop` then `vcr vm start` of the primary (maintenance).",
    "standby_agent_kill": "kill -9 of the standby VM's QEMU (its agent and every container "
                          "go with it); once the server calls the standby host lost, `vcr vm "
                          "start` of it (the server provisions the warm containers again). No "
                          "failover may follow: no primary was touched.",
    "standby_link_cut": "`ip link set TAP down` of the standby VM's tap for 8 s (past the host "
                        "timeout: the standby host lost, its containers unreachable), then "
                        "up (the agent says hello again). No failover may follow.",
}


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def write_csv(path, cols, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def write_md(path, args, summary, rows, leaks, load0, load1, elapsed, build, error,
             samples_stats):
    m = machine()
    # Busy: a 1-min load above the CPU count, before, after or at the start of a round.
    loads = [float(load0.split()[0]), float(load1.split()[0])] + [r["load1"] for r in rows]
    busy = max(loads) > int(m["nproc"] or 1)
    L = ["# bench-faults: a seeded fault campaign (issue 13)\n"]
    if error:
        L.append(f"**The campaign stopped early: {error}**\n")
    L.append(f"Generated by `bench/faults.py --seed {args.seed} --rounds {args.rounds}` "
             f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {len(rows)} rounds "
             f"in {elapsed / 60:.1f} min; daemons: `{build}` (the normal build).\n")
    L.append("## Machine\n")
    L.append(f"- CPUs: {m['nproc']}; memory {m['mem']}; CPU {m['cpu']}; host kernel "
             f"{m['kernel']}")
    L.append(f"- {m['qemu']}; accelerator **TCG** (no usable KVM)")
    L.append(f"- load average before: {load0}; after: {load1}; 1-min load at the start of "
             f"the rounds: {min(loads[2:], default=0):.2f}..{max(loads[2:], default=0):.2f} "
             "(`load1` in faults-rounds.csv)"
             + (f" (**busy machine: load above the {m['nproc']} CPUs**, other engineers' VMs "
                "and builds ran; absolute times are TCG times under that load)" if busy else ""))
    L.append(f"- seed {args.seed}, rounds {len(rows)}\n")
    L.append("## Rig\n")
    L.append("vcr-server (heartbeat 500 ms, host_timeout 5000 ms, fence_timeout 6000 ms, "
             "journal on a 32 MB tmpfs of its own); host agents fh1, fh2, fh3 each running one "
             "busybox primary (256 MB, 1 vCPU) serving HTTP: web1 (warm standby), web2 "
             "(cold), web3 (warm); host agent fsb running the standby VM standby1 (384 MB, "
             "2 vCPUs, LXC, the standby agent inside), never faulted (a fault of its host "
             "would take every container at once: another campaign) except by the two "
             "standby faults, which kill its standby VM or cut its link; the lab's BIND9 "
             "(RFC 2136). Checks: HTTP every 500 ms, 400 ms timeout, 3 failures.\n")
    L.append("Each round: a fault picked with the seeded RNG (each block of "
             f"{len(faultkit.matrix())} rounds is a "
             "shuffle of the matrix; the target service also seeded), injected and undone "
             "(SIGCONT, link up, daemon restarted, disk freed, limit restored); then settle "
             "(every service `ok` or `recovered`, unchanged for 6 s, within 120 s: a "
             "recovery is at worst host timeout 5 s + fence 6 s + a cold container under "
             "TCG + port, DNS and the 15 s client confirmation, 4x room); then `vcr "
             "failback` of every recovered service (bound 300 s: a TCG boot under load) and "
             "the baseline (all `ok` on their primaries, DNS on them, warm containers "
             "running, all hosts connected). Pollers inside the namespace, every 100 ms per "
             "service: a DNS A query, `GET /` at the primary address and at the container "
             "address (0.25 s timeouts).\n")
    if samples_stats:
        L.append("Samples taken: " + "; ".join(
            f"{n}: {c} (median interval {m:.2f} s, 95th percentile {p:.2f} s)"
            for n, c, m, p in samples_stats) + ". An address that does not answer costs its "
            "0.25 s timeout: a cold service's container address (absent) makes its samples "
            "0.25 s apart.\n")
    L.append("## Faults\n")
    L.append("| fault | what |")
    L.append("|---|---|")
    for f in faultkit.matrix():
        L.append(f"| `{f.name}` | {FAULT_DOC.get(f.name, '')} |")
    L.append("")
    L.append("Not in the matrix: the server stopped past the agents' self-fence (10 s here): "
             "every host fences its VMs, the standby VM's host too, so every container goes "
             "with them (a campaign of its own, with a standby host that is not a host agent "
             "of the server); a primary failing while its standby host is lost (the lab "
             "test `test_migration.py::test_lost_standby_host_fails_over_at_once_and_keeps_"
             "its_cause` covers it, with and without a fallback standby: this rig has one "
             "standby VM); a fault of the standby VM's host agent (fsb); a loop filesystem "
             "for the journal (a tmpfs of 32 MB does the same: ENOSPC on SQLite's writes)."
             "\n")
    L.append("## Invariants\n")
    for k, v in MEANING:
        L.append(f"- **{k}**: {v}")
    L.append("")
    L.append("## Results (faults.csv)\n")
    L.append("| " + " | ".join(SUMMARY_COLS) + " |")
    L.append("|" + "---|" * len(SUMMARY_COLS))
    for r in summary:
        L.append("| " + " | ".join(str(r[c]) for c in SUMMARY_COLS) + " |")
    L.append("\n`failovers`: rounds with at least one recovery detected.\n")
    if leaks:
        L.append("Leaks: " + "; ".join(leaks) + "\n")
    findings = [r for r in rows if r["served_twice"] or r["false_failovers"] or r["stuck"]
                or r["lost_events"] or r["false_states"]]
    L.append("## Rounds that broke an invariant\n")
    if not findings:
        L.append("None.\n")
    for r in findings:
        L.append(f"- round {r['round']} `{r['fault']}` on {r['target']} (events "
                 f"{r['events']}): served_twice {r['served_twice']} "
                 f"{r['served_twice_first']}; false failovers "
                 f"{r['false_failover_services'] or 0}; stuck {r['stuck']}; lost "
                 f"{r['lost_detail'] or 0}; false states {r['false_state_detail'] or 0}; "
                 f"note: {r['note']}")
    L.append("\nPer round: faults-rounds.csv. Raw samples and daemon logs stay in the run "
             "directory (not committed).\n")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def sample_stats(samples):
    out = []
    for name in sorted(faultkit.WEBS):
        ts = sorted(x["t"] for x in samples if x["s"] == name)
        dt = sorted(b - a for a, b in zip(ts, ts[1:]))
        if dt:
            out.append((name, len(ts), dt[len(dt) // 2], dt[int(len(dt) * 0.95)]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--rounds", type=int, default=32)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--faults", help="comma-separated subset of the matrix")
    args = ap.parse_args()
    if args.rounds < 1 or args.rounds > 500:
        ap.error("--rounds: 1..500")
    build = os.path.abspath(args.build)
    os.environ.setdefault("VCR_LAB_CACHE", os.path.join(build, "lab-cache"))
    faults = faultkit.by_name(args.faults.split(",") if args.faults else None)
    os.makedirs(args.out, exist_ok=True)
    run = tempfile.mkdtemp(prefix="vcr-faults-")
    load0 = loadavg()
    t0 = time.monotonic()
    rounds, samples, events, error = [], [], [], None
    labkit.lab_up()
    rig = faultkit.Rig(build, run, standby_vcpus=2)  # as the results say
    try:
        rig.up()
        rounds, samples, events, error = faultkit.run_campaign(rig, args.seed, args.rounds,
                                                               faults, run)
    except Exception as e:  # the rig did not come up: reported in the md
        error = f"rig: {type(e).__name__}: {e}"
        faultkit.say(error)
    finally:
        reports = rig.stop()
        labkit.lab_down()
    rows = [faultkit.check_round(r, samples, events) for r in rounds]
    leaks = rig.leaks(ns_gone_expected=True) + [f"sanitizer: {x[:200]}" for x in reports]
    summary = faultkit.summarize(rows, leaks)
    load1 = loadavg()
    write_csv(os.path.join(args.out, "faults.csv"), SUMMARY_COLS, summary)
    write_csv(os.path.join(args.out, "faults-rounds.csv"), ROUND_COLS, rows)
    write_md(os.path.join(args.out, "faults.md"), args, summary, rows, leaks, load0, load1,
             time.monotonic() - t0, build, error, sample_stats(samples))
    faultkit.say(f"wrote {args.out}/faults.md; run directory {run}")
    for r in summary:
        print(r)
    return 0 if not error else 1


if __name__ == "__main__":
    sys.exit(main())
