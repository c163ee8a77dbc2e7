"""The peer process: the Twisted shell around the pure layers.

It drives a :class:`~twisted_exchange.replication.replica.Replica` (Raft +
matching core) from a tick timer and from Grenache RPC calls, persists every
ready batch through :class:`~twisted_exchange.wal.FileStorage`
before sending its messages, and answers clients from its own book.

Modules: ``protocol`` names everything a peer accepts and parses it once,
``directory`` finds the other peers through the grape, ``transport``
carries Raft messages to them, ``api`` turns parsed requests into replica
calls, ``membership`` ties a data directory to its cluster, ``history``
remembers recent throughput and digests, ``metrics`` counts for Prometheus,
``admin`` serves metrics, health and the dashboard (static files in
``dashboard/``) on the admin port, ``service`` owns the lifecycle, the ready
loop and fail-stop, ``cli`` is the command line.
"""
from twisted_exchange.peer.service import PeerService

__all__ = ["PeerService"]
