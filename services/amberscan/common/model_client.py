"""Async client of a TF Serving API model server: a batch of crops in, feature vectors out.

Transient gRPC failures (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, and
CANCELLED, which here only the server or transport can cause: a server stopping mid-call) are
retried under the shared `RetryPolicy` (bounded, jittered, honouring the server's retry pushback),
then raised as `TransientError`. A request or answer that breaks the model contract (uint8
``[N, H, W, 3]`` `images` in, float32 ``[N, D]`` `features` out), INVALID_ARGUMENT and NOT_FOUND
raise `ModelContractError`; UNKNOWN, INTERNAL and any other code raise `ModelServerError` (the
server failed on this input: the caller may split the batch to find the crop it fails on).

A circuit breaker tells a server that fails on everything from a batch it fails on (#26, defect
6): on a `ModelServerError` the client asks again for a crop the server answered before (the
first crop of its last answered batch of that shape and version); if that fails too, the failure
is the server's, and the breaker opens: this call and every Predict for `BREAKER_OPEN_S` raise
`TransientError` (with that as `retry_after_s`) without asking the server, then one call tries it.

`address` is one ``host:port``, several separated by commas (one channel balanced round-robin
over them), or any gRPC target such as ``dns:///model-server-headless:8500`` (round-robin over
every address the name resolves to: a headless Service in Kubernetes). Works against
`amberscan.modelserver` and the official TF Serving image (which has no gRPC health service:
`wait_until_serving` then polls GetModelMetadata).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from amberscan.common.retry import RetryPolicy, grpc_retry_after
from amberscan.errors import AmberscanError, ModelContractError, TransientError
from amberscan.vision.crops import CROP_SIZE

SIGNATURE = "serving_default"
INPUT_KEY = "images"
OUTPUT_KEY = "features"
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)
CONTRACT_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND})
# How long the breaker stays open once the server failed on a crop it had answered: a server-wide
# failure (a broken GPU, a model that cannot run) is retried as a transient error after this.
BREAKER_OPEN_S = 30.0
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
]


class ModelServerError(AmberscanError):
    """The model server failed on a request (UNKNOWN, INTERNAL, …): not a transport fault."""


def channel_target(address: str) -> str:
    """The gRPC target of `address`: ``ipv4:a:p,b:q`` for a comma-separated list."""
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if len(parts) > 1:
        return "ipv4:" + ",".join(parts)
    return parts[0] if parts else address


@dataclass(frozen=True)
class ModelMetadata:
    """What the server says about the served model's `serving_default` signature.

    `input_shape` is one image's shape (H, W, C), None for a dimension the model leaves open.
    """

    name: str
    version: int
    input_shape: tuple[int | None, ...]
    feature_dim: int

    @property
    def crop_size(self) -> int:
        """The side of the square crops this model takes: its signature's H = W. A model whose
        signature leaves the size open (exports before the crop size was part of the contract)
        takes the 2018 crops, `CROP_SIZE`."""
        height, width = self.input_shape[0], self.input_shape[1]
        if height is None and width is None:
            return CROP_SIZE
        if height is None or height != width:
            raise ModelContractError(
                f"model {self.name} v{self.version}: input is {_show(self.input_shape)} per "
                "image, expected square crops (S, S, 3)"
            )
        return height


class FeatureClient:
    """Feature vectors from a model server over gRPC (``async with FeatureClient(...) as c``)."""

    def __init__(
        self,
        address: str,
        model_name: str,
        *,
        deadline_s: float = 60,
        max_retries: int = 5,
        backoff_s: float = 0.5,
    ) -> None:
        self.address = address
        self.model_name = model_name
        self.deadline_s = deadline_s
        self.backoff_s = backoff_s
        self.policy = RetryPolicy(retries=max(max_retries, 0), base_s=backoff_s)
        self._channel: grpc.aio.Channel | None = None
        self._prediction: Any = None
        # The breaker: a crop answered before per (version asked, crop shape), and until when
        # it is open (monotonic seconds) and why.
        self._known_good: dict[tuple[int | None, tuple[int, ...]], NDArray[np.uint8]] = {}
        self._open_until = 0.0
        self._opened_by = ""

    async def __aenter__(self) -> FeatureClient:
        self._stub()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _stub(self) -> Any:
        if self._channel is None:
            # Reconnect as often as we retry, not on gRPC's slower default schedule (1 s × 1.6ⁿ).
            reconnect_ms = max(int(self.backoff_s * 1000), 50)
            options = [
                *_CHANNEL_OPTIONS,
                ("grpc.initial_reconnect_backoff_ms", reconnect_ms),
                ("grpc.min_reconnect_backoff_ms", reconnect_ms),
                ("grpc.max_reconnect_backoff_ms", max(reconnect_ms, 10_000)),
            ]
            self._channel = grpc.aio.insecure_channel(channel_target(self.address), options=options)
            self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        return self._prediction

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._prediction = None

    async def _call(self, method: str, request: Any) -> Any:
        """One RPC with deadline, retried under the policy on transient codes."""
        what = f"model server {self.address}: {method} {self.model_name}"
        retrying = self.policy.retrying(lambda error: isinstance(error, TransientError))
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        return await getattr(self._stub(), method)(request, timeout=self.deadline_s)
                    except grpc.aio.AioRpcError as error:
                        raise _classified(what, error) from None
        except TransientError as error:
            tries = retrying.statistics.get("attempt_number", 1)
            raise TransientError(
                f"{error} (after {tries} attempts)", retry_after_s=error.retry_after_s
            ) from None
        raise AssertionError("unreachable: tenacity returns or raises")

    async def metadata(self, version: int | None = None) -> ModelMetadata:
        """The served version (`version`, or the newest), one image's input shape and the
        feature width.

        Raises:
            ModelContractError: the model is unknown or its signature is not the contract.
            TransientError: the server did not answer after the retries.
        """
        response = await self._call("GetModelMetadata", self._metadata_request(version))
        return parse_metadata(self.model_name, response)

    def _metadata_request(self, version: int | None = None) -> Any:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = self.model_name
        if version is not None:
            request.model_spec.version.value = version
        return request

    async def predict(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Features of a batch of crops, in one Predict call (see `predict_versioned`)."""
        features, _ = await self.predict_versioned(images)
        return features

    async def predict_versioned(
        self, images: NDArray[np.uint8], version: int | None = None
    ) -> tuple[NDArray[np.float32], int]:
        """Features of a batch of crops, in one Predict call, and the model version that
        computed them (as the answer names it: a server may load a new version at any time).

        Args:
            images: uint8 ``[N, H, W, 3]``.
            version: the model version to ask for (`model_spec.version`); None: the newest.

        Returns:
            float32 ``[N, D]``, row i for crop i; the version.

        Raises:
            ModelContractError: `images` is not uint8 ``[N, H, W, 3]``, the server rejects it
                (INVALID_ARGUMENT, NOT_FOUND), or the answer lacks `features` or has another N.
            ModelServerError: the server failed on it (UNKNOWN, INTERNAL, …) but answers a crop
                it answered before.
            TransientError: the server did not answer after the retries, fails on every
                request (the breaker opened), or the breaker is open.
        """
        check_images(images)
        left = self._open_until - time.monotonic()
        if left > 0:
            raise TransientError(
                f"model server {self.address}: circuit open for {left:.1f} s more "
                f"({self._opened_by})",
                retry_after_s=left,
            )
        key = (version, tuple(images.shape[1:]))
        try:
            response = await self._call("Predict", self._predict_request(images, version))
        except ModelServerError as error:
            known = self._known_good.get(key)
            if known is None or not await self._fails_on(known, version):
                raise  # this batch's failure: the caller may isolate the crop
            self._open_until = time.monotonic() + BREAKER_OPEN_S
            self._opened_by = f"it failed on a crop it had answered: {error}"
            raise TransientError(
                f"model server {self.address}: fails on every request, circuit open for "
                f"{BREAKER_OPEN_S:g} s ({error})",
                retry_after_s=BREAKER_OPEN_S,
            ) from None
        features = parse_features(self.model_name, response, len(images))
        self._known_good[key] = images[:1].copy()
        return features, int(response.model_spec.version.value)

    async def _fails_on(self, known: NDArray[np.uint8], version: int | None) -> bool:
        """Whether the server fails (`ModelServerError`) on a crop it answered before."""
        try:
            await self._call("Predict", self._predict_request(known, version))
        except ModelServerError:
            return True
        return False

    def _predict_request(self, images: NDArray[np.uint8], version: int | None) -> Any:
        import tensorflow as tf

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = SIGNATURE
        if version is not None:
            request.model_spec.version.value = version
        request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(images))
        return request

    async def wait_until_serving(self, timeout_s: float) -> ModelMetadata:
        """Wait until the server reports SERVING and knows the model; returns its metadata.

        Uses the gRPC health service; servers without one (TF Serving) are polled with
        GetModelMetadata only.

        Raises:
            TransientError: not serving within `timeout_s` (names the last answer).
        """
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        self._stub()
        assert self._channel is not None
        health = health_pb2_grpc.HealthStub(self._channel)
        use_health = True
        until = time.monotonic() + timeout_s
        last = "no answer yet"
        interval = min(max(self.backoff_s, 0.05), 1.0)
        while True:
            left = until - time.monotonic()
            if left <= 0:
                raise TransientError(
                    f"model server {self.address}: {self.model_name} not serving "
                    f"after {timeout_s:g} s ({last})"
                )
            try:
                if use_health:
                    reply = await health.Check(
                        health_pb2.HealthCheckRequest(service=""), timeout=min(left, 5)
                    )
                    if reply.status != health_pb2.HealthCheckResponse.SERVING:
                        raise _NotYet(
                            health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                        )
                response = await self._stub().GetModelMetadata(
                    self._metadata_request(), timeout=min(left, 5)
                )
                return parse_metadata(self.model_name, response)
            except grpc.aio.AioRpcError as error:
                if use_health and error.code() == grpc.StatusCode.UNIMPLEMENTED:
                    use_health = False
                    continue
                if error.code() in CONTRACT_CODES:
                    raise ModelContractError(
                        f"model server {self.address}: {error.code().name}: {error.details()}"
                    ) from None
                last = f"{error.code().name}: {error.details()}"
            except _NotYet as status:
                last = f"health {status}"
            await asyncio.sleep(min(interval, max(until - time.monotonic(), 0)))


class _NotYet(Exception):
    pass


def _classified(what: str, error: grpc.aio.AioRpcError) -> AmberscanError:
    code, details = error.code(), error.details()
    if code in CONTRACT_CODES:
        return ModelContractError(f"{what}: {code.name}: {details}")
    if code in TRANSIENT_CODES:
        return TransientError(
            f"{what}: {code.name}: {details}",
            retry_after_s=grpc_retry_after(error.trailing_metadata()),
        )
    return ModelServerError(f"{what}: {code.name}: {details}")


def check_images(images: Any) -> None:
    """Raise ModelContractError unless `images` is a uint8 ``[N, H, W, 3]`` array."""
    if not isinstance(images, np.ndarray):
        raise ModelContractError(f"images: expected a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise ModelContractError(f"images: expected dtype uint8, got {images.dtype}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ModelContractError(f"images: expected shape (N, H, W, 3), got {images.shape}")


def parse_features(name: str, response: Any, rows: int) -> NDArray[np.float32]:
    """The `features` output of a PredictResponse, checked to be ``[rows, D]``."""
    import tensorflow as tf

    if OUTPUT_KEY not in response.outputs:
        raise ModelContractError(
            f"model {name}: response has outputs {sorted(response.outputs)}, expected {OUTPUT_KEY!r}"
        )
    features = tf.make_ndarray(response.outputs[OUTPUT_KEY])
    if features.ndim != 2 or features.shape[0] != rows:
        raise ModelContractError(
            f"model {name}: {OUTPUT_KEY!r} has shape {features.shape}, expected ({rows}, D)"
        )
    return np.asarray(features, dtype=np.float32)


def parse_metadata(name: str, response: Any) -> ModelMetadata:
    """ModelMetadata from a GetModelMetadataResponse's `serving_default` SignatureDef."""
    if "signature_def" not in response.metadata:
        raise ModelContractError(f"model {name}: metadata has no 'signature_def'")
    signatures = get_model_metadata_pb2.SignatureDefMap()
    if not response.metadata["signature_def"].Unpack(signatures):
        raise ModelContractError(f"model {name}: 'signature_def' metadata is not a SignatureDefMap")
    if SIGNATURE not in signatures.signature_def:
        raise ModelContractError(
            f"model {name}: no {SIGNATURE!r} signature (has {sorted(signatures.signature_def)})"
        )
    signature = signatures.signature_def[SIGNATURE]
    if INPUT_KEY not in signature.inputs or OUTPUT_KEY not in signature.outputs:
        raise ModelContractError(
            f"model {name}: {SIGNATURE!r} maps {sorted(signature.inputs)} → "
            f"{sorted(signature.outputs)}, expected {INPUT_KEY!r} → {OUTPUT_KEY!r}"
        )
    input_dims = _dims(signature.inputs[INPUT_KEY].tensor_shape)
    output_dims = _dims(signature.outputs[OUTPUT_KEY].tensor_shape)
    if len(input_dims) != 4 or input_dims[3] != 3:
        raise ModelContractError(
            f"model {name}: {INPUT_KEY!r} has shape {_show(input_dims)}, expected (-1, H, W, 3)"
        )
    if len(output_dims) != 2 or output_dims[1] is None:
        raise ModelContractError(
            f"model {name}: {OUTPUT_KEY!r} has shape {_show(output_dims)}, expected (-1, D)"
        )
    return ModelMetadata(
        name=response.model_spec.name or name,
        version=int(response.model_spec.version.value),
        input_shape=input_dims[1:],
        feature_dim=output_dims[1],
    )


def _dims(shape: Any) -> tuple[int | None, ...]:
    if shape.unknown_rank:
        return ()
    return tuple(None if dim.size < 0 else int(dim.size) for dim in shape.dim)


def _show(dims: tuple[int | None, ...]) -> str:
    return str(tuple(-1 if d is None else d for d in dims)) if dims else "(unknown rank)"
