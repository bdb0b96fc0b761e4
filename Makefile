# GovCA: the two commands of the README.
SHELL := /bin/bash
LISTEN ?= $(or $(GOVCA_LISTEN),127.0.0.1:8080)

.PHONY: run test install test-sqlite test-postgres clean-instance

install:
	@scripts/bootstrap.sh

run:
	@scripts/bootstrap.sh --instance
	@.venv/bin/govca serve --listen $(LISTEN)

test:
	@scripts/bootstrap.sh --test --instance
	@$(MAKE) --no-print-directory test-sqlite
	@if [ -n "$$GOVCA_TEST_DATABASE_URL" ]; then $(MAKE) --no-print-directory test-postgres; \
	 else echo ">> GOVCA_TEST_DATABASE_URL not set: PostgreSQL run skipped"; fi

test-sqlite:
	@echo ">> test suite on SQLite"
	GOVCA_TEST_BACKEND=sqlite .venv/bin/python -m pytest $(PYTEST_ARGS)

test-postgres:
	@echo ">> test suite on PostgreSQL"
	GOVCA_TEST_BACKEND=postgresql .venv/bin/python -m pytest $(PYTEST_ARGS)

clean-instance:
	rm -rf instance

# Benchmarks (bench/README.md): issuance, OCSP/CRL, reorganisation, one combined table.
# bench-quick takes a few minutes; bench repeats each case 3 times (+ 100k-certificate memory run).
.PHONY: bench bench-quick
bench:
	.venv/bin/python bench/all.py $(BENCH_ARGS)

bench-quick:
	.venv/bin/python bench/all.py --quick $(BENCH_ARGS)
