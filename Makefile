# Two commands do all set-up on a fresh Debian/Ubuntu machine (as root):
#   make lab   - install the tool and LXD, build the Debian image, bring up the guide's lab, check it by HTTP
#                (on Incus instead on a machine with Incus and no LXD, or with DAEMON=incus)
#   make test  - the whole test suite, against real LXD and Incus daemons this starts if needed
#   make unit  - the tests that need no LXD; make fuzz - Hypothesis exploring new examples
#   make incus - Incus (Debian's incus-base) beside LXD, initialised, with LXD's images (tests/test_incus.py)
#   make cluster / make cluster-down - a three-member LXD cluster in containers, remote `labcluster`
#   make cluster-test - labs on that cluster (tests/test_cluster_lab.py)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
RECONCILE := $(VENV)/bin/reconcile

.PHONY: fuzz docs-outputs docs-graph lint schema lab lab-daemon test setup lxd lan incus images image-tiny image-debian image-lxd-member unit bench clean cluster cluster-down cluster-test

# The daemon `make lab` uses: lxd, or incus on a machine with Incus and no LXD (scripts/lab-daemon.sh).
# DAEMON=incus picks Incus on a machine with both; LXD is then neither installed, started nor asked,
# and reconcile is sent to Incus by INCUS_DIR (LXD_DIR unset).
DAEMON ?= $(shell scripts/lab-daemon.sh)
INCUS_DIR ?= /var/lib/incus
LAB_CLIENT_lxd := lxc
LAB_CLIENT_incus := incus
LAB_ENV_incus := env -u LXD_DIR INCUS_DIR=$(INCUS_DIR)
# incus-up.sh copies no image from LXD: image-debian.sh imports the lab's own.
LAB_UP_lxd := scripts/lxd-up.sh
LAB_UP_incus := $(LAB_ENV_incus) INCUS_IMAGES=none scripts/incus-up.sh

lab: setup lab-daemon lan
	$(LAB_ENV_$(DAEMON)) IMAGE_CLIENT=$(LAB_CLIENT_$(DAEMON)) scripts/image-debian.sh
	$(LAB_ENV_$(DAEMON)) $(RECONCILE) apply --yes
	$(LAB_ENV_$(DAEMON)) $(RECONCILE) check

lab-daemon:
	$(or $(LAB_UP_$(DAEMON)),$(error make lab: DAEMON is lxd or incus, not '$(DAEMON)'))

# Tests run in pytest-xdist workers, each module whole in one worker (modules that share a subnet or
# the cluster together: tests/conftest.py SHARED); then, alone, the tests that kill the LXD daemon and
# every test's Incus variant (marker daemon_exclusive).
WORKERS ?= 3
test: setup lxd image-tiny image-debian incus lint
	$(PY) -m pytest -q -n $(WORKERS) --dist loadgroup --durations=25 -m "not daemon_exclusive"
	$(PY) -m pytest -q --durations=5 -m daemon_exclusive

lint: setup
	$(PY) -m ruff check reconciler tests scripts
	$(PY) -m mypy reconciler

unit: setup
	$(PY) -m pytest -q -m "not lxd" -n 2 --dist loadgroup --durations=10

# Hypothesis explores new examples (CI replays a fixed set) for FUZZ_MINUTES, and prints each failure
# as the @example to paste above its test. FUZZ_TESTS narrows it (e.g. tests/test_loader_fuzz.py).
FUZZ_MINUTES ?= 10
FUZZ_TESTS ?= tests
fuzz: setup lxd image-tiny
	FUZZ_MINUTES=$(FUZZ_MINUTES) bash scripts/fuzz.sh $(FUZZ_TESTS)

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@python3 -c "import ensurepip, venv" 2>/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv python3-pip; }
	@# The tests check rendered configs with the real haproxy -c, make a TLS certificate with openssl,
	@# and render `reconcile graph` with Graphviz's dot; git for pre-commit's hook test; tmux is the
	@# real terminal whose screen the colour tests read.
	@command -v haproxy >/dev/null && command -v openssl >/dev/null && command -v dot >/dev/null && command -v git >/dev/null \
		&& command -v tmux >/dev/null \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy openssl graphviz git tmux; }
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

lxd:
	scripts/lxd-up.sh

lan:
	scripts/lan-up.sh

# Incus beside LXD (no network of its own, no NAT), with LXD's reconciler-tiny image copied over (and
# reconciler-debian when LXD has it; INCUS_IMAGES="..." names others).
incus: lxd image-tiny
	scripts/incus-up.sh

image-tiny: lxd
	scripts/image-tiny.sh

image-debian: lxd
	scripts/image-debian.sh

image-lxd-member: lxd
	scripts/image-lxd-member.sh

# Idempotent: a second run changes nothing. `scripts/cluster-up.sh --check` also proves that
# macvlan lab containers on every member answer the host.
cluster: setup lxd image-tiny image-debian image-lxd-member
	scripts/cluster-up.sh

cluster-down:
	scripts/cluster-down.sh

# Labs on the cluster (it is brought up first, and left up): the guide's lab over three members
# (examples/cluster.yaml), moves, an evacuation, placement, plan's reads; prints its timings.
# `make test` runs it too.
cluster-test: setup lxd image-tiny image-debian
	$(PY) -m pytest -q -s tests/test_cluster_lab.py

# The local daemon, the same over HTTPS (scripts/remote-local.sh: the lxc remote bench-https in
# its own lxc configuration), the cluster of `make cluster` if it is up, and the local Incus of `make
# incus` if it runs (else their rows are skipped); writes docs/performance.md's results,
# docs/performance.json and docs/performance.png (matplotlib, installed into the venv here, not a
# dependency of the package). Other flags: make bench BENCH_ARGS='--sizes 3' (or '--where incus')
bench: setup lxd image-tiny
	$(VENV)/bin/pip install -q matplotlib
	$(PY) scripts/benchmark.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

# The guide's lab as a picture, for docs/tutorial.md (no LXD needed).
docs-graph: setup
	$(RECONCILE) graph -f lab.yaml --format svg -o docs/lab-graph.svg

# Rewrites the command outputs shown in README.md, docs/tutorial.md and docs/cli.md from real runs (the
# guide's lab is brought up from nothing, and left up; `scripts/docs-outputs.py --offline` writes only
# those that need no LXD). tests/test_guide_lab.py and tests/test_docs_agree.py fail when they drift.
docs-outputs: setup lxd lan image-debian
	$(PY) scripts/docs-outputs.py

schema: setup
	$(PY) -m reconciler.spec > schemas/lab.schema.json
	$(PY) -m reconciler.spec --override > schemas/lab.override.schema.json
