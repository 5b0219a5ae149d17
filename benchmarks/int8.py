"""INT8 for the served backbone: what post-training quantization would buy and what it moves.

    .venv/bin/python benchmarks/int8.py [--model-dir models/serving] [--classifier models/classifier.json]
        [--data ../shared/data/texty-amber/superpixels] [--tiles ../shared/data/texty-amber/tiles]

The served export holds its own INT8 backbone (`export-backbone --int8`, calibrated on crops
spread over every tile; the CPU model server serves it). This bench quantizes the export's float
backbone again, the same way (`model/quantize.py`) but on half of the tiles, so that the other
half is unseen by the calibration, and measures in one run on this CPU:

1. quantizes the export's bare OpenVINO backbone with NNCF (calibration: the crops of half of the
   data set's tiles, split by tile as its README says);
2. times both (uint8 crops in, the same pre-processing compiled in as the model server's),
   batches of 32, alternating, CPU seconds per crop and crops per second;
3. compares features on the other half's crops (relative L2 error, cosine) and what the served
   classifier makes of them (score changes, verdicts crossing the threshold), the verdicts of
   the four shared tiles (reference SLIC, more than 2 positive superpixels), and a tile-grouped
   CV of XGBoost trained on each arm's own features (paired, both optimistic).

Quality on unseen tiles is the nested CV's (`benchmarks/finetune_cv.py`, row ft-xgb-v1-int8).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from amberscan.model.classifier import (
    Classifier,
    cross_validate,
    evaluate_scores,
    threshold_for_precision,
    tile_groups,
)
from amberscan.model.dataset import list_labelled
from amberscan.model.quantize import quantize_backbone
from amberscan.modelserver.runtimes import (
    METADATA_FILE,
    OPENVINO_DIR,
    OPENVINO_MODEL,
    compile_config,
    compile_for_uint8,
    versions,
)
from amberscan.vision.crops import CROP_SIZE, crops_for
from amberscan.vision.imageio import read_image
from amberscan.vision.segment import segment


def features(model: Any, crops: np.ndarray, batch: int = 32) -> np.ndarray:
    request = model.create_infer_request()
    out = [request.infer({0: crops[i : i + batch]})[0].copy() for i in range(0, len(crops), batch)]
    return np.concatenate(out).astype(np.float32)


def cpu_per_crop(model: Any, crops: np.ndarray, repeat: int) -> tuple[float, float]:
    """Median CPU seconds and wall seconds per crop over `repeat` passes of `crops`."""
    cpu, wall = [], []
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        features(model, crops)
        cpu.append((time.process_time() - c0) / len(crops))
        wall.append((time.perf_counter() - w0) / len(crops))
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/serving"))
    parser.add_argument("--name", default="backbone")
    parser.add_argument("--classifier", type=Path, default=Path("models/classifier.json"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/texty-amber/superpixels"))
    parser.add_argument("--tiles", type=Path, default=Path("../shared/data/texty-amber/tiles"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("artifacts/int8.json"))
    args = parser.parse_args()

    import openvino as ov

    version = versions(args.model_dir, args.name)[-1]
    path = args.model_dir / args.name / str(version)
    exported = json.loads((path / METADATA_FILE).read_text())
    meta = exported["openvino"]
    # The size the export's signature takes crops at (the 2018 size for exports before it said so).
    size = int(exported.get("crop_size", CROP_SIZE))
    core = ov.Core()
    bare = core.read_model(path / OPENVINO_DIR / OPENVINO_MODEL)

    crops = list_labelled(args.data)
    tiles = sorted({c.tile_id for c in crops})
    calibration_tiles = set(tiles[::2])
    # The data set's crops come in their own sizes; here Pillow's bilinear resizes them to the
    # crop size once, the same input for both runtimes.
    images = np.stack(
        [
            np.asarray(
                Image.fromarray(read_image(c.path)).resize((size, size), Image.Resampling.BILINEAR)
            )
            for c in crops
        ]
    )
    labels = np.array([c.label for c in crops])
    held_out = np.array([c.tile_id not in calibration_tiles for c in crops])
    calibration = images[~held_out]
    print(
        f"backbone {args.name}/{version}; {len(crops)} crops of {len(tiles)} tiles: "
        f"{len(calibration)} calibrate (half of the tiles), {int(held_out.sum())} held out"
    )
    started = time.perf_counter()
    quantized = quantize_backbone(bare, calibration, meta, sample=len(calibration))
    print(f"quantized in {time.perf_counter() - started:.0f} s")
    config = compile_config()
    models = {
        "f32": compile_for_uint8(core, bare, meta, config),
        "int8": compile_for_uint8(core, quantized, meta, config),
    }

    timing_crops = images[:256]
    for model in models.values():
        features(model, timing_crops[:32])  # warm-up
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    for _ in range(args.repeat):
        for name, model in models.items():
            runs[name].append(cpu_per_crop(model, timing_crops, 1))
    timing = {
        name: {
            "cpu_s_per_crop": statistics.median(c for c, _ in r),
            "crops_per_s": 1 / statistics.median(w for _, w in r),
        }
        for name, r in runs.items()
    }

    held = images[held_out]
    f32 = features(models["f32"], held)
    int8 = features(models["int8"], held)
    rel = np.linalg.norm(int8 - f32, axis=1) / np.maximum(np.linalg.norm(f32, axis=1), 1e-12)
    cos = (f32 * int8).sum(axis=1) / np.maximum(
        np.linalg.norm(f32, axis=1) * np.linalg.norm(int8, axis=1), 1e-12
    )
    classifier = Classifier.load(args.classifier)
    s32, s8 = classifier.score(f32), classifier.score(int8)
    crossed = int(((s32 >= classifier.threshold) != (s8 >= classifier.threshold)).sum())

    # Tile-grouped 5-fold CV of XGBoost on each arm's features of all crops, each arm trained on
    # its own features: paired, and optimistic alike (the backbone was fine-tuned on these crops).
    groups = tile_groups([c.tile_id for c in crops])
    cv = {}
    for name, model in models.items():
        oof = cross_validate(features(model, images), labels, groups)
        threshold = threshold_for_precision(labels, oof, 0.95)
        metrics = evaluate_scores(labels, oof, threshold)
        cv[name] = {"roc_auc": metrics.roc_auc, "recall_at_p95": metrics.recall}

    verdicts = {}
    for tile in sorted(args.tiles.glob("*.png")):
        image = read_image(tile)
        tile_crops = crops_for(image, segment(image), size)
        counts = [
            int((classifier.score(features(m, tile_crops)) >= classifier.threshold).sum())
            for m in models.values()
        ]
        verdicts[tile.stem] = {"positives_f32": counts[0], "positives_int8": counts[1]}

    result = {
        "backbone": f"{args.name}/{version}",
        "classifier": classifier.version,
        "timing": timing,
        "speed_up_cpu": timing["f32"]["cpu_s_per_crop"] / timing["int8"]["cpu_s_per_crop"],
        "held_out_crops": int(held_out.sum()),
        "feature_relative_l2": {"median": float(np.median(rel)), "max": float(rel.max())},
        "feature_cosine": {"median": float(np.median(cos)), "min": float(cos.min())},
        "score_change": {
            "median": float(np.median(np.abs(s8 - s32))),
            "max": float(np.abs(s8 - s32).max()),
        },
        "verdicts_crossing_threshold": crossed,
        "mining_held_out": int(labels[held_out].sum()),
        "tile_grouped_cv": cv,
        "tiles": verdicts,
    }
    print(f"{'':<6} {'CPU ms/crop':>12} {'crops/s':>9}")
    for name, t in timing.items():
        print(f"{name:<6} {t['cpu_s_per_crop'] * 1000:12.2f} {t['crops_per_s']:9.1f}")
    print(f"INT8 / f32 CPU: {result['speed_up_cpu']:.2f}x less")
    print(
        f"features on {result['held_out_crops']} held-out crops: relative L2 median "
        f"{np.median(rel):.4f} (max {rel.max():.4f}), cosine median {np.median(cos):.5f} "
        f"(min {cos.min():.5f})"
    )
    print(
        f"classifier {classifier.version} at {classifier.threshold:.4f}: score change median "
        f"{np.median(np.abs(s8 - s32)):.4f}, max {np.abs(s8 - s32).max():.4f}; "
        f"{crossed} of {len(s32)} crops cross the threshold"
    )
    for name, c in cv.items():
        print(
            f"tile-grouped CV, XGBoost on {name} features: ROC-AUC {c['roc_auc']:.4f}, recall "
            f"{c['recall_at_p95']:.3f} at precision 0.95 (optimistic: the backbone saw the crops)"
        )
    for name, v in verdicts.items():
        print(f"  {name:<10} positives f32 {v['positives_f32']:2d}  int8 {v['positives_int8']:2d}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
