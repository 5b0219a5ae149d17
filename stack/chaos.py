"""`make chaos`: a scan of the demo mosaic on a private stack while its processes are SIGKILLed.

    .venv/bin/python stack/chaos.py [--quick] [--brokers 3] [--tiles N] [--seed S] [--keep]

1. Starts a private stack (its own AMBERSCAN_STACK_DIR and ports, never the shared one): Kafka
   (one node, or three with `--brokers 3`: topics at replication factor 3, min.insync.replicas
   2, acks=all), MinIO, PostgreSQL/PostGIS and the model server; serves the demo mosaic
   (`amberscan.tiler.mosaic`, labelled demo) from the real shared tiles.
2. The fault-free reference: the same tiles scanned with no fault, by a pipeline of its own
   (kept in the cache, keyed by the tiles, the models and the detection settings, so a rerun
   reuses it; `--fresh-reference` scans again).
3. The chaos run: every stage its own `amberscan serve` process, two copies of segmenter and
   feature, each reaching Kafka through a TCP proxy of its own (`stack/netproxy.py`: the
   brokers advertise to each process a listener of its own at its proxy's address) and serving
   its metrics. The tiler is slowed, and the imagery of the scan's last tiles held back until
   every fault is in (`TileGate`), so that the scan outlasts its faults. One fault at a time,
   from seeded moments of the scan's progress, each timed on the work in flight:
   - a service SIGKILLed (at least 6 kills, every one of the six services included) once its
     metrics show it holds records read and not committed (`amberscan_uncommitted_records`),
     restarted after 1-4 s;
   - a network partition: a process's proxy cut (connections kept open, nothing forwarded) for
     15-35 s while it holds uncommitted records, then healed;
   - Kafka SIGKILLed while producers are writing (a stage's `amberscan_outputs_total` rising
     while records are in flight): the one broker; in a cluster a random broker and, in
     another fault, the leader of most partitions of the topic being written;
   - MinIO, PostgreSQL and the model server SIGKILLed once each;
   each restarted after a short pause.
4. Verifies and prints: tiles expected / done / failed; rows per (tile, imagery date, model):
   exactly one each; verdicts and scores equal to the reference; nothing left without a status;
   **redeliveries**: records read more than once (per source topic, the reads of every process
   of its group, killed ones included, beyond the topic's records), and records produced more
   than once (per topic, records beyond its logical messages); time to recover after each fault
   (back up, and the next tile finished). Writes `artifacts/chaos.json` (and a copy named by
   the mode) and exits 1 on any loss, duplicate row or mismatch, and on a run without a
   redelivery: its faults did not reach work in flight.

`--quick` is the short form (fewer tiles, one kill per service); `--ci` the smaller one a test
runs. A service that exits by itself is restarted too (as Kubernetes would) and reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

# name of a copy → its stage. Two copies of the two heaviest stages share their groups.
COPIES = {
    "tiler": "tiler",
    "segmenter-a": "segmenter",
    "segmenter-b": "segmenter",
    "feature-a": "feature",
    "feature-b": "feature",
    "classifier": "classifier",
    "aggregator": "aggregator",
    "sink": "sink",
}
SERVICES = ("tiler", "segmenter", "feature", "classifier", "aggregator", "sink")
# Consumer groups a copy joins (the sink runs two loops).
GROUPS = {"sink": 2}


@dataclass(frozen=True)
class Mode:
    name: str
    tiles: int
    service_kills: int
    timeout_s: float
    # The tiler's provider requests are slowed so the scan lasts long enough for every fault to
    # land in it: the faults come one at a time, each back after 10-40 s, while the unslowed
    # pipeline scans 200 tiles in about 150 s on 2 cores.
    fetch_rate_per_s: float = 0.0
    # Network partitions: a process's proxy to the brokers cut, then healed.
    partitions: int = 1
    # The last scan tiles, whose imagery is held back until every fault is in (`TileGate`).
    held_tiles: int = 2


MODES = {
    # 16 requests a scan tile: 200 tiles in at least 200 * 16 / 5 = 640 s.
    "full": Mode(
        "full", tiles=200, service_kills=12, timeout_s=4 * 3600, fetch_rate_per_s=5.0, partitions=2
    ),
    "quick": Mode("quick", tiles=24, service_kills=6, timeout_s=3600, fetch_rate_per_s=1.0),
    # As the quick form: with 8 tiles, one every 40-50 s, the kills waiting for work in flight
    # found none within their 60 s and two faults came after the scan's end (2026-12-06).
    "ci": Mode("ci", tiles=24, service_kills=6, timeout_s=1800, fetch_rate_per_s=1.0),
}

# Ports above a private stack's base: each copy (its index k in COPIES) serves its metrics on
# base + METRICS_PORT + k; on Kafka node i (from 0) it has a listener of its own on
# base + LISTENER_PORT + 10k + i, which the node advertises at its proxy, on
# base + PROXY_PORT + 10k + i.
METRICS_PORT, LISTENER_PORT, PROXY_PORT = 200, 300, 100


# --- the private stack ----------------------------------------------------------------------------


# The ports the kernel gives client connections (Linux).
EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")


def stack_env(stack_dir: Path, base: int, brokers: int) -> dict[str, str]:
    """AMBERSCAN_* variables of a private stack on ports base..base+600 (see stack/lib.sh)."""
    kafka = [f"127.0.0.1:{base + 92 + 2 * i}" for i in range(brokers)]
    env = {
        "AMBERSCAN_STACK_DIR": str(stack_dir),
        "AMBERSCAN_STACK_KAFKA_BROKERS": str(brokers),
        "AMBERSCAN_KAFKA_BOOTSTRAP": ",".join(kafka),
        "AMBERSCAN_STACK_KAFKA_CONTROLLER_PORT": str(base + 93),
        "AMBERSCAN_S3_ENDPOINT": f"127.0.0.1:{base}",
        "AMBERSCAN_STACK_MINIO_CONSOLE_PORT": str(base + 1),
        "AMBERSCAN_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{base + 432}/amberscan",
        "AMBERSCAN_MODEL_SERVER": f"127.0.0.1:{base + 500}",
        "AMBERSCAN_STACK_KAFKA_EXTRA_LISTENERS": " ".join(
            f"{listener_label(c)}:{base + LISTENER_PORT + 10 * k}:{base + PROXY_PORT + 10 * k}"
            for k, c in enumerate(COPIES)
        ),
    }
    if brokers > 1:
        env |= {
            "AMBERSCAN_TOPIC_REPLICATION_FACTOR": "3",
            "AMBERSCAN_TOPIC_MIN_INSYNC_REPLICAS": "2",
        }
    return env


def listener_label(copy: str) -> str:
    """The name of a copy's Kafka listener (`segmenter-a` → `C_SEGMENTER_A`)."""
    return "C_" + copy.upper().replace("-", "_")


def proxy_routes(base: int, brokers: int, copy: str) -> list[tuple[int, str, int]]:
    """A copy's proxy routes: (its port, the host and port of its listener), one per broker."""
    k = list(COPIES).index(copy)
    return [
        (base + PROXY_PORT + 10 * k + i, "127.0.0.1", base + LISTENER_PORT + 10 * k + i)
        for i in range(brokers)
    ]


def ephemeral_clash(first: int, last: int, ranges: Path = EPHEMERAL_PORTS) -> str | None:
    """Why ports first..last would clash with the ports the kernel gives client connections.

    A client connection (a broker's, a test server's) may be given any of those ports, and a
    server started on one it holds fails to bind: a fault that is not the one under test.
    """
    try:
        low, high = map(int, ranges.read_text().split())
    except (OSError, ValueError):
        return None  # no such file on this system: nothing known to clash with
    if last < low or first > high:
        return None
    return (
        f"--port-base {first}: ports {first}-{last} overlap this machine's ephemeral ports "
        f"{low}-{high} ({ranges}); choose a base below {low - (last - first)} or above {high}"
    )


class Stack:
    """The private stack's servers, started and killed through stack/up.sh and their pid files."""

    def __init__(self, directory: Path, env: dict[str, str], brokers: int) -> None:
        self.dir = directory
        self.env = {**os.environ, **env}
        self.brokers = brokers

    def up(self, *components: str) -> None:
        result = subprocess.run(
            [str(ROOT / "stack" / "up.sh"), *components],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"stack/up.sh {' '.join(components)} failed:\n{result.stderr}")

    def down(self) -> None:
        subprocess.run([str(ROOT / "stack" / "down.sh")], env=self.env, check=False)

    def pids(self, server: str) -> list[int]:
        """The processes of `server`: PostgreSQL's postmaster and its children."""
        if server == "postgres":
            pidfile = self.dir / "postgres" / "data" / "postmaster.pid"
            if not pidfile.exists():
                return []
            main = int(pidfile.read_text().split()[0])
            return [main, *_children(main)]
        pidfile = self.dir / "run" / f"{server}.pid"
        return [int(pidfile.read_text())] if pidfile.exists() else []

    def sigkill(self, server: str) -> None:
        pids = self.pids(server)
        if not pids:
            raise RuntimeError(f"{server}: no pid to kill")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:  # reaped by their parent (up.sh's nohup is gone): wait until gone
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# --- the pipeline's processes ---------------------------------------------------------------------


class Links:
    """Each copy's TCP proxy to the brokers (`stack/netproxy.py`), which a partition cuts.

    One process per copy, so cutting one copy's link leaves the others' alone; it is signalled
    (SIGUSR1 cut, SIGUSR2 heal) and outlives the copy's restarts, as a network would.
    """

    def __init__(self, base: int, brokers: int, logs: Path) -> None:
        self.base = base
        self.brokers = brokers
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def bootstrap(self, copy: str) -> str:
        return ",".join(
            f"127.0.0.1:{port}" for port, _, _ in proxy_routes(self.base, self.brokers, copy)
        )

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for copy in COPIES:
            routes = [
                f"--route={p}={h}:{u}" for p, h, u in proxy_routes(self.base, self.brokers, copy)
            ]
            with (self.logs / f"proxy-{copy}.log").open("wb") as log:
                self.procs[copy] = subprocess.Popen(
                    [sys.executable, str(ROOT / "stack" / "netproxy.py"), *routes],
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )
        for copy, proc in self.procs.items():
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(
                    f"the proxy of {copy} did not start: {self.logs}/proxy-{copy}.log"
                )

    def cut(self, copy: str) -> None:
        self.procs[copy].send_signal(signal.SIGUSR1)

    def heal(self, copy: str) -> None:
        self.procs[copy].send_signal(signal.SIGUSR2)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


class TileGate:
    """An HTTP pass-through in front of the mosaic's tile server that holds the provider requests
    of the scan's last `held` tiles until every fault has been injected.

    Faults are timed on finished tiles, and each takes 10-100 s (a wait for work in flight, a
    partition healing), so without the gate a scan could end before its last faults: in CI on
    2026-12-06 the aggregator and a feature copy were never killed. The chaos run's fetch
    timeout is raised so held requests wait rather than fail; the held tiles, released at the
    end, then measure the recovery from the last fault.
    """

    def __init__(self, upstream: str, port: int, scan_zoom: int, held: int, tiles: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = port
        self.scan_zoom = scan_zoom
        self.admit = max(tiles - held, 0)  # scan tiles whose requests pass before the release
        self.admitted: set[tuple[int, int]] = set()
        self.waiting = 0  # requests held now
        self.opened = asyncio.Event()
        self._runner: Any = None
        self._session: Any = None

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tiles/{{z}}/{{x}}/{{y}}.png"

    async def start(self) -> None:
        import aiohttp
        from aiohttp import web

        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_get("/tiles/{z}/{x}/{y}.png", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def release(self) -> None:
        self.opened.set()

    async def stop(self) -> None:
        self.opened.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: Any) -> Any:
        from aiohttp import web

        z, x, y = (int(request.match_info[k]) for k in ("z", "x", "y"))
        shift = max(z - self.scan_zoom, 0)
        scan_tile = (x >> shift, y >> shift)
        if scan_tile not in self.admitted and not self.opened.is_set():
            if len(self.admitted) >= self.admit:
                self.waiting += 1
                try:
                    await self.opened.wait()
                finally:
                    self.waiting -= 1
        self.admitted.add(scan_tile)
        headers = {k: v for k, v in request.headers.items() if k.lower() == "if-none-match"}
        async with self._session.get(
            f"{self.upstream}/tiles/{z}/{x}/{y}.png", headers=headers
        ) as answer:
            body = await answer.read()
            kept = {
                k: v
                for k, v in answer.headers.items()
                if k.lower()
                not in ("content-length", "content-encoding", "transfer-encoding", "connection")
            }
            return web.Response(status=answer.status, body=body, headers=kept)


def metrics_port(base: int, copy: str) -> int:
    return base + METRICS_PORT + list(COPIES).index(copy)


class Pipeline:
    """`amberscan serve <stage>` processes, one per copy, each logging to its own file, reaching
    Kafka through its link and serving its metrics on a port of its own."""

    def __init__(self, env: dict[str, str], logs: Path, base: int, links: Links) -> None:
        self.env = env
        self.base = base
        self.links = links
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.log_of: dict[str, Path] = {}
        self.starts: Counter[str] = Counter()
        self.exits: list[dict[str, Any]] = []  # exits the harness did not cause
        self.killed: set[str] = set()  # copies the harness killed and will restart itself

    def start(self, name: str) -> None:
        self.killed.discard(name)
        self.starts[name] += 1
        path = self.logs / f"{name}.{self.starts[name]}.log"
        with path.open("wb") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "amberscan.cli", "serve", COPIES[name]],
                cwd=ROOT,
                env={
                    **self.env,
                    "AMBERSCAN_KAFKA_BOOTSTRAP": self.links.bootstrap(name),
                    "AMBERSCAN_METRICS_PORT": str(metrics_port(self.base, name)),
                },
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.log_of[name] = path

    def sigkill(self, name: str) -> None:
        self.killed.add(name)
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def joined(self, name: str) -> bool:
        """The copy is running and has joined each of its consumer groups."""
        if self.procs[name].poll() is not None:
            return False
        text = self.log_of[name].read_text(errors="replace")
        return text.count("partitions assigned") >= GROUPS.get(COPIES[name], 1)

    def restart_exited(self) -> None:
        """Restart copies that exited on their own (as Kubernetes would), and note why."""
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None and name not in self.killed:
                tail = self.log_of[name].read_text(errors="replace").splitlines()[-8:]
                self.exits.append({"service": name, "status": proc.returncode, "log": tail})
                print(f"  ! {name} exited with status {proc.returncode}; restarted", flush=True)
                self.start(name)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


# --- one run: a scan through a pipeline, with or without faults -----------------------------------


@dataclass
class Fault:
    kind: str  # "service" (SIGKILL), "partition" (its link cut) or "server" (SIGKILL)
    # a copy name, or kafka / kafka-N / kafka-leader / minio / postgres / model-server
    target: str
    at_fraction: float
    started_s: float = 0.0  # since the scan was submitted
    down_s: float = 0.0
    back_s: float = 0.0  # kill → running again (rejoined its groups / answering / committing)
    recovered_s: float | None = None  # kill → the next tile finished after it was back
    finished_before: int = 0
    held: int = 0  # records the victim held read and not committed when it was hit
    hit: str = ""  # what the fault hit: the work in flight, the topic being written, the leader


def plan_faults(mode: Mode, brokers: int, rng: random.Random) -> list[Fault]:
    """Every service once, then more kills at random copies; `mode.partitions` partitions (the
    first of a copy with a peer to take its partitions, the next of a single one); Kafka (in a
    cluster: a random broker, and the leader of the topic being written), MinIO, PostgreSQL and
    the model server once each; shuffled."""
    copies = {s: [c for c, stage in COPIES.items() if stage == s] for s in SERVICES}
    targets = [rng.choice(copies[s]) for s in SERVICES]
    while len(targets) < mode.service_kills:
        targets.append(rng.choice(list(COPIES)))
    faults = [Fault("service", t, 0.0) for t in targets]
    pairs = [c for c in COPIES if len(copies[COPIES[c]]) > 1]
    singles = [c for c in COPIES if len(copies[COPIES[c]]) == 1]
    for i in range(mode.partitions):
        faults.append(Fault("partition", rng.choice(pairs if i % 2 == 0 else singles), 0.0))
    kafka = ["kafka"] if brokers == 1 else [f"kafka-{rng.randint(1, brokers)}", "kafka-leader"]
    for server in (*kafka, "minio", "postgres", "model-server"):
        faults.append(Fault("server", server, 0.0))
    rng.shuffle(faults)
    # Spread over the scan, leaving its end fault-free so the last recoveries are measured.
    for i, fault in enumerate(faults):
        fault.at_fraction = 0.03 + 0.72 * i / max(len(faults) - 1, 1)
    return faults


class Run:
    """A scan of the mosaic by one pipeline in its own topics, bucket and schema."""

    def __init__(
        self,
        label: str,
        stack_env: dict[str, str],
        mosaic: Any,
        logs: Path,
        base: int,
        links: Links,
    ) -> None:
        from amberscan.common.settings import Settings, from_variables

        unique = uuid.uuid4().hex[:8]
        self.label = label
        self.run_env = {
            **stack_env,
            "AMBERSCAN_TOPIC_PREFIX": f"chaos-{unique}.",
            "AMBERSCAN_S3_BUCKET": f"chaos-{unique}",
            "AMBERSCAN_DATABASE_SCHEMA": f"chaos_{unique}",
        }
        self.env = {**os.environ, **self.run_env}
        self.settings = from_variables(self.env, Settings)
        self.mosaic = mosaic
        self.pipeline = Pipeline(self.env, logs / label, base, links)
        self.links = links
        self.samples: list[tuple[float, int]] = []  # (seconds since submit, tiles finished)
        # Records read, by source topic, per process: (copy, its start), as last scraped.
        self.reads: dict[tuple[str, int], dict[str, float]] = {}
        self._http: Any = None

    async def prepare(self) -> None:
        from amberscan.common.blobstore import BlobStore
        from amberscan.common.topic_admin import ensure_topics

        await ensure_topics(self.settings.kafka)
        await BlobStore(self.settings.s3).ensure_bucket()
        for name in COPIES:
            self.pipeline.start(name)
        await until(lambda: all(self.pipeline.joined(n) for n in COPIES), 300, "services joined")

    async def scan(
        self, faults: list[Fault], stack: Stack, rng: random.Random, gate: TileGate | None = None
    ) -> Any:
        """Submit the scan, inject `faults` as it goes, and follow it to the end (the `gate`
        holding its last tiles until the faults are all in)."""
        from amberscan import scanning
        from amberscan.common.db import Database

        request = self.mosaic.scan_request()
        async with Database(self.settings.database) as db:
            expected = await scanning.submit(self.settings, db, request)
            started = time.monotonic()
            follower = asyncio.create_task(
                scanning.follow(
                    db, request.scan_id, expected, timeout_s=self.timeout_s, progress=False
                )
            )
            sampler = asyncio.create_task(self._sample(db, request.scan_id, started, follower))
            try:
                for fault in faults:
                    while self._finished() < fault.at_fraction * expected and not follower.done():
                        await asyncio.sleep(0.5)
                    if follower.done():
                        break
                    await self._inject(fault, stack, rng, started)
                if gate is not None:
                    print(
                        f"  [{time.monotonic() - started:7.1f}s] {self._finished():>4} tiles "
                        f"finished: every fault in, the held tiles released "
                        f"({gate.waiting} requests were waiting)",
                        flush=True,
                    )
                    gate.release()
                summary = await follower
            finally:
                # On an error too: a follower left running would poll a closed pool until its
                # timeout, and keep the harness from reporting.
                for task in (sampler, follower):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            self.pipeline.restart_exited()
            rows = await db.fetch(
                "SELECT tile_id, imagery_date, model_version, backbone_version, flagged, "
                "positives, segment_count, scores FROM detections"
            )
            statuses = await db.fetch(
                "SELECT tile_id, status, reason FROM scan_tiles WHERE scan_id = %s",
                request.scan_id,
            )
        self.scan_id = request.scan_id
        self.seconds = time.monotonic() - started
        for fault in faults:
            fault.recovered_s = self._recovered(fault)
        return summary, rows, statuses

    timeout_s: float = 3600

    def _finished(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    async def _sample(self, db: Any, scan_id: str, started: float, follower: Any) -> None:
        from amberscan.errors import TransientError

        while True:
            try:
                [(n,)] = await db.fetch(
                    "SELECT count(*) FROM scan_tiles WHERE scan_id = %s AND tile_id <> ''",
                    scan_id,
                )
                self.samples.append((time.monotonic() - started, int(n)))
            except TransientError:
                pass  # PostgreSQL is down: no sample
            self.pipeline.restart_exited()
            if len(self.samples) % 4 == 0:  # the reads of a copy that exits by itself
                await self.scrape_all()
            await asyncio.sleep(0.5)

    async def _inject(self, fault: Fault, stack: Stack, rng: random.Random, t0: float) -> None:
        """Wait for the work the fault is to hit, then inject it and wait until it is over."""
        down = rng.uniform(15.0, 35.0) if fault.kind == "partition" else rng.uniform(1.0, 4.0)
        fault.down_s = round(down, 1)
        node = fault.target
        if fault.kind in ("service", "partition"):
            fault.held = await self._in_flight(fault.target)
            fault.hit = f"{fault.held} records in flight" if fault.held else "idle (none in 60 s)"
        elif fault.target.startswith("kafka"):
            written = await self._writing()
            fault.hit = f"{written} being written" if written else "no write seen in 60 s"
            if fault.target == "kafka-leader":
                node, leads = await self._leader(written or "superpixels", stack.brokers, rng)
                fault.hit += f"; {node}, {leads}"
        fault.started_s = time.monotonic() - t0
        fault.finished_before = self._finished()
        what = "cut the link of" if fault.kind == "partition" else "SIGKILL"
        print(
            f"  [{fault.started_s:7.1f}s] {self._finished():>4} tiles finished: {what} "
            f"{node}{f' ({fault.hit})' if fault.hit else ''}, back after {fault.down_s}s",
            flush=True,
        )
        if fault.kind == "service":
            self.pipeline.sigkill(fault.target)
            await asyncio.sleep(fault.down_s)
            self.pipeline.start(fault.target)
            await until(lambda: self.pipeline.joined(fault.target), 300, f"{fault.target} back")
        elif fault.kind == "partition":
            before = await self.scrape(fault.target)
            start = self.pipeline.starts[fault.target]
            self.links.cut(fault.target)
            await asyncio.sleep(fault.down_s)
            self.links.heal(fault.target)
            # Back once it commits again (or, had it exited meanwhile, once restarted).
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and self.pipeline.starts[fault.target] == start:
                after = await self.scrape(fault.target)
                if after and after.commits > (before.commits if before else 0):
                    break
                await asyncio.sleep(0.5)
            else:
                if self.pipeline.starts[fault.target] == start:
                    fault.hit += "; no commit in 180 s after it healed"
        else:
            await asyncio.to_thread(stack.sigkill, node)
            await asyncio.sleep(fault.down_s)
            await asyncio.to_thread(stack.up, node)
        fault.back_s = round(time.monotonic() - t0 - fault.started_s, 1)
        print(f"             {node} back after {fault.back_s}s", flush=True)

    # -- the stages' own progress, from their metrics ----------------------------------------------

    async def scrape(self, copy: str) -> Figures | None:
        """What `copy`'s metrics say now (None if it does not answer); keeps its reads."""
        import aiohttp

        if self.pipeline.procs[copy].poll() is not None:
            return None
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        life = (copy, self.pipeline.starts[copy])
        url = f"http://127.0.0.1:{metrics_port(self.pipeline.base, copy)}/metrics"
        try:
            async with self._http.get(url) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return None
        figures = figures_of(text)
        self.reads[life] = figures.read
        return figures

    async def scrape_all(self) -> dict[str, Figures]:
        found = await asyncio.gather(*(self.scrape(c) for c in COPIES))
        return {c: f for c, f in zip(COPIES, found, strict=True) if f is not None}

    async def _in_flight(self, copy: str, timeout: float = 60.0) -> int:
        """Wait until `copy` holds records read and not committed; how many (0: none within
        `timeout`). A kill right after redelivers them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            figures = await self.scrape(copy)
            if figures and figures.uncommitted > 0:
                return int(figures.uncommitted)
            await asyncio.sleep(0.1)
        return 0

    async def _writing(self, timeout: float = 60.0) -> str:
        """Wait until producers are writing: a topic's outputs rose since the last look while
        some stage holds records in flight; that topic ("" if none within `timeout`)."""
        deadline = time.monotonic() + timeout
        last: Counter[str] | None = None
        while time.monotonic() < deadline:
            figures = await self.scrape_all()
            now: Counter[str] = Counter()
            for f in figures.values():
                now.update(f.outputs)
            if last is not None and any(f.uncommitted > 0 for f in figures.values()):
                rose = {t: n - last[t] for t, n in now.items() if n > last[t]}
                if rose:
                    return max(rose, key=lambda t: rose[t])
            last = now
            await asyncio.sleep(0.1)
        return ""

    async def _leader(self, topic: str, brokers: int, rng: random.Random) -> tuple[str, str]:
        """The node leading most partitions of `topic`, and a note of how many it leads."""
        from aiokafka.admin import AIOKafkaAdminClient

        from amberscan.common import topics
        from amberscan.common.bus import client_options

        admin = AIOKafkaAdminClient(**client_options(self.settings.kafka))
        try:
            await asyncio.wait_for(admin.start(), 30)
            [meta] = await asyncio.wait_for(
                admin.describe_topics([topics.topic_name(self.settings.kafka.topic_prefix, topic)]),
                30,
            )
        except Exception as error:  # noqa: BLE001 - the fault still lands, on a random node
            return f"kafka-{rng.randint(1, brokers)}", f"leader unknown ({error!r})"
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        leaders = Counter(part["leader"] for part in meta["partitions"])
        node, count = leaders.most_common(1)[0]
        return f"kafka-{node}", f"leader of {count}/{len(meta['partitions'])} partitions"

    async def close_http(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _recovered(self, fault: Fault) -> float | None:
        back = fault.started_s + fault.back_s
        before = next((n for t, n in reversed(self.samples) if t <= back), 0)
        for t, n in self.samples:
            if t > back and n > before:
                return round(t - fault.started_s, 1)
        return None  # nothing finished after it (the scan had ended)

    async def bus_counts(self) -> dict[str, dict[str, int]]:
        """Per topic: records, logical messages (unique keys), and the redeliveries between."""
        from amberscan.common import topics

        counts = {}
        for topic in topics.ALL_TOPICS:
            records = await read_topic(self.settings, topic)
            keys = [logical_key(topic, value) for value in records]
            counts[topic] = {
                "records": len(records),
                "messages": len(set(keys)),
                "redeliveries": len(records) - len(set(keys)),
            }
        return counts

    async def cleanup(self) -> None:
        """Drop the run's topics, bucket and schema (the stack keeps running)."""
        from amberscan.common.db import Database
        from amberscan.common.topic_admin import delete_topics

        await delete_topics(self.settings.kafka)
        async with Database(self.settings.database) as db:
            await db.drop_schema()
        from amberscan.common.blobstore import BlobStore

        await asyncio.to_thread(BlobStore(self.settings.s3).remove_bucket)


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.5)


async def read_topic(settings: Any, topic: str) -> list[bytes]:
    """Every record value of a topic, from the start to its current end."""
    from aiokafka import AIOKafkaConsumer

    from amberscan.common import topics
    from amberscan.common.bus import client_options

    consumer = AIOKafkaConsumer(
        topics.topic_name(settings.kafka.topic_prefix, topic),
        **client_options(settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await until(lambda: bool(consumer.assignment()), 30, f"the partitions of {topic}")
        parts = list(consumer.assignment())
        ends = await consumer.end_offsets(parts)
        values: list[bytes] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in parts])

        while await behind():
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            values += [r.value or b"" for part in batch.values() for r in part]
        return values
    finally:
        await consumer.stop()


def logical_key(topic: str, value: bytes) -> tuple[Any, ...]:
    """What makes a message the same message when it is produced again (a redelivery)."""
    from amberscan.common import topics
    from amberscan.v1 import messages_pb2 as pb

    if topic == topics.SCAN_REQUESTS:
        r = pb.ScanRequest.FromString(value)
        return (r.scan_id, r.tile.quadkey if r.HasField("tile") else "region")
    if topic == topics.TILES:
        t = pb.Tile.FromString(value)
        return (t.scan_id, t.tile_id)
    if topic in (topics.SUPERPIXELS, topics.FEATURES, topics.SCORES):
        cls = {
            topics.SUPERPIXELS: pb.Superpixel,
            topics.FEATURES: pb.SuperpixelFeatures,
            topics.SCORES: pb.SuperpixelScore,
        }[topic]
        ref = cls.FromString(value).ref
        return (ref.scan_id, ref.tile_id, ref.segment_index)
    if topic == topics.DETECTIONS:
        d = pb.Detection.FromString(value)
        return (d.scan_id, d.tile_id, d.models.classifier)
    letter = pb.DeadLetter.FromString(value)
    return (letter.origin_topic, letter.origin_partition, letter.origin_offset, letter.service)


# --- the stages' metrics, and the redeliveries -----------------------------------------------------


@dataclass
class Figures:
    """What one process's metrics say of its work, summed over its loops."""

    read: dict[str, float] = field(default_factory=dict)  # records taken, by source topic
    uncommitted: float = 0.0  # records taken and not committed yet
    outputs: dict[str, float] = field(default_factory=dict)  # records produced, by topic
    commits: float = 0.0


def figures_of(text: str) -> Figures:
    """The figures of a `/metrics` page (Prometheus text format)."""
    from prometheus_client.parser import text_string_to_metric_families

    figures = Figures()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "amberscan_records_read_total":
                topic = sample.labels["topic"]
                figures.read[topic] = figures.read.get(topic, 0.0) + sample.value
            elif sample.name == "amberscan_uncommitted_records":
                figures.uncommitted += sample.value
            elif sample.name == "amberscan_outputs_total":
                topic = sample.labels["topic"]
                figures.outputs[topic] = figures.outputs.get(topic, 0.0) + sample.value
            elif sample.name == "amberscan_commits_total":
                figures.commits += sample.value
    return figures


def redeliveries(reads: list[dict[str, float]], records: dict[str, int]) -> dict[str, int]:
    """Per source topic, the records read more than once: the reads of every process that
    consumed it (each life of each copy, a killed one's as last scraped, just before its kill)
    beyond the records the topic holds. A record a killed process read and its successor read
    again counts once; one read a third time, twice."""
    total: Counter[str] = Counter()
    for process in reads:
        for topic, n in process.items():
            total[topic] += int(n)
    return {topic: max(0, n - records.get(topic, 0)) for topic, n in sorted(total.items())}


# --- verification ---------------------------------------------------------------------------------


@dataclass
class Verdict:
    status: str
    flagged: bool = False
    positives: int = 0
    segment_count: int = 0
    scores: list[float] = field(default_factory=list)
    reason: str = ""


def verdicts(rows: list[tuple[Any, ...]], statuses: list[tuple[Any, ...]]) -> dict[str, Verdict]:
    """Per tile of the scan: its status and, when done, its detection's verdict and scores."""
    out = {tile: Verdict(status, reason=reason) for tile, status, reason in statuses if tile}
    for tile, _date, _model, _backbone, flagged, positives, count, scores in rows:
        if tile in out and out[tile].status == "done":
            v = out[tile]
            v.flagged, v.positives, v.segment_count = bool(flagged), int(positives), int(count)
            v.scores = [float(s) for s in scores]
    return out


def compare(
    expected_tiles: list[str],
    chaos: dict[str, Verdict],
    reference: dict[str, Verdict],
    rows: list[tuple[Any, ...]],
    atol: float = 1e-4,
) -> dict[str, Any]:
    """The checks of a chaos run against its fault-free reference."""
    per_key = Counter((r[0], r[1], r[2]) for r in rows)
    per_tile = Counter(r[0] for r in rows)
    lost = [t for t in expected_tiles if t not in chaos]
    status_mismatches = [
        t
        for t in expected_tiles
        if t in chaos and t in reference and chaos[t].status != reference[t].status
    ]
    verdict_mismatches = []
    score_mismatches = []
    for tile in expected_tiles:
        c, r = chaos.get(tile), reference.get(tile)
        if c is None or r is None or c.status != "done" or r.status != "done":
            continue
        if (c.flagged, c.positives, c.segment_count) != (r.flagged, r.positives, r.segment_count):
            verdict_mismatches.append(tile)
        elif len(c.scores) != len(r.scores) or any(
            abs(a - b) > atol for a, b in zip(c.scores, r.scores, strict=True)
        ):
            score_mismatches.append(tile)
    done = [t for t in expected_tiles if t in chaos and chaos[t].status == "done"]
    return {
        "lost": len(lost),
        "lost_tiles": lost,
        # The key is the table's primary key, so a second row of one key cannot exist; what
        # can is a tile stored twice under another date or model label, or not at all.
        "duplicate_rows": sum(n - 1 for n in per_key.values() if n > 1)
        + sum(n - 1 for n in per_tile.values() if n > 1),
        "done_without_row": [t for t in done if per_tile.get(t, 0) == 0],
        "rows_outside_the_scan": sorted(set(per_tile) - set(expected_tiles)),
        "verdict_mismatches": len(verdict_mismatches) + len(status_mismatches),
        "verdict_mismatch_tiles": sorted(verdict_mismatches + status_mismatches),
        "score_mismatches": len(score_mismatches),
        "score_mismatch_tiles": score_mismatches,
    }


# --- the reference --------------------------------------------------------------------------------


def reference_path(cache: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache / "chaos" / f"reference-{digest}.json"


async def model_key(run: Run, mosaic: Any) -> dict[str, Any]:
    """What a fault-free scan's result depends on: the tiles, the models, the settings."""
    from amberscan.common.served_features import client_for, served_backbone
    from amberscan.model.classifier import Classifier

    async with client_for(run.settings) as client:
        await client.wait_until_serving(300)
        backbone = (await served_backbone(client)).label
    s = run.settings
    return {
        "mosaic": [mosaic.columns, mosaic.rows, mosaic.seed, mosaic.shift],
        "classifier": Classifier.load(Path(s.classifier.path)).version,
        "backbone": backbone,
        "segmentation": s.segmenter.mode,
        "min_positives": s.aggregator.min_positive_superpixels,
    }


# --- main -----------------------------------------------------------------------------------------


async def chaos(args: argparse.Namespace) -> int:
    from amberscan.tiler.mosaic import MOSAIC_NOTICE, Mosaic

    mode = MODES[args.mode]
    tiles = args.tiles or mode.tiles
    models = Path(os.environ.get("AMBERSCAN_MODEL_DIR", ROOT / "models" / "serving"))
    if not list(models.glob("*/*/saved_model.pb")):
        print(f"no model in {models}: build it first (make model)", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    stack_dir = Path(args.stack_dir).resolve()
    env = stack_env(stack_dir, args.port_base, args.brokers)
    os.environ.update(env)  # this process reads the same settings as the services it starts
    stack = Stack(stack_dir, env, args.brokers)
    logs = stack_dir / "chaos" / time.strftime("%Y%m%d-%H%M%S")
    from amberscan.common.data import shared_data_dir
    from amberscan.common.settings import load_settings

    mosaic = Mosaic.of(tiles, shared_data_dir(load_settings().data, "tiles"))
    print(MOSAIC_NOTICE)
    print(
        f"chaos ({mode.name}): {mosaic.columns}x{mosaic.rows} = {len(mosaic.tiles())} scan tiles, "
        f"{args.brokers} Kafka broker(s), private stack {stack_dir} (ports {args.port_base}+), "
        f"logs {logs}",
        flush=True,
    )
    started = time.monotonic()
    print("starting the private stack", flush=True)
    try:
        await asyncio.to_thread(stack.up)
    except BaseException:
        stack.down()  # what did start must not outlive the run
        raise
    tile_server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "amberscan.tiler.mosaic",
            "--tiles",
            str(tiles),
            "--port",
            str(args.port_base + 80),
        ],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env["AMBERSCAN_DEMO_TILES_URL"] = (
        f"http://127.0.0.1:{args.port_base + 80}/tiles/{{z}}/{{x}}/{{y}}.png"
    )
    links = Links(args.port_base, args.brokers, logs)
    runs: list[Run] = []
    gates: list[TileGate] = []
    try:
        links.start()
        # The reference: the same tiles, no fault.
        probe = Run("reference", env, mosaic, logs, args.port_base, links)
        key = await model_key(probe, mosaic)
        cached = reference_path(Path(args.cache_dir), key)
        if cached.exists() and not args.fresh_reference:
            reference = {
                t: Verdict(**v) for t, v in json.loads(cached.read_text())["tiles"].items()
            }
            ref_seconds = json.loads(cached.read_text())["seconds"]
            print(
                f"fault-free reference from {cached} ({ref_seconds:.0f}s when it ran)", flush=True
            )
        else:
            print("fault-free reference scan", flush=True)
            runs.append(probe)
            await probe.prepare()
            summary, rows, statuses = await probe.scan([], stack, rng)
            probe.pipeline.stop()
            if not summary.complete or summary.error:
                raise RuntimeError(f"the fault-free scan did not complete: {summary.error}")
            reference = verdicts(rows, statuses)
            ref_seconds = probe.seconds
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(
                json.dumps(
                    {
                        "key": key,
                        "seconds": ref_seconds,
                        "tiles": {t: asdict(v) for t, v in reference.items()},
                    }
                )
            )
            print(
                f"  {summary.done} done, {summary.failed} failed in {ref_seconds:.0f}s", flush=True
            )

        # The chaos run.
        # One tile fetched at a time at that rate: tiles enter the pipeline evenly spaced.
        throttle = (
            {
                "AMBERSCAN_FETCH_RATE_PER_S": str(mode.fetch_rate_per_s),
                "AMBERSCAN_TILE_CONCURRENCY": "1",
            }
            if mode.fetch_rate_per_s
            else {}
        )
        gate = TileGate(
            f"http://127.0.0.1:{args.port_base + 80}",
            args.port_base + 81,
            mosaic.tiles()[0].z,
            mode.held_tiles,
            len(mosaic.tiles()),
        )
        await gate.start()
        gates.append(gate)
        # A held request waits for the release rather than timing out and failing its tile.
        held = {
            "AMBERSCAN_DEMO_TILES_URL": gate.url(),
            "AMBERSCAN_FETCH_TIMEOUT_S": str(mode.timeout_s),
        }
        run = Run("chaos", {**env, **throttle, **held}, mosaic, logs, args.port_base, links)
        run.timeout_s = mode.timeout_s
        runs.append(run)
        faults = plan_faults(mode, args.brokers, rng)
        print(f"chaos scan with {len(faults)} faults", flush=True)
        await run.prepare()
        summary, rows, statuses = await run.scan(faults, stack, rng, gate)
        counts = await run.bus_counts()
        await run.scrape_all()  # the last reads of every copy still running
        run.pipeline.stop()
    finally:
        for r in runs:
            r.pipeline.stop()
            await r.close_http()
        links.stop()
        for gate in gates:
            await gate.stop()
        tile_server.terminate()
        tile_server.wait(10)

    expected = [t.quadkey for t in mosaic.tiles()]
    checks = compare(expected, verdicts(rows, statuses), reference, rows)
    done_faults = [f for f in faults if f.back_s]
    service_kills = Counter(COPIES[f.target] for f in done_faults if f.kind == "service")
    server_kills = Counter(f.target for f in done_faults if f.kind == "server")
    reread = redeliveries(list(run.reads.values()), {t: c["records"] for t, c in counts.items()})
    report = {
        "mode": mode.name,
        "brokers": args.brokers,
        "tiles": len(expected),
        "done": summary.done,
        "failed": summary.failed,
        "skipped": summary.skipped,
        "reference_done": sum(v.status == "done" for v in reference.values()),
        "reference_failed": sum(v.status == "failed" for v in reference.values()),
        **checks,
        "complete": summary.complete,
        "error": summary.error,
        "failures": summary.failures,
        "service_kills": sum(service_kills.values()),
        "service_kills_by_service": dict(service_kills),
        "server_kills": sum(server_kills.values()),
        "server_kills_by_server": dict(server_kills),
        "partitions": sum(f.kind == "partition" for f in done_faults),
        "kills_in_flight": sum(f.kind == "service" and f.held > 0 for f in done_faults),
        "faults_not_injected": [f.target for f in faults if not f.back_s],
        # Records read more than once, by source topic (see `redeliveries`).
        "redeliveries": sum(reread.values()),
        "redeliveries_by_topic": reread,
        # Records produced more than once (beyond each topic's logical messages).
        "duplicate_outputs": sum(
            c["redeliveries"] for t, c in counts.items() if t != "dead-letters"
        ),
        "bus": counts,
        "dead_letters": counts["dead-letters"]["records"],
        "unexpected_exits": run.pipeline.exits,
        "faults": [asdict(f) for f in faults],
        "scan_seconds": round(run.seconds, 1),
        "reference_seconds": round(ref_seconds, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
        "segmentation": key["segmentation"],
        "models": {"classifier": key["classifier"], "backbone": key["backbone"]},
        "command": " ".join(["stack/chaos.py", *sys.argv[1:]]),
    }
    problems = problems_of(report, mode)
    report["problems"] = problems
    print_report(report)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    out.write_text(text)
    suffix = mode.name + ("-3-brokers" if args.brokers > 1 else "")
    out.with_name(f"chaos-{suffix}.json").write_text(text)
    if not args.keep:
        for r in runs:
            with contextlib.suppress(Exception):
                await r.cleanup()
        stack.down()
    return 1 if problems else 0


def problems_of(report: dict[str, Any], mode: Mode) -> list[str]:
    problems = []
    if report["lost"]:
        problems.append(f"{report['lost']} tile(s) without a status: {report['lost_tiles']}")
    if report["duplicate_rows"]:
        problems.append(f"{report['duplicate_rows']} duplicate detection row(s)")
    if report["verdict_mismatches"]:
        problems.append(f"{report['verdict_mismatches']} verdict(s) differ from the fault-free run")
    if report["score_mismatches"]:
        problems.append(
            f"{report['score_mismatches']} tile(s) with scores unlike the fault-free run"
        )
    if report["done_without_row"] or report["rows_outside_the_scan"]:
        problems.append("detection rows do not match the done tiles")
    if not report["complete"] or report["error"]:
        problems.append(f"the scan did not complete: {report['error']}")
    if report["faults_not_injected"]:
        problems.append(
            f"faults not injected before the scan ended: {report['faults_not_injected']}"
        )
    if report["service_kills"] < mode.service_kills or set(
        report["service_kills_by_service"]
    ) != set(SERVICES):
        problems.append("fewer service kills than planned, or a service never killed")
    if report["server_kills"] < 4:
        problems.append("a server was not killed")
    if not report["redeliveries"]:
        problems.append(
            "no record was read twice: the faults did not reach work in flight "
            f"({report['kills_in_flight']} of {report['service_kills']} kills found records "
            "in flight)"
        )
    return problems


def print_report(r: dict[str, Any]) -> None:
    print()
    print(f"chaos ({r['mode']}, {r['brokers']} broker(s)): {r['tiles']} tiles")
    print(
        f"  tiles expected {r['tiles']}  done {r['done']}  failed {r['failed']}  skipped "
        f"{r['skipped']}  without a status {r['lost']}   (fault-free: {r['reference_done']} done, "
        f"{r['reference_failed']} failed)"
    )
    print(
        f"  rows per (tile, date, model): duplicates {r['duplicate_rows']}; verdicts unlike the "
        f"fault-free run {r['verdict_mismatches']}; scores {r['score_mismatches']}"
    )
    print(
        f"  kills: {r['service_kills']} services {r['service_kills_by_service']}, "
        f"{r['server_kills']} servers {r['server_kills_by_server']}"
    )
    print(
        f"  network partitions: {r['partitions']}; kills that found records in flight: "
        f"{r['kills_in_flight']} of {r['service_kills']}"
    )
    print(
        f"  redeliveries (records read more than once): {r['redeliveries']} ("
        + ", ".join(f"{t} {n}" for t, n in r["redeliveries_by_topic"].items())
        + ")"
    )
    print(
        f"  records produced more than once: {r['duplicate_outputs']} ("
        + ", ".join(
            f"{t} {c['redeliveries']}/{c['records']}"
            for t, c in r["bus"].items()
            if t != "dead-letters"
        )
        + f"); dead letters {r['dead_letters']}"
    )
    if r["unexpected_exits"]:
        print(
            f"  services that exited by themselves (restarted): {[e['service'] for e in r['unexpected_exits']]}"
        )
    print("  fault                    at     back after  next tile after  what it hit")
    for f in r["faults"]:
        name = ("link of " if f["kind"] == "partition" else "") + f["target"]
        if not f["back_s"]:
            print(f"  {name:<22} not injected (the scan had ended)")
            continue
        rec = f"{f['recovered_s']:.1f}s" if f["recovered_s"] is not None else "(scan over)"
        print(
            f"  {name:<22} {f['started_s']:7.1f}s  {f['back_s']:7.1f}s  {rec:>11}      {f['hit']}"
        )
    print(
        f"  scan {r['scan_seconds']:.0f}s under faults, {r['reference_seconds']:.0f}s fault-free; "
        f"wall {r['wall_seconds']:.0f}s"
    )
    for p in r["problems"]:
        print(f"  FAILED: {p}")
    if not r["problems"]:
        print("  OK: nothing lost, nothing duplicated, verdicts equal to the fault-free run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", dest="mode", action="store_const", const="quick", default="full")
    parser.add_argument("--ci", dest="mode", action="store_const", const="ci")
    parser.add_argument("--tiles", type=int, help="scan tiles (default: by mode, 200 full)")
    parser.add_argument("--brokers", type=int, choices=[1, 3], default=1)
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument(
        "--stack-dir",
        default=os.environ.get("AMBERSCAN_CHAOS_STACK_DIR"),
        help="default: .stack-chaos (.stack-chaos3 for 3 brokers: their Kafka data differ)",
    )
    parser.add_argument("--port-base", type=int, default=29000, help="ports base..base+600")
    parser.add_argument(
        "--cache-dir",
        default=os.environ.get("AMBERSCAN_CACHE_DIR", str(Path.home() / ".cache" / "amberscan")),
    )
    parser.add_argument("--fresh-reference", action="store_true", help="scan the reference again")
    parser.add_argument(
        "--keep", action="store_true", help="leave the private stack and the run's data"
    )
    parser.add_argument("--json", default=str(ROOT / "artifacts" / "chaos.json"))
    args = parser.parse_args(argv)
    if clash := ephemeral_clash(args.port_base, args.port_base + 600):
        parser.error(clash)
    if args.stack_dir is None:
        args.stack_dir = str(ROOT / (".stack-chaos" if args.brokers == 1 else ".stack-chaos3"))
    # The pool logs every refused connection while PostgreSQL is down: that is the point here.
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return asyncio.run(chaos(args))


if __name__ == "__main__":
    sys.exit(main())
