"""Does fine-tuning the backbone pay? Tile-grouped k-fold CV, fine-tuning inside every fold.

    python benchmarks/finetune_cv.py --data ../shared/data/texty-amber/superpixels [--epochs 6]

In the same run and on the same folds (StratifiedGroupKFold by tile, as `amberscan train`):
  frozen     pretrained backbone features → XGBoost (the baseline: what a frozen model serves)
  ft-head    the fine-tuned network's own sigmoid head, 8× dihedral test-time augmentation
  ft-xgb     fine-tuned backbone features (8× TTA) → XGBoost, as the served pipeline does
All out-of-fold scores are pooled and one threshold is chosen for precision ≥ 0.95. Prints one
row per variant and writes the out-of-fold scores to artifacts/finetune_cv.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from amberscan.model.classifier import (
    _fit,
    cross_validate,
    evaluate_scores,
    threshold_for_precision,
    tile_groups,
)
from amberscan.model.dataset import list_labelled
from amberscan.model.finetune import FinetuneConfig, finetune, pixel_features
from amberscan.vision.crops import crop_superpixel
from amberscan.vision.imageio import read_image


def load(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    crops = list_labelled(data)
    images = []
    for c in crops:
        image = read_image(c.path)
        images.append(crop_superpixel(image, (0, 0, image.shape[0], image.shape[1]), 224))
    labels = np.array([c.label for c in crops])
    return np.stack(images), labels, tile_groups([c.tile_id for c in crops])


def report(name: str, labels: np.ndarray, scores: np.ndarray, target: float) -> dict:
    threshold = threshold_for_precision(labels, scores, target)
    at_target = evaluate_scores(labels, scores, threshold)
    at_half = evaluate_scores(labels, scores, 0.5)
    row = {
        "variant": name,
        "f1_at_0.5": at_half.f1,
        "precision": at_target.precision,
        "recall": at_target.recall,
        "threshold": threshold,
        "roc_auc": at_target.roc_auc,
        "pr_auc": at_target.pr_auc,
    }
    print(
        f"{name:<8} F1@0.5 {row['f1_at_0.5']:.3f}  at P≥{target}: precision {row['precision']:.3f} "
        f"recall {row['recall']:.3f} (threshold {threshold:.3f})  ROC-AUC {row['roc_auc']:.3f} "
        f"PR-AUC {row['pr_auc']:.3f}"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-folds", type=int, nargs="*", help="run these folds only (0-based)")
    parser.add_argument("--epochs", type=int, default=FinetuneConfig.epochs)
    parser.add_argument("--learning-rate", type=float, default=FinetuneConfig.learning_rate)
    parser.add_argument("--batch-size", type=int, default=FinetuneConfig.batch_size)
    parser.add_argument("--train-batch-norm", action="store_true")
    parser.add_argument(
        "--class-balance",
        action="store_true",
        help="weight mining crops up to the negatives' count",
    )
    parser.add_argument("--zoom-jitter", type=float, default=FinetuneConfig.zoom_jitter)
    parser.add_argument("--colour-jitter", type=float, default=FinetuneConfig.colour_jitter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--out", type=Path, default=Path("artifacts/finetune_cv.json"))
    args = parser.parse_args()
    config = FinetuneConfig(
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        train_batch_norm=args.train_batch_norm,
        class_balance=args.class_balance,
        zoom_jitter=args.zoom_jitter,
        colour_jitter=args.colour_jitter,
        seed=args.seed,
    )
    started = time.perf_counter()
    images, labels, groups = load(args.data)
    print(
        f"{len(images)} crops, {int(labels.sum())} mining, {len(set(groups))} tiles; "
        f"{args.folds}-fold CV grouped by tile; fine-tuning {args.backbone} {config}"
    )

    frozen_model = pixel_features(args.backbone)
    frozen = np.concatenate(
        [
            frozen_model(images[i : i + 64].astype(np.float32)).numpy()
            for i in range(0, len(images), 64)
        ]
    )
    frozen_oof = cross_validate(frozen, labels, groups, folds=args.folds, seed=args.seed)

    head_oof = np.full(len(labels), np.nan)
    xgb_oof = np.full(len(labels), np.nan)
    splitter = StratifiedGroupKFold(n_splits=args.folds, shuffle=True, random_state=args.seed)
    for fold, (train, test) in enumerate(splitter.split(images, labels, groups)):
        if args.only_folds and fold not in args.only_folds:
            continue
        t0 = time.perf_counter()
        model = finetune(
            lambda: pixel_features(args.backbone),
            images[train],
            labels[train],
            config,
            log=lambda m, f=fold: print(f"  fold {f} {m}", flush=True),
        )
        head_oof[test] = model.score(images[test])
        booster = _fit(model.embed(images[train]), labels[train], args.seed, None)
        xgb_oof[test] = booster.predict_proba(model.embed(images[test]))[:, 1]
        print(
            f"  fold {fold}: {len(train)} train / {len(test)} test crops, "
            f"{time.perf_counter() - t0:.0f}s",
            flush=True,
        )

    done = ~np.isnan(head_oof)
    print(
        f"\npooled out-of-fold scores of {int(done.sum())} crops "
        f"({'all' if done.all() else 'some'} folds):"
    )
    rows = [
        report("frozen", labels[done], frozen_oof[done], args.target_precision),
        report("ft-head", labels[done], head_oof[done], args.target_precision),
        report("ft-xgb", labels[done], xgb_oof[done], args.target_precision),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "rows": rows,
                "config": vars(config) if hasattr(config, "__dict__") else str(config),
                "seconds": time.perf_counter() - started,
                "oof": {
                    "labels": labels.tolist(),
                    "frozen": frozen_oof.tolist(),
                    "ft_head": head_oof.tolist(),
                    "ft_xgb": xgb_oof.tolist(),
                },
            }
        )
    )
    print(f"total {time.perf_counter() - started:.0f}s; scores in {args.out}")


if __name__ == "__main__":
    main()
