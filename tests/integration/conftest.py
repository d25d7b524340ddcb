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
# Daemons and build_dir are the harness's (lab/harness.py), shared with the benchmarks;
# tests import them from here as before.
from harness import Daemons, build_dir  # noqa: E402,F401

SANITIZER = labkit.SANITIZER_REPORT


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

@pytest.fixture
def daemons(lab, tmp_path):
    d = Daemons(tmp_path)
    yield d
    reports = d.stop_all()
    assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)
