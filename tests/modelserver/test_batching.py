"""Server-side batching: concurrent requests merged into one runtime call, failures isolated."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from amberscan.modelserver.batching import Batcher


def images(n: int, value: int, size: int = 4) -> np.ndarray:
    return np.full((n, size, size, 3), value, dtype=np.uint8)


def row_means(batch: np.ndarray) -> np.ndarray:
    return batch.reshape(len(batch), -1).mean(axis=1, keepdims=True)


async def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    calls: list[int] = []

    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return row_means(batch)

    batcher = Batcher(run, max_batch=64, timeout_s=0.05)
    try:
        answers = await asyncio.gather(*(batcher.submit(images(3, v)) for v in range(10)))
    finally:
        await batcher.close()
    for value, rows in enumerate(answers):
        np.testing.assert_array_equal(rows, np.full((3, 1), value))
    assert sum(calls) == 30 and len(calls) < 10, calls  # merged, not one call per request
    assert batcher.batches == calls


async def test_batches_never_exceed_max_batch_nor_mix_image_sizes() -> None:
    seen: list[tuple[int, tuple[int, ...]]] = []

    def run(batch: np.ndarray) -> np.ndarray:
        seen.append((len(batch), batch.shape[1:]))
        return row_means(batch)

    batcher = Batcher(run, max_batch=8, timeout_s=0.05)
    try:
        small = [batcher.submit(images(3, 1)) for _ in range(6)]
        large = [batcher.submit(images(2, 2, size=6)) for _ in range(3)]
        await asyncio.gather(*small, *large)
    finally:
        await batcher.close()
    assert all(n <= 8 for n, _ in seen), seen
    assert sum(n for n, shape in seen if shape == (4, 4, 3)) == 18
    assert sum(n for n, shape in seen if shape == (6, 6, 3)) == 6


async def test_a_request_the_runtime_fails_on_fails_alone() -> None:
    def run(batch: np.ndarray) -> np.ndarray:
        if (batch == 99).any():
            raise RuntimeError("out of memory on the poisoned crop")
        return row_means(batch)

    batcher = Batcher(run, max_batch=64, timeout_s=0.05)
    try:
        good = [batcher.submit(images(2, v)) for v in (1, 2, 3)]
        bad = batcher.submit(images(1, 99))
        results = await asyncio.gather(*good, bad, return_exceptions=True)
    finally:
        await batcher.close()
    for value, rows in zip((1, 2, 3), results[:3], strict=True):
        np.testing.assert_array_equal(rows, np.full((2, 1), value))
    assert isinstance(results[3], RuntimeError)


async def test_the_runtime_runs_on_the_worker_threads_not_the_event_loop() -> None:
    names: set[str] = set()

    def run(batch: np.ndarray) -> np.ndarray:
        names.add(threading.current_thread().name)
        return row_means(batch)

    batcher = Batcher(run, workers=2, timeout_s=0.0)
    try:
        await asyncio.gather(*(batcher.submit(images(1, v)) for v in range(8)))
    finally:
        await batcher.close()
    assert names and all(name.startswith("model-batch") for name in names)
    assert len(names) <= 2


@pytest.mark.parametrize("workers", [1, 2])
async def test_many_requests_all_answered(workers: int) -> None:
    batcher = Batcher(row_means, workers=workers, max_batch=16, timeout_s=0.001)
    try:
        answers = await asyncio.gather(*(batcher.submit(images(1 + v % 5, v)) for v in range(60)))
    finally:
        await batcher.close()
    for value, rows in enumerate(answers):
        assert rows.shape == (1 + value % 5, 1) and (rows == value).all()
