"""SLIC time per scan tile: the 2018 reference segmentation against the fast mode.

    python benchmarks/segmentation.py --tiles ../shared/data/texty-amber/tiles [--repeat 3]
        [--classifier models/classifier.json --model-server 127.0.0.1:18500 [--mosaic 128]]

Both modes run in the same process on the same real tiles; the figures are the median wall time
per tile, the speed-up (reference / fast), and the agreement of fast with reference: the mean
over reference superpixels of the best-matching fast superpixel's IoU, plain and area-weighted.
Then the step `vision/slic.py` replaced, before and after in the same run: scikit-image's own
`slic` against the compiled one on the same Lab input (median CPU time; labels must be equal).

With a classifier and a model server, it also measures the effect on detection: the labelled
crops were cut from reference superpixels, so the effect is measured on the whole tiles instead:
positive superpixels found in each mode, the IoU of the positive (damaged) area between modes, and
whether the tile's verdict (more than K positives) agrees; `--mosaic N` adds the N tiles of the
bench mosaic (crops of the same images in their flips and rotations) to that comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from amberscan.vision.imageio import read_image
from amberscan.vision.segment import Segmentation, best_match_iou, segment


def kernel_before_after(image: np.ndarray, repeat: int) -> tuple[float, float, bool]:
    """CPU seconds of scikit-image's slic and of vision/slic.py on the tile's 2018 Lab input."""
    from skimage.segmentation import slic

    from amberscan.vision.segment import slic_2018_input
    from amberscan.vision.slic import slic_labels

    lab, kwargs = slic_2018_input(image)
    slic_labels(lab, **kwargs)  # compile (or load the cache) outside the timing
    runs: dict[str, list[float]] = {"skimage": [], "compiled": []}
    results = {}
    for _ in range(repeat):
        for name, run in (
            ("skimage", lambda: slic(lab, sigma=0, convert2lab=False, start_label=0, **kwargs)),
            ("compiled", lambda: slic_labels(lab, **kwargs)),
        ):
            started = time.process_time()
            results[name] = run()
            runs[name].append(time.process_time() - started)
    equal = bool(np.array_equal(results["skimage"], results["compiled"]))
    return statistics.median(runs["skimage"]), statistics.median(runs["compiled"]), equal


def timed(image: np.ndarray, mode: str, repeat: int) -> tuple[float, Segmentation]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = segment(image, mode=mode)  # type: ignore[arg-type]
        times.append(time.perf_counter() - started)
    assert result is not None
    return statistics.median(times), result


async def _scores(address: str, name: str, image: np.ndarray, seg: Segmentation) -> np.ndarray:
    from amberscan.common.model_client import FeatureClient
    from amberscan.vision.crops import crops_for

    async with FeatureClient(address, name) as client:
        size = (await client.metadata()).crop_size
        return await client.predict(crops_for(image, seg, size))


def detection_effect(
    image: np.ndarray, ref: Segmentation, fast: Segmentation, args: argparse.Namespace
) -> tuple[int, int, float, bool, bool]:
    import asyncio

    from amberscan.model.classifier import Classifier

    classifier = Classifier.load(args.classifier)
    masks, counts = [], []
    for seg in (ref, fast):
        vectors = asyncio.run(_scores(args.model_server, args.name, image, seg))
        positive = np.flatnonzero(classifier.score(vectors) >= classifier.threshold)
        masks.append(np.isin(seg.labels, positive))
        counts.append(len(positive))
    union = (masks[0] | masks[1]).sum()
    iou = float((masks[0] & masks[1]).sum() / union) if union else 1.0
    k = args.min_positives
    return counts[0], counts[1], iou, counts[0] > k, counts[1] > k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=Path, required=True, help="folder of tile images")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--classifier", type=Path, help="also measure the effect on detection")
    parser.add_argument("--model-server", default="127.0.0.1:18500")
    parser.add_argument("--name", default="backbone")
    parser.add_argument("--min-positives", type=int, default=2)
    parser.add_argument("--mosaic", type=int, default=0, help="also compare N mosaic tiles")
    args = parser.parse_args()
    paths = sorted(p for p in args.tiles.iterdir() if p.suffix.lower() in {".png", ".jpg"})
    if not paths:
        raise SystemExit(f"no .png/.jpg tiles in {args.tiles}")
    print(
        f"{'tile':<12} {'size':>10} {'ref s':>7} {'fast s':>7} {'speed-up':>8} "
        f"{'n ref':>5} {'n fast':>6} {'IoU':>5} {'IoU(area)':>9}"
    )
    totals = [0.0, 0.0]
    ious, weighted = [], []
    for path in paths:
        image = read_image(path)
        ref_s, ref = timed(image, "reference", args.repeat)
        fast_s, fast = timed(image, "fast", args.repeat)
        iou = best_match_iou(ref, fast)
        areas = np.array([s.area_px for s in ref.superpixels], dtype=np.float64)
        ious.append(float(iou.mean()))
        weighted.append(float((iou * areas).sum() / areas.sum()))
        totals[0] += ref_s
        totals[1] += fast_s
        print(
            f"{path.stem:<12} {image.shape[1]:>4}x{image.shape[0]:<5} {ref_s:7.3f} {fast_s:7.3f} "
            f"{ref_s / fast_s:7.1f}x {len(ref.superpixels):5d} {len(fast.superpixels):6d} "
            f"{ious[-1]:5.3f} {weighted[-1]:9.3f}"
        )
    print(
        f"{'all':<12} {'':>10} {totals[0]:7.3f} {totals[1]:7.3f} {totals[0] / totals[1]:7.1f}x "
        f"{'':>5} {'':>6} {statistics.mean(ious):5.3f} {statistics.mean(weighted):9.3f}"
    )

    print("\nSLIC k-means and clean-up, CPU s per tile: scikit-image's slic / vision/slic.py")
    before_after = [kernel_before_after(read_image(path), args.repeat) for path in paths]
    for path, (before, after, equal) in zip(paths, before_after, strict=True):
        print(
            f"{path.stem:<12} {before:7.3f} {after:7.3f} {before / after:7.1f}x  "
            f"labels {'equal' if equal else 'DIFFER'}"
        )
    before_total = sum(b for b, _, _ in before_after)
    after_total = sum(a for _, a, _ in before_after)
    print(
        f"{'all':<12} {before_total:7.3f} {after_total:7.3f} {before_total / after_total:7.1f}x  "
        f"labels equal on {sum(e for _, _, e in before_after)} of {len(paths)} tiles"
    )

    if args.classifier:
        print(f"\neffect on detection ({args.classifier}, flagged when > {args.min_positives}):")
        print(f"{'tile':<24} {'pos ref':>7} {'pos fast':>8} {'damaged-area IoU':>16} verdicts")
        named = [(path.stem, read_image(path)) for path in paths]
        if args.mosaic:
            from amberscan.tiler.mosaic import Mosaic

            mosaic = Mosaic.of(args.mosaic, args.tiles)
            named += [(f"mosaic {t.quadkey}", mosaic.image(t)) for t in mosaic.tiles()]
        agree = 0
        for name, image in named:
            ref, fast = segment(image, mode="reference"), segment(image, mode="fast")
            n_ref, n_fast, iou, flag_ref, flag_fast = detection_effect(image, ref, fast, args)
            agree += flag_ref == flag_fast
            if not name.startswith("mosaic") or flag_ref != flag_fast:
                print(
                    f"{name[:24]:<24} {n_ref:7d} {n_fast:8d} {iou:16.3f} "
                    f"{'flagged' if flag_ref else 'clear'}/{'flagged' if flag_fast else 'clear'}"
                )
        print(f"verdicts agree on {agree} of {len(named)} tiles")


if __name__ == "__main__":
    main()
