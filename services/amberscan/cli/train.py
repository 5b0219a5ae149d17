"""`amberscan train`: the superpixel classifier, from labelled crops through the model server."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(sub, "train", "train the superpixel classifier on labelled crops", run)
    options.add_labelled_data(p, options.LABELLED_HELP)
    p.add_argument("--out", type=Path, help="default: AMBERSCAN_CLASSIFIER_PATH")
    p.add_argument("--target-precision", type=float, default=0.95)
    p.add_argument(
        "--threshold",
        type=float,
        help="use this decision threshold instead of the one CV picks (e.g. from a nested CV)",
    )
    p.add_argument("--folds", type=int, default=5)
    options.add_seed(p)
    options.add_model_server(p, "default: AMBERSCAN_MODEL_SERVER")
    p.add_argument("--backbone", help="model name on the server (default: AMBERSCAN_BACKBONE_NAME)")
    p.add_argument(
        "--no-registry", action="store_true", help="do not publish to the model registry"
    )
    options.add_json(p, "print the CV metrics as one JSON object")
    p.add_argument(
        "--from-reviews",
        action="store_true",
        help="add the superpixels people labelled in the web app (exported as crops to a temp dir)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    import numpy as np

    from amberscan.cli.evaluate import metrics_table
    from amberscan.cli.features import labelled_features
    from amberscan.common.registry import publish
    from amberscan.model.classifier import evaluate_scores, train_classifier
    from amberscan.model.dataset import fingerprint, list_labelled

    crops = list_labelled(args.data)
    if args.from_reviews:
        import tempfile

        from amberscan.web.training import reviewed_crops

        review_dir = Path(tempfile.mkdtemp(prefix="amberscan-reviews-"))
        reviewed = asyncio.run(reviewed_crops(settings, review_dir))
        print(f"added {len(reviewed)} reviewed crops from {review_dir}", file=sys.stderr)
        crops += reviewed
    labels = np.array([c.label for c in crops])
    out = args.out or settings.classifier_path

    backbone, x = asyncio.run(
        labelled_features(
            settings, crops, address=args.model_server, name=args.backbone, progress="features"
        )
    )
    print(
        f"training on {len(crops)} crops ({int(labels.sum())} mining) from "
        f"{len({c.tile_id for c in crops})} tiles, {args.folds}-fold CV grouped by tile",
        file=sys.stderr,
    )
    classifier, cv, oof = train_classifier(
        x,
        labels,
        [c.tile_id for c in crops],
        target_precision=args.target_precision,
        threshold=args.threshold,
        folds=args.folds,
        seed=args.seed,
        metadata={
            "backbone": backbone.label,
            "feature_dim": backbone.feature_dim,
            "data": str(args.data),
            "data_fingerprint": fingerprint(crops),
        },
    )
    classifier.save(out)
    where = str(out)
    if not args.no_registry:
        key = asyncio.run(publish(settings, classifier))
        where += f" and s3://{settings.s3_bucket}/{key}"
    report = {
        "version": classifier.version,
        "backbone": backbone.label,
        "feature_dim": backbone.feature_dim,
        "crops": len(crops),
        **cv.as_dict(),
        "f1_at_0.5": evaluate_scores(labels, oof, 0.5).f1,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(metrics_table("out-of-fold CV", report))
        print(f"saved classifier {classifier.version} to {where}")
    return 0
