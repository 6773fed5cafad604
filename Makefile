# isobox — the two commands of the README: `make demo` and `make test`.
# Both install what they need first (Debian packages, a virtualenv with the project).

VENV     ?= .venv
PY       := $(VENV)/bin/python
# The virtualenv's interpreter: Debian's python3.11 where it exists (built with PGO and LTO and
# linked statically: `isobox run` is ~15 % faster on it than on a plain source build, such as a
# pyenv shim that may come first on PATH), else whatever python3 is.
PYTHON   ?= $(firstword $(wildcard /usr/bin/python3.11) python3)
# golang-go and runtime-tools (with its -dev dependencies): the conformance tests build
# their runtimetest offline (scripts/conformance.py). docker-registry, skopeo, openssl: the
# registry tests and benchmark; debootstrap: `isobox image bootstrap debian:bookworm`;
# conmon: the per-container monitor; tini: `run --init`; nftables: NAT and published ports;
# qemu-system-x86, qemu-utils, linux-image-amd64 (the guest kernel), gcc + libc6-dev and
# musl-tools (the static guest agent, small with musl): VMs.
APT_PKGS := python3-venv busybox-static runc podman containerd conmon uidmap iproute2 libseccomp2 procps psmisc \
            golang-go golang-github-opencontainers-runtime-tools-dev \
            docker-registry skopeo debootstrap openssl tini nftables \
            qemu-system-x86 qemu-utils linux-image-amd64 gcc libc6-dev musl-tools
STAMP    := $(VENV)/.isobox-installed
# isobox-runtime's modules compiled into one file (scripts/build-code-bundle)
BUNDLE   := $(VENV)/isobox-runtime.bundle
BUNDLE_PKGS := isobox isobox.runtime isobox.oci isobox.cgroups isobox.linux
# the code of the methods dataclasses generate, compiled ahead (src/isobox/dataclass_code.py)
DC_CODE  := $(VENV)/isobox-dataclasses.code

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all deps apt venv pyc demo test lint bench clean

all: test

# Debian packages (python3-venv: `-m venv` with Debian's interpreter): installed once; a
# marker file records what was installed.
apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# the API tests drive the real docker CLI: Debian's docker.io (CLI 20.10, API 1.41) when
	@# none is installed (these machines come with docker CLI 28 in /usr/local/bin)
	@command -v docker >/dev/null || { echo "installing Debian package: docker.io (for its docker CLI)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null; }

$(STAMP): pyproject.toml scripts/launcher scripts/install-launcher
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	scripts/install-launcher $(PY) $(VENV)/bin/isobox-runtime isobox.runtime.cli --bundle $(BUNDLE)
	scripts/install-launcher $(PY) $(VENV)/bin/isobox-vm-runtime isobox.vm.runtime.cli --site
	touch $(STAMP)

# Bytecode, compiled ahead: this environment may set PYTHONDONTWRITEBYTECODE, and every
# isobox-runtime call would otherwise compile its modules again (~15 ms); the runtime's
# code bundle (scripts/build-code-bundle; a module edited since is imported from its source);
# and the dataclasses' generated methods (a class edited since compiles them as before).
pyc: $(STAMP)
	@$(PY) -m compileall -q src >/dev/null
	@$(PY) scripts/build-code-bundle src $(BUNDLE) $(BUNDLE_PKGS)
	@$(PY) -m isobox.dataclass_code $(DC_CODE) isobox >/dev/null

venv: $(STAMP)

deps: apt venv pyc

demo: deps
	$(PY) scripts/demo.py

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/mypy

test: deps lint
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=15 tests

bench: deps
	$(PY) benchmarks/runtime_lifecycle.py

clean:
	rm -rf $(VENV) build src/*.egg-info
