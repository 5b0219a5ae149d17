"""Does fine-tuning the backbone pay? Tile-grouped k-fold CV, fine-tuning inside every fold.

    python benchmarks/finetune_cv.py --data ../shared/data/texty-amber/superpixels [--epochs 6]

In the same run and on the same folds (StratifiedGroupKFold by tile, as `amberscan train`):
  frozen     pretrained backbone features → XGBoost (the baseline: what a frozen model serves)
  ft-head    the fine-tuned network's own sigmoid head, 8× dihedral test-time augmentation
  ft-xgb-vN  fine-tuned backbone features, mean over N dihedral views (1, 2, 4, 8) → XGBoost,
             trained and tested on features of the same N views, as the served pipeline does
  ft-xgb-v1+stats  the 1-view features with the crop's colour/texture statistics appended
  ft-xgb-v1-int8  the fine-tuned backbone quantized to INT8 (OpenVINO + NNCF, calibrated on the
             fold's training crops, as `export-backbone --int8` does) → XGBoost trained on its
             features: what the CPU model server serves
  cascade-m  1-view scores; crops within m of the 1-view threshold re-scored from 8 views
             (only when 8 views are among `--view-sets`)
Folds keep whole sites (`--group-by site`, the 0.01-degree cells of the gate share; `tile` as
before 2026-12-06). All out-of-fold scores are pooled and one threshold is chosen for precision
≥ 0.95. Prints one
row per variant and writes the out-of-fold scores to artifacts/finetune_cv.json. TensorFlow runs
on one thread (`--threads`), as `amberscan finetune` does so that a build is repeatable.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from amberscan.model import backbones
from amberscan.model.classifier import (
    _fit,
    cascade_choice,
    cascade_scores,
    cross_validate,
    evaluate_scores,
    threshold_for_precision,
    tile_groups,
)
from amberscan.model.dataset import list_labelled
from amberscan.model.finetune import (
    DIHEDRAL_VIEWS,
    FinetuneConfig,
    FinetunedModel,
    backbone_net,
    deterministic_threads,
    finetune,
    pixel_features,
)
from amberscan.model.promotion import site_of
from amberscan.model.quantize import normalise_at, quantize_backbone
from amberscan.modelserver.runtimes import compile_config, compile_for_uint8
from amberscan.vision.crops import CROP_RESAMPLE, Resample, crop_superpixel
from amberscan.vision.imageio import read_image


def load(
    data: Path, size: int, resample: Resample, group_by: str = "site"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labelled crops resized to `size`, their labels and groups (sites or tiles)."""
    crops = list_labelled(data)
    images = []
    for c in crops:
        image = read_image(c.path)
        box = (0, 0, image.shape[0], image.shape[1])
        images.append(crop_superpixel(image, box, size, resample))
    labels = np.array([c.label for c in crops])
    place = site_of if group_by == "site" else str
    return np.stack(images), labels, tile_groups([place(c.tile_id) for c in crops])


VIEW_SETS = DIHEDRAL_VIEWS
CASCADE_MARGINS = (0.02, 0.05, 0.1, 0.2, 0.3)


def crop_statistics(images: np.ndarray) -> np.ndarray:
    """Colour and texture statistics per crop (what the CNN's pooled vector may average away):
    RGB and HSV means and deviations, grey gradient magnitude, and a uniform LBP histogram."""
    from skimage.color import rgb2gray, rgb2hsv
    from skimage.feature import local_binary_pattern
    from skimage.filters import sobel

    rows = []
    for image in images:
        rgb = image.astype(np.float32) / 255.0
        hsv = rgb2hsv(rgb)
        grey = rgb2gray(rgb)
        edges = sobel(grey)
        lbp = local_binary_pattern((grey * 255).astype(np.uint8), 8, 1, method="uniform")
        hist = np.bincount(lbp.astype(int).ravel(), minlength=10)[:10] / lbp.size
        rows.append(
            np.concatenate(
                [
                    rgb.reshape(-1, 3).mean(0),
                    rgb.reshape(-1, 3).std(0),
                    hsv.reshape(-1, 3).mean(0),
                    hsv.reshape(-1, 3).std(0),
                    [edges.mean(), edges.std(), grey.std()],
                    hist,
                ]
            )
        )
    return np.asarray(rows, dtype=np.float32)


def int8_features(
    model: FinetunedModel, backbone: str, calibration: np.ndarray, threads: int
) -> Callable[[np.ndarray], np.ndarray]:
    """The fold's fine-tuned backbone converted to OpenVINO, quantized on `calibration` crops,
    behind the model server's uint8 pre-processing: a function from crops to INT8 features."""
    import openvino as ov

    meta = backbones.normalisation(backbone).as_metadata()
    bare = ov.convert_model(backbone_net(model.features))
    quantized = quantize_backbone(bare, calibration, meta)
    config = compile_config(threads=threads)
    size = backbones.BACKBONES[backbone].input_size
    at_size = calibration.shape[1:3] == (size, size)
    # As the model server does: uint8 crops at the input size go to the compiled pre-processing;
    # crops of another size are resized and normalised first, then go to the model as it is.
    core = ov.Core()
    compiled = (
        compile_for_uint8(core, quantized, meta, config)
        if at_size
        else core.compile_model(quantized, "CPU", config)
    )
    request = compiled.create_infer_request()

    def prepare(crops: np.ndarray) -> np.ndarray:
        return crops if at_size else normalise_at(crops, size, meta)

    def embed(crops: np.ndarray) -> np.ndarray:
        out = [
            request.infer({0: prepare(crops[i : i + 32])})[0].copy()
            for i in range(0, len(crops), 32)
        ]
        return np.concatenate(out).astype(np.float32)

    return embed


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
    parser.add_argument(
        "--backbone",
        default="efficientnet-lite0",
        choices=backbones.LITE_VARIANTS,
    )
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
    parser.add_argument("--zoom-out", type=float, default=FinetuneConfig.zoom_out)
    parser.add_argument("--label-smoothing", type=float, default=FinetuneConfig.label_smoothing)
    parser.add_argument("--frozen-blocks", type=int, default=FinetuneConfig.frozen_blocks)
    parser.add_argument(
        "--threads", type=int, default=1, help="TensorFlow threads (1: repeatable, the recipe)"
    )
    parser.add_argument(
        "--view-sets",
        type=int,
        nargs="+",
        choices=sorted(VIEW_SETS),
        default=sorted(VIEW_SETS),
        help="the ft-xgb-vN rows to compute (1 is always among them); the cascade needs 8",
    )
    parser.add_argument("--no-int8", action="store_true", help="leave out the ft-xgb-v1-int8 row")
    parser.add_argument(
        "--crop-resample",
        choices=("nearest", "bilinear"),
        default=CROP_RESAMPLE,
        help="how each crop is resized to the backbone's input (vision/crops.py)",
    )
    parser.add_argument(
        "--crop-size",
        type=int,
        help="side the crops are cut at (default: the backbone's input size, where `finetune` "
        "cuts them and the export's signature takes them); another size is resized to the input "
        "in the graph, as an export with that --crop-size serves it",
    )
    parser.add_argument("--seed", type=int, default=0, help="the fine-tune's and XGBoost's seed")
    parser.add_argument(
        "--fold-seed",
        type=int,
        help="seed of the fold assignment (default: --seed); repeat the CV over several to see "
        "its spread (benchmarks/nested_cv_spread.py)",
    )
    parser.add_argument(
        "--group-by",
        choices=("site", "tile"),
        default="site",
        help="folds keep whole sites (the 0.01-degree cells of model/promotion.py: neighbouring "
        "tiles share pits) or only whole tiles (optimistic: 73 of 720 tiles have a neighbour "
        "within 300 m)",
    )
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
        zoom_out=args.zoom_out,
        label_smoothing=args.label_smoothing,
        frozen_blocks=args.frozen_blocks,
        seed=args.seed,
    )
    if args.threads == 1:
        deterministic_threads()
    started = time.perf_counter()
    size = backbones.BACKBONES[args.backbone].input_size
    crop_size = args.crop_size or size
    images, labels, groups = load(args.data, crop_size, args.crop_resample, args.group_by)
    fold_seed = args.seed if args.fold_seed is None else args.fold_seed
    print(
        f"{len(images)} crops ({crop_size} px, {args.crop_resample} resize; the backbone "
        f"takes {size} px), {int(labels.sum())} mining, "
        f"{len(set(groups))} {args.group_by}s; {args.folds}-fold CV grouped by {args.group_by} "
        f"(fold seed {fold_seed}); "
        f"fine-tuning {args.backbone} {config}"
    )

    frozen_model = pixel_features(args.backbone)
    frozen = np.concatenate(
        [
            frozen_model(images[i : i + 64].astype(np.float32)).numpy()
            for i in range(0, len(images), 64)
        ]
    )
    frozen_oof = cross_validate(frozen, labels, groups, folds=args.folds, seed=fold_seed)

    head_oof = np.full(len(labels), np.nan)
    view_sets = {n: VIEW_SETS[n] for n in sorted({1, *args.view_sets})}
    views_used = tuple(sorted({k for views in view_sets.values() for k in views}))
    view_oof = {n: np.full(len(labels), np.nan) for n in view_sets}
    int8_oof = np.full(len(labels), np.nan)
    stats_oof = np.full(len(labels), np.nan)
    stats = crop_statistics(images)
    splitter = StratifiedGroupKFold(n_splits=args.folds, shuffle=True, random_state=fold_seed)
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
        t_train = time.perf_counter() - t0
        head_oof[test] = model.score(images[test])
        # embed_views stacks the views asked for, in that order: index them by position.
        position = {k: i for i, k in enumerate(views_used)}
        train_views = model.embed_views(images[train], views_used)
        test_views = model.embed_views(images[test], views_used)
        for n, views in view_sets.items():
            rows = [position[k] for k in views]
            booster = _fit(train_views[rows].mean(0), labels[train], args.seed, None)
            view_oof[n][test] = booster.predict_proba(test_views[rows].mean(0))[:, 1]
        if not args.no_int8:
            t_int8 = time.perf_counter()
            embed = int8_features(model, args.backbone, images[train], args.threads)
            booster = _fit(embed(images[train]), labels[train], args.seed, None)
            int8_oof[test] = booster.predict_proba(embed(images[test]))[:, 1]
            print(f"  fold {fold}: INT8 arm {time.perf_counter() - t_int8:.0f}s", flush=True)
        booster = _fit(np.hstack([train_views[0], stats[train]]), labels[train], args.seed, None)
        stats_oof[test] = booster.predict_proba(np.hstack([test_views[0], stats[test]]))[:, 1]
        del model
        keras.backend.clear_session()  # each fold's graphs and variables, freed
        gc.collect()
        print(
            f"  fold {fold}: {len(train)} train / {len(test)} test crops, fine-tune "
            f"{t_train:.0f}s, total {time.perf_counter() - t0:.0f}s",
            flush=True,
        )

    done = ~np.isnan(head_oof)
    print(
        f"\npooled out-of-fold scores of {int(done.sum())} crops "
        f"({'all' if done.all() else 'some'} folds):"
    )
    y = labels[done]
    rows = [
        report("frozen", y, frozen_oof[done], args.target_precision),
        report("ft-head", y, head_oof[done], args.target_precision),
        *(report(f"ft-xgb-v{n}", y, view_oof[n][done], args.target_precision) for n in view_sets),
        report("ft-xgb-v1+stats", y, stats_oof[done], args.target_precision),
    ]
    if not args.no_int8:
        rows.append(report("ft-xgb-v1-int8", y, int8_oof[done], args.target_precision))
    # The cascade: every crop gets the 1-view score; those within `margin` of the 1-view
    # threshold are scored again from 8 views. Reported with the share of crops re-scored.
    one, eight = view_oof[1][done], view_oof.get(8, view_oof[1])[done]
    t1 = threshold_for_precision(y, one, args.target_precision)
    for margin in CASCADE_MARGINS if 8 in view_oof else ():
        again = cascade_choice(one, t1, margin)
        row = report(
            f"cascade-{margin}", y, cascade_scores(one, eight, t1, margin), args.target_precision
        )
        row["rescored_share"] = float(again.mean())
        print(f"          re-scored {again.mean():.1%} of crops from 8 views")
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "rows": rows,
                "config": vars(config) if hasattr(config, "__dict__") else str(config),
                "crop_resample": args.crop_resample,
                "group_by": args.group_by,
                "fold_seed": fold_seed,
                "seed": args.seed,
                "crop_size": crop_size,
                "seconds": time.perf_counter() - started,
                "oof": {
                    "labels": labels.tolist(),
                    "frozen": frozen_oof.tolist(),
                    "ft_head": head_oof.tolist(),
                    **{f"ft_xgb_v{n}": view_oof[n].tolist() for n in view_sets},
                    "ft_xgb_v1_stats": stats_oof.tolist(),
                    "ft_xgb_v1_int8": int8_oof.tolist(),
                },
            }
        )
    )
    print(f"total {time.perf_counter() - started:.0f}s; scores in {args.out}")


if __name__ == "__main__":
    main()
