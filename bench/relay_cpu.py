#!/usr/bin/env python3
"""What a node's stream relay costs: two feedserver nodes on one redis-server, subscribers
on node 1 only, events published to node 1; node 2's CPU while idle and under that load.

    python -m bench.relay_cpu --loadgen DIR [--repo PATH] [--clients 1000] [--rate 200]
                             [--duration 20] [--active 1] [--idle-tenants 0]

DIR holds the shared load generator with its packages (`loadgen.js`; copy the shared
bench folder and `npm ci` there). PATH is the feedserver checkout to run (default: this
one), so one script measures two versions. The active tenants are `tenant_x0..`, with
`--clients` subscribers spread over them on node 1; `--idle-tenants` more exist with no
subscriber and no event. Node 2 has no socket at all. Node 2's CPU is read from
/proc/PID/stat (user + system) over `--duration` seconds with nothing published, then over
the publish window (less a second at each end); node 1's is the loadgen's `cpu.serverPct`.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis

from bench.run_benchmarks import REPO, SERVER_ENV, free_port, log, raise_fd_limit
from feedserver.store.redis import seq_key

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_pct(pid: int, seconds: float) -> float:
    """`pid`'s CPU over the next `seconds` (100 = one core)."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return round(100 * (cpu_seconds(pid) - before) / (time.monotonic() - started), 2)


def wait_listening(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            urllib.request.urlopen(f"{url}/api/health", timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within 60 s")


def latest_seq(redis_url: str, tenant: str) -> int:
    """Read from Redis itself: a node's stats would take a connection of the pools that
    the connecting sockets use."""
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.get(seq_key(tenant)) or 0)
    finally:
        client.close()


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    """`argv` run on `cpus` (a taskset list, such as "0" or "0,1"), or wherever the kernel
    puts it. taskset sets the affinity before the program starts, so its threads inherit it."""
    return argv if cpus is None else ["taskset", "-c", cpus, *argv]


class Cluster:
    """A redis-server and `nodes` feedserver nodes of `repo`, stopped by `stop`; the nodes
    on `node_cpus` and Redis on `redis_cpus` when given."""

    def __init__(
        self,
        repo: Path,
        work: Path,
        tenants: list[str],
        nodes: int = 2,
        node_cpus: str | None = None,
        redis_cpus: str | None = None,
    ) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        redis_port = free_port()
        self.redis = self._start(
            pinned(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save",
                    "", "--appendonly", "no", "--dir", str(work)], redis_cpus),
            cwd=work, env=dict(os.environ),
        )  # fmt: skip
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = {
            **os.environ,
            **SERVER_ENV,
            "FEED_TENANTS": ",".join(tenants),
            "FEED_STORE": self.redis_url,
        }
        self.urls: list[str] = []
        self.nodes: list[subprocess.Popen[bytes]] = []
        for _ in range(nodes):
            port = free_port()
            argv = pinned([sys.executable, "-m", "feedserver", "serve"], node_cpus)
            node = self._start(argv, cwd=repo, env={**env, "PORT": str(port)})
            self.urls.append(f"http://127.0.0.1:{port}")
            self.nodes.append(node)
            wait_listening(self.urls[-1], node)

    def _start(self, argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    active = [f"tenant_x{i}" for i in range(args.active)]
    idle = [f"idle_{i}" for i in range(args.idle_tenants)]
    with tempfile.TemporaryDirectory(prefix="relay-cpu-") as work:
        cluster = Cluster(Path(args.repo), Path(work), active + idle)
        try:
            one = cluster.urls[0]
            node_two = cluster.nodes[1].pid
            log(f"node 2 idle for {args.duration} s")
            idle_pct = cpu_pct(node_two, args.duration)
            flags = [
                "--url", one, "--pid", str(cluster.nodes[0].pid), "--clients", str(args.clients),
                "--tenants", str(args.active), "--tenant-prefix", "tenant_x",
                "--rate", str(args.rate), "--duration", str(args.duration), "--idle", "2",
                "--json", "--quiet",
            ]  # fmt: skip
            result: dict[str, Any] = {}

            def drive() -> None:
                done = subprocess.run(
                    ["node", "loadgen.js", *flags], cwd=args.loadgen, capture_output=True,
                    text=True, timeout=args.duration + 600, check=False,
                )  # fmt: skip
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                result.update(json.loads(lines[-1]) if lines else {"error": done.stderr[-2000:]})

            loadgen = threading.Thread(target=drive)
            loadgen.start()
            # The publishing has begun once the first event is stored.
            while loadgen.is_alive() and latest_seq(cluster.redis_url, active[0]) == 0:
                time.sleep(0.1)
            log(f"node 2 while node 1 gets {args.rate} ev/s, for {args.duration - 2} s")
            loaded_pct = cpu_pct(node_two, args.duration - 2)
            loadgen.join()
            delivery = result.get("delivery", {})
            return {
                "repo": str(args.repo),
                "clients": args.clients,
                "activeTenants": args.active,
                "idleTenants": args.idle_tenants,
                "rate": args.rate,
                "node2IdlePct": idle_pct,
                "node2LoadedPct": loaded_pct,
                "node1Pct": result.get("cpu", {}).get("serverPct"),
                "connected": result.get("connect", {}).get("ok"),
                "connectFailures": result.get("connect", {}).get("failures"),
                "published": result.get("publish", {}).get("acked"),
                "expected": delivery.get("expected"),
                "received": delivery.get("received"),
                "lost": delivery.get("lost"),
                "gaps": delivery.get("gaps"),
                "latencyMs": delivery.get("latencyMs"),
            }
        finally:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loadgen", required=True, help="folder of loadgen.js, after npm ci")
    parser.add_argument("--repo", default=str(REPO), help="the feedserver checkout to run")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--active", type=int, default=1, help="tenants with subscribers")
    parser.add_argument("--idle-tenants", type=int, default=0)
    args = parser.parse_args()
    if shutil.which("redis-server") is None or shutil.which("node") is None:
        raise SystemExit("relay_cpu needs redis-server and node on PATH")
    raise_fd_limit()
    print(json.dumps(measure(args)))


if __name__ == "__main__":
    main()
