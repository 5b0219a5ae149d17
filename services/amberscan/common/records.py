"""The records a stage reads and writes, beyond its handlers' own messages: an output to
produce, a consumed record decoded or described for its dead letter, and the dead letter itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka.structs import ConsumerRecord
from google.protobuf.timestamp_pb2 import Timestamp

from amberscan.errors import PoisonMessage
from amberscan.v1 import messages_pb2 as pb

M = TypeVar("M")
# Bytes a record needs beyond its key and value (record and batch headers), kept free when
# checking an output against the topic's max.message.bytes.
RECORD_OVERHEAD = 512


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
