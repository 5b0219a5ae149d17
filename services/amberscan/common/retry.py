"""One retry policy for transient failures, shared by the Kafka loop, the model-server client
and the imagery providers: bounded attempts, exponential backoff with full jitter (so copies
that failed together do not retry together), and the server's own `Retry-After` where it gives
one. Built on tenacity.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tenacity

from amberscan.common.settings import RetryConfig

MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` more tries after the first; the n-th waits a random time in
    [0, min(cap_s, base_s · 2ⁿ⁻¹)], or what the error's `retry_after_s` asks (capped)."""

    retries: int = 5
    base_s: float = 0.5
    cap_s: float = MAX_BACKOFF_S

    @classmethod
    def from_config(cls, retry: RetryConfig) -> RetryPolicy:
        return cls(retries=retry.max_retries, base_s=retry.backoff_s)

    def delay(
        self,
        attempt: int,
        error: BaseException | None = None,
        *,
        retry_after_s: float | None = None,
    ) -> float:
        """Seconds to wait before retry number `attempt` (1 for the first retry): what the
        server asked (`retry_after_s`, or the error's), else the jittered backoff."""
        asked = (
            retry_after_s if retry_after_s is not None else getattr(error, "retry_after_s", None)
        )
        if asked is not None:
            return min(max(float(asked), 0.0), self.cap_s)
        ceiling = min(self.cap_s, self.base_s * 2 ** max(attempt - 1, 0))
        return random.uniform(0.0, ceiling)

    def retrying(self, transient: Callable[[BaseException], bool]) -> tenacity.AsyncRetrying:
        """An `async for attempt in policy.retrying(...)` loop retrying errors `transient` accepts,
        re-raising the last one when the retries are used up."""

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            return self.delay(state.attempt_number, error)

        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=wait,
            retry=tenacity.retry_if_exception(transient),
            reraise=True,
        )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from an HTTP `Retry-After` header (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def grpc_retry_after(metadata: Any) -> float | None:
    """Seconds from gRPC's `grpc-retry-pushback-ms` trailing metadata, else None."""
    for key, value in metadata or ():
        if key == "grpc-retry-pushback-ms":
            try:
                return max(int(value), 0) / 1000
            except (TypeError, ValueError):
                return None
    return None
