# CoreDog — build, generate and test.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

# CoreDog's image: make images writes it to dist/images/coredog.tar.
IMAGE_REPO ?= ghcr.io/coredog/coredog
TAG ?= dev
IMG ?= $(IMAGE_REPO):$(TAG)
GO ?= go
BIN := $(CURDIR)/bin
CONTROLLER_GEN := $(BIN)/controller-gen
# The envtest binaries (kube-apiserver, etcd, kubectl) live outside the repo;
# hack/envtest.sh builds them once and prints their directory.
ENVTEST_ASSETS = $(shell $(CURDIR)/hack/envtest.sh)
TEST_FLAGS ?= -race -count=1
TEST_TIMEOUT ?= 25m
# The real-node suite; a cold first run also builds the node binaries first.
TEST_NODE_TIMEOUT ?= 15m
# make test fuzzes each target for 30 s (CI runs make test); make fuzz for longer.
TEST_FUZZ_TIME ?= 30s

.PHONY: all
all: build

##@ Generation

$(CONTROLLER_GEN): hack/tools/go.mod hack/tools/go.sum
	cd hack/tools && $(GO) build -o $(CONTROLLER_GEN) sigs.k8s.io/controller-tools/cmd/controller-gen

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## CRDs and RBAC from the kubebuilder markers; the chart gets a copy of the CRDs.
	$(CONTROLLER_GEN) rbac:roleName=coredog-manager crd paths="./api/..." paths="./controllers/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	cp config/crd/bases/*.yaml charts/coredog/crds/

.PHONY: generate
generate: $(CONTROLLER_GEN) ## DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths="./api/..."

.PHONY: verify-generated
verify-generated: ## Fails when committed generated files differ from what the generators write.
	hack/verify-generated.sh

##@ Build

.PHONY: build
build: ## bin/manager, bin/agent and bin/kubectl-coredog.
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/manager ./cmd/manager
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/agent ./cmd/agent
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/kubectl-coredog ./cmd/kubectl-coredog

.PHONY: vet
vet:
	$(GO) vet ./...

.PHONY: lint
lint: ## golangci-lint with .golangci.yml: the kubebuilder scaffold's linters, modernize, and depguard rules for the boundaries between manager, agent and plugin (built once by hack/golangci-lint.sh).
	@lint="$$(hack/golangci-lint.sh)"; "$$lint" run ./...

.PHONY: lint-fix
lint-fix: ## The same, applying the fixes the linters offer (formatting, modernize).
	@lint="$$(hack/golangci-lint.sh)"; "$$lint" run --fix ./...

.PHONY: envtest
envtest: ## Build (once) and print the envtest binaries' directory.
	@hack/envtest.sh

# The plugin's release version: spec.version of the krew manifest and the
# release tag in its download URIs.
VERSION ?= v0.1.0

.PHONY: krew
krew: ## kubectl-coredog's krew release in dist/: a tar.gz per linux/darwin/windows x amd64/arm64 and the manifest dist/coredog.yaml (VERSION=v0.1.0).
	VERSION=$(VERSION) hack/krew.sh -out dist

##@ Demo

.PHONY: demo
demo: build ## Run CoreDog end to end on this machine: control plane, manager, agent, a real crash, the stored dump. KEEP=1 leaves it running; S3=1 stores into a local S3 server.
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/demo ./hack/demo
	@KEEP="$(KEEP)" S3="$(S3)" $(BIN)/demo -repo $(CURDIR) -bin $(BIN)

##@ Test

.PHONY: test
test: verify-generated vet lint build ## Unit, envtest and end-to-end suites, a short fuzz of every target, then the real-node suite alone (builds the envtest and node binaries, promtool, krew's tools, helm and the images when missing).
	@hack/promtool.sh >/dev/null
	@hack/krew-tools.sh >/dev/null
	@assets="$$(hack/envtest.sh)"; echo "KUBEBUILDER_ASSETS=$$assets"; \
	KUBEBUILDER_ASSETS="$$assets" $(GO) test $(TEST_FLAGS) -timeout $(TEST_TIMEOUT) ./...
	@echo "Fuzzing each target for $(TEST_FUZZ_TIME) (make fuzz FUZZ_TIME=10m for longer)"
	@$(MAKE) --no-print-directory fuzz FUZZ_TIME=$(TEST_FUZZ_TIME)
	@$(MAKE) --no-print-directory test-node

FUZZ_TIME ?= 30s
FUZZ_PARALLEL ?=
# Every fuzz target, as package:Target.
FUZZ_TARGETS = $(shell grep -rl --include='*_test.go' '^func Fuzz' . | xargs grep -o '^func Fuzz[A-Za-z0-9_]*' | sed -E 's|^\./(.*)/[^/]*_test.go:func (Fuzz.*)|\1:\2|' | sort -u)

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZ_TIME (default 30s), one after another with FUZZ_PARALLEL workers (default: the CPU count); crashers land in testdata/fuzz as regression seeds.
	@FUZZ_TIME=$(FUZZ_TIME) FUZZ_PARALLEL=$(FUZZ_PARALLEL) GO=$(GO) hack/fuzz.sh $(FUZZ_TARGETS)

# Every package with benchmarks.
BENCH_PKGS = $(shell grep -rl --include='*_test.go' '^func Benchmark' . | xargs -n1 dirname | sort -u)

.PHONY: bench
bench: ## Package benchmarks, then test/bench (real binaries; writes docs/benchmarks.md). Never asserts timings.
	@assets="$$(hack/envtest.sh)"; \
	KUBEBUILDER_ASSETS="$$assets" $(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -timeout 60m $(BENCH_PKGS) | tee bench.out

##@ Images

# Every time in the images is the last commit's (reproducible builds).
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
IMAGE_PLATFORMS ?= linux/amd64,linux/arm64
IMAGES ?= coredog,pause,crasher

.PHONY: images
images: ## Build images without Docker into dist/images, OCI archives for ctr -n k8s.io images import: coredog.tar (IMG, default ghcr.io/coredog/coredog:dev, for IMAGE_PLATFORMS linux/amd64,linux/arm64), and the node suite's pause.tar and crasher.tar (this machine's arch); IMAGES=coredog for ours alone.
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./hack/images -out dist/images -image $(IMG) -platforms $(IMAGE_PLATFORMS) -only $(IMAGES)

.PHONY: docker-build
docker-build: ## Build the image (needs a Docker engine).
	docker build -t $(IMG) .

PLATFORMS ?= linux/amd64,linux/arm64
.PHONY: docker-buildx
docker-buildx: ## Build and push a multi-arch image (needs docker buildx).
	docker buildx build --platform $(PLATFORMS) -t $(IMG) --push .

.PHONY: test-e2e
test-e2e: build ## The end-to-end suite alone (binaries as processes, versitygw, real crashes).
	@assets="$$(hack/envtest.sh)"; KUBEBUILDER_ASSETS="$$assets" $(GO) test $(TEST_FLAGS) -timeout $(TEST_TIMEOUT) -v ./test/e2e/

.PHONY: test-faults
test-faults: build ## The full fault matrix (TestFault* in test/e2e with COREDOG_FAULTS=full; writes docs/reliability.md) and the full 60 s crash loop.
	@assets="$$(hack/envtest.sh)"; KUBEBUILDER_ASSETS="$$assets" COREDOG_FAULTS=full COREDOG_FAULTS_REPORT=$(CURDIR)/docs/reliability.md \
		$(GO) test -count=1 -timeout 80m -v -run '^TestFault' ./test/e2e/
	@assets="$$(hack/envtest.sh)"; KUBEBUILDER_ASSETS="$$assets" COREDOG_FAULTS=full \
		$(GO) test -count=1 -timeout 10m -run '^TestCrashLoopIsCounted$$' ./agent/app/

.PHONY: test-node
test-node: ## The real-node suite alone (test/node, build tag nodesuite): a real kubelet and containerd, the chart installed with helm, real crashes; it changes the machine's core_pattern while it runs and restores it. Runs after every other suite, never beside one.
	@hack/node-packages.sh
	@$(MAKE) --no-print-directory images IMAGE_PLATFORMS=linux/$$($(GO) env GOARCH)
	@assets="$$(hack/envtest.sh --node)"; echo "KUBEBUILDER_ASSETS=$$assets"; \
	KUBEBUILDER_ASSETS="$$assets" $(GO) test -tags nodesuite -count=1 -timeout $(TEST_NODE_TIMEOUT) -v ./test/node/

.PHONY: helm
helm: ## Build (once) and print helm's path (the real-node suite installs the chart with it).
	@hack/helm.sh

.PHONY: promtool
promtool: ## Build (once) and print promtool's path (test/alerts runs it on the chart's alerting rules).
	@hack/promtool.sh

.PHONY: krew-tools
krew-tools: ## Build (once) and print the directory of krew's validate-krew-manifest and kubectl-krew (test/krew runs them on the manifest).
	@hack/krew-tools.sh

.PHONY: versitygw
versitygw: ## Build (once) and print the versitygw S3 server's path.
	@hack/versitygw.sh

.PHONY: clean
clean:
	rm -rf $(BIN) bench.out dist
