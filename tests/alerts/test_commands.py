"""`amberscan alerts add|list|remove|test|log`, run in-process against the real PostGIS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from shapely import geometry as sg

from amberscan import cli
from amberscan.common.db import Database
from amberscan.common.settings import Settings
from amberscan.tiler import demo
from amberscan.watch import store as watch_store
from tests.streams import free_port

pytestmark = pytest.mark.stack


@pytest.fixture
def watch_id(stack_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A watched region in this test's schema, which the command's environment names."""
    monkeypatch.setenv("AMBERSCAN_DATABASE_SCHEMA", stack_settings.database.schema_name)
    monkeypatch.setenv("AMBERSCAN_MAX_RETRIES", "1")
    monkeypatch.setenv("AMBERSCAN_RETRY_BACKOFF_S", "0.01")
    monkeypatch.setenv("AMBERSCAN_ALERT_BASE_URL", "https://amber.example.org")
    yield asyncio.run(_watch(stack_settings))
    asyncio.run(_drop(stack_settings))


async def _watch(settings: Settings) -> int:
    async with Database(settings.database) as db:
        region = json.dumps(sg.mapping(sg.box(*demo.demo_bbox())))
        return await watch_store.add_watch(db, region, "stac", 3600, sources=["http://x/"])


async def _drop(settings: Settings) -> None:
    async with Database(settings.database) as db:
        await db.drop_schema()


def test_add_list_test_log_remove(watch_id: int, capsys: pytest.CaptureFixture[str]) -> None:
    down = f"http://127.0.0.1:{free_port()}/hook"
    assert cli.main(["alerts", "add", str(watch_id), "--webhook", down]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"alert subscription 1: watch {watch_id}, flagged")
    assert "signing secret (shown once; verify X-Amberscan-Signature): whsec_" in out
    assert cli.main(["alerts", "add", str(watch_id), "--feed", "--level", "high"]) == 0
    assert "feed: https://amber.example.org/api/alerts/2/feed.atom" in capsys.readouterr().out
    assert cli.main(["alerts", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(s["subscription_id"], s["kind"], s["level"]) for s in listed] == [
        (1, "webhook", "flagged"),
        (2, "feed", "high"),
    ]
    assert listed[0]["target"] == down and "secret" not in listed[0]

    # A sample: the feed publishes it; the webhook nobody listens on fails after its retry.
    assert cli.main(["alerts", "test", "2"]) == 0
    assert capsys.readouterr().out.strip() == "test delivery 1: sent"
    assert cli.main(["alerts", "test", "1"]) == 1
    assert capsys.readouterr().out.strip() == "test delivery 2: failed"
    assert cli.main(["alerts", "log", "1", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert (entry["test"], entry["state"], entry["attempts"]) == (True, "failed", 2)
    assert [a["outcome"] for a in entry["log"]] == ["retry", "failed"]
    assert cli.main(["alerts", "log", "1"]) == 0
    assert "failed  test 0 events, 2 attempts" in capsys.readouterr().out

    assert cli.main(["alerts", "remove", "1"]) == 0
    assert cli.main(["alerts", "remove", "1"]) == 2
    assert "no alert subscription 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--webhook", "http://hooks.example.org/x"], "plain http is allowed only to a loopback"),
        (["--webhook", "ftp://example.org/"], "expected an https:// URL"),
        (["--email", "ops"], "e-mail address 'ops'"),
    ],
)
def test_bad_destinations_are_refused(
    watch_id: int, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["alerts", "add", str(watch_id), *extra]) == 2
    assert message in capsys.readouterr().err


def test_an_unknown_watch_is_refused(watch_id: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["alerts", "add", str(watch_id + 1), "--feed"]) == 2
    assert f"no watch {watch_id + 1}" in capsys.readouterr().err


def test_cli_names_the_levels() -> None:
    from amberscan.alerts.core import LEVELS
    from amberscan.cli import alerts as command

    assert command.LEVELS == LEVELS
