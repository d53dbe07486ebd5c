# xenrules: the README's commands. Run as root on Debian bookworm.
PYTHON := /usr/bin/python3
PYTEST_ARGS ?= -q

# Wait for the dpkg lock (another apt run, unattended-upgrades) instead of failing.
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600

# Everything the engine, the tests and the sandbox need, from Debian only.
RUNTIME_DEBS := python3 python3-yaml python3-jsonschema python3-pyroute2 python3-pyxs iproute2
SANDBOX_DEBS := procps iptables nftables python3-nftables
TEST_DEBS := python3-pytest bridge-utils xenstore-utils iptables nftables util-linux mount kmod \
	net-tools e2fsprogs openvswitch-switch openvswitch-common python3-scapy python3-hypothesis \
	gcc libc6-dev valgrind
# Building the .deb (debian/control's Build-Depends) and checking it.
BUILD_DEBS := build-essential debhelper dh-python python3-setuptools dpkg-dev fakeroot lintian man-db groff-base
# autopkgtest's and piuparts' own tools (make autopkgtest / make piuparts)
PACKAGE_TOOL_DEBS := autopkgtest piuparts debootstrap
DEB_VERSION = $(shell $(PYTHON) tools/build_deb.py --print-version)
DEB = build/deb/xenrules_$(DEB_VERSION)_$(shell dpkg --print-architecture).deb

.PHONY: deps deps-runtime deps-build originals check check-trixie check-bookworm check-package deb autopkgtest piuparts demo bench clean

# the engine plus what the simulated dom0 uses (sysctl)
deps-runtime:
	$(APT_GET) update
	$(APT_GET) install -y --no-install-recommends $(RUNTIME_DEBS) $(SANDBOX_DEBS)

deps:
	$(APT_GET) update
	$(APT_GET) install -y --no-install-recommends $(RUNTIME_DEBS) $(SANDBOX_DEBS) $(TEST_DEBS)
	@# systemd-socket-activate (the warm helper's socket-activation test). Only
	@# when missing: installing systemd over itself would upgrade it in place.
	command -v systemd-socket-activate >/dev/null || \
		$(APT_GET) install -y --no-install-recommends systemd

# Debian's original scripts (xen-utils-common), the oracle of the differential tests.
originals: deps
	$(PYTHON) -m xenrules.sandbox.originals

deps-build:
	$(APT_GET) update
	$(APT_GET) install -y --no-install-recommends $(RUNTIME_DEBS) $(BUILD_DEBS)

# build/deb/xenrules_<version>_<dpkg arch>.deb, built outside the checkout (tools/build_deb.py);
# lintian's report is shown here and must be clean in the package tests.
deb: deps-build
	$(PYTHON) tools/build_deb.py
	@# lintian leaves mldbm-elf-* files in TMPDIR: a private one, removed after
	tmp=$$(mktemp -d) && { TMPDIR=$$tmp lintian --info --display-info $(DEB) || true; }; rm -rf "$$tmp"
	@echo "built $(DEB): apt install ./$(DEB)"

# The test command: installs what it needs, then the whole suite.
# pytest's exit status 5 means no test ran: that is a failure too.
# The package tests (tests/test_package*.py, marker `package`) install the real
# .deb next to xen-utils-common and put the machine back as found.
check: originals deps-build
	$(PYTHON) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no test: failing" >&2; exit 1; fi; exit $$rc

# What .ci/run does on this host (the whole suite, package tests included, then
# autopkgtest and piuparts of that release) in a container of trixie or bookworm:
# a debootstrap root cached under /var/cache/xenrules-ci (made here when missing),
# a fresh clone of HEAD, unshare + pivot_root (tools/container_check.py).
CONTAINER_TARGETS ?= check,autopkgtest,piuparts
check-trixie check-bookworm:
	command -v debootstrap >/dev/null || $(APT_GET) install -y --no-install-recommends debootstrap
	$(PYTHON) tools/container_check.py $(@:check-%=%) --make $(CONTAINER_TARGETS) -- $(PYTEST_ARGS)

# Only the package tests: build, lintian, install, upgrade, remove, purge.
check-package: originals deps-build
	$(PYTHON) -m pytest $(PYTEST_ARGS) -m package tests/test_package.py tests/test_package_lists.py tests/test_manpage.py

# debian/tests with autopkgtest's null runner, on this machine (cleaned up after).
autopkgtest: deb deps
	$(APT_GET) install -y --no-install-recommends $(PACKAGE_TOOL_DEBS)
	$(PYTHON) tools/run_autopkgtest.py $(DEB)

# install/remove/purge in a clean bookworm chroot (made once by debootstrap).
piuparts: deb
	$(APT_GET) install -y --no-install-recommends $(PACKAGE_TOOL_DEBS)
	$(PYTHON) tools/run_piuparts.py $(DEB)

# The main job on the embedded default: a simulated dom0, no Xen needed.
demo: deps-runtime
	$(PYTHON) -m xenrules sandbox

# every event against the originals, then antispoof's cost and its 1/100/1000-guest scaling,
# then the launcher alone (the helper path uses the C launcher; XENRULES_BENCH_LAUNCHER=python)
bench: originals
	$(PYTHON) bench/bench.py
	$(PYTHON) bench/antispoof.py
	@# the launcher's floor against /bin/true and python3 -IS: its own section of PERFORMANCE.md
	$(PYTHON) bench/launcher.py

clean:
	rm -rf .cache .pytest_cache build
	find . -name __pycache__ -prune -exec rm -rf {} +

# the warm helper's own share per phase (xenrules helper --profile); COMPARE=DIR
# also measures another checkout's helper, alternating (bench/phases.py)
.PHONY: bench-profile
bench-profile: launcher
	$(PYTHON) bench/phases.py $(if $(COMPARE),--compare $(COMPARE))

# antispoof (issue 12): vif-bridge online/offline with antispoof off and on,
# and on with 1, 100 and 1000 other guests' elements loaded
.PHONY: bench-antispoof
bench-antispoof:
	$(PYTHON) bench/antispoof.py

# 10,000+ bad rule files through `xenrules check`'s compiler (tools/fuzz.py):
# never a traceback, never a hang, always file:line:col; writes build/reliability/fuzz.json.
# `make check` runs a deterministic sample (tests/test_rule_fuzz.py).
.PHONY: fuzz
fuzz: deps
	$(PYTHON) tools/fuzz.py

# Rounds of 256 concurrent vif, tap and block events on the simulated dom0, with and
# without the warm helper, ~10% SIGKILLed at random times then recovered, XenStore
# stalls, a leak and state check after every round (tools/torture.py): writes
# build/reliability/torture.json and docs/RELIABILITY.md (with the
# hostile and fuzz figures). `make check` runs two
# quick rounds and the checker's self-tests (tests/test_torture.py).
.PHONY: torture
torture: deps
	$(PYTHON) tools/torture.py

# docs/RELIABILITY.md again from its own torture figures and what `make fuzz` and the
# hostile-values tests (tests/test_hostile_*.py) left in build/reliability (tools/reliability_report.py).
.PHONY: reliability-report
reliability-report:
	$(PYTHON) tools/reliability_report.py

# The compiled launcher (launcher/xenrules-launcher.c, issue 10) for the checkout:
# Debian's hardening flags, no warning allowed; its fallback execs this checkout's
# launcher/xenrules-inprocess. The package builds its own (debian/rules).
LAUNCHER_FLAGS = $(shell DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CPPFLAGS) \
	$(shell DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CFLAGS) -Wall -Wextra -Werror
.PHONY: launcher
launcher: build/launcher/xenrules-launcher
build/launcher/xenrules-launcher: launcher/xenrules-launcher.c
	mkdir -p build/launcher
	gcc $(LAUNCHER_FLAGS) -DXENRULES_INPROCESS='"$(CURDIR)/launcher/xenrules-inprocess"' \
		-o $@.tmp $< $(shell DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get LDFLAGS)
	mv $@.tmp $@
