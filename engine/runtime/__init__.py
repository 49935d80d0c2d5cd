"""The engine at run time: the processor loop, the batch layer that folds a
partition's records into its store, the timer and cron services, the router, replay
and recovery of damaged state. I/O lives here; the folds it drives are pure."""
