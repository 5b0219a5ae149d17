"""`amberscan evaluate`: a classifier's metrics on a folder of labelled crops."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub,
        "evaluate",
        "precision, recall, F1, ROC-AUC, PR-AUC of a classifier",
        run,
        description="A classifier's precision, recall, F1, ROC-AUC and PR-AUC on a folder of "
        "labelled crops, their features from the model server.",
        examples=[
            "amberscan evaluate --model models/classifier.json "
            "--data ../shared/data/texty-amber/superpixels --json",
        ],
    )
    p.add_argument(
        "--model", type=Path, required=True, help="the classifier file (models/classifier.json)"
    )
    options.add_labelled_data(p)
    options.add_model_server(p)
    options.add_json(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    import numpy as np

    from amberscan.cli.features import labelled_features
    from amberscan.model.classifier import Classifier, evaluate_scores
    from amberscan.model.dataset import list_labelled

    classifier = Classifier.load(args.model)
    crops = list_labelled(args.data)
    progress = None if args.json else "features"
    _, x = asyncio.run(
        labelled_features(
            settings, crops, address=args.model_server, classifier=classifier, progress=progress
        )
    )
    metrics = evaluate_scores(
        np.array([c.label for c in crops]), classifier.score(x), classifier.threshold
    )
    report = {"model": classifier.version, **metrics.as_dict()}
    if args.json:
        print(json.dumps(report))
    else:
        print(metrics_table(f"{classifier.version} on {args.data}", report))
    return 0


def metrics_table(title: str, report: dict[str, Any]) -> str:
    """The metrics of `report` (as `Metrics.as_dict` gives them) as a few lines of text."""
    (tn, fp), (fn, tp) = report["confusion"]
    return "\n".join(
        [
            title,
            f"  precision {report['precision']:.3f}  recall {report['recall']:.3f}  "
            f"F1 {report['f1']:.3f}  ROC-AUC {report['roc_auc']:.3f}  PR-AUC {report['pr_auc']:.3f}",
            f"  threshold {report['threshold']:.4f}  positives {report['n_positive']}  "
            f"negatives {report['n_negative']}",
            f"  confusion: TP {tp}  FP {fp}  FN {fn}  TN {tn}",
        ]
    )
