# twisted-exchange: every target installs what it needs first.
PYTHON ?= python3
PIP     = $(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore
SEEDS  ?= 200
NEMESIS_SECONDS ?= 300
INTEROP = tests/interop

.PHONY: install interop test pytest trial sim-smoke core-compiled test-compiled sim nemesis bench bench-peers bench-cluster demo clean

install:
	$(PIP) -e '.[test,plot]'

# Node Grenache packages for the interop tests; skipped (tests then skip) without npm.
interop:
	@if command -v npm >/dev/null 2>&1; then \
		cd $(INTEROP) && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: Node interop tests will be skipped"; fi

test: install interop pytest trial sim-smoke test-compiled

# The suites run the pure-Python core even where a compiled build sits beside it.
pytest:
	TWISTED_EXCHANGE_CORE=pure $(PYTHON) -m pytest -p no:cacheprovider -q tests

# Unit tests run under both runners; the process-level suites (e2e, interop) under pytest only.
trial:
	TWISTED_EXCHANGE_CORE=pure $(PYTHON) -m twisted.trial --temp-directory=/tmp/twisted-exchange-trial \
		tests.core tests.replication tests.grenache tests.grape tests.peer tests.ctl tests.test_pki tests.test_logs

# The core compiled by mypyc from the same source, built in place (setup.py says why); about 10 s.
core-compiled:
	$(PIP) -e '.[compiled]'
	TWISTED_EXCHANGE_MYPYC=1 $(PYTHON) setup.py --quiet build_ext --inplace

# The core's and replication's tests again, against the compiled core; skipped without a C compiler.
test-compiled:
	@if command -v cc >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory core-compiled && \
		TWISTED_EXCHANGE_CORE=compiled $(PYTHON) -m pytest -p no:cacheprovider -q tests/core tests/replication; \
	else echo "no C compiler: the compiled core is not built or tested"; fi

sim-smoke:
	@if [ -d twisted_exchange/replication/sim ]; then \
		$(PYTHON) -m twisted_exchange.replication.sim --seeds $(SEEDS); fi

sim: install
	$(PYTHON) -m twisted_exchange.replication.sim --seeds 10000

# Grapes, peers and clients on separate network namespaces under a nemesis (root); figures in tests/netns/nemesis.py.
nemesis: install
	$(PYTHON) -m tests.netns.run --seconds $(NEMESIS_SECONDS)

bench: install interop
	$(PYTHON) -m twisted_exchange.bench

# Our core against the PyPI order books, installed into build/bench-peers-venv (not the project's env).
bench-peers: install
	$(PYTHON) -m twisted_exchange.core.peers.bench

bench-cluster: install
	$(PYTHON) -m twisted_exchange.ctl.cli bench-cluster

demo: install
	$(PYTHON) -m twisted_exchange.demo

# Stops the clusters of conf/ and deletes their data (credentials kept), then the build products.
clean:
	-$(PYTHON) -m twisted_exchange.ctl -c conf/cluster.conf reset --yes
	-$(PYTHON) -m twisted_exchange.ctl -c conf/cluster5.conf reset --yes
	rm -rf build dist *.egg-info .hypothesis $(INTEROP)/node_modules twisted_exchange/core/*.so
