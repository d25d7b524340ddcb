# Front door.  Two commands matter (README): `make demo` and `make check`.
# Both install what they need (Debian packages, as root) and build first.

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
MESON_OPTS ?= -Dstatic_agent=true

.PHONY: all deps build build-asan build-fuzz image image-asan check unit fuzz integration demo demo-real \
        format format-check lab-up lab-down clean deb bench-recovery bench-recovery-debian bench-warm-vm \
        bench-warm-cache bench-migration bench-migration-debian bench-migration-debian-vol bench-faults bench-standby-cost \
        bench-overhead bench-ha bench-hostfail bench-soak bench-scale image-debian image-standby-disk fuzz-long

all: build

deps:
	@scripts/install-deps

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_OPTS)

build: deps $(BUILD)/build.ninja
	meson configure $(BUILD) $(MESON_OPTS)
	ninja -C $(BUILD)

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false

build-asan: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)

$(FUZZ_BUILD)/build.ninja:
	CC=clang meson setup $(FUZZ_BUILD) -Dfuzz=true -Dtests=false

build-fuzz: deps $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD)

# Guest boot files (kernel + initramfs with the static agent; the standby
# initramfs with the liblxc-linked agent and its libraries), cached under $(BUILD).
image: build
	lab/build-image --agent $(BUILD)/src/agent/vcr-agent.static \
		--standby --standby-agent $(BUILD)/src/agent/vcr-agent

# Real Debian 12 images (primary VM disk, container rootfs tarballs, standby
# base) built with mmdebstrap, cached outside the checkout (VCR_DEBIAN_CACHE,
# default /var/cache/vcr-lab/debian) and rebuilt only when their inputs change.
image-debian: deps
	lab/build-debian

# The integration tests' standby image: the same, with the ASan+UBSan standby agent
# (initrd-standby-asan.img; initrd.img is the one above, found up to date).
image-asan: build-asan image
	lab/build-image --agent $(BUILD)/src/agent/vcr-agent.static \
		--standby --standby-agent $(ASAN_BUILD)/src/agent/vcr-agent \
		--standby-name initrd-standby-asan.img

# The Debian 12 standby VM disk: the standby base of image-debian with the project's
# .deb installed (lab/build-standby-disk, cached beside the other Debian images).
image-standby-disk: image-debian
	lab/build-standby-disk

check: build build-asan build-fuzz image image-asan image-debian image-standby-disk
	/usr/bin/python3 tests/run_all.py --build $(BUILD) --asan-build $(ASAN_BUILD) --fuzz-build $(FUZZ_BUILD)

demo: build image
	lab/demo --build $(BUILD)

# The demo on real Debian 12 guests (nginx, Redis, data, failback): lab/demo --real.
demo-real: build image image-standby-disk
	lab/demo --real --build $(BUILD)

# The Debian packages: build/vcrecovery_VERSION_amd64.deb and build/vcr-agent-libvirt_VERSION_amd64.deb (docs/packaging.md).
deb: deps
	scripts/build-deb

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	@clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

lab-up: image
	lab/lab up

lab-down:
	lab/lab down

# GUEST=debian: on the real Debian 12 guests (bench/results/recovery-debian.*; the images
# of image-debian and image-standby-disk); MODES (comma-separated) runs some modes only and
# MERGE=1 keeps the other modes' rows, so that each mode group can have a lab hold of its own;
# RUNS=N runs per mode (5); FORCE=1 runs and writes results on a busy machine (bench/recovery.py).
bench-recovery: build image $(if $(filter debian,$(GUEST)),image-standby-disk)
	/usr/bin/python3 bench/recovery.py --build $(BUILD) $(if $(GUEST),--guest $(GUEST)) \
		$(if $(MODES),--modes $(MODES)) $(if $(MERGE),--merge) $(if $(RUNS),--runs $(RUNS)) \
		$(if $(FORCE),--force)

bench-recovery-debian:
	$(MAKE) bench-recovery GUEST=debian

bench-warm-vm: build image
	/usr/bin/python3 bench/warm_vm.py --build $(BUILD)

# GUEST=debian: the web part on the real Debian 12 guest (nginx; the image of image-debian;
# bench/results/warm-cache-debian.*); RUNS=N runs per method (3); APPEND=1 adds the runs to
# the committed ones, so that each run can have a lab hold of its own; READS=1 (GUEST=debian):
# the file reads (GNU dd in the guest) instead of the web part; RAM=MB (GUEST=debian web): the
# guest's RAM (384; another size: bench/results/warm-cache-debian-ramMB.*).  NOWEB=1 (busybox):
# the file reads only, the committed web results kept.
bench-warm-cache: build image
	/usr/bin/python3 bench/warm_cache.py --build $(BUILD) $(if $(GUEST),--guest $(GUEST)) \
		$(if $(RUNS),--runs $(RUNS)) $(if $(APPEND),--append) $(if $(READS),--reads) \
		$(if $(RAM),--deb-memory-mb $(RAM)) $(if $(NOWEB),--no-web)

bench-migration: build image
	/usr/bin/python3 bench/migration.py --build $(BUILD) --merge

# The same between two Debian standby VMs, a ct-nginx container holding 100 MB; the
# busybox rows of migration.csv are kept (--merge, as above).  Needs the Debian images (make
# image-debian image-standby-disk).
bench-migration-debian: build image
	/usr/bin/python3 bench/migration.py --build $(BUILD) --guest debian --merge

# The same with the service's data volume attached to the container (64 MB, 8 MB of random
# bytes in it), which each migration carries (docs/migration.md "Data"); live methods only.
bench-migration-debian-vol: build image
	/usr/bin/python3 bench/migration.py --build $(BUILD) --guest debian-vol --merge

# Memory of N warm nginx standbys: one Debian standby VM with N containers vs N Debian VMs.
bench-standby-cost: build image
	/usr/bin/python3 bench/standby_cost.py --build $(BUILD)

# A longer libFuzzer campaign over every harness (bench/results/fuzz.{md,csv}): EXECS
# runs per harness (default 10^7) or CAP seconds (default 300), whichever first; JOBS
# harnesses at a time (default 1); ONLY=a,b with MERGE=1 runs some again, keeping the
# other rows.  Under nice -n 19: it eats CPU.
fuzz-long: build-fuzz
	nice -n 19 /usr/bin/python3 bench/fuzz_long.py --build $(FUZZ_BUILD) \
		$(if $(EXECS),--execs $(EXECS)) $(if $(CAP),--cap $(CAP)) $(if $(JOBS),--jobs $(JOBS)) \
		$(if $(ONLY),--only $(ONLY)) $(if $(MERGE),--merge) \
		$(if $(SESSION),--session $(SESSION)) $(if $(LOCK),--lock $(LOCK))

# The service in its container vs in its own VM (HTTP, TCP, disk): Debian images of
# image-debian and the standby disk of image-standby-disk, already built.
bench-overhead: build image
	/usr/bin/python3 bench/overhead.py --build $(BUILD)

# Seeded fault campaign (issue 13): SEED, ROUNDS, FAULTS (a comma-separated subset of
# the matrix) override the defaults.
# Redundant servers on etcd (docs/ha.md): leader takeover vs a single server restarted at
# once, bench/results/ha.{md,csv,png}; RUNS= (default 5).  On a shared machine run it as
# `flock /tmp/vcr-lab.lock make bench-ha`.
bench-hostfail: build image
	/usr/bin/python3 bench/hostfail.py --build $(BUILD) $(if $(RUNS),--runs $(RUNS))

bench-soak: build image
	/usr/bin/python3 bench/soak.py --build $(BUILD) $(if $(MINUTES),--minutes $(MINUTES)) \
		$(if $(APPEND),--append)

bench-ha: build image
	/usr/bin/python3 bench/ha.py --build $(BUILD) $(if $(RUNS),--runs $(RUNS))

# The server's cost against 10..1000 hosts and 1,000..10,000 VMs and services, with a
# load generator speaking the agent protocol (bench/scale.py, bench/loadgen/; about
# 11 min, loopback only, CPU-bound): bench/results/scale.{md,csv,png}.  RUNS= (default 3).
# On a shared machine: `flock /tmp/vcr-lab.lock make bench-scale`.
bench-scale: build
	/usr/bin/python3 bench/scale.py --build $(BUILD) $(if $(RUNS),--runs $(RUNS))

bench-faults: build image
	/usr/bin/python3 bench/faults.py --build $(BUILD) $(if $(SEED),--seed $(SEED)) \
		$(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(FAULTS),--faults $(FAULTS))

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
