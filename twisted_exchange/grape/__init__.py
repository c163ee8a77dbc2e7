"""The grape process: Grenache's discovery node, wire-compatible with grenache-grape.

A grape serves the Grape HTTP API (``/announce``, ``/lookup``, ``/put``,
``/get``) to local services and speaks BEP5/BEP44 KRPC over UDP with the other
grapes. Modules, bottom up: ``compact`` (BEP5 byte encodings), ``routing``
(k-buckets), ``krpc`` (bencoded transactions over UDP), ``store`` (announced
peers and immutable values), ``traversal`` (iterative lookups), ``dht`` (the
node), ``api`` (HTTP), ``metrics`` (Prometheus and health for the admin
port), ``service`` and ``cli``.
"""
from twisted_exchange.grape.errors import GrapeError

__all__ = ["GrapeError"]
