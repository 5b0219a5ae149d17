"""A small model server speaking the TF Serving gRPC API, for the local stack and the tests.

It serves the highest version under ``MODEL_DIR/NAME`` (TF Serving's layout and its default
"latest 1" policy) with TensorFlow: ``tensorflow.serving.PredictionService`` (Predict and
GetModelMetadata; the other methods answer UNIMPLEMENTED) and the standard gRPC health service,
which reports SERVING once the model is loaded. Clients written against it work unchanged against
the official TF Serving image (see ``docker/tfserving``).

Inference runs in worker threads, never on the event loop, so health checks and metadata answer
while a batch is being computed.

    python -m amberscan.model.server --model-dir models/serving --name backbone
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from numpy.typing import NDArray
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1:18500"
DEFAULT_SIGNATURE = "serving_default"
SERVICE_NAME = "tensorflow.serving.PredictionService"
# A batch of 64 crops of 224×224×3 is ~9.6 MB, over gRPC's 4 MB default.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
GRACE_S = 5.0


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


class ServedModel:
    """One loaded version of a SavedModel, callable by signature with numpy arrays."""

    def __init__(self, model_dir: Path, name: str, version: int | None = None) -> None:
        """Load ``model_dir/name/version`` (the highest version when `version` is None).

        Raises:
            FileNotFoundError: when no version with a ``saved_model.pb`` exists.
        """
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        found = versions(model_dir, name)
        if not found:
            raise FileNotFoundError(f"no SavedModel under {Path(model_dir) / name}/<version>/")
        if version is None:
            version = found[-1]
        elif version not in found:
            raise FileNotFoundError(f"model {name} has versions {found}, not {version}")
        self.name = name
        self.version = version
        self.path = Path(model_dir) / name / str(version)
        # The SignatureDefs exactly as saved: what TF Serving's GetModelMetadata returns.
        saved = saved_model_pb2.SavedModel.FromString((self.path / "saved_model.pb").read_bytes())
        self.signature_defs = dict(saved.meta_graphs[0].signature_def)
        self._loaded = tf.saved_model.load(str(self.path))
        self.signatures: dict[str, Any] = dict(self._loaded.signatures)
        self.inputs = {key: _input_specs(fn) for key, fn in self.signatures.items()}

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

        if signature not in self.signatures:
            raise ContractViolation(
                f"model {self.name} version {self.version} has no signature {signature!r} "
                f"(has {sorted(self.signatures)})"
            )
        specs = self.inputs[signature]
        missing = sorted(set(specs) - set(inputs))
        extra = sorted(set(inputs) - set(specs))
        if missing or extra:
            raise ContractViolation(
                f"signature {signature!r} expects inputs {sorted(specs)}; "
                f"missing {missing}, unexpected {extra}"
            )
        for key, spec in specs.items():
            _check_input(spec, inputs[key])
        fn = self.signatures[signature]
        outputs = fn(**{key: tf.constant(value) for key, value in inputs.items()})
        unknown = sorted(set(output_filter) - set(outputs))
        if unknown:
            raise ContractViolation(
                f"signature {signature!r} has outputs {sorted(outputs)}, not {unknown}"
            )
        wanted = list(output_filter) or list(outputs)
        return {key: outputs[key].numpy() for key in wanted}


def _input_specs(fn: Any) -> dict[str, TensorSpec]:
    _, kwargs = fn.structured_input_signature
    specs = {}
    for key, spec in kwargs.items():
        shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
        specs[key] = TensorSpec(key, np.dtype(spec.dtype.as_numpy_dtype), shape)
    return specs


def _check_input(spec: TensorSpec, value: NDArray[Any]) -> None:
    if value.dtype != spec.dtype:
        raise ContractViolation(
            f"input {spec.key!r}: expected dtype {spec.dtype.name}, got {value.dtype.name}"
        )
    if spec.shape is None:
        return
    fits = len(value.shape) == len(spec.shape) and all(
        want is None or want == got for want, got in zip(spec.shape, value.shape, strict=True)
    )
    if not fits:
        expected = tuple(-1 if d is None else d for d in spec.shape)
        raise ContractViolation(
            f"input {spec.key!r}: expected shape {expected} (-1 = any), got {tuple(value.shape)}"
        )


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    """Predict and GetModelMetadata for one model; `predict_calls` counts Predict requests."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.model: ServedModel | None = None
        self.predict_calls = 0

    async def _resolve(self, model_spec: Any, context: grpc.aio.ServicerContext) -> ServedModel:
        if model_spec.name != self.name:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: model {model_spec.name!r} "
                f"(this server serves {self.name!r})",
            )
        model = self.model
        if model is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"model {self.name} is loading")
        assert model is not None
        if model_spec.HasField("version") and model_spec.version.value != model.version:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: model {self.name} version "
                f"{model_spec.version.value} (serving version {model.version})",
            )
        if model_spec.version_label:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"model {self.name}: no version label {model_spec.version_label!r} is configured",
            )
        return model

    async def Predict(  # noqa: N802 - the gRPC method name
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        import tensorflow as tf

        self.predict_calls += 1
        model = await self._resolve(request.model_spec, context)
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        try:
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        except Exception as error:  # noqa: BLE001 - any undecodable TensorProto is the caller's
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad input tensor: {error}")
        try:
            outputs = await asyncio.to_thread(
                model.predict, inputs, signature, list(request.output_filter)
            )
        except ContractViolation as error:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"model {self.name} v{model.version}: {error}"
            )
        except tf.errors.InvalidArgumentError as error:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"model {self.name} v{model.version}: {error}"
            )
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.name
        response.model_spec.version.value = model.version
        response.model_spec.signature_name = signature
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    async def GetModelMetadata(  # noqa: N802 - the gRPC method name
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: grpc.aio.ServicerContext,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        model = await self._resolve(request.model_spec, context)
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata_field must be ['signature_def'] (the only field served), got {fields}",
            )
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in model.signature_defs.items():
            signatures.signature_def[key].CopyFrom(sig)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.name
        response.model_spec.version.value = model.version
        response.metadata["signature_def"].Pack(signatures)
        return response


class ModelServer:
    """The gRPC server: binds first (health NOT_SERVING), loads the model, then reports SERVING.

    Usage:
        server = ModelServer(model_dir, "backbone", "127.0.0.1:0")
        await server.start()          # server.address has the bound port
        ...
        await server.stop()
    """

    def __init__(self, model_dir: Path, name: str, address: str = DEFAULT_ADDRESS) -> None:
        self.model_dir = Path(model_dir)
        self.name = name
        self.address = address
        self.servicer = PredictionServicer(name)
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None

    @property
    def model(self) -> ServedModel | None:
        return self.servicer.model

    async def start(self, *, load: bool = True) -> None:
        """Listen on `address` (port 0 picks a free one), then load the model unless told not to.

        Raises:
            FileNotFoundError: no SavedModel under ``model_dir/name``.
            RuntimeError: the address cannot be bound.
        """
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        host, _ = self.address.rsplit(":", 1)
        port = server.add_insecure_port(self.address)
        if port == 0:
            raise RuntimeError(f"model server: cannot bind {self.address}")
        self.address = f"{host}:{port}"
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        self._server = server
        if load:
            await self.load()

    async def load(self) -> ServedModel:
        """Load the highest version (in a thread) and report SERVING."""
        model = await asyncio.to_thread(ServedModel, self.model_dir, self.name)
        self.servicer.model = model
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s version %d on %s", self.name, model.version, self.address)
        return model

    async def _set_health(self, status: Any) -> None:
        for service in ("", SERVICE_NAME, self.name):
            await self.health.set(service, status)

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def stop(self, grace_s: float = GRACE_S) -> None:
        """Report NOT_SERVING, let in-flight calls finish for up to `grace_s`, then stop."""
        if self._server is None:
            return
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace_s)
        self._server = None


async def serve(model_dir: Path, name: str, address: str, stop: asyncio.Event) -> None:
    """Serve until `stop` is set, then shut down gracefully."""
    server = ModelServer(model_dir, name, address)
    await server.start(load=False)
    try:
        loading = asyncio.ensure_future(server.load())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if loading.done():
            loading.result()  # a model that fails to load ends the server with its error
            await stopping
        else:
            loading.cancel()
        log.info("stopping model server on %s", server.address)
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the model server until SIGTERM or SIGINT; returns the process exit code."""
    from amberscan.common.logs import configure_logging

    parser = argparse.ArgumentParser(
        prog="amberscan.model.server", description="TF Serving API model server"
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="holds NAME/VERSION/")
    parser.add_argument("--name", required=True, help="model name, as in ModelSpec.name")
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help="host:port to listen on")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging("model-server", args.log_level)
    if not versions(args.model_dir, args.name):
        log.error("no SavedModel under %s/%s/<version>/", args.model_dir, args.name)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args.model_dir, args.name, args.address, stop)

    try:
        asyncio.run(run())
    except Exception:  # noqa: BLE001 - a server that cannot bind or load exits 1 with the reason
        log.exception("model server %s on %s failed", args.name, args.address)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
