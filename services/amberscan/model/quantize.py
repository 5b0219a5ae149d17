"""INT8 post-training quantization of the bare backbone (OpenVINO), calibrated on crops.

The served contract does not change: uint8 crops in, float32 features out. The backbone's
convolutions and matrix products run in INT8 (NNCF's MIXED preset: symmetric weights,
asymmetric activations where they are not ReLU-like), with the activation ranges measured on
`CALIBRATION_CROPS` crops fed exactly as the model server feeds them (the same normalisation).
Deterministic: the same model and crops give the same quantized model (NNCF's statistics are
min/max and means over a fixed, ordered sample; nothing is drawn at random).

What it costs in quality is measured by the nested CV (`benchmarks/finetune_cv.py`, the
`ft-xgb-v1-int8` row: the backbone fine-tuned and quantized inside every fold, the classifier
trained on INT8 features), and what it saves by `benchmarks/int8.py` and `make bench`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

# NNCF's own default sample size; more crops moved no range measurably in the INT8 bench.
CALIBRATION_CROPS = 300


def calibration_indices(count: int, sample: int = CALIBRATION_CROPS) -> NDArray[np.intp]:
    """`sample` indices spread evenly over `count` items (all of them when there are fewer), so
    a sorted list of crops gives both classes and many tiles, the same ones every time."""
    if count < 1:
        raise ValueError("calibration needs at least one crop")
    if count <= sample:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, sample).round().astype(np.intp))


def normalise(images: NDArray[Any], metadata: Mapping[str, Any]) -> NDArray[np.float32]:
    """What the model server's compiled pre-processing makes of NHWC crops (uint8, or float
    pixels after a resize): float32, channels reversed if the export says so, minus the mean,
    divided by the scale. The model server uses it for crops it resizes itself."""
    pixels = np.asarray(images, dtype=np.float32)
    if metadata.get("reverse_channels"):
        pixels = pixels[..., ::-1]
    mean = np.asarray(metadata["mean"], dtype=np.float32)
    scale = np.asarray(metadata["scale"], dtype=np.float32)
    return np.ascontiguousarray((pixels - mean) / scale, dtype=np.float32)


def normalise_at(
    images: NDArray[Any], size: int, metadata: Mapping[str, Any]
) -> NDArray[np.float32]:
    """What the model server feeds the bare backbone for NHWC crops of any size: resized to
    `size` (`backbones.resize_to_input`) unless already there, then normalised."""
    if images.shape[1:3] != (size, size):
        from amberscan.model.backbones import resize_to_input

        images = resize_to_input(images, size).numpy()
    return normalise(images, metadata)


def quantize_backbone(
    model: Any,
    crops: NDArray[np.uint8],
    metadata: Mapping[str, Any],
    sample: int = CALIBRATION_CROPS,
) -> Any:
    """The OpenVINO backbone `model` (float input, normalised) quantized to INT8.

    Args:
        model: An `openvino.Model` of the bare backbone, as `export_backbone` writes it.
        crops: [N, H, W, 3] uint8 crops, e.g. the training crops; those not at the model's
            input size are resized (`backbones.resize_to_input`) as the model server resizes them.
        metadata: The export's "openvino" entry (mean, scale, reverse_channels).
        sample: How many of `crops` calibrate (spread evenly over them).

    Returns:
        The quantized `openvino.Model` (same inputs and outputs).

    Raises:
        ValueError: `crops` is not a non-empty [N, H, W, 3] uint8 array.
    """
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3 or not len(crops):
        raise ValueError(
            f"calibration crops must be a non-empty [N, H, W, 3] uint8 array, got "
            f"{crops.dtype} {crops.shape}"
        )
    import nncf

    size = model.input(0).get_partial_shape()[1].get_length()
    chosen = normalise_at(crops[calibration_indices(len(crops), sample)], size, metadata)
    batches = [chosen[i : i + 1] for i in range(len(chosen))]
    return nncf.quantize(
        model,
        nncf.Dataset(batches),
        subset_size=len(batches),
        preset=nncf.QuantizationPreset.MIXED,
    )
