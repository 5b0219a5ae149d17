"""The model server against a real gRPC client on loopback, with the tiny test SavedModel."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from amberscan.modelserver.server import ModelServer, ServerOptions, versions
from tests.model.conftest import TinyModel


@pytest.fixture
async def server(tiny_model: TinyModel) -> AsyncIterator[ModelServer]:
    served = ModelServer(tiny_model.model_dir, tiny_model.name, "127.0.0.1:0")
    await served.start()
    yield served
    await served.stop(grace_s=0.5)


@pytest.fixture
async def channel(server: ModelServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address) as chan:
        yield chan


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def predict_request(name: str, value: np.ndarray, version: int | None = None) -> object:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(value))
    return request


def test_versions_lists_numeric_dirs_with_a_saved_model(
    tiny_model: TinyModel, tmp_path: Path
) -> None:
    assert versions(tiny_model.model_dir, tiny_model.name) == [1, 2]
    (tmp_path / "m" / "7").mkdir(parents=True)  # no saved_model.pb: not a version
    assert versions(tmp_path, "m") == []
    assert versions(tmp_path, "absent") == []


async def test_predict_matches_the_saved_model(
    tiny_model: TinyModel, channel: grpc.aio.Channel
) -> None:
    batch = images(5, tiny_model.image_size)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = await stub.Predict(predict_request(tiny_model.name, batch), timeout=10)

    got = tf.make_ndarray(response.outputs["features"])
    direct = tf.saved_model.load(str(tiny_model.model_dir / tiny_model.name / "2"))
    want = direct.signatures["serving_default"](images=tf.constant(batch))["features"].numpy()
    assert got.dtype == np.float32 and got.shape == (5, tiny_model.feature_dim)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, tiny_model.expected(batch), atol=1e-5)
    assert response.model_spec.name == tiny_model.name
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"


async def test_a_request_naming_a_version_gets_that_version_among_the_two_kept(
    tiny_model: TinyModel, channel: grpc.aio.Channel
) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    batch = images(2, tiny_model.image_size)
    newest = await stub.Predict(predict_request(tiny_model.name, batch), timeout=10)
    older = await stub.Predict(predict_request(tiny_model.name, batch, version=1), timeout=10)
    assert (newest.model_spec.version.value, older.model_spec.version.value) == (2, 1)
    direct = tf.saved_model.load(str(tiny_model.model_dir / tiny_model.name / "1"))
    want = direct.signatures["serving_default"](images=tf.constant(batch))["features"].numpy()
    np.testing.assert_array_equal(tf.make_ndarray(older.outputs["features"]), want)
    assert not np.allclose(tf.make_ndarray(newest.outputs["features"]), want)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Predict(predict_request(tiny_model.name, batch, version=3), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "version 3" in (caught.value.details() or "")
    assert "[1, 2]" in (caught.value.details() or "")


async def test_latest_1_serves_the_newest_only(tiny_model: TinyModel) -> None:
    served = ModelServer(
        tiny_model.model_dir, tiny_model.name, "127.0.0.1:0", ServerOptions(keep_versions=1)
    )
    await served.start()
    try:
        async with grpc.aio.insecure_channel(served.address) as chan:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(chan)
            batch = images(1, tiny_model.image_size)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Predict(predict_request(tiny_model.name, batch, version=1), timeout=10)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await served.stop(grace_s=0.5)


async def test_a_new_version_is_loaded_by_the_poll_and_the_oldest_unloaded(
    tiny_model: TinyModel, tmp_path: Path
) -> None:
    import shutil

    from tests.model.conftest import export_tiny_model

    model_dir = tmp_path / "serving"
    shutil.copytree(tiny_model.model_dir, model_dir)
    served = ModelServer(
        model_dir, tiny_model.name, "127.0.0.1:0", ServerOptions(keep_versions=2, poll_s=0.2)
    )
    await served.start()
    polling = asyncio.ensure_future(served.poll_versions())
    try:
        assert sorted(served.servicer.models) == [1, 2]
        export_tiny_model(model_dir, version=3, seed=3)
        for _ in range(100):
            if 3 in served.servicer.models:
                break
            await asyncio.sleep(0.1)
        assert sorted(served.servicer.models) == [2, 3]  # "latest 2": version 1 unloaded
        assert served.model is not None and served.model.version == 3
    finally:
        polling.cancel()
        await served.stop(grace_s=0.5)


async def test_metadata_carries_the_signature_def_map(
    tiny_model: TinyModel, channel: grpc.aio.Channel
) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = tiny_model.name
    response = await stub.GetModelMetadata(request, timeout=10)

    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert signature.inputs["images"].dtype == tf.uint8.as_datatype_enum
    dims = [d.size for d in signature.inputs["images"].tensor_shape.dim]
    assert dims == [-1, tiny_model.image_size, tiny_model.image_size, 3]
    assert [d.size for d in signature.outputs["features"].tensor_shape.dim] == [-1, 16]
    assert response.model_spec.version.value == 2


async def test_unknown_model_is_not_found(tiny_model: TinyModel, channel: grpc.aio.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Predict(predict_request("other", images(1, tiny_model.image_size)), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "other" in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros((2, 8, 8, 3), dtype=np.float32), "expected dtype uint8, got float32"),
        (np.zeros((2, 4, 8, 3), dtype=np.uint8), "expected shape (-1, 8, 8, 3)"),
        (np.zeros((8, 8, 3), dtype=np.uint8), "got (8, 8, 3)"),
    ],
)
async def test_wrong_input_is_invalid_argument(
    tiny_model: TinyModel, channel: grpc.aio.Channel, value: np.ndarray, message: str
) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Predict(predict_request(tiny_model.name, value), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")


async def test_missing_input_is_invalid_argument(
    tiny_model: TinyModel, channel: grpc.aio.Channel
) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = tiny_model.name
    request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(images(1, 8)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Predict(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "missing ['images'], unexpected ['pixels']" in (caught.value.details() or "")


async def test_other_methods_are_unimplemented(
    tiny_model: TinyModel, channel: grpc.aio.Channel
) -> None:
    from tensorflow_serving.apis import classification_pb2

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Classify(classification_pb2.ClassificationRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_health_is_serving_once_loaded_only(tiny_model: TinyModel) -> None:
    served = ModelServer(tiny_model.model_dir, tiny_model.name, "127.0.0.1:0")
    await served.start(load=False)
    try:
        async with grpc.aio.insecure_channel(served.address) as chan:
            health = health_pb2_grpc.HealthStub(chan)
            request = health_pb2.HealthCheckRequest(service="")
            assert (await health.Check(request, timeout=5)).status == 2  # NOT_SERVING
            stub = prediction_service_pb2_grpc.PredictionServiceStub(chan)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Predict(predict_request(tiny_model.name, images(1, 8)), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

            await served.load()
            serving = health_pb2.HealthCheckResponse.SERVING
            assert (await health.Check(request, timeout=5)).status == serving
            named = health_pb2.HealthCheckRequest(service=tiny_model.name)
            assert (await health.Check(named, timeout=5)).status == serving
    finally:
        await served.stop(grace_s=0.5)


def test_main_serves_then_stops_on_sigterm(tiny_model: TinyModel) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "amberscan.modelserver.server"]
    command += ["--model-dir", str(tiny_model.model_dir), "--name", tiny_model.name]
    process = subprocess.Popen(
        [*command, "--address", address], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        channel = grpc.insecure_channel(address)
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 40
        status = None
        while time.monotonic() < deadline and status != health_pb2.HealthCheckResponse.SERVING:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
            except grpc.RpcError:
                time.sleep(0.2)
        channel.close()
        assert status == health_pb2.HealthCheckResponse.SERVING
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert f"serving {tiny_model.name} version 2 on {address}" in stderr


def test_main_without_a_model_exits_2(tmp_path: Path) -> None:
    from amberscan.modelserver.server import main

    assert main(["--model-dir", str(tmp_path), "--name", "absent"]) == 2


def test_serve_model_server_takes_its_options_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amberscan.cli import build_parser
    from amberscan.common.settings import Settings, replace
    from amberscan.modelserver import server

    calls = []
    monkeypatch.setattr(server, "run_server", lambda *args: calls.append(args) or 0)
    settings = replace(
        Settings(),
        serving={
            "model_dir": tmp_path,
            "runtime": "tensorflow",
            "max_batch": 8,
            "batch_timeout_ms": 5,
            "workers": 3,
            "versions": 1,
        },
    )
    args = build_parser().parse_args(["serve", "model-server", "--address", "127.0.0.1:0"])
    assert args.run(args, settings) == 0
    [(model_dir, name, address, options, given)] = calls
    assert (model_dir, name, address) == (
        tmp_path,
        settings.model_server.backbone_name,
        "127.0.0.1:0",
    )
    assert options == ServerOptions.from_config(settings.serving) and given is settings.ops
    assert (options.runtime, options.max_batch, options.workers) == ("tensorflow", 8, 3)
    assert (options.batch_timeout_s, options.keep_versions) == (0.005, 1)


TFSERVING = Path(__file__).resolve().parents[2] / "docker" / "tfserving"


def test_tfserving_model_config_parses() -> None:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(
        (TFSERVING / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path) == ("backbone", "/models/backbone")
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 2  # the rollout keeps the old one


def test_tfserving_batching_parameters_name_known_fields() -> None:
    # BatchingParameters is not in the tensorflow-serving-api wheel: check names and the limits.
    known = {
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
        "pad_variable_length_inputs",
    }
    values = {}
    for line in (TFSERVING / "batching_parameters.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key = line.split()[0].rstrip(":")
            assert key in known, line
            values[key] = line
    assert values["max_batch_size"] == "max_batch_size { value: 64 }"
    assert values["batch_timeout_micros"] == "batch_timeout_micros { value: 20000 }"
    assert {"num_batch_threads", "max_enqueued_batches"} <= set(values)
