# Plexus: build, test and demo. `make demo` and `make test` need root (network namespaces);
# both install the Debian packages they need when they are missing.

SHELL := /bin/bash
CARGO ?= cargo
APT_PACKAGES := containernetworking-plugins iproute2 iputils-ping jq curl

.PHONY: all deps build demo test lint fmt crd clean-demo

all: build

# Installs only the packages that are missing; `apt-get update` only when something is.
deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq $$missing; \
	fi

build:
	$(CARGO) build --workspace --bins

demo: deps build
	examples/standalone/demo.sh

test: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build --workspace --bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "$(CARGO) nextest run --workspace --no-fail-fast"; \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		echo "$(CARGO) test --workspace"; \
		$(CARGO) test --workspace; \
	fi

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# The CRD YAML is generated from the Rust type; tests fail when it or the deploy copy drift.
crd:
	$(CARGO) run -q -p plexus-crds --bin crdgen > crds/crd.yaml.tmp
	mv crds/crd.yaml.tmp crds/crd.yaml
	cp crds/crd.yaml examples/deploy/10-crd.yaml

# Removes what an interrupted demo left: its namespaces (and any process still in them), and
# its work directory.
clean-demo:
	@for ns in $$(ip netns list | awk '{print $$1}' | grep '^plexus-demo-' || true); do \
		for pid in $$(ip netns pids "$$ns"); do echo "killing pid $$pid in $$ns"; kill "$$pid" 2>/dev/null || true; done; \
		sleep 0.5; \
		for pid in $$(ip netns pids "$$ns"); do kill -9 "$$pid" 2>/dev/null || true; done; \
		ip netns del "$$ns" && echo "deleted network namespace $$ns"; \
	done
	@if [ -d /tmp/plexus-demo ]; then rm -rf /tmp/plexus-demo && echo "removed /tmp/plexus-demo"; fi
