"""JSON log lines: the fields amberscan's logs have always had, formatted by python-json-logger."""

from __future__ import annotations

import io
import json
import logging
import re
import sys

import pytest

from amberscan.common.logs import JsonFormatter, configure_logging

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")


class Opaque:
    def __str__(self) -> str:
        return "opaque value"


def line(record: logging.LogRecord, service: str = "tiler") -> dict[str, object]:
    text = JsonFormatter(service).format(record)
    assert "\n" not in text  # one object per line, even with a traceback inside
    parsed: dict[str, object] = json.loads(text)
    return parsed


def record(exc_info: object = None, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(
        "amberscan.tiler", logging.WARNING, "service.py", 7, "tile %s: %s", ("q1", "late"), exc_info
    )
    made.__dict__.update(extra)
    return made


def test_fields_of_a_line() -> None:
    got = line(record(offset=42, origin="tiles/0@42", _hidden=1, odd=Opaque()))
    assert TS.match(str(got.pop("ts")))
    assert got == {
        "level": "warning",
        "service": "tiler",
        "logger": "amberscan.tiler",
        "msg": "tile q1: late",
        "offset": 42,
        "origin": "tiles/0@42",
        "odd": "opaque value",
    }


def test_the_timestamp_is_the_record_s_in_utc() -> None:
    made = record()
    made.created = 1_700_000_000.1234
    assert line(made)["ts"] == "2023-11-14T22:13:20.123+00:00"


def test_an_exception_is_its_formatted_traceback() -> None:
    try:
        raise ValueError("bad tile")
    except ValueError:
        got = line(record(sys.exc_info()))
    assert str(got["exc"]).startswith("Traceback (most recent call last):")
    assert str(got["exc"]).endswith("ValueError: bad tile")
    assert "exc_info" not in got and "exc_text" not in got


@pytest.mark.parametrize("json_lines", [True, False])
def test_configure_logging_routes_the_root_logger(
    json_lines: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("sink", "debug", json_lines)
        logging.getLogger("amberscan.sink").debug("upserted %d rows", 3, extra={"tile_id": "q"})
        logging.getLogger("aiokafka").info("rebalance step")  # kept at warnings only
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    (text,) = stream.getvalue().splitlines()
    if json_lines:
        got = json.loads(text)
        assert (got["service"], got["level"], got["msg"], got["tile_id"]) == (
            "sink",
            "debug",
            "upserted 3 rows",
            "q",
        )
    else:
        assert text.endswith(" sink DEBUG upserted 3 rows")
