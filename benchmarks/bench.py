"""Throughput: amberscan against the 2018 method, on the same tiles, in the same run.

    make bench               # .venv/bin/python benchmarks/bench.py  (>= 100 tiles)
    make bench QUICK=1       # .venv/bin/python benchmarks/bench.py --quick

Tiles: a demo mosaic (`amberscan.tiler.mosaic`: crops of the real shared tiles in their flips and
rotations, at illustrative coordinates, labelled demo).

1. Baseline, the 2018 method, in this process, no Kafka: per tile scikit-image SLIC with the 2018
   call (n_segments=30, compactness=35, sigma=1 on `img_as_float`), bounding-box crops resized to
   224x224 (nearest), one ResNet50 (Keras) predict call for the tile's crops, XGBoost, the > 2
   rule. ResNet50's weights do not change its cost, so seeded random weights stand in for the
   ImageNet ones (which cannot be downloaded here): its timing is the 2018 method's, its verdicts
   mean nothing.
2. amberscan, the same tiles through the pipeline on the local stack (`make up`): every stage as
   its own `amberscan serve` process, its own model server (the configured default model and
   runtime), under a topic prefix, bucket and schema of the bench's own; timed from the scan
   request to the last row in PostGIS. A first scan warms every process up (reported apart);
   the timed one is a rescan.
3. Per-stage figures from the services' own metrics and the records' timestamps; peak RSS of
   every process; verdict agreement of the pipeline with the detection core run here on the same
   tiles with the same model; a scale-out row (1 against 2 copies of the costliest stage).

Prints a table and writes artifacts/bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from amberscan import scanning
from amberscan.common import topics
from amberscan.common.bus import client_options
from amberscan.common.data import shared_data_dir
from amberscan.common.db import Database
from amberscan.common.registry import make_current
from amberscan.common.served_features import client_for
from amberscan.common.settings import (
    Settings,
    environment,
    from_variables,
    load_settings,
    replace,
)
from amberscan.common.topic_admin import ensure_topics
from amberscan.model.classifier import Classifier, verdict
from amberscan.tiler.mosaic import MOSAIC_NOTICE, Mosaic
from amberscan.vision.crops import crops_for
from amberscan.vision.segment import COMPACTNESS, N_SEGMENTS, SIGMA, segment

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("tiler", "segmenter", "feature", "classifier", "aggregator", "sink")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the 2018 method ------------------------------------------------------------------------------


def baseline_2018(images: list[np.ndarray], data: Path) -> dict[str, Any]:
    """Tiles/s of the 2018 serial method, with the time of each of its parts."""
    import keras
    import xgboost as xgb
    from keras.applications.resnet50 import preprocess_input
    from PIL import Image
    from skimage.measure import regionprops
    from skimage.segmentation import slic
    from skimage.util import img_as_float

    from amberscan.model.dataset import list_labelled
    from amberscan.vision.crops import load_crop

    keras.utils.set_random_seed(0)
    resnet = keras.applications.ResNet50(
        weights=None, include_top=False, pooling="avg", input_shape=(224, 224, 3)
    )
    # An XGBoost model over 2048-d ResNet50 features, fitted on a few real labelled crops:
    # only its cost counts here (the random weights make its verdicts meaningless).
    labelled = list_labelled(data)[::15]
    train = np.stack([load_crop(c.path) for c in labelled]).astype(np.float32)
    booster = xgb.XGBClassifier(n_estimators=300, max_depth=4, n_jobs=os.cpu_count())
    booster.fit(resnet.predict(preprocess_input(train), verbose=0), [c.label for c in labelled])
    resnet.predict(preprocess_input(train[:30]), verbose=0)  # warm-up: graph tracing

    seconds = {"slic": 0.0, "crops": 0.0, "resnet50": 0.0, "xgboost": 0.0}
    started = time.perf_counter()
    for image in images:
        t0 = time.perf_counter()
        labels = slic(
            img_as_float(image),
            n_segments=N_SEGMENTS,
            compactness=COMPACTNESS,
            sigma=SIGMA,
            start_label=1,
        )
        t1 = time.perf_counter()
        crops = []
        for region in regionprops(labels):
            r0, c0, r1, c1 = region.bbox
            crop = Image.fromarray(image[r0:r1, c0:c1]).resize((224, 224), Image.NEAREST)
            crops.append(np.asarray(crop, dtype=np.float32))
        t2 = time.perf_counter()
        features = resnet.predict(preprocess_input(np.stack(crops)), verbose=0)
        t3 = time.perf_counter()
        _ = (booster.predict_proba(features)[:, 1] >= 0.5).sum() > 2
        t4 = time.perf_counter()
        for part, dt in zip(seconds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            seconds[part] += dt
    total = time.perf_counter() - started
    return {
        "tiles": len(images),
        "seconds": round(total, 2),
        "tiles_per_s": len(images) / total,
        "seconds_per_tile": {k: round(v / len(images), 3) for k, v in seconds.items()},
        "weights": "ResNet50 with seeded random weights (the cost of the ImageNet ones)",
    }


# -- the pipeline ---------------------------------------------------------------------------------


class Processes:
    """`amberscan serve …` subprocesses of the bench, with metrics ports and logs."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.metrics: dict[str, int] = {}

    def start(self, name: str, *command: str, metrics: bool = True, **extra: str) -> None:
        port = free_port() if metrics else 0
        env = {**self.env, **extra, "AMBERSCAN_METRICS_PORT": str(port)}
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "amberscan.cli", *command],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if port:
            self.metrics[name] = port

    def check(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"bench processes exited: {dead}; logs in {self.logs}")

    def peak_rss_mb(self) -> dict[str, float]:
        return {name: peak_rss_mb(p.pid) for name, p in self.procs.items()}

    def cpu_seconds(self) -> dict[str, float]:
        return {name: cpu_seconds(p.pid) for name, p in self.procs.items()}

    def scrape(self) -> dict[str, str]:
        out = {}
        for name, port in self.metrics.items():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                out[name] = r.read().decode()
        return out

    def stop(self, names: list[str] | None = None) -> None:
        chosen = {n: p for n, p in self.procs.items() if names is None or n in names}
        for proc in chosen.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in chosen.items():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            self.procs.pop(name)
            self.metrics.pop(name, None)


def peak_rss_mb(pid: int) -> float:
    """VmHWM of `pid` and its children (the peak resident set), in MB; 0 when gone."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        total += int(match.group(1)) / 1024 if match else 0.0
    return round(total, 1)


def cpu_seconds(pid: int, *, ended_children: bool = False) -> float:
    """User + system CPU seconds `pid` has used so far (what a CPU-bound stage costs), with
    those of its children that ended and were waited for when `ended_children`."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if ended_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in found] + [g for c in found for g in children(int(c))]


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid`, its live children and the children that ended (PostgreSQL's
    backends come and go)."""
    return cpu_seconds(pid, ended_children=True) + sum(cpu_seconds(c) for c in children(pid))


def stack_pids() -> dict[str, int]:
    """The local stack's servers (Kafka, MinIO, PostgreSQL), from the pid files `make up` keeps."""
    run = ROOT / ".stack" / "run"
    files = {
        "kafka": run / "kafka.pid",
        "minio": run / "minio.pid",
        "postgres": ROOT / ".stack" / "postgres" / "data" / "postmaster.pid",
    }
    return {n: int(f.read_text().split()[0]) for n, f in files.items() if f.is_file()}


def stack_rss_mb() -> dict[str, float]:
    """Peak RSS of the local stack's servers."""
    return {name: peak_rss_mb(pid) for name, pid in stack_pids().items()}


def stack_cpu_seconds() -> dict[str, float]:
    """CPU seconds the local stack's servers have used so far."""
    return {name: tree_cpu_seconds(pid) for name, pid in stack_pids().items()}


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head != name and not head.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def histogram(text: str, name: str) -> dict[str, float]:
    """Bucket counts (cumulative, by upper bound) of a Prometheus histogram."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            bound = re.search(r'le="([^"]+)"', line)
            if bound:
                out[bound.group(1)] = float(line.rpartition(" ")[2])
    return out


@contextmanager
def mosaic_server(mosaic: Mosaic) -> Iterator[str]:
    """The mosaic's tile server in a thread of its own (the tiler fetches from it over HTTP)."""
    import threading

    from aiohttp import web

    from amberscan.tiler.mosaic import make_app

    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(mosaic))
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(30)
    try:
        yield f"http://127.0.0.1:{port}/tiles/{{z}}/{{x}}/{{y}}.png"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


async def scan(settings: Settings, mosaic: Mosaic, timeout_s: float) -> scanning.ScanSummary:
    request = mosaic.scan_request(f"bench-{uuid.uuid4().hex[:8]}", rescan=True)
    async with Database(settings.database) as db:
        expected = await scanning.submit(settings, db, request)
        return await scanning.follow(
            db, request.scan_id, expected, timeout_s=timeout_s, progress=False
        )


async def stage_latencies(settings: Settings, scan_id: str) -> dict[str, dict[str, float]]:
    """Per tile of `scan_id`, the time from the last record it had on a topic to the last one it
    had on the next topic (the time it waited there and was handled), p50/p95 in seconds."""
    from aiokafka import AIOKafkaConsumer

    from amberscan.v1 import messages_pb2 as pb

    kinds = {
        topics.TILES: pb.Tile,
        topics.SUPERPIXELS: pb.Superpixel,
        topics.FEATURES: pb.SuperpixelFeatures,
        topics.SCORES: pb.SuperpixelScore,
        topics.DETECTIONS: pb.Detection,
    }
    last: dict[str, dict[str, float]] = {}
    for topic, cls in kinds.items():
        consumer = AIOKafkaConsumer(
            topics.topic_name(settings.kafka.topic_prefix, topic),
            **client_options(settings.kafka),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        times: dict[str, float] = {}
        try:
            while batch := await consumer.getmany(timeout_ms=1500, max_records=5000):
                for part in batch.values():
                    for record in part:
                        message = cls.FromString(record.value)
                        ref = getattr(message, "ref", message)
                        if ref.scan_id == scan_id:
                            tile = ref.tile_id
                            times[tile] = max(times.get(tile, 0.0), record.timestamp / 1000)
        finally:
            await consumer.stop()
        last[topic] = times
    names = list(kinds)
    stage_of = {
        topics.SUPERPIXELS: "segmenter",
        topics.FEATURES: "feature",
        topics.SCORES: "classifier",
        topics.DETECTIONS: "aggregator",
    }
    out = {}
    for before, after in zip(names, names[1:], strict=False):
        waits = [last[after][t] - last[before][t] for t in last[after] if t in last[before]]
        if waits:
            out[stage_of[after]] = {
                "p50_s": round(float(np.percentile(waits, 50)), 3),
                "p95_s": round(float(np.percentile(waits, 95)), 3),
            }
    return out


async def core_verdicts(
    settings: Settings, images: dict[str, np.ndarray], classifier: Classifier
) -> dict[str, bool]:
    """The detection core on the same tiles, in this process, through the same model server."""
    out = {}
    async with client_for(settings) as client:
        crop_size = (await client.metadata()).crop_size
        for tile_id, image in images.items():
            segmentation = segment(image, mode=settings.segmenter.mode)
            crops = crops_for(image, segmentation, crop_size)
            scores = classifier.score(await client.predict(crops))
            out[tile_id] = verdict(
                scores, classifier.threshold, settings.aggregator.min_positive_superpixels
            )[0]
    return out


def segmenter_rates(images: list[np.ndarray]) -> dict[str, float]:
    """Tiles/s on one core of each SLIC mode (what one segmenter copy can do)."""
    out = {}
    for mode in ("reference", "fast"):
        started = time.perf_counter()
        for image in images:
            segment(image, mode=mode)
        out[mode] = round(len(images) / (time.perf_counter() - started), 2)
    return out


def bench_env(settings: Settings, prefix: str, url: str, model_address: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMBERSCAN_")}
    env.update(environment(settings))
    env.update(
        {
            "AMBERSCAN_TOPIC_PREFIX": prefix,
            "AMBERSCAN_S3_BUCKET": prefix.rstrip(".").replace("_", "-"),
            "AMBERSCAN_DATABASE_SCHEMA": prefix.rstrip(".").replace("-", "_"),
            "AMBERSCAN_DEMO_TILES_URL": url,
            "AMBERSCAN_MODEL_SERVER": model_address,
            "AMBERSCAN_LOG_JSON": "false",
            "AMBERSCAN_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def settings_of(env: dict[str, str]) -> Settings:
    return from_variables(env, Settings)


async def wait_serving(settings: Settings, procs: Processes, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    async with client_for(settings) as client:
        while True:
            procs.check()
            try:
                await client.wait_until_serving(5)
                return
            except Exception:  # noqa: BLE001 - still loading
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)


def handle_seconds(metrics: dict[str, str], tiles: int) -> dict[str, float]:
    """Seconds per tile each stage spent handling its records (waits on I/O included)."""
    return {
        stage: round(
            metric(metrics.get(stage, ""), "amberscan_handle_seconds_sum", service=stage) / tiles,
            4,
        )
        for stage in STAGES
    }


async def run_pipeline(args: argparse.Namespace, mosaic: Mosaic, base: Settings) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    logs = ROOT / "artifacts" / "bench-logs" / prefix.rstrip(".")
    logs.mkdir(parents=True, exist_ok=True)
    model_address = f"127.0.0.1:{free_port()}"
    result: dict[str, Any] = {"logs": str(logs)}
    with mosaic_server(mosaic) as url:
        env = bench_env(base, prefix, url, model_address)
        settings = settings_of(env)
        procs = Processes(env, logs)
        try:
            await ensure_topics(settings.kafka)
            classifier = Classifier.load(settings.classifier.path)
            await make_current(settings.s3, classifier, action="promote", by="bench")
            procs.start("model-server", "serve", "model-server")
            await wait_serving(settings, procs)
            for stage in STAGES:
                procs.start(stage, "serve", stage)
            started = time.perf_counter()
            first = await scan(settings, mosaic, args.timeout)
            result["first_scan"] = {
                "seconds": round(time.perf_counter() - started, 2),
                "summary": {k: first.as_dict()[k] for k in ("tiles", "done", "failed")},
            }
            procs.check()
            before = procs.scrape()
            cpu_before = procs.cpu_seconds()
            stack_before = stack_cpu_seconds()
            started = time.perf_counter()
            warm = await scan(settings, mosaic, args.timeout)
            seconds = time.perf_counter() - started
            procs.check()
            after = procs.scrape()
            cpu = {n: round(c - cpu_before.get(n, 0.0), 2) for n, c in procs.cpu_seconds().items()}
            stack_cpu = {n: c - stack_before.get(n, 0.0) for n, c in stack_cpu_seconds().items()}
            delta = {name: _delta_text(before.get(name, ""), text) for name, text in after.items()}
            tiles = warm.done
            result["warm_scan"] = {
                "seconds": round(seconds, 2),
                "tiles_per_s": tiles / seconds if seconds else 0.0,
                "summary": {k: warm.as_dict()[k] for k in ("tiles", "done", "failed", "flagged")},
            }
            model_text = delta.get("model-server", "")
            images = metric(model_text, "amberscan_model_batch_images_sum")
            calls = metric(model_text, "amberscan_model_batch_images_count")
            busy = handle_seconds(delta, max(tiles, 1))
            per_tile = {n: round(c / max(tiles, 1), 4) for n, c in cpu.items()}
            stage = max((n for n in per_tile if n in (*STAGES, "model-server")), key=per_tile.get)
            result["stages"] = {
                "cpu_seconds_per_tile": per_tile,
                # Kafka, MinIO and PostgreSQL on the same cores: the cost model's stack share.
                "stack_cpu_seconds_per_tile": {
                    n: round(c / max(tiles, 1), 4) for n, c in stack_cpu.items()
                },
                "handle_seconds_per_tile": busy,
                "costliest": stage,
                "model_server": {
                    "crops": int(images),
                    "calls": int(calls),
                    "mean_batch": round(images / calls, 1) if calls else 0.0,
                    "batch_histogram": _buckets(
                        histogram(after.get("model-server", ""), "amberscan_model_batch_images"),
                        histogram(before.get("model-server", ""), "amberscan_model_batch_images"),
                    ),
                    "crops_per_s_of_scan": round(images / seconds, 1) if seconds else 0.0,
                },
                "rows_per_s_busy": {
                    s: round(
                        metric(delta.get(s, ""), "amberscan_handle_seconds_count", service=s)
                        / max(
                            metric(delta.get(s, ""), "amberscan_handle_seconds_sum", service=s),
                            1e-9,
                        ),
                        1,
                    )
                    for s in ("classifier", "sink", "feature", "segmenter")
                },
                "wait_per_topic": await stage_latencies(settings, warm.scan_id),
            }
            result["peak_rss_mb"] = {**procs.peak_rss_mb(), **stack_rss_mb()}
            pipeline_verdicts = {v["tile_id"]: bool(v["flagged"]) for v in warm.verdicts}
            tile_images = {t.quadkey: mosaic.image(t) for t in mosaic.tiles()}
            core = await core_verdicts(settings, tile_images, classifier)
            same = sum(pipeline_verdicts.get(t) == v for t, v in core.items())
            result["verdict_agreement"] = same / len(core) if core else 0.0
            result["verdicts"] = {"flagged": sum(core.values()), "tiles": len(core)}
            if args.scale_out:
                result["scale_out"] = await scale_out(
                    args, procs, settings, mosaic, stage, tiles / seconds
                )
        finally:
            procs.stop()
            await _drop(settings)
    return result


async def scale_out(
    args: argparse.Namespace,
    procs: Processes,
    settings: Settings,
    mosaic: Mosaic,
    stage: str,
    one_copy_tiles_per_s: float,
) -> dict[str, Any]:
    """The warm scan again with a second copy of `stage`: another member of its consumer group,
    or, for the model server, a second server that the feature stage balances over."""
    added = f"{stage}-2"
    if stage == "model-server":
        second = f"127.0.0.1:{free_port()}"
        procs.start(added, "serve", "model-server", AMBERSCAN_MODEL_SERVER=second)
        await wait_serving(replace(settings, model_server={"address": second}), procs)
        procs.stop(["feature"])
        both = f"{settings.model_server.address},{second}"
        procs.start("feature", "serve", "feature", AMBERSCAN_MODEL_SERVER=both)
    else:
        procs.start(added, "serve", stage)
    await asyncio.sleep(10)  # the group rebalances over both copies
    started = time.perf_counter()
    summary = await scan(settings, mosaic, args.timeout)
    seconds = time.perf_counter() - started
    two = summary.done / seconds if seconds else 0.0
    procs.stop([added])
    return {
        "stage": stage,
        "one_copy_tiles_per_s": round(one_copy_tiles_per_s, 3),
        "two_copies_tiles_per_s": round(two, 3),
        "speed_up": round(two / one_copy_tiles_per_s, 2) if one_copy_tiles_per_s else 0.0,
        "cores": os.cpu_count(),
        "summary": {k: summary.as_dict()[k] for k in ("tiles", "done", "failed")},
    }


def _delta_text(before: str, after: str) -> str:
    """`after` with every sample reduced by its value in `before` (counters since the warm-up)."""
    old = {}
    for line in before.splitlines():
        if line and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            old[head] = float(value)
    lines = []
    for line in after.splitlines():
        if line and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            lines.append(f"{head} {float(value) - old.get(head, 0.0)}")
    return "\n".join(lines)


def _buckets(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    cumulative = {k: v - before.get(k, 0.0) for k, v in after.items()}
    out, previous = {}, 0.0
    for bound, count in cumulative.items():
        if count - previous:
            out[f"<= {bound}"] = int(count - previous)
        previous = count
    return out


async def _drop(settings: Settings) -> None:
    from amberscan.common.blobstore import BlobStore
    from amberscan.common.topic_admin import delete_topics

    await delete_topics(settings.kafka)
    async with Database(settings.database) as db:
        await db.drop_schema()
    await asyncio.to_thread(BlobStore(settings.s3).remove_bucket)


def machine() -> dict[str, Any]:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.+)", flags)
    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "avx512": "avx512f" in flags,
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
    }


def print_table(report: dict[str, Any]) -> None:
    b, a = report["baseline"], report["amberscan"]
    print(f"\n{MOSAIC_NOTICE}")
    m = report["machine"]
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, AVX-512 {'yes' if m['avx512'] else 'no'}, {m['date']}"
    )
    print(f"\n{'':38}{'tiles':>7}{'seconds':>10}{'tiles/s':>10}")
    print(
        f"{'2018 method (SLIC, ResNet50, XGBoost)':38}{b['tiles']:>7}{b['seconds']:>10.1f}{b['tiles_per_s']:>10.3f}"
    )
    w = a["warm_scan"]
    print(
        f"{'amberscan pipeline, warm':38}{w['summary']['done']:>7}{w['seconds']:>10.1f}{w['tiles_per_s']:>10.3f}"
    )
    print(f"{'ratio':38}{'':>17}{report['ratio']:>10.2f}x")
    print(f"\nfirst scan (start-up, warm-up): {a['first_scan']['seconds']} s")
    print(f"2018 method per tile: {b['seconds_per_tile']} ({b['weights']})")
    s = a["stages"]
    print(
        f"CPU seconds per tile by process: {s['cpu_seconds_per_tile']} (costliest: {s['costliest']})"
    )
    print(f"CPU seconds per tile of the stack's servers: {s['stack_cpu_seconds_per_tile']}")
    print(f"handler seconds per tile by stage: {s['handle_seconds_per_tile']}")
    ms = s["model_server"]
    print(
        f"model server: {ms['crops']} crops in {ms['calls']} calls (mean batch {ms['mean_batch']}), "
        f"{ms['crops_per_s_of_scan']} crops/s over the scan; batches {ms['batch_histogram']}"
    )
    print(f"rows/s per busy second: {s['rows_per_s_busy']}")
    print(f"segmenter tiles/s on one core: {report['segmenter_tiles_per_s_per_core']}")
    print(f"time per tile from a topic to the next (p50/p95 s): {s['wait_per_topic']}")
    print(f"peak RSS MB: {a['peak_rss_mb']}")
    print(
        f"verdict agreement, pipeline vs detection core: {report['verdict_agreement']:.3f} "
        f"({a['verdicts']['flagged']} of {a['verdicts']['tiles']} tiles flagged)"
    )
    if "scale_out" in a:
        so = a["scale_out"]
        print(
            f"scale-out, 2 copies of {so['stage']}: {so['one_copy_tiles_per_s']} -> "
            f"{so['two_copies_tiles_per_s']} tiles/s = {so['speed_up']}x on {so['cores']} cores"
            f" ({so.get('summary', {}).get('done', '?')} done, "
            f"{so.get('summary', {}).get('failed', '?')} failed)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=128, help="mosaic tiles (default 128)")
    parser.add_argument("--quick", action="store_true", help="16 tiles, no scale-out row")
    parser.add_argument("--no-scale-out", dest="scale_out", action="store_false")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.tiles, args.scale_out = 16, False
    base = load_settings()
    tiles_dir = shared_data_dir(base.data, "tiles")
    mosaic = Mosaic.of(args.tiles, tiles_dir)  # the smallest grid holding them: all are scanned
    images = [mosaic.image(t) for t in mosaic.tiles()]
    print(f"{len(images)} mosaic tiles; the 2018 method first ...", flush=True)
    baseline = baseline_2018(images, shared_data_dir(base.data, "superpixels"))
    print(
        f"  {baseline['tiles_per_s']:.3f} tiles/s; now amberscan on the local stack ...", flush=True
    )
    pipeline = asyncio.run(run_pipeline(args, mosaic, base))
    report = {
        "tiles": len(images),
        "baseline_tiles_per_s": baseline["tiles_per_s"],
        "amberscan_tiles_per_s": pipeline["warm_scan"]["tiles_per_s"],
        "ratio": pipeline["warm_scan"]["tiles_per_s"] / baseline["tiles_per_s"],
        "verdict_agreement": pipeline["verdict_agreement"],
        "stages": pipeline["stages"],
        "segmenter_tiles_per_s_per_core": segmenter_rates(images[:8]),
        "baseline": baseline,
        "amberscan": pipeline,
        "machine": machine(),
        "settings": {
            "segmentation_mode": base.segmenter.mode,
            "model_server_runtime": base.serving.runtime,
            "feature_batch_size": base.feature.batch_size,
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
