# SKAO Staging Service. `make run` starts the service locally on an embedded
# SQLite; `make test` installs what the tests need (as root, from Debian's
# packages) and runs every test. See README.md.

GO ?= go
FUNCTIONS := stage logs

.PHONY: run test test-deps bench build vet clean

## run: the service on http://127.0.0.1:$${PORT:-8000} with sample data under ./.data
run: build
	./scripts/run-local.sh

## build: one binary per function under ./bin
build:
	@mkdir -p bin
	$(GO) build -trimpath -o bin/ $(addprefix ./functions/,$(FUNCTIONS)) ./internal/devingress

## test: install test dependencies, then vet and run all tests (MariaDB included)
test: test-deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m ./...

test-deps:
	./scripts/install-test-deps.sh

## bench: performance figures side by side with cp, as a table
bench: build
	$(GO) run ./internal/bench

clean:
	rm -rf bin .data
