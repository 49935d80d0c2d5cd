"""The standing fault campaign (``make chaos``; README, Reliability): kill loops, engine
outages, poison records, HTTP fuzzing and state damage, each under load, each judged by
the checkers in tests/checkers."""
