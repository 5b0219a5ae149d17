"""The stage engine: the consume → handle → produce → commit loop every streaming service runs.

(Over 450 lines: one loop whose parts — poll, finish in order, commit, rewind, release on a
rebalance — share its state, the partitions' epochs, commits and batches in flight; split into
modules, each part would reach into the others'. Handling and records are apart already.)

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
- poison input and outputs too large for their topic become dead letters, and transient
  failures are retried under the shared `RetryPolicy`, by the stage's `Handling` (`handling.py`);
- a record still failing transiently after its retries is not dead-lettered (a model-server
  restart must not lose tiles): its partition is rewound to it and paused for a backoff, so it
  comes back later, and nothing waits on it meanwhile — no lock, no stalled rebalance. Not for
  ever: once it has had `retry.max_record_attempts` tries, or has kept failing for
  `retry.max_record_age_s` since its first failure, it is dead-lettered with its reason (its
  tile gets a failed status) and its partition goes on. The count is this process's: a restart
  or a rebalance starts it again, which at worst lengthens the bound by one more round.
- outputs the broker does not acknowledge (a send error) rewind each partition of their batch
  to the batch's first record, and the producer is replaced: aiokafka's idempotent producer
  numbers the batches it sends to a partition, and after one the broker refused, every later
  send there fails (OutOfOrderSequenceNumber).
- a stateful stage (one with `commit_offset`: the aggregator) is rewound further, to the
  partition's last commit, and `forget`s the partition: its state holds what it built from
  records since that commit (a tile's first scores), which a rewind to the failing record would
  not read again. It is rebuilt as after a restart.
- a rebalance waits at most `revoke_grace_s` for in-flight batches of the revoked partitions to
  finish and commit; what is still running then is abandoned uncommitted (the new owner redoes it;
  duplicates downstream are harmless). A commit the group refuses because it has moved on is
  logged and counted, never fatal.

Topics are created by `topic_admin.py`; outputs, dead letters and decoding are in `records.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord

from amberscan.common import metrics, topics
from amberscan.common.bus import client_options, connect
from amberscan.common.handling import BatchHandler, Handler, Handling, Result, Retry
from amberscan.common.records import RECORD_OVERHEAD, Failure, Output
from amberscan.common.retry import RetryPolicy
from amberscan.common.settings import KafkaConfig, StreamingSettings

log = logging.getLogger(__name__)

# Bytes of records sent to one partition in one batch (a poll's ~30 feature vectors of 5 KB).
_BATCH_BYTES = 1024 * 1024


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
    # Called with partitions that will be read again from their last commit — revoked (after
    # that commit), or, in a stage with `commit_offset`, rewound — so the stage drops the state
    # it built from them; the records coming again build it anew.
    forget: Callable[[set[TopicPartition]], None] | None = None
    # A batch job (a replay) ends once it has read every partition to its end.
    until_caught_up: bool = False

    def group(self, kafka: KafkaConfig) -> str:
        return self.group_id or f"{kafka.topic_prefix}amberscan-{self.service}"


@dataclass
class _Stuck:
    """A record a partition was rewound to: its tries so far, and when it first failed."""

    offset: int
    since: float
    attempts: int = 0


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
    result each), not both; `handling` runs it, with the retries and the dead letters.
    """

    def __init__(
        self,
        settings: StreamingSettings,
        config: StageConfig,
        handler: Handler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise ValueError("a Stage takes a handler or a batch_handler, not both or neither")
        self.settings = settings
        self.config = config
        self.policy = RetryPolicy.from_config(settings.retry)
        self.handling = Handling(
            settings.kafka, config.service, config.describe, self.policy, handler, batch_handler
        )
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._committed: dict[TopicPartition, int] = {}
        # The first offset taken from a partition since it was assigned: where a stateful stage
        # that has not committed there yet began building its state.
        self._taken: dict[TopicPartition, int] = {}
        # The offset after the last record taken from a partition: with the commit, what this
        # process holds uncommitted (`metrics.UNCOMMITTED`: what a crash now would redeliver).
        self._next: dict[TopicPartition, int] = {}
        # A partition's epoch moves on when it is rewound or revoked: results of batches polled
        # before that are neither produced nor committed (the records come again).
        self._epoch: dict[TopicPartition, int] = {}
        self._rewinds: dict[TopicPartition, int] = {}  # consecutive rewinds, for the backoff
        # The record each partition was rewound to, its tries so far and its first failure.
        self._stuck: dict[TopicPartition, _Stuck] = {}
        self._revoking: set[TopicPartition] = set()
        self._in_flight: deque[_Batch] = deque()

    @property
    def batch_handler(self) -> BatchHandler | None:
        """The batch handler `handling` runs (the classifier's replay wraps it to count)."""
        return self.handling.batch_handler

    @batch_handler.setter
    def batch_handler(self, batch_handler: BatchHandler | None) -> None:
        self.handling.batch_handler = batch_handler

    def topic(self, base: str) -> str:
        return topics.topic_name(self.settings.kafka.topic_prefix, base)

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **client_options(self.settings.kafka),
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_request_size=self.settings.kafka.max_message_bytes + RECORD_OVERHEAD,
            # The broker holds a whole record batch to the topic's max.message.bytes.
            max_batch_size=min(_BATCH_BYTES, self.settings.kafka.max_message_bytes),
        )

    async def start(self) -> None:
        self.producer = self._new_producer()
        self.consumer = AIOKafkaConsumer(
            **client_options(self.settings.kafka),
            group_id=self.config.group(self.settings.kafka),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_interval_ms=600_000,
            fetch_max_bytes=max(52_428_800, self.settings.kafka.max_message_bytes * 2),
            max_partition_fetch_bytes=self.settings.kafka.max_message_bytes + RECORD_OVERHEAD,
        )
        await connect(self.producer, self.settings.kafka)
        await connect(self.consumer, self.settings.kafka)
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
                    fetched, epochs = await self._poll()
                except BaseException:
                    slots.release()
                    raise
                metrics.HEARTBEAT.beat()  # a poll returned: the liveness probe's progress
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
                for tp, part in fetched.items():
                    self._taken.setdefault(tp, part[0].offset)
                    self._next[tp] = part[-1].offset + 1
                self._held()
                batch = _Batch(
                    records=fetched,
                    epochs={tp: epochs[tp] for tp in fetched},
                    task=asyncio.create_task(self.handling.handle_all(records, stop)),
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

    async def _poll(
        self,
    ) -> tuple[dict[TopicPartition, list[ConsumerRecord]], dict[TopicPartition, int]]:
        """One poll, topped up for at most `fill_wait_ms` until `max_records` are in hand; with
        each partition's epoch when its records were taken.

        A partition rewound while the poll fills (a batch finishing meanwhile) keeps the epoch
        its records were taken in, so they are neither produced nor committed: the rewind brings
        them again. Were they stamped after the poll, they would count as read after the rewind
        and be committed past the records it sent back for, which a crash would then lose.
        Records taken after the rewind (its pause over) replace those taken before it.
        """
        assert self.consumer is not None
        want = self.config.max_records
        fetched: dict[TopicPartition, list[ConsumerRecord]] = {}
        epochs: dict[TopicPartition, int] = {}
        count = 0
        timeout_ms = self.config.poll_timeout_ms
        deadline = 0.0
        while True:
            more = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=want - count)
            if more:
                metrics.RECORDS_READ.labels(self.config.service, self.config.source_topic).inc(
                    sum(len(part) for part in more.values())
                )
            # Read at once, with no await since getmany took the records: a rewind before this
            # point is one they were taken after.
            for tp, part in more.items():
                epoch = self._epoch.get(tp, 0)
                if tp in epochs and epochs[tp] != epoch:
                    count -= len(fetched.pop(tp))  # taken before the rewind: they come again
                epochs[tp] = epoch
                fetched.setdefault(tp, []).extend(part)
                count += len(part)
            if not count or not self.config.fill_wait_ms or count >= want:
                return fetched, epochs
            if not deadline:
                deadline = time.monotonic() + self.config.fill_wait_ms / 1000
            if (left := deadline - time.monotonic()) <= 0:
                return fetched, epochs
            timeout_ms = max(int(left * 1000), 1)

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

    # -- finishing, in poll order -----------------------------------------------------------------

    async def _finish_in_order(self, queue: asyncio.Queue[_Batch | None], slots: Any) -> None:
        while (batch := await queue.get()) is not None:
            try:
                await self._finish(batch)
                metrics.HEARTBEAT.beat()
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
                    outputs: Sequence[Output]
                    if isinstance(result, Retry):
                        letter = self._give_up(tp, record, result)
                        if letter is None:
                            ends[tp] = self._rewind(tp, record.offset, result.error)
                            break
                        outputs = [letter]
                    else:
                        assert not isinstance(result, BaseException)
                        outputs = self.handling.checked(record, result)
                    for output in outputs:
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
            await self._renew_producer()
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
        for tp, offset in offsets.items():
            self._rewinds.pop(tp, None)
            if tp in self._stuck and self._stuck[tp].offset < offset:
                del self._stuck[tp]
        metrics.COMMITS.labels(self.config.service).inc()
        self._held()

    def _held(self) -> None:
        """Set `metrics.UNCOMMITTED`: the records taken and not committed, on every partition."""
        held = 0
        for tp, end in self._next.items():
            held += max(0, end - self._committed.get(tp, self._taken.get(tp, end)))
        metrics.UNCOMMITTED.labels(self.config.service, self.config.source_topic).set(held)

    async def _renew_producer(self) -> None:
        """A new producer in place of one whose outputs the broker refused: the old one's
        sequence numbers of a partition now skip the refused batch, so the broker would refuse
        every later send there (OutOfOrderSequenceNumber). If the broker cannot be reached, the
        old one stays, and the next failed publish tries again."""
        fresh = self._new_producer()
        try:
            await connect(fresh, self.settings.kafka)
        except KafkaError as error:
            log.warning("producer not replaced; kept", extra={"error": repr(error)})
            with contextlib.suppress(KafkaError):
                await fresh.stop()
            return
        old, self.producer = self.producer, fresh
        if old is not None:
            try:  # its pending sends, all of the failed batch, end first
                await asyncio.wait_for(old.stop(), self.config.revoke_grace_s)
            except (TimeoutError, KafkaError) as error:
                log.warning("replaced producer not stopped", extra={"error": repr(error)})

    def _give_up(self, tp: TopicPartition, record: ConsumerRecord, retry: Retry) -> Output | None:
        """The dead letter of `record`, failing transiently again, once it is past the bounds
        on its tries and age; None while it may come back."""
        now = time.monotonic()
        stuck = self._stuck.get(tp)
        if stuck is None or stuck.offset != record.offset:
            stuck = self._stuck[tp] = _Stuck(record.offset, now)
        stuck.attempts += retry.attempts
        age = now - stuck.since
        bounds = self.settings.retry
        if stuck.attempts < bounds.max_record_attempts and age < bounds.max_record_age_s:
            return None
        del self._stuck[tp]
        metrics.GAVE_UP.labels(self.config.service).inc()
        return self.handling.give_up(record, retry.error, stuck.attempts, age, bounds)

    def _rewind(self, tp: TopicPartition, offset: int, error: BaseException) -> int:
        """Go back on `tp` to `offset`, where a record failed (transiently too long, or its batch's
        outputs were not acknowledged), after a pause; returns where it went back to.

        A stateful stage goes back to the partition's last commit (or, before any, its first
        record taken) and forgets the partition: its state holds records since then that a
        rewind to `offset` would not read again (a tile's first scores).
        """
        assert self.consumer is not None
        if self.config.commit_offset is not None:
            offset = min(offset, self._committed.get(tp, self._taken.get(tp, offset)))
            if self.config.forget is not None:
                self.config.forget({tp})
        self._epoch[tp] = self._epoch.get(tp, 0) + 1
        if tp in self._next:  # what was taken from `offset` on comes again
            self._next[tp] = min(self._next[tp], offset)
            self._held()
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
            return offset
        self.consumer.seek(tp, offset)
        self.consumer.pause(tp)
        epoch = self._epoch[tp]
        asyncio.get_running_loop().call_later(delay, self._resume, tp, epoch)
        return offset

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
                self._taken.pop(tp, None)
                self._next.pop(tp, None)
                self._rewinds.pop(tp, None)
                self._stuck.pop(tp, None)
            if self.config.forget is not None and revoked:
                self.config.forget(set(revoked))
            self._held()
        finally:
            self._revoking -= revoked


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so a service finishes its batch and commits first."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
