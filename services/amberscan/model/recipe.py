"""What the nested CV measured for the default model as it is served, in one place: the number
of views the export averages, the threshold the classifier uses and the figures to expect.

`stack/model.sh` exports and trains with these, and prints them; the k8s export Job and
`docs/model.md` state the same. Kept apart from `finetune.py` so reading it needs no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NestedCV:
    """One row of the tile-grouped nested CV (fine-tuning inside every fold, the held-out tiles
    never seen by the backbone): the threshold that gave precision ≥ 0.95 on the pooled held-out
    scores, and the precision and recall there.

    The default build fine-tunes on all crops, so no held-out data is left to calibrate it on:
    it uses the threshold its recipe reached in the CV. Builds are repeatable on one machine (the
    fine-tune runs on one TensorFlow thread), so every build there serves the same verdicts."""

    threshold: float
    precision: float
    recall: float
    views: int
    command: str


# docs/model.md, "The default recipe": of the view ablation in one run, 1 view had the highest
# recall at precision 0.95 (8 views: 0.851) for an eighth of the backbone's cost.
SERVED_RECIPE = NestedCV(
    threshold=0.6047,
    precision=0.950,
    recall=0.882,
    views=1,
    command=".venv/bin/python benchmarks/finetune_cv.py "
    "--data ../shared/data/texty-amber/superpixels --threads 2",
)
