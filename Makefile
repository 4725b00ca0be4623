# pmemtrace: `make install` as root sets everything up (e.g. `sudo make install`, or in a root shell);
# `make test` as root runs the suite. Nothing here calls sudo.
PREFIX     ?= /usr/local
VENV       ?= /opt/pmemtrace/venv
SYSPYTHON  ?= /usr/bin/python3
PYTEST_ARGS ?=
KREL       := $(shell uname -r)
ARCH       := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)

.PHONY: install deps venv test test-deps lint bench clean

# one order, also under make -j: deps (apt) -> venv (pip) -> the link
install: venv
	ln -sf $(VENV)/bin/pmemtrace $(PREFIX)/bin/pmemtrace
	@echo "installed: $(PREFIX)/bin/pmemtrace -> $(VENV)/bin/pmemtrace; try (as root): pmemtrace doctor"

# Debian's bcc (PyPI's "bcc" is an unrelated package); headers for the running
# kernel when the distribution has them, else its generic ones (pmemtrace builds
# a merged tree from those at run time; see `pmemtrace doctor`).
deps:
	@test "$$(id -u)" = 0 || { echo "make install: run as root (e.g. sudo make install)"; exit 1; }
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    python3-bpfcc python3-venv gcc libc6-dev make
	if apt-cache show linux-headers-$(KREL) 2>/dev/null | grep -q '^Package:'; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-headers-$(KREL); \
	elif apt-cache show linux-headers-$(ARCH) 2>/dev/null | grep -q '^Package:'; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-headers-$(ARCH); \
	else \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-headers-generic; \
	fi

venv: deps
	test -x $(VENV)/bin/python || $(SYSPYTHON) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q '.[test]'

test: test-deps
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# What only the test tiers need: tmux (top's live screen), QEMU, busybox, cpio, kmod, ndctl and
# the mkfs tools (the DAX guests), chromium and python3-pil (plot's picture), prometheus + promtool
# (the exporter test starts its own). Installed by the test path, never by `make install`. Without
# root, missing packages are listed and the unit tier still runs.
TEST_PACKAGES := tmux qemu-system-x86 busybox-static cpio kmod ndctl xfsprogs e2fsprogs chromium python3-pil prometheus
test-deps:
	@missing=$$(for p in $(TEST_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	    echo "make test: not root, not installing test packages:" $$missing "(the live and dax tiers need them)"; \
	    exit 0; fi; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing

# ruff and mypy on the package (config in pyproject.toml; both come with the test extras)
lint:
	$(VENV)/bin/python -m ruff check pmemtrace
	$(VENV)/bin/python -m mypy pmemtrace

bench:
	$(VENV)/bin/python bench/bench.py

clean:
	rm -rf build *.egg-info .pytest_cache
