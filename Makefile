# twisted-exchange: every target installs what it needs first.
PYTHON ?= python3
PIP     = $(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore
SEEDS  ?= 200
NEMESIS_SECONDS ?= 300
INTEROP = tests/interop

.PHONY: install interop test pytest trial sim-smoke core-compiled sim nemesis bench bench-peers bench-cluster demo clean

# The core is also compiled by mypyc where a C compiler is (setup.py); else it runs as pure Python.
install:
	$(PIP) -e '.[test,plot]'
	@if command -v cc >/dev/null 2>&1; then $(MAKE) --no-print-directory core-compiled; \
	else echo "no C compiler: the core runs as pure Python"; fi

# Node Grenache packages for the interop tests; skipped (tests then skip) without npm.
interop:
	@if command -v npm >/dev/null 2>&1; then \
		cd $(INTEROP) && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: Node interop tests will be skipped"; fi

test: install interop pytest trial sim-smoke

# pytest runs the core as installed (the mypyc build where a C compiler is: a build
# that failed fails here); trial runs the unit suites on the pure-Python source.
CORE_AS_INSTALLED = $$(command -v cc >/dev/null 2>&1 && echo compiled || echo pure)

pytest:
	TWISTED_EXCHANGE_CORE=$(CORE_AS_INSTALLED) $(PYTHON) -m pytest -p no:cacheprovider -q tests

# Unit tests run under both runners; the process-level suites (e2e, interop) under pytest only.
trial:
	TWISTED_EXCHANGE_CORE=pure $(PYTHON) -m twisted.trial --temp-directory=/tmp/twisted-exchange-trial \
		tests.core tests.replication tests.grenache tests.grape tests.peer tests.ctl tests.test_pki tests.test_logs tests.test_monotonic tests.test_scheduling tests.test_connections

# The core compiled by mypyc from the same source, built in place when a core module
# changed (setup.py says why); about 15 s.
CORE_BUILT = build/core-compiled.stamp
core-compiled: $(CORE_BUILT)
$(CORE_BUILT): $(wildcard twisted_exchange/core/*.py) setup.py
	$(PIP) -e '.[compiled]'
	TWISTED_EXCHANGE_MYPYC=1 $(PYTHON) setup.py --quiet build_ext --inplace --force
	@mkdir -p build && touch $@

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

bench-cluster: install interop
	$(PYTHON) -m twisted_exchange.ctl.cli bench-cluster

demo: install
	$(PYTHON) -m twisted_exchange.demo

# Stops the clusters of conf/ and deletes their data (credentials kept), then the build products.
clean:
	-$(PYTHON) -m twisted_exchange.ctl -c conf/cluster.conf reset --yes
	-$(PYTHON) -m twisted_exchange.ctl -c conf/cluster5.conf reset --yes
	rm -rf build dist *.egg-info .hypothesis $(INTEROP)/node_modules twisted_exchange/core/*.so
