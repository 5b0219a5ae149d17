"""What computes a served model version: TensorFlow on the SavedModel, or OpenVINO on the bare
backbone exported beside it. Both honour one contract, the SavedModel's `serving_default`
signature (uint8 `images` [N, H, W, 3] in, float32 `features` [N, D] out), checked here before
anything runs.

The OpenVINO runtime is the CPU path (TF Serving stays the GPU path): `export_backbone` writes the
backbone without its preprocessing as OpenVINO IR (`openvino/backbone.xml`), and the runtime does
around it what the serving graph does — resize to the input size (antialiased bilinear, as
`tf.image.resize`; the identity at that size), the backbone's normalisation (compiled into the
model), and the mean over the dihedral views the export names — so its features match the
SavedModel's (tests/modelserver/test_runtimes.py says how closely).

An export made with calibration crops also holds that backbone quantized to INT8
(`openvino/backbone-int8.xml`, `model/quantize.py`); the runtime serves it by default
(`precision="auto"`), so the classifier trained through this server learns INT8 features. Its
features are within a few per cent of the float ones (the same test says how far), not equal:
a classifier trained on one precision should be served by the same one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from amberscan.model.quantize import normalise_at

DEFAULT_SIGNATURE = "serving_default"
OPENVINO_DIR = "openvino"
OPENVINO_MODEL = "backbone.xml"
METADATA_FILE = "amberscan.json"
RUNTIMES = ("tensorflow", "openvino")
PRECISIONS = ("auto", "int8", "f32")


class ContractViolation(ValueError):
    """A request that does not fit the model's signature (becomes INVALID_ARGUMENT)."""


def versions(model_dir: Path, name: str) -> list[int]:
    """The versions present under ``model_dir/name``, ascending (numeric dirs with a SavedModel)."""
    base = Path(model_dir) / name
    if not base.is_dir():
        return []
    return sorted(
        int(child.name)
        for child in base.iterdir()
        if child.name.isdigit() and (child / "saved_model.pb").is_file()
    )


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: its key, dtype and shape (None for unknown dims)."""

    key: str
    dtype: np.dtype[Any]
    shape: tuple[int | None, ...] | None


class Runtime(Protocol):
    name: str
    version: int
    path: Path
    runtime: str
    precision: str  # what the backbone computes in: "f32" or "int8"
    signature_defs: dict[str, Any]
    inputs: dict[str, dict[str, TensorSpec]]

    def predict(
        self,
        inputs: Mapping[str, NDArray[Any]],
        signature: str = DEFAULT_SIGNATURE,
        output_filter: Sequence[str] = (),
    ) -> dict[str, NDArray[Any]]: ...

    def batchable(self, signature: str, inputs: Mapping[str, Any]) -> bool: ...


def resolve_version(model_dir: Path, name: str, version: int | None) -> tuple[int, Path]:
    found = versions(model_dir, name)
    if not found:
        raise FileNotFoundError(f"no SavedModel under {Path(model_dir) / name}/<version>/")
    if version is None:
        version = found[-1]
    elif version not in found:
        raise FileNotFoundError(f"model {name} has versions {found}, not {version}")
    return version, Path(model_dir) / name / str(version)


def signature_defs(path: Path) -> dict[str, Any]:
    """The SignatureDefs exactly as saved: what TF Serving's GetModelMetadata returns."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    return dict(saved.meta_graphs[0].signature_def)


def _specs_of(signature_def: Any) -> dict[str, TensorSpec]:
    import tensorflow as tf

    specs = {}
    for key, info in signature_def.inputs.items():
        shape = (
            None
            if info.tensor_shape.unknown_rank
            else tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
        )
        specs[key] = TensorSpec(key, np.dtype(tf.dtypes.as_dtype(info.dtype).as_numpy_dtype), shape)
    return specs


def check_inputs(
    name: str,
    version: int,
    signatures: Mapping[str, Mapping[str, TensorSpec]],
    inputs: Mapping[str, NDArray[Any]],
    signature: str,
) -> None:
    """Raise ContractViolation unless `inputs` fit `signature`'s names, dtypes and shapes."""
    if signature not in signatures:
        raise ContractViolation(
            f"model {name} version {version} has no signature {signature!r} "
            f"(has {sorted(signatures)})"
        )
    specs = signatures[signature]
    missing = sorted(set(specs) - set(inputs))
    extra = sorted(set(inputs) - set(specs))
    if missing or extra:
        raise ContractViolation(
            f"signature {signature!r} expects inputs {sorted(specs)}; "
            f"missing {missing}, unexpected {extra}"
        )
    for key, spec in specs.items():
        value = inputs[key]
        if value.dtype != spec.dtype:
            raise ContractViolation(
                f"input {spec.key!r}: expected dtype {spec.dtype.name}, got {value.dtype.name}"
            )
        if spec.shape is None:
            continue
        fits = len(value.shape) == len(spec.shape) and all(
            want is None or want == got for want, got in zip(spec.shape, value.shape, strict=True)
        )
        if not fits:
            expected = tuple(-1 if d is None else d for d in spec.shape)
            raise ContractViolation(
                f"input {spec.key!r}: expected shape {expected} (-1 = any), got {tuple(value.shape)}"
            )


class SavedModelRuntime:
    """One version of a SavedModel, run by TensorFlow."""

    runtime = "tensorflow"
    precision = "f32"

    def __init__(self, model_dir: Path, name: str, version: int | None = None) -> None:
        """Load ``model_dir/name/version`` (the highest version when `version` is None).

        Raises:
            FileNotFoundError: when no version with a ``saved_model.pb`` exists.
        """
        import tensorflow as tf

        self.name = name
        self.version, self.path = resolve_version(model_dir, name, version)
        self.signature_defs = signature_defs(self.path)
        self._loaded = tf.saved_model.load(str(self.path))
        self.signatures: dict[str, Any] = dict(self._loaded.signatures)
        self.inputs = {key: _specs_of(self.signature_defs[key]) for key in self.signatures}

    def batchable(self, signature: str, inputs: Mapping[str, Any]) -> bool:
        return signature == DEFAULT_SIGNATURE and set(inputs) == {"images"}

    def predict(
        self,
        inputs: Mapping[str, NDArray[Any]],
        signature: str = DEFAULT_SIGNATURE,
        output_filter: Sequence[str] = (),
    ) -> dict[str, NDArray[Any]]:
        """Run `signature` on `inputs`; checks names, dtypes and shapes first.

        Raises:
            ContractViolation: an unknown signature or output, a missing or extra input, or an
                input whose dtype or shape the signature does not accept.
        """
        import tensorflow as tf

        check_inputs(self.name, self.version, self.inputs, inputs, signature)
        fn = self.signatures[signature]
        outputs = fn(**{key: tf.constant(value) for key, value in inputs.items()})
        unknown = sorted(set(output_filter) - set(outputs))
        if unknown:
            raise ContractViolation(
                f"signature {signature!r} has outputs {sorted(outputs)}, not {unknown}"
            )
        wanted = list(output_filter) or list(outputs)
        return {key: outputs[key].numpy() for key in wanted}


def dihedral_views(images: NDArray[Any], views: Sequence[int]) -> NDArray[Any]:
    """The views `k` of [N, H, W, C] square images, stacked view-major: [len(views)·N, H, W, C].

    View k is a counter-clockwise rotation by k·90° (k mod 4), then, for k ≥ 4, a left-right flip:
    what `tf.image.rot90` and `tf.image.flip_left_right` give in the serving graph.
    """
    out = []
    for k in views:
        view = np.rot90(images, k % 4, axes=(1, 2))
        out.append(view[:, :, ::-1] if k >= 4 else view)
    return np.ascontiguousarray(np.concatenate(out))


def compile_config(streams: int = 1, threads: int = 0) -> dict[str, Any]:
    """OpenVINO CPU settings of the runtime: f32, `streams` streams, `threads` threads (0: all)."""
    # f32 on purpose: CPUs with bf16 units would otherwise compute in bf16, 3 % off the
    # SavedModel's features (measured), enough to move scores near the threshold.
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": "f32",
        "NUM_STREAMS": str(max(streams, 1)),
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def compile_for_uint8(
    core: Any, model: Any, metadata: dict[str, Any], config: dict[str, Any]
) -> Any:
    """The bare backbone `model` compiled behind the serving graph's pre-processing: uint8 NHWC
    pixels in; the cast and the normalisation that `metadata` (the export's "openvino" entry)
    names run inside the compiled model, as they do inside the serving graph."""
    import openvino as ov

    ppp = ov.preprocess.PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NHWC"))
    steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
    if metadata.get("reverse_channels"):
        steps.reverse_channels()
    steps.mean([float(v) for v in metadata["mean"]])
    steps.scale([float(v) for v in metadata["scale"]])
    return core.compile_model(ppp.build(), "CPU", config)


class OpenVinoRuntime:
    """One version's bare backbone (``VERSION/openvino/backbone.xml``), run by OpenVINO on CPU,
    behind the version's SavedModel signature."""

    runtime = "openvino"

    def __init__(
        self,
        model_dir: Path,
        name: str,
        version: int | None = None,
        *,
        threads: int = 0,
        streams: int = 1,
        precision: str = "auto",
    ) -> None:
        """`precision`: "auto" serves the INT8 backbone where the export has one, else f32.

        Raises:
            FileNotFoundError: The version has no OpenVINO export (or no INT8 one, for "int8").
            ValueError: An unknown `precision`.
        """
        import openvino as ov

        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
        self.name = name
        self.version, self.path = resolve_version(model_dir, name, version)
        ir = self.path / OPENVINO_DIR / OPENVINO_MODEL
        if not ir.is_file():
            raise FileNotFoundError(
                f"{ir} missing: export the backbone with `amberscan export-backbone` (it writes the "
                "OpenVINO model), or serve this version with "
                "AMBERSCAN_MODEL_SERVER_RUNTIME=tensorflow"
            )
        self.signature_defs = signature_defs(self.path)
        self.inputs = {key: _specs_of(sig) for key, sig in self.signature_defs.items()}
        meta = json.loads((self.path / METADATA_FILE).read_text())
        self.metadata = meta["openvino"]
        int8 = self.metadata.get("int8")
        if precision == "int8" and not int8:
            raise FileNotFoundError(
                f"{self.path}: no INT8 backbone in this export (export it with "
                f"`amberscan export-backbone --int8 DATA`), or serve it with precision f32"
            )
        if int8 and precision != "f32":
            ir = self.path / str(int8["file"])
            self.precision = "int8"
        else:
            self.precision = "f32"
        self.input_size = int(meta["input_size"])
        self.views = tuple(int(k) for k in self.metadata["views"])
        core = ov.Core()
        config = compile_config(streams, threads)
        self._compiled = compile_for_uint8(core, core.read_model(ir), self.metadata, config)
        # Crops of another size are resized (float) and normalised here, then go to the model
        # as it was exported, so nothing is rounded on the way.
        self._floats = core.compile_model(core.read_model(ir), "CPU", config)
        self.threads = int(self._compiled.get_property("INFERENCE_NUM_THREADS"))
        self.streams = int(self._compiled.get_property("NUM_STREAMS"))

    def batchable(self, signature: str, inputs: Mapping[str, Any]) -> bool:
        return signature == DEFAULT_SIGNATURE and set(inputs) == {"images"}

    def predict(
        self,
        inputs: Mapping[str, NDArray[Any]],
        signature: str = DEFAULT_SIGNATURE,
        output_filter: Sequence[str] = (),
    ) -> dict[str, NDArray[Any]]:
        """The SavedModel's `serving_default`, computed by OpenVINO.

        Raises:
            ContractViolation: as `SavedModelRuntime.predict`; any signature but the default.
        """
        check_inputs(self.name, self.version, self.inputs, inputs, signature)
        if signature != DEFAULT_SIGNATURE:
            raise ContractViolation(f"the OpenVINO runtime serves {DEFAULT_SIGNATURE!r} only")
        unknown = sorted(set(output_filter) - {"features"})
        if unknown:
            raise ContractViolation(
                f"signature {signature!r} has outputs ['features'], not {unknown}"
            )
        images = inputs["images"]
        if not len(images):
            return {"features": np.zeros((0, self.feature_dim), dtype=np.float32)}
        size = self.input_size
        compiled = self._compiled
        if images.shape[1:3] != (size, size):
            images = normalise_at(images, size, self.metadata)
            compiled = self._floats
        batch = dihedral_views(images, self.views) if self.views != (0,) else images
        request = compiled.create_infer_request()
        features = request.infer({0: batch})[0].astype(np.float32, copy=False)
        features = features.reshape(len(self.views), len(images), -1).mean(axis=0)
        return {"features": np.ascontiguousarray(features, dtype=np.float32)}

    @property
    def feature_dim(self) -> int:
        return int(self._compiled.outputs[0].get_partial_shape()[1].get_length())


def load_runtime(
    model_dir: Path,
    name: str,
    runtime: str = "auto",
    *,
    threads: int = 0,
    streams: int = 1,
    precision: str = "auto",
    version: int | None = None,
) -> Runtime:
    """Version `version` of `name` (the newest when None), on `runtime` ("auto": OpenVINO where the version has an
    OpenVINO export, else TensorFlow); `precision` as `OpenVinoRuntime`'s (TensorFlow serves
    the SavedModel's float32)."""
    if runtime not in ("auto", *RUNTIMES):
        raise ValueError(f"unknown runtime {runtime!r}; expected auto, tensorflow or openvino")
    version, path = resolve_version(model_dir, name, version)
    has_ir = (path / OPENVINO_DIR / OPENVINO_MODEL).is_file()
    if runtime == "openvino" or (runtime == "auto" and has_ir):
        return OpenVinoRuntime(
            model_dir, name, version, threads=threads, streams=streams, precision=precision
        )
    if precision == "int8":
        raise ValueError(
            f"precision int8 needs the OpenVINO runtime, but {path} is served by TensorFlow "
            "(float32): use AMBERSCAN_MODEL_SERVER_RUNTIME=openvino on an export made with --int8"
        )
    if threads:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised in this process (tests): keep its setting
            pass
    return SavedModelRuntime(model_dir, name, version)
