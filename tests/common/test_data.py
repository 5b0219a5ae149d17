"""Finding the shared data set: the setting, else beside the checkout or a folder above it; when
nothing is found, every place looked at is named. The stack scripts follow the same rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from amberscan.common.data import CHECKOUT, SharedDataMissing, find_shared_data, places

ROOT = Path(__file__).resolve().parents[2]


def data_set(under: Path, *parts: str) -> Path:
    folder = under / "shared" / "data" / "texty-amber"
    for part in parts or ("",):
        (folder / part).mkdir(parents=True, exist_ok=True)
    return folder


def test_a_clone_finds_shared_beside_it(tmp_path: Path) -> None:
    found = data_set(tmp_path, "tiles")
    assert find_shared_data(checkout=tmp_path / "clone") == found
    assert find_shared_data(part="tiles", checkout=tmp_path / "clone") == found / "tiles"


def test_a_worktree_finds_shared_beside_the_folder_of_worktrees(tmp_path: Path) -> None:
    found = data_set(tmp_path)
    assert find_shared_data(checkout=tmp_path / "wt" / "house") == found


def test_the_nearest_one_wins(tmp_path: Path) -> None:
    data_set(tmp_path)
    near = data_set(tmp_path / "wt")
    assert find_shared_data(checkout=tmp_path / "wt" / "house") == near


def test_the_setting_wins_and_is_the_only_place_then(tmp_path: Path) -> None:
    data_set(tmp_path)
    configured = tmp_path / "elsewhere"
    configured.mkdir()
    assert find_shared_data(configured, checkout=tmp_path / "clone") == configured
    missing = tmp_path / "nowhere"
    with pytest.raises(SharedDataMissing) as caught:
        find_shared_data(missing, checkout=tmp_path / "clone")
    assert str(caught.value) == (
        f"the shared texty-amber data set is not at {missing} (named by AMBERSCAN_SHARED_DATA)"
    )


def test_nothing_found_names_every_place_looked_at(tmp_path: Path) -> None:
    checkout = tmp_path / "a" / "b"
    data_set(tmp_path / "a")  # holds the data set, but not its tiles/
    with pytest.raises(SharedDataMissing) as caught:
        find_shared_data(part="tiles", checkout=checkout)
    message = str(caught.value)
    looked = [p / "tiles" for p in places(None, checkout)]
    assert looked[0] == tmp_path / "a" / "shared" / "data" / "texty-amber" / "tiles"
    assert len(looked) == len(checkout.parents)
    for place in looked:
        assert str(place) in message
    assert message.endswith("(set AMBERSCAN_SHARED_DATA to the texty-amber folder)")


def test_no_absolute_path_of_one_machine_is_assumed() -> None:
    assert places(None, CHECKOUT) == [p / "shared/data/texty-amber" for p in CHECKOUT.parents]


def run_command(args: list[str], shared: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AMBERSCAN_SHARED_DATA": str(shared)}
    return subprocess.run(args, env=env, capture_output=True, text=True, check=False, cwd=ROOT)


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "amberscan.common.data"],
        ["bash", "-c", 'source stack/lib.sh && shared_data "$@"', "shared_data"],
    ],
    ids=["python", "stack/lib.sh"],
)
def test_the_command_and_the_stack_scripts_follow_the_rule(
    tmp_path: Path, command: list[str]
) -> None:
    data_set(tmp_path, "tiles")
    shared = tmp_path / "shared" / "data" / "texty-amber"
    found = run_command([*command, "tiles"], shared)
    assert (found.returncode, found.stdout.strip()) == (0, str(shared / "tiles")), found.stderr
    missing = run_command([*command, "superpixels"], shared)
    assert missing.returncode == 1 and missing.stdout == ""
    assert f"is not at {shared / 'superpixels'} (named by AMBERSCAN_SHARED_DATA)" in missing.stderr
