"""`amberscan models`: the classifiers in the registry, and which one is served.

    amberscan models list                       every version: current, previous or candidate
    amberscan models show VERSION|current       one version's lineage and promotion history
    amberscan models promote VERSION            through the gate; refused when it is worse
    amberscan models promote VERSION --force --by NAME --reason "..."   recorded as forced
    amberscan models rollback                   the version served before the current one

`promote` scores the candidate and the current model on the gate share of the labelled crops
(and of the reviewed ones with `--from-reviews`): tiles no `amberscan train` candidate was
trained on. It prints both rows side by side and exits 1 when the gate refuses. Running
classifiers pick the new current model up within `AMBERSCAN_CLASSIFIER_REFRESH_S`, no restart.
Each subcommand takes `--json`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings
    from amberscan.model.classifier import Classifier


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub,
        "models",
        "list, show, promote or roll back classifiers",
        run,
        description="The classifiers in the model registry, and which one is served.",
        examples=[
            "amberscan models list",
            "amberscan models show current --json",
            "amberscan models promote xgb-1a2b3c4d5e6f",
            "amberscan models rollback --reason 'more false positives'",
        ],
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = options.action(
        actions,
        "list",
        "every version in the registry and its state",
        examples=["amberscan models list", "amberscan models list --json"],
    )
    options.add_json(listing)
    show = options.action(
        actions,
        "show",
        "one version's lineage and promotion history",
        examples=["amberscan models show current", "amberscan models show xgb-1a2b3c4d5e6f --json"],
    )
    show.add_argument("version", help="a registry version, or 'current'")
    options.add_json(show)
    promote = options.action(
        actions,
        "promote",
        "serve a candidate if it passes the gate against the current model",
        description="Serve a candidate if it passes the gate against the current model: both "
        "are scored on the gate share of the labelled crops, side by side; exit 1 when the gate "
        "refuses.",
        examples=[
            "amberscan models promote xgb-1a2b3c4d5e6f",
            "amberscan models promote xgb-1a2b3c4d5e6f --force --by ana --reason 'reviewed by hand'",
        ],
    )
    promote.add_argument("version", help="the candidate's registry version")
    promote.add_argument(
        "--data",
        type=Path,
        help="labelled crops (positive/, negative/) whose gate share is the evidence "
        "(default: the shared texty-amber superpixels)",
    )
    promote.add_argument(
        "--from-reviews",
        action="store_true",
        help="add the gate share of the superpixels people labelled in the web app",
    )
    promote.add_argument(
        "--force", action="store_true", help="serve it even if the gate refuses (recorded)"
    )
    promote.add_argument("--by", default="", help="who promotes (default: the login name)")
    promote.add_argument("--reason", default="", help="why, recorded in the history")
    options.add_model_server(promote)
    options.add_json(promote)
    rollback = options.action(
        actions,
        "rollback",
        "serve the version served before this one",
        examples=["amberscan models rollback --by ana --reason 'more false positives'"],
    )
    rollback.add_argument("--by", default="", help="who rolls back (default: the login name)")
    rollback.add_argument("--reason", default="", help="why, recorded in the history")
    options.add_json(rollback)


def run(args: argparse.Namespace, settings: Settings) -> int:
    action = {"list": _list, "show": _show, "promote": _promote, "rollback": _rollback}
    return int(asyncio.run(action[args.action](args, settings)))


def _who(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.common import registry

    listing = await registry.catalogue(settings.s3)
    if args.json:
        print(json.dumps(listing))
        return 0
    rows = listing["models"]
    if not rows:
        print("the model registry holds no classifier yet (make model, or amberscan train)")
        return 0
    print(f"{'version':18} {'state':9} {'threshold':>9}  {'backbone':28} trained")
    for row in rows:
        print(
            f"{row['version']:18} {row['state']:9} {row['threshold']:9.4f}  "
            f"{row.get('backbone', ''):28} {row.get('trained_at', '')}"
        )
    return 0


async def _show(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.cli.train import calibration_text, expected_text
    from amberscan.common import registry

    document = await registry.describe(settings.s3, args.version)
    if args.json:
        print(json.dumps(document))
        return 0
    print(f"classifier {document['version']} ({document['state']})")
    print(f"  threshold {document['threshold']:.4f}")
    for key in registry.LINEAGE:
        if key in document and key not in ("gate_share", "calibration"):
            print(f"  {key}: {document[key]}")
    if "calibration" in document:
        shown = calibration_text(document["calibration"])
        print(f"  threshold chosen on the calibration share: {shown}")
    if "gate_share" in document:
        print(f"  on the held-out gate share: {expected_text(document['gate_share'])}")
    cv = document["cv"]
    if cv:
        print(
            f"  training CV (out-of-fold, on crops its backbone may have been fine-tuned on): "
            f"precision {cv['precision']:.3f}, recall {cv['recall']:.3f}"
        )
    for move in document["history"]:
        forced = " (forced)" if move.get("forced") else ""
        print(f"  {move['action']}d{forced} by {move['by']} at {move['at']}")
    return 0


async def _promote(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.common import registry
    from amberscan.model.promotion import gate_table

    candidate = await registry.load_version(settings.s3, args.version)
    current_version = await registry.current_or_none(settings.s3)
    if current_version == candidate.version:
        print(f"classifier {candidate.version} is already current")
        return 0
    record: dict[str, Any] = {"reason": args.reason}
    if not current_version:
        record["gate"] = "none: no model was current"
        passed = True
        text = "no model is current yet: nothing to compare with, promoted as the first"
    else:
        current = await registry.load_version(settings.s3, current_version)
        decision = await gate_decision(args, settings, current, candidate)
        passed = decision.passed
        record["gate"] = decision.as_dict()
        text = gate_table(decision)
    if not passed and not args.force:
        if args.json:
            print(json.dumps({"promoted": False, "version": candidate.version, **record}))
        else:
            print(text)
            print(
                f"classifier {candidate.version} was not promoted; {current_version} stays "
                "current (--force --by NAME serves it anyway, recorded as forced)"
            )
        return 1
    record["forced"] = not passed
    entry = await registry.make_current(
        settings.s3, candidate, action="promote", by=_who(args), **record
    )
    if args.json:
        print(json.dumps({"promoted": True, **entry}))
    else:
        print(text)
        forced = " (forced past the gate)" if args.force and not passed else ""
        print(
            f"classifier {candidate.version} is current{forced}; running classifiers take it "
            f"within {settings.classifier.refresh_s:.0f}s"
        )
    return 0


async def gate_decision(
    args: argparse.Namespace, settings: Settings, current: Classifier, candidate: Classifier
) -> Any:
    """Score both classifiers on the gate share's crops and judge the candidate."""
    import tempfile

    import numpy as np

    from amberscan.cli.features import labelled_features
    from amberscan.common.data import shared_data_dir
    from amberscan.model.dataset import list_labelled
    from amberscan.model.promotion import GATE_SHARE_RULE, gate, in_gate_share

    crops = list_labelled(args.data or shared_data_dir(settings.data, "superpixels"))
    if args.from_reviews:
        from amberscan.web.training import reviewed_crops

        crops += await reviewed_crops(
            settings, Path(tempfile.mkdtemp(prefix="amberscan-gate-reviews-"))
        )
    crops = [c for c in crops if in_gate_share(c.tile_id)]
    for model in (current, candidate):
        if model.metadata.get("holdout") != GATE_SHARE_RULE:
            print(
                f"warning: classifier {model.version} was not trained with the gate share held "
                "out: its row is in-sample, so optimistic",
                file=sys.stderr,
            )
    # Each model scores the features of the backbone it was trained on (the server keeps the
    # two newest versions: a candidate for a new backbone is judged on that one).
    features: dict[str, Any] = {}
    scores = []
    for model in (current, candidate):
        if model.backbone not in features:
            _, features[model.backbone] = await labelled_features(
                settings, crops, address=args.model_server, classifier=model
            )
        scores.append(model.score(features[model.backbone]))
    return gate(
        np.array([c.label for c in crops]),
        [c.tile_id for c in crops],
        (current.version, scores[0], current.threshold),
        (candidate.version, scores[1], candidate.threshold),
    )


async def _rollback(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.common import registry

    target = await registry.rollback_target(settings.s3)
    classifier = await registry.load_version(settings.s3, target)
    entry = await registry.make_current(
        settings.s3,
        classifier,
        action="rollback",
        by=_who(args),
        reason=args.reason,
        forced=False,
        gate="none: a rollback serves a version that was served before",
    )
    if args.json:
        print(json.dumps(entry))
    else:
        print(f"classifier {target} is current again (was {entry['previous']})")
    return 0
