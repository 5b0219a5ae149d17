"""Feature throughput through the model server (TF Serving API), batched against one by one.

    python benchmarks/features.py --address 127.0.0.1:18500 --name backbone [--crops 256]

Sends real superpixel crops (the shared labelled set, cut at the served crop size) through the
same async client the feature service uses: first one crop per Predict call (the baseline), then
batches of `--batch` crops one call at a time (what one feature copy sends per poll), then two
such calls in flight at once (two copies; the server batches them together). Prints crops/s and
ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import numpy as np

from amberscan.common.data import shared_data_dir
from amberscan.common.model_client import FeatureClient
from amberscan.common.settings import load_settings
from amberscan.model.dataset import list_labelled
from amberscan.vision.crops import load_crop


async def served_crop_size(address: str, name: str) -> int:
    async with FeatureClient(address, name) as client:
        return (await client.metadata()).crop_size


async def measure(
    address: str, name: str, crops: np.ndarray, batch: int, in_flight: int = 1
) -> float:
    async with FeatureClient(address, name) as client:
        await client.wait_until_serving(60)
        await client.predict(crops[:batch])  # warm-up: graph tracing, allocations
        chunks = [crops[i : i + batch] for i in range(0, len(crops), batch)]
        slots = asyncio.Semaphore(in_flight)

        async def send(chunk: np.ndarray) -> None:
            async with slots:
                await client.predict(chunk)

        started = time.perf_counter()
        await asyncio.gather(*(send(chunk) for chunk in chunks))
        return len(crops) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:18500")
    parser.add_argument("--name", default="backbone")
    parser.add_argument("--data", type=Path, help="default: the shared labelled set's superpixels/")
    parser.add_argument("--crops", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    data = args.data or shared_data_dir(load_settings().data, "superpixels")
    labelled = list_labelled(data)[: args.crops]
    size = asyncio.run(served_crop_size(args.address, args.name))
    crops = np.stack([load_crop(c.path, size) for c in labelled])
    single = asyncio.run(measure(args.address, args.name, crops, 1))
    batched = asyncio.run(measure(args.address, args.name, crops, args.batch))
    two = asyncio.run(measure(args.address, args.name, crops, args.batch, in_flight=2))
    print(f"{len(crops)} real crops of {size}x{size} through {args.name} at {args.address}")
    print(f"one per call           {single:8.1f} crops/s")
    print(
        f"batches of {args.batch:<4}        {batched:8.1f} crops/s   ratio {batched / single:.2f}x"
    )
    print(f"two batches in flight  {two:8.1f} crops/s   ratio {two / single:.2f}x")


if __name__ == "__main__":
    main()
