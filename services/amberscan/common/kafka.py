"""The consume → process → produce loop every streaming service runs, and topic administration.

At-least-once. A record's offset is committed only after every message produced for it (its
outputs, or its dead letter) is acknowledged by the broker, and only once every earlier record of
its partition is too, so a crash at any point redelivers, never drops. Handlers make redelivery
harmless by keying outputs deterministically (tile id, segment index, model version); the
producer is idempotent so its own retries add no duplicates.

Throughput: up to `max_in_flight` polled batches are handled at once while the next one is
fetched; batches are finished (produced, acknowledged, committed) strictly in poll order, so a
partition's outputs keep the order of its inputs. A stage may handle a whole batch in one call
(`batch_handler`: one model-server request, one XGBoost call).

Failures:
- poison input (`PoisonMessage`, a domain `InvalidInput`, or an unexpected exception) becomes a
  dead letter with its reason and origin, and the stream goes on;
- an output larger than the topic's `max.message.bytes` is a dead letter too, never a crash;
- a transient failure is retried under the shared `RetryPolicy` (bounded, jittered, honouring
  Retry-After). A record still failing after that is not dead-lettered (a model-server restart
  must not lose tiles): its partition is rewound to it and paused for a backoff, so it comes back
  later, and nothing waits on it meanwhile — no lock, no stalled rebalance.
- a rebalance waits at most `revoke_grace_s` for in-flight batches of the revoked partitions to
  finish and commit; what is still running then is abandoned uncommitted (the new owner redoes it;
  duplicates downstream are harmless). A commit the group refuses because it has moved on is
  logged and counted, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord
from google.protobuf.timestamp_pb2 import Timestamp

from amberscan.common import metrics, topics
from amberscan.common.retry import RetryPolicy
from amberscan.common.settings import Settings
from amberscan.errors import InvalidInput, PoisonMessage, TransientError
from amberscan.v1 import messages_pb2 as pb

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
# Bytes a record needs beyond its key and value (record and batch headers), kept free when
# checking an output against the topic's max.message.bytes.
_RECORD_OVERHEAD = 512
# Bytes of records sent to one partition in one batch (a poll's ~30 feature vectors of 5 KB).
_BATCH_BYTES = 1024 * 1024


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


@dataclass(frozen=True)
class Retry:
    """A record whose transient failure outlasted the retry policy: it comes back later."""

    error: BaseException


# What handling one record gives: its outputs, or the error that stopped it.
Result = Sequence[Output] | BaseException
Handler = Callable[[ConsumerRecord], Awaitable[Sequence[Output]]]
# One result per record, in order; a per-record error goes in its place, not raised.
BatchHandler = Callable[[list[ConsumerRecord]], Awaitable[Sequence[Result]]]
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
    # Once a poll has some records, how long to keep polling to fill `max_records` (a stage
    # that sends whole batches to a model server wants them full).
    fill_wait_ms: int = 0
    # Batches handled at once while the next is polled (1 for a stage whose state must see
    # records strictly one batch after the other).
    max_in_flight: int = 2
    # How long a rebalance waits for in-flight batches of revoked partitions to commit.
    revoke_grace_s: float = 10.0
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


def topic_configs(settings: Settings) -> dict[str, str]:
    """The configuration of every topic amberscan creates, from the settings."""
    return {
        "retention.ms": str(settings.topic_retention_ms),
        "min.insync.replicas": str(settings.topic_min_insync_replicas),
        "max.message.bytes": str(settings.topic_max_message_bytes),
    }


async def ensure_topics(settings: Settings, names: Sequence[str] = topics.ALL_TOPICS) -> None:
    """Create the project's topics if missing, with the configured partitions, replicas,
    retention, in-sync replicas and largest record."""
    if settings.topic_min_insync_replicas > settings.topic_replication_factor:
        raise ValueError(
            f"topic_min_insync_replicas {settings.topic_min_insync_replicas} is more than "
            f"topic_replication_factor {settings.topic_replication_factor}: no write could succeed"
        )
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        new = [
            NewTopic(
                name=topics.topic_name(settings.topic_prefix, name),
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs=topic_configs(settings),
            )
            for name in names
        ]
        response = await admin.create_topics(new, timeout_ms=30_000)
        for topic, code, *rest in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"creating topic {topic}: Kafka error {code} {rest}")
    finally:
        await admin.close()


async def delete_topics(settings: Settings) -> None:
    """Delete every topic named with the settings' prefix (tests, benchmarks and chaos runs clean
    up with this); refuses an empty prefix, which would name every topic of the cluster."""
    if not settings.topic_prefix:
        raise ValueError("delete_topics needs a topic prefix: an empty one names every topic")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        if mine:
            await admin.delete_topics(mine)
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


class OutputTooLarge(PoisonMessage):
    """An output that no broker would accept on its topic (larger than max.message.bytes)."""


@dataclass(eq=False)
class _Batch:
    """One poll: its records by partition, the partitions' epochs then, and its handling."""

    records: dict[TopicPartition, list[ConsumerRecord]]
    epochs: dict[TopicPartition, int]
    task: asyncio.Task[list[Result | Retry]]

    @property
    def flat(self) -> list[ConsumerRecord]:
        return [record for part in self.records.values() for record in part]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, stage: Stage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.stage._release(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": sorted(str(tp) for tp in assigned)})


class Stage:
    """Runs one service's loop until `stop` is set.

    Give it `handler` (one record → its outputs) or `batch_handler` (a poll's records → one
    result each), not both.
    """

    def __init__(
        self,
        settings: Settings,
        config: StageConfig,
        handler: Handler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise ValueError("a Stage takes a handler or a batch_handler, not both or neither")
        self.settings = settings
        self.config = config
        self.handler = handler
        self.batch_handler = batch_handler
        self.policy = RetryPolicy.from_settings(settings)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._committed: dict[TopicPartition, int] = {}
        # A partition's epoch moves on when it is rewound or revoked: results of batches polled
        # before that are neither produced nor committed (the records come again).
        self._epoch: dict[TopicPartition, int] = {}
        self._rewinds: dict[TopicPartition, int] = {}  # consecutive rewinds, for the backoff
        self._revoking: set[TopicPartition] = set()
        self._in_flight: deque[_Batch] = deque()

    def topic(self, base: str) -> str:
        return topics.topic_name(self.settings.topic_prefix, base)

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_request_size=self.settings.topic_max_message_bytes + _RECORD_OVERHEAD,
            # The broker holds a whole record batch to the topic's max.message.bytes.
            max_batch_size=min(_BATCH_BYTES, self.settings.topic_max_message_bytes),
        )
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.config.group(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_interval_ms=600_000,
            fetch_max_bytes=max(52_428_800, self.settings.topic_max_message_bytes * 2),
            max_partition_fetch_bytes=self.settings.topic_max_message_bytes + _RECORD_OVERHEAD,
        )
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe([self.topic(self.config.source_topic)], listener=_Listener(self))

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, handle, produce and commit until `stop` is set; then finish what is in
        flight, commit it and close."""
        await self.start()
        assert self.consumer is not None
        queue: asyncio.Queue[_Batch | None] = asyncio.Queue()
        # A stage that holds commits back (the aggregator) judges what is safe from its state,
        # which must not run ahead of what is acknowledged: one batch at a time there.
        in_flight = 1 if self.config.commit_offset is not None else self.config.max_in_flight
        slots = asyncio.Semaphore(max(in_flight, 1))
        finisher = asyncio.create_task(self._finish_in_order(queue, slots))
        try:
            while not stop.is_set():
                await slots.acquire()
                if finisher.done():  # it only ends on an error: raise it here
                    finisher.result()
                try:
                    fetched = await self._poll()
                except BaseException:
                    slots.release()
                    raise
                fetched = {
                    tp: part for tp, part in fetched.items() if part and tp not in self._revoking
                }
                if not fetched or stop.is_set():
                    slots.release()
                    if fetched:  # polled while stopping: not handled, so not committed
                        continue
                    if self.config.until_caught_up and await self._caught_up():
                        log.info("caught up with the end of every partition; stopping")
                        stop.set()
                    continue
                records = [record for part in fetched.values() for record in part]
                batch = _Batch(
                    records=fetched,
                    epochs={tp: self._epoch.get(tp, 0) for tp in fetched},
                    task=asyncio.create_task(self._handle_all(records, stop)),
                )
                self._in_flight.append(batch)
                queue.put_nowait(batch)
        finally:
            if not stop.is_set():  # leaving on an error: what is in flight is not committed
                for batch in self._in_flight:
                    batch.task.cancel()
            queue.put_nowait(None)
            try:
                await finisher
            finally:
                for batch in self._in_flight:
                    batch.task.cancel()
                await self.close()

    async def _poll(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        """One poll, topped up for at most `fill_wait_ms` until `max_records` are in hand."""
        assert self.consumer is not None
        want = self.config.max_records
        fetched: dict[TopicPartition, list[ConsumerRecord]] = await self.consumer.getmany(
            timeout_ms=self.config.poll_timeout_ms, max_records=want
        )
        count = sum(len(part) for part in fetched.values())
        if not count or not self.config.fill_wait_ms:
            return fetched
        deadline = time.monotonic() + self.config.fill_wait_ms / 1000
        while count < want and (left := deadline - time.monotonic()) > 0:
            more = await self.consumer.getmany(
                timeout_ms=max(int(left * 1000), 1), max_records=want - count
            )
            for tp, part in more.items():
                fetched.setdefault(tp, []).extend(part)
                count += len(part)
        return fetched

    async def _caught_up(self) -> bool:
        assert self.consumer is not None
        assigned = list(self.consumer.assignment())
        if not assigned or self._in_flight:
            return False
        ends = await self.consumer.end_offsets(assigned)
        for tp in assigned:
            if await self.consumer.position(tp) < ends[tp]:
                return False
        return True

    # -- handling -------------------------------------------------------------------------------

    async def _handle_all(
        self, records: list[ConsumerRecord], stop: asyncio.Event
    ) -> list[Result | Retry]:
        """A result per record: outputs, a dead letter in place of poison, or Retry."""
        service = self.config.service
        results: list[Result | Retry | None] = [None] * len(records)
        todo = list(range(len(records)))
        attempt = 0
        handled = 0
        started = time.perf_counter()
        while True:
            outcome = await self._call([records[i] for i in todo])
            again: list[int] = []
            last: BaseException | None = None
            for i, result in zip(todo, outcome, strict=True):
                if isinstance(result, TransientError):
                    again.append(i)
                    last = result
                elif isinstance(result, BaseException):
                    results[i] = [self._dead_letter_output(records[i], result)]
                else:
                    results[i] = result
                    handled += 1
                    metrics.MESSAGES.labels(service, "ok").inc()
            if not again:
                break
            attempt += 1
            metrics.RETRIES.labels(service).inc(len(again))
            if attempt > self.policy.retries or stop.is_set():
                for i in again:
                    results[i] = Retry(last or TransientError("stopped while retrying"))
                break
            delay = self.policy.delay(attempt, last)
            log.warning(
                "transient failure, retrying",
                extra={"attempt": attempt, "records": len(again), "error": str(last)},
            )
            try:  # a stop interrupts the wait: the records are not committed and come back
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
            todo = again
        if records:  # a batch's time, shared by its records
            per_record = (time.perf_counter() - started) / len(records)
            for _ in range(handled):
                metrics.HANDLE_SECONDS.labels(service).observe(per_record)
        return [result for result in results if result is not None]

    async def _call(self, records: list[ConsumerRecord]) -> Sequence[Result]:
        if self.batch_handler is not None:
            try:
                results = await self.batch_handler(records)
            except Exception as error:  # noqa: BLE001 - the batch as a whole failed
                if not isinstance(error, TransientError | PoisonMessage | InvalidInput):
                    log.exception("unexpected error handling a batch")
                return [error] * len(records)
            if len(results) != len(records):
                raise RuntimeError(
                    f"{self.config.service}: batch handler gave {len(results)} results "
                    f"for {len(records)} records"
                )
            return results
        return await asyncio.gather(*(self._call_one(record) for record in records))

    async def _call_one(self, record: ConsumerRecord) -> Result:
        assert self.handler is not None
        try:
            return await self.handler(record)
        except (PoisonMessage, InvalidInput, TransientError) as error:
            return error
        except Exception as error:  # noqa: BLE001 - an unexpected bug must not stall the stream
            log.exception("unexpected error, dead-lettering", extra={"offset": record.offset})
            return error

    def _dead_letter_output(self, record: ConsumerRecord, error: BaseException) -> Output:
        service = self.config.service
        try:
            failure = self.config.describe(record)
        except Exception:  # noqa: BLE001 - the record is poison; describing it may fail too
            failure = Failure()
        letter = dead_letter(record, service, error, failure)
        limit = self.settings.topic_max_message_bytes - _RECORD_OVERHEAD
        if letter.ByteSize() > limit:  # keep the reason; cut the original bytes to fit
            keep = max(limit - (letter.ByteSize() - len(letter.value)) - 128, 0)
            letter.reason += f" (original value of {len(letter.value)} bytes cut to {keep})"
            letter.value = letter.value[:keep]
        metrics.MESSAGES.labels(service, "dead_letter").inc()
        log.warning(
            "dead letter",
            extra={
                "reason": letter.reason,
                "origin": f"{record.topic}/{record.partition}@{record.offset}",
            },
        )
        return Output(topics.DEAD_LETTERS, record.key or b"", letter.SerializeToString())

    def _checked(self, record: ConsumerRecord, outputs: Sequence[Output]) -> Sequence[Output]:
        """`outputs`, or the record's dead letter when one of them no topic would accept."""
        limit = self.settings.topic_max_message_bytes
        for output in outputs:
            size = len(output.key) + len(output.value) + _RECORD_OVERHEAD
            if size > limit and output.topic != topics.DEAD_LETTERS:
                error = OutputTooLarge(
                    f"{record.topic}/{record.partition}@{record.offset}: its output for "
                    f"{output.topic} is {size} bytes, more than the topic's max.message.bytes "
                    f"{limit}"
                )
                return [self._dead_letter_output(record, error)]
        return outputs

    # -- finishing, in poll order -----------------------------------------------------------------

    async def _finish_in_order(self, queue: asyncio.Queue[_Batch | None], slots: Any) -> None:
        while (batch := await queue.get()) is not None:
            try:
                await self._finish(batch)
            finally:
                if batch in self._in_flight:
                    self._in_flight.remove(batch)
                slots.release()

    def _current(self, tp: TopicPartition, epoch: int) -> bool:
        assert self.consumer is not None
        return self._epoch.get(tp, 0) == epoch and tp in self.consumer.assignment()

    async def _finish(self, batch: _Batch) -> None:
        """Produce a handled batch's outputs, wait for their acknowledgement, then commit."""
        assert self.producer is not None
        try:
            results = await batch.task
        except asyncio.CancelledError:
            if batch.task.cancelled():  # abandoned at a revoke: its records come again
                return
            raise
        sends = []
        ends: dict[TopicPartition, int] = {}
        i = 0
        try:
            for tp, part in batch.records.items():
                mine, i = results[i : i + len(part)], i + len(part)
                if not self._current(tp, batch.epochs[tp]):
                    continue  # rewound or revoked since the poll: these records come again
                ends[tp] = part[-1].offset + 1
                for record, result in zip(part, mine, strict=True):
                    if isinstance(result, Retry):
                        self._rewind(tp, record.offset, result.error)
                        ends[tp] = record.offset
                        break
                    assert not isinstance(result, BaseException)
                    for output in self._checked(record, result):
                        sends.append(
                            await self.producer.send(
                                self.topic(output.topic), output.value, key=output.key
                            )
                        )
                        metrics.OUTPUTS.labels(self.config.service, output.topic).inc()
            await asyncio.gather(*sends)  # every output acknowledged before the commit below
        except KafkaError as error:
            log.error(
                "outputs not acknowledged; their inputs will be handled again",
                extra={"error": repr(error)},
            )
            for future in sends:  # the ones still pending fail on their own; none is awaited
                if future.done() and not future.cancelled():
                    future.exception()
            for tp, part in batch.records.items():
                if tp in ends and self._current(tp, batch.epochs[tp]):
                    self._rewind(tp, part[0].offset, error)
            return
        await self._commit(ends)

    async def _commit(self, ends: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        offsets = dict(ends)
        if self.config.commit_offset is not None:
            offsets = {tp: self.config.commit_offset(tp, o) for tp, o in offsets.items()}
        # Never move a committed offset backwards: only commit where there is progress.
        offsets = {tp: o for tp, o in offsets.items() if o > self._committed.get(tp, -1)}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # The group moved these partitions on while the batch was handled: the new owner
            # reads them from the last commit (its outputs may repeat ours; they are keyed).
            metrics.COMMITS_REFUSED.labels(self.config.service).inc()
            log.warning("commit refused after a rebalance; dropped", extra={"error": str(error)})
            return
        self._committed.update(offsets)
        for tp in offsets:
            self._rewinds.pop(tp, None)
        metrics.COMMITS.labels(self.config.service).inc()

    def _rewind(self, tp: TopicPartition, offset: int, error: BaseException) -> None:
        """Go back to `offset` on `tp` after a pause: its record failed transiently too long."""
        assert self.consumer is not None
        self._epoch[tp] = self._epoch.get(tp, 0) + 1
        count = self._rewinds[tp] = self._rewinds.get(tp, 0) + 1
        delay = self.policy.delay(count, error)
        metrics.REWINDS.labels(self.config.service).inc()
        log.warning(
            "transient failure outlasted its retries; partition rewound and paused",
            extra={
                "partition": str(tp),
                "offset": offset,
                "pause_s": round(delay, 2),
                "error": str(error),
            },
        )
        if tp not in self.consumer.assignment():
            return
        self.consumer.seek(tp, offset)
        self.consumer.pause(tp)
        epoch = self._epoch[tp]
        asyncio.get_running_loop().call_later(delay, self._resume, tp, epoch)

    def _resume(self, tp: TopicPartition, epoch: int) -> None:
        consumer = self.consumer
        if consumer is not None and self._epoch.get(tp) == epoch and tp in consumer.assignment():
            consumer.resume(tp)

    async def _release(self, revoked: set[TopicPartition]) -> None:
        """Before `revoked` move away: let their in-flight batches commit, within the grace."""
        self._revoking |= revoked
        try:
            deadline = time.monotonic() + self.config.revoke_grace_s
            while time.monotonic() < deadline and any(
                set(batch.records) & revoked for batch in self._in_flight
            ):
                await asyncio.sleep(0.05)
            for batch in self._in_flight:
                if set(batch.records) <= revoked and not batch.task.done():
                    batch.task.cancel()
            for tp in revoked:
                self._epoch[tp] = self._epoch.get(tp, 0) + 1
                self._committed.pop(tp, None)
                self._rewinds.pop(tp, None)
            if self.config.on_revoked is not None and revoked:
                self.config.on_revoked(set(revoked))
        finally:
            self._revoking -= revoked


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so a service finishes its batch and commits first."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
