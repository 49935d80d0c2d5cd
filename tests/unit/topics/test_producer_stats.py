"""Reading a producer's work out of librdkafka statistics (topics.producer_stats)."""

from __future__ import annotations

import json

from topics.producer_stats import ProduceCounts, ProducerStats, parse_line, produce_counts

STATS = json.dumps({
    "name": "stepstream-engine#producer-1", "ts": 5_000_000, "tx": 57, "txmsgs": 240, "txmsg_bytes": 9600,
    "brokers": {"127.0.0.1:9092/1": {"req": {"Produce": 31, "Metadata": 4}},
                "127.0.0.1:9093/2": {"req": {"Produce": 9}}}})


def test_records_and_produce_requests_are_summed_over_brokers() -> None:
    assert produce_counts(STATS) == ProduceCounts(records=240, produce_requests=40,
                                                  requests=57, bytes=9600)


def test_a_reported_line_reads_back() -> None:
    counts = produce_counts(STATS)
    assert parse_line("2026-11-30 INFO stepstream.stats: " + counts.line("eng") + " final") \
        == ("eng", counts)
    assert parse_line("some other line") is None


def test_reported_when_counts_change_and_once_more_at_close() -> None:
    lines: list[str] = []
    stats = ProducerStats("w", 100, lines.append)
    assert stats.config()["statistics.interval.ms"] == 100
    stats.on_stats(STATS)
    stats.on_stats(STATS)  # unchanged: not again
    stats.on_stats("not json")  # ignored
    polls: list[float] = []
    later = STATS.replace('"txmsgs": 240', '"txmsgs": 250').replace("5000000", "9000000")
    # Closing at 6 s: the document made at 5 s is stale, the one made at 9 s is taken.
    stats.close(lambda t: (polls.append(t), stats.on_stats(STATS if len(polls) < 2 else later)),
                clock=lambda: 6.0 if len(polls) < 3 else 7.0)
    assert lines[-1] == produce_counts(later).line("w") + " final" and len(polls) == 2


def test_disabled_adds_nothing_and_reports_nothing() -> None:
    lines: list[str] = []
    stats = ProducerStats("w", 0, lines.append)
    assert stats.config() == {}
    stats.close(lambda t: None)
    assert lines == []
