"""INT8 quantization of an OpenVINO backbone: which crops calibrate, what they are fed as, that
the result is repeatable, and bad input. (The real backbone's INT8 features against its float
ones: tests/modelserver/test_runtimes.py.)"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from amberscan.model.quantize import (
    CALIBRATION_CROPS,
    calibration_indices,
    normalise,
    quantize_backbone,
)

META = {"mean": [120.0, 110.0, 100.0], "scale": [60.0, 50.0, 40.0], "reverse_channels": False}


def small_backbone(seed: int = 0) -> Any:
    """Conv → ReLU → conv → global mean: a backbone-shaped OpenVINO model (NHWC float in)."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(seed)
    x = ops.parameter([-1, 32, 32, 3], np.float32, name="x")
    nchw = ops.transpose(x, ops.constant(np.array([0, 3, 1, 2], np.int64)))
    w1 = ops.constant(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32))
    y = ops.relu(ops.convolution(nchw, w1, [1, 1], [1, 1], [1, 1], [1, 1]))
    w2 = ops.constant(rng.normal(0, 0.3, (16, 8, 3, 3)).astype(np.float32))
    y = ops.relu(ops.convolution(y, w2, [2, 2], [1, 1], [1, 1], [1, 1]))
    y = ops.reduce_mean(y, ops.constant(np.array([2, 3], np.int64)), keep_dims=False)
    return ov.Model([y], [x], "small")


def run(model: Any, crops: np.ndarray) -> np.ndarray:
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled.create_infer_request().infer({0: normalise(crops, META)})[0])


def test_calibration_indices_spread_evenly_and_take_all_of_few() -> None:
    assert calibration_indices(5).tolist() == [0, 1, 2, 3, 4]
    picked = calibration_indices(940)
    assert len(picked) == CALIBRATION_CROPS and picked[0] == 0 and picked[-1] == 939
    gaps = np.diff(picked)
    assert gaps.min() >= 3 and gaps.max() <= 4  # 940 / 300: every third or fourth crop
    assert calibration_indices(10, sample=3).tolist() == [0, 4, 9]
    with pytest.raises(ValueError, match="at least one crop"):
        calibration_indices(0)


def test_normalise_is_what_the_servers_preprocessing_computes() -> None:
    crops = np.array([[[[0, 110, 255]]]], dtype=np.uint8)
    np.testing.assert_allclose(normalise(crops, META)[0, 0, 0], [-2.0, 0.0, 155 / 40])
    flipped = normalise(crops, {**META, "reverse_channels": True})[0, 0, 0]
    np.testing.assert_allclose(flipped, [(255 - 120) / 60, 0.0, -100 / 40])
    assert normalise(crops, META).dtype == np.float32


def test_quantized_model_is_close_repeatable_and_different() -> None:
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    held_out = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    want = run(small_backbone(), held_out)
    first = run(quantize_backbone(small_backbone(), crops, META, sample=20), held_out)
    again = run(quantize_backbone(small_backbone(), crops, META, sample=20), held_out)
    np.testing.assert_array_equal(first, again)  # same model and crops: the same INT8 model
    assert not np.array_equal(first, want)  # it did quantize
    relative = np.linalg.norm(first - want, axis=1) / np.linalg.norm(want, axis=1)
    assert np.median(relative) < 0.1


def test_calibration_crops_of_another_size_are_resized_as_the_server_does() -> None:
    """Crops cut at 48 px for a 32 px backbone: calibrated on what the server feeds it (the
    antialiased resize, then the normalisation), so the ranges fit the resized crops."""
    from amberscan.model.backbones import resize_to_input

    rng = np.random.default_rng(2)
    crops = rng.integers(0, 256, (40, 48, 48, 3), dtype=np.uint8)
    held_out = resize_to_input(rng.integers(0, 256, (16, 48, 48, 3), dtype=np.uint8), 32).numpy()
    want = run(small_backbone(), held_out)
    quantized = run(quantize_backbone(small_backbone(), crops, META, sample=20), held_out)
    assert not np.array_equal(quantized, want)
    relative = np.linalg.norm(quantized - want, axis=1) / np.linalg.norm(want, axis=1)
    assert np.median(relative) < 0.1


@pytest.mark.parametrize(
    "crops, what",
    [
        (np.zeros((0, 32, 32, 3), np.uint8), "non-empty"),
        (np.zeros((2, 32, 32, 3), np.float32), "float32"),
        (np.zeros((2, 32, 32), np.uint8), r"\(2, 32, 32\)"),
    ],
)
def test_bad_calibration_crops_are_refused(crops: np.ndarray, what: str) -> None:
    with pytest.raises(ValueError, match=what):
        quantize_backbone(small_backbone(), crops, META)
