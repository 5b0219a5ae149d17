"""What does choosing the threshold on a calibration share cost? Two builds, judged on the gate share.

    .venv/bin/python benchmarks/calibration.py --data ../shared/data/texty-amber/superpixels \
        [--every-crop-weights W.weights.h5] [--fit-weights W.weights.h5] [--float32]

The builds, each the default recipe (fine-tuned EfficientNet-Lite1, one view, XGBoost on its
INT8 features as the CPU model server serves them; `--float32`: TF Serving's float32 features):
  every-crop   the backbone fine-tuned on every crop outside the gate share, as builds were before
               the calibration share; the threshold carried from the recipe's nested CV
               (`model/recipe.py`, measured on one CPU for that build's recipe)
  calibrated   the backbone fine-tuned on the fit share only (the calibration share held out, as
               `make model` builds now); the threshold chosen on the calibration share's
               out-of-fold scores, on this machine
and two reference rows: every-crop with the threshold its own out-of-fold scores give (crops its
backbone has seen: what `train` chose before), and calibrated with the carried threshold (the
threshold's share of the difference, apart from the backbone's). XGBoost trains on the fit and
calibration shares in every row. All are scored on the gate share (`model/promotion.py`), which
no build trains on, with 95 % site-bootstrap intervals; "calibrated − every-crop" is the paired
difference, as the promotion gate computes it.

Weights not given are fine-tuned here, on one TensorFlow thread as `amberscan finetune` does
(15-20 min each on 2 cores), and saved under artifacts/calibration/. Writes
artifacts/calibration.json. One run is one draw of each build: the spread between fine-tune
seeds is not in these intervals (docs/model.md, section 4).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from amberscan.model import backbones
from amberscan.model.classifier import (
    _fit,
    cross_validate,
    threshold_for_precision,
    tile_groups,
)
from amberscan.model.dataset import fingerprint, list_labelled
from amberscan.model.finetune import (
    FinetuneConfig,
    backbone_net,
    deterministic_threads,
    finetune,
    pixel_features,
)
from amberscan.model.promotion import (
    FINETUNE_HOLDOUT_RULE,
    GATE_SHARE_RULE,
    gate,
    judge,
    split_shares,
)
from amberscan.model.recipe import FLOAT_RECIPE, SERVED_RECIPE
from amberscan.vision.crops import load_crop

sys.path.insert(0, str(Path(__file__).parent))
from finetune_cv import int8_features  # noqa: E402  (a sibling benchmark's INT8 arm)

Embed = Callable[[np.ndarray], np.ndarray]


def weights_for(
    name: str,
    given: Path | None,
    holdout: str,
    images: np.ndarray,
    labels: np.ndarray,
    train: list[int],
    backbone: str,
    data_fingerprint: str,
) -> Path:
    """The build's fine-tuned weights: `given` if its record says it held out `holdout` of
    these crops, else fine-tuned here (and kept for the next run)."""
    path = given or Path(f"artifacts/calibration/{name}/{backbone}.weights.h5")
    record = path.with_suffix("").with_suffix(".json")
    if path.is_file():
        meta = json.loads(record.read_text()) if record.is_file() else {}
        if meta.get("holdout") != holdout or meta.get("backbone") != backbone:
            raise SystemExit(
                f"{path}: its record ({record}) says backbone {meta.get('backbone')!r} held out "
                f"{meta.get('holdout')!r}; the {name} build needs {backbone} holding out {holdout!r}"
            )
        return path
    print(f"fine-tuning the {name} build on {len(train)} crops (one thread)", flush=True)
    started = time.perf_counter()
    config = FinetuneConfig()
    model = finetune(
        lambda: pixel_features(backbone),
        images[train],
        labels[train],
        config,
        log=lambda m: print(f"  {name} {m}", flush=True),
    )
    model.save(path)
    record.write_text(
        json.dumps(
            {
                "backbone": backbone,
                "config": dataclasses.asdict(config),
                "data_fingerprint": data_fingerprint,
                "holdout": holdout,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"  {name}: fine-tuned in {time.perf_counter() - started:.0f}s", flush=True)
    return path


def embedder(weights: Path, backbone: str, images: np.ndarray, float32: bool) -> Embed:
    """Crops → features of the fine-tuned backbone in `weights`, as the model server serves them."""
    features = pixel_features(backbone)
    backbone_net(features).load_weights(weights)
    if float32:

        def embed(crops: np.ndarray) -> np.ndarray:
            return np.concatenate(
                [
                    features(crops[i : i + 64].astype(np.float32)).numpy()
                    for i in range(0, len(crops), 64)
                ]
            )

        return embed
    # As `export-backbone --int8` does: quantized on the labelled crops (activation ranges only).
    return int8_features(SimpleNamespace(features=features), backbone, images, 1)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--every-crop-weights", type=Path)
    parser.add_argument("--fit-weights", type=Path)
    parser.add_argument("--float32", action="store_true", help="TF Serving's float32 features")
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fold-seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2, 3, 4],
        help="the calibration CV with these fold assignments: the spread of the chosen threshold "
        "and of the gate-share figures it gives; the calibrated row takes their median, as "
        "`train` does",
    )
    parser.add_argument("--out", type=Path, default=Path("artifacts/calibration.json"))
    args = parser.parse_args()
    deterministic_threads()
    backbone = SERVED_RECIPE.backbone
    carried = (FLOAT_RECIPE if args.float32 else SERVED_RECIPE).threshold

    crops = list_labelled(args.data)
    tiles = [c.tile_id for c in crops]
    shares = split_shares(tiles)
    size = backbones.BACKBONES[backbone].input_size
    images = np.stack([load_crop(c.path, size) for c in crops])
    labels = np.array([c.label for c in crops])
    trained_on = sorted(shares.fit + shares.calibration)
    calibration = set(shares.calibration)
    calibrate_on = np.array([i for i, k in enumerate(trained_on) if k in calibration])
    gate_ix = shares.gate
    print(
        f"{len(crops)} crops: fit {len(shares.fit)}, calibration {len(shares.calibration)} "
        f"({int(labels[shares.calibration].sum())} mining), gate {len(gate_ix)} "
        f"({int(labels[gate_ix].sum())} mining); {'float32' if args.float32 else 'INT8'} features",
        flush=True,
    )
    builds = {
        "every-crop": (args.every_crop_weights, GATE_SHARE_RULE, trained_on),
        "calibrated": (args.fit_weights, FINETUNE_HOLDOUT_RULE, shares.fit),
    }
    data_print = fingerprint(crops)
    rows: dict[str, dict[str, object]] = {}
    scored: dict[str, tuple[np.ndarray, float]] = {}
    spread: dict[str, list[dict[str, float]]] = {}
    y_train = labels[trained_on]
    groups = tile_groups([tiles[i] for i in trained_on])
    for name, (given, holdout, fine_tuned_on) in builds.items():
        weights = weights_for(
            name, given, holdout, images, labels, fine_tuned_on, backbone, data_print
        )
        embed = embedder(weights, backbone, images, args.float32)
        x = embed(images)
        model = _fit(x[trained_on], y_train, args.seed, None)
        gate_scores = model.predict_proba(x[gate_ix])[:, 1]
        # One CV per fold seed: the threshold each would choose, and what it gives on the gate.
        chosen_by_seed = []
        for fold_seed in args.fold_seeds:
            oof = cross_validate(x[trained_on], y_train, groups, seed=fold_seed)
            on = calibrate_on if name == "calibrated" else np.arange(len(y_train))
            threshold = threshold_for_precision(y_train[on], oof[on], args.target_precision)
            row = judge(labels[gate_ix], [tiles[i] for i in gate_ix], name, gate_scores, threshold)
            chosen_by_seed.append(
                {
                    "fold_seed": fold_seed,
                    "threshold": threshold,
                    "precision": row.precision.value,
                    "recall": row.recall.value,
                }
            )
        spread[name] = chosen_by_seed
        oof = cross_validate(x[trained_on], y_train, groups, seed=args.fold_seeds[0])
        thresholds = {"carried": carried}
        if name == "every-crop":
            thresholds["own out-of-fold"] = threshold_for_precision(
                y_train, oof, args.target_precision
            )
        else:
            # As `train` chooses it: the median over the fold assignments (model/classifier.py).
            thresholds["calibration share"] = float(
                np.median([r["threshold"] for r in chosen_by_seed])
            )
        for how, threshold in thresholds.items():
            row = judge(labels[gate_ix], [tiles[i] for i in gate_ix], name, gate_scores, threshold)
            key = f"{name}, {how} threshold"
            rows[key] = {"weights": str(weights), **dataclasses.asdict(row)}
            scored[key] = (gate_scores, threshold)
            print(
                f"{key:42s} {threshold:.4f}  precision {row.precision.show()}  "
                f"recall {row.recall.show()}  (tp {row.true_positives}, "
                f"fp {row.false_positives}, fn {row.false_negatives})",
                flush=True,
            )
    for name, runs in spread.items():
        how = "calibration share" if name == "calibrated" else "own out-of-fold"
        print(
            f"{name}, {how} threshold over fold seeds {args.fold_seeds}: "
            + ", ".join(
                f"{key} {min(r[key] for r in runs):.3f}–{max(r[key] for r in runs):.3f}"
                for key in ("threshold", "precision", "recall")
            ),
            flush=True,
        )
    before, after = "every-crop, carried threshold", "calibrated, calibration share threshold"
    decision = gate(
        labels[gate_ix],
        [tiles[i] for i in gate_ix],
        ("every-crop", *scored[before]),
        ("calibrated", *scored[after]),
    )
    print(
        f"\ncalibrated − every-crop on the gate share (paired site bootstrap): recall "
        f"{decision.recall_change.show()}, precision {decision.precision_change.show()}; "
        f"the promotion gate would {'pass' if decision.passed else 'refuse'} it"
        + ("" if decision.passed else f" ({'; '.join(decision.reasons)})")
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "features": "float32" if args.float32 else "int8",
                "rows": rows,
                "fold_seed_spread": spread,
                "recall_change": dataclasses.asdict(decision.recall_change),
                "precision_change": dataclasses.asdict(decision.precision_change),
                "gate_passes": decision.passed,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
