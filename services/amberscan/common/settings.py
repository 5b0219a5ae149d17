"""One settings object per process, fed by `AMBERSCAN_*` environment variables.

Parsed once in a process's `main()` and passed down; nothing else reads `os.environ`.
The k8s ConfigMap (`k8s/base/config.yaml`) with the overlays' Secret and the README's table
list these fields one to one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Defaults the raster readers and the tiler use too, defined once here (the layer below both)
# as the fields' defaults and imported there.
# Rasters coarser than this are refused: the method was tuned on ~0.4 m/px imagery.
RASTER_MAX_RESOLUTION_M = 1.0
# A scan tile whose imagery covers less than this share of it is skipped (the rest is nodata).
RASTER_MIN_COVERAGE = 0.5


class Settings(BaseSettings):
    """Configuration shared by every amberscan process."""

    model_config = SettingsConfigDict(env_prefix="AMBERSCAN_", extra="ignore", frozen=True)

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    topic_prefix: str = Field(default="", description="prefix of every topic name (tests isolate)")
    topic_partitions: int = Field(default=6, ge=1)
    # -1 keeps messages forever: features must stay replayable after a model change.
    topic_retention_ms: int = -1
    # Topics amberscan creates: replicas, in-sync replicas an acknowledged write needs, and the
    # largest record; production (3 brokers) runs 3 and 2.
    topic_replication_factor: int = Field(default=1, ge=1)
    topic_min_insync_replicas: int = Field(default=1, ge=1)
    topic_max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)

    # S3-compatible blob store (MinIO)
    s3_endpoint: str = "127.0.0.1:19000"
    s3_access_key: str = "amberscan"
    s3_secret_key: str = "amberscan-secret"
    s3_bucket: str = "amberscan"
    s3_secure: bool = False

    # PostgreSQL / PostGIS
    database_url: str = "postgresql://postgres@127.0.0.1:15432/amberscan"
    database_schema: str = Field(default="amberscan", pattern=r"^[a-z_][a-z0-9_]*$")

    # Model server (TensorFlow Serving gRPC API)
    model_server: str = "127.0.0.1:18500"
    backbone_name: str = "backbone"
    model_dir: Path = Path("models/serving")
    classifier_path: Path = Path("models/classifier.json")
    classifier_refresh_s: float = Field(
        default=5.0, gt=0, description="how often a classifier looks for a newly promoted model"
    )
    # Superpixels per model-server request, and the longest wait to fill one.
    feature_batch_size: int = Field(default=32, ge=1)
    feature_batch_wait_ms: int = Field(default=50, ge=0)
    # Tiles the feature stage keeps decoded while their superpixels are in flight.
    feature_tile_cache: int = Field(default=32, ge=1)
    model_deadline_s: float = Field(default=60.0, gt=0)
    # The local model server (`amberscan serve model-server`; production GPUs run TF Serving):
    # runtime (auto: OpenVINO where the export has it), OpenVINO precision (auto: the export's
    # INT8 backbone where it has one), threads (0: every core), OpenVINO streams, and its
    # server-side batching.
    model_server_runtime: Literal["auto", "tensorflow", "openvino"] = "auto"
    model_server_precision: Literal["auto", "int8", "f32"] = "auto"
    model_server_threads: int = Field(default=0, ge=0)
    model_server_streams: int = Field(default=1, ge=1)
    model_server_max_batch: int = Field(default=64, ge=1)
    model_server_batch_timeout_ms: float = Field(default=2.0, ge=0)
    model_server_workers: int = Field(default=1, ge=1)
    # TF Serving's "latest N" version policy and file-system poll: the versions kept loaded (the
    # one the current classifier needs stays beside a new one during a rollout).
    model_server_versions: int = Field(default=2, ge=1)
    model_server_poll_s: float = Field(default=2.0, ge=0, description="0: no polling")

    # Detection rule: a tile is flagged when more than this many superpixels are positive.
    min_positive_superpixels: int = Field(default=2, ge=0)
    segmentation_mode: Literal["reference", "fast"] = "reference"
    # Tiles the segmenter takes per poll (two polls are handled at once): each holds decoded
    # tiles and their SLIC buffers in memory, and a batch is committed as a whole.
    segmenter_batch_size: int = Field(default=4, ge=1)

    # Aggregator: open tiles held at most, and how long a tile may wait for missing scores.
    aggregator_max_open_tiles: int = Field(default=10_000, ge=1)
    aggregator_stale_s: float = Field(default=900.0, gt=0)

    # Operations
    metrics_port: int = Field(default=0, ge=0, description="0 disables the Prometheus endpoint")
    log_level: str = "INFO"
    log_json: bool = True
    max_retries: int = Field(default=5, ge=0)
    retry_backoff_s: float = Field(default=0.5, gt=0)

    # Imagery providers (tiler)
    default_provider: Literal["xyz", "bing", "local", "demo", "geotiff", "stac", "wmts"] = "xyz"
    xyz_url: str = Field(default="", description="XYZ template with {z} {x} {y} (or {q})")
    xyz_imagery_date: str = Field(
        default="", description="capture date when the XYZ source has one"
    )
    bing_api_key: str = ""  # plain str: providers redact it from every message themselves
    local_tiles_dir: Path | None = None
    local_imagery_date: str = ""
    demo_tiles_url: str = "http://127.0.0.1:18080/tiles/{z}/{x}/{y}.png"
    demo_data_dir: Path | None = None
    fetch_concurrency: int = Field(default=8, ge=1)
    fetch_rate_per_s: float = Field(default=0.0, ge=0, description="0: no rate limit")
    fetch_timeout_s: float = Field(default=30.0, gt=0)
    max_scan_tiles: int = Field(default=100_000, ge=1)
    tile_concurrency: int = Field(default=4, ge=1)

    # Raster, STAC and WMTS sources (issue 11): limits, and the catalogues a scan that names none
    # reads.
    raster_max_resolution_m: float = Field(
        default=RASTER_MAX_RESOLUTION_M,
        gt=0,
        description="coarser rasters are refused (the method needs ~0.4 m/px)",
    )
    raster_min_coverage: float = Field(
        default=RASTER_MIN_COVERAGE,
        ge=0,
        le=1,
        description="scan tiles the imagery covers less of are skipped",
    )
    stac_url: str = Field(default="", description="STAC API or static catalogue URL")
    stac_collection: str = ""
    wmts_url: str = Field(default="", description="WMTS GetCapabilities URL")
    wmts_layer: str = ""

    # Continuous scanning (`amberscan serve watch`, issue 11)
    watch_poll_s: float = Field(
        default=30.0, gt=0, description="how often watch looks for due regions"
    )
    watch_lease_s: float = Field(
        default=600.0,
        gt=0,
        description="a replica's hold on a region's round; then another may take it",
    )
    watch_retry_backoff_s: float = Field(
        default=3600.0,
        gt=0,
        description="first wait before a failed tile is enqueued again (doubles)",
    )
    watch_max_attempts: int = Field(
        default=5, ge=1, description="enqueues of a failing tile at most"
    )

    # Web map
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    web_token: str = Field(
        default="", description="bearer token every write needs; empty: no writes"
    )
    explore_data_dir: Path | None = Field(
        default=None, description="labelled crops the explore page projects (default: shared set)"
    )
    map_tiles_url: str = Field(
        default="http://127.0.0.1:18080/tiles/{z}/{x}/{y}.png",
        description="base layer of the map (the demo tile server by default)",
    )

    # Web map at survey scale (issue 14): aggregates' freshness and the bounds of one request.
    map_refresh_s: float = Field(
        default=30.0, gt=0, description="longest wait before the map's aggregates follow a change"
    )
    web_max_page: int = Field(default=5000, ge=1, description="detections per GeoJSON page")
    explore_max_points: int = Field(default=5000, ge=1, description="points one projection plots")
    explore_max_records: int = Field(
        default=200_000, ge=1, description="feature records one projection reads"
    )
    explore_read_budget_s: float = Field(
        default=20.0, gt=0, description="longest read of the features topic for one projection"
    )
    # Data (issue 13): the texty-amber folder (tiles/, superpixels/); unset, common/data.py looks
    # for shared/data/texty-amber beside the checkout and the folders above it.
    shared_data: Path | None = None


def load_settings() -> Settings:
    """Read the settings from the environment (the only place that does)."""
    return Settings()
