"""Reviewed superpixels → training crops, and `amberscan train --from-reviews`."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amberscan.model.dataset import list_labelled
from amberscan.vision.crops import crop_superpixel, load_crop
from amberscan.vision.imageio import read_image
from amberscan.vision.segment import segment
from amberscan.web import queries, review_queries
from amberscan.web.training import export_reviewed_crops
from tests.web.conftest import MODEL, Seeded

pytestmark = pytest.mark.stack


@pytest.fixture
async def labelled(seeded: Seeded) -> Seeded:
    for name, marks in (("positive1", {1: 1, 2: 0}), ("negative2", {5: 0})):
        target = seeded.tiles[name]
        row = await queries.detection(seeded.db, target.tile_id, target.imagery_date, MODEL)
        assert row is not None
        for index, label in marks.items():
            await review_queries.save_label(seeded.db, row, index, label, "tester")
    return seeded


async def test_export_reviewed_crops(labelled: Seeded, tmp_path: Path, shared_data: Path) -> None:
    crops = await export_reviewed_crops(labelled.db, labelled.store, tmp_path)
    assert sorted(c.label for c in crops) == [0, 0, 1]
    assert len({c.tile_id for c in crops}) == 2
    # Written as the superpixel's box, unresized: cut at any model's crop size, each is the crop
    # the feature stage cuts from the tile at that size.
    tile = read_image(shared_data / "tiles" / "positive1.png")
    segmentation = segment(tile, mode="fast")  # as the seeded labels were made
    by_index = {int(c.path.stem.rsplit("_super_", 1)[1]): c for c in crops}
    assert sorted(by_index) == [1, 2, 5]  # positive1's 1 and 2, negative2's 5 (the fixture)
    for crop in crops:
        with Image.open(crop.path) as image:
            assert image.mode == "RGB"
    for index in (1, 2):
        crop = by_index[index]
        bbox = segmentation.superpixels[index].bbox
        with Image.open(crop.path) as image:
            assert image.size == (bbox[3] - bbox[1], bbox[2] - bbox[0])
        for size in (224, 240):
            np.testing.assert_array_equal(
                load_crop(crop.path, size), crop_superpixel(tile, bbox, size)
            )
    assert {(c.path, c.label) for c in list_labelled(tmp_path)} == {
        (c.path, c.label) for c in crops
    }


def _small_dataset(shared_data: Path, root: Path) -> Path:
    """Three crops of each class, outside the gate share (which `train` holds out)."""
    from amberscan.model.dataset import tile_id_of
    from amberscan.model.promotion import in_gate_share

    for folder in ("positive", "negative"):
        (root / folder).mkdir(parents=True)
        found = sorted((shared_data / "superpixels" / folder).glob("*.png"))
        for path in [p for p in found if not in_gate_share(tile_id_of(p.name))][:3]:
            shutil.copy(path, root / folder / path.name)
    return root


def test_train_from_reviews_grows_the_training_set(
    labelled: Seeded,
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The printed training-set size grows by the reviewed crops (model server stubbed out)."""
    import contextlib
    import tempfile

    from amberscan.cli import build_parser
    from amberscan.common import served_features
    from amberscan.model import classifier

    class Backbone:
        label, feature_dim, crop_size = "stub", 4, 224

    class Stop(Exception):
        pass

    @contextlib.asynccontextmanager
    async def client_for(*_: object, **__: object):  # type: ignore[no-untyped-def]
        yield None

    async def served_backbone(*_: object) -> Backbone:
        return Backbone()

    async def fake_extract(_: object, __: object, n: int, **___: object) -> np.ndarray:
        return np.zeros((n, 4))

    def train_classifier(*_: object, **__: object) -> None:
        raise Stop

    monkeypatch.setattr(served_features, "client_for", client_for)
    monkeypatch.setattr(served_features, "served_backbone", served_backbone)
    monkeypatch.setattr(served_features, "extract", fake_extract)
    monkeypatch.setattr(classifier, "train_classifier", train_classifier)
    exported = tmp_path / "reviews"
    exported.mkdir()
    monkeypatch.setattr(tempfile, "mkdtemp", lambda prefix="": str(exported))  # leave no temp dir
    data = _small_dataset(shared_data, tmp_path / "data")
    sizes = []
    for from_reviews in (False, True):
        args = build_parser().parse_args(
            ["train", "--data", str(data)] + (["--from-reviews"] if from_reviews else [])
        )
        assert isinstance(args, argparse.Namespace) and args.from_reviews is from_reviews
        with pytest.raises(Stop):
            args.run(args, labelled.settings)
        printed = capsys.readouterr().err
        sizes.append(int(printed.split("training on ", 1)[1].split(" ", 1)[0]))
    assert sizes == [6, 9]
    assert len(list(exported.glob("*/*.png"))) == 3


async def test_retraining_on_a_reviewed_false_positive_stops_flagging_it(
    seeded: Seeded, shared_data: Path, tmp_path: Path
) -> None:
    """The review loop with the real parts: the default classifier (`make model`) on features
    from the real model server flags superpixels of a tile; a reviewer marks the one it is least
    sure of "not mining" (the typical false positive: a sand pit, a clear-cut); `amberscan train
    --from-reviews` on the shared crops plus that review, at the build's threshold, gives a
    classifier that no longer flags it, and still flags the tile by its other superpixels."""
    import asyncio

    from amberscan.cli import build_parser
    from amberscan.common.served_features import client_for
    from amberscan.model.classifier import Classifier
    from amberscan.vision.crops import crops_for
    from amberscan.vision.imageio import decode_image
    from amberscan.vision.labels import decode_labels
    from amberscan.vision.segment import Segmentation

    settings = seeded.settings
    path = Path(settings.classifier.path)
    if not path.exists():
        pytest.fail(f"no classifier at {path}: build the default model with `make model`")
    before = Classifier.load(path)
    target = seeded.tiles["positive1"]
    image = decode_image(await seeded.store.get(target.image_key), target.image_key)
    labels = decode_labels(await seeded.store.get(target.labels_key), target.labels_key)
    async with client_for(settings) as client:
        size = (await client.metadata()).crop_size
        vectors = await client.predict(crops_for(image, Segmentation.from_labels(labels), size))
    scores = before.score(vectors)
    flagged = np.flatnonzero(scores >= before.threshold)
    assert len(flagged) > settings.aggregator.min_positive_superpixels + 1, (
        scores
    )  # a tile that stays flagged
    reviewed = int(flagged[np.argmin(scores[flagged])])
    row = await queries.detection(seeded.db, target.tile_id, target.imagery_date, MODEL)
    assert row is not None
    await review_queries.save_label(seeded.db, row, reviewed, 0, "tester")

    out = tmp_path / "classifier.json"
    args = build_parser().parse_args(
        ["train", "--data", str(shared_data / "superpixels"), "--from-reviews", "--no-registry"]
        + ["--threshold", str(before.threshold), "--out", str(out)]
    )
    assert await asyncio.to_thread(args.run, args, settings) == 0
    after = Classifier.load(out)
    assert after.version != before.version and after.threshold == before.threshold
    rescored = after.score(vectors)
    print(f"superpixel {reviewed}: {scores[reviewed]:.3f} before, {rescored[reviewed]:.3f} after")
    assert rescored[reviewed] < after.threshold
    others = np.delete(rescored, reviewed)
    assert (others >= after.threshold).sum() > settings.aggregator.min_positive_superpixels


async def test_verdicts_give_hard_negatives_and_positives_with_provenance(
    seeded: Seeded, tmp_path: Path
) -> None:
    """A rejected tile's positive superpixels become negatives, a confirmed tile's positives,
    and a person's relabel of one overrides its tile's verdict; each crop says where its label
    came from."""
    import json

    from amberscan.web.training import PROVENANCE, provenance

    rejected, confirmed = seeded.tiles["positive1"], seeded.tiles["positive2"]
    for target, verdict in ((rejected, "rejected"), (confirmed, "confirmed")):
        row = await queries.detection(seeded.db, target.tile_id, target.imagery_date, MODEL)
        assert row is not None
        await review_queries.save_review(seeded.db, row, verdict, "ana", "")
    positives = {
        name: sorted(i for i, s in enumerate(seeded.tiles[name].scores) if s >= 0.5)
        for name in ("positive1", "positive2")
    }
    assert len(positives["positive1"]) == rejected.positives == 5
    relabelled = positives["positive2"][0]
    row = await queries.detection(seeded.db, confirmed.tile_id, confirmed.imagery_date, MODEL)
    assert row is not None
    await review_queries.save_label(seeded.db, row, relabelled, 0, "bo")

    crops = await export_reviewed_crops(seeded.db, seeded.store, tmp_path)
    got = {(c.tile_id.split("-", 1)[0], int(c.path.stem.rsplit("_", 1)[1])): c for c in crops}
    assert len(got) == 10
    for index in positives["positive1"]:
        crop = got[(rejected.tile_id, index)]
        assert (crop.label, crop.source, crop.reviewer) == (0, "rejected", "ana")  # type: ignore[attr-defined]
        assert crop.path.parent.name == "negative"
    for index in positives["positive2"]:
        crop = got[(confirmed.tile_id, index)]
        want = (0, "relabelled", "bo") if index == relabelled else (1, "confirmed", "ana")
        assert (crop.label, crop.source, crop.reviewer) == want  # type: ignore[attr-defined]
    assert provenance(crops) == {"confirmed": 4, "rejected": 5, "relabelled": 1}
    lines = [json.loads(x) for x in (tmp_path / PROVENANCE).read_text().splitlines()]
    assert len(lines) == 10 and all(line["at"] and line["reviewer"] for line in lines)
    assert {line["model_version"] for line in lines if line["source"] != "relabelled"} == {MODEL}
    assert {(c.path, c.label) for c in list_labelled(tmp_path)} == {
        (c.path, c.label) for c in crops
    }


async def test_a_candidate_trained_from_reviews_goes_through_the_gate(
    seeded: Seeded,
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`train --from-reviews` (real model server) stores a candidate and serves nothing; `models
    promote --from-reviews` judges it against the current model on the gate share, and it is
    served only if the gate passes it."""
    import asyncio
    import json
    import tempfile

    from amberscan.cli import build_parser
    from amberscan.common import registry
    from amberscan.model.promotion import in_gate_share
    from tests.cli.test_models import crops_of_tiles, link_set

    settings = seeded.settings
    # Crops of 40 mining and 80 other tiles, some of them in the gate share.
    chosen = crops_of_tiles(shared_data, 40, 80)
    assert sum(in_gate_share(c.tile_id) and c.label == 1 for c in chosen) >= 5
    real = link_set(chosen, tmp_path / "real")
    exported = tmp_path / "reviews"
    exported.mkdir()
    monkeypatch.setattr(tempfile, "mkdtemp", lambda prefix="": str(exported))

    def cli(*argv: str) -> tuple[int, str]:
        args = build_parser().parse_args(list(argv))
        code = int(args.run(args, settings))
        return code, capsys.readouterr().out

    async def trained(*extra: str) -> str:
        before = set(await registry.versions(settings.s3))
        code, _ = await asyncio.to_thread(
            cli, "train", "--data", str(real), "--out", str(tmp_path / "c.json"), *extra
        )
        assert code == 0
        (version,) = set(await registry.versions(settings.s3)) - before
        return version

    first = await trained()
    code, out = await asyncio.to_thread(cli, "models", "promote", first, "--data", str(real))
    assert code == 0 and "promoted as the first" in out

    for name, verdict in (("positive1", "rejected"), ("positive2", "confirmed")):
        target = seeded.tiles[name]
        row = await queries.detection(seeded.db, target.tile_id, target.imagery_date, MODEL)
        assert row is not None
        await review_queries.save_review(seeded.db, row, verdict, "ana", "")
    candidate = await trained("--from-reviews")
    assert await registry.current_version(settings.s3) == first  # a candidate serves nothing
    shown = await registry.describe(settings.s3, candidate)
    assert shown["state"] == "candidate"
    # Both reviewed tiles lie outside the gate share: their 5 positive superpixels each train.
    assert not any(in_gate_share(seeded.tiles[n].tile_id) for n in ("positive1", "positive2"))
    assert shown["review_sources"] == {"confirmed": 5, "rejected": 5}
    assert shown["reviewed_crops"] == 10

    code, out = await asyncio.to_thread(
        cli, "models", "promote", candidate, "--data", str(real), "--from-reviews", "--json"
    )
    report = json.loads(out.strip().splitlines()[-1])
    assert code == (0 if report["promoted"] else 1)
    gate = report["gate"]
    assert gate["current"]["version"] == first and gate["candidate"]["version"] == candidate
    assert gate["passed"] is report["promoted"] and gate["crops"] > 0
    served = await registry.current_version(settings.s3)
    assert served == (candidate if gate["passed"] else first)
    print(f"gate: passed {gate['passed']}, reasons {gate['reasons']}")
