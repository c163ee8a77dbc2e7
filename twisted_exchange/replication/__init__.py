"""Raft replication of the exchange, as pure state machines (see raft.py,
replica.py) plus file-backed storage (storage.py) and a deterministic fault
simulator (sim.py)."""
