"""twisted-exchange: a peer-to-peer exchange whose peers keep identical limit
order books by applying one Raft-ordered command log to a pure matching core.

Layers, lowest first: core (pure matching), grape (DHT node), grenache
(Twisted Grenache RPC), replication (pure Raft), peer (the process), ctl
(exchangectl).  See README.md.
"""
