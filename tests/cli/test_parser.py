"""The command line itself, in-process and without servers: every command is there, the parser
imports nothing heavy, and an amberscan error ends as one line naming it."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from amberscan.cli import COMMANDS, build_parser, main

COMMAND_NAMES = [
    "data",
    "export-backbone",
    "finetune",
    "serve",
    "scan",
    "watch",
    "alerts",
    "replay",
    "demo-tiles",
    "topics",
    "train",
    "models",
    "evaluate",
    "detect-tile",
    "diff",
    "area",
    "export",
    "survey-fixture",
]
# What `--help` must not wait for: each of these takes from 0.1 s (pydantic) to seconds (TF).
HEAVY = [
    "tensorflow",
    "keras",
    "numpy",
    "aiokafka",
    "aiohttp",
    "grpc",
    "minio",
    "psycopg",
    "pydantic",
]


def test_every_command_is_listed_with_its_runner() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == COMMAND_NAMES
    for name, command in zip(COMMAND_NAMES, COMMANDS, strict=True):
        assert sub.choices[name].get_default("run") is command.run, name


def test_building_and_parsing_imports_nothing_heavy() -> None:
    code = (
        "import json, sys\n"
        "from amberscan.cli import build_parser\n"
        "build_parser().parse_args(['detect-tile', 'x.png', '--json'])\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "amberscan.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for name in COMMAND_NAMES:
        assert name in out.stdout


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["scan", "--bbox", "26.8,51.2,26.9"], "expected four numbers W,S,E,N, got 3"),
        (["scan", "--bbox", "27,51,26,52"], "need -180 <= west < east <= 180"),
    ],
)
def test_a_bad_region_is_one_line_naming_it(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("amberscan: error: bbox ") and problem in err
    assert "Traceback" not in err


def test_a_geojson_region_is_checked_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    region = tmp_path / "region.geojson"
    region.write_text(json.dumps({"type": "Point", "coordinates": [26.8, 51.3]}))
    assert main(["scan", "--geojson", str(region)]) == 2
    assert "only Polygon and MultiPolygon are scanned, got 'Point'" in capsys.readouterr().err


def test_demo_tiles_without_the_data_set_names_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AMBERSCAN_SHARED_DATA", str(tmp_path / "nowhere"))
    monkeypatch.delenv("AMBERSCAN_DEMO_DATA_DIR", raising=False)
    assert main(["demo-tiles", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert f"(tiles/) is not at {tmp_path / 'nowhere' / 'tiles'}" in err


def test_finetune_names_the_backbones_it_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["finetune", "--data", str(tmp_path), "--out", str(tmp_path / "w.weights.h5")]
    assert main([*argv, "--backbone", "resnet50"]) == 2
    err = capsys.readouterr().err
    assert "--backbone 'resnet50': fine-tuning takes one of efficientnet-lite0, " in err
    assert not (tmp_path / "w.weights.h5").exists()
