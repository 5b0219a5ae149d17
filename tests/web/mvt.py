"""Decode Mapbox Vector Tiles in the tests: layers → features with properties and rings.

The message is compiled from `vector_tile.proto` (the spec's own) by grpc_tools' protoc at first use;
the geometry commands (MoveTo, LineTo, ClosePath with zig-zag deltas) are decoded here.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


@cache
def _tile_class() -> Any:
    out = Path(tempfile.mkdtemp(prefix="amberscan-mvt-"))
    # In a process of its own: grpc_tools' compiler crashed in-process beside other protobuf users.
    command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{HERE}", f"--python_out={out}"]
    subprocess.run([*command, str(HERE / "vector_tile.proto")], check=True)
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("vector_tile_pb2").Tile
    finally:
        sys.path.remove(str(out))


VALUE_FIELDS = (
    "string_value",
    "float_value",
    "double_value",
    "int_value",
    "uint_value",
    "sint_value",
    "bool_value",
)


def _value(v: Any) -> Any:
    for field in VALUE_FIELDS:
        if v.HasField(field):
            return getattr(v, field)
    return None


def _rings(geometry: list[int]) -> list[list[tuple[int, int]]]:
    rings: list[list[tuple[int, int]]] = []
    x = y = i = 0
    while i < len(geometry):
        command, count = geometry[i] & 7, geometry[i] >> 3
        i += 1
        if command == 7:  # ClosePath
            continue
        for _ in range(count):
            dx, dy = geometry[i], geometry[i + 1]
            i += 2
            x += (dx >> 1) ^ -(dx & 1)
            y += (dy >> 1) ^ -(dy & 1)
            if command == 1:
                rings.append([])
            rings[-1].append((x, y))
    return rings


def decode(data: bytes) -> dict[str, list[dict[str, Any]]]:
    """{layer name: [{"properties": {...}, "rings": [[(x, y), ...], ...]}, ...]}."""
    tile = _tile_class()()
    tile.ParseFromString(data)
    layers: dict[str, list[dict[str, Any]]] = {}
    for layer in tile.layers:
        values = [_value(v) for v in layer.values]
        features = []
        for f in layer.features:
            tags = list(f.tags)
            props = {layer.keys[tags[k]]: values[tags[k + 1]] for k in range(0, len(tags), 2)}
            features.append({"properties": props, "rings": _rings(list(f.geometry))})
        layers[layer.name] = features
    return layers
