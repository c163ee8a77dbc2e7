"""How many connections a peer takes in: fewer than it has descriptors.

A peer out of file descriptors cannot open its next log segment, write a
snapshot, or call the other peers, so anyone able to open connections to
it (clients and the network are untrusted) could stop it.  The peer raises
its soft descriptor limit to the hard one at start (as Go's runtime does),
and its RPC server holds at most :data:`MAX_CONNECTIONS` connections, or
as many as leave :data:`RESERVED_FDS` descriptors, and
:data:`MAX_CONNECTIONS_PER_ADDRESS` from one IP address (see
:mod:`twisted_exchange.grenache.server` for which connection goes at a
cap).  One host holding slow connections (Slowloris) then uses up its own
share, not the peer, and connections that never send a byte of a request
give their places to those that do.
"""
from __future__ import annotations

import resource

#: Descriptors kept for the peer's own use: its data files, its calls to the
#: other peers (up to 64 connections each) and to the grapes, the admin port.
RESERVED_FDS = 256
#: The fewest connections a peer is started with: its peers' and a few clients'.
MIN_CONNECTIONS = 64
#: Connections a peer holds open at once, at most (the default of --max-connections).
MAX_CONNECTIONS = 8192
#: Connections one IP address may hold open on a peer at once (the default of
#: --max-connections-per-address): a whole loopback cluster's peers and
#: benchmark clients share 127.0.0.1, and each peer pools up to 64 to another.
MAX_CONNECTIONS_PER_ADDRESS = 1024


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit if allowed; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(wanted: int, descriptors: int) -> int:
    """``wanted`` connections, or fewer if ``descriptors`` (RLIMIT_NOFILE;
    RLIM_INFINITY for none) would leave less than RESERVED_FDS."""
    if descriptors == resource.RLIM_INFINITY:
        return wanted
    return max(0, min(wanted, descriptors - RESERVED_FDS))
