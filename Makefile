# pgcaravan — build, test, generate, demo.
# Tools are pinned and installed into ./bin with `go install`.

BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

BIN      := $(CURDIR)/bin
GO       ?= go
PKGS     := ./...
export PATH := $(BIN):$(PATH)

.PHONY: all build test test-short generate check-generated lint-proto tools demo bench clean

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

clean:
	rm -rf $(BIN)
