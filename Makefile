# Plexus: build, test and demo. `make demo` and `make test` need root (network namespaces);
# both install the Debian packages they need when they are missing.

SHELL := /bin/bash
CARGO ?= cargo
# Pods per mode in the CRI part of `make bench`.
CRI_REPS ?= 30
# containerd and crun run the CRI tests and bench (integration/src/containerd.rs); protoc builds the
# CRI client's protos (the k8s-cri crate).
APT_PACKAGES := containernetworking-plugins iproute2 iputils-ping jq curl containerd crun protobuf-compiler

.PHONY: all deps build demo demo-flannel2 test test-real-cluster image bench soak lint fmt crd clean-demo

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
		apt-get update -qq && apt-get install -y -qq $(APT_INSTALL_FLAGS) $$missing; \
	fi

# The `plexus` shim as shipped is static and, on x86_64, has no C library at all (shim/src/nolibc.rs):
# the copy the DaemonSet installs on a node runs whatever libc the node has or lacks, and each
# exec skips glibc's start-up, most of the shim's cost per call (README "Performance").
# Elsewhere it links glibc statically. Cargo cannot link one package of a workspace statically
# (the flags would reach the proc-macros), so it is built on its own, into a target dir of its
# own, so that it never replaces a binary a running test executes. The tests, the bench and the
# image use it (integration/src/binaries.rs). $(1): empty or --release.
STATIC_SHIM_DIR = $${CARGO_TARGET_DIR:-target}/static-shim
NOLIBC_FLAGS := $(if $(filter x86_64,$(shell uname -m)),--cfg plexus_nolibc -C panic=abort \
	-C relocation-model=static -C link-arg=-nostartfiles -C link-arg=-nostdlib)
static_shim = CARGO_TARGET_DIR=$(STATIC_SHIM_DIR) $(CARGO) rustc -q $(1) -p plexus-shim --bin plexus -- \
	-C target-feature=+crt-static $(NOLIBC_FLAGS)
# The lints see the code only one cfg compiles, so the shipped shim's is linted on its own.
clippy_static_shim = CARGO_TARGET_DIR=$(STATIC_SHIM_DIR) $(CARGO) clippy -q -p plexus-shim --bin plexus -- \
	-D warnings $(NOLIBC_FLAGS)

build:
	$(CARGO) build --workspace --bins
	$(call static_shim,)

demo: deps build
	examples/standalone/demo.sh

# Two nodes with the cluster's flannel (VXLAN VNI 1) and examples/flannel2 (VNI 2): a pod per
# node, a ping across them on net1 and on eth0, and the VNI of every packet on the underlay
# (tcpdump, installed when missing). Cleans up when done, on failure and on Ctrl-C.
demo-flannel2: deps build
	@$(MAKE) --no-print-directory deps APT_PACKAGES=tcpdump
	$(CARGO) run -q -p plexus-integration --bin demo-flannel2

test: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(clippy_static_shim)
	@$(MAKE) --no-print-directory build
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "$(CARGO) nextest run --workspace --no-fail-fast"; \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		echo "$(CARGO) test --workspace"; \
		$(CARGO) test --workspace; \
	fi

# The kube and webhook tests against a real cluster (README "Tests"): `make test-real-cluster
# KUBECONFIG=~/.kube/config`. nextest's real-cluster profile (.config/nextest.toml) runs them
# one at a time and skips, as nextest reports, those that need the test API server.
test-real-cluster: deps
	@test -n "$(KUBECONFIG)" || { echo "usage: make test-real-cluster KUBECONFIG=path/to/kubeconfig"; exit 2; }
	@$(MAKE) --no-print-directory build
	PLEXUS_TEST_KUBECONFIG="$(KUBECONFIG)" $(CARGO) nextest run --profile real-cluster

# The DaemonSet's image (examples/deploy/Containerfile), built with Debian's podman (crun) from a
# root filesystem assembled from the release binaries and this machine's Debian files: nothing is
# pulled from a registry. IMAGE must match the DaemonSet's `image:` (a test compares them).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
IMAGE ?= localhost/plexus:$(VERSION)
IMAGE_PACKAGES := podman iptables netbase
# The binaries' profile: release for an image to ship. The image tests pass IMAGE_PROFILE=debug
# and use the debug binaries `make test` has already built (the same `--workspace --bins`
# build, so nothing is rebuilt), so that testing the image adds no release build to the run.
IMAGE_PROFILE ?= release
IMAGE_BUILD := $(if $(filter release,$(IMAGE_PROFILE)),--release -p plexus-controller -p plexus-shim,--workspace) --bins
image:
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(IMAGE_PACKAGES)" APT_INSTALL_FLAGS=--no-install-recommends
	$(CARGO) build $(IMAGE_BUILD)
	$(call static_shim,$(if $(filter release,$(IMAGE_PROFILE)),--release))
	examples/deploy/image-rootfs.sh $${CARGO_TARGET_DIR:-target}/$(IMAGE_PROFILE)/plexusd \
		$(STATIC_SHIM_DIR)/$(IMAGE_PROFILE)/plexus target/image/rootfs
	podman build --quiet --runtime crun -f examples/deploy/Containerfile -t $(IMAGE) target/image
	@size=$$(podman image inspect --format '{{.Size}}' $(IMAGE)); \
		echo "image $(IMAGE): $$size bytes ($$(numfmt --to=iec-i --suffix=B $$size))"

# What Plexus costs over the plugins it runs (issue 6): release builds, then the bench as root
# (tables on stdout, JSON in target/bench/plexus-bench.json). Flags go in BENCH_ARGS, e.g.
# `make bench BENCH_ARGS="--reps 300"`; `target/release/plexus-bench --help` lists them.
bench: deps
	$(CARGO) build --release --workspace --bins
	$(call static_shim,--release)
	$${CARGO_TARGET_DIR:-target}/release/plexus-bench $(BENCH_ARGS)
	rm -f target/bench/plexus-cri.json
	$${CARGO_TARGET_DIR:-target}/release/cri-bench --reps $(CRI_REPS) --json target/bench/plexus-cri.json
	@# The CRI figures join the main report (issue 8): cri_run_overhead_ms_median and the rest.
	@if [ -f target/bench/plexus-cri.json ]; then \
		jq -s '.[0] * {cri_run_overhead_ms_median: .[1].cri_run_overhead_ms_median, cri: .[1]}' \
			target/bench/plexus-bench.json target/bench/plexus-cri.json > target/bench/plexus-bench.json.tmp && \
		mv target/bench/plexus-bench.json.tmp target/bench/plexus-bench.json; \
	fi

# Seeded random runs of every CNI call mixed with every fault (issue 14): 200 runs unless
# SOAK_ARGS says otherwise, e.g. `make soak SOAK_ARGS="--runs 20"` or `SOAK_ARGS="--seed 17"`
# to replay a run a violation names. Table on stdout, report in target/soak/report.json.
soak: deps build
	$${CARGO_TARGET_DIR:-target}/debug/soak $(SOAK_ARGS)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(clippy_static_shim)

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
