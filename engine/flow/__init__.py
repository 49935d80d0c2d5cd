"""Flow control's gates, as pure logic over one partition's tables (issue 10).

Each module is pure like the fold that calls it: no I/O, no clock (times are passed in),
no randomness. A gate's state lives in the partition's tables (``g/``, ``p/``, ``q/`` in
:mod:`engine.store.keys`), so restore and replay rebuild it with everything else.

- :mod:`engine.flow.slots`: concurrency slots with a backlog in rank order.
- :mod:`engine.flow.backlog`: that backlog, for any gate that queues (throttle too).
- :mod:`engine.flow.rank`: a run's place in a backlog (accepted time and priority).
- :mod:`engine.flow.gcra`: throttle and rate limit (GCRA), pure arithmetic.
- :mod:`engine.flow.throttle`: the throttle (queueing) and rate-limit (skipping) gates.
"""
