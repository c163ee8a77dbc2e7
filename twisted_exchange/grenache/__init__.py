"""Grenache for Twisted, wire-compatible with Bitfinex's Node packages.

``Link`` talks to a grape (announce, lookup, put, get), ``RPCServer`` answers
Grenache HTTP RPC calls, ``RPCClient`` makes them.  Every failure is a
``GrenacheError`` with a stable ``code`` (see ``errors``).
"""
from twisted_exchange.grenache.client import RPCClient
from twisted_exchange.grenache.errors import GrenacheError
from twisted_exchange.grenache.link import Link
from twisted_exchange.grenache.server import RPCServer

__all__ = ["GrenacheError", "Link", "RPCClient", "RPCServer"]
