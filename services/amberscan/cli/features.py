"""Feature vectors through the model server, for the commands that score crops.

Imported inside the commands' `run`, never at parser build time: it pulls in gRPC and numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray

from amberscan.common import served_features as served
from amberscan.common.served_features import ServedBackbone
from amberscan.common.settings import Settings
from amberscan.feature.core import backbone_version
from amberscan.model.classifier import Classifier, ClassifierError
from amberscan.model.dataset import LabelledCrop
from amberscan.vision.crops import load_crop

# The crops to send, cut at the size the served model takes: an iterable of crops, or a loader
# called with a crop's index (see `extract`).
CropsAt: TypeAlias = Callable[
    [int], Iterable[NDArray[np.uint8]] | Callable[[int], NDArray[np.uint8]]
]


async def served_features(
    settings: Settings,
    crops_at: CropsAt,
    count: int,
    *,
    address: str | None = None,
    name: str | None = None,
    classifier: Classifier | None = None,
    progress: str | None = None,
) -> tuple[ServedBackbone, NDArray[np.float32]]:
    """The served backbone and the features of `count` crops, `crops_at(S)` with S the served
    model's crop size (see `extract`).

    Raises:
        ClassifierError: `classifier` was trained on another backbone than the one served.
    """
    # Looked up on the module when called, as the commands did before they shared this helper.
    async with served.client_for(settings, address, name) as client:
        # A classifier gets the backbone version it was trained on while the server keeps it
        # loaded (during a rollout both are); anything else gets the newest.
        version = backbone_version(classifier.backbone, client.model_name) if classifier else None
        backbone = await served.served_backbone(client, version)
        if classifier is not None:
            check_backbone(classifier, backbone)
        crops = crops_at(backbone.crop_size)
        features = await served.extract(client, crops, count, progress=progress, version=version)
        return backbone, features


async def labelled_features(
    settings: Settings,
    crops: Sequence[LabelledCrop],
    *,
    address: str | None = None,
    name: str | None = None,
    classifier: Classifier | None = None,
    progress: str | None = None,
) -> tuple[ServedBackbone, NDArray[np.float32]]:
    """`served_features` of labelled crop files, each decoded in a thread while the server works."""
    return await served_features(
        settings,
        lambda size: lambda i: load_crop(crops[i].path, size),
        len(crops),
        address=address,
        name=name,
        classifier=classifier,
        progress=progress,
    )


def check_backbone(classifier: Classifier, backbone: ServedBackbone) -> None:
    """Refuse to score features of another backbone than the classifier learnt on."""
    if classifier.backbone and classifier.backbone != backbone.label:
        raise ClassifierError(
            f"classifier {classifier.version} was trained on backbone {classifier.backbone}, "
            f"but the model server serves {backbone.label}: retrain (make model) or serve that version"
        )
