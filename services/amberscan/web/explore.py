"""The explore page's data: a 2-D projection of superpixel feature vectors, with outcomes.

Two sources:

* ``scan``: the SuperpixelFeatures of one scan, read back from the retained ``features`` topic
  (kept forever for replay, so what is plotted is what the classifier saw), scored with the
  current classifier; a superpixel's class is a person's label from ``superpixel_labels`` when
  there is one.
* ``labelled``: the shared labelled crops (``positive/`` and ``negative/``), their features
  computed by the model server (cached per served backbone version) and scored the same way.

The pure part (`project`, `outcome`, `describe`, `points`) takes arrays and strings; the
documents below it read features through `common.features_reader` and labels from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
from numpy.typing import NDArray

from amberscan.common import features_reader
from amberscan.common.data import CHECKOUT, find_shared_data
from amberscan.common.settings import WebSettings
from amberscan.web.core import LABEL_NAMES

TSNE_MIN_POINTS = 30
CLASS_NAMES = LABEL_NAMES | {None: "unlabelled"}


# ---------------------------------------------------------------- pure


def project(vectors: NDArray[np.floating[Any]], seed: int = 0) -> tuple[NDArray[np.float64], str]:
    """2-D coordinates of the rows of `vectors` (n, d), scaled into [0, 1], and the method.

    Columns are standardised first (a constant column stays 0), so no single wide-ranging
    feature dominates. With at least 30 rows: t-SNE (scikit-learn, perplexity min(30, n/4),
    PCA-initialised, on at most 50 principal components); fewer rows: PCA. One row sits in the
    middle; a projection that collapses an axis puts that axis at 0.5.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"vectors must be (n, d), got shape {x.shape}")
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, 2)), "none"
    if n == 1:
        return np.full((1, 2), 0.5), "none"
    std = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    components = _pca(z, min(50, n, z.shape[1]))
    if n >= TSNE_MIN_POINTS:
        from sklearn.manifold import TSNE

        coords = TSNE(
            n_components=2,
            perplexity=min(30.0, n / 4),
            init="pca",
            random_state=seed,
        ).fit_transform(components)
        method = "t-SNE"
    else:
        coords = components[:, :2]
        method = "PCA"
    coords = np.asarray(coords, dtype=np.float64)
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    low, high = coords.min(axis=0), coords.max(axis=0)
    span = high - low
    scaled: NDArray[np.float64] = np.where(
        span > 1e-12, (coords - low) / np.where(span > 1e-12, span, 1.0), 0.5
    )
    return scaled, method


def _pca(z: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    """The first `k` principal-component scores of centred `z`, signs fixed for determinism."""
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    # An SVD's signs are arbitrary: make each component's largest loading positive.
    signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1.0
    scores: NDArray[np.float64] = (u * s * signs)[:, :k]
    return scores


def outcome(positive: bool, label: int | None) -> str:
    """TP/FP/TN/FN of a superpixel with a label (1 mining, 0 not); else positive/negative."""
    if label is None:
        return "positive" if positive else "negative"
    if label == 1:
        return "TP" if positive else "FN"
    return "FP" if positive else "TN"


def describe(method: str, n: int, backbone: str, where: str) -> str:
    """The sentence the page shows above the plot."""
    noun = "superpixel feature vector" if n == 1 else "superpixel feature vectors"
    head = f"{method} of {n} {noun}" if method != "none" else f"{n} {noun} (too few to project)"
    return f"{head} from backbone {backbone or 'unknown'}, {where}"


@dataclass(frozen=True)
class Item:
    """One superpixel to plot: what the point links to and shows, without its coordinates."""

    tile_id: str
    imagery_date: str
    segment_index: int
    score: float
    positive: bool
    label: int | None
    image: str
    link: str
    demo: bool = False


def points(items: Sequence[Item], coords: NDArray[np.float64]) -> list[dict[str, Any]]:
    """The JSON points of `items` placed at `coords`."""
    return [
        {
            "x": round(float(x), 5),
            "y": round(float(y), 5),
            "tile_id": item.tile_id,
            "imagery_date": item.imagery_date,
            "segment_index": item.segment_index,
            "score": round(item.score, 4),
            "positive": item.positive,
            "class": CLASS_NAMES[item.label],
            "outcome": outcome(item.positive, item.label),
            "image": item.image,
            "link": item.link,
            "demo": item.demo,
        }
        for item, (x, y) in zip(items, coords, strict=True)
    ]


def counts(values: Sequence[dict[str, Any]], field: str) -> dict[str, int]:
    return dict(Counter(str(v[field]) for v in values))


# ---------------------------------------------------------------- loaders


async def latest_scan(db: Any) -> str | None:
    """The most recently requested scan, else the scan of the newest detection."""
    rows = await db.fetch("SELECT scan_id FROM scans ORDER BY requested_at DESC LIMIT 1")
    if not rows:
        rows = await db.fetch(
            "SELECT scan_id FROM detections WHERE scan_id <> '' ORDER BY detected_at DESC LIMIT 1"
        )
    return str(rows[0][0]) if rows else None


async def superpixel_labels(db: Any, labels_keys: Sequence[str]) -> dict[tuple[str, int], int]:
    """(labels_key, segment_index) → a person's label (1 mining, 0 not) for these label images."""
    keys = sorted({k for k in labels_keys if k})
    if not keys:
        return {}
    rows = await db.fetch(
        "SELECT labels_key, segment_index, label FROM superpixel_labels WHERE labels_key = ANY(%s)",
        keys,
    )
    return {(str(k), int(i)): int(label) for k, i, label in rows}


def _crop_url(image_key: str, bbox: Any) -> str:
    box = f"{bbox.row0},{bbox.col0},{bbox.row1},{bbox.col1}"
    return "/api/explore/crop?" + urlencode({"image_key": image_key, "bbox": box})


def _tile_link(tile_id: str, imagery_date: str) -> str:
    return f"/tile/{tile_id}?" + urlencode({"imagery_date": imagery_date})


async def scan_projection(
    settings: WebSettings, db: Any, scan_id: str | None, points_cap: int
) -> dict[str, Any]:
    """The explore document of one scan (the latest when `scan_id` is None)."""
    if scan_id is None:
        scan_id = await latest_scan(db)
        if scan_id is None:
            return _empty("scan", "", "no scan yet: run a scan, or use ?source=labelled")
    result = await features_reader.read_scan_features(
        settings.kafka,
        scan_id,
        limit=points_cap,
        budget_s=settings.explore.read_budget_s,
        max_records=settings.explore.max_records,
    )
    features = result.features
    backbone = ""
    dropped = 0
    if features:
        # One scan normally has one backbone; if it was re-run with another, plot the commoner.
        backbone = Counter(f.backbone for f in features).most_common(1)[0][0]
        kept = [f for f in features if f.backbone == backbone]
        dropped = len(features) - len(kept)
        features = kept
    if not features:
        return _empty(
            "scan",
            scan_id,
            f"no superpixel features of scan {scan_id} in the features topic "
            f"({result.records_read} records read)",
        )
    from amberscan.common.registry import load_current_or_file

    classifier = await load_current_or_file(settings.s3, settings.classifier.path)
    vectors = np.asarray([f.vector for f in features], dtype=np.float32)
    labels = await superpixel_labels(db, [f.ref.labels_key for f in features])
    scores, coords, method = await _score_and_project(classifier, vectors)
    items = [
        Item(
            tile_id=f.ref.tile_id,
            imagery_date=f.ref.imagery_date,
            segment_index=int(f.ref.segment_index),
            score=float(s),
            positive=bool(s >= classifier.threshold),
            label=labels.get((f.ref.labels_key, int(f.ref.segment_index))),
            image=_crop_url(f.ref.image_key, f.ref.bbox) if f.ref.image_key else "",
            link=_tile_link(f.ref.tile_id, f.ref.imagery_date),
            demo=bool(f.ref.demo),
        )
        for f, s in zip(features, scores, strict=True)
    ]
    out = points(items, coords)
    notes = []
    if not result.complete:
        notes.append(
            f"only the first {len(out)} superpixels found are plotted: the read stopped at "
            f"{points_cap} points, {settings.explore.max_records} records "
            f"(AMBERSCAN_EXPLORE_MAX_RECORDS) or {settings.explore.read_budget_s:g} s "
            "(AMBERSCAN_EXPLORE_READ_BUDGET_S)"
        )
    if dropped:
        notes.append(f"{dropped} vectors of another backbone left out")
    return {
        "source": "scan",
        "scan_id": scan_id,
        "method": method,
        "backbone": backbone,
        "classifier": classifier.version,
        "threshold": round(float(classifier.threshold), 4),
        "n": len(out),
        "records_read": result.records_read,
        "complete": result.complete,
        "about": describe(method, len(out), backbone, f"scan {scan_id}"),
        "notes": notes,
        "counts": {"outcome": counts(out, "outcome"), "class": counts(out, "class")},
        "points": out,
    }


def _empty(source: str, scan_id: str, about: str) -> dict[str, Any]:
    return {
        "source": source,
        "scan_id": scan_id,
        "method": "none",
        "backbone": "",
        "classifier": "",
        "threshold": None,
        "n": 0,
        "about": about,
        "notes": [],
        "counts": {"outcome": {}, "class": {}},
        "points": [],
    }


def labelled_dir(settings: WebSettings, checkout: Path = CHECKOUT) -> Path:
    """Where the labelled crops are: `settings.explore.data_dir`, else the shared data set's
    `superpixels/` (`common.data`: `AMBERSCAN_SHARED_DATA`, else beside the checkout or a folder
    above it).

    Raises:
        FileNotFoundError: the configured folder is missing.
        SharedDataMissing: the shared data set is nowhere; the message names every place.
    """
    if settings.explore.data_dir is not None:
        if not settings.explore.data_dir.is_dir():
            raise FileNotFoundError(
                f"AMBERSCAN_EXPLORE_DATA_DIR={settings.explore.data_dir} is not a folder"
            )
        return settings.explore.data_dir
    return find_shared_data(settings.data.shared_data, "superpixels", checkout=checkout)


class LabelledFeatures:
    """Features of the labelled crops, computed once per served backbone version."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str], tuple[list[Any], NDArray[np.float32]]] = {}
        self.lock = asyncio.Lock()

    async def crops(self, settings: WebSettings) -> list[Any]:
        from amberscan.model.dataset import list_labelled

        return await asyncio.to_thread(list_labelled, labelled_dir(settings))

    async def get(self, settings: WebSettings) -> tuple[str, list[Any], NDArray[np.float32]]:
        """(backbone label, crops, features) of the labelled data folder."""
        async with self.lock:
            backbone = await features_reader.served_backbone(settings)
            key = (str(labelled_dir(settings)), backbone)
            if key not in self.cache:
                crops = await self.crops(settings)
                _, vectors = await features_reader.crop_features(settings, [c.path for c in crops])
                self.cache.clear()  # only the current backbone's vectors are worth keeping
                self.cache[key] = (crops, vectors)
            crops, vectors = self.cache[key]
            return backbone, crops, vectors


async def _score_and_project(
    classifier: Any, vectors: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.float64], str]:
    """Scores and 2-D coordinates of `vectors`, off the event loop (t-SNE takes seconds)."""

    def compute() -> tuple[NDArray[np.float32], NDArray[np.float64], str]:
        coords, method = project(vectors)
        return classifier.score(vectors), coords, method

    return await asyncio.to_thread(compute)


async def labelled_projection(
    settings: WebSettings, cache: LabelledFeatures, points_cap: int
) -> dict[str, Any]:
    """The explore document of the labelled crops (every one, up to `points_cap`)."""
    backbone, crops, vectors = await cache.get(settings)
    crops, vectors = crops[:points_cap], vectors[:points_cap]
    from amberscan.common.registry import load_current_or_file

    classifier = await load_current_or_file(settings.s3, settings.classifier.path)
    scores, coords, method = await _score_and_project(classifier, vectors)
    items = [
        Item(
            tile_id=crop.tile_id,
            imagery_date="",
            segment_index=_segment_of(crop.path.name),
            score=float(s),
            positive=bool(s >= classifier.threshold),
            label=int(crop.label),
            image=f"/api/explore/labelled/{i}.png",
            link="",
        )
        for i, (crop, s) in enumerate(zip(crops, scores, strict=True))
    ]
    out = points(items, coords)
    for point, crop in zip(out, crops, strict=True):
        point["name"] = crop.path.name
    folder = labelled_dir(settings)
    return {
        "source": "labelled",
        "scan_id": "",
        "method": method,
        "backbone": backbone,
        "classifier": classifier.version,
        "threshold": round(float(classifier.threshold), 4),
        "n": len(out),
        "about": describe(method, len(out), backbone, f"labelled crops in {folder.name}/"),
        "notes": [
            "labelled crops have no tile in the database: no tile debugger for these points; "
            "crops the classifier was trained on score optimistically"
        ],
        "counts": {"outcome": counts(out, "outcome"), "class": counts(out, "class")},
        "points": out,
    }


def _segment_of(name: str) -> int:
    match = re.search(r"_super_(\d+)", name)
    return int(match.group(1)) if match else -1


def crop_png(image: NDArray[np.uint8], box: tuple[int, int, int, int], size: int = 160) -> bytes:
    """PNG of `box` of `image` resized to size x size, as the classifier's crop is made."""
    from amberscan.vision.crops import crop_superpixel
    from amberscan.vision.imageio import encode_png

    return encode_png(np.ascontiguousarray(crop_superpixel(image, box, size)))
