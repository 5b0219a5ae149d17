"""`amberscan train`: a candidate superpixel classifier, from labelled crops through the model
server.

The candidate is stored in the model registry and served by nothing until `amberscan models
promote` passes it through the gate. Crops of the gate share (`model.promotion.in_gate_share`,
about one site in five) are never trained on, so the gate judges every candidate on tiles it
has not seen. The threshold is chosen on the out-of-fold scores of the calibration share
(`model.promotion.in_calibration_share`), which the fine-tune leaves out: a threshold chosen on
crops the backbone has seen is too low for tiles it has not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub,
        "train",
        "train a candidate classifier on labelled crops (serves nothing yet)",
        run,
        description="Train a candidate classifier on labelled crops, through the model server's "
        "backbone, and store it in the model registry; nothing serves it until `amberscan "
        "models promote` passes it through the gate.",
        examples=[
            "amberscan train --data ../shared/data/texty-amber/superpixels",
            "amberscan train --data ../shared/data/texty-amber/superpixels --from-reviews --json",
        ],
    )
    options.add_labelled_data(p, options.LABELLED_HELP)
    p.add_argument("--out", type=Path, help="default: AMBERSCAN_CLASSIFIER_PATH")
    p.add_argument(
        "--target-precision",
        type=float,
        default=0.95,
        help="the threshold is the lowest with at least this precision (default 0.95)",
    )
    p.add_argument(
        "--threshold-from",
        choices=("calibration", "cv"),
        default="calibration",
        help="choose the threshold on the out-of-fold scores of the calibration share, crops a "
        "fine-tuned backbone was not trained on (default), or of every crop (honest only for a "
        "backbone that was never fine-tuned on them)",
    )
    p.add_argument(
        "--threshold", type=float, help="use this decision threshold instead of a chosen one"
    )
    p.add_argument(
        "--folds", type=int, default=5, help="cross-validation folds, split by site (default 5)"
    )
    options.add_seed(p)
    options.add_model_server(p, "default: AMBERSCAN_MODEL_SERVER")
    p.add_argument("--backbone", help="model name on the server (default: AMBERSCAN_BACKBONE_NAME)")
    p.add_argument(
        "--no-registry",
        action="store_true",
        help="do not store the candidate in the model registry (only --out)",
    )
    options.add_json(p, "print the CV metrics as one JSON object")
    p.add_argument(
        "--from-reviews",
        action="store_true",
        help="add the superpixels people labelled in the web app (exported as crops to a temp dir)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    import dataclasses
    from datetime import UTC, datetime

    import numpy as np

    import amberscan
    from amberscan.cli.evaluate import metrics_table
    from amberscan.cli.features import labelled_features
    from amberscan.common.registry import publish
    from amberscan.model.classifier import evaluate_scores, train_classifier
    from amberscan.model.dataset import LabelledCrop, fingerprint, list_labelled
    from amberscan.model.promotion import (
        CALIBRATION_SHARE_RULE,
        GATE_SHARE_RULE,
        judge,
        split_shares,
    )

    crops = list_labelled(args.data)
    reviewed: list[LabelledCrop] = []
    if args.from_reviews:
        import tempfile

        from amberscan.web.training import PROVENANCE, provenance, reviewed_crops

        review_dir = Path(tempfile.mkdtemp(prefix="amberscan-reviews-"))
        reviewed = asyncio.run(reviewed_crops(settings, review_dir))
        print(
            f"added {len(reviewed)} reviewed crops from {review_dir} "
            f"(by source: {provenance(reviewed)}; each crop's in {review_dir / PROVENANCE})",
            file=sys.stderr,
        )
        crops += reviewed
    shares = split_shares([c.tile_id for c in crops])
    held = shares.gate
    keep = sorted(shares.fit + shares.calibration)
    print(
        f"holding out the gate share: {len(held)} crops of "
        f"{len({crops[i].tile_id for i in held})} tiles ({GATE_SHARE_RULE})",
        file=sys.stderr,
    )
    out = args.out or settings.classifier.path

    backbone, features = asyncio.run(
        labelled_features(
            settings, crops, address=args.model_server, name=args.backbone, progress="features"
        )
    )
    gate_crops = [crops[i] for i in held]
    x, gate_x = features[keep], features[held]
    calibration = set(shares.calibration)
    calibrate_on = [i for i, k in enumerate(keep) if k in calibration]
    crops = [crops[i] for i in keep]
    labels = np.array([c.label for c in crops])
    if args.threshold is None and args.threshold_from == "calibration":
        print(
            f"choosing the threshold on the calibration share: {len(calibrate_on)} crops "
            f"({int(labels[calibrate_on].sum())} mining) of "
            f"{len({crops[i].tile_id for i in calibrate_on})} tiles ({CALIBRATION_SHARE_RULE})",
            file=sys.stderr,
        )
    elif args.threshold is None:
        print(
            "note: the threshold is chosen on out-of-fold scores of every crop; with a backbone "
            "fine-tuned on them it is too low for unseen tiles (the promotion gate judges the "
            "candidate's precision on the gate share either way)",
            file=sys.stderr,
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
        calibrate_on=calibrate_on if args.threshold_from == "calibration" else None,
        folds=args.folds,
        seed=args.seed,
        metadata={
            "backbone": backbone.label,
            "feature_dim": backbone.feature_dim,
            "data": str(args.data),
            "data_fingerprint": fingerprint(crops),
            "reviewed_crops": len([c for c in reviewed if c in crops]),
            **(
                {"review_sources": _sources([c for c in reviewed if c in crops])}
                if args.from_reviews
                else {}
            ),
            "holdout": GATE_SHARE_RULE,
            "calibration_share": CALIBRATION_SHARE_RULE,
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "code_version": amberscan.__version__,
        },
    )
    if gate_crops:
        judged = judge(
            [c.label for c in gate_crops],
            [c.tile_id for c in gate_crops],
            classifier.version,
            classifier.score(gate_x),
            classifier.threshold,
        )
        # What to expect on tiles it has not seen: honest as far as the backbone has not seen
        # the gate share either (`make model` fine-tunes with it held out).
        classifier.metadata["gate_share"] = {
            "crops": len(gate_crops),
            "mining_crops": sum(c.label for c in gate_crops),
            "tiles": len({c.tile_id for c in gate_crops}),
            "precision": dataclasses.asdict(judged.precision),
            "recall": dataclasses.asdict(judged.recall),
        }
    classifier.save(out)
    where = str(out)
    if not args.no_registry:
        key = asyncio.run(publish(settings.s3, classifier))
        where += f" and s3://{settings.s3.bucket}/{key} as a candidate"
    report = {
        "version": classifier.version,
        "backbone": backbone.label,
        "feature_dim": backbone.feature_dim,
        "crops": len(crops),
        **cv.as_dict(),
        "f1_at_0.5": evaluate_scores(labels, oof, 0.5).f1,
        "gate_share": classifier.metadata.get("gate_share"),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(metrics_table("out-of-fold CV", report))
        if "calibration" in classifier.metadata:
            print(
                f"threshold {classifier.threshold:.4f} chosen on the calibration share: "
                f"{calibration_text(classifier.metadata['calibration'])}"
            )
        if gate_crops:
            share = classifier.metadata["gate_share"]
            print(f"gate share (held out): {expected_text(share)}")
        print(f"saved classifier {classifier.version} to {where}")
        if not args.no_registry:
            print(
                f"nothing served changed: `amberscan models promote {classifier.version}` "
                "compares it with the current model on the gate share, and serves it if it passes"
            )
    return 0


def _sources(crops: list[Any]) -> dict[str, int]:
    from amberscan.web.training import provenance

    return provenance(crops)


def expected_text(share: dict[str, Any]) -> str:
    """A model's figures on the held-out gate share, with their intervals, as one line."""
    p, r = share["precision"], share["recall"]
    return (
        f"precision {p['value']:.3f} ({p['low']:.2f}-{p['high']:.2f}), recall {r['value']:.3f} "
        f"({r['low']:.2f}-{r['high']:.2f}), 95 % site-bootstrap intervals over "
        f"{share['crops']} crops ({share['mining_crops']} mining) of {share['tiles']} tiles"
    )


def calibration_text(share: dict[str, Any]) -> str:
    """What a classifier's threshold gave on the calibration share it was chosen on."""
    return (
        f"out-of-fold precision {share['precision']:.3f}, recall "
        f"{share['recall']:.3f} on {share['crops']} crops ({share['mining_crops']} mining) of "
        f"{share['tiles']} tiles"
    )
