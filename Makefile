# bookstream: the two commands are `make demo` and `make test`; `make stop` stops what they
# started, `make bench` measures. Everything lives under .state/ (BOOKSTREAM_STATE_DIR):
# `make stop && rm -rf .state` is a clean slate.
SHELL := /bin/bash
BS := .venv/bin/bookstream
PYTEST := .venv/bin/pytest
# integration modules run on this many workers, one module per worker at a time (every module
# has topics, ports and state of its own; the services are shared); 0 = one after the other.
# The modules whose faults are timed against a heartbeat, a leader election, an alert or a
# browser (cluster, broker failover, monitoring, live) run after them, alone.
IT_WORKERS ?= 2
IT_ALONE := tests/integration/test_cluster.py tests/integration/test_broker_failover.py \
	tests/integration/test_monitoring.py tests/integration/test_live.py
# `make up KAFKA_BROKERS=3`: three KRaft nodes (kafka.brokers; bookstream.toml for a lasting choice)
ifdef KAFKA_BROKERS
export BOOKSTREAM_KAFKA_BROKERS := $(KAFKA_BROKERS)
endif

.PHONY: install install-dev install-python install-python-dev up demo check test test-unit \
	test-integration bench stop clean lint types doctor audit monitor live cluster-up cluster-down

install:            ## runtime Python env (uv.lock) + JVM jars (infra/pom.xml) + PostgreSQL; idempotent
	bash infra/install.sh

install-dev:        ## install + the dev group and train extra (tests, lint)
	bash infra/install.sh --dev

# the Python environment alone: no jars, no apt-get, so never root
install-python:
	bash infra/install.sh --python-only

install-python-dev:
	bash infra/install.sh --dev --python-only

up: install         ## start the services that are not running; create topics
	bash infra/kafka/start.sh
	bash infra/postgres/start.sh
	bash infra/redis/start.sh
	$(BS) topics >/dev/null

monitor: install    ## Prometheus (scrapes every stage, alert rules) + Alertmanager, under .state/prometheus
	bash infra/prometheus/start.sh

live: up monitor    ## the pipeline as supervised long-running processes, paced (ARGS="--speed 5"), until Ctrl-C or `make stop`
	$(BS) live $(ARGS)

cluster-up: install ## the Flink session cluster (1 JobManager, 2 TaskManagers; web UI on flink.cluster_rest_port)
	bash infra/flink/start.sh

cluster-down:       ## stop the Flink session cluster (its jobs end with it)
	bash infra/flink/stop.sh

demo: up            ## the whole pipeline on the shipped sample; JSON summary on the last line
	$(BS) demo $(ARGS)

check: lint types    ## the fast lane (~1 min on an idle 2-core machine once installed; no services, no root): lint, types, unit tests but the slow ones, on every core
	$(PYTEST) -q -p no:cacheprovider -n auto -m "not slow" tests/unit

test: install-dev up lint types  ## every test, each once: the fast unit lane (fails early), integration (real broker, real Flink; IT_WORKERS modules at a time, then IT_ALONE's alone), then the slow unit tests (on every core)
	$(PYTEST) -q -p no:cacheprovider -n auto -m "not slow" tests/unit
	$(PYTEST) -q -p no:cacheprovider -n $(IT_WORKERS) --dist loadfile $(addprefix --ignore=,$(IT_ALONE)) tests/integration
	$(PYTEST) -q -p no:cacheprovider $(IT_ALONE)
	$(PYTEST) -q -p no:cacheprovider -n auto -m slow tests/unit

test-unit: install-python-dev  ## every unit test (slow ones too), no services
	$(PYTEST) -q -p no:cacheprovider -n auto tests/unit

test-integration: install-dev up
	$(PYTEST) -q -p no:cacheprovider -n $(IT_WORKERS) --dist loadfile $(addprefix --ignore=,$(IT_ALONE)) tests/integration
	$(PYTEST) -q -p no:cacheprovider $(IT_ALONE)

bench: up           ## throughput and memory figures with ratios (not a test)
	bash infra/install.sh --bench --python-only
	.venv/bin/python -m jobs.bench_clients
	.venv/bin/python -m jobs.bench $(ARGS)  # last: its closing JSON line ends the output

doctor: install-python
	$(BS) doctor

lint: install-python-dev  ## ruff (rules, complexity, format) and the import rule of udfs/
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports --cache-dir .state/import_linter_cache
	$(PYTEST) --collect-only -q -p no:cacheprovider tests/integration >/dev/null  # every integration module imports (they run only after the services start)

types: install-python-dev  ## mypy on udfs/ and jobs/ ([tool.mypy] in pyproject.toml)
	.venv/bin/mypy

stop:               ## stop exactly what this project started (a live session first: it commits)
	bash infra/live/stop.sh
	bash infra/flink/stop.sh
	bash infra/kafka/stop.sh
	bash infra/postgres/stop.sh
	bash infra/redis/stop.sh
	bash infra/prometheus/stop.sh

clean: stop
	rm -rf .state

audit: install      ## CycloneDX SBOMs (Python env, jars) + licence report under .state/audit/
	bash infra/audit/sbom.sh
