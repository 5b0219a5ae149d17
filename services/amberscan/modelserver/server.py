"""The model server of the local stack and the CPU nodes: the TF Serving gRPC API over either
runtime (`runtimes`: TensorFlow on the SavedModel, or OpenVINO on the bare backbone exported
beside it), with TF Serving's server-side batching (`batching`).

It serves the newest `keep_versions` versions under ``MODEL_DIR/NAME`` (TF Serving's layout
and its "latest N" `model_version_policy`, N = 2 by default), and looks for new versions every
`poll_s` as TF Serving's file-system poll does: a request that names a version
(`model_spec.version`) gets that one, any other the newest. So during a rollout the version the
current classifier was trained on stays loaded beside the new one, and each tile's superpixels
go to the backbone its classifier needs. It answers ``tensorflow.serving.PredictionService``
(Predict and GetModelMetadata; the other methods answer UNIMPLEMENTED) and the standard gRPC
health service, which reports SERVING once the model is loaded. Clients written against it work
unchanged against the official TF Serving image (see ``docker/tfserving``), the GPU path.

Inference runs on a fixed pool of worker threads (`workers`), never on the event loop, so health
checks and metadata answer while a batch is computed; requests beyond `max_concurrent` wait their
turn or are answered RESOURCE_EXHAUSTED, which clients retry. Run by `amberscan serve model-server`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import Histogram
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from amberscan.common.settings import OpsConfig, ServingConfig
from amberscan.modelserver.batching import Batcher
from amberscan.modelserver.runtimes import (
    DEFAULT_SIGNATURE,
    ContractViolation,
    Runtime,
    check_inputs,
    load_runtime,
    versions,
)

log = logging.getLogger(__name__)

__all__ = [
    "ModelServer",
    "PredictionServicer",
    "ServerOptions",
    "main",
    "run_server",
    "serve",
    "versions",
]

DEFAULT_ADDRESS = "127.0.0.1:18500"
SERVICE_NAME = "tensorflow.serving.PredictionService"
BATCH_IMAGES = Histogram(
    "amberscan_model_batch_images",
    "Images per backbone call of the model server (after server-side batching).",
    buckets=(1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 256),
)
# A batch of 64 crops of 224×224×3 is ~9.6 MB, over gRPC's 4 MB default.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
GRACE_S = 5.0


@dataclass(frozen=True)
class ServerOptions:
    """How the server computes: the runtime, its threads (0: every core) and OpenVINO streams,
    and the batching parameters (images per backbone call, the longest wait to fill one, batches
    computed at once, requests in flight at most)."""

    runtime: str = "auto"
    precision: str = "auto"
    threads: int = 0
    streams: int = 1
    max_batch: int = 64
    batch_timeout_s: float = 0.002
    workers: int = 1
    max_concurrent: int = 64
    keep_versions: int = 2
    poll_s: float = 2.0

    @classmethod
    def from_config(cls, serving: ServingConfig) -> ServerOptions:
        return cls(
            runtime=serving.runtime,
            precision=serving.precision,
            threads=serving.threads,
            streams=serving.streams,
            max_batch=serving.max_batch,
            batch_timeout_s=serving.batch_timeout_ms / 1000,
            workers=serving.workers,
            keep_versions=serving.versions,
            poll_s=serving.poll_s,
        )


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    """Predict and GetModelMetadata for the versions of one model; `predict_calls` counts
    Predict requests."""

    def __init__(self, name: str, options: ServerOptions | None = None) -> None:
        self.name = name
        self.options = options or ServerOptions()
        self.models: dict[int, Runtime] = {}
        self.batchers: dict[int, Batcher] = {}
        self.predict_calls = 0

    @property
    def model(self) -> Runtime | None:
        """The newest version served (what a request naming no version gets)."""
        return self.models[max(self.models)] if self.models else None

    @property
    def batcher(self) -> Batcher | None:
        return self.batchers[max(self.batchers)] if self.batchers else None

    def serve_model(self, model: Runtime) -> None:
        """Serve `model` from now on, through a batcher of its own; the oldest versions beyond
        `keep_versions` are unloaded."""
        old = self.batchers.get(model.version)

        def run(images: Any) -> Any:
            BATCH_IMAGES.observe(len(images))
            return model.predict({"images": images}, DEFAULT_SIGNATURE, ["features"])["features"]

        self.batchers[model.version] = Batcher(
            run,
            max_batch=self.options.max_batch,
            timeout_s=self.options.batch_timeout_s,
            workers=self.options.workers,
        )
        self.models[model.version] = model
        if old is not None:
            asyncio.ensure_future(old.close())
        while len(self.models) > max(self.options.keep_versions, 1):
            self.unload(min(self.models))

    def unload(self, version: int) -> None:
        self.models.pop(version, None)
        batcher = self.batchers.pop(version, None)
        if batcher is not None:
            asyncio.ensure_future(batcher.close())
        log.info("unloaded %s version %d", self.name, version)

    async def _resolve(self, model_spec: Any, context: grpc.aio.ServicerContext) -> Runtime:
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
        if model_spec.HasField("version"):
            wanted = self.models.get(model_spec.version.value)
            if wanted is None:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: model {self.name} version "
                    f"{model_spec.version.value} (serving versions {sorted(self.models)})",
                )
            assert wanted is not None
            model = wanted
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
        wanted = list(request.output_filter)
        try:
            if model.batchable(signature, inputs) and set(wanted) <= {"features"}:
                # Checked alone first: a request that breaks the contract never joins a batch.
                check_inputs(model.name, model.version, model.inputs, inputs, signature)
                batcher = self.batchers[model.version]
                outputs = {"features": await batcher.submit(inputs["images"])}
            else:
                outputs = await asyncio.to_thread(model.predict, inputs, signature, wanted)
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

    def __init__(
        self,
        model_dir: Path,
        name: str,
        address: str = DEFAULT_ADDRESS,
        options: ServerOptions | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.name = name
        self.address = address
        self.options = options or ServerOptions()
        self.servicer = PredictionServicer(name, self.options)
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None

    @property
    def model(self) -> Runtime | None:
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
        server = grpc.aio.server(
            options=options, maximum_concurrent_rpcs=self.options.max_concurrent
        )
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

    async def load(self) -> Runtime:
        """Load the newest `keep_versions` versions (in a thread, oldest first) on the
        configured runtime; report SERVING; returns the newest."""
        found = versions(self.model_dir, self.name)
        if not found:
            raise FileNotFoundError(f"no SavedModel under {self.model_dir / self.name}/<version>/")
        for version in found[-max(self.options.keep_versions, 1) :]:
            await self.load_version(version)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        model = self.model
        assert model is not None
        return model

    async def load_version(self, version: int) -> Runtime:
        o = self.options
        model = await asyncio.to_thread(
            load_runtime,
            self.model_dir,
            self.name,
            o.runtime,
            threads=o.threads,
            streams=o.streams,
            precision=o.precision,
            version=version,
        )
        self.servicer.serve_model(model)
        log.info(
            "serving %s version %d on %s with %s %s (batches of up to %d, %d worker(s))",
            self.name,
            model.version,
            self.address,
            model.runtime,
            model.precision,
            o.max_batch,
            o.workers,
        )
        return model

    async def poll_versions(self) -> None:
        """Load versions that appear under the model's folder, as TF Serving's file-system poll
        does (a version whose files are still being written fails to load and is tried again on
        the next poll)."""
        while self.options.poll_s > 0:
            await asyncio.sleep(self.options.poll_s)
            found = versions(self.model_dir, self.name)
            newest = found[-max(self.options.keep_versions, 1) :]
            for version in newest:
                if version in self.servicer.models or (
                    self.servicer.models and version < min(self.servicer.models)
                ):
                    continue
                try:
                    await self.load_version(version)
                except Exception:  # noqa: BLE001 - keep serving what is loaded; retry next poll
                    log.exception("could not load %s version %d yet", self.name, version)

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
        for batcher in list(self.servicer.batchers.values()):
            await batcher.close()


async def serve(
    model_dir: Path,
    name: str,
    address: str,
    stop: asyncio.Event,
    options: ServerOptions | None = None,
) -> None:
    """Serve until `stop` is set, then shut down gracefully."""
    server = ModelServer(model_dir, name, address, options)
    await server.start(load=False)
    try:
        loading = asyncio.ensure_future(server.load())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if loading.done():
            loading.result()  # a model that fails to load ends the server with its error
            polling = asyncio.ensure_future(server.poll_versions())
            try:
                await stopping
            finally:
                polling.cancel()
        else:
            loading.cancel()
        log.info("stopping model server on %s", server.address)
    finally:
        await server.stop()


def run_server(
    model_dir: Path, name: str, address: str, options: ServerOptions, ops: OpsConfig
) -> int:
    """Run the model server with its logs and metrics until SIGTERM or SIGINT; returns the
    process exit code (2: no model to serve, 1: it could not bind or load)."""
    from amberscan.common.logs import configure_logging
    from amberscan.common.metrics import serve_metrics

    configure_logging("model-server", ops.log_level, ops.log_json)
    serve_metrics(ops.metrics_port)
    if not versions(model_dir, name):
        log.error("no SavedModel under %s/%s/<version>/", model_dir, name)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(model_dir, name, address, stop, options)

    try:
        asyncio.run(run())
    except Exception:  # noqa: BLE001 - a server that cannot bind or load exits 1 with the reason
        log.exception("model server %s on %s failed", name, address)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m amberscan.modelserver.server`: the model and address from the flags (defaults
    from the settings), all else from the settings (AMBERSCAN_MODEL_SERVER_*), as `serve` does."""
    from amberscan.common.settings import ModelServerSettings, load_settings

    settings = load_settings(ModelServerSettings)
    parser = argparse.ArgumentParser(
        prog="python -m amberscan.modelserver.server", description="TF Serving API model server"
    )
    served = settings.model_server
    parser.add_argument("--model-dir", type=Path, default=settings.serving.model_dir)
    parser.add_argument("--name", default=served.backbone_name, help="ModelSpec.name")
    parser.add_argument("--address", default=served.address, help="host:port to listen on")
    args = parser.parse_args(argv)
    options = ServerOptions.from_config(settings.serving)
    return run_server(args.model_dir, args.name, args.address, options, settings.ops)


if __name__ == "__main__":
    raise SystemExit(main())
