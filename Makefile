# CoreDog — build, generate and test.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

IMG ?= ghcr.io/coredog/coredog:dev
GO ?= go
BIN := $(CURDIR)/bin
CONTROLLER_GEN := $(BIN)/controller-gen
# The envtest binaries (kube-apiserver, etcd, kubectl) live outside the repo;
# hack/envtest.sh builds them once and prints their directory.
ENVTEST_ASSETS = $(shell $(CURDIR)/hack/envtest.sh)
TEST_FLAGS ?= -race -count=1
TEST_TIMEOUT ?= 25m

.PHONY: all
all: build

##@ Generation

$(CONTROLLER_GEN): hack/tools/go.mod hack/tools/go.sum
	cd hack/tools && $(GO) build -o $(CONTROLLER_GEN) sigs.k8s.io/controller-tools/cmd/controller-gen

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## CRDs and RBAC from the kubebuilder markers.
	$(CONTROLLER_GEN) rbac:roleName=coredog-manager crd paths="./api/..." paths="./controllers/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: generate
generate: $(CONTROLLER_GEN) ## DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths="./api/..."

.PHONY: verify-generated
verify-generated: ## Fails when committed generated files differ from what the generators write.
	hack/verify-generated.sh

##@ Build

.PHONY: build
build: ## bin/manager and bin/agent.
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/manager ./cmd/manager
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/agent ./cmd/agent

.PHONY: vet
vet:
	$(GO) vet ./...

.PHONY: envtest
envtest: ## Build (once) and print the envtest binaries' directory.
	@hack/envtest.sh

##@ Test

.PHONY: test
test: verify-generated vet build ## Unit, envtest and end-to-end suites (builds the envtest binaries when missing).
	@assets="$$(hack/envtest.sh)"; echo "KUBEBUILDER_ASSETS=$$assets"; \
	KUBEBUILDER_ASSETS="$$assets" $(GO) test $(TEST_FLAGS) -timeout $(TEST_TIMEOUT) ./...

.PHONY: clean
clean:
	rm -rf $(BIN)
