# Switchboard. `make help` lists the targets.

GO       ?= go
BUF      := $(GO) tool -modfile=tools/go.mod buf
LINTER   := $(GO) tool -modfile=tools/lint/go.mod golangci-lint
COMMIT   := $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -X github.com/switchboard-rpc/switchboard/internal/buildinfo.Commit=$(COMMIT)
BENCHTIME ?= 2s

.DEFAULT_GOAL := help
.PHONY: help generate lint verify test bench run build services

help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

generate: ## Regenerate gen/ from proto/ (offline: every plugin is a go tool).
	$(BUF) lint
	$(BUF) generate

lint: ## Lint the protos (buf) and the Go code (golangci-lint v2).
	$(BUF) lint
	$(LINTER) run ./...

verify: generate ## Fail when gen/ is stale, a go.mod is untidy or a file is unformatted.
	@git diff --exit-code --stat -- gen || { echo "gen/ is stale: run make generate and commit it"; exit 1; }
	@test -z "$$(git status --porcelain -- gen)" || { git status --porcelain -- gen; echo "gen/ has files not committed"; exit 1; }
	$(GO) mod tidy -diff
	cd tools && $(GO) mod tidy -diff
	cd tools/lint && $(GO) mod tidy -diff
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'))" || { gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'); echo "files above are not gofmt-formatted"; exit 1; }

test: ## Run every test with the race detector (needs the services of `make services`).
	$(GO) test -race -count=1 ./...

bench: ## Run the benchmarks and print each result next to its baseline.
	$(GO) run ./bench/cmd/benchratio -benchtime $(BENCHTIME)

run: ## Run the whole system on embedded defaults (switchboard up).
	$(GO) run ./cmd/switchboard up

build: ## Build bin/switchboard stamped with the commit.
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/switchboard ./cmd/switchboard

services: ## Start PostgreSQL, Redis, RabbitMQ and NATS JetStream if they are down, and wait for them.
	bash .ci/services
