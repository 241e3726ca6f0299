#!/usr/bin/env python3
"""Cluster throughput: two tenants served by one node, then split over two nodes, on one
redis-server, under the same load generators in the same run.

    python -m bench.cluster_throughput --loadgen DIR [--repo PATH] [--connect-clients 2000]
        [--clients 500] [--rate 50] [--publish-rate 100] [--overload 250] [--duration 15]

DIR holds the shared load generator with its packages (`loadgen.js`; copy the shared
bench folder and `npm ci` there). Two loadgen processes, one per tenant (`tenant_a0` and
`tenant_b0`), each hold subscribers of their tenant and publish to it over REST. With one
node both talk to node 1; with two nodes tenant A's talks to node 1 and tenant B's to node
2, so each node follows one tenant. Every run starts a fresh redis-server and fresh nodes:

- connect: `--connect-clients` subscribers per tenant and no events; measured from before
  the first connect until the nodes' connection counts in Redis show them all, with the
  nodes' RSS before and after;
- publish: one subscriber per tenant, `--publish-rate` ev/s each: the cost of an event;
- fan-out: `--clients` subscribers per tenant, `--rate` ev/s each, which both
  configurations keep up with; and, as a control, one node at half that rate (what each of
  the two nodes gets);
- saturated: `--clients` per tenant, `--overload` ev/s each, more than the nodes absorb (a
  REST publish is answered once its node has delivered the event, so the POSTs in flight
  wait on the nodes). The nodes are pinned to CPU 0, redis-server and the loadgens to CPU
  1; with two nodes both share CPU 0, so both configurations have one core for the nodes.

Measured over each publish window (less a second at the start and two at the end): the
CPU seconds of every node, of redis-server and of the loadgens (/proc/PID/stat), how busy
each CPU was (/proc/stat, the machine's other work included), the events stored (the
tenants' seq counters), Redis's commands (INFO commandstats) and network bytes, and the
stream's memory per entry. Deliveries = events x their tenant's connected subscribers,
which the loadgens' lost, gaps and latency confirm. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.relay_cpu import CLOCK_TICKS, Cluster, cpu_seconds, latest_seq, pinned
from bench.run_benchmarks import REPO, load_average, log, raise_fd_limit
from feedserver.cluster import connections_key
from feedserver.store.redis import seq_key, stream_key

TENANT_PREFIXES = ("tenant_a", "tenant_b")  # loadgen's --tenant-prefix; with --tenants 1: <prefix>0
TENANTS = [f"{prefix}0" for prefix in TENANT_PREFIXES]
# The node each tenant's loadgen talks to, by configuration.
SPLITS = {"one node": (0, 0), "two nodes": (0, 1)}
NODE_CPU, OTHERS_CPU = "0", "1"  # the saturated phase's pinning
WARM_UP_S, COOL_DOWN_S = 1, 2  # left out of the window at each end of the publishing
CONTROL = "fan-out, half the rate"  # the phase of one node at what each of two nodes carries


@dataclass(frozen=True)
class Phase:
    """What the loadgens offer in one run, and whether the processes are pinned."""

    name: str
    clients: int  # subscribers per tenant
    rate: int  # ev/s offered by each loadgen
    pin: bool


class Loadgen:
    """One `node loadgen.js` process for one tenant; `result` waits for its JSON line."""

    def __init__(self, folder: str, url: str, prefix: str, flags: list[str], cpus: str | None):
        argv = ["node", "loadgen.js", "--url", url, "--tenants", "1", "--tenant-prefix", prefix]
        self.process = subprocess.Popen(
            pinned([*argv, *flags, "--json", "--quiet"], cpus),
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def result(self, timeout: float) -> dict[str, Any]:
        stdout, stderr = self.process.communicate(timeout=timeout)
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"loadgen printed no JSON: {stderr[-2000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.communicate(timeout=30)


class Window:
    """What processes and Redis did between two readings: CPU seconds per process, the
    tenants' seqs, Redis's commands by name and its network bytes."""

    def __init__(self, redis_url: str, pids: dict[str, list[int]]) -> None:
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.pids = pids
        self.started = time.monotonic()
        self.first = self._read()

    def close(self) -> dict[str, Any]:
        last = self._read()
        wall = time.monotonic() - self.started
        first = self.first
        streams = [
            (self.redis.memory_usage(stream_key(t), samples=0) or 0, self.redis.xlen(stream_key(t)))
            for t in TENANTS
        ]
        self.redis.close()
        return {
            "windowS": round(wall, 2),
            "cpuS": {
                role: [round(b - a, 3) for a, b in zip(first["cpu"][role], cpus, strict=True)]
                for role, cpus in last["cpu"].items()
            },
            # What the machine's other work left: every process counts here, ours too.
            "cpuBusyS": [round(b - a, 2) for a, b in zip(first["busy"], last["busy"], strict=True)],
            "events": [b - a for a, b in zip(first["seqs"], last["seqs"], strict=True)],
            "redisCalls": {
                name.removeprefix("cmdstat_"): calls - first["calls"].get(name, 0)
                for name, calls in last["calls"].items()
                if calls > first["calls"].get(name, 0)
            },
            "redisBytesIn": last["bytes"][0] - first["bytes"][0],
            "redisBytesOut": last["bytes"][1] - first["bytes"][1],
            "streamBytesPerEntry": round(
                sum(m for m, _ in streams) / max(sum(n for _, n in streams), 1)
            ),
        }

    def _read(self) -> dict[str, Any]:
        stats = self.redis.info("stats")
        return {
            "cpu": {role: [cpu_seconds(pid) for pid in pids] for role, pids in self.pids.items()},
            "busy": busy_cpu_seconds(),
            "seqs": [int(seq or 0) for seq in self.redis.mget([seq_key(t) for t in TENANTS])],
            "calls": {
                name: int(row["calls"]) for name, row in self.redis.info("commandstats").items()
            },
            "bytes": (int(stats["total_net_input_bytes"]), int(stats["total_net_output_bytes"])),
        }


def busy_cpu_seconds() -> list[float]:
    """Each CPU's time so far outside idle and iowait (/proc/stat's cpuN lines)."""
    busy = []
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            values = [int(t) for t in ticks]
            busy.append((sum(values) - values[3] - values[4]) / CLOCK_TICKS)
    return busy


def run(args: argparse.Namespace, config: str, phase: Phase) -> dict[str, Any]:
    """One configuration in one phase, on a fresh redis-server and fresh nodes."""
    split = SPLITS[config]
    log(f"{config}, {phase.name}: {phase.rate} ev/s per tenant (load {load_average()})")
    with tempfile.TemporaryDirectory(prefix="cluster-throughput-") as work:
        cluster = Cluster(
            Path(args.repo),
            Path(work),
            TENANTS,
            nodes=len(set(split)),
            node_cpus=NODE_CPU if phase.pin else None,
            redis_cpus=OTHERS_CPU if phase.pin else None,
        )
        loadgens: list[Loadgen] = []
        try:
            flags = [
                "--clients", str(phase.clients), "--rate", str(phase.rate),
                "--duration", str(args.duration), "--idle", "2", "--drain", "10",
                # The nodes' Redis pools: connects and POSTs in flight each hold a connection.
                "--connect-concurrency", "50", "--max-sockets", "16",
            ]  # fmt: skip
            for prefix, node in zip(TENANT_PREFIXES, split, strict=True):
                cpus = OTHERS_CPU if phase.pin else None
                loadgens.append(Loadgen(args.loadgen, cluster.urls[node], prefix, flags, cpus))
            window = measure(cluster, loadgens, args.duration)
            results = [loadgen.result(timeout=args.duration * 20 + 300) for loadgen in loadgens]
        finally:
            for loadgen in loadgens:
                loadgen.stop()
            cluster.stop()
    return figures(config, phase, split, window, results)


def run_connects(args: argparse.Namespace, config: str) -> dict[str, Any]:
    """Connects: `--connect-clients` subscribers per tenant, no events; the window runs from
    before the first connect until the nodes' counts in Redis show them all."""
    split, clients = SPLITS[config], args.connect_clients
    log(f"{config}, connect: {clients} subscribers per tenant (load {load_average()})")
    with tempfile.TemporaryDirectory(prefix="cluster-throughput-") as work:
        cluster = Cluster(Path(args.repo), Path(work), TENANTS, nodes=len(set(split)))
        loadgens: list[Loadgen] = []
        try:
            rss_before = [rss_kb(node.pid) for node in cluster.nodes]
            pids = {"nodes": [node.pid for node in cluster.nodes], "redis": [cluster.redis.pid]}
            window = Window(cluster.redis_url, pids)
            flags = ["--clients", str(clients), "--rate", "0", "--duration", "2", "--idle", "0",
                     "--connect-concurrency", "50"]  # fmt: skip
            for prefix, node in zip(TENANT_PREFIXES, split, strict=True):
                loadgens.append(Loadgen(args.loadgen, cluster.urls[node], prefix, flags, None))
            wait_counted(cluster.redis_url, clients, loadgens)
            measured = window.close()
            rss_after = [rss_kb(node.pid) for node in cluster.nodes]
            results = [loadgen.result(timeout=600) for loadgen in loadgens]
        finally:
            for loadgen in loadgens:
                loadgen.stop()
            cluster.stop()
    connected = sum(int(result["connect"]["ok"]) for result in results)
    out = {
        "config": config,
        "phase": "connect",
        "windowS": measured["windowS"],
        "connected": connected,
        "connectFailures": [result["connect"]["failures"] for result in results],
        "connectWallS": [result["connect"]["wallS"] for result in results],
        "nodeUsPerConnect": round(sum(measured["cpuS"]["nodes"]) * 1e6 / max(connected, 1)),
        "redisUsPerConnect": round(measured["cpuS"]["redis"][0] * 1e6 / max(connected, 1)),
        # With the window's own reads in: two INFOs, an MGET, and an HVALS per tenant and poll.
        "redisCallsPerConnect": {
            name: round(calls / max(connected, 1), 2)
            for name, calls in sorted(measured["redisCalls"].items())
        },
        "rssPerConnKB": round((sum(rss_after) - sum(rss_before)) / max(connected, 1), 2),
        "cpuBusyPct": [round(100 * c / measured["windowS"], 1) for c in measured["cpuBusyS"]],
    }
    log(
        f"  {connected} connected, {out['nodeUsPerConnect']} us node CPU and "
        f"{out['redisUsPerConnect']} us Redis per connect, {out['rssPerConnKB']} KB each"
    )
    return out


def wait_counted(redis_url: str, clients: int, loadgens: list[Loadgen]) -> None:
    """Until the nodes' connection counts in Redis hold `clients` per tenant, or a loadgen
    ended (some connects failed; its JSON says which)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        while all(loadgen.process.poll() is None for loadgen in loadgens):
            counted = [
                sum(int(entry.split()[0]) for entry in client.hvals(connections_key(t)))
                for t in TENANTS
            ]
            if min(counted) >= clients:
                return
            time.sleep(0.05)
    finally:
        client.close()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def measure(cluster: Cluster, loadgens: list[Loadgen], duration: int) -> dict[str, Any]:
    """The window: from a second after both tenants' first stored event, for the publishing
    time less the warm-up and cool-down."""
    while any(latest_seq(cluster.redis_url, tenant) == 0 for tenant in TENANTS):
        if any(loadgen.process.poll() is not None for loadgen in loadgens):
            raise RuntimeError("a loadgen ended before publishing")
        time.sleep(0.1)
    time.sleep(WARM_UP_S)
    pids = {
        "nodes": [node.pid for node in cluster.nodes],
        "redis": [cluster.redis.pid],
        "loadgens": [loadgen.process.pid for loadgen in loadgens],
    }
    window = Window(cluster.redis_url, pids)
    time.sleep(duration - WARM_UP_S - COOL_DOWN_S)
    return window.close()


def figures(
    config: str,
    phase: Phase,
    split: tuple[int, ...],
    window: dict[str, Any],
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    seconds, cpu, events = window["windowS"], window["cpuS"], window["events"]
    subscribers = [int(result["connect"]["ok"]) for result in results]
    deliveries = sum(e * s for e, s in zip(events, subscribers, strict=True))
    node_cpu = sum(cpu["nodes"])
    out = {
        "config": config,
        "phase": phase.name,
        "offeredPerTenant": phase.rate,
        "pinned": phase.pin,
        "windowS": seconds,
        "subscribers": subscribers,
        "eventsPerS": round(sum(events) / seconds, 1),
        "deliveriesPerS": round(deliveries / seconds),
        "nodeCpuPct": [round(100 * c / seconds, 1) for c in cpu["nodes"]],
        "nodeUsPerEvent": round(node_cpu * 1e6 / max(sum(events), 1), 1),
        "nodeUsPerDelivery": round(node_cpu * 1e6 / max(deliveries, 1), 2),
        "deliveriesPerNodeCpuS": round(deliveries / node_cpu) if node_cpu else None,
        "redisCpuPct": round(100 * cpu["redis"][0] / seconds, 1),
        "redisUsPerEvent": round(cpu["redis"][0] * 1e6 / max(sum(events), 1), 1),
        # Every command the nodes sent in the window, per stored event (the window's own
        # reads, an MGET and two INFOs, are a rounding error).
        "redisCallsPerEvent": {
            name: round(calls / max(sum(events), 1), 2)
            for name, calls in sorted(window["redisCalls"].items())
        },
        "redisBytesInPerEvent": round(window["redisBytesIn"] / max(sum(events), 1)),
        "redisBytesOutPerEvent": round(window["redisBytesOut"] / max(sum(events), 1)),
        "streamBytesPerEntry": window["streamBytesPerEntry"],
        "loadgenCpuPct": [round(100 * c / seconds, 1) for c in cpu["loadgens"]],
        "cpuBusyPct": [round(100 * c / seconds, 1) for c in window["cpuBusyS"]],
        "tenants": [
            {
                "tenant": tenant,
                "node": node + 1,
                "connected": result["connect"]["ok"],
                "connectFailures": result["connect"]["failures"],
                "acked": result["publish"]["acked"],
                "status": result["publish"]["status"],
                "ackedRate": result["publish"]["ackedRate"],
                "received": result["delivery"]["received"],
                "lost": result["delivery"]["lost"],
                "gaps": result["delivery"]["gaps"],
                "outOfOrder": result["delivery"]["outOfOrder"],
                "latencyMs": result["delivery"]["latencyMs"],
            }
            for tenant, node, result in zip(TENANTS, split, results, strict=True)
        ],
    }
    log(
        f"  {out['deliveriesPerS']} deliveries/s, nodes {out['nodeCpuPct']} % "
        f"({out['nodeUsPerDelivery']} us/delivery), redis {out['redisCpuPct']} % "
        f"({out['redisUsPerEvent']} us/event), loadgens {out['loadgenCpuPct']} %, "
        f"CPUs busy {out['cpuBusyPct']} %"
    )
    return out


def ratios(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Two nodes against one, per phase."""
    by = {(r["phase"], r["config"]): r for r in runs}
    keys = ("deliveriesPerS", "nodeUsPerEvent", "nodeUsPerDelivery", "redisUsPerEvent")
    return {
        phase: {
            key: ratio(by[(phase, "two nodes")][key], by[(phase, "one node")][key]) for key in keys
        }
        for phase in dict.fromkeys(r["phase"] for r in runs)
        if (phase, "two nodes") in by
    } | {
        "two nodes over one node at half the rate": {
            key: ratio(by[("fan-out", "two nodes")][key], by[(CONTROL, "one node")][key])
            for key in keys[1:]
        }
    }


def fan_out_costs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per configuration, the nodes' CPU split into a part per event (the publish phase,
    one subscriber per tenant) and a part per delivery (the fan-out phase, less that)."""
    by = {(r["phase"], r["config"]): r for r in runs}
    out = {}
    for config in SPLITS:
        per_event = by[("publish", config)]["nodeUsPerEvent"]
        fan = by[("fan-out", config)]
        node_cpu_s = sum(fan["nodeCpuPct"]) / 100 * fan["windowS"]
        deliveries = fan["deliveriesPerS"] * fan["windowS"]
        events = fan["eventsPerS"] * fan["windowS"]
        out[config] = {
            "nodeUsPerEvent": per_event,
            "nodeUsPerDeliveryBeyondTheEvent": round(
                (node_cpu_s * 1e6 - events * per_event) / max(deliveries, 1), 2
            ),
        }
    return out


def ratio(two: float, one: float) -> float | None:
    return round(two / one, 3) if one else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loadgen", required=True, help="folder of loadgen.js, after npm ci")
    parser.add_argument("--repo", default=str(REPO), help="the feedserver checkout to run")
    parser.add_argument("--clients", type=int, default=500, help="subscribers per tenant")
    parser.add_argument("--connect-clients", type=int, default=2000, help="per tenant")
    parser.add_argument("--rate", type=int, default=50, help="fan-out ev/s per tenant")
    parser.add_argument(
        "--publish-rate", type=int, default=100, help="ev/s per tenant, 1 subscriber"
    )
    parser.add_argument("--overload", type=int, default=250, help="saturating ev/s per tenant")
    parser.add_argument("--duration", type=int, default=15, help="publish seconds per run")
    args = parser.parse_args()
    if args.duration <= WARM_UP_S + COOL_DOWN_S:
        parser.error(f"--duration must be more than {WARM_UP_S + COOL_DOWN_S} s")
    for tool in ("redis-server", "node", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"cluster_throughput needs {tool} on PATH")
    raise_fd_limit()
    started = load_average()
    fan_out = Phase("fan-out", args.clients, args.rate, pin=False)
    plan = [
        *((config, Phase("publish", 1, args.publish_rate, pin=False)) for config in SPLITS),
        *((config, fan_out) for config in SPLITS),
        # The control: one node at the rate each of the two nodes had. A node's cost per
        # delivery falls as its rate grows (its relay reads and its writes carry more events
        # each), so this tells what splitting costs from what half the rate per node costs.
        ("one node", Phase(CONTROL, args.clients, args.rate // 2, pin=False)),
        *((config, Phase("saturated", args.clients, args.overload, pin=True)) for config in SPLITS),
    ]
    connects = [run_connects(args, config) for config in SPLITS]
    runs = [run(args, config, phase) for config, phase in plan]
    print(json.dumps({
        "loadStart": started, "loadEnd": load_average(), "connects": connects, "runs": runs,
        "twoOverOne": ratios(runs), "costs": fan_out_costs(runs),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
