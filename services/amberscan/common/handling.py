"""A stage's handling of one poll's records: each becomes its outputs, a dead letter in place of
poison, or a `Retry` when its transient failure outlasts the retry policy.

- poison input (`PoisonMessage`, a domain `InvalidInput`, or an unexpected exception) becomes a
  dead letter with its reason and origin, and the stream goes on;
- an output larger than the topic's `max.message.bytes` is a dead letter too, never a crash;
- a transient failure is retried under the shared `RetryPolicy` (bounded, jittered, honouring
  Retry-After). A record still failing after that is not dead-lettered (a model-server restart
  must not lose tiles): it is given back as `Retry`, and the stage rewinds its partition to it —
  until the record has had `AMBERSCAN_MAX_RECORD_ATTEMPTS` tries or kept failing for
  `AMBERSCAN_MAX_RECORD_AGE_S`: then the stage makes its dead letter (`give_up`, a `GaveUp`).

Nothing here touches the consumer or the producer: what is produced and committed, and when, is
the stage's (`stage.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka.structs import ConsumerRecord

from amberscan.common import metrics, topics
from amberscan.common.records import RECORD_OVERHEAD, Failure, Output, dead_letter
from amberscan.common.retry import RetryPolicy
from amberscan.common.settings import KafkaConfig, RetryConfig
from amberscan.errors import InvalidInput, PoisonMessage, TransientError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retry:
    """A record whose transient failure outlasted the retry policy: it comes back later
    (`attempts`: the tries it had in this round)."""

    error: BaseException
    attempts: int = 1


class GaveUp(PoisonMessage):
    """A record that kept failing transiently past the stage's bound on its attempts or age."""


# What handling one record gives: its outputs, or the error that stopped it.
Result = Sequence[Output] | BaseException
Handler = Callable[[ConsumerRecord], Awaitable[Sequence[Output]]]
# One result per record, in order; a per-record error goes in its place, not raised.
BatchHandler = Callable[[list[ConsumerRecord]], Awaitable[Sequence[Result]]]


class OutputTooLarge(PoisonMessage):
    """An output that no broker would accept on its topic (larger than max.message.bytes)."""


class Handling:
    """A stage's `handler` (one record → its outputs) or `batch_handler` (a poll's records → one
    result each) under the retry `policy`, with `service`'s dead letters (their tile and scan
    from `describe`) in place of poison."""

    def __init__(
        self,
        kafka: KafkaConfig,
        service: str,
        describe: Callable[[ConsumerRecord], Failure],
        policy: RetryPolicy,
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
    ) -> None:
        self.kafka = kafka
        self.service = service
        self.describe = describe
        self.policy = policy
        self.handler = handler
        self.batch_handler = batch_handler

    async def handle_all(
        self, records: list[ConsumerRecord], stop: asyncio.Event
    ) -> list[Result | Retry]:
        """A result per record: outputs, a dead letter in place of poison, or Retry."""
        service = self.service
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
                    results[i] = Retry(last or TransientError("stopped while retrying"), attempt)
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
                    f"{self.service}: batch handler gave {len(results)} results "
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

    def give_up(
        self,
        record: ConsumerRecord,
        error: BaseException,
        attempts: int,
        age_s: float,
        bounds: RetryConfig,
    ) -> Output:
        """The dead letter of a record that kept failing transiently past the stage's `bounds`
        (checked after each round of retries, so it may have had a round more than the bound's
        tries: rounds are not cut short)."""
        gave_up = GaveUp(
            f"{record.topic}/{record.partition}@{record.offset}: gave up after {attempts} "
            f"attempts over {age_s:.0f} s of transient failures (AMBERSCAN_MAX_RECORD_ATTEMPTS="
            f"{bounds.max_record_attempts}, AMBERSCAN_MAX_RECORD_AGE_S={bounds.max_record_age_s:g}"
            f"); last: {error}"
        )
        return self._dead_letter_output(record, gave_up)

    def _dead_letter_output(self, record: ConsumerRecord, error: BaseException) -> Output:
        service = self.service
        try:
            failure = self.describe(record)
        except Exception:  # noqa: BLE001 - the record is poison; describing it may fail too
            failure = Failure()
        letter = dead_letter(record, service, error, failure)
        limit = self.kafka.max_message_bytes - RECORD_OVERHEAD
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

    def checked(self, record: ConsumerRecord, outputs: Sequence[Output]) -> Sequence[Output]:
        """`outputs`, or the record's dead letter when one of them no topic would accept."""
        limit = self.kafka.max_message_bytes
        for output in outputs:
            size = len(output.key) + len(output.value) + RECORD_OVERHEAD
            if size > limit and output.topic != topics.DEAD_LETTERS:
                error = OutputTooLarge(
                    f"{record.topic}/{record.partition}@{record.offset}: its output for "
                    f"{output.topic} is {size} bytes, more than the topic's max.message.bytes "
                    f"{limit}"
                )
                return [self._dead_letter_output(record, error)]
        return outputs
