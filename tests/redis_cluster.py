"""A real Redis Cluster for tests: three masters on free loopback ports, with or without
one replica each, and the operations that change who serves a slot.

    with running_cluster(tmp_path) as cluster:
        store = RedisStore(cluster.url, 5)   # redis-cluster://127.0.0.1:P1,127.0.0.1:P2,...

    with running_cluster(tmp_path, replicas=1) as cluster:
        cluster.fail_over(cluster.owner(slot))   # its replica takes over, gracefully
        cluster.kill(cluster.owner(slot))        # the master dies; its replica is promoted
        cluster.move_slot(slot, to_port)         # the slot and its keys, to another master
        cluster.pause(port) ... cluster.resume(port)   # a hung node (SIGSTOP, SIGCONT)

Each node's cluster bus listens on its port + 10000, so ports are picked below 55536 with
that one free too. `redis-cli --cluster create` assigns the 16384 slots and waits until
every node agrees on the configuration; then every node is asked until it reports
`cluster_state:ok` (a node learns the others' state by gossip, after `create` returns).

Nothing announces that gossip has settled, a replica has synced or a failover is over:
every wait here polls the nodes until they all say so, failing after a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

MASTERS = 3
START_TIMEOUT_S = 20.0
# A promotion after a kill takes the node timeout, a round of gossip and an election.
FAILOVER_TIMEOUT_S = 15.0
BUS_OFFSET = 10000  # Redis Cluster's bus port is the client port + 10000
# Ports of the nodes of one cluster on the loopback: nodes are named "127.0.0.1:port".
HOST = "127.0.0.1"
MIGRATE_TIMEOUT_MS = 5000
KEYS_PER_MIGRATE = 100


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def cluster_port(count: int = 1) -> int:
    """A free loopback port whose bus port (+10000) is free too, and so are the `count` - 1
    ports after it (for deploy/cluster.sh, which numbers its nodes from one port). Below the
    kernel's ephemeral range (32768 and up), so that no outgoing connection takes them."""
    for _ in range(200):
        port = random.randrange(20000, 32768 - count)
        if all(_bindable(p) and _bindable(p + BUS_OFFSET) for p in range(port, port + count)):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisClusterServers:
    """`MASTERS` masters with `replicas` replicas each; a node that misses pings for
    `node_timeout_ms` is failing (and, with replicas, replaced by one of them)."""

    def __init__(self, directory: Path, *, replicas: int = 0, node_timeout_ms: int = 2000) -> None:
        self.directory = directory
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports: list[int] = []
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return "redis-cluster://" + ",".join(_address(port) for port in self.ports)

    def start(self) -> None:
        executable = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if executable is None or cli is None:
            raise RuntimeError("redis-server / redis-cli are not installed (make sysdeps)")
        for _ in range(MASTERS * (1 + self.replicas)):
            port = cluster_port()
            while port in self.ports:
                port = cluster_port()
            node_dir = self.directory / f"node-{port}"
            node_dir.mkdir(parents=True)
            self.ports.append(port)
            self._processes[port] = subprocess.Popen(
                [executable, *_node_options(port, node_dir, self.node_timeout_ms)],
                stdout=(node_dir / "log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        for port in self.ports:
            _wait(functools.partial(_answers, port), "every node answers")
        create = [cli, "--cluster", "create", *map(_address, self.ports)]
        subprocess.run(
            [*create, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S,
        )
        for port in self.ports:
            _wait(functools.partial(_cluster_ok, port), "every node reports cluster_state:ok")
        for port in self.ports:
            # A replica that has not synced yet can neither take over nor have anything to keep.
            _wait(functools.partial(_synced, port), "every replica has synced")

    def live(self) -> list[int]:
        """The ports of the nodes whose process runs."""
        return [port for port, process in self._processes.items() if process.poll() is None]

    def masters(self) -> list[int]:
        """The ports of the live masters, as the first live node sees them."""
        view = _nodes(self.live()[0])
        return [
            port for port in self.live() if "master" in view[_address(port)]["flags"].split(",")
        ]

    def owner(self, slot: int) -> int:
        """The port of the master that serves `slot`, as the first live node sees it."""
        return _owner(self.live()[0], slot)

    def replica_of(self, master: int) -> int:
        """The port of a live replica of `master`."""
        master_id = _node_id(master)
        for port in self.live():
            if _nodes(port)[_address(port)]["master_id"] == master_id:
                return port
        raise LookupError(f"no live replica of {master}")

    def flush(self) -> None:
        """Empty every master (between tests sharing the cluster); replicas follow."""
        for port in self.masters():
            with redis.Redis(port=port) as node:
                node.flushall()

    def fail_over(self, master: int) -> int:
        """A graceful failover: `master`'s replica takes over (CLUSTER FAILOVER, which waits
        for the replica to catch up, so no acknowledged write is lost) and `master` becomes
        its replica. Returns the new master's port once every node agrees."""
        replica = self.replica_of(master)
        slot = _first_slot(master)
        with redis.Redis(port=replica) as node:
            node.execute_command("CLUSTER", "FAILOVER")
        self.wait_served(slot, replica)
        _wait(functools.partial(_synced, master), f"{master} syncs from its new master")
        return replica

    def kill(self, master: int) -> int:
        """A hard failover: SIGKILL `master`, then wait until its replica is promoted and the
        cluster is `cluster_state:ok` again. Returns the promoted replica's port.

        Replication is asynchronous: what `master` acknowledged and had not yet sent to the
        replica is lost."""
        replica = self.replica_of(master)
        slot = _first_slot(master)
        process = self._processes[master]
        process.kill()
        process.wait()
        self.wait_served(slot, replica, within=FAILOVER_TIMEOUT_S)
        return replica

    def pause(self, port: int) -> None:
        """SIGSTOP node `port`: a hung node, which keeps its connections and answers
        nothing (each command to it waits for its client's timeout) until `resume`."""
        os.kill(self._processes[port].pid, signal.SIGSTOP)

    def resume(self, port: int) -> None:
        """SIGCONT node `port`: it answers what it was sent meanwhile, then goes on. Returns
        once no node takes any other for failed: a master held past the node timeout is
        marked FAIL, and the mark is cleared only some node timeouts after it answers
        again; until then a cluster that needs full coverage refuses every command (the
        next test's too)."""
        os.kill(self._processes[port].pid, signal.SIGCONT)
        _wait(self._agreed, "every node sees every other up", within=FAILOVER_TIMEOUT_S)

    def _agreed(self) -> bool:
        for port in self.live():
            for node in _nodes(port).values():
                if {"fail", "fail?"} & set(node["flags"].split(",")):
                    return False
        return True

    def configure(self, name: str, value: str) -> None:
        """CONFIG SET `name` `value` on every live node."""
        for port in self.live():
            with redis.Redis(port=port) as node:
                node.config_set(name, value)

    def begin_slot_move(self, slot: int, to: int) -> SlotMove:
        """Open the move of `slot` to master `to`; its keys stay where they are until
        `SlotMove.migrate`, the slot's owner until `SlotMove.finish`."""
        return SlotMove(self, slot, to)

    def move_slot(self, slot: int, to: int) -> None:
        """Reshard: `slot` and every key in it, to master `to`."""
        self.begin_slot_move(slot, to).finish()

    def wait_served(self, slot: int, port: int, *, within: float = START_TIMEOUT_S) -> None:
        """Until every live node says `slot` is `port`'s and its cluster is ok."""

        def served() -> bool:
            return all(_owner(node, slot) == port and _cluster_ok(node) for node in self.live())

        _wait(served, f"every node says slot {slot} is served by {port}", within=within)

    def stop(self) -> None:
        for process in self._processes.values():
            process.terminate()
        for process in self._processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()


class SlotMove:
    """One slot on its way from its master to another (CLUSTER SETSLOT IMPORTING on the
    target, MIGRATING on the source, MIGRATE of its keys, SETSLOT NODE on every master).

    While it is open the source serves the commands whose keys it still has all of, asks
    those whose keys it has none of to go to the target (ASK), and refuses the others
    (TRYAGAIN): the steps are separate so that a test can act between them."""

    def __init__(self, cluster: RedisClusterServers, slot: int, to: int) -> None:
        self.cluster = cluster
        self.slot = slot
        self.source = cluster.owner(slot)
        self.target = to
        self._target_id = _node_id(to)
        with redis.Redis(port=to) as target:
            target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(self.source))
        with redis.Redis(port=self.source) as source:
            source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self._target_id)

    def keys(self) -> list[str]:
        """The slot's keys still on the source."""
        with redis.Redis(port=self.source, decode_responses=True) as source:
            keys: list[str] = source.execute_command(
                "CLUSTER", "GETKEYSINSLOT", self.slot, KEYS_PER_MIGRATE
            )
        return keys

    def migrate(self, keys: list[str]) -> None:
        """Move `keys` (of the slot) from the source to the target, atomically for them."""
        with redis.Redis(port=self.source) as source:
            source.execute_command(
                "MIGRATE", HOST, self.target, "", 0, MIGRATE_TIMEOUT_MS, "KEYS", *keys
            )

    def finish(self) -> None:
        """Migrate the keys left, then give the slot to the target, on the target first
        (it stops importing and claims the slot with a new epoch), then the source, then
        the other masters; returns once every node agrees."""
        while keys := self.keys():
            self.migrate(keys)
        for port in self._finishing_order():
            with redis.Redis(port=port) as node:
                node.execute_command("CLUSTER", "SETSLOT", self.slot, "NODE", self._target_id)
        self.cluster.wait_served(self.slot, self.target)

    def _finishing_order(self) -> list[int]:
        others = [p for p in self.cluster.masters() if p not in (self.source, self.target)]
        return [self.target, self.source, *others]


def _wait(ready: Callable[[], bool], what: str, *, within: float = START_TIMEOUT_S) -> None:
    """Poll `ready()` until it is true (a node booting, gossip settling: no event to await
    from here); RuntimeError naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        # LookupError: a node that knows no live master of a slot, mid-failover.
        with contextlib.suppress(redis.RedisError, LookupError):
            if ready():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Redis Cluster never got there: {what}")
        time.sleep(0.05)


def _node_options(port: int, directory: Path, node_timeout_ms: int) -> list[str]:
    return [
        "--port", str(port),
        "--bind", HOST,
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(node_timeout_ms),
        # A replica takes over however long ago it last heard from its master.
        "--cluster-replica-validity-factor", "0",
        # A replica's first sync starts at once, not after the default 5 s wait for others.
        "--repl-diskless-sync-delay", "0",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
    ]  # fmt: skip


def _address(port: int) -> str:
    return f"{HOST}:{port}"


def _answers(port: int) -> bool:
    with redis.Redis(port=port) as node:
        return bool(node.ping())


def _cluster_ok(port: int) -> bool:
    with redis.Redis(port=port, decode_responses=True) as node:
        info = node.cluster("INFO")
    return isinstance(info, dict) and info.get("cluster_state") == "ok"


def _synced(port: int) -> bool:
    """A master, or a replica whose link to its master is up and past its first sync."""
    with redis.Redis(port=port, decode_responses=True) as node:
        info = node.info("replication")
    if info["role"] == "master":
        return True
    return info.get("master_link_status") == "up" and not info.get("master_sync_in_progress")


def _nodes(port: int) -> dict[str, Any]:
    """CLUSTER NODES as node `port` sees it: {"host:port": {"node_id", "flags", ...}}."""
    with redis.Redis(port=port, decode_responses=True) as node:
        view: dict[str, Any] = node.cluster("NODES")
    return view


def _node_id(port: int) -> str:
    with redis.Redis(port=port, decode_responses=True) as node:
        node_id: str = node.cluster("MYID")
    return node_id


def _owner(view_from: int, slot: int) -> int:
    for address, node in _nodes(view_from).items():
        flags = node["flags"].split(",")
        if "master" not in flags or "fail" in flags:
            continue
        # A range is ["first", "last"], one slot ["slot"].
        if any(int(span[0]) <= slot <= int(span[-1]) for span in node["slots"]):
            return int(address.rpartition(":")[2])
    raise LookupError(f"node {view_from} knows no master of slot {slot}")


def _first_slot(master: int) -> int:
    slots = _nodes(master)[_address(master)]["slots"]
    return int(slots[0][0])


@contextlib.contextmanager
def running_cluster(
    directory: Path, *, replicas: int = 0, node_timeout_ms: int = 2000
) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(directory, replicas=replicas, node_timeout_ms=node_timeout_ms)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
