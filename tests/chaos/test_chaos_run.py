"""The small form of `make chaos`, in CI: `stack/chaos.py --ci` on a private stack of its own.

24 demo-mosaic tiles (the tiler slowed so the scan outlasts the faults); every one of the six
services SIGKILLed once, while its metrics show records read and not committed, and restarted;
one process's link to Kafka cut and healed (a network partition); Kafka (while producers write),
MinIO, PostgreSQL and the model server each SIGKILLed and restarted once, mid-scan; then nothing
may be lost or stored twice, every verdict and score must equal those of a fault-free scan of
the same tiles, and records must have been redelivered (the faults reached work in flight). The
shared stack's servers are never touched: the private one has its own directory and ports
(26000+).
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
            "26000",
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
    assert (r["tiles"], r["lost"], r["duplicate_rows"]) == (24, 0, 0), tail
    assert (r["verdict_mismatches"], r["score_mismatches"]) == (0, 0), tail
    assert r["done"] + r["failed"] == 24 and r["failed"] == r["reference_failed"], tail
    assert set(r["service_kills_by_service"]) == {
        "tiler",
        "segmenter",
        "feature",
        "classifier",
        "aggregator",
        "sink",
    }, tail
    assert r["server_kills"] == 4 and not r["faults_not_injected"], tail
    assert r["partitions"] == 1 and r["redeliveries"] > 0, tail
    assert result.returncode == 0 and r["problems"] == [], tail
    assert not (stack / "run" / "kafka.pid").exists()  # the private stack was stopped


def test_a_port_base_among_the_ephemeral_ports_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("stack_chaos", ROOT / "stack" / "chaos.py")
    assert spec is not None and spec.loader is not None
    chaos = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "stack_chaos", chaos)  # its dataclasses look themselves up
    spec.loader.exec_module(chaos)
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("32768\t60999\n")
    clash = chaos.ephemeral_clash(39000, 39600, ranges)
    assert clash is not None and "32768-60999" in clash and "below 32168" in clash
    assert chaos.ephemeral_clash(32500, 33100, ranges) is not None  # overlapping the low end
    assert chaos.ephemeral_clash(26000, 26600, ranges) is None
    assert chaos.ephemeral_clash(61000, 61600, ranges) is None
    assert chaos.ephemeral_clash(39000, 39600, tmp_path / "missing") is None
