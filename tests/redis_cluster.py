"""A real Redis Cluster for tests: three masters on free loopback ports, no replicas.

    with running_cluster(tmp_path) as cluster:
        store = RedisStore(cluster.url, 5)   # redis-cluster://127.0.0.1:P1,127.0.0.1:P2,...

Each node's cluster bus listens on its port + 10000, so ports are picked below 55536 with
that one free too. `redis-cli --cluster create` assigns the 16384 slots and waits until
every node agrees on the configuration; then every node is asked until it reports
`cluster_state:ok` (a node learns the others' state by gossip, after `create` returns).
"""

from __future__ import annotations

import contextlib
import functools
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

MASTERS = 3
START_TIMEOUT_S = 20.0
BUS_OFFSET = 10000  # Redis Cluster's bus port is the client port + 10000


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free loopback port whose bus port (+10000) is free too. Below the kernel's
    ephemeral range (32768 and up), so that no outgoing connection takes it meanwhile."""
    for _ in range(200):
        port = random.randrange(20000, 32768)
        if _bindable(port) and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisClusterServers:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports: list[int] = []
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis-cluster://" + ",".join(self._addresses())

    def start(self) -> None:
        executable = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if executable is None or cli is None:
            raise RuntimeError("redis-server / redis-cli are not installed (make sysdeps)")
        for _ in range(MASTERS):
            port = cluster_port()
            while port in self.ports:
                port = cluster_port()
            node_dir = self.directory / f"node-{port}"
            node_dir.mkdir(parents=True)
            self.ports.append(port)
            self._processes.append(
                subprocess.Popen(
                    [executable, *_node_options(port, node_dir)],
                    stdout=(node_dir / "log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        for port in self.ports:
            self._wait(functools.partial(_answers, port))
        subprocess.run(
            [cli, "--cluster", "create", *self._addresses(), *CREATE_OPTIONS],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S,
        )
        for port in self.ports:
            self._wait(functools.partial(_cluster_ok, port))

    def _addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def flush(self) -> None:
        """Empty every master (between tests sharing the cluster)."""
        for port in self.ports:
            with redis.Redis(port=port) as node:
                node.flushall()

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()

    @staticmethod
    def _wait(ready: Callable[[], bool]) -> None:
        """Poll `ready()` (a node booting, gossip settling: no event to await from here)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(redis.RedisError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not come up")
            time.sleep(0.05)


CREATE_OPTIONS = ("--cluster-replicas", "0", "--cluster-yes")


def _node_options(port: int, directory: Path) -> list[str]:
    return [
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", "2000",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
    ]  # fmt: skip


def _answers(port: int) -> bool:
    with redis.Redis(port=port) as node:
        return bool(node.ping())


def _cluster_ok(port: int) -> bool:
    with redis.Redis(port=port, decode_responses=True) as node:
        info = node.cluster("INFO")
    return isinstance(info, dict) and info.get("cluster_state") == "ok"


@contextlib.contextmanager
def running_cluster(directory: Path) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(directory)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
