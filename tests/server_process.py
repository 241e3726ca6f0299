"""`python -m feedserver serve` as a real child process, for async tests.

    async with server_process({"FEED_HISTORY_SIZE": "10"}) as server:
        ... server.url ...
        server.process.send_signal(signal.SIGTERM)
        assert await server.wait(5) == 0

The server binds port 0 and the port is read from its "listening on" log line, so there is
no race for a free port. Its log (stderr) is collected in `server.log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 30.0
# Also inside a JSON log line (LOG_FORMAT=json), where a quote follows the URL.
_LISTENING = re.compile(rb'listening on (http://[^\s"]+)')
# Whatever the developer's shell sets must not change what the tests see.
_DROPPED = re.compile(r"^(PORT|HOST|CORS_ORIGIN|FEED_.*|RATE_LIMIT_.*|LOG_.*)$")


class ServerProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.url = ""
        self._log = bytearray()
        self._collector: asyncio.Task[None] | None = None

    @property
    def log(self) -> str:
        return self._log.decode(errors="replace")

    async def start(self) -> None:
        """Read the log until the listening line, then keep collecting it."""
        assert self.process.stderr is not None
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while not self.url:
                line = await self.process.stderr.readline()
                if not line:
                    code = await self.process.wait()
                    raise RuntimeError(f"feedserver exited with {code} at start:\n{self.log}")
                self._log += line
                found = _LISTENING.search(line)
                if found:
                    self.url = found.group(1).decode()
        self._collector = asyncio.create_task(self._collect(self.process.stderr))

    async def _collect(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            self._log += chunk

    async def wait(self, within: float) -> int:
        """The exit code; fails the test when the process is still running after `within` s."""
        try:
            code = await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            raise AssertionError(f"feedserver still running after {within}s:\n{self.log}") from None
        if self._collector is not None:
            await self._collector
        return code

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector


@contextlib.asynccontextmanager
async def server_process(
    env: dict[str, str] | None = None, *args: str
) -> AsyncIterator[ServerProcess]:
    """Start `python -m feedserver serve --port 0 [args]` with `env` over a clean environment."""
    server_env = {k: v for k, v in os.environ.items() if not _DROPPED.match(k)}
    server_env |= {"PYTHONPATH": str(REPO_ROOT), "RATE_LIMIT_MAX_REQUESTS": "1000000"}
    server_env |= env or {}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "feedserver",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        *args,
        cwd=REPO_ROOT,
        env=server_env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    server = ServerProcess(process)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
