"""Structured logs: one JSON object per line, with the service name on every record.

The formatting is python-json-logger's; amberscan only names the fields: `ts` (UTC, ISO 8601 to
the millisecond), `level` (lower case), `service`, `logger`, `msg`, every `extra` field, and
`exc` (the formatted traceback) when there is one.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter


class JsonFormatter(_JsonFormatter):
    """python-json-logger's formatter with amberscan's field names and the service on each line."""

    def __init__(self, service: str) -> None:
        super().__init__(
            ["name", "message"],
            rename_fields={"name": "logger", "message": "msg", "exc_info": "exc"},
            static_fields={"service": service},
            json_default=str,  # an `extra` value JSON cannot hold is logged as its str()
        )
        self.service = service

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        # First, as amberscan's lines always began; the library's own timestamp has no ms cut.
        log_data["ts"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        log_data["level"] = record.levelname.lower()
        super().add_fields(log_data, record, message_dict)


def configure_logging(service: str, level: str = "INFO", json_lines: bool = True) -> None:
    """Route the root logger to stderr, as JSON lines or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every rebalance step at INFO; keep warnings only.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
