"""An ensemble of fine-tunes against one model, in the repeated nested CV (#24): the figures.

    .venv/bin/python benchmarks/ensemble_cv.py [--cache-dir benchmarks/ensemble_cv_scores]

Reads the out-of-fold scores `benchmarks/finetune_cv.py --finetune-seeds 0 1 2 --fold-seed N`
cached, one file per fine-tune (fold seed, fold, fine-tune seed), and prints, on the same folds:
- what is cached and what is left of every fold seed seen (K seeds × all folds each);
- per fold finished by every seed: each single fine-tune's and the ensemble's ROC-AUC, and
  recall at precision ≥ 0.95 with the threshold chosen inside that fold (optimistic, and noisy on
  ~40 mining crops: a paired look while a run is unfinished, not the figure that decides);
- per fold seed finished by every seed: the pooled rows (one threshold over the five folds, as
  `finetune_cv.py` reports them), the spread between fine-tune seeds, and the ensemble's paired
  gain over the mean single fine-tune;
- over the finished fold seeds, the decision (`model/ensemble.py`, `ensemble_replaces_single`):
  the ensemble's mean recall must beat one model's by more than the wider of the two ranges,
  one model's range taking in both the fold seeds and the fine-tune seeds;
- whether the planned fold seeds not measured yet could still make the ensemble win: their
  outcome most favourable to it, searched over every recall (`best_next_fold_seeds`). When even
  that does not win, the design's remaining fine-tunes cannot change the decision.
Writes everything to artifacts/ensemble_cv.json. Scores only: no fine-tune runs here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from amberscan.model.classifier import evaluate_scores, threshold_for_precision
from amberscan.model.ensemble import (
    Piece,
    Spread,
    best_next_fold_seeds,
    complete_folds,
    describe,
    ensemble_replaces_single,
    left,
    mean_scores,
    plan,
)

Scores = dict[str, np.ndarray]


def recipe_folder(cache: Path, key: str | None) -> Path:
    """The cache folder of one recipe: `key`, or the only one there is."""
    folders = sorted(p.parent for p in cache.glob("*/recipe.json"))
    if key is not None:
        return cache / key
    if len(folders) != 1:
        listing = "\n".join(f"  {f.name}: {(f / 'recipe.json').read_text()}" for f in folders)
        raise SystemExit(
            f"{cache}: {len(folders)} recipes cached; name one with --recipe:\n{listing}"
        )
    return folders[0]


def read_pieces(folder: Path) -> dict[Piece, Scores]:
    """Every cached piece's arrays (test indices, labels, a score array per variant)."""
    pieces = {}
    for path in sorted(folder.glob("fs*.npz")):
        with np.load(path) as data:
            pieces[Piece.parse(path.stem)] = {k: data[k] for k in data.files if k != "meta"}
    return pieces


def figures(labels: np.ndarray, scores: np.ndarray, target: float) -> dict[str, float]:
    threshold = threshold_for_precision(labels, scores, target)
    at = evaluate_scores(labels, scores, threshold)
    return {
        "recall": at.recall,
        "precision": at.precision,
        "threshold": threshold,
        "roc_auc": at.roc_auc,
    }


def line(name: str, f: dict[str, float]) -> str:
    return (
        f"    {name:<10} ROC-AUC {f['roc_auc']:.3f}  recall {f['recall']:.3f} at precision "
        f"{f['precision']:.3f} (threshold {f['threshold']:.3f})"
    )


def compare(
    parts: list[tuple[np.ndarray, dict[int, np.ndarray]]], seeds: list[int], target: float
) -> dict[str, Any]:
    """Each seed's and the ensemble's figures on the pooled crops of `parts` (labels, and the
    scores of each seed on them), with the spread between seeds and the ensemble's gain."""
    labels = np.concatenate([p[0] for p in parts])
    by_seed = {s: np.concatenate([p[1][s] for p in parts]) for s in seeds}
    singles = {s: figures(labels, by_seed[s], target) for s in seeds}
    combined = figures(labels, mean_scores([by_seed[s] for s in seeds]), target)
    out: dict[str, Any] = {
        "crops": len(labels),
        "mining": int(labels.sum()),
        "singles": {str(s): f for s, f in singles.items()},
        "ensemble": combined,
    }
    for figure in ("recall", "roc_auc"):
        spread = Spread.of([f[figure] for f in singles.values()])
        out[f"{figure}_between_seeds"] = vars(spread)
        out[f"{figure}_gain"] = combined[figure] - spread.mean
    return out


def spread_lines(result: dict[str, Any]) -> str:
    """The spread between fine-tune seeds and the ensemble's gain over their mean."""
    return "\n".join(
        f"    {figure} between fine-tune seeds {Spread(**result[f'{figure}_between_seeds'])}; "
        f"the ensemble's gain over their mean {result[f'{figure}_gain']:+.3f}"
        for figure in ("recall", "roc_auc")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path("benchmarks/ensemble_cv_scores"))
    parser.add_argument("--recipe", help="the recipe's folder in the cache (default: the only one)")
    parser.add_argument(
        "--variant",
        default="ft_xgb_v1_int8",
        help="the scores compared (default: the served row, INT8 features → XGBoost)",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="the ensemble's fine-tune seeds (default: all cached)"
    )
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument(
        "--fold-seeds-planned",
        type=int,
        default=3,
        help="the design's fold seeds (make bench-ensemble's FOLD_SEEDS=0 1 2): whether those "
        "not measured yet could still change the decision is reported",
    )
    parser.add_argument("--out", type=Path, default=Path("artifacts/ensemble_cv.json"))
    args = parser.parse_args()
    folder = recipe_folder(args.cache_dir, args.recipe)
    recipe = json.loads((folder / "recipe.json").read_text())
    pieces = read_pieces(folder)
    seeds = args.seeds or sorted({p.seed for p in pieces})
    fold_seeds = sorted({p.fold_seed for p in pieces})
    print(
        f"recipe {folder.name}: {recipe['backbone']}, {recipe['folds']} folds by {recipe['group_by']}"
    )
    print(f"cached ({len(pieces)} fine-tunes): {describe(pieces)}")
    planned = [p for fs in fold_seeds for p in plan(fs, recipe["folds"], seeds)]
    todo = left(planned, pieces)
    print(f"left for fine-tune seeds {' '.join(map(str, seeds))}: {len(todo)} ({describe(todo)})")
    if not pieces:
        raise SystemExit("nothing cached yet: run benchmarks/finetune_cv.py --finetune-seeds …")

    target = args.target_precision
    report: dict[str, Any] = {
        "recipe": recipe,
        "variant": args.variant,
        "seeds": seeds,
        "target_precision": target,
        "cached": [p.name for p in sorted(pieces)],
        "left": [p.name for p in todo],
        "per_fold": {},
        "per_fold_seed": {},
    }
    singles_by_fold_seed: dict[int, list[float]] = {}
    ensemble_by_fold_seed: dict[int, float] = {}
    for fs in fold_seeds:
        finished = complete_folds(pieces, fs, seeds)
        parts = []
        for fold in finished:
            members = [pieces[Piece(fs, fold, s)] for s in seeds]
            if any(not np.array_equal(m["test"], members[0]["test"]) for m in members):
                raise SystemExit(f"fold seed {fs}, fold {fold}: seeds held out different crops")
            part = (
                members[0]["labels"],
                {s: m[args.variant] for s, m in zip(seeds, members, strict=True)},
            )
            parts.append(part)
            result = compare([part], seeds, target)
            report["per_fold"][f"fs{fs}-fold{fold}"] = result
            print(
                f"\nfold seed {fs}, fold {fold} ({result['crops']} crops, {result['mining']} "
                f"mining; PARTIAL: threshold chosen inside this fold):"
            )
            for s, f in result["singles"].items():
                print(line(f"seed {s}", f))
            print(line("ensemble", result["ensemble"]))
            print(spread_lines(result))
        if len(finished) < recipe["folds"]:
            print(
                f"\nfold seed {fs}: {len(finished)} of {recipe['folds']} folds finished by every "
                "seed: no pooled figure yet"
            )
            continue
        result = compare(parts, seeds, target)
        report["per_fold_seed"][str(fs)] = result
        singles_by_fold_seed[fs] = [f["recall"] for f in result["singles"].values()]
        ensemble_by_fold_seed[fs] = result["ensemble"]["recall"]
        print(
            f"\nfold seed {fs}, pooled over the {recipe['folds']} folds ({result['crops']} crops):"
        )
        for s, f in result["singles"].items():
            print(line(f"seed {s}", f))
        print(line("ensemble", result["ensemble"]))
        print(spread_lines(result))
    if len(ensemble_by_fold_seed) < 2:
        verdict = (
            f"undecided: {len(ensemble_by_fold_seed)} fold seed(s) finished, the rule needs 2 "
            "or more"
        )
    else:
        wins = ensemble_replaces_single(singles_by_fold_seed, ensemble_by_fold_seed)
        one = Spread.of([r for rs in singles_by_fold_seed.values() for r in rs])
        many = Spread.of(list(ensemble_by_fold_seed.values()))
        verdict = f"one model recall {one} against the ensemble's {many}: " + (
            "the ensemble wins beyond the spread" if wins else "within the spread: one model"
        )
        report["ensemble_wins"] = wins
    report["verdict"] = verdict
    print(f"\ndecision ({args.variant}, recall at precision ≥ {target}): {verdict}")
    still_planned = args.fold_seeds_planned - len(ensemble_by_fold_seed)
    if ensemble_by_fold_seed and still_planned > 0:
        best = best_next_fold_seeds(
            singles_by_fold_seed, ensemble_by_fold_seed, len(seeds), more=still_planned
        )
        report["best_case_of_the_planned_fold_seeds_left"] = {
            **vars(best),
            "fold_seeds": still_planned,
            "wins": best.wins,
        }
        print(
            f"the {still_planned} fold seed(s) left of the {args.fold_seeds_planned} planned, at "
            f"best for the ensemble (singles {best.singles:.3f} each, ensemble "
            f"{best.ensemble:.3f}): gain {best.gain:+.3f} against a spread of {best.spread:.3f}: "
            + ("they could still change it" if best.wins else "they cannot make the ensemble win")
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
