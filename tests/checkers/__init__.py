"""Invariant checkers shared by the fault campaign (``make chaos``) and the integration
tests that run short versions of its scenarios.

Each checker reads only what a user could read: the HTTP API's answers (run views), the
topics, and the ledger a test app writes for every step execution. Each returns a
:class:`~tests.checkers.verdict.Check`: how many cases it looked at, how many broke the
invariant, and a few examples to start an investigation from.
"""
