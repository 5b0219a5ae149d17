"""Offline checks of docker/Dockerfile (no Docker engine needed): what it copies is in the build
context, and the image runs `amberscan` as a non-root user."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()


def _instructions(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", joined, re.M)]


def _ignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = Path(path).parts
    return any(
        fnmatch.fnmatch(path, p) or fnmatch.fnmatch(parts[0], p.rstrip("/")) for p in patterns
    )


def test_copied_files_exist_and_are_in_the_context() -> None:
    copies = [c for c in _instructions("COPY") if not c.startswith("--from")]
    assert copies
    for copy in copies:
        *sources, _target = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert not _ignored(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"


def test_the_context_leaves_out_local_state() -> None:
    for path in (".venv", ".stack", ".git", "models", "web/node_modules"):
        assert _ignored(path), f"{path} would be sent to the Docker daemon"


def test_multi_stage_non_root_amberscan_entrypoint() -> None:
    stages = _instructions("FROM")
    assert len(stages) >= 2, "a build stage and a runtime stage"
    assert any("python:3.11-slim" in line for line in _instructions("ARG"))
    (user,) = _instructions("USER")
    assert user.split(":")[0] not in {"0", "root"}
    (entrypoint,) = _instructions("ENTRYPOINT")
    assert json.loads(entrypoint) == ["amberscan"]
    installs = [r for r in _instructions("RUN") if "pip install" in r]
    assert installs and all("-c constraints.txt" in r for r in installs)
