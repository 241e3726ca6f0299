"""`feedserver serve` as a real child process (PORT=0), with its log lines collected."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 20
LISTENING = re.compile(r"listening on (http://[\d.]+:\d+)")
METRICS_ON = re.compile(r"metrics on (http://[\d.]+:\d+)/metrics")


class FeedserverProcess:
    """One server process; `lines` holds every line it wrote to stderr so far."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._new_line = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, **env: str) -> FeedserverProcess:
        """Start it with the environment's FEED_*/LOG_* variables replaced by `env`."""
        environ = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FEED_", "LOG_", "RATE_LIMIT_")) and k not in ("PORT", "HOST")
        }
        environ.update({"HOST": "127.0.0.1", "PORT": "0", **env})
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "feedserver",
            "serve",
            cwd=ROOT,  # `python -m` then imports the tree the tests run from
            env=environ,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            async with self._new_line:
                self.lines.append(raw.decode().rstrip("\n"))
                self._new_line.notify_all()
        async with self._new_line:
            self._new_line.notify_all()

    async def wait_for_line(self, wanted: Callable[[str], bool]) -> str:
        """The first line (already written or still to come) for which `wanted` is true."""
        async with asyncio.timeout(START_TIMEOUT), self._new_line:
            while True:
                for line in self.lines:
                    if wanted(line):
                        return line
                if self._reader.done():
                    raise AssertionError("feedserver exited:\n" + "\n".join(self.lines))
                await self._new_line.wait()

    async def url(self, pattern: re.Pattern[str] = LISTENING) -> str:
        """The base URL it announced (the main port by default)."""
        line = await self.wait_for_line(lambda text: pattern.search(text) is not None)
        match = pattern.search(line)
        assert match is not None
        return match.group(1)

    async def accepting(self, port: int) -> str:
        """The base URL once `port` accepts connections, for a server that logs no INFO."""
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                if self._reader.done():
                    raise AssertionError("feedserver exited:\n" + "\n".join(self.lines))
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)  # nothing to await but the port itself
                    continue
                writer.close()
                await writer.wait_closed()
                return f"http://127.0.0.1:{port}"

    async def exit_code(self) -> int:
        await self._reader
        return await self.process.wait()

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signum)
        return await self.exit_code()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.exit_code()
