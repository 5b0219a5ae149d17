"""The house keeps its shape: every import runs down the layers of `docs/layout.md`, every
service is a leaf, and the pure domain packages import no I/O, no settings.

The layers, bottom to top: the domain (`errors.py` and `keys.py`, then `geo/` ← `vision/` ←
`model/`), the generated messages (`v1/`), the plumbing (`common/`), the imagery readers
(`imagery/`), the alerting (`alerts/`), the services (one package each), the entry points
(`cli/`, `scanning.py`, `survey.py`). An AST walk over every module under `services/amberscan` (imports at any depth,
relative ones resolved) places each module in its layer and refuses an import of a layer above
it, an import of another service from a service, and a module in no layer at all.

On top of that the domain (`geo/`, `vision/`, `model/`, `errors.py`, `keys.py`) imports from
amberscan only the domain, and no network or database client and no settings loader, and reads
no environment; the imagery readers read no environment either (their configuration is the
settings). Every check is shown to fail on trees with planted forbidden imports.

`python -m tests.test_layering` lists every import that runs back up a level, one a line (and
exits 1 when there is one).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import amberscan

PACKAGE_ROOT = Path(amberscan.__file__).resolve().parent
PURE = ("geo", "vision", "model")
# The modules at the bottom of the domain, which every layer may import.
PURE_ROOT = ("amberscan.errors", "amberscan.keys")
SERVICES = (
    "tiler",
    "segmenter",
    "feature",
    "classifier",
    "aggregator",
    "sink",
    "modelserver",
    "watch",
    "web",
)
ENTRY_POINTS = ("cli", "scanning", "survey")
# Bottom to top: a module may import its own layer and the layers before it. The domain is
# ordered inside too: errors and keys, then geo, vision, model.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("domain", ("errors", "keys", "sources")),
    ("domain", ("geo",)),
    ("domain", ("vision",)),
    ("domain", ("model",)),
    ("generated", ("v1",)),
    ("plumbing", ("common",)),
    ("imagery", ("imagery",)),
    ("alerting", ("alerts",)),
    ("services", SERVICES),
    ("entry points", ENTRY_POINTS),
)
RANK = {top: rank for rank, (_, tops) in enumerate(LAYERS) for top in tops}
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
IMAGERY = "imagery"


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


def top_of(path: Path, root: Path) -> str:
    """The package or root module `path` belongs to: `common` for `common/stage.py`, `keys`
    for `keys.py`, "" for the package's own `__init__.py`."""
    first = path.relative_to(root).parts[0]
    return "" if first == "__init__.py" else first.removesuffix(".py")


def layer_refusal(own: str, module: str, root_name: str = "amberscan") -> str | None:
    """Why a module of the package or root module `own` may not import `module`, or None."""
    parts = module.split(".")
    if parts[0] != root_name or len(parts) == 1 or parts[1].startswith("__"):
        # Another library, the package itself (its imported names are checked one by one), or
        # a dunder of the package such as `__version__`.
        return None
    target = parts[1]
    if target == own:
        return None
    if target not in RANK:
        return f"{root_name}.{target} is in no layer of docs/layout.md"
    if own == "":
        return f"{root_name}/__init__.py imports nothing of its own package"
    if RANK[target] > RANK[own]:
        return f"{target} ({LAYERS[RANK[target]][0]}) is above {own} ({LAYERS[RANK[own]][0]})"
    if target in SERVICES and own in SERVICES:
        return f"{target} is another service: a service imports no other service"
    return None


def layer_violations(root: Path) -> list[str]:
    """Every module under `root` in no layer, and every import that runs back up a level or
    from one service into another, as "package/path.py:line: imports module: reason"."""
    found = []
    for path in sorted(root.rglob("*.py")):
        where = f"{root.name}/{path.relative_to(root).as_posix()}"
        own = top_of(path, root)
        if own and own not in RANK:
            found.append(f"{where}:1: {root.name}.{own} is in no layer of docs/layout.md")
            continue
        refused: set[tuple[int, str]] = set()
        for line, module in imported_modules(path, root):
            reason = layer_refusal(own, module, root.name)
            # `from a.b import c` yields a.b and a.b.c: name the statement once, by a.b.
            if reason and (line, module.rpartition(".")[0]) not in refused:
                refused.add((line, module))
                found.append(f"{where}:{line}: imports {module}: {reason}")
    return sorted(set(found))


def refusal(module: str, root_name: str = "amberscan") -> str | None:
    """Why a pure module may not import `module`, or None when it may."""
    top = module.split(".")[0]
    if top in IO_LIBRARIES:
        return f"{top} is a client library (I/O)"
    if top != root_name or module in (root_name, f"{root_name}.common"):
        # Another library, or a package whose imported names are checked as modules of their own.
        return None
    allowed = [f"{root_name}.{p}" for p in PURE]
    allowed += [m.replace("amberscan", root_name, 1) for m in PURE_ROOT]
    # Also a name imported from an allowed module: `...errors.InvalidImage`.
    if any(module == a or module.startswith(a + ".") for a in allowed):
        return None
    if module.split(".")[1] == "common":
        return f"{module} is common/ code (plumbing: I/O, settings)"
    return f"{module} is not pure domain code (imagery, a service, the CLI, a server or protobuf)"


def violations(root: Path, pure: tuple[str, ...] = PURE) -> list[str]:
    """Every forbidden import or environment read in the pure modules under `root`."""
    files = [f for p in pure for f in sorted((root / p).rglob("*.py"))]
    files += [root / f"{m.rpartition('.')[2]}.py" for m in PURE_ROOT]
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


def imagery_violations(root: Path) -> list[str]:
    """Every import of a layer above imagery, or environment read, in `root`'s imagery package."""
    prefix = f"{root.name}/{IMAGERY}/"
    found = [v for v in layer_violations(root) if v.startswith(prefix)]
    for path in sorted((root / IMAGERY).rglob("*.py")):
        where = f"{root.name}/{path.relative_to(root).as_posix()}"
        for line in environment_reads(path):
            found.append(f"{where}:{line}: reads the environment (settings do)")
    return sorted(set(found))


def test_no_import_runs_back_up_a_level() -> None:
    found = layer_violations(PACKAGE_ROOT)
    assert found == [], "imports that run back up a level:\n" + "\n".join(found)


def test_every_layer_has_its_packages() -> None:
    for _, tops in LAYERS:
        for top in tops:
            assert (PACKAGE_ROOT / top).is_dir() or (PACKAGE_ROOT / f"{top}.py").is_file(), top


def test_the_pure_packages_import_no_io_settings_or_service() -> None:
    found = violations(PACKAGE_ROOT)
    assert found == [], "\n".join(found)


def test_every_pure_package_is_checked() -> None:
    for name in PURE:
        assert list((PACKAGE_ROOT / name).rglob("*.py")), name


def test_the_imagery_layer_imports_no_service() -> None:
    assert list((PACKAGE_ROOT / IMAGERY).rglob("*.py"))
    found = imagery_violations(PACKAGE_ROOT)
    assert found == [], "\n".join(found)


def plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "amberscan" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for folder in ("", "geo", "vision", "model", "v1", "common", "imagery", "tiler", "web", "cli"):
        (root / "amberscan" / folder).mkdir(parents=True, exist_ok=True)
        (root / "amberscan" / folder / "__init__.py").touch()
    return root / "amberscan"


ALLOWED = """
from __future__ import annotations
import json
import numpy as np
from amberscan.errors import InvalidImage
from amberscan import keys
from amberscan.vision.segment import Segmentation
from . import tiles
"""


@pytest.mark.parametrize(
    ("planted", "expected"),
    [
        ("from amberscan.common.settings import Settings\n", "imports amberscan.common.settings"),
        ("from amberscan.common import blobstore\n", "imports amberscan.common.blobstore"),
        ("import amberscan.common.stage\n", "imports amberscan.common.stage"),
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


def test_the_errors_and_keys_modules_are_checked_too(tmp_path: Path) -> None:
    root = plant(tmp_path, {"keys.py": "from amberscan.common.settings import Settings\n"})
    assert violations(root) == [
        "amberscan/keys.py:1: imports amberscan.common.settings: "
        "amberscan.common.settings is common/ code (plumbing: I/O, settings)"
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


# A tree in which every import runs down: each layer imports the ones below it, a service its
# own package, an entry point the services.
LAYERED = {
    "errors.py": "class AmberscanError(Exception): ...\n",
    "keys.py": "import hashlib\n",
    "geo/tiles.py": "from amberscan.errors import AmberscanError\n",
    "vision/crops.py": "from amberscan.geo.tiles import Tile\nfrom amberscan import keys\n",
    "model/detect.py": "from amberscan.vision.crops import load_crop\nfrom ..geo import tiles\n",
    "v1/messages_pb2.py": "from google.protobuf import descriptor\n",
    "common/stage.py": "from amberscan.v1 import messages_pb2\nfrom amberscan.model import detect\n",
    "imagery/dates.py": "from amberscan.common.stage import Stage\n",
    "tiler/core.py": "from amberscan.imagery.dates import normalize_date\n",
    "tiler/service.py": "from amberscan.tiler.core import plan_scan\nfrom . import core\n",
    "web/app.py": "from amberscan.common import stage\nfrom amberscan import keys, errors\n",
    "cli/scan.py": "def run():\n    from amberscan.tiler import service\n    from amberscan import scanning\n",
    "scanning.py": "from amberscan.imagery import dates\nfrom amberscan.cli import scan\n",
}


@pytest.mark.parametrize(
    ("where", "planted", "expected"),
    [
        # A service imported from the plumbing, from imagery, from another service.
        (
            "common/reader.py",
            "from amberscan.feature.tiles import TileImages\n",
            "imports amberscan.feature.tiles: feature (services) is above common (plumbing)",
        ),
        (
            "common/reader.py",
            "def f():\n    from amberscan.feature import service\n",
            ":2: imports amberscan.feature: feature (services) is above common (plumbing)",
        ),
        (
            "imagery/providers/xyz.py",
            "from ...tiler import core\n",
            "imports amberscan.tiler: tiler (services) is above imagery (imagery)",
        ),
        (
            "imagery/grid.py",
            "import amberscan.watch.store\n",
            "imports amberscan.watch.store: watch (services) is above imagery (imagery)",
        ),
        (
            "web/training.py",
            "from amberscan.feature.tiles import TileImages\n",
            "imports amberscan.feature.tiles: feature is another service",
        ),
        (
            "classifier/service.py",
            "from amberscan import web\n",
            "imports amberscan.web: web is another service",
        ),
        # The domain importing the plumbing, the generated messages, or a package above its own.
        (
            "model/classifier.py",
            "from amberscan.common.db import Database\n",
            "imports amberscan.common.db: common (plumbing) is above model (domain)",
        ),
        (
            "keys.py",
            "from amberscan.common import settings\n",
            "imports amberscan.common: common (plumbing) is above keys (domain)",
        ),
        (
            "vision/imageio.py",
            "from amberscan.v1 import messages_pb2\n",
            "imports amberscan.v1: v1 (generated) is above vision (domain)",
        ),
        (
            "vision/crops.py",
            "from amberscan.model.export import CROP_RESAMPLE\n",
            "imports amberscan.model.export: model (domain) is above vision (domain)",
        ),
        (
            "geo/tiles.py",
            "from ..vision import crops\n",
            "imports amberscan.vision: vision (domain) is above geo (domain)",
        ),
        (
            "errors.py",
            "from amberscan.geo.tiles import Tile\n",
            "imports amberscan.geo.tiles: geo (domain) is above errors (domain)",
        ),
        # The plumbing importing imagery; a service importing an entry point.
        (
            "common/registry.py",
            "from amberscan.imagery.providers import provider_for\n",
            "imports amberscan.imagery.providers: imagery (imagery) is above common (plumbing)",
        ),
        (
            "web/queries.py",
            "from amberscan import scanning\n",
            "imports amberscan.scanning: scanning (entry points) is above web (services)",
        ),
        # A package or module in no layer, and an import of one.
        ("extras/thing.py", "import json\n", "amberscan.extras is in no layer of docs/layout.md"),
        (
            "common/data.py",
            "from amberscan.extras import thing\n",
            "imports amberscan.extras: amberscan.extras is in no layer of docs/layout.md",
        ),
        (
            "__init__.py",
            "from amberscan.common import settings\n",
            "amberscan/__init__.py imports nothing of its own package",
        ),
    ],
)
def test_the_layer_check_fails_on_a_planted_import_back_up(
    tmp_path: Path, where: str, planted: str, expected: str
) -> None:
    root = plant(tmp_path, {**LAYERED, where: planted})
    found = layer_violations(root)
    assert found and all(v.startswith(f"amberscan/{where}:") for v in found), found
    assert any(expected in v for v in found), found


def test_the_layer_check_passes_a_clean_tree(tmp_path: Path) -> None:
    assert layer_violations(plant(tmp_path, LAYERED)) == []


def test_the_layer_check_lists_every_offence_with_file_and_line(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            **LAYERED,
            "common/features_reader.py": "import json\n\nfrom amberscan.feature import service\n",
            "model/export.py": "from amberscan.vision import crops\nfrom amberscan.web import app\n",
        },
    )
    assert layer_violations(root) == [
        "amberscan/common/features_reader.py:3: imports amberscan.feature: "
        "feature (services) is above common (plumbing)",
        "amberscan/model/export.py:2: imports amberscan.web: web (services) is above model (domain)",
    ]


def main(argv: list[str]) -> int:
    """Print every import under the package directory `argv[0]` (default: the installed
    amberscan) that runs back up a level, one a line; 1 when there is one."""
    root = Path(argv[0]).resolve() if argv else PACKAGE_ROOT
    found = layer_violations(root)
    for line in found:
        print(line)
    checked = len(list(root.rglob("*.py")))
    print(f"{len(found)} found in {checked} modules of {root}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
