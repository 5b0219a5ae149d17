"""Server-side batching, as TF Serving's (`docker/tfserving/batching_parameters.txt`): concurrent
Predict requests are merged into one runtime call of up to `max_batch` images, waiting at most
`timeout_s` for a batch to fill, on `workers` threads (one batch each at a time).

Requests of several feature-service copies (each sending its poll's crops) then share one pass of
the backbone; a merged batch the runtime fails on is run again request by request, so one bad
request never fails another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

Run = Callable[[NDArray[Any]], NDArray[Any]]


@dataclass
class _Request:
    images: NDArray[Any]
    future: asyncio.Future[NDArray[Any]]
    queued: float = field(default_factory=time.monotonic)


class Batcher:
    """`await batcher.submit(images)`: `run(images)`'s rows, computed within a merged batch."""

    def __init__(
        self, run: Run, *, max_batch: int = 64, timeout_s: float = 0.002, workers: int = 1
    ) -> None:
        self.run = run
        self.max_batch = max(max_batch, 1)
        self.timeout_s = max(timeout_s, 0.0)
        self.workers = max(workers, 1)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="model-batch")
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.batches: list[int] = []  # images per runtime call, for the benchmarks
        self.max_recorded = 10_000

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.ensure_future(self._work()) for _ in range(self.workers)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, images: NDArray[Any]) -> NDArray[Any]:
        self.start()
        future: asyncio.Future[NDArray[Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(images, future))
        return await future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            group = [first]
            rows = len(first.images)
            shape = first.images.shape[1:]
            deadline = first.queued + self.timeout_s
            held: list[_Request] = []  # another image size: the next batch's
            while rows < self.max_batch:
                try:
                    wait = deadline - time.monotonic()
                    item = (
                        self._queue.get_nowait()
                        if wait <= 0
                        else await asyncio.wait_for(self._queue.get(), wait)
                    )
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                if item.images.shape[1:] != shape or rows + len(item.images) > self.max_batch:
                    held.append(item)
                    break
                group.append(item)
                rows += len(item.images)
            for item in held:
                self._queue.put_nowait(item)
            await self._compute(loop, group)

    async def _compute(self, loop: asyncio.AbstractEventLoop, group: list[_Request]) -> None:
        live = [r for r in group if not r.future.done()]  # a caller may have gone
        if not live:
            return
        merged = live[0].images if len(live) == 1 else np.concatenate([r.images for r in live])
        self._record(len(merged))
        try:
            out = await loop.run_in_executor(self._executor, self.run, merged)
        except Exception as error:  # noqa: BLE001 - isolate: one request may be the cause
            if len(live) == 1:
                live[0].future.set_exception(error)
                return
            for request in live:
                await self._compute(loop, [request])
            return
        start = 0
        for request in live:
            stop = start + len(request.images)
            if not request.future.done():
                request.future.set_result(out[start:stop])
            start = stop

    def _record(self, size: int) -> None:
        if len(self.batches) >= self.max_recorded:
            del self.batches[: self.max_recorded // 2]
        self.batches.append(size)
