"""Faust-streaming set up the same way for every peer benchmark (imported only in the
peers' child processes)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import aiokafka
import faust
import faust.transport.drivers.aiokafka as faust_aiokafka


def patch_fetch_wait(ms: int) -> None:
    """Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumers. Tansu answers a
    fetch only when that time is up, so without this every Faust hop would cost 1.5 s;
    give Faust the same fetch wait stepstream uses (Settings.fetch_wait_max_ms)."""

    class Consumer(aiokafka.AIOKafkaConsumer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["fetch_max_wait_ms"] = ms
            super().__init__(*args, **kwargs)

    class Module:
        def __getattr__(self, name: str) -> Any:
            if name == "AIOKafkaConsumer":
                return Consumer
            return getattr(aiokafka, name)

    faust_aiokafka.aiokafka = Module()


def make_app(app_id: str, broker: str, datadir: Path, partitions: int, fetch_wait_ms: int,
             **conf: Any) -> faust.App:
    patch_fetch_wait(fetch_wait_ms)
    logging.getLogger("faust").setLevel(logging.WARNING)
    return faust.App(
        app_id,
        broker=f"kafka://{broker}",
        datadir=str(datadir),
        topic_partitions=partitions,
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        producer_acks=-1,
        key_serializer="raw",
        value_serializer="raw",
        **conf,
    )


def run_worker(app: faust.App) -> None:
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


def write_result(path: str, result: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, path)
