"""SLIC time per scan tile: the 2018 reference segmentation against the fast mode.

    python benchmarks/segmentation.py --tiles ../shared/data/texty-amber/tiles [--repeat 3]

Both modes run in the same process on the same real tiles; the figures are the median wall time
per tile, the speed-up (reference / fast), and the agreement of fast with reference: the mean
over reference superpixels of the best-matching fast superpixel's IoU, plain and area-weighted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from amberscan.vision.imageio import read_image
from amberscan.vision.segment import Segmentation, best_match_iou, segment


def timed(image: np.ndarray, mode: str, repeat: int) -> tuple[float, Segmentation]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = segment(image, mode=mode)  # type: ignore[arg-type]
        times.append(time.perf_counter() - started)
    assert result is not None
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=Path, required=True, help="folder of tile images")
    parser.add_argument("--repeat", type=int, default=3)
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


if __name__ == "__main__":
    main()
