"""`amberscan scan`'s request as the tiler gets it: the provider a scan names none of comes from
the settings, and local paths are absolute before they travel on the bus. And `--version`."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

from amberscan.cli import build_parser, main
from amberscan.cli.scan import scan_request
from amberscan.common.settings import Settings, load_settings
from amberscan.imagery.providers.base import SourceError
from amberscan.imagery.providers.geotiff import GeotiffProvider
from amberscan.imagery.providers.raster import RasterOptions
from amberscan.v1 import messages_pb2 as pb
from tests.sources import local_sources

BBOX = ["--bbox", "26.85,51.28,26.92,51.31"]


@pytest.mark.parametrize("configured", ["bing", "local", "xyz"])
def test_a_scan_naming_no_provider_takes_the_settings_default(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMBERSCAN_DEFAULT_PROVIDER", configured)
    settings = load_settings("amberscan")
    args = build_parser().parse_args(["scan", *BBOX])
    assert scan_request(args, settings.imagery.default_provider).provider == configured
    named = build_parser().parse_args(["scan", *BBOX, "--provider", "demo"])
    assert scan_request(named, settings.imagery.default_provider).provider == "demo"


def test_a_relative_geotiff_path_still_names_the_file_in_another_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, elsewhere = tmp_path / "caller", tmp_path / "tiler"
    here.mkdir()
    elsewhere.mkdir()
    (here / "ortho.tif").write_bytes(b"II*\0")  # only its existence matters to the expansion
    monkeypatch.chdir(here)
    args = build_parser().parse_args(
        [
            "scan",
            "--provider",
            "geotiff",
            "--source",
            "ortho.tif",
            "--source",
            "https://e.org/a.tif",
        ]
    )
    sent = scan_request(args, "xyz").SerializeToString()  # as it goes on the bus
    options = RasterOptions.from_settings(local_sources(Settings()))

    monkeypatch.chdir(elsewhere)  # the tiler's working directory
    with pytest.raises(SourceError, match="raster ortho.tif: no such file"):
        GeotiffProvider(["ortho.tif"], options).expand()  # what a relative path did
    received = pb.ScanRequest.FromString(sent)
    assert list(received.sources) == [str(here / "ortho.tif"), "https://e.org/a.tif"]
    assert GeotiffProvider(received.sources, options).expand()[0] == str(here / "ortho.tif")


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"amberscan {version('amberscan')}\n"
