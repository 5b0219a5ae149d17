"""Settings grouped per concern and composed per process, fed by `AMBERSCAN_*` variables.

(Over 450 lines: the catalogue of every variable, one field each with its default and limits, is
kept in one file, the one source of the ConfigMap and the README's table.)

A concern (`KafkaConfig`, `S3Config`, `DatabaseConfig`, ...) is a frozen pydantic model that
reads nothing itself; each of its fields names its environment variable as its alias
(`KafkaConfig.bootstrap` is `AMBERSCAN_KAFKA_BOOTSTRAP`), and its default is defined there
once. A process has one settings class (`TilerSettings`, `WebSettings`, ... `PROCESSES` names
them) composing only the concerns it uses; the `amberscan` command, whose commands span every
concern, has `Settings`, which composes them all (and so is every process's settings too).
Parsed once in a process's `main()` (`load_settings`) and passed down: plumbing takes the one
concern it needs (`BlobStore(settings.s3)`), or the protocol of the few it needs
(`ModelClientSettings`, `ImagerySettings`), services their process's class; nothing else reads
`os.environ`. A bad value fails naming its variable (`kafka.AMBERSCAN_TOPIC_PARTITIONS`).
The k8s ConfigMap (`k8s/base/config.yaml`) with the overlays' Secret and the README's table
list these variables (`variables(Settings)`) one to one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from amberscan.errors import AmberscanError
from amberscan.sources import SourcePolicy

PREFIX = "AMBERSCAN_"

# Defaults the raster readers and the tiler use too, defined once here (the layer below both)
# as the fields' defaults and imported there.
# Rasters coarser than this are refused: the method was tuned on ~0.4 m/px imagery.
RASTER_MAX_RESOLUTION_M = 1.0
# A scan tile whose imagery covers less than this share of it is skipped (the rest is nodata).
RASTER_MIN_COVERAGE = 0.5


def env(name: str, default: Any, description: str | None = None, **limits: Any) -> Any:
    """A concern's field read from the variable `AMBERSCAN_<name>` (its alias)."""
    return Field(default, alias=PREFIX + name, description=description, **limits)


class Concern(BaseModel):
    """One concern's settings: frozen, built by name in code or by variable from the process."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        unnamed = [n for n, f in cls.model_fields.items() if not (f.alias or "").startswith(PREFIX)]
        if unnamed:
            raise TypeError(f"{cls.__name__}: fields that name no variable (use env()): {unnamed}")


class KafkaConfig(Concern):
    """The bus, and the topics amberscan creates on it."""

    bootstrap: str = env("KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    topic_prefix: str = env("TOPIC_PREFIX", "", "prefix of every topic name (tests isolate)")
    partitions: int = env("TOPIC_PARTITIONS", 6, ge=1)
    # -1 keeps messages forever: features must stay replayable after a model change.
    retention_ms: int = env("TOPIC_RETENTION_MS", -1)
    # Replicas, in-sync replicas an acknowledged write needs, and the largest record; production
    # (3 brokers) runs 3 and 2.
    replication_factor: int = env("TOPIC_REPLICATION_FACTOR", 1, ge=1)
    min_insync_replicas: int = env("TOPIC_MIN_INSYNC_REPLICAS", 1, ge=1)
    max_message_bytes: int = env("TOPIC_MAX_MESSAGE_BYTES", 8 * 1024 * 1024, ge=1024)
    # How clients reach the brokers (common/bus.py makes every client with these): TLS with a CA
    # (and a client certificate for mutual TLS), SASL with a user per service (production:
    # SASL_SSL and SCRAM-SHA-512, a Strimzi KafkaUser each; docs/deploy.md).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = env(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"
    )
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = env(
        "KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "with a SASL_* protocol"
    )
    sasl_username: str = env("KAFKA_SASL_USERNAME", "", "with a SASL_* protocol")
    # In the Secret, never the ConfigMap; kept out of the settings' repr.
    sasl_password: str = env("KAFKA_SASL_PASSWORD", "", "with a SASL_* protocol", repr=False)
    ca_file: str = env(
        "KAFKA_CA_FILE",
        "",
        "PEM CA the brokers' certificates are checked against (empty: system's)",
    )
    cert_file: str = env("KAFKA_CERT_FILE", "", "PEM client certificate, for mutual TLS")
    key_file: str = env("KAFKA_KEY_FILE", "", "PEM key of the client certificate")

    @model_validator(mode="after")
    def _security_fits(self) -> KafkaConfig:
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        given = [
            PREFIX + name
            for name, value in (
                ("KAFKA_CA_FILE", self.ca_file),
                ("KAFKA_CERT_FILE", self.cert_file),
                ("KAFKA_KEY_FILE", self.key_file),
            )
            if value
        ]
        if given and not tls:
            raise ValueError(
                f"{', '.join(given)} set, but AMBERSCAN_KAFKA_SECURITY_PROTOCOL is "
                f"{self.security_protocol}: no TLS (SSL or SASL_SSL)"
            )
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError(
                "AMBERSCAN_KAFKA_CERT_FILE and AMBERSCAN_KAFKA_KEY_FILE go together (mutual TLS)"
            )
        return self

    def credentials_missing(self) -> list[str]:
        """The variables a SASL protocol needs and that are empty (none without SASL)."""
        if not self.security_protocol.startswith("SASL_"):
            return []
        return [
            PREFIX + name
            for name, value in (
                ("KAFKA_SASL_USERNAME", self.sasl_username),
                ("KAFKA_SASL_PASSWORD", self.sasl_password),
            )
            if not value
        ]


class S3Config(Concern):
    """The S3-compatible blob store (MinIO): tiles, crops, label images, models."""

    endpoint: str = env("S3_ENDPOINT", "127.0.0.1:19000")
    access_key: str = env("S3_ACCESS_KEY", "amberscan")
    secret_key: str = env("S3_SECRET_KEY", "amberscan-secret")
    bucket: str = env("S3_BUCKET", "amberscan")
    secure: bool = env("S3_SECURE", False)


class DatabaseConfig(Concern):
    """PostgreSQL / PostGIS."""

    url: str = env("DATABASE_URL", "postgresql://postgres@127.0.0.1:15432/amberscan")
    # `schema` would shadow pydantic's BaseModel.schema.
    schema_name: str = env("DATABASE_SCHEMA", "amberscan", pattern=r"^[a-z_][a-z0-9_]*$")


class RetryConfig(Concern):
    """Retries of transient failures (Kafka, the blob store, the model server, imagery)."""

    max_retries: int = env("MAX_RETRIES", 5, ge=0)
    backoff_s: float = env("RETRY_BACKOFF_S", 0.5, gt=0)
    # A stage's bound on one record that keeps failing transiently (its partition rewound and
    # paused between rounds of retries): past either, it is dead-lettered and its tile failed.
    max_record_attempts: int = env(
        "MAX_RECORD_ATTEMPTS",
        100,
        "tries of a transiently failing record, then a dead letter",
        ge=1,
    )
    max_record_age_s: float = env(
        "MAX_RECORD_AGE_S",
        1800.0,
        "seconds a record may keep failing transiently, then a dead letter",
        gt=0,
    )


class OpsConfig(Concern):
    """Logs and the Prometheus endpoint."""

    metrics_port: int = env("METRICS_PORT", 0, "0 disables the Prometheus endpoint", ge=0)
    log_level: str = env("LOG_LEVEL", "INFO")
    log_json: bool = env("LOG_JSON", True)
    demo: bool = env(
        "DEMO",
        False,
        "the local demo stack: built-in credentials allowed (never set in production)",
    )


class ModelServerConfig(Concern):
    """The model server as its clients see it (TensorFlow Serving gRPC API)."""

    address: str = env("MODEL_SERVER", "127.0.0.1:18500")
    backbone_name: str = env("BACKBONE_NAME", "backbone")
    deadline_s: float = env("MODEL_DEADLINE_S", 60.0, gt=0)


class ServingConfig(Concern):
    """The local model server (`amberscan serve model-server`; production GPUs run TF Serving):
    the exports it serves, runtime (auto: OpenVINO where the export has it), OpenVINO precision
    (auto: the export's INT8 backbone where it has one), threads (0: every core), OpenVINO
    streams, and its server-side batching."""

    model_dir: Path = env("MODEL_DIR", Path("models/serving"))
    runtime: Literal["auto", "tensorflow", "openvino"] = env("MODEL_SERVER_RUNTIME", "auto")
    precision: Literal["auto", "int8", "f32"] = env("MODEL_SERVER_PRECISION", "auto")
    threads: int = env("MODEL_SERVER_THREADS", 0, ge=0)
    streams: int = env("MODEL_SERVER_STREAMS", 1, ge=1)
    max_batch: int = env("MODEL_SERVER_MAX_BATCH", 64, ge=1)
    batch_timeout_ms: float = env("MODEL_SERVER_BATCH_TIMEOUT_MS", 2.0, ge=0)
    workers: int = env("MODEL_SERVER_WORKERS", 1, ge=1)
    # TF Serving's "latest N" version policy and file-system poll: the versions kept loaded (the
    # one the current classifier needs stays beside a new one during a rollout).
    versions: int = env("MODEL_SERVER_VERSIONS", 2, ge=1)
    poll_s: float = env("MODEL_SERVER_POLL_S", 2.0, "0: no polling", ge=0)


class ClassifierConfig(Concern):
    """The XGBoost classifier: its file before the registry has one, and the registry's poll."""

    path: Path = env("CLASSIFIER_PATH", Path("models/classifier.json"))
    refresh_s: float = env(
        "CLASSIFIER_REFRESH_S", 5.0, "how often a classifier looks for a newly promoted model", gt=0
    )


class FeatureConfig(Concern):
    """The feature stage's batching."""

    # Superpixels per model-server request, and the longest wait to fill one.
    batch_size: int = env("FEATURE_BATCH_SIZE", 32, ge=1)
    batch_wait_ms: int = env("FEATURE_BATCH_WAIT_MS", 50, ge=0)
    # Tiles the feature stage keeps decoded while their superpixels are in flight.
    tile_cache: int = env("FEATURE_TILE_CACHE", 32, ge=1)


class SegmenterConfig(Concern):
    """The segmenter: SLIC's implementation, and the tiles it takes per poll (two polls are
    handled at once: each holds decoded tiles and their SLIC buffers in memory, and a batch is
    committed as a whole)."""

    mode: Literal["reference", "fast"] = env("SEGMENTATION_MODE", "reference")
    batch_size: int = env("SEGMENTER_BATCH_SIZE", 4, ge=1)


class AggregatorConfig(Concern):
    """The detection rule, and the aggregator's bounds: open tiles held at most, and how long a
    tile may wait for missing scores."""

    # A tile is flagged when more than this many superpixels are positive.
    min_positive_superpixels: int = env("MIN_POSITIVE_SUPERPIXELS", 2, ge=0)
    max_open_tiles: int = env("AGGREGATOR_MAX_OPEN_TILES", 10_000, ge=1)
    stale_s: float = env("AGGREGATOR_STALE_S", 900.0, gt=0)


class ImageryConfig(Concern):
    """Where imagery comes from and how it is read: the providers, their fetching, and the
    raster, STAC and WMTS sources (issue 11) with their limits."""

    default_provider: Literal["xyz", "bing", "local", "demo", "geotiff", "stac", "wmts"] = env(
        "DEFAULT_PROVIDER", "xyz"
    )
    xyz_url: str = env("XYZ_URL", "", "XYZ template with {z} {x} {y} (or {q})")
    xyz_imagery_date: str = env("XYZ_IMAGERY_DATE", "", "capture date when the source has one")
    bing_api_key: str = env("BING_API_KEY", "")  # plain str: providers redact it themselves
    local_tiles_dir: Path | None = env("LOCAL_TILES_DIR", None)
    local_imagery_date: str = env("LOCAL_IMAGERY_DATE", "")
    demo_tiles_url: str = env("DEMO_TILES_URL", "http://127.0.0.1:18080/tiles/{z}/{x}/{y}.png")
    demo_data_dir: Path | None = env("DEMO_DATA_DIR", None)
    fetch_concurrency: int = env("FETCH_CONCURRENCY", 8, ge=1)
    fetch_rate_per_s: float = env("FETCH_RATE_PER_S", 0.0, "0: no rate limit", ge=0)
    fetch_timeout_s: float = env("FETCH_TIMEOUT_S", 30.0, gt=0)
    raster_max_resolution_m: float = env(
        "RASTER_MAX_RESOLUTION_M",
        RASTER_MAX_RESOLUTION_M,
        "coarser rasters are refused (the method needs ~0.4 m/px)",
        gt=0,
    )
    raster_min_coverage: float = env(
        "RASTER_MIN_COVERAGE",
        RASTER_MIN_COVERAGE,
        "scan tiles the imagery covers less of are skipped",
        ge=0,
        le=1,
    )
    stac_url: str = env("STAC_URL", "", "STAC API or static catalogue URL")
    stac_collection: str = env("STAC_COLLECTION", "")
    wmts_url: str = env("WMTS_URL", "", "WMTS GetCapabilities URL")
    wmts_layer: str = env("WMTS_LAYER", "")
    # The source policy (#26 defect 8): what a source named on the bus (an XYZ template, a
    # GeoTIFF, a STAC catalogue and the hrefs it points to, a WMTS service and its ResourceURLs)
    # may reach. Comma-separated lists, checked as they load; `amberscan/sources.py` holds the
    # rules. The sources these settings name themselves (AMBERSCAN_XYZ_URL, _DEMO_TILES_URL,
    # _STAC_URL, _WMTS_URL, _LOCAL_TILES_DIR) count as listed.
    source_schemes: str = env(
        "SOURCE_SCHEMES", "https,s3", "URL schemes a source may use (https, http, s3)"
    )
    source_allowed_hosts: str = env(
        "SOURCE_ALLOWED_HOSTS",
        "*",
        "hosts a source may name: * any public one; host, host:port, *.suffix, IP or CIDR also "
        "admit private, loopback and link-local addresses",
    )
    source_allowed_roots: str = env(
        "SOURCE_ALLOWED_ROOTS", "", "local folders sources may read under (empty: no local paths)"
    )
    source_allowed_buckets: str = env(
        "SOURCE_ALLOWED_BUCKETS", "", "buckets s3:// sources may read with the blob store's keys"
    )

    @model_validator(mode="after")
    def _source_policy_parses(self) -> ImageryConfig:
        # A malformed list is refused here, naming the variable and the entry, not when a
        # provider is first made (the tiler's start-up, or a scan's first tile).
        roots = [r.strip() for r in self.source_allowed_roots.split(",") if r.strip()]
        SourcePolicy.parse(
            self.source_schemes, self.source_allowed_hosts, roots, self.source_allowed_buckets
        )
        return self


class TilerConfig(Concern):
    """The tiler's bounds: tiles one scan may have, and tiles fetched at once."""

    max_scan_tiles: int = env("MAX_SCAN_TILES", 100_000, ge=1)
    tile_concurrency: int = env("TILE_CONCURRENCY", 4, ge=1)


class WatchConfig(Concern):
    """Continuous scanning (`amberscan serve watch`, issue 11)."""

    poll_s: float = env("WATCH_POLL_S", 30.0, "how often watch looks for due regions", gt=0)
    lease_s: float = env(
        "WATCH_LEASE_S",
        600.0,
        "a replica's hold on a region's round; then another may take it",
        gt=0,
    )
    retry_backoff_s: float = env(
        "WATCH_RETRY_BACKOFF_S",
        3600.0,
        "first wait before a failed tile is enqueued again (doubles)",
        gt=0,
    )
    max_attempts: int = env("WATCH_MAX_ATTEMPTS", 5, "enqueues of a failing tile at most", ge=1)


class AlertConfig(Concern):
    """Alerts of watched regions (issue 30): the links they carry, the `high` tier, how long a
    round's alerts wait for its last tiles, the delivery timeout, and the SMTP server e-mail
    alerts go through."""

    base_url: str = env(
        "ALERT_BASE_URL", "http://127.0.0.1:8080", "the web map's address in alerts' links"
    )
    high_score: float = env(
        "ALERT_HIGH_SCORE",
        0.9,
        "level high: new damage whose highest superpixel score is at least this",
        ge=0,
        le=1,
    )
    round_wait_s: float = env(
        "ALERT_ROUND_WAIT_S",
        1800.0,
        "longest wait for a round's last tiles before its alerts are made",
        gt=0,
    )
    poll_s: float = env("ALERT_POLL_S", 10.0, "how often watch looks for alerts to send", gt=0)
    timeout_s: float = env("ALERT_TIMEOUT_S", 10.0, "timeout of one webhook or SMTP attempt", gt=0)
    smtp_host: str = env("SMTP_HOST", "", "SMTP server of e-mail alerts (empty: no e-mail)")
    smtp_port: int = env("SMTP_PORT", 587, ge=1, le=65535)
    smtp_from: str = env("SMTP_FROM", "amberscan@localhost", "sender of e-mail alerts")
    smtp_tls: Literal["none", "starttls", "tls"] = env(
        "SMTP_TLS", "starttls", "none, starttls, or tls (implicit, port 465)"
    )
    smtp_username: str = env("SMTP_USERNAME", "", "empty: no login")
    # In the Secret, never the ConfigMap; kept out of the settings' repr.
    smtp_password: str = env("SMTP_PASSWORD", "", repr=False)


class WebConfig(Concern):
    """The web map: where it listens, its writes' token, its base layer, and the bounds of one
    request at survey scale (issue 14)."""

    host: str = env("WEB_HOST", "127.0.0.1")
    port: int = env("WEB_PORT", 8080)
    token: str = env("WEB_TOKEN", "", "bearer token every write needs; empty: no writes")
    map_tiles_url: str = env(
        "MAP_TILES_URL",
        "http://127.0.0.1:18080/tiles/{z}/{x}/{y}.png",
        "base layer of the map (the demo tile server by default)",
    )
    map_refresh_s: float = env(
        "MAP_REFRESH_S", 30.0, "longest wait before the map's aggregates follow a change", gt=0
    )
    max_page: int = env("WEB_MAX_PAGE", 5000, "detections per GeoJSON page", ge=1)
    # Bounds that keep the map answering while some clients ask much or read slowly (#26 defect
    # 9): a statement's longest run; the connections of the exports' and diffs' own pool and
    # the longest a download may stall on a client that reads nothing; heavy requests
    # (summaries and low-zoom tiles the aggregates cannot answer, exports, diffs) run at once in
    # all and per client address.
    statement_timeout_s: float = env(
        "WEB_STATEMENT_TIMEOUT_S", 10.0, "longest database statement of one request", gt=0
    )
    export_connections: int = env(
        "WEB_EXPORT_CONNECTIONS", 2, "database connections of exports and diffs (their own)", ge=1
    )
    export_stall_s: float = env(
        "WEB_EXPORT_STALL_S", 30.0, "a download whose client reads nothing this long is cut", gt=0
    )
    heavy_requests: int = env(
        "WEB_HEAVY_REQUESTS",
        4,
        "summaries and low-zoom tiles counted from the detections run at once (of 8 connections)",
        ge=1,
    )
    client_heavy_requests: int = env(
        "WEB_CLIENT_HEAVY_REQUESTS", 2, "heavy requests one client address runs at once", ge=1
    )


class ExploreConfig(Concern):
    """The explore page's projections and their bounds."""

    data_dir: Path | None = env(
        "EXPLORE_DATA_DIR", None, "labelled crops the explore page projects (default: shared set)"
    )
    max_points: int = env("EXPLORE_MAX_POINTS", 5000, "points one projection plots", ge=1)
    max_records: int = env(
        "EXPLORE_MAX_RECORDS", 200_000, "feature records one projection reads", ge=1
    )
    read_budget_s: float = env(
        "EXPLORE_READ_BUDGET_S", 20.0, "longest read of the features topic for one projection", gt=0
    )


class DataConfig(Concern):
    """The texty-amber data set (issue 13: tiles/, superpixels/); unset, `common/data.py` looks
    for shared/data/texty-amber beside the checkout and the folders above it."""

    shared_data: Path | None = env("SHARED_DATA", None)


class _Variables(PydanticBaseSettingsSource):
    """Each concern of a process read from its fields' variables (flat `AMBERSCAN_*` names, as
    the ConfigMap has them; no nesting delimiter), case-insensitively as pydantic-settings does."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every concern at once

    def __call__(self) -> dict[str, Any]:
        return _by_concern(self.settings_cls, os.environ)


class ProcessSettings(BaseSettings):
    """What every process has (logs, metrics); a process's class adds its concerns."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    ops: OpsConfig = OpsConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Variables(settings_cls)


class StreamingSettings(ProcessSettings):
    """A process on the bus (the stages, the web map, watch): Kafka, and retries of transient
    failures."""

    kafka: KafkaConfig = KafkaConfig()
    retry: RetryConfig = RetryConfig()


class SegmenterSettings(StreamingSettings):
    """`amberscan serve segmenter`."""

    s3: S3Config = S3Config()
    segmenter: SegmenterConfig = SegmenterConfig()


class FeatureSettings(StreamingSettings):
    """`amberscan serve feature`."""

    s3: S3Config = S3Config()
    model_server: ModelServerConfig = ModelServerConfig()
    feature: FeatureConfig = FeatureConfig()


class ClassifierSettings(StreamingSettings):
    """`amberscan serve classifier`."""

    s3: S3Config = S3Config()
    classifier: ClassifierConfig = ClassifierConfig()


class AggregatorSettings(StreamingSettings):
    """`amberscan serve aggregator`."""

    aggregator: AggregatorConfig = AggregatorConfig()


class SinkSettings(StreamingSettings):
    """`amberscan serve sink`."""

    database: DatabaseConfig = DatabaseConfig()


class TilerSettings(StreamingSettings):
    """`amberscan serve tiler`."""

    s3: S3Config = S3Config()
    database: DatabaseConfig = DatabaseConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    imagery: ImageryConfig = ImageryConfig()
    tiler: TilerConfig = TilerConfig()


class WatchSettings(StreamingSettings):
    """`amberscan serve watch`."""

    s3: S3Config = S3Config()
    database: DatabaseConfig = DatabaseConfig()
    imagery: ImageryConfig = ImageryConfig()
    watch: WatchConfig = WatchConfig()
    alerts: AlertConfig = AlertConfig()


class ModelServerSettings(ProcessSettings):
    """`amberscan serve model-server` (and `python -m amberscan.modelserver.server`)."""

    model_server: ModelServerConfig = ModelServerConfig()
    serving: ServingConfig = ServingConfig()


class WebSettings(StreamingSettings):
    """`amberscan serve web`: the map, its scans, reviews, models and explore page."""

    s3: S3Config = S3Config()
    database: DatabaseConfig = DatabaseConfig()
    model_server: ModelServerConfig = ModelServerConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    web: WebConfig = WebConfig()
    explore: ExploreConfig = ExploreConfig()
    alerts: AlertConfig = AlertConfig()
    data: DataConfig = DataConfig()


class Settings(
    TilerSettings,
    SegmenterSettings,
    FeatureSettings,
    ClassifierSettings,
    AggregatorSettings,
    SinkSettings,
    WebSettings,
    WatchSettings,
    ModelServerSettings,
):
    """The `amberscan` command's: its commands span every concern, so it composes them all, and
    is every process's settings (tests, benchmarks and the stack's tools use it so)."""


# Each process's settings, by the name `amberscan serve` runs it under ("amberscan": every other
# command).
PROCESSES: dict[str, type[ProcessSettings]] = {
    "tiler": TilerSettings,
    "segmenter": SegmenterSettings,
    "feature": FeatureSettings,
    "classifier": ClassifierSettings,
    "aggregator": AggregatorSettings,
    "sink": SinkSettings,
    "web": WebSettings,
    "watch": WatchSettings,
    "model-server": ModelServerSettings,
    "amberscan": Settings,
}


def _concerns(settings_cls: type[BaseModel]) -> dict[str, type[Concern]]:
    return {
        name: field.annotation
        for name, field in settings_cls.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, Concern)
    }


def _aliases(concern: type[Concern]) -> list[str]:
    return [str(field.alias) for field in concern.model_fields.values()]


def _by_concern(settings_cls: type[BaseModel], given: Mapping[str, str]) -> dict[str, Any]:
    """`given` variables grouped as `settings_cls`'s concerns take them (by alias)."""
    upper = {name.upper(): value for name, value in given.items()}
    return {
        name: {alias: upper[alias] for alias in _aliases(concern) if alias in upper}
        for name, concern in _concerns(settings_cls).items()
    }


class DefaultCredentials(AmberscanError):
    """A process outside the demo (`AMBERSCAN_DEMO`) given a built-in or example credential."""


# The secrets the code and the example manifests carry: fit for the local demo stack only.
EXAMPLE_SECRETS = frozenset({"change-me", "amberscan-secret"})


def built_in_credentials(settings: ProcessSettings) -> list[str]:
    """The variables of `settings` that hold a built-in or example credential: the database as
    `postgres` without a password (the default URL) or with an example one, the MinIO secret,
    the web token."""
    from psycopg.conninfo import conninfo_to_dict

    found = []
    database = getattr(settings, "database", None)
    if isinstance(database, DatabaseConfig):
        try:
            info = conninfo_to_dict(database.url)
        except Exception:  # noqa: BLE001 - an unparsable URL fails where it is used, named
            info = {}
        user, password = str(info.get("user") or "postgres"), str(info.get("password") or "")
        if password in EXAMPLE_SECRETS or (user == "postgres" and not password):
            found.append("AMBERSCAN_DATABASE_URL (user postgres without a password, or an example)")
    s3 = getattr(settings, "s3", None)
    if isinstance(s3, S3Config) and s3.secret_key in EXAMPLE_SECRETS:
        found.append("AMBERSCAN_S3_SECRET_KEY (the built-in MinIO secret, or an example)")
    web = getattr(settings, "web", None)
    if isinstance(web, WebConfig) and web.token in EXAMPLE_SECRETS:
        found.append("AMBERSCAN_WEB_TOKEN (an example token)")
    return found


def refuse_built_in_credentials(settings: ProcessSettings) -> None:
    """Raise `DefaultCredentials` naming each built-in or example credential of `settings`,
    unless `AMBERSCAN_DEMO` says this is the local demo stack."""
    found = [] if settings.ops.demo else built_in_credentials(settings)
    if found:
        raise DefaultCredentials(
            "refusing to start with built-in or example credentials outside the demo: "
            + "; ".join(found)
            + ". Set credentials of your own, or AMBERSCAN_DEMO=1 on the local demo stack only"
        )


def variables(settings_cls: type[ProcessSettings] = Settings) -> dict[str, str]:
    """The variables a process reads, each with the field it sets (`"kafka.bootstrap"`)."""
    return {
        str(field.alias): f"{group}.{name}"
        for group, concern in _concerns(settings_cls).items()
        for name, field in concern.model_fields.items()
    }


P = TypeVar("P", bound=ProcessSettings)


def replace(settings: P, **concerns: Mapping[str, Any]) -> P:
    """A copy of `settings` with fields of some concerns changed by field name, validated as the
    environment's values are (tests, benchmarks, tools):
    `replace(settings, kafka={"topic_prefix": "t."}, s3={"bucket": "t"})`."""
    changed = {}
    for name, values in concerns.items():
        current: Concern = getattr(settings, name)
        changed[name] = type(current).model_validate({**current.model_dump(), **values})
    return settings.model_copy(update=changed)


def environment(settings: ProcessSettings) -> dict[str, str]:
    """The variables that give a process these settings (unset ones left out): for the child
    processes of tests, benchmarks and the stack's tools."""
    return {
        name: str(value)
        for concern in _concerns(type(settings))
        for name, value in getattr(settings, concern).model_dump(by_alias=True).items()
        if value is not None
    }


def from_variables(variables: Mapping[str, str], settings_cls: type[P]) -> P:
    """The settings a process given just these variables (the environment of a child process
    a benchmark or chaos run starts) reads; other variables, this process's included, are
    ignored. (Validating the class itself would read this process's environment too: a
    settings class validates through its `__init__`, which reads the sources.)"""
    concerns = _concerns(settings_cls)
    values: dict[str, Any] = {
        name: concerns[name].model_validate(given)
        for name, given in _by_concern(settings_cls, variables).items()
    }
    return settings_cls.model_construct(None, **values)


@overload
def load_settings() -> Settings: ...
@overload
def load_settings(process: type[P]) -> P: ...
@overload
def load_settings(process: str) -> ProcessSettings: ...
def load_settings(process: str | type[ProcessSettings] = Settings) -> ProcessSettings:
    """Read a process's settings (its class, or its name in `PROCESSES`) from the environment
    (the only place that does)."""
    return (PROCESSES[process] if isinstance(process, str) else process)()


# What plumbing needing more than one concern asks of the settings it is given (any process's
# class that composes them).
class ModelClientSettings(Protocol):
    """A model server client's: the server, and retries of its transient failures."""

    @property
    def model_server(self) -> ModelServerConfig: ...
    @property
    def retry(self) -> RetryConfig: ...


class ImagerySettings(Protocol):
    """The imagery readers': their sources, retries, and the blob store s3:// sources name."""

    @property
    def imagery(self) -> ImageryConfig: ...
    @property
    def retry(self) -> RetryConfig: ...
    @property
    def s3(self) -> S3Config: ...
