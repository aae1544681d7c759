# strata — see README.md. Every target works on a fresh Debian machine after
# `make setup` (which the others call where they need it).

GO        ?= go
BIN       := $(CURDIR)/bin
STRATA    := $(BIN)/strata
SANDBOX   := $(BIN)/strata-sandbox
export PATH := $(BIN):$(PATH)
FUZZTIME  ?= 15s
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)

.PHONY: all setup build test test-security unit fuzz demo bench bench-build bench-chain lint clean

all: build

## setup: install what builds and tests need (Debian packages when root, Go tools); idempotent
setup:
	@scripts/setup.sh

## build: the static strata binary in bin/, and its companion strata-sandbox (the
## staging helper and built-in stages; strata uses it only with the build ID linked in)
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(SANDBOX) ./cmd/strata-sandbox
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS) -X main.sandboxBuildID=$$($(GO) tool buildid $(SANDBOX))" -o $(STRATA) ./cmd/strata

## test: setup, vet, unit and CLI tests, bounded fuzzing
test: setup build
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -race -run '^(TestGCUnderLoad|TestGCWriterRace|TestGateTurnstile)$$' ./executor/store/
	test/rootless.sh
	$(MAKE) --no-print-directory fuzz

## test-security: the security group (tests named after their RELIABILITY row), as make test runs it
test-security: setup build
	$(GO) test -count=1 -run 'TestSecurity' ./...

# Nearly every CUE input reaches new coverage, so with the default 60 s of
# minimisation per new input a short run would execute almost nothing.
# Each run starts from an empty generated corpus: the one Go keeps in GOCACHE
# only grows, and once replaying it takes longer than FUZZTIME the run fails
# with "context deadline exceeded" having fuzzed nothing. Crashers still land
# in testdata/fuzz, which every run replays.
FUZZFLAGS := -run='^$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=10x
fuzz:
	@corpus=$$(mktemp -d) && trap 'rm -rf "$$corpus"' EXIT && \
	set -x && \
	$(GO) test $(FUZZFLAGS) -fuzz='^FuzzLoad$$' ./lang/ -args -test.fuzzcachedir="$$corpus/lang" && \
	$(GO) test $(FUZZFLAGS) -fuzz='^FuzzCompile$$' ./compiler/ -args -test.fuzzcachedir="$$corpus/compile" && \
	$(GO) test $(FUZZFLAGS) -fuzz='^FuzzVerify$$' ./compiler/ -args -test.fuzzcachedir="$$corpus/verify" && \
	$(GO) test $(FUZZFLAGS) -fuzz='^FuzzIndent$$' ./compiler/plan/ -args -test.fuzzcachedir="$$corpus/indent"

## demo: validate, compile and build the example image; print where its outputs are
demo: setup build
	@scripts/demo.sh

## bench: compile vs cue export at N = 100, 1000, 3000, builds vs BuildStream, the
## per-stage cost of a 20-stage chain vs bare bwrap, registry push/pull vs oras.Copy
## and crane (numbers go to bench/README.md)
bench: setup build
	@bench/compile.sh
	@bench/buildstream.sh
	@bench/chain.sh
	@bench/registry.sh

## bench-chain: a chain of 20 trivial stages vs 20 bare bwrap runs (~2 min)
bench-chain: setup build
	@bench/chain.sh

## bench-build: strata build vs BuildStream 1.6 at N = 10, 50, 100 leaves (~10 min)
bench-build: setup build
	@bench/buildstream.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

clean:
	rm -rf $(BIN) bench/out
