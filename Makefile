# faultline — common tasks. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
REGISTRY ?= ghcr.io/faultline-dev
# The virtualenv .ci/run makes (the Python client and pytest), else python3.
PYTHON ?= $(if $(wildcard target/python/bin/python),target/python/bin/python,python3)

.PHONY: help build release test unit python lint fmt kustomize certs demo bench fuzz fuzz-parse fuzz-admission fuzz-client-hello image image-tar deploy undeploy e2e clean

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## debug build of every binary
	$(CARGO) build --workspace --bins

release: ## optimized binaries in target/release
	$(CARGO) build --workspace --release --bins

test: lint kustomize python unit ## everything CI runs: format, clippy, manifests, all tests

unit: ## all tests (unit, integration, netns, real kube-apiserver and a real node when KUBEBUILDER_ASSETS is set)
	@mkdir -p target
	# The e2e harness builds these too (the binaries it runs are never
	# stale); building them first keeps compiler output out of test logs.
	$(CARGO) build --workspace --bins
	@set -o pipefail; status=0; \
	$(CARGO) test --workspace --no-fail-fast 2>&1 | tee target/test.log || status=$$?; \
	awk '/^test result:/ {p += $$4; f += $$6; s += $$8} END {printf "tests: %d passed, %d failed, %d skipped\n", p, f, s}' target/test.log; \
	exit $$status

python: build ## the Python client's tests that need no cluster (the node tests run them all)
	PYTHONPATH=$(CURDIR)/clients/python/src $(PYTHON) -m pytest clients/python/tests -q -p no:cacheprovider

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

kustomize: ## the manifests render
	kubectl kustomize manifests/ > /dev/null
	kubectl kustomize manifests/examples/ > /dev/null
	kubectl kustomize tests/node/overlay/ > /dev/null

certs: build ## development CA + serving certificate in certs/ (keys are git-ignored)
	target/debug/faultline-webhook certs --out-dir certs

demo: build ## the proxy in front of a demo upstream: delays, aborts and clean traffic, no cluster
	bash proxy/examples/demo.sh

bench: release ## benchmarks: ratios against direct connections and nginx, measured in one run
	@set -e; for s in bench/*.sh; do [ "$$s" = bench/lib.sh ] && continue; echo "== $$s"; bash "$$s"; done

fuzz: fuzz-parse fuzz-admission fuzz-client-hello ## fuzz the policy parser, the admission decoder and the TLS ClientHello reader (needs cargo-fuzz and a nightly toolchain)

fuzz-parse: ## fuzz the policy parser
	cd policy && mkdir -p fuzz/corpus/parse && cargo +nightly fuzz run parse fuzz/corpus/parse fuzz/seeds -- -max_total_time=120

fuzz-client-hello: ## fuzz the proxy's TLS ClientHello reader (server name for sni rules)
	cd proxy && mkdir -p fuzz/corpus/client_hello && cargo +nightly fuzz run client_hello fuzz/corpus/client_hello fuzz/seeds -- -max_total_time=120

fuzz-admission: ## fuzz the admission decoder (AdmissionReview -> /mutate and /validate decisions)
	cd webhook && mkdir -p fuzz/corpus/admission && cargo +nightly fuzz run admission fuzz/corpus/admission fuzz/seeds -- -max_total_time=120

image: ## container images faultline-proxy and faultline-webhook (docker or podman: DOCKER=podman; else as tarballs)
	REGISTRY=$(REGISTRY) bash scripts/image.sh $(VERSION)

image-tar: release ## the images as docker-archive tarballs in target/images, no container engine needed
	REGISTRY=$(REGISTRY) bash scripts/image-tar.sh $(VERSION)

deploy: ## install into the current kubectl context, images pinned to $(REGISTRY):$(VERSION)
	REGISTRY=$(REGISTRY) bash scripts/deploy.sh $(VERSION)

undeploy: ## remove from the current kubectl context (webhook configurations first)
	bash scripts/undeploy.sh

e2e: ## end to end on a throwaway kind cluster (needs docker, kind and kubectl)
	bash scripts/e2e-kind.sh

clean: ## remove build output
	$(CARGO) clean
