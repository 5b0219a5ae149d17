"""Does the review queue's order teach the model more than random order? A simulated review loop.

    .venv/bin/python benchmarks/review_loop.py [--data DIR] [--rounds 3] [--tiles-per-round 30]
        [--seeds 0 1 2]

The reviewer is SIMULATED: it answers from the held-back labels of the shared texty-amber crops
(no person reviewed anything). The labelled tiles are split by site
(`model.promotion.site_of`: whole 0.01-degree cells) into the project's shares:
  gate   the gate share (`in_gate_share`): the promotion gate's evidence, as `models promote`;
  eval   the calibration share (`in_calibration_share`): held out from both orderings, from the
         gate and from the served backbone's fine-tune; recall is measured here;
  fit    the rest, which the served backbone was fine-tuned on; per seed a quarter of its sites
         are the start (the model the loop starts from is trained on them) and the others the
         pool (the tiles the reviewer may be shown).
Each round, each ordering shows the reviewer N tiles of the pool it has not shown yet:
  queue   `web.queue.order` on the served model's scores of the tile's crops (its threshold,
          rule m = 0: a texty tile holds only its labelled crops, not its 30 superpixels; the
          other model is the last round's other side of the gate: the refused candidate, or the
          model a promotion replaced);
  random  uniformly at random.
The reviewer confirms a tile with a mining crop and rejects one without; as `web.training`
derives labels, the served model's positive crops of the tile take the verdict's label
(`core.labels_from_verdict`), and the reviewer relabels what that gets wrong and the mining
crops the model missed. A candidate is trained on the start crops plus every label so far
(XGBoost on the features, threshold for precision 0.95 on 2-fold site-grouped out-of-fold
scores) and passed through the promotion gate (`model.promotion.gate`) against the served
model; served if it passes. Recall at precision >= 0.95 (the best threshold on eval: how well
the served model ranks) is measured on eval after each round, per seed (the seed draws the
start and pool, the random order and XGBoost's seed); intervals are 95 % t-intervals over seeds,
and the paired difference queue − random per round likewise.

Features: the served backbone's (the model server's, as `amberscan train` gets them), cached
under artifacts/review_loop/ by the data's fingerprint and the backbone version. Nothing is
fine-tuned in the loop.
Writes artifacts/review_loop.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from amberscan.common.data import shared_data_dir
from amberscan.common.settings import load_settings
from amberscan.model.classifier import _fit, cross_validate, threshold_for_precision, tile_groups
from amberscan.model.dataset import LabelledCrop, fingerprint, list_labelled
from amberscan.model.promotion import gate, site_of, split_shares
from amberscan.web.core import labels_from_verdict
from amberscan.web.queue import Candidate, order

TARGET_PRECISION = 0.95
SIMULATED = (
    "SIMULATED reviewer: verdicts and relabels come from the held-back labels of the shared "
    "texty-amber crops, not from people"
)


def features_of(crops: list[LabelledCrop], cache_dir: Path) -> tuple[np.ndarray, str]:
    """The served backbone's features of `crops`, from the cache when it holds them."""
    from amberscan.cli.features import labelled_features
    from amberscan.common.served_features import client_for, served_backbone

    settings = load_settings()

    async def which() -> str:
        async with client_for(settings) as client:
            return (await served_backbone(client)).label

    backbone = asyncio.run(which())
    cache = cache_dir / f"{fingerprint(crops)}-{backbone.replace('/', '@')}.npy"
    if cache.is_file():
        return np.load(cache), backbone
    _, x = asyncio.run(labelled_features(settings, crops, progress="features"))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, x)
    return x, backbone


@dataclass
class Model:
    name: str
    booster: Any
    threshold: float

    def score(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict_proba(x)[:, 1], dtype=float)


def train(name: str, x: np.ndarray, y: np.ndarray, sites: list[str], seed: int) -> Model:
    """XGBoost on (x, y); its threshold for the target precision from 2-fold site-grouped
    out-of-fold scores (as `train` chooses one, with fewer folds: the loop fits many)."""
    oof = cross_validate(x, y, tile_groups(sites), folds=2, seed=seed)
    return Model(name, _fit(x, y, seed, None), threshold_for_precision(y, oof, TARGET_PRECISION))


def recall_at_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """The highest recall at a threshold whose precision is at least the target (0 if none)."""
    t = threshold_for_precision(y, scores, TARGET_PRECISION)
    flagged = scores >= t
    tp = int((flagged & (y == 1)).sum())
    if tp == 0 or tp / int(flagged.sum()) < TARGET_PRECISION:
        return 0.0
    return tp / int(y.sum())


def reviewed_labels(
    truth: dict[int, int], scores: dict[int, float], threshold: float
) -> dict[int, int]:
    """The simulated reviewer's labels of one tile's crops (index → label), as the web app
    derives them: the verdict's label on the model's positive crops, then the reviewer's
    relabels of what that got wrong and of the mining crops the model missed."""
    indices = sorted(truth)
    verdict = "confirmed" if any(truth.values()) else "rejected"
    tile_scores = [scores[i] for i in indices]
    positives = sum(s >= threshold for s in tile_scores)
    derived = labels_from_verdict(verdict, tile_scores, positives)
    labels = {indices[k]: v for k, v in derived.items()}
    for i in indices:
        if (i in labels and labels[i] != truth[i]) or (i not in labels and truth[i] == 1):
            labels[i] = truth[i]
    return labels


@dataclass
class Arm:
    served: Model
    other: Model | None = None
    shown: set[str] = field(default_factory=set)
    labels: dict[int, int] = field(default_factory=dict)
    refusals: int = 0


def pick(
    arm: Arm, how: str, pool: dict[str, list[int]], x: np.ndarray, n: int, rng: np.random.Generator
) -> list[str]:
    """The next `n` tiles of the pool `arm` has not shown: by the queue's rule or at random."""
    left = sorted(t for t in pool if t not in arm.shown)
    if how == "random":
        return [left[i] for i in rng.choice(len(left), size=min(n, len(left)), replace=False)]
    every = [i for tile in left for i in pool[tile]]
    served = dict(zip(every, arm.served.score(x[every]).tolist(), strict=True))
    others = {}
    if arm.other is not None:
        others = dict(zip(every, (arm.other.score(x[every]) >= arm.other.threshold), strict=True))
    candidates = []
    for tile in left:
        scores = [served[i] for i in pool[tile]]
        other = bool(any(others[i] for i in pool[tile])) if others else None
        flagged = any(s >= arm.served.threshold for s in scores)
        candidates.append(
            Candidate(tile, "", arm.served.name, flagged, scores, arm.served.threshold, 0, other)
        )
    return [c.tile_id for c, _ in order(candidates)[:n]]


def interval(values: list[float]) -> dict[str, float]:
    """Mean and 95 % t-interval over seeds."""
    a = np.asarray(values, dtype=float)
    mean = float(a.mean())
    if len(a) < 2:
        return {"mean": mean, "low": mean, "high": mean}
    half = float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
    return {"mean": mean, "low": mean - half, "high": mean + half}


def run_seed(
    seed: int,
    crops: list[LabelledCrop],
    x: np.ndarray,
    y: np.ndarray,
    rounds: int,
    per_round: int,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    sites = [site_of(c.tile_id) for c in crops]
    shares = split_shares([c.tile_id for c in crops])
    gate_ix, eval_ix = shares.gate, shares.calibration
    names = sorted({sites[i] for i in shares.fit})
    rng.shuffle(names)
    start_sites = set(names[: len(names) // 4])
    start = [i for i in shares.fit if sites[i] in start_sites]
    pool: dict[str, list[int]] = {}
    for i in shares.fit:
        if sites[i] not in start_sites:
            pool.setdefault(crops[i].tile_id, []).append(i)
    gate_y, gate_tiles = y[gate_ix], [crops[i].tile_id for i in gate_ix]
    first = train("start", x[start], y[start], [sites[i] for i in start], seed)
    start_recall = recall_at_precision(y[eval_ix], first.score(x[eval_ix]))
    out: dict[str, Any] = {
        "seed": seed,
        "start_crops": len(start),
        "start_mining_crops": int(y[start].sum()),
        "pool_tiles": len(pool),
        "pool_mining_tiles": sum(int(y[ix].max()) for ix in pool.values()),
        "eval_crops": len(eval_ix),
        "eval_mining_crops": int(y[eval_ix].sum()),
        "start_recall": start_recall,
    }
    for how in ("queue", "random"):
        arm = Arm(first)
        order_rng = np.random.default_rng(seed + 1000)
        curve, labelled, mining_shown, refusals, candidates = [], [], [], [], []
        for r in range(rounds):
            shown = pick(arm, how, pool, x, per_round, order_rng)
            for tile in shown:
                ix = pool[tile]
                truth = {i: int(y[i]) for i in ix}
                scores = dict(zip(ix, arm.served.score(x[ix]).tolist(), strict=True))
                arm.labels.update(reviewed_labels(truth, scores, arm.served.threshold))
            arm.shown.update(shown)
            reviewed = sorted(arm.labels)
            train_ix = start + reviewed
            train_y = np.concatenate([y[start], np.array([arm.labels[i] for i in reviewed], int)])
            candidate = train(
                f"{how}-r{r + 1}", x[train_ix], train_y, [sites[i] for i in train_ix], seed
            )
            decision = gate(
                gate_y,
                gate_tiles,
                (arm.served.name, arm.served.score(x[gate_ix]), arm.served.threshold),
                (candidate.name, candidate.score(x[gate_ix]), candidate.threshold),
            )
            if decision.passed:
                arm.other, arm.served = arm.served, candidate
            else:
                arm.other = candidate
                arm.refusals += 1
            curve.append(recall_at_precision(y[eval_ix], arm.served.score(x[eval_ix])))
            candidates.append(recall_at_precision(y[eval_ix], candidate.score(x[eval_ix])))
            labelled.append(len(arm.labels))
            mining_shown.append(sum(int(y[pool[t]].max()) for t in arm.shown))
            refusals.append(arm.refusals)
        out[how] = {
            "recall": curve,
            "candidate_recall": candidates,
            "labels": labelled,
            "mining_tiles_shown": mining_shown,
            "gate_refusals": arm.refusals,
            "refusals_by_round": refusals,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="default: the shared texty-amber superpixels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiles-per-round", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cache", type=Path, default=Path("artifacts/review_loop"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/review_loop.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    print(SIMULATED, flush=True)
    data = args.data or shared_data_dir(load_settings().data, "superpixels")
    crops = list_labelled(data)
    y = np.array([c.label for c in crops])
    x, backbone = features_of(crops, args.cache)
    print(
        f"{len(crops)} crops ({int(y.sum())} mining) of {len({c.tile_id for c in crops})} tiles; "
        f"features of the served backbone {backbone} ({x.shape[1]} wide) in "
        f"{time.perf_counter() - started:.0f}s",
        flush=True,
    )
    runs = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        runs.append(run_seed(seed, crops, x, y, args.rounds, args.tiles_per_round))
        r = runs[-1]
        print(
            f"seed {seed} ({time.perf_counter() - t0:.0f}s): start {r['start_crops']} crops "
            f"({r['start_mining_crops']} mining), pool {r['pool_tiles']} tiles "
            f"({r['pool_mining_tiles']} mining), eval {r['eval_crops']} crops "
            f"({r['eval_mining_crops']} mining); start recall {r['start_recall']:.3f}; "
            + "; ".join(
                f"{how} recall {' '.join(f'{v:.3f}' for v in r[how]['recall'])}, "
                f"{r[how]['gate_refusals']} refused"
                for how in ("queue", "random")
            ),
            flush=True,
        )
    rounds = list(range(1, args.rounds + 1))
    per: dict[str, list[dict[str, float]]] = {}
    for how in ("queue", "random"):
        per[how] = [interval([r[how]["recall"][k] for r in runs]) for k in range(args.rounds)]
    diff = [
        interval([r["queue"]["recall"][k] - r["random"]["recall"][k] for r in runs])
        for k in range(args.rounds)
    ]
    start = interval([r["start_recall"] for r in runs])
    print(
        f"\nrecall at precision >= {TARGET_PRECISION} on eval tiles (mean [95 % t-interval] over "
        f"{len(runs)} seeds); start {start['mean']:.3f} [{start['low']:.3f}, {start['high']:.3f}]"
    )
    print(f"{'round':>5} {'tiles':>6}  {'queue':24} {'random':24} {'queue − random':24}")
    for k, rnd in enumerate(rounds):
        cells = [
            f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"
            for v in (per["queue"][k], per["random"][k], diff[k])
        ]
        print(
            f"{rnd:5d} {rnd * args.tiles_per_round:6d}  {cells[0]:24} {cells[1]:24} {cells[2]:24}"
        )
    labels = {
        h: [float(np.mean([r[h]["labels"][k] for r in runs])) for k in range(args.rounds)]
        for h in per
    }
    mining = {
        h: [
            float(np.mean([r[h]["mining_tiles_shown"][k] for r in runs]))
            for k in range(args.rounds)
        ]
        for h in per
    }
    refusals = {h: [r[h]["gate_refusals"] for r in runs] for h in per}
    print(
        "labels gained (mean): "
        + "; ".join(f"{h} {' '.join(f'{v:.0f}' for v in labels[h])}" for h in per)
    )
    print(
        "mining tiles shown (mean): "
        + "; ".join(f"{h} {' '.join(f'{v:.1f}' for v in mining[h])}" for h in per)
    )
    print(f"gate refusals per seed (of {args.rounds} rounds): {refusals}")
    last = diff[-1]
    verdict = (
        "queue order beats random order beyond the interval"
        if last["low"] > 0
        else "random order beats queue order beyond the interval"
        if last["high"] < 0
        else "no difference beyond the interval between queue and random order"
    )
    wall = time.perf_counter() - started
    print(f"after {args.rounds * args.tiles_per_round} tiles: {verdict}; wall time {wall:.0f}s")
    print(SIMULATED)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "reviewer": SIMULATED,
                "backbone": backbone,
                "metric": f"recall at precision >= {TARGET_PRECISION} on eval tiles",
                "rounds": rounds,
                "tiles_per_round": args.tiles_per_round,
                "seeds": args.seeds,
                "start_recall": start,
                "queue_recall": per["queue"],
                "random_recall": per["random"],
                "queue_minus_random": diff,
                "labels_gained": labels,
                "mining_tiles_shown": mining,
                "gate_refusals": refusals,
                "verdict": verdict,
                "wall_time_s": round(wall, 1),
                "runs": runs,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
