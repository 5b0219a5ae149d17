"""The README stays true to the code: every setting documented, every documented target real."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from amberscan.common.settings import Settings, variables

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    documented = set(re.findall(r"`(AMBERSCAN_[A-Z0-9_]+)`", README))
    fields = set(variables(Settings))
    assert fields - documented == set(), "settings missing from the README"
    stack = {v for v in documented if v.startswith("AMBERSCAN_STACK_")}  # read by stack/*.sh
    assert documented - fields - stack - {"AMBERSCAN_CACHE_DIR"} == set(), (
        "README documents variables no code reads"
    )


def test_every_make_target_the_readme_names_exists() -> None:
    listed = subprocess.run(
        ["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    targets = set(re.findall(r"make (\S+)", listed))
    named = set(re.findall(r"`make ([a-z-]+)`", README)) | set(
        re.findall(r"^make ([a-z-]+)", README, re.M)
    )
    assert named and named <= targets, f"README names targets make does not have: {named - targets}"
