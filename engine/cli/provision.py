"""Create the topics of the catalog on a broker, checking the ones that already exist."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ClusterMetadata,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from engine.cli.topiccheck import FoundTopic
from topics.catalog import Catalog, TopicSpec
from topics.settings import Settings

log = logging.getLogger(__name__)


class ProvisionError(RuntimeError):
    """Topics could not be created, or an existing topic does not fit the catalog."""


def _admin(settings: Settings) -> AdminClient:
    if not settings.brokers:
        raise ProvisionError("no brokers configured (set STEPSTREAM_BROKERS)")
    return AdminClient(settings.client_config())


def _metadata(admin: AdminClient, timeout: float) -> ClusterMetadata:
    try:
        return admin.list_topics(timeout=max(timeout, 0.5))
    except KafkaException as exc:
        raise ProvisionError(f"cannot read broker metadata: {exc}") from None


def _check_partitions(spec: TopicSpec, found: int) -> None:
    if found != spec.partitions:
        raise ProvisionError(
            f"topic {spec.name!r} has {found} partitions but the configuration says "
            f"{spec.partitions}; partition counts are fixed for the life of a topic "
            f"(keys would move to other partitions), so either set "
            f"STEPSTREAM_PARTITIONS={found} or use a new STEPSTREAM_PREFIX"
        )


def ensure_topics(settings: Settings, timeout: float = 30, *, create: bool = True
                  ) -> list[str]:
    """Create every catalog topic that does not exist, wait until the broker's metadata
    lists them all, and return the names created (in catalog order).

    Raises :class:`ProvisionError` if an existing topic has a different partition count,
    or if creation or the wait fails within ``timeout`` seconds. With ``create=False``
    nothing is created and a missing topic is an error (for operators who provision
    topics themselves).
    """
    deadline = time.monotonic() + timeout
    specs = Catalog(settings).specs
    admin = _admin(settings)
    existing = _metadata(admin, timeout).topics
    for spec in specs:
        if spec.name in existing:
            _check_partitions(spec, len(existing[spec.name].partitions))
    missing = [s for s in specs if s.name not in existing]
    if missing and not create:
        raise ProvisionError(
            f"missing topic(s) on {settings.brokers}: {', '.join(s.name for s in missing)} "
            f"(create them, or let stepstream create them)"
        )
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, num_partitions=s.partitions,
                      replication_factor=settings.replication, config=dict(s.config))
             for s in missing],
            operation_timeout=max(1.0, deadline - time.monotonic()),
            request_timeout=max(1.0, deadline - time.monotonic()),
        )
        for name, fut in futures.items():
            try:
                fut.result(timeout=max(0.1, deadline - time.monotonic()))
                created.append(name)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                # Another process (a second `stepstream engine`, a worker) may create the
                # same topics at the same moment; the partition check below still applies.
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise ProvisionError(f"cannot create topic {name!r}: {exc}") from None
            except TimeoutError:
                raise ProvisionError(f"creating topic {name!r} timed out") from None
    _wait_listed(admin, specs, set(created), deadline)
    order = {s.name: i for i, s in enumerate(specs)}
    created.sort(key=order.__getitem__)
    if created:
        log.info("created topics: %s", ", ".join(created))
    return created


def _wait_listed(admin: AdminClient, specs: list[TopicSpec], ours: set[str],
                 deadline: float) -> None:
    """Poll metadata until every topic is listed with all its partitions led.

    A topic we just created may briefly show fewer partitions while the broker settles,
    so only the others (pre-existing, or created by someone else meanwhile) are held to
    the partition count at once.
    """
    delay = 0.05
    pending = [s.name for s in specs]
    while True:
        topics = _metadata(admin, max(0.5, deadline - time.monotonic())).topics
        pending = []
        for spec in specs:
            meta = topics.get(spec.name)
            if meta is None or meta.error is not None:
                pending.append(spec.name)
                continue
            if spec.name not in ours:
                _check_partitions(spec, len(meta.partitions))
            elif len(meta.partitions) != spec.partitions:
                pending.append(spec.name)
                continue
            if any(p.leader < 0 for p in meta.partitions.values()):
                pending.append(spec.name)
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise ProvisionError(
                f"topics not visible in broker metadata in time: {', '.join(pending)}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def describe(settings: Settings, names: list[str], timeout: float = 15
             ) -> dict[str, FoundTopic]:
    """The partition count, replication factor and reported configs of each of ``names``
    that exists (absent ones are left out)."""
    admin = _admin(settings)
    topics = _metadata(admin, timeout).topics
    present = [n for n in names if n in topics and topics[n].error is None]
    configs: dict[str, dict[str, str]] = {n: {} for n in present}
    if present:
        futures = admin.describe_configs(
            [ConfigResource(ResourceType.TOPIC, n) for n in present],
            request_timeout=timeout)
        for resource, fut in futures.items():
            try:
                entries = fut.result(timeout=timeout)
            except (KafkaException, TimeoutError) as exc:
                raise ProvisionError(f"cannot read the configs of topic "
                                     f"{resource.name!r}: {exc}") from None
            configs[resource.name] = {k: e.value for k, e in entries.items()
                                      if e.value is not None}
    return {n: FoundTopic(partitions=len(topics[n].partitions),
                          replication=min((len(p.replicas)
                                           for p in topics[n].partitions.values()), default=0),
                          configs=configs[n])
            for n in present}


def set_configs(settings: Settings, changes: dict[str, dict[str, str]],
                timeout: float = 15) -> None:
    """Set ``{topic: {config: value}}`` on the broker (incremental: other configs stay)."""
    if not changes:
        return
    admin = _admin(settings)
    resources = [ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
        for name, value in configs.items()]) for topic, configs in changes.items()]
    for resource, fut in admin.incremental_alter_configs(
            resources, request_timeout=timeout).items():
        try:
            fut.result(timeout=timeout)
        except (KafkaException, TimeoutError) as exc:
            raise ProvisionError(f"cannot set configs on topic {resource.name!r}: {exc}"
                                 ) from None
