"""`amberscan detect-tile`: the superpixels of one tile image, scored, and the tile's verdict."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub,
        "detect-tile",
        "score the superpixels of one tile image",
        run,
        description="Segment one tile image, score its superpixels (features from the model "
        "server) and give the tile's verdict.",
        examples=[
            "amberscan detect-tile ../shared/data/texty-amber/tiles/positive1.png "
            "--json --debug-png out.png",
        ],
    )
    p.add_argument("image", type=Path, help="the tile image (PNG, JPEG or GeoTIFF)")
    p.add_argument("--model", type=Path, help="default: AMBERSCAN_CLASSIFIER_PATH")
    p.add_argument("--min-positives", type=int, help="flag when more than K are positive")
    p.add_argument(
        "--segmentation",
        choices=["reference", "fast"],
        default="reference",
        help="SLIC as the 2018 method ran it (default), or the pipeline's faster one",
    )
    p.add_argument(
        "--debug-png", type=Path, help="write the tile with superpixels coloured by score"
    )
    options.add_model_server(p)
    options.add_json(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.cli.features import served_features
    from amberscan.model.classifier import Classifier
    from amberscan.model.detect import tile_result
    from amberscan.vision.crops import crops_for
    from amberscan.vision.imageio import encode_png, read_image
    from amberscan.vision.overlay import score_overlay
    from amberscan.vision.segment import segment

    classifier = Classifier.load(args.model or settings.classifier.path)
    image = read_image(args.image)
    segmentation = segment(image, mode=args.segmentation)
    _, features = asyncio.run(
        served_features(
            settings,
            lambda size: crops_for(image, segmentation, size),
            len(segmentation.superpixels),
            address=args.model_server,
            classifier=classifier,
        )
    )
    scores = classifier.score(features)
    k = (
        settings.aggregator.min_positive_superpixels
        if args.min_positives is None
        else args.min_positives
    )
    result = tile_result(segmentation, scores, classifier.threshold, k)
    if args.debug_png:
        overlay = score_overlay(image, segmentation, scores, classifier.threshold)
        args.debug_png.write_bytes(encode_png(overlay))
    report = {"image": str(args.image), "model": classifier.version, **result.as_dict()}
    if args.json:
        print(json.dumps(report))
        return 0
    verdict = "FLAGGED (mining)" if result.flagged else "not flagged"
    print(
        f"{args.image}: {verdict}: {result.positives} of {len(result.superpixels)} superpixels "
        f"positive (rule: more than {k}; threshold {classifier.threshold:.3f})"
    )
    for sp in result.superpixels:
        mark = "+" if sp.score >= classifier.threshold else " "
        print(
            f"  {mark} #{sp.index:>2} score {sp.score:.3f} area {sp.area_px:>7} px bbox {sp.bbox}"
        )
    return 0
