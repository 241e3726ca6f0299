#!/usr/bin/env python3
"""What one tenant change costs with many tenants registered, in-process, per backend.

    python -m bench.tenant_changes [--tenants 10000] [--creates 10] [--backends memory,file,redis]

For each backend (this process's memory, a `FEED_DATA_DIR` file in a temporary directory,
a redis-server of its own on a free port with `--save ''`), a `TenantRegistry` starts with
`--tenants` bootstrap ids (one change), then creates `--creates` more one at a time and
updates each once. Prints one JSON line per backend: milliseconds per create and per update
(median and max), and how long the start took.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import redis

from bench.run_benchmarks import free_port
from feedserver.store.redis_tenants import RedisTenants
from feedserver.store.tenant_file import HeldTenants, TenantFile
from feedserver.tenants import SUSPENDED, TenantBackend, TenantDirectory, TenantRegistry


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:  # a process starting: nothing to await but its answer
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait()


@contextlib.asynccontextmanager
async def backend_of(kind: str, directory: Path) -> AsyncIterator[TenantBackend]:
    if kind == "memory":
        yield HeldTenants()
    elif kind == "file":
        yield TenantFile(directory / "data")
    else:
        with redis_server(directory) as url:
            yield RedisTenants(url)


def milliseconds(samples: list[float]) -> dict[str, float]:
    return {
        "median": round(1000 * statistics.median(samples), 2),
        "max": round(1000 * max(samples), 2),
    }


async def measure(kind: str, tenants: int, creates: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="feed-tenants-") as directory:
        async with backend_of(kind, Path(directory)) as backend:
            bootstrap = [f"tenant_{i}" for i in range(tenants)]
            registry = TenantRegistry(backend, TenantDirectory(), bootstrap=bootstrap)
            started = time.perf_counter()
            await registry.start()
            start_s = time.perf_counter() - started
            created, updated = [], []
            for n in range(creates):
                began = time.perf_counter()
                await registry.create(f"new_{n}")
                created.append(time.perf_counter() - began)
            for n in range(creates):
                began = time.perf_counter()
                await registry.update(f"new_{n}", status=SUSPENDED)
                updated.append(time.perf_counter() - began)
            await registry.close()
    return {
        "backend": kind,
        "tenants": tenants,
        "startS": round(start_s, 3),
        "createMs": milliseconds(created),
        "updateMs": milliseconds(updated),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--creates", type=int, default=10)
    parser.add_argument("--backends", default="memory,file,redis")
    args = parser.parse_args()
    for kind in args.backends.split(","):
        print(json.dumps(asyncio.run(measure(kind, args.tenants, args.creates))), flush=True)


if __name__ == "__main__":
    main()
