"""The error tree: the domain's errors are invalid input, not stream-level poison."""

from __future__ import annotations

import pytest

from amberscan.errors import (
    AmberscanError,
    InvalidImage,
    InvalidInput,
    InvalidMask,
    InvalidRegion,
    PoisonMessage,
    TransientError,
)


@pytest.mark.parametrize("error", [InvalidImage, InvalidRegion, InvalidMask])
def test_domain_errors_are_invalid_input_and_not_poison(error: type[Exception]) -> None:
    assert issubclass(error, InvalidInput) and issubclass(error, AmberscanError)
    assert not issubclass(error, PoisonMessage) and not issubclass(error, TransientError)


def test_poison_and_transient_are_apart() -> None:
    assert not issubclass(PoisonMessage, TransientError)
    assert not issubclass(TransientError, PoisonMessage)
    assert not issubclass(PoisonMessage, InvalidInput)
