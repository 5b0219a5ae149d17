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
row per variant and writes the out-of-fold scores to artifacts/finetune_cv.json.

With `--finetune-seeds 0 1 2` every fold is fine-tuned once per seed on the same training crops:
a row per seed (`ft-xgb-v1-int8@seed1`) and an `@ensemble` row, the mean of the seeds'
probabilities (model/ensemble.py), all on the folds every seed finished. Each fine-tune's
out-of-fold scores are cached as it ends (`--cache-dir`, keyed by the recipe and the data): a
run stopped half way goes on from there, and prints what is cached and what is left at its
start. `benchmarks/ensemble_cv.py` reads the cache (`make bench-ensemble`). TensorFlow runs
on one thread (`--threads`), as `amberscan finetune` does so that a build is repeatable.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from amberscan.model import backbones, ensemble
from amberscan.model.classifier import (
    _fit,
    cascade_choice,
    cascade_scores,
    cross_validate,
    evaluate_scores,
    threshold_for_precision,
    tile_groups,
)
from amberscan.model.dataset import fingerprint, list_labelled
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


# How each variant's scores are keyed in the cache and the JSON, and named in the rows.
DISPLAY = {
    "ft_head": "ft-head",
    "ft_xgb_v1_stats": "ft-xgb-v1+stats",
    "ft_xgb_v1_int8": "ft-xgb-v1-int8",
}


def display_name(variant: str) -> str:
    return DISPLAY.get(variant, variant.replace("_", "-"))


def recipe_key(
    args: argparse.Namespace, config: FinetuneConfig, crop_size: int, view_sets: dict
) -> str:
    """The cache folder of a recipe: everything a piece's scores depend on but the fold seed,
    the fold and the fine-tune seed (those name the piece), and the threads and CPU (recorded
    in each piece: a fine-tune is repeatable on one machine, not across CPUs)."""
    recipe = {
        "format": 1,
        "backbone": args.backbone,
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "seed"},
        "crop_size": crop_size,
        "crop_resample": args.crop_resample,
        "group_by": args.group_by,
        "folds": args.folds,
        "view_sets": sorted(view_sets),
        "int8": not args.no_int8,
        "data": fingerprint(list_labelled(args.data)),
    }
    text = json.dumps(recipe, sort_keys=True)
    key = f"{args.backbone}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    folder = Path(args.cache_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.json").write_text(json.dumps(recipe, indent=1, sort_keys=True) + "\n")
    return key


def cached_pieces(folder: Path) -> dict[ensemble.Piece, Path]:
    """The pieces whose scores are in `folder` (finished writes only: see save_piece)."""
    return {ensemble.Piece.parse(path.stem): path for path in sorted(folder.glob("fs*.npz"))}


def save_piece(
    folder: Path,
    piece: ensemble.Piece,
    test: np.ndarray,
    labels: np.ndarray,
    scores: dict[str, np.ndarray],
    threads: int,
) -> Path:
    """Write one fine-tune's out-of-fold scores, atomically (a run killed while writing leaves
    no piece behind), with the held-out crops' indices and labels and where it ran."""
    meta = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "threads": threads,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = folder / f"{piece.name}.npz"
    partial = folder / f".{piece.name}.{os.getpid()}.partial.npz"
    np.savez(partial, test=test, labels=labels, meta=json.dumps(meta), **scores)
    os.replace(partial, path)
    return path


def load_piece(path: Path, test: np.ndarray) -> dict[str, np.ndarray]:
    """A cached piece's scores, after checking it held out the crops this split holds out."""
    with np.load(path) as piece:
        if not np.array_equal(piece["test"], test):
            raise SystemExit(
                f"{path}: cached for other held-out crops than this run's fold (the data or "
                "the split changed under the same recipe key): move it away and rerun"
            )
        return {k: piece[k] for k in piece.files if k not in ("test", "labels", "meta")}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def fine_tune_piece(
    args: argparse.Namespace,
    config: FinetuneConfig,
    piece: ensemble.Piece,
    images: np.ndarray,
    labels: np.ndarray,
    stats: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
) -> dict[str, np.ndarray]:
    """Fine-tune on the fold's training crops from `config.seed` and score its held-out crops
    every way (the variants of the module's docstring); XGBoost is seeded with the same seed."""
    fold, seed = piece.fold, config.seed
    t0 = time.perf_counter()
    model = finetune(
        lambda: pixel_features(args.backbone),
        images[train],
        labels[train],
        config,
        log=lambda m: print(f"  fold {fold} seed {seed} {m}", flush=True),
    )
    t_train = time.perf_counter() - t0
    scores = {"ft_head": model.score(images[test])}
    view_sets = {n: VIEW_SETS[n] for n in sorted({1, *args.view_sets})}
    views_used = tuple(sorted({k for views in view_sets.values() for k in views}))
    # embed_views stacks the views asked for, in that order: index them by position.
    position = {k: i for i, k in enumerate(views_used)}
    train_views = model.embed_views(images[train], views_used)
    test_views = model.embed_views(images[test], views_used)
    for n, views in view_sets.items():
        rows = [position[k] for k in views]
        booster = _fit(train_views[rows].mean(0), labels[train], seed, None)
        scores[f"ft_xgb_v{n}"] = booster.predict_proba(test_views[rows].mean(0))[:, 1]
    if not args.no_int8:
        t_int8 = time.perf_counter()
        embed = int8_features(model, args.backbone, images[train], args.threads)
        booster = _fit(embed(images[train]), labels[train], seed, None)
        scores["ft_xgb_v1_int8"] = booster.predict_proba(embed(images[test]))[:, 1]
        print(f"  fold {fold} seed {seed}: INT8 arm {time.perf_counter() - t_int8:.0f}s")
    booster = _fit(np.hstack([train_views[0], stats[train]]), labels[train], seed, None)
    scores["ft_xgb_v1_stats"] = booster.predict_proba(np.hstack([test_views[0], stats[test]]))[:, 1]
    del model
    keras.backend.clear_session()  # each fold's graphs and variables, freed
    gc.collect()
    print(
        f"  fold {fold} seed {seed}: {len(train)} train / {len(test)} test crops, fine-tune "
        f"{t_train:.0f}s, total {time.perf_counter() - t0:.0f}s",
        flush=True,
    )
    return {k: np.asarray(v, dtype=np.float32) for k, v in scores.items()}


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
        "--finetune-seeds",
        type=int,
        nargs="+",
        help="fine-tune K times in every fold, from these seeds (each with its own XGBoost, "
        "seeded alike), on the same training crops: a row per seed and an @ensemble row, the "
        "mean of their probabilities (model/ensemble.py); default: --seed alone",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path("benchmarks/ensemble_cv_scores"),
        help="each fine-tune's out-of-fold scores are kept here, under a key of the recipe and "
        "the data, as fs<fold seed>-fold<N>-seed<S>.npz: a run stopped half way resumes there "
        "(benchmarks/ensemble_cv.py reads them); the default folder is committed, so that a "
        "measurement longer than a session survives a fresh clone",
    )
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
    seeds: list[int] = args.finetune_seeds or [args.seed]
    print(
        f"{len(images)} crops ({crop_size} px, {args.crop_resample} resize; the backbone "
        f"takes {size} px), {int(labels.sum())} mining, "
        f"{len(set(groups))} {args.group_by}s; {args.folds}-fold CV grouped by {args.group_by} "
        f"(fold seed {fold_seed}); "
        f"fine-tuning {args.backbone} {config}"
    )

    view_sets = {n: VIEW_SETS[n] for n in sorted({1, *args.view_sets})}
    variants = [
        "ft_head",
        *(f"ft_xgb_v{n}" for n in view_sets),
        "ft_xgb_v1_stats",
        *(() if args.no_int8 else ("ft_xgb_v1_int8",)),
    ]
    splits = list(
        StratifiedGroupKFold(n_splits=args.folds, shuffle=True, random_state=fold_seed).split(
            images, labels, groups
        )
    )
    recipe_dir = args.cache_dir / recipe_key(args, config, crop_size, view_sets)
    planned = ensemble.plan(fold_seed, args.folds, seeds, args.only_folds)
    cached = cached_pieces(recipe_dir)
    todo = ensemble.left(planned, cached)
    print(
        f"cache {recipe_dir}: {len(planned) - len(todo)} of {len(planned)} fine-tunes of this "
        f"run cached ({ensemble.describe(p for p in planned if p in cached)}); "
        f"left {len(todo)} ({ensemble.describe(todo)})",
        flush=True,
    )
    frozen_model = pixel_features(args.backbone)
    frozen = np.concatenate(
        [
            frozen_model(images[i : i + 64].astype(np.float32)).numpy()
            for i in range(0, len(images), 64)
        ]
    )
    frozen_oof = cross_validate(frozen, labels, groups, folds=args.folds, seed=fold_seed)

    stats = crop_statistics(images) if todo else np.empty((len(images), 0))
    oof = {s: {v: np.full(len(labels), np.nan) for v in variants} for s in seeds}
    for piece in planned:
        train, test = splits[piece.fold]
        if piece in cached:
            scores = load_piece(cached[piece], test)
        else:
            scores = fine_tune_piece(
                args, replace(config, seed=piece.seed), piece, images, labels, stats, train, test
            )
            save_piece(recipe_dir, piece, test, labels[test], scores, args.threads)
            todo.remove(piece)
            print(
                f"  cached {piece.name}; left {len(todo)} ({ensemble.describe(todo)})", flush=True
            )
        for variant in variants:
            oof[piece.seed][variant][test] = scores[variant]

    # Single fine-tunes and their ensemble are judged on the same crops: the folds every seed
    # has finished (paired on the same folds).
    done = np.all([~np.isnan(oof[s]["ft_head"]) for s in seeds], axis=0)
    if not done.any():
        raise SystemExit("no fold is finished by every fine-tune seed yet: nothing to report")
    print(
        f"\npooled out-of-fold scores of {int(done.sum())} crops "
        f"({'all' if done.all() else 'some'} folds)"
        + (f", fine-tune seeds {' '.join(map(str, seeds))}:" if len(seeds) > 1 else ":")
    )
    y = labels[done]
    rows = [report("frozen", y, frozen_oof[done], args.target_precision)]
    for variant in variants:
        name = display_name(variant)
        if len(seeds) == 1:
            rows.append(report(name, y, oof[seeds[0]][variant][done], args.target_precision))
            continue
        for s in seeds:
            rows.append(report(f"{name}@seed{s}", y, oof[s][variant][done], args.target_precision))
        members = [oof[s][variant][done] for s in seeds]
        rows.append(
            report(f"{name}@ensemble", y, ensemble.mean_scores(members), args.target_precision)
        )
    view_oof = {n: oof[seeds[0]][f"ft_xgb_v{n}"] for n in view_sets}
    # The cascade: every crop gets the 1-view score; those within `margin` of the 1-view
    # threshold are scored again from 8 views. Reported with the share of crops re-scored.
    one, eight = view_oof[1][done], view_oof.get(8, view_oof[1])[done]
    t1 = threshold_for_precision(y, one, args.target_precision)
    for margin in CASCADE_MARGINS if 8 in view_oof and len(seeds) == 1 else ():
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
                "finetune_seeds": seeds,
                "cache": str(recipe_dir),
                "oof": {
                    "labels": labels.tolist(),
                    "frozen": frozen_oof.tolist(),
                    **{
                        variant if len(seeds) == 1 else f"{variant}@seed{s}": oof[s][
                            variant
                        ].tolist()
                        for s in seeds
                        for variant in variants
                    },
                },
            }
        )
    )
    print(f"total {time.perf_counter() - started:.0f}s; scores in {args.out}")


if __name__ == "__main__":
    main()
