"""A real `redis-server` for tests: a free loopback port, a temporary directory, no sleeps.

    async with running_redis(tmp_path, appendonly=True) as redis:
        settings = make_settings(store=redis.url)
        await redis.stop()      # an outage; the port and the directory are kept
        await redis.start()     # the same server back, with its AOF when appendonly

Readiness is the server's own "Ready to accept connections" log line, awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from tests.e2e.live_server import free_port

READY_LINE = b"Ready to accept connections"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class RedisServer:
    def __init__(self, directory: Path, *, appendonly: bool) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = free_port()
        self.log: list[str] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed (make sysdeps installs it)")
        self._process = await asyncio.create_subprocess_exec(
            executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(self.directory),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        ready = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_log(ready))
        try:
            await asyncio.wait_for(ready, START_TIMEOUT_S)
        except (TimeoutError, RuntimeError):
            await self.stop()
            raise RuntimeError("redis-server did not start:\n" + "\n".join(self.log)) from None

    async def stop(self) -> None:
        """SIGTERM: Redis flushes its AOF and exits, as in a clean restart."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader is not None:
            await self._reader

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def _read_log(self, ready: asyncio.Future[None]) -> None:
        # Always drained, so that a chatty server never blocks on a full pipe.
        assert self._process is not None and self._process.stdout is not None
        async for line in self._process.stdout:
            self.log.append(line.decode(errors="replace").rstrip())
            if READY_LINE in line and not ready.done():
                ready.set_result(None)
        if not ready.done():
            ready.set_exception(RuntimeError("redis-server exited"))


@contextlib.asynccontextmanager
async def running_redis(directory: Path, *, appendonly: bool = False) -> AsyncIterator[RedisServer]:
    server = RedisServer(directory, appendonly=appendonly)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
