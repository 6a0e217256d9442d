# bookstream: the two commands are `make demo` and `make test`; `make stop` stops what they
# started, `make bench` measures. Everything lives under .state/ (BOOKSTREAM_STATE_DIR):
# `make stop && rm -rf .state` is a clean slate.
SHELL := /bin/bash
BS := .venv/bin/bookstream
PYTEST := .venv/bin/pytest

.PHONY: install up demo test test-unit test-integration bench stop clean lint doctor

install:            ## Python env (uv.lock) + JVM jars (infra/pom.xml); idempotent
	bash infra/install.sh

up: install         ## start the services that are not running; create topics
	bash infra/kafka/start.sh
	bash infra/postgres/start.sh
	$(BS) topics >/dev/null

demo: up            ## the whole pipeline on the shipped sample; JSON summary on the last line
	$(BS) demo $(ARGS)

test: up lint       ## unit + integration tests (real broker, real Flink)
	$(PYTEST) -q -p no:cacheprovider tests

test-unit: install
	$(PYTEST) -q -p no:cacheprovider tests/unit

test-integration: up
	$(PYTEST) -q -p no:cacheprovider tests/integration

bench: up           ## throughput and memory figures with ratios (not a test)
	.venv/bin/python -m jobs.bench $(ARGS)

doctor: install
	$(BS) doctor

lint: install
	.venv/bin/ruff check .

stop:               ## stop exactly what this project started
	bash infra/kafka/stop.sh
	bash infra/postgres/stop.sh

clean: stop
	rm -rf .state
