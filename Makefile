# xenrules: the README's commands. Run as root on Debian bookworm.
PYTHON := /usr/bin/python3
PYTEST_ARGS ?= -q

# Wait for the dpkg lock (another apt run, unattended-upgrades) instead of failing.
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600

# Everything the engine, the tests and the sandbox need, from Debian only.
RUNTIME_DEBS := python3 python3-yaml python3-jsonschema python3-pyroute2 python3-pyxs iproute2
SANDBOX_DEBS := procps iptables nftables
TEST_DEBS := python3-pytest bridge-utils xenstore-utils iptables nftables util-linux kmod

.PHONY: deps deps-runtime originals check demo bench clean

# the engine plus what the simulated dom0 uses (sysctl)
deps-runtime:
	$(APT_GET) update
	$(APT_GET) install -y --no-install-recommends $(RUNTIME_DEBS) $(SANDBOX_DEBS)

deps:
	$(APT_GET) update
	$(APT_GET) install -y --no-install-recommends $(RUNTIME_DEBS) $(SANDBOX_DEBS) $(TEST_DEBS)

# Debian's original scripts (xen-utils-common), the oracle of the differential tests.
originals: deps
	$(PYTHON) -m xenrules.sandbox.originals

# The test command: installs what it needs, then the whole suite.
# pytest's exit status 5 means no test ran: that is a failure too.
check: originals
	$(PYTHON) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no test: failing" >&2; exit 1; fi; exit $$rc

# The main job on the embedded default: a simulated dom0, no Xen needed.
demo: deps-runtime
	$(PYTHON) -m xenrules sandbox

bench: originals
	$(PYTHON) bench/bench.py

clean:
	rm -rf .cache .pytest_cache build
	find . -name __pycache__ -prune -exec rm -rf {} +
