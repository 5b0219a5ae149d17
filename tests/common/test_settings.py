import pytest
from pydantic import ValidationError

from amberscan.common.settings import Settings


def test_defaults_are_loopback() -> None:
    settings = Settings()
    assert settings.kafka_bootstrap.startswith("127.0.0.1:")
    assert settings.min_positive_superpixels == 2


def test_environment_overrides_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMBERSCAN_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("AMBERSCAN_TOPIC_PARTITIONS", "12")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "ignored-without-prefix:1")
    settings = Settings()
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.topic_partitions == 12


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AMBERSCAN_TOPIC_PARTITIONS", "0"),
        ("AMBERSCAN_FEATURE_BATCH_SIZE", "not-a-number"),
        ("AMBERSCAN_DATABASE_SCHEMA", "drop table;"),
    ],
)
def test_invalid_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("AMBERSCAN_").lower()):
        Settings()


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        Settings().kafka_bootstrap = "elsewhere:1"  # type: ignore[misc]
