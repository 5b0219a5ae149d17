"""One error tree for amberscan. Pure: no imports, so the domain packages may raise these.

Two families, raised by different layers:

- The domain (`geo/`, `vision/`, `model/`) raises `InvalidInput` and its subclasses when what it
  is given can never be processed as it is: an undecodable image, a malformed region, a mask
  whose runs do not add up. It knows nothing of streams.
- The runners raise the stream-level errors: `PoisonMessage` ends in the dead-letter topic with
  its reason; `TransientError` is retried with backoff. A runner decides that an `InvalidInput`
  is poison: the Kafka loop dead-letters `InvalidInput` as it does `PoisonMessage`.

Messages name their input ("tile 16/38012/22100: PNG truncated"), never just "bad input".
"""

from __future__ import annotations


class AmberscanError(Exception):
    """Base of every error amberscan raises on purpose."""


class InvalidInput(AmberscanError):
    """Input the domain code can never process as given (the message says what and where)."""


class InvalidImage(InvalidInput):
    """An image that cannot be decoded or is not usable imagery (names the source and problem)."""


class InvalidRegion(InvalidInput):
    """A scan region that is malformed, empty or too large."""


class InvalidMask(InvalidInput):
    """An encoded superpixel mask that is malformed or does not fit its box."""


class PoisonMessage(AmberscanError):
    """A stream message that will never succeed: dead-letter it and go on."""


class TransientError(AmberscanError):
    """A failure that may pass (a server restarting, a timeout): retry with backoff.

    `retry_after_s` is how long the server asked to wait (HTTP Retry-After, gRPC pushback).
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelContractError(AmberscanError):
    """A model server answered with, or was sent, the wrong shape or dtype."""
