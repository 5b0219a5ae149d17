"""The alerts' `high` tier, measured: is "score ≥ AMBERSCAN_ALERT_HIGH_SCORE" more precise than the
model's threshold on crops no build trained on? (issue 30)

    .venv/bin/python benchmarks/alert_tier.py [--classifier models/classifier.json] \
        [--model-server 127.0.0.1:18500] [--high-score 0.9]

Crop level: the served classifier build scores the gate share of the labelled crops
(`model/promotion.py`: whole sites that neither the classifier nor the fine-tuned backbone
trained on), with features from the model server as the pipeline gets them. Two crop rules side by
side: "score ≥ the model's threshold" (what makes a superpixel positive, so the `flagged` level) and
"score ≥ the high score" (the `high` level's rule on a tile's highest superpixel score). For each:
precision and recall with 95 % site-bootstrap intervals, and the (high − threshold) difference
with the paired site bootstrap, as the promotion gate computes it; and the share of the threshold
rule's true mining crops that the high rule keeps.

Tile level: the shared whole tiles (`tiles/`, two with mining, two without) through the tile rule
(`detect-tile`: flagged when more than AMBERSCAN_MIN_POSITIVE_SUPERPIXELS superpixels are positive;
`high` when also its highest score reaches the high score). Four tiles give no interval: a sanity
check, not a measurement. They carry no place, so whether a build saw their superpixels is unknown.

Writes artifacts/alert_tier.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from amberscan.cli.features import labelled_features, served_features
from amberscan.common.data import shared_data_dir
from amberscan.common.settings import load_settings
from amberscan.model.classifier import Classifier
from amberscan.model.dataset import list_labelled
from amberscan.model.detect import tile_result
from amberscan.model.promotion import GATE_SHARE_RULE, gate, in_gate_share
from amberscan.vision.crops import crops_for
from amberscan.vision.imageio import read_image
from amberscan.vision.segment import segment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    settings = load_settings()
    parser.add_argument("--classifier", type=Path, default=settings.classifier.path)
    parser.add_argument("--model-server", help="default: AMBERSCAN_MODEL_SERVER")
    parser.add_argument("--data", type=Path, help="default: the shared texty-amber data")
    parser.add_argument("--high-score", type=float, default=settings.alerts.high_score)
    parser.add_argument("--out", type=Path, default=Path("artifacts/alert_tier.json"))
    args = parser.parse_args()
    classifier = Classifier.load(args.classifier)
    threshold, high = float(classifier.threshold), float(args.high_score)
    if classifier.metadata.get("holdout") != GATE_SHARE_RULE:
        print(
            f"warning: classifier {classifier.version} was not trained with the gate share held "
            "out: these figures are in-sample, so optimistic",
            file=sys.stderr,
        )
    root = args.data or shared_data_dir(settings.data, "superpixels").parent
    crops = [c for c in list_labelled(root / "superpixels") if in_gate_share(c.tile_id)]
    labels = np.array([c.label for c in crops])
    tiles = [c.tile_id for c in crops]
    _, features = asyncio.run(
        labelled_features(settings, crops, address=args.model_server, classifier=classifier)
    )
    scores = classifier.score(features)
    decision = gate(labels, tiles, ("threshold", scores, threshold), ("high", scores, high))
    rule, tier = decision.current, decision.candidate
    kept = tier.true_positives / rule.true_positives if rule.true_positives else 0.0
    flagged = int((scores >= threshold).sum())
    print(
        f"classifier {classifier.version}; gate share: {len(crops)} crops "
        f"({int(labels.sum())} mining) of {decision.tiles} sites; 95 % site-bootstrap intervals"
    )
    for name, row in (("score ≥ threshold", rule), ("score ≥ high score", tier)):
        print(
            f"  {name:20s} {row.threshold:.4f}  precision {row.precision.show()}  "
            f"recall {row.recall.show()}  (tp {row.true_positives}, fp {row.false_positives}, "
            f"fn {row.false_negatives})"
        )
    print(
        f"  high − threshold (paired): precision {decision.precision_change.show()}, "
        f"recall {decision.recall_change.show()}"
    )
    print(
        f"  the high rule keeps {tier.true_positives} of the threshold rule's "
        f"{rule.true_positives} true mining crops ({kept:.3f}) and "
        f"{int((scores >= high).sum())} of its {flagged} positive crops"
    )
    false_scores = sorted(float(s) for s in scores[(scores >= threshold) & (labels == 0)])
    print(
        "  the threshold rule's false positives score "
        + ", ".join(f"{s:.3f}" for s in false_scores)
    )
    beyond = decision.precision_change.low > 0
    print(
        f"  precision higher beyond the interval: {'yes' if beyond else 'no'} "
        f"(the paired interval's lower end is {decision.precision_change.low:+.3f})"
    )

    whole = []
    k = settings.aggregator.min_positive_superpixels
    for path in sorted((root / "tiles").glob("*.png")):
        image = read_image(path)
        segmentation = segment(image, mode="reference")
        _, tile_features = asyncio.run(
            served_features(
                settings,
                lambda size, image=image, segmentation=segmentation: crops_for(
                    image, segmentation, size
                ),
                len(segmentation.superpixels),
                address=args.model_server,
                classifier=classifier,
            )
        )
        tile_scores = classifier.score(tile_features)
        result = tile_result(segmentation, tile_scores, threshold, k)
        top = float(tile_scores.max())
        whole.append(
            {
                "tile": path.name,
                "mining": path.name.startswith("positive"),
                "flagged": bool(result.flagged),
                "high": bool(result.flagged and top >= high),
                "positives": int(result.positives),
                "highest_score": top,
            }
        )
        print(
            f"  tile {path.name}: {'flagged' if result.flagged else 'not flagged'} "
            f"({result.positives} positive), highest score {top:.3f}, "
            f"{'high' if whole[-1]['high'] else 'not high'}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "classifier": classifier.version,
                "threshold": threshold,
                "high_score": high,
                "gate_share": {
                    "crops": len(crops),
                    "mining_crops": int(labels.sum()),
                    "sites": decision.tiles,
                    "threshold_rule": dataclasses.asdict(rule),
                    "high_rule": dataclasses.asdict(tier),
                    "precision_change": dataclasses.asdict(decision.precision_change),
                    "recall_change": dataclasses.asdict(decision.recall_change),
                    "high_keeps_true_mining": kept,
                    "precision_higher_beyond_interval": beyond,
                    "false_positive_scores": false_scores,
                },
                "whole_tiles": whole,
                "min_positive_superpixels": k,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
