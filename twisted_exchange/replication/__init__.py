"""Raft replication of the exchange, as pure state machines: ``records`` (what a
node stores), ``messages`` (Raft's wire types and their parser), ``raft``,
``replica``, ``state_machine`` with ``sessions``, ``storage`` (the
stable-storage contract and MemoryStorage; the files live in
``twisted_exchange.wal``), and a deterministic fault simulator (``sim``).
Bench: ``twisted_exchange.wal.bench`` (it needs the file storage too)."""
