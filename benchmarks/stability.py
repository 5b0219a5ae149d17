"""Verdict stability: does a tile keep its verdict when it is turned, flipped or seen at another
ground resolution?

    .venv/bin/python benchmarks/stability.py [--address 127.0.0.1:18500] [--classifier FILE]
        [--threshold T]

Each whole tile the project has (the four shared tiles; the bench mosaic's tiles are crops of
the same images) under its 8 flips/rotations and resized by 0.90, 0.95, 1.00, 1.05 and 1.10 — 40
variants a tile — through the detection path the pipeline runs (SLIC in the configured mode, crops,
the served backbone over the TF Serving API, the classifier, the > K rule). Reports per tile how many
variants agree with its label (positive* tiles show mining) and the spread of its
positive-superpixel count; writes artifacts/stability.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import numpy as np
from PIL import Image

from amberscan.common.data import shared_data_dir
from amberscan.common.served_features import client_for
from amberscan.common.settings import load_settings, replace
from amberscan.model.classifier import Classifier, verdict
from amberscan.vision.crops import crops_for
from amberscan.vision.imageio import read_image
from amberscan.vision.segment import segment

SCALES = (0.90, 0.95, 1.00, 1.05, 1.10)
SOURCES = ("positive1", "positive2", "negative1", "negative2")


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    view = np.rot90(image, k % 4)
    return np.ascontiguousarray(view[:, ::-1] if k >= 4 else view)


def resized(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    h, w = image.shape[:2]
    size = (round(w * scale), round(h * scale))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


async def measure(args: argparse.Namespace) -> dict[str, object]:
    settings = load_settings()
    if args.address:
        settings = replace(settings, model_server={"address": args.address})
    classifier = Classifier.load(args.classifier or settings.classifier.path)
    tiles = shared_data_dir(settings.data, "tiles")
    k = settings.aggregator.min_positive_superpixels
    threshold = classifier.threshold if args.threshold is None else args.threshold
    report: dict[str, object] = {
        "classifier": classifier.version,
        "backbone": classifier.backbone,
        "threshold": threshold,
        "segmentation_mode": settings.segmenter.mode,
        "tiles": {},
    }
    async with client_for(settings) as client:
        crop_size = (await client.wait_until_serving(120)).crop_size
        for name in SOURCES:
            image = read_image(tiles / f"{name}.png")
            mining = name.startswith("positive")
            positives, agree, variant_scores = [], 0, []
            for view in range(8):
                for scale in SCALES:
                    variant = resized(dihedral(image, view), scale)
                    segmentation = segment(variant, mode=settings.segmenter.mode)
                    scores = classifier.score(
                        await client.predict(crops_for(variant, segmentation, crop_size))
                    )
                    flagged, count = verdict(scores, threshold, k)
                    positives.append(count)
                    variant_scores.append([round(float(v), 5) for v in scores])
                    agree += flagged == mining
            row = {
                "label": "mining" if mining else "no mining",
                "variants": len(positives),
                "agree": agree,
                "agree_share": agree / len(positives),
                "positives_min": min(positives),
                "positives_median": float(np.median(positives)),
                "positives_max": max(positives),
                # Per variant (view-major, then scale), so another threshold can be read off.
                "scores": variant_scores,
            }
            report["tiles"][name] = row  # type: ignore[index]
            print(
                f"{name:<10} {row['label']:<10} {agree:>2}/{len(positives)} variants right "
                f"({row['agree_share']:.0%}); positive superpixels {min(positives)}–"
                f"{max(positives)} (median {row['positives_median']:g}, rule: > {k})",
                flush=True,
            )
    shares = [row["agree_share"] for row in report["tiles"].values()]  # type: ignore[attr-defined]
    report["worst_tile_agree_share"] = min(shares)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="model server (default: AMBERSCAN_MODEL_SERVER)")
    parser.add_argument("--classifier", type=Path, help="default: AMBERSCAN_CLASSIFIER_PATH")
    parser.add_argument(
        "--threshold", type=float, help="score threshold (default: the classifier's own)"
    )
    parser.add_argument("--out", type=Path, default=Path("artifacts/stability.json"))
    args = parser.parse_args()
    report = asyncio.run(measure(args))
    print(f"worst tile: {report['worst_tile_agree_share']:.0%} of its variants right")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
