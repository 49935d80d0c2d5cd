"""What the engine tells operators about itself: Prometheus metrics
(:mod:`engine.observe.metrics`, kept by :mod:`engine.observe.tally`) and one
OpenTelemetry root span per run (:mod:`engine.observe.tracing`). Everything here is
counted at the edge, from what the processor already holds after a batch; the fold
knows nothing of it."""
