"""A TCP proxy that can be cut like a network: `make chaos`'s link between one process and Kafka.

    .venv/bin/python stack/netproxy.py --route 29430=127.0.0.1:29330 [--route ...]

Forwards each `--route` (a loopback port to an upstream address) both ways. SIGUSR1 cuts it and
SIGUSR2 heals it. Cut, it forwards nothing and reads nothing, but closes nothing either: the
connections stay open, new ones are accepted and left without an answer, what the ends sent waits
in the socket buffers (and, once they fill, the senders wait). Healed, it all flows again, as TCP
delivers what it retransmitted once a partition ends. So the process behind it neither dies nor
sees a refused connection: it only stops hearing from the broker, which is what a network
partition is (rather than a crash). No root and no network namespace needed: the chaos stack's
brokers advertise, to each process, a listener of its own at its proxy's address (stack/up.sh's
AMBERSCAN_STACK_KAFKA_EXTRA_LISTENERS), so every connection it makes, the ones to the leaders
and to the group coordinator included, goes through here.

It prints `ready` once every route listens.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

CHUNK = 64 * 1024


class Proxy:
    """TCP routes on loopback, each from a listening port to an upstream host and port, that
    `cut` and `heal` open and shut together."""

    def __init__(self, routes: list[tuple[int, str, int]], host: str = "127.0.0.1") -> None:
        self.routes = routes
        self.host = host
        self._open = asyncio.Event()
        self._open.set()
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.ports: list[int] = []  # the listening ports (chosen by the system for port 0)

    @property
    def cut_off(self) -> bool:
        return not self._open.is_set()

    def cut(self) -> None:
        """Stop forwarding (connections stay open, new ones are accepted and not answered)."""
        self._open.clear()

    def heal(self) -> None:
        """Forward again, what waited first."""
        self._open.set()

    async def start(self) -> None:
        for listen, up_host, up_port in self.routes:
            server = await asyncio.start_server(
                lambda r, w, h=up_host, p=up_port: self._connection(r, w, h, p),
                self.host,
                listen,
            )
            self._servers.append(server)
            self.ports.append(server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._open.wait()  # cut: accepted, never answered (as if the SYN were lost)
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                return  # the broker is down: the client sees its connection closed
            try:
                await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction, until either end closes; then both are closed."""
        try:
            while True:
                await self._open.wait()
                data = await reader.read(CHUNK)
                if not data:
                    break
                await self._open.wait()  # read just before a cut: held until it heals
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            # The other direction reads the socket this one writes to: closing it ends that read.
            writer.close()


def parse_route(text: str) -> tuple[int, str, int]:
    """`LISTEN_PORT=HOST:PORT` as (listen port, host, port)."""
    try:
        listen, upstream = text.split("=", 1)
        host, port = upstream.rsplit(":", 1)
        return int(listen), host, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a route is LISTEN_PORT=HOST:PORT, not {text!r}"
        ) from None


async def serve(routes: list[tuple[int, str, int]]) -> None:
    proxy = Proxy(routes)
    await proxy.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, proxy.cut)
    loop.add_signal_handler(signal.SIGUSR2, proxy.heal)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await proxy.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--route", type=parse_route, action="append", required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.route))
    return 0


if __name__ == "__main__":
    sys.exit(main())
