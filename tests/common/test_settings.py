from pathlib import Path

import pytest
from pydantic import ValidationError

from amberscan.common.settings import (
    PREFIX,
    PROCESSES,
    Concern,
    KafkaConfig,
    ModelServerSettings,
    ProcessSettings,
    Settings,
    SinkSettings,
    TilerSettings,
    WebSettings,
    environment,
    from_variables,
    load_settings,
    replace,
    variables,
)


@pytest.fixture(autouse=True)
def no_amberscan_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the defaults, whatever the shell running it has set."""
    for name in variables(Settings):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_loopback() -> None:
    settings = Settings()
    assert settings.kafka.bootstrap.startswith("127.0.0.1:")
    assert settings.aggregator.min_positive_superpixels == 2


def test_environment_overrides_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMBERSCAN_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("AMBERSCAN_TOPIC_PARTITIONS", "12")
    monkeypatch.setenv("amberscan_s3_secure", "true")  # case-insensitive, as before
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "ignored-without-prefix:1")
    settings = Settings()
    assert settings.kafka.bootstrap == "kafka:9092"
    assert settings.kafka.partitions == 12
    assert settings.s3.secure is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AMBERSCAN_TOPIC_PARTITIONS", "0"),
        ("AMBERSCAN_FEATURE_BATCH_SIZE", "not-a-number"),
        ("AMBERSCAN_DATABASE_SCHEMA", "drop table;"),
        ("AMBERSCAN_MODEL_SERVER_RUNTIME", "cuda"),
    ],
)
def test_invalid_values_are_rejected_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name):
        Settings()


def test_a_process_reads_only_its_concerns(monkeypatch: pytest.MonkeyPatch) -> None:
    # A bad web variable stops the web map, not the sink, which has no web concern.
    monkeypatch.setenv("AMBERSCAN_WEB_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="AMBERSCAN_WEB_PORT"):
        WebSettings()
    sink = SinkSettings()
    assert not hasattr(sink, "web") and not hasattr(sink, "s3")
    assert "AMBERSCAN_DATABASE_URL" in variables(SinkSettings)
    assert "AMBERSCAN_WEB_PORT" not in variables(SinkSettings)


def test_every_variable_sets_one_field() -> None:
    every = variables(Settings)
    assert all(name.startswith(PREFIX) and name == name.upper() for name in every)
    assert len(set(every.values())) == len(every), "a field read from two variables"
    assert every["AMBERSCAN_KAFKA_BOOTSTRAP"] == "kafka.bootstrap"
    assert every["AMBERSCAN_DATABASE_SCHEMA"] == "database.schema_name"
    assert every["AMBERSCAN_MODEL_SERVER"] == "model_server.address"


def test_the_command_settings_compose_every_process() -> None:
    """`Settings` (the `amberscan` command, tests, tools) is each process's settings, and a
    concern has one name and one class in every process that composes it."""
    kinds: dict[str, type] = {}
    for name, process in PROCESSES.items():
        assert issubclass(Settings, process), name
        assert set(variables(process)) <= set(variables(Settings)), name
        for field, info in process.model_fields.items():
            assert isinstance(info.annotation, type) and issubclass(info.annotation, Concern)
            assert kinds.setdefault(field, info.annotation) is info.annotation, (name, field)
    assert set(variables(Settings)) == {v for p in PROCESSES.values() for v in variables(p)}


def test_load_settings_reads_a_process_by_name_or_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMBERSCAN_MODEL_SERVER_WORKERS", "3")
    assert type(load_settings()) is Settings
    assert type(load_settings("tiler")) is TilerSettings
    served = load_settings("model-server")
    assert isinstance(served, ModelServerSettings) and served.serving.workers == 3
    assert load_settings(ModelServerSettings) == served


def test_settings_are_frozen_and_take_no_flat_fields() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.kafka.bootstrap = "elsewhere:1"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.kafka = KafkaConfig()  # type: ignore[misc]
    with pytest.raises(ValidationError, match="kafka_bootstrap"):
        Settings(kafka_bootstrap="elsewhere:1")  # type: ignore[call-arg]


def test_replace_changes_named_fields_validated() -> None:
    settings = Settings()
    changed = replace(settings, kafka={"topic_prefix": "t.", "partitions": "3"}, web={"port": 1})
    assert (changed.kafka.topic_prefix, changed.kafka.partitions, changed.web.port) == ("t.", 3, 1)
    assert changed.kafka.bootstrap == settings.kafka.bootstrap and changed.s3 == settings.s3
    assert type(changed) is Settings and settings.kafka.topic_prefix == ""
    with pytest.raises(ValidationError, match="partitions"):
        replace(settings, kafka={"partitions": 0})
    with pytest.raises(ValidationError, match="partition_count"):
        replace(settings, kafka={"partition_count": 3})


def test_environment_round_trips_for_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMBERSCAN_WEB_PORT", "1234")  # this process's, not the child's
    settings = replace(
        Settings(), kafka={"topic_prefix": "child."}, explore={"data_dir": Path("/tmp/crops")}
    )
    variables_ = environment(settings)
    assert variables_["AMBERSCAN_TOPIC_PREFIX"] == "child."
    assert "AMBERSCAN_LOCAL_TILES_DIR" not in variables_  # unset stays unset, not "None"
    assert from_variables(variables_, Settings) == settings
    assert from_variables(variables_, SinkSettings).kafka == settings.kafka
    assert from_variables({}, Settings).web.port == 8080


def test_only_process_classes_are_processes() -> None:
    assert all(issubclass(p, ProcessSettings) for p in PROCESSES.values())
    assert PROCESSES["amberscan"] is Settings


def test_a_concern_field_must_name_its_variable() -> None:
    with pytest.raises(TypeError, match=r"fields that name no variable .*\['port'\]"):

        class Unnamed(Concern):
            port: int = 1


@pytest.mark.parametrize(
    ("name", "value", "entry"),
    [
        ("AMBERSCAN_SOURCE_ALLOWED_HOSTS", "*,tiles.example.org:http", "'tiles.example.org:http'"),
        ("AMBERSCAN_SOURCE_ALLOWED_HOSTS", "*,10.0.0.0/8,ho st", "'ho st'"),
        ("AMBERSCAN_SOURCE_ALLOWED_HOSTS", "127.0.0.1:99999", "'127.0.0.1:99999'"),
        ("AMBERSCAN_SOURCE_SCHEMES", "https,ftp", "ftp"),
        ("AMBERSCAN_SOURCE_ALLOWED_ROOTS", "/data, imagery", "'imagery'"),
        ("AMBERSCAN_SOURCE_ALLOWED_BUCKETS", "imagery,s3://other", "'s3://other'"),
    ],
)
def test_a_malformed_source_policy_is_refused_as_the_settings_load(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, entry: str
) -> None:
    """#26 defect 8: a bad entry was refused only when a provider was first made (the tiler's
    start-up); now loading any process's settings refuses it, naming the variable and entry."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        load_settings(TilerSettings)
    assert f"{name}: " in str(refused.value) and entry in str(refused.value), refused.value
    monkeypatch.setenv(name, value.rpartition(",")[0] or "*")
    load_settings(TilerSettings)  # the same list without its bad entry loads
