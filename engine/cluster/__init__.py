"""Several engine processes, one API: any engine answers for any run.

Each engine advertises itself on the ``engines`` topic (:mod:`engine.cluster.peers`);
:class:`engine.cluster.queries.ClusterQueries` answers the HTTP API's queries by asking
its own partitions and every live peer at once and merging the answers
(:mod:`engine.cluster.merge`, pure). docs/architecture.md, "Any engine answers".
"""
