# pgcaravan — build, test, generate, demo.
# Tools are pinned and installed into ./bin with `go install`.

BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

BIN      := $(CURDIR)/bin
GO       ?= go
PKGS     := ./...
export PATH := $(BIN):$(PATH)

.PHONY: all build test test-short generate check-generated lint-proto tools demo bench bench-quick clean

all: build

build:
	$(GO) build -o $(BIN)/pgcaravan ./cmd/pgcaravan

$(BIN)/buf:
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc

# generate rebuilds the committed protobuf code.
generate: tools
	$(BIN)/buf generate

lint-proto: $(BIN)/buf
	$(BIN)/buf lint

# check-generated fails when the committed generated code is stale.
check-generated: generate
	@git diff --exit-code -- proto/ || { echo "proto/: generated code is stale; run 'make generate' and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- proto/)" || { echo "proto/: untracked generated files; run 'make generate' and commit" >&2; git status --porcelain -- proto/ >&2; exit 1; }

# test runs every test: unit, real PostgreSQL, in-process fleet, processes.
test: build
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 25m $(PKGS)

test-short:
	$(GO) test -short -count=1 $(PKGS)

# demo starts two local clusters, generates data, clones, verifies, tears down.
demo: build
	$(GO) run ./integration/demo -bin $(BIN)/pgcaravan

# bench copies generated datasets (pgbench -s 100, 2M mixed-type rows, 1M rows without
# a key) with a single-stream COPY reference, pg_dump|psql, pgcopydb and pgcaravan,
# verifies every copy, copies a set of large objects, then replays a backlog of pgbench transactions with pgcaravan's cdcnode,
# native logical replication and pgcopydb follow, and prints the tables (also JSON in bench/results).
# See BENCHMARKS.md.
# BENCH_FLAGS passes more flags, e.g. BENCH_FLAGS="-runs 3 -methods pgcopydb,pgcaravan".
bench: build
	$(GO) run ./bench -bin $(BIN)/pgcaravan $(BENCH_FLAGS)

# bench-quick is the same on small datasets, in about a minute: for development.
bench-quick: build
	$(GO) run ./bench -bin $(BIN)/pgcaravan -quick $(BENCH_FLAGS)

# --- deploy/: container image, Helm chart, runbook (see deploy/README.md) ---
.PHONY: image chart-check

# image builds deploy/docker/Dockerfile. It needs Docker with BuildKit and a running daemon;
# without one it fails and says so (CI parses and lints the Dockerfile instead: chart-check).
IMAGE ?= pgcaravan:dev
image:
	@command -v docker >/dev/null 2>&1 || { echo "make image: needs Docker (with BuildKit); no docker command here" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make image: needs a running Docker daemon and 'docker info' reaches none; build where Docker runs: docker build -f deploy/docker/Dockerfile -t $(IMAGE) ." >&2; exit 1; }
	DOCKER_BUILDKIT=1 docker build -f deploy/docker/Dockerfile -t $(IMAGE) .

# Helm, pinned, built from the Go module proxy with the ldflags of helm's own release build
# (its version, and the Kubernetes minor of its client-go as the default cluster version for
# templates and lint's deprecation checks). The first build takes a few minutes.
HELM_VERSION    := v3.21.4
HELM_KUBE_MINOR := 36
HELM_LDFLAGS    := -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(HELM_KUBE_MINOR) \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(HELM_KUBE_MINOR)
HELM_STAMP      := $(BIN)/.helm-$(HELM_VERSION)
CHART           := deploy/helm/pgcaravan

$(HELM_STAMP):
	GOBIN=$(BIN) $(GO) install -ldflags '$(HELM_LDFLAGS)' helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	@touch $@

# chart-check lints the chart and renders it for every values file in $(CHART)/ci, then runs
# deploy/'s own module's tests: strict decoding of every rendered object into the Kubernetes
# types, the Dockerfile's parse and lint, and the runbook's and NOTES.txt's grpcurl commands
# against real coordinators. -mod=mod lets that module follow the main module's requirements.
chart-check: $(HELM_STAMP)
	@for f in $(CHART)/ci/*-values.yaml; do \
		echo "helm lint + template: $$f"; \
		$(BIN)/helm lint --strict --quiet $(CHART) -f $$f || exit 1; \
		$(BIN)/helm template ci $(CHART) -f $$f >/dev/null || exit 1; \
	done
	cd deploy && GOFLAGS=-mod=mod HELM=$(BIN)/helm $(GO) vet ./...
	cd deploy && GOFLAGS=-mod=mod HELM=$(BIN)/helm $(GO) test -count=1 -timeout 10m ./...

clean:
	rm -rf $(BIN)
