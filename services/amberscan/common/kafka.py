"""The consume → process → produce loop every streaming service runs, and topic administration.

At-least-once: a record's offset is committed only after every message produced for it (outputs
or its dead letter) is acknowledged by the broker, so a crash at any point redelivers, never
drops. Handlers make redelivery harmless by keying outputs deterministically (tile id, segment
index, model version); the producer is idempotent so its own retries add no duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord
from google.protobuf.timestamp_pb2 import Timestamp

from amberscan.common import metrics, topics
from amberscan.common.errors import PoisonMessage, TransientError
from amberscan.common.settings import Settings
from amberscan.v1 import messages_pb2 as pb

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
_MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class Output:
    """One message to produce: topic base name (without prefix), key and serialized value."""

    topic: str
    key: bytes
    value: bytes


@dataclass(frozen=True)
class Failure:
    """What a handler knows of a poison record, for its dead letter."""

    tile_id: str = ""
    scan_id: str = ""


Handler = Callable[[ConsumerRecord], Awaitable[Sequence[Output]]]
M = TypeVar("M")


def decode_message(record: ConsumerRecord, cls: type[M], problem: Callable[[M], str]) -> M:
    """The record's value as a `cls` message, or PoisonMessage saying where and what is wrong.

    `problem` returns "" for a usable message, else what makes it unusable.
    """
    where = f"{record.topic}/{record.partition}@{record.offset}"
    try:
        message: M = cls.FromString(record.value or b"")  # type: ignore[attr-defined]
    except Exception as error:  # noqa: BLE001 - protobuf raises several types
        raise PoisonMessage(f"{where}: not a {cls.__name__} message ({error})") from None
    if reason := problem(message):
        raise PoisonMessage(f"{where}: {reason}")
    return message


def describer(cls: type[M], ids: Callable[[M], Any]) -> Callable[[ConsumerRecord], Failure]:
    """A `describe` for StageConfig: the (tile id, scan id) `ids` reads from a `cls` message, or
    the record's key when the value does not decode."""

    def describe(record: ConsumerRecord) -> Failure:
        try:
            tile_id, scan_id = ids(cls.FromString(record.value or b""))  # type: ignore[attr-defined]
            return Failure(tile_id=tile_id, scan_id=scan_id)
        except Exception:  # noqa: BLE001 - the record is poison; describe it as well as we can
            return Failure(tile_id=(record.key or b"").decode(errors="replace"))

    return describe


@dataclass
class StageConfig:
    """How one stage consumes: its name (consumer group and metrics label) and source topic."""

    service: str
    source_topic: str
    group_id: str = ""
    max_records: int = 64
    poll_timeout_ms: int = 500
    # Called with a poison record to learn which tile/scan it belonged to (best effort).
    describe: Callable[[ConsumerRecord], Failure] = field(default=lambda _record: Failure())
    # Stateful stages (the aggregator) hold some records back: given a partition and the offset
    # after its last handled record, this returns the offset that is safe to commit.
    commit_offset: Callable[[TopicPartition, int], int] | None = None
    # Called when partitions are revoked, after the last commit, so a stage can drop their state.
    on_revoked: Callable[[set[TopicPartition]], None] | None = None
    # A batch job (a replay) ends once it has read every partition to its end.
    until_caught_up: bool = False

    def group(self, settings: Settings) -> str:
        return self.group_id or f"{settings.topic_prefix}amberscan-{self.service}"


async def ensure_topics(settings: Settings, names: Sequence[str] = topics.ALL_TOPICS) -> None:
    """Create the project's topics if missing, with the configured partitions and retention."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        new = [
            NewTopic(
                name=topics.topic_name(settings.topic_prefix, name),
                num_partitions=settings.topic_partitions,
                replication_factor=1,
                topic_configs={"retention.ms": str(settings.topic_retention_ms)},
            )
            for name in names
        ]
        response = await admin.create_topics(new, timeout_ms=30_000)
        for topic, code, *rest in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"creating topic {topic}: Kafka error {code} {rest}")
    finally:
        await admin.close()


def dead_letter(
    record: ConsumerRecord, service: str, error: BaseException, failure: Failure
) -> pb.DeadLetter:
    """The dead letter of `record`: the reason, where it came from, and its original bytes."""
    failed_at = Timestamp()
    failed_at.GetCurrentTime()
    return pb.DeadLetter(
        reason=str(error) or type(error).__name__,
        error_type=type(error).__name__,
        service=service,
        origin_topic=record.topic,
        origin_partition=record.partition,
        origin_offset=record.offset,
        key=record.key or b"",
        value=record.value or b"",
        tile_id=failure.tile_id,
        scan_id=failure.scan_id,
        failed_at=failed_at,
    )


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Waits for the batch in hand to be produced and committed before partitions move away."""

    def __init__(self, lock: asyncio.Lock, config: StageConfig) -> None:
        self.lock = lock
        self.config = config

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:  # the loop commits under this lock, so nothing is left uncommitted
            if self.config.on_revoked is not None and revoked:
                self.config.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: object) -> None:
        log.info("partitions assigned", extra={"partitions": sorted(str(tp) for tp in assigned)})  # type: ignore[attr-defined]


class Stage:
    """Runs one service's loop until `stop` is set."""

    def __init__(self, settings: Settings, config: StageConfig, handler: Handler) -> None:
        self.settings = settings
        self.config = config
        self.handler = handler
        self._lock = asyncio.Lock()
        self._committed: dict[TopicPartition, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None

    def topic(self, base: str) -> str:
        return topics.topic_name(self.settings.topic_prefix, base)

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_request_size=8 * 1024 * 1024,
        )
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.config.group(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_interval_ms=600_000,
        )
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe(
            [self.topic(self.config.source_topic)],
            listener=_CommitOnRevoke(self._lock, self.config),
        )

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, handle, produce and commit until `stop` is set; then close cleanly."""
        await self.start()
        assert self.consumer is not None
        try:
            while not stop.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=self.config.poll_timeout_ms, max_records=self.config.max_records
                )
                if not batch:
                    if self.config.until_caught_up and await self._caught_up():
                        log.info("caught up with the end of every partition; stopping")
                        stop.set()
                    continue
                async with self._lock:
                    await self._process(batch, stop)
        finally:
            await self.close()

    async def _caught_up(self) -> bool:
        assert self.consumer is not None
        assigned = list(self.consumer.assignment())
        if not assigned:
            return False
        ends = await self.consumer.end_offsets(assigned)
        for tp in assigned:
            if await self.consumer.position(tp) < ends[tp]:
                return False
        return True

    async def _process(
        self, batch: dict[TopicPartition, list[ConsumerRecord]], stop: asyncio.Event
    ) -> None:
        assert self.consumer is not None and self.producer is not None
        records = [record for part in batch.values() for record in part]
        # Records are handled concurrently so a stage that batches work (the feature client)
        # sees many at once; each record's outputs are still produced before any commit.
        results = await asyncio.gather(*(self._handle(record, stop) for record in records))
        if stop.is_set() and any(result is None for result in results):
            return  # interrupted while retrying: commit nothing, the records come back
        sends = []
        for outputs in results:
            for output in outputs or ():
                sends.append(
                    await self.producer.send(self.topic(output.topic), output.value, key=output.key)
                )
                metrics.OUTPUTS.labels(self.config.service, output.topic).inc()
        await asyncio.gather(*sends)  # every output acknowledged before the commit below
        offsets = {tp: part[-1].offset + 1 for tp, part in batch.items()}
        if self.config.commit_offset is not None:
            offsets = {tp: self.config.commit_offset(tp, offset) for tp, offset in offsets.items()}
            # Never move a committed offset backwards: only commit where there is progress.
            offsets = {tp: o for tp, o in offsets.items() if o > self._committed.get(tp, -1)}
            if not offsets:
                return
        await self.consumer.commit(offsets)
        self._committed.update(offsets)
        metrics.COMMITS.labels(self.config.service).inc()

    async def _handle(self, record: ConsumerRecord, stop: asyncio.Event) -> Sequence[Output] | None:
        """Outputs for `record`: the handler's, or its dead letter. None when stopped mid-retry."""
        service = self.config.service
        backoff = self.settings.retry_backoff_s
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                outputs = await self.handler(record)
            except PoisonMessage as error:
                return [self._dead_letter_output(record, error)]
            except TransientError as error:
                attempt += 1
                metrics.RETRIES.labels(service).inc()
                # Transient failures are never dead-lettered: a model server restart must not
                # lose tiles. The offset stays uncommitted while we wait.
                log.warning(
                    "transient failure, retrying",
                    extra={"attempt": attempt, "error": str(error), "offset": record.offset},
                )
                try:
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                    return None
                except TimeoutError:
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            except Exception as error:  # noqa: BLE001 - an unexpected bug must not stall the stream
                log.exception("unexpected error, dead-lettering", extra={"offset": record.offset})
                return [self._dead_letter_output(record, error)]
            metrics.HANDLE_SECONDS.labels(service).observe(time.perf_counter() - started)
            metrics.MESSAGES.labels(service, "ok").inc()
            return outputs

    def _dead_letter_output(self, record: ConsumerRecord, error: BaseException) -> Output:
        service = self.config.service
        try:
            failure = self.config.describe(record)
        except Exception:  # noqa: BLE001 - the record is poison; describing it may fail too
            failure = Failure()
        letter = dead_letter(record, service, error, failure)
        metrics.MESSAGES.labels(service, "dead_letter").inc()
        log.warning(
            "dead letter",
            extra={
                "reason": letter.reason,
                "origin": f"{record.topic}/{record.partition}@{record.offset}",
            },
        )
        return Output(topics.DEAD_LETTERS, record.key or b"", letter.SerializeToString())


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so a service finishes its batch and commits first."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
