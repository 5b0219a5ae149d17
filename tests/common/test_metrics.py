"""The liveness endpoint: served by the event loop, judged by the loop's heartbeat."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request

import pytest

from amberscan.common.metrics import Heartbeat, serve_health, serve_metrics
from tests.streams import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_healthz_follows_the_heartbeat() -> None:
    clock = Clock()
    heartbeat = Heartbeat(clock)
    port = free_port()
    runner = await serve_health(port, heartbeat, host="127.0.0.1")
    assert runner is not None
    try:
        url = f"http://127.0.0.1:{port}"
        status, text = await asyncio.to_thread(_get, f"{url}/healthz")
        assert status == 200 and text.startswith("ok")
        clock.now += 601  # no beat for longer than aiokafka's max poll interval
        status, text = await asyncio.to_thread(_get, f"{url}/healthz")
        assert status == 503 and "no progress for 601 s" in text
        heartbeat.beat()
        assert (await asyncio.to_thread(_get, f"{url}/healthz"))[0] == 200
        status, text = await asyncio.to_thread(_get, f"{url}/metrics")
        assert status == 200 and "amberscan_messages_total" in text
    finally:
        await runner.cleanup()


def _probe_while_the_loop_is_blocked(url: str) -> tuple[int, str] | str:
    """GET `url` from another thread while this thread's event loop is blocked for 3 s."""
    answer: list[tuple[int, str] | str] = []

    def probe() -> None:
        time.sleep(0.3)  # the loop is blocked by then
        try:
            answer.append(_get(url, timeout=1))
        except OSError as error:  # the probe's timeout
            answer.append(type(error).__name__)

    thread = threading.Thread(target=probe)
    thread.start()
    time.sleep(3)  # a wedged loop: a CPU-bound call that never left it
    thread.join()
    return answer[0]


async def test_a_blocked_loop_answers_no_liveness_probe() -> None:
    port = free_port()
    runner = await serve_health(port, Heartbeat(), host="127.0.0.1")
    assert runner is not None
    try:
        answer = _probe_while_the_loop_is_blocked(f"http://127.0.0.1:{port}/healthz")
        assert answer in ("TimeoutError", "URLError"), answer
    finally:
        await runner.cleanup()


async def test_the_thread_server_did_answer_for_a_blocked_loop() -> None:
    """Why the probe moved: prometheus_client's thread answers while the loop is wedged."""
    port = free_port()
    serve_metrics(port)
    answer = _probe_while_the_loop_is_blocked(f"http://127.0.0.1:{port}/metrics")
    assert isinstance(answer, tuple) and answer[0] == 200


@pytest.mark.parametrize("port", [0])
async def test_port_zero_serves_nothing(port: int) -> None:
    assert await serve_health(port) is None
