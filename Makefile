# pmemtrace: `sudo make install` sets everything up, `sudo make test` runs the suite.
PREFIX     ?= /usr/local
VENV       ?= /opt/pmemtrace/venv
SYSPYTHON  ?= /usr/bin/python3
PYTEST_ARGS ?=
KREL       := $(shell uname -r)
ARCH       := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)

.PHONY: install deps venv test lint bench clean

install: deps venv
	ln -sf $(VENV)/bin/pmemtrace $(PREFIX)/bin/pmemtrace
	@echo "installed: $(PREFIX)/bin/pmemtrace -> $(VENV)/bin/pmemtrace; try: sudo pmemtrace doctor"

# Debian's bcc (PyPI's "bcc" is an unrelated package); headers for the running
# kernel when the distribution has them, else its generic ones (pmemtrace builds
# a merged tree from those at run time; see `pmemtrace doctor`).
deps:
	@test "$$(id -u)" = 0 || { echo "make install: run as root (sudo make install)"; exit 1; }
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    python3-bpfcc python3-venv gcc libc6-dev make tmux qemu-system-x86 busybox-static cpio kmod ndctl xfsprogs e2fsprogs
	if apt-cache show linux-headers-$(KREL) 2>/dev/null | grep -q '^Package:'; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-headers-$(KREL); \
	elif apt-cache show linux-headers-$(ARCH) 2>/dev/null | grep -q '^Package:'; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-headers-$(ARCH); \
	else \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-headers-generic; \
	fi

venv:
	test -x $(VENV)/bin/python || $(SYSPYTHON) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q '.[test]'

test:
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# ruff and mypy on the package (config in pyproject.toml; both come with the test extras)
lint:
	$(VENV)/bin/python -m ruff check pmemtrace
	$(VENV)/bin/python -m mypy pmemtrace

bench:
	$(VENV)/bin/python bench/bench.py

clean:
	rm -rf build *.egg-info .pytest_cache
