import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TileCoord(_message.Message):
    __slots__ = ("z", "x", "y", "quadkey")
    Z_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    QUADKEY_FIELD_NUMBER: _ClassVar[int]
    z: int
    x: int
    y: int
    quadkey: str
    def __init__(self, z: _Optional[int] = ..., x: _Optional[int] = ..., y: _Optional[int] = ..., quadkey: _Optional[str] = ...) -> None: ...

class BoundingBox(_message.Message):
    __slots__ = ("west", "south", "east", "north")
    WEST_FIELD_NUMBER: _ClassVar[int]
    SOUTH_FIELD_NUMBER: _ClassVar[int]
    EAST_FIELD_NUMBER: _ClassVar[int]
    NORTH_FIELD_NUMBER: _ClassVar[int]
    west: float
    south: float
    east: float
    north: float
    def __init__(self, west: _Optional[float] = ..., south: _Optional[float] = ..., east: _Optional[float] = ..., north: _Optional[float] = ...) -> None: ...

class PixelBox(_message.Message):
    __slots__ = ("row0", "col0", "row1", "col1")
    ROW0_FIELD_NUMBER: _ClassVar[int]
    COL0_FIELD_NUMBER: _ClassVar[int]
    ROW1_FIELD_NUMBER: _ClassVar[int]
    COL1_FIELD_NUMBER: _ClassVar[int]
    row0: int
    col0: int
    row1: int
    col1: int
    def __init__(self, row0: _Optional[int] = ..., col0: _Optional[int] = ..., row1: _Optional[int] = ..., col1: _Optional[int] = ...) -> None: ...

class ModelVersions(_message.Message):
    __slots__ = ("backbone", "classifier")
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    backbone: str
    classifier: str
    def __init__(self, backbone: _Optional[str] = ..., classifier: _Optional[str] = ...) -> None: ...

class ScanRequest(_message.Message):
    __slots__ = ("scan_id", "bbox", "geojson", "tile", "zoom", "fetch_zoom", "provider", "date_from", "date_to", "rescan", "requested_at", "demo", "tiles_expected", "sources", "collection", "layers", "vintage", "imagery_date")
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    BBOX_FIELD_NUMBER: _ClassVar[int]
    GEOJSON_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    ZOOM_FIELD_NUMBER: _ClassVar[int]
    FETCH_ZOOM_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    DATE_FROM_FIELD_NUMBER: _ClassVar[int]
    DATE_TO_FIELD_NUMBER: _ClassVar[int]
    RESCAN_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    DEMO_FIELD_NUMBER: _ClassVar[int]
    TILES_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    VINTAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGERY_DATE_FIELD_NUMBER: _ClassVar[int]
    scan_id: str
    bbox: BoundingBox
    geojson: str
    tile: TileCoord
    zoom: int
    fetch_zoom: int
    provider: str
    date_from: str
    date_to: str
    rescan: bool
    requested_at: _timestamp_pb2.Timestamp
    demo: bool
    tiles_expected: int
    sources: _containers.RepeatedScalarFieldContainer[str]
    collection: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    vintage: str
    imagery_date: str
    def __init__(self, scan_id: _Optional[str] = ..., bbox: _Optional[_Union[BoundingBox, _Mapping]] = ..., geojson: _Optional[str] = ..., tile: _Optional[_Union[TileCoord, _Mapping]] = ..., zoom: _Optional[int] = ..., fetch_zoom: _Optional[int] = ..., provider: _Optional[str] = ..., date_from: _Optional[str] = ..., date_to: _Optional[str] = ..., rescan: _Optional[bool] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., demo: _Optional[bool] = ..., tiles_expected: _Optional[int] = ..., sources: _Optional[_Iterable[str]] = ..., collection: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., vintage: _Optional[str] = ..., imagery_date: _Optional[str] = ...) -> None: ...

class Tile(_message.Message):
    __slots__ = ("tile_id", "scan_id", "tile", "provider", "imagery_date", "image_key", "width", "height", "tiles_expected", "demo", "models")
    TILE_ID_FIELD_NUMBER: _ClassVar[int]
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    IMAGERY_DATE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_KEY_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TILES_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    DEMO_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    tile_id: str
    scan_id: str
    tile: TileCoord
    provider: str
    imagery_date: str
    image_key: str
    width: int
    height: int
    tiles_expected: int
    demo: bool
    models: ModelVersions
    def __init__(self, tile_id: _Optional[str] = ..., scan_id: _Optional[str] = ..., tile: _Optional[_Union[TileCoord, _Mapping]] = ..., provider: _Optional[str] = ..., imagery_date: _Optional[str] = ..., image_key: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., tiles_expected: _Optional[int] = ..., demo: _Optional[bool] = ..., models: _Optional[_Union[ModelVersions, _Mapping]] = ...) -> None: ...

class SuperpixelRef(_message.Message):
    __slots__ = ("tile_id", "scan_id", "tile", "provider", "imagery_date", "image_key", "image_width", "image_height", "segment_index", "segment_count", "bbox", "area_px", "mask_rle", "demo", "tiles_expected", "labels_key", "models")
    TILE_ID_FIELD_NUMBER: _ClassVar[int]
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    IMAGERY_DATE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_KEY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    BBOX_FIELD_NUMBER: _ClassVar[int]
    AREA_PX_FIELD_NUMBER: _ClassVar[int]
    MASK_RLE_FIELD_NUMBER: _ClassVar[int]
    DEMO_FIELD_NUMBER: _ClassVar[int]
    TILES_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    LABELS_KEY_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    tile_id: str
    scan_id: str
    tile: TileCoord
    provider: str
    imagery_date: str
    image_key: str
    image_width: int
    image_height: int
    segment_index: int
    segment_count: int
    bbox: PixelBox
    area_px: int
    mask_rle: bytes
    demo: bool
    tiles_expected: int
    labels_key: str
    models: ModelVersions
    def __init__(self, tile_id: _Optional[str] = ..., scan_id: _Optional[str] = ..., tile: _Optional[_Union[TileCoord, _Mapping]] = ..., provider: _Optional[str] = ..., imagery_date: _Optional[str] = ..., image_key: _Optional[str] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., segment_index: _Optional[int] = ..., segment_count: _Optional[int] = ..., bbox: _Optional[_Union[PixelBox, _Mapping]] = ..., area_px: _Optional[int] = ..., mask_rle: _Optional[bytes] = ..., demo: _Optional[bool] = ..., tiles_expected: _Optional[int] = ..., labels_key: _Optional[str] = ..., models: _Optional[_Union[ModelVersions, _Mapping]] = ...) -> None: ...

class Superpixel(_message.Message):
    __slots__ = ("ref", "segmenter")
    REF_FIELD_NUMBER: _ClassVar[int]
    SEGMENTER_FIELD_NUMBER: _ClassVar[int]
    ref: SuperpixelRef
    segmenter: str
    def __init__(self, ref: _Optional[_Union[SuperpixelRef, _Mapping]] = ..., segmenter: _Optional[str] = ...) -> None: ...

class SuperpixelFeatures(_message.Message):
    __slots__ = ("ref", "vector", "backbone")
    REF_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    ref: SuperpixelRef
    vector: _containers.RepeatedScalarFieldContainer[float]
    backbone: str
    def __init__(self, ref: _Optional[_Union[SuperpixelRef, _Mapping]] = ..., vector: _Optional[_Iterable[float]] = ..., backbone: _Optional[str] = ...) -> None: ...

class SuperpixelScore(_message.Message):
    __slots__ = ("ref", "score", "positive", "threshold", "models")
    REF_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ref: SuperpixelRef
    score: float
    positive: bool
    threshold: float
    models: ModelVersions
    def __init__(self, ref: _Optional[_Union[SuperpixelRef, _Mapping]] = ..., score: _Optional[float] = ..., positive: _Optional[bool] = ..., threshold: _Optional[float] = ..., models: _Optional[_Union[ModelVersions, _Mapping]] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("tile_id", "scan_id", "tile", "provider", "imagery_date", "flagged", "positives", "segment_count", "min_positives", "hectares", "tile_geojson", "positives_geojson", "scores", "models", "demo", "image_key", "tiles_expected", "labels_key", "detected_at")
    TILE_ID_FIELD_NUMBER: _ClassVar[int]
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    IMAGERY_DATE_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    POSITIVES_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    MIN_POSITIVES_FIELD_NUMBER: _ClassVar[int]
    HECTARES_FIELD_NUMBER: _ClassVar[int]
    TILE_GEOJSON_FIELD_NUMBER: _ClassVar[int]
    POSITIVES_GEOJSON_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEMO_FIELD_NUMBER: _ClassVar[int]
    IMAGE_KEY_FIELD_NUMBER: _ClassVar[int]
    TILES_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    LABELS_KEY_FIELD_NUMBER: _ClassVar[int]
    DETECTED_AT_FIELD_NUMBER: _ClassVar[int]
    tile_id: str
    scan_id: str
    tile: TileCoord
    provider: str
    imagery_date: str
    flagged: bool
    positives: int
    segment_count: int
    min_positives: int
    hectares: float
    tile_geojson: str
    positives_geojson: str
    scores: _containers.RepeatedScalarFieldContainer[float]
    models: ModelVersions
    demo: bool
    image_key: str
    tiles_expected: int
    labels_key: str
    detected_at: _timestamp_pb2.Timestamp
    def __init__(self, tile_id: _Optional[str] = ..., scan_id: _Optional[str] = ..., tile: _Optional[_Union[TileCoord, _Mapping]] = ..., provider: _Optional[str] = ..., imagery_date: _Optional[str] = ..., flagged: _Optional[bool] = ..., positives: _Optional[int] = ..., segment_count: _Optional[int] = ..., min_positives: _Optional[int] = ..., hectares: _Optional[float] = ..., tile_geojson: _Optional[str] = ..., positives_geojson: _Optional[str] = ..., scores: _Optional[_Iterable[float]] = ..., models: _Optional[_Union[ModelVersions, _Mapping]] = ..., demo: _Optional[bool] = ..., image_key: _Optional[str] = ..., tiles_expected: _Optional[int] = ..., labels_key: _Optional[str] = ..., detected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("reason", "error_type", "service", "origin_topic", "origin_partition", "origin_offset", "key", "value", "tile_id", "scan_id", "failed_at")
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_TOPIC_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_PARTITION_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_OFFSET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TILE_ID_FIELD_NUMBER: _ClassVar[int]
    SCAN_ID_FIELD_NUMBER: _ClassVar[int]
    FAILED_AT_FIELD_NUMBER: _ClassVar[int]
    reason: str
    error_type: str
    service: str
    origin_topic: str
    origin_partition: int
    origin_offset: int
    key: bytes
    value: bytes
    tile_id: str
    scan_id: str
    failed_at: _timestamp_pb2.Timestamp
    def __init__(self, reason: _Optional[str] = ..., error_type: _Optional[str] = ..., service: _Optional[str] = ..., origin_topic: _Optional[str] = ..., origin_partition: _Optional[int] = ..., origin_offset: _Optional[int] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., tile_id: _Optional[str] = ..., scan_id: _Optional[str] = ..., failed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
