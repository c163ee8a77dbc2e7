"""Raft replication of the exchange, as pure state machines: ``records`` (what a
node stores), ``raft``, ``replica``, ``state_machine``, ``storage`` (the
stable-storage contract and MemoryStorage; the files live in
``twisted_exchange.wal``), and a deterministic fault simulator (``sim``)."""
