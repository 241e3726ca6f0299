#!/usr/bin/env python3
"""What one tenant change costs with many tenants registered, in-process, per backend.

    python -m bench.tenant_changes [--tenants 10000] [--creates 10] [--backends memory,file,redis]

For each backend (this process's memory, a `FEED_DATA_DIR` file in a temporary directory,
a redis-server of its own on a free port with `--save ''`), a `TenantRegistry` starts with
`--tenants` bootstrap ids (one change), then creates `--creates` more one at a time and
updates each once. On Redis a second node's registry starts too, with the same bootstrap
ids over the registry the first one filled, and after each create its reload is timed:
what its `TenantChannel` runs within 5 s of any change, when the registry's version
counter moved. Prints one JSON line per backend: milliseconds per create, per update and
per second-node reload (median and max), and how long each start took.
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
from collections.abc import Iterator
from pathlib import Path

import redis

from bench.run_benchmarks import free_port
from feedserver.store.redis_tenants import RedisTenants
from feedserver.store.tenant_file import HeldTenants, TenantFile
from feedserver.tenants import SUSPENDED, TenantBackend, TenantDirectory, TenantRegistry
from tests.tenant_changes import HeldCallbacks


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


@contextlib.contextmanager
def redis_url_of(kind: str, directory: Path) -> Iterator[str | None]:
    if kind != "redis":
        yield None
        return
    with redis_server(directory) as url:
        yield url


def backend_of(kind: str, directory: Path, url: str | None) -> TenantBackend:
    if url is not None:
        return RedisTenants(url)
    if kind == "file":
        return TenantFile(directory / "data")
    return HeldTenants()


def milliseconds(samples: list[float]) -> dict[str, float]:
    return {
        "median": round(1000 * statistics.median(samples), 2),
        "max": round(1000 * max(samples), 2),
    }


async def measure(kind: str, tenants: int, creates: int) -> dict[str, object]:
    with (
        tempfile.TemporaryDirectory(prefix="feed-tenants-") as directory,
        redis_url_of(kind, Path(directory)) as url,
    ):
        bootstrap = [f"tenant_{i}" for i in range(tenants)]
        registry = TenantRegistry(
            backend_of(kind, Path(directory), url), TenantDirectory(), bootstrap=bootstrap
        )
        started = time.perf_counter()
        await registry.start()
        start_s = time.perf_counter() - started
        second = other = None
        if url is not None:  # a second node, started over the registry the first filled
            other = HeldCallbacks()
            second = TenantRegistry(
                RedisTenants(url), TenantDirectory(), bootstrap=bootstrap, watcher=other
            )
            started = time.perf_counter()
            await second.start()
            second_start_s = time.perf_counter() - started
        created, updated, reloaded = [], [], []
        for n in range(creates):
            began = time.perf_counter()
            await registry.create(f"new_{n}")
            created.append(time.perf_counter() - began)
            if other is not None:
                began = time.perf_counter()
                await other.reload_all()
                reloaded.append(time.perf_counter() - began)
        for n in range(creates):
            began = time.perf_counter()
            await registry.update(f"new_{n}", status=SUSPENDED)
            updated.append(time.perf_counter() - began)
        await registry.close()
        if second is not None:
            await second.close()
    result: dict[str, object] = {
        "backend": kind,
        "tenants": tenants,
        "startS": round(start_s, 3),
        "createMs": milliseconds(created),
        "updateMs": milliseconds(updated),
    }
    if reloaded:
        result["secondNodeStartS"] = round(second_start_s, 3)
        result["secondNodeReloadMs"] = milliseconds(reloaded)
    return result


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
