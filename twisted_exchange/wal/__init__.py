"""A Raft node's stable storage on disk, below the peer and outside the pure
replication layer (as etcd keeps its WAL outside its raft package).

Modules, bottom-up: ``codec`` (the log's record format and the scan that
tells a torn tail from corruption), ``file_storage`` (FileStorage: one data
directory per peer, following ``replication.storage``'s contract; and
``read_log``, every entry a log file holds, compacted ones included).
"""
from twisted_exchange.wal.file_storage import FileStorage, read_log

__all__ = ["FileStorage", "read_log"]
