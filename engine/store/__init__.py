"""Storage: the RocksDB partition stores, the per-batch view the folds write through,
the key layout (:mod:`engine.store.keys`, pure), and in-memory tables for tests and
benchmarks. Only this package touches a database handle; it imports nothing from the
folds. Import the modules themselves: this file stays empty so the pure folds can use
the key layout without loading RocksDB."""
