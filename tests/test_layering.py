"""The house keeps its shape: the pure domain packages import no I/O, no settings, no service;
the imagery layer imports no service.

An AST walk over every module of `geo/`, `vision/` and `model/` (imports at any depth, relative
ones resolved, `os.environ` and `os.getenv` too). From amberscan they may import only each other
and the pure corners of `common/` (`errors`, `keys`); anything else of amberscan (the other
`common/` modules, which do I/O or read settings; the imagery readers; every service package; the
CLI; the model server; the generated protobuf code, which lives in runners) and the network and
database clients are refused.

The same walk over `imagery/` (the imagery readers, above the plumbing and below the services):
from amberscan it may import the domain, `common/`, the generated messages and itself; a service
package, the CLI, the web app, the model server or the scan command's module is refused, and so
is reading the environment (its configuration is the settings). Both checks are shown to fail on
trees with planted forbidden imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import amberscan

PACKAGE_ROOT = Path(amberscan.__file__).resolve().parent
PURE = ("geo", "vision", "model")
# The corners of common/ that are pure themselves (checked below by the same rules).
PURE_COMMON = ("amberscan.common.errors", "amberscan.common.keys")
# Clients of the servers amberscan talks to, and the settings loader: never in the domain.
IO_LIBRARIES = (
    "aiokafka",
    "kafka",
    "aiohttp",
    "requests",
    "httpx",
    "urllib3",
    "minio",
    "boto3",
    "grpc",
    "grpc_health",
    "tensorflow_serving",
    "psycopg",
    "psycopg_pool",
    "prometheus_client",
    "pydantic_settings",
)
# The imagery layer and what it stands on: the domain, the plumbing, the generated messages.
IMAGERY = "imagery"
BELOW_IMAGERY = (*PURE, "common", "v1", IMAGERY)


def module_name(path: Path, root: Path) -> str:
    """The dotted module name of `path`, a file under the package directory `root`."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([root.name, *parts])


def imported_modules(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in `path`, relative imports made absolute.

    `from amberscan.common import settings` yields `amberscan.common.settings`: the names
    imported from a package may be its modules.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path, root)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            yield node.lineno, origin
            for alias in node.names:
                yield node.lineno, f"{origin}.{alias.name}"


def environment_reads(path: Path) -> Iterator[int]:
    """Lines of `path` that read the environment (`os.environ`, `os.getenv`)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "getenv", "environb")
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            yield node.lineno


def refusal(module: str, root_name: str = "amberscan") -> str | None:
    """Why a pure module may not import `module`, or None when it may."""
    top = module.split(".")[0]
    if top in IO_LIBRARIES:
        return f"{top} is a client library (I/O)"
    if top != root_name or module in (root_name, f"{root_name}.common"):
        # Another library, or a package whose imported names are checked as modules of their own.
        return None
    allowed = [f"{root_name}.{p}" for p in PURE]
    allowed += [m.replace("amberscan", root_name, 1) for m in PURE_COMMON]
    # Also a name imported from an allowed module: `...common.errors.InvalidImage`.
    if any(module == a or module.startswith(a + ".") for a in allowed):
        return None
    if module.split(".")[1] == "common":
        return f"{module} is common/ code that does I/O or reads settings"
    return f"{module} is not pure domain code (imagery, a service, the CLI, a server or protobuf)"


def violations(root: Path, pure: tuple[str, ...] = PURE) -> list[str]:
    """Every forbidden import or environment read in the pure packages under `root`."""
    files = [f for p in pure for f in sorted((root / p).rglob("*.py"))]
    files += [root / "common" / f"{m.rpartition('.')[2]}.py" for m in PURE_COMMON]
    found = []
    for path in files:
        where = path.relative_to(root).as_posix()
        if not path.exists():
            continue
        refused: set[tuple[int, str]] = set()
        for line, module in imported_modules(path, root):
            reason = refusal(module, root.name)
            # `from a.b import c` yields a.b and a.b.c: name the statement once, by a.b.
            if reason and (line, module.rpartition(".")[0]) not in refused:
                refused.add((line, module))
                found.append(f"{root.name}/{where}:{line}: imports {module}: {reason}")
        for line in environment_reads(path):
            found.append(f"{root.name}/{where}:{line}: reads the environment (settings do)")
    return sorted(set(found))


def imagery_refusal(module: str, root_name: str = "amberscan") -> str | None:
    """Why an imagery module may not import `module`, or None when it may."""
    parts = module.split(".")
    if parts[0] != root_name or len(parts) == 1:
        return None
    if parts[1] in BELOW_IMAGERY:
        return None
    return f"{module} is above the imagery layer (a service, the CLI, a server or an entry point)"


def imagery_violations(root: Path) -> list[str]:
    """Every import of a layer above imagery, or environment read, in `root`'s imagery package."""
    found = []
    for path in sorted((root / IMAGERY).rglob("*.py")):
        where = path.relative_to(root).as_posix()
        refused: set[tuple[int, str]] = set()
        for line, module in imported_modules(path, root):
            reason = imagery_refusal(module, root.name)
            if reason and (line, module.rpartition(".")[0]) not in refused:
                refused.add((line, module))
                found.append(f"{root.name}/{where}:{line}: imports {module}: {reason}")
        for line in environment_reads(path):
            found.append(f"{root.name}/{where}:{line}: reads the environment (settings do)")
    return sorted(set(found))


def test_the_pure_packages_import_no_io_settings_or_service() -> None:
    assert violations(PACKAGE_ROOT) == []


def test_every_pure_package_is_checked() -> None:
    for name in PURE:
        assert list((PACKAGE_ROOT / name).rglob("*.py")), name


def test_the_imagery_layer_imports_no_service() -> None:
    assert list((PACKAGE_ROOT / IMAGERY).rglob("*.py"))
    assert imagery_violations(PACKAGE_ROOT) == []


def plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "amberscan" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for folder in ("", "geo", "vision", "model", "common", "imagery", "tiler"):
        (root / "amberscan" / folder).mkdir(parents=True, exist_ok=True)
        (root / "amberscan" / folder / "__init__.py").touch()
    return root / "amberscan"


ALLOWED = """
from __future__ import annotations
import json
import numpy as np
from amberscan.common.errors import InvalidImage
from amberscan.common import keys
from amberscan.vision.segment import Segmentation
from . import tiles
"""


@pytest.mark.parametrize(
    ("planted", "expected"),
    [
        ("from amberscan.common.settings import Settings\n", "imports amberscan.common.settings"),
        ("from amberscan.common import blobstore\n", "imports amberscan.common.blobstore"),
        ("import amberscan.common.kafka\n", "imports amberscan.common.kafka"),
        ("from ..common.db import Database\n", "imports amberscan.common.db"),
        ("from .. import tiler\n", "imports amberscan.tiler: amberscan.tiler is not pure"),
        ("from amberscan.tiler.core import plan_scan\n", "imports amberscan.tiler.core"),
        ("from amberscan.imagery.dates import normalize_date\n", "imports amberscan.imagery"),
        ("from amberscan import imagery\n", "imports amberscan.imagery: amberscan.imagery is"),
        ("from amberscan.web import app\n", "imports amberscan.web"),
        ("from amberscan.modelserver import server\n", "imports amberscan.modelserver"),
        ("from amberscan.v1 import messages_pb2\n", "imports amberscan.v1"),
        ("import aiokafka\n", "imports aiokafka: aiokafka is a client library"),
        ("from aiohttp import web\n", "imports aiohttp"),
        ("from minio import Minio\n", "imports minio"),
        ("import grpc\n", "imports grpc"),
        ("import psycopg\n", "imports psycopg"),
        ("def f():\n    from amberscan.sink import service\n", ":2: imports amberscan.sink"),
        ("import os\nURL = os.environ['X']\n", ":2: reads the environment"),
    ],
)
def test_the_check_fails_on_a_planted_forbidden_import(
    tmp_path: Path, planted: str, expected: str
) -> None:
    root = plant(tmp_path, {"geo/tiles.py": ALLOWED, "geo/planted.py": planted})
    found = violations(root)
    assert found and all(v.startswith("amberscan/geo/planted.py:") for v in found), found
    assert any(expected in v for v in found), found


def test_the_check_passes_a_clean_tree(tmp_path: Path) -> None:
    assert violations(plant(tmp_path, {"vision/a.py": ALLOWED, "model/b.py": ALLOWED})) == []


def test_the_allowed_common_modules_are_checked_too(tmp_path: Path) -> None:
    root = plant(tmp_path, {"common/keys.py": "from amberscan.common.settings import Settings\n"})
    assert violations(root) == [
        "amberscan/common/keys.py:1: imports amberscan.common.settings: "
        "amberscan.common.settings is common/ code that does I/O or reads settings"
    ]


IMAGERY_ALLOWED = """
from __future__ import annotations
import aiohttp
import rasterio
from amberscan.common.settings import Settings
from amberscan.common import blobstore
from amberscan.geo.tiles import Tile
from amberscan.vision.imageio import decode_image
from amberscan.v1 import messages_pb2
from amberscan.imagery.dates import normalize_date
from ..dates import date_in_range
from . import base
"""


@pytest.mark.parametrize(
    ("planted", "expected"),
    [
        ("from amberscan.tiler.core import plan_scan\n", "imports amberscan.tiler.core: "),
        ("from amberscan.tiler import demo\n", "imports amberscan.tiler: "),
        ("from ...tiler import service\n", "imports amberscan.tiler: "),
        ("from amberscan.watch.store import WatchStore\n", "imports amberscan.watch.store"),
        ("import amberscan.cli.scan\n", "imports amberscan.cli.scan"),
        ("from amberscan import scanning\n", "imports amberscan.scanning: "),
        ("from amberscan.web import app\n", "imports amberscan.web"),
        ("from amberscan.modelserver import server\n", "imports amberscan.modelserver"),
        ("def f():\n    from amberscan.sink import service\n", ":2: imports amberscan.sink"),
        ("import os\nURL = os.getenv('X')\n", ":2: reads the environment"),
    ],
)
def test_the_imagery_check_fails_on_a_planted_service_import(
    tmp_path: Path, planted: str, expected: str
) -> None:
    root = plant(
        tmp_path,
        {
            "imagery/providers/__init__.py": "",
            "imagery/providers/xyz.py": IMAGERY_ALLOWED,
            "imagery/providers/planted.py": planted,
        },
    )
    found = imagery_violations(root)
    where = "amberscan/imagery/providers/planted.py:"
    assert found and all(v.startswith(where) for v in found), found
    assert any(expected in v for v in found), found


def test_the_imagery_check_passes_a_clean_tree(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {"imagery/providers/__init__.py": "", "imagery/providers/xyz.py": IMAGERY_ALLOWED},
    )
    assert imagery_violations(root) == []
