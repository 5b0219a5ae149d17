"""Precision audits against the real stack: a random sample and its Wilson interval."""

from __future__ import annotations

import pytest

from tests.web.client import AUTH, get, post
from tests.web.conftest import Seeded

pytestmark = pytest.mark.stack


async def test_audit_precision_interval(server: str, seeded: Seeded) -> None:
    status, audit = await post(f"{server}/api/audits", {"n": 10}, AUTH)
    assert status == 201
    assert audit["sampled"] == 2 and audit["reviewed"] == 0
    assert audit["precision"] is None and audit["ci95"] is None
    for tile, verdict in zip(audit["tiles"], ("confirmed", "rejected"), strict=True):
        status, _ = await post(
            f"{server}/api/reviews",
            {
                "tile_id": tile["tile_id"],
                "imagery_date": tile["imagery_date"],
                "model_version": tile["model_version"],
                "verdict": verdict,
            },
            AUTH,
        )
        assert status == 200
    status, report = await get(f"{server}/api/audits/{audit['id']}")
    assert status == 200 and report["complete"] and report["reviewed"] == 2
    assert report["precision"] == 0.5
    low, high = report["ci95"]
    assert low == pytest.approx(0.0945, abs=1e-3) and high == pytest.approx(0.9055, abs=1e-3)
    status, bad = await post(f"{server}/api/audits", {"n": 0}, AUTH)
    assert status == 400
    status, _ = await get(f"{server}/api/audits/999999")
    assert status == 404
