"""`amberscan data import`: a folder in the texty/amber-methodology layout, built in the test
from symlinks to the shared data set, is laid out where the project reads it; what does not fit
is refused, naming what and where. Nothing is copied into the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from amberscan.cli import main
from amberscan.common.data import DataImportRefused, find_shared_data, import_data
from amberscan.model.dataset import list_labelled

SHARED = find_shared_data()


def texty_clone(root: Path, crops_per_class: int | None = None) -> Path:
    """A folder laid out as a clone of texty/amber-methodology, of symlinks to the shared files."""
    datasets = root / "model" / "datasets"
    for label in ("positive", "negative"):
        folder = datasets / label
        folder.mkdir(parents=True)
        for path in sorted((SHARED / "superpixels" / label).iterdir())[:crops_per_class]:
            (folder / path.name).symlink_to(path)
    (datasets / "example").mkdir()
    for path in sorted((SHARED / "tiles").iterdir()):
        (datasets / "example" / path.name).symlink_to(path)
    return root


def test_a_texty_clone_is_imported_where_the_project_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clone = texty_clone(tmp_path / "amber-methodology")
    target = tmp_path / "shared" / "data" / "texty-amber"
    monkeypatch.setenv("AMBERSCAN_SHARED_DATA", str(target))

    assert main(["data", "import", str(clone)]) == 0
    out = capsys.readouterr().out
    assert "positive: 195 crops of 121 tiles" in out
    assert "negative: 745 crops of 600 tiles" in out
    assert "whole tiles: 4" in out
    assert "944 files copied, 0 already there" in out

    # The project's own readers find and read it as they read the shared set.
    assert find_shared_data(target, "superpixels") == target / "superpixels"
    imported = list_labelled(target / "superpixels")
    shared = list_labelled(SHARED / "superpixels")
    assert [(c.path.name, c.label) for c in imported] == [(c.path.name, c.label) for c in shared]
    for crop in imported[:5] + imported[-5:]:
        assert not crop.path.is_symlink()  # copies, not links to the clone
        original = SHARED / "superpixels" / crop.path.parent.name / crop.path.name
        assert crop.path.read_bytes() == original.read_bytes()
    assert sorted(p.name for p in (target / "tiles").iterdir()) == sorted(
        p.name for p in (SHARED / "tiles").iterdir()
    )
    assert all(p.is_symlink() for p in (clone / "model" / "datasets" / "positive").iterdir())

    # Again: nothing changes.
    assert main(["data", "import", str(clone)]) == 0
    assert "0 files copied, 944 already there" in capsys.readouterr().out


def test_a_folder_in_the_shared_layout_is_taken_too(tmp_path: Path) -> None:
    report = import_data(SHARED, tmp_path / "out")
    assert report.layout == "shared"
    assert report.crops == {"positive": 195, "negative": 745}
    assert (tmp_path / "out" / "tiles" / "positive1.png").read_bytes() == (
        SHARED / "tiles" / "positive1.png"
    ).read_bytes()


def refused(source: Path, target: Path) -> str:
    with pytest.raises(DataImportRefused) as caught:
        import_data(source, target)
    assert not target.exists() or not any(target.rglob("*.png"))  # nothing half-imported
    return str(caught.value)


def test_a_folder_of_neither_layout_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    message = refused(tmp_path / "src", tmp_path / "out")
    assert message.startswith(f"{tmp_path / 'src'}: neither a clone of texty/amber-methodology")
    assert "no such folder" in refused(tmp_path / "nowhere", tmp_path / "out")


@pytest.mark.parametrize(
    ("missing", "said"),
    [("negative", "no model/datasets/negative/ folder"), ("example", "no model/datasets/example/")],
)
def test_a_missing_folder_is_refused(tmp_path: Path, missing: str, said: str) -> None:
    clone = texty_clone(tmp_path / "clone", crops_per_class=3)
    for link in (clone / "model" / "datasets" / missing).iterdir():
        link.unlink()
    (clone / "model" / "datasets" / missing).rmdir()
    assert said in refused(clone, tmp_path / "out")


def test_an_empty_class_is_refused(tmp_path: Path) -> None:
    clone = texty_clone(tmp_path / "clone", crops_per_class=3)
    positive = clone / "model" / "datasets" / "positive"
    for link in positive.iterdir():
        link.unlink()
    assert refused(clone, tmp_path / "out") == f"{positive}: no positive crops (an empty class)"


def test_a_name_that_is_not_a_tile_id_is_refused(tmp_path: Path) -> None:
    clone = texty_clone(tmp_path / "clone", crops_per_class=3)
    negative = clone / "model" / "datasets" / "negative"
    (negative / "IMG_0042.png").symlink_to(SHARED / "tiles" / "negative1.png")
    message = refused(clone, tmp_path / "out")
    assert message.startswith(f"{negative}: IMG_0042.png: not a crop name of the data set")


def test_a_file_that_is_not_an_image_is_refused(tmp_path: Path) -> None:
    clone = texty_clone(tmp_path / "clone", crops_per_class=3)
    fake = clone / "model" / "datasets" / "positive" / "50.1_26.2_11_Oct_2014_GMT_super_3.png"
    fake.write_text("not a PNG")
    assert refused(clone, tmp_path / "out").startswith(f"{fake}: not a readable image")
    stray = clone / "model" / "datasets" / "example" / "notes.txt"
    fake.unlink()
    stray.write_text("x")
    assert refused(clone, tmp_path / "out").startswith(f"{stray}: not a whole tile's name")


def test_a_target_file_with_other_bytes_is_not_overwritten(tmp_path: Path) -> None:
    clone = texty_clone(tmp_path / "clone", crops_per_class=3)
    kept = tmp_path / "out" / "tiles" / "positive1.png"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"someone else's")
    with pytest.raises(DataImportRefused, match="already there with other bytes"):
        import_data(clone, tmp_path / "out")
    assert kept.read_bytes() == b"someone else's"
    assert not (tmp_path / "out" / "superpixels").exists()


def test_the_command_ends_a_refusal_as_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "src").mkdir()
    assert main(["data", "import", str(tmp_path / "src"), "--to", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"amberscan: error: {tmp_path / 'src'}: neither a clone of texty")
    assert err.count("\n") == 1
