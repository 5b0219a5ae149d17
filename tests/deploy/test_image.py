"""Offline checks of docker/Dockerfile (no container engine needed): what it copies is in the build
context, the map's assets come from the image's own npm step, the build machine's configuration
reaches the build only as secrets, both images run as a non-root user, and docker/smoke.py fails
an image whose web map would ask for files it lacks. `make image` (stack/image.sh) builds them."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
VENDOR = "services/amberscan/web/static/vendor"


def _instructions(name: str, text: str = DOCKERFILE) -> list[str]:
    joined = text.replace("\\\n", " ")
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", joined, re.M)]


def _stages() -> dict[str, str]:
    """Stage name → its text, in order (every stage is named)."""
    parts = re.split(r"^(?=FROM\s)", DOCKERFILE, flags=re.M)[1:]
    stages = {}
    for part in parts:
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", part, re.I)
        assert match, f"unnamed stage: {part.splitlines()[0]}"
        stages[match.group(1)] = part
    return stages


def _base(stage: str) -> str:
    return _instructions("FROM", _stages()[stage])[0].split()[0]


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
    # The map's vendored files of a developer's checkout too: the image's npm step makes its own.
    for path in (".venv", ".stack", ".git", "models", "web/node_modules", VENDOR):
        assert _ignored(path), f"{path} would be sent to the build"


def test_multi_stage_non_root_entrypoints() -> None:
    stages = _stages()
    assert any("python:3.11-slim" in line for line in _instructions("ARG"))
    # The default target (the last stage) is the amberscan command; the CPU model server is a
    # target of its own; both start from the runtime base, which sets a non-root user.
    assert list(stages)[-1] == "amberscan"
    (user,) = _instructions("USER", stages["runtime-base"])
    assert user.split(":")[0] not in {"0", "root"}
    entrypoints = {name: _instructions("ENTRYPOINT", text) for name, text in stages.items()}
    assert [json.loads(e) for e in entrypoints["amberscan"]] == [["amberscan"]]
    assert [json.loads(e) for e in entrypoints["model-server"]] == [
        ["amberscan", "serve", "model-server"]
    ]
    assert _base("amberscan") == _base("model-server") == "runtime-base"
    assert not any(
        _instructions("USER", text) for name, text in stages.items() if name != "runtime-base"
    )
    installs = [r for r in _instructions("RUN") if "pip install" in r]
    assert installs and all("-c constraints.txt" in r for r in installs)


def test_the_map_assets_are_built_by_npm_in_the_image() -> None:
    stages = _stages()
    web = stages["web"]
    assert any("nodejs" in r and "npm" in r for r in _instructions("RUN", web)), "node from Debian"
    assert any("npm ci" in r and "vendor.mjs" in r for r in _instructions("RUN", web))
    copied = [c for c in _instructions("COPY", stages["build"]) if c.startswith("--from=web")]
    assert any(VENDOR in c for c in copied), "the build stage takes the vendored files from web"
    # Node stays in its stage: the images start from the runtime base, which installs no node.
    assert "nodejs" not in stages["runtime-base"]


def test_build_machine_configuration_comes_as_secrets_only() -> None:
    """Whatever runs pip or npm mounts the CA bundle and configuration as build secrets; nothing
    names them in ENV, ARG or COPY, so no layer holds them."""
    for run in _instructions("RUN"):
        if "pip install" in run or "npm ci" in run:
            assert "--mount=type=secret,id=ca" in run, run
    for kind in ("ENV", "ARG", "COPY"):
        for line in _instructions(kind):
            assert not re.search(
                r"PIP_CERT|PIP_CONFIG_FILE|PIP_INDEX|NODE_EXTRA_CA|npmrc|pip\.conf|\.crt", line
            ), f"{kind} {line}"


def _fake_package(tmp_path: Path, with_vendor: bool) -> Path:
    """An installed-looking `amberscan` package: the real static files, schema and map pages."""
    package = tmp_path / "site" / "amberscan"
    (package / "common").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    shutil.copy(ROOT / "services/amberscan/common/schema.sql", package / "common")
    static = ROOT / "services/amberscan/web/static"
    shutil.copytree(static, package / "web" / "static", ignore=shutil.ignore_patterns("vendor"))
    if with_vendor:
        shutil.copytree(static / "vendor", package / "web" / "static" / "vendor")
    return package.parent


def _smoke(site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "docker" / "smoke.py")],
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_smoke_check_fails_without_the_map_library(tmp_path: Path) -> None:
    result = _smoke(_fake_package(tmp_path, with_vendor=False))
    assert result.returncode == 1
    assert "web/static/vendor/maplibre-gl/maplibre-gl.mjs (asked for by map.js)" in result.stderr
    assert "leaflet" not in result.stderr


def test_smoke_check_passes_with_what_the_app_serves(tmp_path: Path) -> None:
    if not (ROOT / VENDOR / "maplibre-gl").is_dir():
        pytest.fail(f"{VENDOR} is missing: run `make setup-web`")
    result = _smoke(_fake_package(tmp_path, with_vendor=True))
    assert result.returncode == 0, result.stderr
