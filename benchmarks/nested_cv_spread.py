"""The spread of the nested CV between runs, and the recipe rule applied to it.

    .venv/bin/python benchmarks/nested_cv_spread.py artifacts/ncv-seed0.json artifacts/ncv-seed1.json …
    .venv/bin/python benchmarks/nested_cv_spread.py --candidate ROW DEFAULT_RUNS… -- CANDIDATE_RUNS…

Reads the files `benchmarks/finetune_cv.py --fold-seed N --out FILE` wrote (one per fold seed)
and prints, per row (variant), recall and threshold at precision ≥ 0.95: mean, standard
deviation, range. With `--candidate`, the runs after `--` are a candidate recipe's, and the rule
of `model/recipe.py` (`replaces_default`: the gain in mean recall must exceed the wider of the
two between-run ranges) says whether it would replace the default's row `--row`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from amberscan.model.recipe import replaces_default


def rows_of(paths: list[Path]) -> dict[str, list[dict[str, float]]]:
    """Per variant, its row of each run."""
    by_variant: dict[str, list[dict[str, float]]] = {}
    for path in paths:
        for row in json.loads(path.read_text())["rows"]:
            by_variant.setdefault(row["variant"], []).append(row)
    return by_variant


def summary(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f} ({min(values):.3f}–{max(values):.3f})"


def main() -> None:
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--row", default="ft-xgb-v1-int8", help="the row the rule compares")
    parser.add_argument("--candidate", action="store_true", help="runs after -- are a candidate's")
    args = parser.parse_args(argv[:cut])
    default = rows_of(args.runs)
    print(f"{len(args.runs)} runs; per row: mean ± sd (range) at precision ≥ 0.95")
    for variant, rows in default.items():
        recalls = [r["recall"] for r in rows]
        thresholds = [r["threshold"] for r in rows]
        print(f"{variant:<18} recall {summary(recalls)}  threshold {summary(thresholds)}")
    if args.candidate:
        candidate = rows_of([Path(p) for p in argv[cut + 1 :]])
        ours = [r["recall"] for r in default[args.row]]
        theirs = [r["recall"] for r in candidate[args.row]]
        print(
            f"candidate {args.row}: recall {summary(theirs)} against {summary(ours)}: "
            + ("replaces the default" if replaces_default(ours, theirs) else "does not replace it")
        )


if __name__ == "__main__":
    main()
