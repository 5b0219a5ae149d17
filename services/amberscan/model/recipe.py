"""What the nested CV measured for the default model as it is served, in one place: the backbone
it fine-tunes, the number of views the export averages, and the threshold and figures the CV
reached (a record: each build chooses its own threshold).

`stack/model.sh` exports with these; the k8s export Job and `docs/model.md` state the same. Kept apart from `finetune.py` so reading it needs no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NestedCV:
    """One row of the tile-grouped nested CV (fine-tuning inside every fold, the held-out tiles
    never seen by the backbone): the threshold that gave precision ≥ 0.95 on the pooled held-out
    scores, and the precision and recall there.

    A record of what the recipe reached, not a setting: a build chooses its own threshold on
    its calibration share (`model.promotion.in_calibration_share`, held out from its fine-tune),
    on the machine that built it, since a threshold carried from another CPU's run belongs to
    another build's scores (docs/model.md, section 4)."""

    backbone: str
    threshold: float
    precision: float
    recall: float
    views: int
    command: str


# docs/model.md, section 2, "EfficientNet-Lite1": the nested CV run on one TensorFlow thread (the
# build's own recipe, bit for bit per fold), crops cut at Lite1's 240-px input with the
# antialiased bilinear resize, as `finetune` cuts them and the export's signature takes them; its
# ft-xgb-v1-int8 row: one view, the fine-tuned backbone quantized to INT8 as `export-backbone
# --int8` does, XGBoost on its features. The same CPU's runs: Lite1 with nearest crops 0.933
# INT8 / 0.949 float32, Lite0 0.928 / 0.913.
SERVED_RECIPE = NestedCV(
    backbone="efficientnet-lite1",
    threshold=0.3353,
    precision=0.954,
    recall=0.954,
    views=1,
    command=".venv/bin/python benchmarks/finetune_cv.py "
    "--data ../shared/data/texty-amber/superpixels --threads 1 --view-sets 1 "
    "--backbone efficientnet-lite1 --crop-resample bilinear",
)

# The same run's float32 row (ft-xgb-v1): what TF Serving (the GPU path, which serves the
# SavedModel's float32) gives, so the threshold a classifier trained through it should use.
FLOAT_RECIPE = NestedCV(
    backbone=SERVED_RECIPE.backbone,
    threshold=0.3727,
    precision=0.954,
    recall=0.954,
    views=1,
    command=SERVED_RECIPE.command,
)


@dataclass(frozen=True)
class Draws:
    """Recalls of repeated runs as the rule reads them: their sum, count, lowest and highest.
    `total`, `low` and `high` may be numpy arrays: a grid of draws still to come."""

    total: Any
    count: int
    low: Any
    high: Any

    @classmethod
    def of(cls, values: Sequence[float]) -> Draws:
        return cls(sum(values), len(values), min(values), max(values))

    def with_more(self, value: Any, count: int) -> Draws:
        """These draws and `count` more, each `value`."""
        import numpy as np  # here, not at the top: the CLI parser imports this module, light

        return Draws(
            self.total + count * value,
            self.count + count,
            np.minimum(self.low, value),
            np.maximum(self.high, value),
        )


def gain_and_spread(default: Draws, candidate: Draws) -> tuple[Any, Any]:
    """The rule's two sides: the candidate's gain in mean recall over the default, and the wider
    of the two between-run ranges."""
    import numpy as np  # here, not at the top: the CLI parser imports this module, light

    gain = candidate.total / candidate.count - default.total / default.count
    spread = np.maximum(default.high - default.low, candidate.high - candidate.low)
    return gain, spread


def replaces_default(default_recalls: list[float], candidate_recalls: list[float]) -> bool:
    """The rule for choosing recipes that does not reward noise: a candidate recipe replaces the
    default only when its mean nested-CV recall (at the target precision, over repeated runs
    with different fold seeds) beats the default's by more than the wider of the two recipes'
    between-run ranges. One run each never suffices: the range of one run is zero."""
    if len(default_recalls) < 2 or len(candidate_recalls) < 2:
        return False
    gain, spread = gain_and_spread(Draws.of(default_recalls), Draws.of(candidate_recalls))
    return bool(gain > spread)
