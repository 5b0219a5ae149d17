"""`amberscan scan` refuses a source the source policy refuses (#26 defect 8) before anything
is submitted, as one line naming the source and the rule; here under the production defaults
(https, and s3 for listed buckets; no private address, no local path). The bus and the
database point at closed ports: a command that got past the check would fail on them instead."""

from __future__ import annotations

import pytest

from amberscan import cli
from tests.streams import free_port

BBOX = ["--bbox", "26.85,51.28,26.92,51.31"]
LINKED = "169.254.169.254 is link-local and not in AMBERSCAN_SOURCE_ALLOWED_HOSTS"


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AMBERSCAN_SOURCE_SCHEMES": "https,s3",
        "AMBERSCAN_SOURCE_ALLOWED_HOSTS": "*",
        "AMBERSCAN_SOURCE_ALLOWED_ROOTS": "",
        "AMBERSCAN_SOURCE_ALLOWED_BUCKETS": "",
        "AMBERSCAN_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "AMBERSCAN_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/amberscan",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AMBERSCAN_LOCAL_TILES_DIR", raising=False)


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["--provider", "xyz", "--source", "https://169.254.169.254/{z}/{x}/{y}.png", *BBOX],
            f"source https://169.254.169.254/{{z}}/{{x}}/{{y}}.png refused: {LINKED}",
        ),
        (
            ["--provider", "xyz", "--source", "http://tiles.example.org/{z}/{x}/{y}.png", *BBOX],
            "source http://tiles.example.org/{z}/{x}/{y}.png refused: scheme http is not in "
            "AMBERSCAN_SOURCE_SCHEMES (https, s3)",
        ),
        (
            ["--provider", "geotiff", "--source", "/etc/hostname"],
            "source /etc/hostname refused: local paths are refused "
            "(AMBERSCAN_SOURCE_ALLOWED_ROOTS lists none)",
        ),
        (
            ["--provider", "geotiff", "--source", "/**/*.tif"],
            "source /**/*.tif refused: local paths are refused "
            "(AMBERSCAN_SOURCE_ALLOWED_ROOTS lists none)",
        ),
        (
            ["--provider", "geotiff", "--source", "s3://amberscan/tiles/"],
            "source s3://amberscan/tiles/ refused: bucket 'amberscan' is not in "
            "AMBERSCAN_SOURCE_ALLOWED_BUCKETS",
        ),
        (
            ["--provider", "stac", "--source", "https://[::ffff:10.0.0.7]/catalog.json"],
            "source https://[::ffff:10.0.0.7]/catalog.json refused: ::ffff:10.0.0.7 is private "
            "and not in AMBERSCAN_SOURCE_ALLOWED_HOSTS",
        ),
        (
            ["--provider", "wmts", "--source", "https://169.254.169.254/wmts", *BBOX],
            f"source https://169.254.169.254/wmts refused: {LINKED}",
        ),
    ],
)
def test_scan_refuses_a_source_up_front_in_one_line(
    production: None, argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["scan", *argv]) == 2
    assert capsys.readouterr().err == f"amberscan: error: {line}\n"
