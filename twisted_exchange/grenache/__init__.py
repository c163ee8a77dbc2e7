"""Grenache for Twisted, wire-compatible with Bitfinex's Node packages.

``Link`` talks to a grape (announce, lookup, put, get), ``RPCServer`` answers
Grenache HTTP RPC calls, ``RPCClient`` makes them, over plain HTTP or, given
``tls=`` a ``pki.Credential``, mutual TLS (``tls``; handlers may ask for the
``Caller``).  Every failure is a ``GrenacheError`` with a stable ``code``
(see ``errors``).
"""
from twisted_exchange.grenache.client import RPCClient
from twisted_exchange.grenache.errors import GrenacheError
from twisted_exchange.grenache.link import Link
from twisted_exchange.grenache.server import RPCServer
from twisted_exchange.grenache.tls import Caller

__all__ = ["Caller", "GrenacheError", "Link", "RPCClient", "RPCServer"]
