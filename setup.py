"""Packaging for twisted-exchange.

Runtime dependencies and why each is here:
  twisted          reactor, HTTP server/client, UDP, services (peer, grape, ctl)
  sortedcontainers SortedList of each book side's price keys in the matching core
  click            exchangectl and the other command lines
  supervisor       the cluster topology (conf/*.conf) and its XML-RPC control
  fastbencode      bencode for the grape's BEP5 KRPC messages
  hdrhistogram     latency percentiles in `exchangectl bench`
  orjson           canonical JSON of every applied command and result (session
                   fingerprints, the state digest): 6x faster than json, which
                   was a third of the cost of applying an entry
  cryptography     the cluster CA and the peer and client certificates (pki.py);
                   TLS itself is Python's ssl (grenache/tlsbio.py: pyOpenSSL,
                   through Twisted's TLS layer, cost 2.5x the CPU per record)
  prometheus_client the /metrics of every peer and grape (admin port), in the
                   Prometheus text format its scrapers expect

Optional compiled core: with TWISTED_EXCHANGE_MYPYC=1 (``make core-compiled``)
the matching core's modules are also compiled by mypyc, from the same source,
into extension modules that Python imports instead of the .py files (about
2x the source's commands per second; see twisted_exchange/core/peers/bench.py).
Without it, or without mypy and a C compiler, the core is pure Python, as the
Docker image and ``pip install .`` build it.
  mypy             mypyc, the compiler (the "compiled" extra; build time only:
                   the extensions need nothing of it at run time)
"""
import os

from setuptools import find_packages, setup

#: The core modules mypyc compiles: everything on the path of Exchange.apply
#: (not core/native.py, whose interpreted branch must stay reachable).
CORE_COMPILED = ["memo", "numbers", "errors", "order", "index", "book", "commands", "exchange"]


def compiled_core() -> list:
    """The mypyc extensions of the core when TWISTED_EXCHANGE_MYPYC=1 asks for them, else none."""
    if os.environ.get("TWISTED_EXCHANGE_MYPYC") != "1":
        return []
    from mypyc.build import mypycify
    return mypycify([f"twisted_exchange/core/{name}.py" for name in CORE_COMPILED],
                    group_name="twisted_exchange.core.compiled", opt_level="3")


setup(
    name="twisted-exchange",
    version="0.1.0",
    description="A peer-to-peer exchange on Twisted and Grenache: Raft-replicated limit order books",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["twisted_exchange", "twisted_exchange.*"]),
    package_data={"twisted_exchange.peer": ["dashboard/*.html", "dashboard/*.js", "dashboard/*.css"]},
    ext_modules=compiled_core(),
    install_requires=[
        "twisted>=25.5",
        "sortedcontainers>=2.4",
        "click>=8.1",
        "supervisor>=4.2",
        "fastbencode>=0.3",
        "hdrhistogram>=0.10",
        "orjson>=3.10",
        "cryptography>=43",
        "prometheus_client>=0.20",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100", "playwright>=1.40"],
        "plot": ["matplotlib>=3.8"],
        "compiled": ["mypy==2.4.1"],
    },
    entry_points={
        "console_scripts": [
            "twisted-exchange-grape = twisted_exchange.grape.cli:main",
            "twisted-exchange-peer = twisted_exchange.peer.cli:main",
            "exchangectl = twisted_exchange.ctl.cli:main",
        ],
    },
)
