"""FeatureClient against a real model server on loopback, with the tiny test SavedModel."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from amberscan.common.model_client import (
    FeatureClient,
    ModelMetadata,
    channel_target,
    parse_features,
)
from amberscan.errors import ModelContractError, TransientError
from amberscan.modelserver.server import ModelServer
from amberscan.vision.crops import CROP_SIZE
from tests.model.conftest import TinyModel, export_tiny_model

FAST: dict[str, Any] = {"max_retries": 3, "backoff_s": 0.02, "deadline_s": 10}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return export_tiny_model(tmp_path_factory.mktemp("serving"), version=3)


@pytest.fixture
async def server(tiny_model: TinyModel) -> AsyncIterator[ModelServer]:
    served = ModelServer(tiny_model.model_dir, tiny_model.name, "127.0.0.1:0")
    await served.start()
    yield served
    await served.stop(grace_s=0.5)


def free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def crops(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


async def test_metadata_names_version_width_and_input(
    tiny_model: TinyModel, server: ModelServer
) -> None:
    async with FeatureClient(server.address, tiny_model.name) as client:
        meta = await client.metadata()
    assert meta == ModelMetadata(name="tiny", version=3, input_shape=(8, 8, 3), feature_dim=16)
    assert meta.crop_size == 8


@pytest.mark.parametrize(
    ("input_shape", "size"),
    [((240, 240, 3), 240), ((None, None, 3), CROP_SIZE)],  # open: an export before the contract
)
def test_crop_size_is_the_signatures_square_side(
    input_shape: tuple[int | None, ...], size: int
) -> None:
    assert ModelMetadata("m", 1, input_shape, 16).crop_size == size


@pytest.mark.parametrize("input_shape", [(224, 240, 3), (None, 224, 3)])
def test_a_signature_of_other_than_square_crops_is_a_contract_error(
    input_shape: tuple[int | None, ...],
) -> None:
    with pytest.raises(ModelContractError, match=r"model m v1: input is .* expected square"):
        _ = ModelMetadata("m", 1, input_shape, 16).crop_size


async def test_predict_returns_one_row_per_image(
    tiny_model: TinyModel, server: ModelServer
) -> None:
    batch = crops(7)
    async with FeatureClient(server.address, tiny_model.name) as client:
        rows = await client.predict(batch)
    assert rows.dtype == np.float32 and rows.shape == (7, 16)
    np.testing.assert_allclose(rows, tiny_model.expected(batch), atol=1e-5)


async def test_predict_names_the_version_that_answered(
    tiny_model: TinyModel, server: ModelServer
) -> None:
    async with FeatureClient(server.address, tiny_model.name) as client:
        rows, version = await client.predict_versioned(crops(3))
    assert version == 3 and rows.shape == (3, 16)


async def test_several_addresses_are_balanced_round_robin(tiny_model: TinyModel) -> None:
    first = ModelServer(tiny_model.model_dir, tiny_model.name, "127.0.0.1:0")
    second = ModelServer(tiny_model.model_dir, tiny_model.name, "127.0.0.1:0")
    await first.start()
    await second.start()
    try:
        address = f"{first.address},{second.address}"
        assert channel_target(address) == f"ipv4:{first.address},{second.address}"
        async with FeatureClient(address, tiny_model.name) as client:
            await client.wait_until_serving(10)
            for _ in range(10):
                await client.predict(crops(1))
        calls = (first.servicer.predict_calls, second.servicer.predict_calls)
        assert sum(calls) == 10 and min(calls) >= 4, calls  # both servers did their share
    finally:
        await first.stop(grace_s=0.5)
        await second.stop(grace_s=0.5)


@pytest.mark.parametrize(
    ("crop", "message"),
    [
        (np.zeros((1, 8, 8, 3), dtype=np.float32), "expected dtype uint8, got float32"),
        (np.zeros((1, 8, 8), dtype=np.uint8), "expected shape (N, H, W, 3), got (1, 8, 8)"),
        (np.zeros((1, 8, 8, 4), dtype=np.uint8), "got (1, 8, 8, 4)"),
    ],
)
async def test_wrong_crop_is_a_contract_error_before_sending(
    tiny_model: TinyModel, server: ModelServer, crop: np.ndarray, message: str
) -> None:
    async with FeatureClient(server.address, tiny_model.name) as client:
        with pytest.raises(
            ModelContractError, match=message.replace("(", r"\(").replace(")", r"\)")
        ):
            await client.predict(crop)
    assert server.servicer.predict_calls == 0


async def test_server_rejections_are_contract_errors(
    tiny_model: TinyModel, server: ModelServer
) -> None:
    async with FeatureClient(server.address, tiny_model.name, **FAST) as client:
        with pytest.raises(ModelContractError, match=r"INVALID_ARGUMENT.*expected shape"):
            await client.predict(crops(1, size=6))  # the model takes 8×8 crops
    async with FeatureClient(server.address, "other", **FAST) as client:
        with pytest.raises(ModelContractError, match="NOT_FOUND"):
            await client.predict(crops(1))
        with pytest.raises(ModelContractError, match="NOT_FOUND"):
            await client.metadata()


def test_answers_without_features_or_rows_are_contract_errors() -> None:
    import tensorflow as tf

    response = predict_pb2.PredictResponse()
    response.outputs["logits"].CopyFrom(tf.make_tensor_proto(np.zeros((2, 4), np.float32)))
    with pytest.raises(ModelContractError, match="expected 'features'"):
        parse_features("tiny", response, 2)
    response.outputs["features"].CopyFrom(tf.make_tensor_proto(np.zeros((3, 4), np.float32)))
    with pytest.raises(ModelContractError, match=r"shape \(3, 4\), expected \(2, D\)"):
        parse_features("tiny", response, 2)


async def test_retries_until_a_late_server_starts(tiny_model: TinyModel) -> None:
    address = free_address()
    late = ModelServer(tiny_model.model_dir, tiny_model.name, address)

    async def start_late() -> None:
        await asyncio.sleep(0.8)
        await late.start()

    starting = asyncio.ensure_future(start_late())
    try:
        async with FeatureClient(address, tiny_model.name, max_retries=8, backoff_s=0.05) as client:
            rows = await client.predict(crops(2))
        assert rows.shape == (2, 16)
    finally:
        await starting
        await late.stop(grace_s=0.5)


async def test_dead_server_is_a_transient_error_after_retries() -> None:
    address = free_address()
    started = time.monotonic()
    async with FeatureClient(address, "tiny", max_retries=2, backoff_s=0.01) as client:
        with pytest.raises(TransientError, match=r"UNAVAILABLE: .*\(after 3 attempts\)"):
            await client.predict(crops(1))
    assert time.monotonic() - started < 10


async def test_wait_until_serving(tiny_model: TinyModel, server: ModelServer) -> None:
    async with FeatureClient(server.address, tiny_model.name) as client:
        meta = await client.wait_until_serving(10)
    assert meta.version == 3
    async with FeatureClient(free_address(), tiny_model.name, backoff_s=0.05) as client:
        with pytest.raises(TransientError, match="not serving after 0.5 s"):
            await client.wait_until_serving(0.5)


async def test_wait_until_serving_waits_for_the_model_to_load(
    tiny_model: TinyModel, tmp_path: Path
) -> None:
    served = ModelServer(tiny_model.model_dir, tiny_model.name, "127.0.0.1:0")
    await served.start(load=False)
    try:
        async with FeatureClient(served.address, tiny_model.name, backoff_s=0.05) as client:
            waiting = asyncio.ensure_future(client.wait_until_serving(10))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            await served.load()
            assert (await waiting).feature_dim == 16
    finally:
        await served.stop(grace_s=0.5)


async def test_deadline_exceeded_is_transient(tiny_model: TinyModel) -> None:
    served = ModelServer(tiny_model.model_dir, tiny_model.name, "127.0.0.1:0")
    release = asyncio.Event()
    predict = served.servicer.Predict

    async def slow(request: object, context: grpc.aio.ServicerContext) -> object:
        await release.wait()
        return await predict(request, context)

    served.servicer.Predict = slow  # type: ignore[method-assign]
    await served.start()
    try:
        async with FeatureClient(
            served.address, tiny_model.name, deadline_s=0.2, max_retries=1, backoff_s=0.01
        ) as client:
            with pytest.raises(TransientError, match=r"DEADLINE_EXCEEDED: .*\(after 2 attempts\)"):
                await client.predict(crops(1))
    finally:
        release.set()
        await served.stop(grace_s=0.5)


@asynccontextmanager
async def bare_server(servicer: Any, tiny_model: TinyModel) -> AsyncIterator[str]:
    """`servicer` (a `PredictionServicer`) serving the tiny model on a gRPC server with nothing
    else (no health service, TF Serving's shape) while the block runs; yields its address."""
    from amberscan.modelserver.runtimes import SavedModelRuntime

    servicer.serve_model(
        await asyncio.to_thread(SavedModelRuntime, tiny_model.model_dir, tiny_model.name)
    )
    bare = grpc.aio.server()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, bare)
    port = bare.add_insecure_port("127.0.0.1:0")
    await bare.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await bare.stop(0)


async def test_wait_until_serving_without_health_service(tiny_model: TinyModel) -> None:
    """TF Serving has no gRPC health service: the client falls back to GetModelMetadata."""
    from amberscan.modelserver.server import PredictionServicer

    async with bare_server(PredictionServicer(tiny_model.name), tiny_model) as address:
        async with FeatureClient(address, tiny_model.name) as client:
            assert (await client.wait_until_serving(5)).version == 3


async def test_a_server_failing_every_request_is_transient_not_poison(
    tiny_model: TinyModel,
) -> None:
    """#26 defect 6: a model server answering INTERNAL to every request had every batch split
    down to single crops and every crop dead-lettered. The breaker asks again on a crop the
    server answered before: it fails too, so the failure is the server's (transient), and the
    breaker stays open for a while (no call reaches the server)."""
    from amberscan.feature.service import features_isolating
    from amberscan.modelserver.server import PredictionServicer

    class Failing(PredictionServicer):  # type: ignore[misc]
        failing = False
        calls = 0

        async def Predict(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
            self.calls += 1
            if self.failing:
                await context.abort(
                    grpc.StatusCode.INTERNAL, "CUDA error: an illegal memory access"
                )
            return await super().Predict(request, context)

    servicer = Failing(tiny_model.name)
    names = [f"superpixel {i}" for i in range(16)]
    async with bare_server(servicer, tiny_model) as address:
        async with FeatureClient(address, tiny_model.name) as client:
            assert len(await features_isolating(client, crops(16), names)) == 16
            servicer.failing, servicer.calls = True, 0
            with pytest.raises(TransientError, match="INTERNAL") as caught:
                await features_isolating(client, crops(16, seed=1), names)
            assert servicer.calls == 2, servicer.calls  # the batch, then the crop answered before
            assert caught.value.retry_after_s is not None and caught.value.retry_after_s > 0
            with pytest.raises(TransientError, match="circuit open"):
                await features_isolating(client, crops(16, seed=2), names)
            assert servicer.calls == 2  # open: not asked
