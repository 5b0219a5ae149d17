"""One error tree for amberscan.

`PoisonMessage` ends in the dead-letter topic with its reason; `TransientError` is retried with
backoff. Messages name their input ("tile 16/38012/22100: PNG truncated"), never just "bad input".
"""

from __future__ import annotations


class AmberscanError(Exception):
    """Base of every error amberscan raises on purpose."""


class PoisonMessage(AmberscanError):
    """An input that will never succeed: dead-letter it and go on."""


class InvalidImage(PoisonMessage):
    """An image that cannot be decoded or is not usable imagery (names the source and problem)."""


class InvalidRegion(AmberscanError):
    """A scan region that is malformed, empty or too large."""


class TransientError(AmberscanError):
    """A failure that may pass (a server restarting, a timeout): retry with backoff.

    `retry_after_s` is how long the server asked to wait (HTTP Retry-After, gRPC pushback).
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelContractError(AmberscanError):
    """A model server answered with, or was sent, the wrong shape or dtype."""
