"""The small form of `make chaos`, in CI: `stack/chaos.py --ci` on a private stack of its own.

Eight demo-mosaic tiles (the tiler slowed so the scan outlasts the faults); every one of the six
services SIGKILLed once and restarted, and Kafka, MinIO, PostgreSQL and the model server each
SIGKILLed and restarted once, mid-scan; then nothing may be lost or stored twice, and every
verdict and score must equal those of a fault-free scan of the same tiles. The shared stack's
servers are never touched: the private one has its own directory and ports (39000+).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(1800)
def test_chaos_ci_loses_nothing(tmp_path: Path) -> None:
    report = tmp_path / "chaos.json"
    # Not under pytest's tmp_path: that is private to root, and PostgreSQL runs as postgres.
    stack = ROOT / ".stack-chaos-ci"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMBERSCAN_STACK_")}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "stack" / "chaos.py"),
            "--ci",
            "--stack-dir",
            str(stack),
            "--port-base",
            "39000",
            "--json",
            str(report),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    tail = "\n".join(result.stdout.splitlines()[-40:]) + "\n" + result.stderr[-3000:]
    assert report.exists(), tail
    r = json.loads(report.read_text())
    print(tail)
    assert (r["tiles"], r["lost"], r["duplicate_rows"]) == (8, 0, 0), tail
    assert (r["verdict_mismatches"], r["score_mismatches"]) == (0, 0), tail
    assert r["done"] + r["failed"] == 8 and r["failed"] == r["reference_failed"], tail
    assert set(r["service_kills_by_service"]) == {
        "tiler",
        "segmenter",
        "feature",
        "classifier",
        "aggregator",
        "sink",
    }, tail
    assert r["server_kills"] == 4 and not r["faults_not_injected"], tail
    assert result.returncode == 0 and r["problems"] == [], tail
    assert not (stack / "run" / "kafka.pid").exists()  # the private stack was stopped
