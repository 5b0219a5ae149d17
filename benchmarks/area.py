"""Does the sample-based area estimate's 95 % interval cover the truth 95 % of the time? (#28)

    .venv/bin/python benchmarks/area.py [--runs 1000] [--tiles 20000] [--n 400] [--seed 28]

Each run draws a SYNTHETIC map with a known truth, as amberscan's maps are made: `--tiles`
scan tiles, 1-5 % of them holding mining over a Beta(2, 3) share of the tile; each tile's
highest superpixel score from Beta(5, 2) where there is mining and Beta(1, 5) where there is
none; flagged above 0.6 (commission: flagged tiles without mining; omission: mining tiles
below it). The strata are amberscan's (`web/area_queries.py`): flagged, unflagged with a high
score (0.3 and up), the rest. A design of `--n` tiles (anticipated mining shares 0.7, 0.15,
0.005, at least 30 per stratum; the app's defaults) is drawn at random, the reviewers' reference
observations are the truth, and the estimator (`model/area.py`) gives the mining area with its
interval, and the user's and producer's accuracy with theirs.

Two reference observations are measured on the same maps and samples: area-weighted (the
share of the tile a reviewer marks as mining) and binary (the whole tile counts when it holds
mining), each against its own truth. Printed and written to artifacts/area.json: per measure
the 95 % interval's coverage of the true area and of the true user's and producer's accuracy,
the estimate's bias and RMSE, and, measured in the same runs, the map's own area (the sum of
the flagged tiles' damaged area, what amberscan reported before) with its bias and RMSE: the
ratio of the two RMSEs is the comparison. `coverage` (top level) is the area-weighted one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from amberscan.model.area import Observation, Stratum, estimate, plan

STRATA = ("flagged", "high score", "rest")
ANTICIPATED = (0.7, 0.15, 0.005)
FLAG_AT, HIGH_AT = 0.6, 0.3


def one_run(rng: np.random.Generator, tiles: int, n: int) -> dict[str, dict[str, float | bool]]:
    prevalence = rng.uniform(0.01, 0.05)
    mining = rng.random(tiles) < prevalence
    share = np.where(mining, rng.beta(2, 3, tiles), 0.0)
    score = np.where(mining, rng.beta(5, 2, tiles), rng.beta(1, 5, tiles))
    flagged = score > FLAG_AT
    # The map's damaged area in a flagged tile: its positive superpixels, which miss part of
    # the mining and add some of their own.
    mapped_share = np.where(
        flagged, np.clip(share * rng.uniform(0.6, 1.2, tiles) + 0.05, 0, 1), 0.0
    )
    stratum = np.where(flagged, 0, np.where(score >= HIGH_AT, 1, 2))
    strata = [Stratum(name, int((stratum == h).sum())) for h, name in enumerate(STRATA)]
    sizes = plan(strata, ANTICIPATED, n=n, minimum=30)
    picked = np.concatenate(
        [
            rng.choice(np.flatnonzero(stratum == h), size=k, replace=False)
            for h, k in enumerate(sizes)
            if k
        ]
    )
    out: dict[str, dict[str, float | bool]] = {}
    for measure, amount in (("area_weighted", share), ("binary", mining.astype(float))):
        truth = float(amount.sum())
        hit = float((amount * flagged).sum())
        truth_users = hit / float(flagged.sum()) if flagged.any() else math.nan
        truth_producers = hit / truth if truth else math.nan
        obs = [Observation(STRATA[stratum[i]], bool(flagged[i]), float(amount[i])) for i in picked]
        result = estimate(strata, obs)
        mapped = float(mapped_share.sum()) if measure == "area_weighted" else float(flagged.sum())
        row: dict[str, float | bool] = {"truth": truth, "mapped": mapped}
        for name, value, target in (
            ("area", result.area, truth),
            ("users", result.users, truth_users),
            ("producers", result.producers, truth_producers),
        ):
            row[name] = math.nan if value is None else value.estimate
            row[f"{name}_covered"] = value is not None and value.covers(target)
            row[f"{name}_defined"] = value is not None and value.se is not None
        out[measure] = row
    return out


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(centre - half, 4), round(centre + half, 4)


def summarise(rows: list[dict[str, float | bool]]) -> dict[str, Any]:
    truth = np.array([float(r["truth"]) for r in rows])
    area = np.array([float(r["area"]) for r in rows])
    mapped = np.array([float(r["mapped"]) for r in rows])
    rmse = float(np.sqrt(np.nanmean((area - truth) ** 2)))
    mapped_rmse = float(np.sqrt(np.mean((mapped - truth) ** 2)))
    covered = sum(bool(r["area_covered"]) for r in rows)
    # The coverage is itself a sample of the runs: its 95 % Wilson interval.
    low, high = wilson(covered, len(rows))
    return {
        "coverage": covered / len(rows),
        "coverage_ci95": [low, high],
        "users_coverage": float(np.mean([bool(r["users_covered"]) for r in rows])),
        "producers_coverage": float(np.mean([bool(r["producers_covered"]) for r in rows])),
        "undefined": int(sum(not r["area_defined"] for r in rows)),
        "relative_bias": float(np.nanmean((area - truth) / truth)),
        "rmse_tiles": rmse,
        "mapped_relative_bias": float(np.mean((mapped - truth) / truth)),
        "mapped_rmse_tiles": mapped_rmse,
        "rmse_ratio_estimate_to_mapped": rmse / mapped_rmse if mapped_rmse else math.nan,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--tiles", type=int, default=20_000)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--seed", type=int, default=28)
    parser.add_argument("--out", type=Path, default=Path("artifacts/area.json"))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    runs = [one_run(rng, args.tiles, args.n) for _ in range(args.runs)]
    elapsed = time.perf_counter() - started
    measures = {m: summarise([r[m] for r in runs]) for m in ("area_weighted", "binary")}
    report = {
        "coverage": measures["area_weighted"]["coverage"],
        "runs": args.runs,
        "tiles": args.tiles,
        "sample": args.n,
        "seed": args.seed,
        "seconds": round(elapsed, 1),
        "nominal": 0.95,
        "measures": measures,
        "synthetic": True,
    }
    for name, m in measures.items():
        print(
            f"{name:>13}: 95 % interval covers the true area in {m['coverage']:.1%} of "
            f"{args.runs} runs (95 % CI of that {m['coverage_ci95'][0]:.1%}-"
            f"{m['coverage_ci95'][1]:.1%}; user's accuracy {m['users_coverage']:.1%}, producer's "
            f"{m['producers_coverage']:.1%}); estimate bias {m['relative_bias']:+.2%}, RMSE "
            f"{m['rmse_tiles']:.1f} tiles; mapped area bias {m['mapped_relative_bias']:+.2%}, "
            f"RMSE {m['mapped_rmse_tiles']:.1f} tiles (estimate/mapped RMSE "
            f"{m['rmse_ratio_estimate_to_mapped']:.2f})"
        )
    print(f"{args.runs} synthetic maps of {args.tiles} tiles, n = {args.n}, in {elapsed:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
