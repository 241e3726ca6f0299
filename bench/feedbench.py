"""A load generator for any feedserver (or the Node original).

    python bench/feedbench.py --url http://127.0.0.1:3000 --clients 1000 --pid PID [--json]

It speaks raw Engine.IO v4 / Socket.IO v5 text packets over aiohttp's WebSocket client
(no python-socketio client: one connection then costs a coroutine and a few objects, so
~1000 subscribers fit in one process). A run:

1. connects `clients` subscribers, client i to tenant `{prefix}{i mod tenants}`; a client
   is ready once `initial_events` arrived (it has then joined its tenant's room);
2. publishes `rate` events/s for `duration` s, round-robin over the tenants, over REST
   (`POST /api/events`) or socket (`create_event` with an ack, one publisher per tenant);
   each message is `t=<ns since start> n=<k>`, so arrival time minus `t` is the latency;
3. waits up to `drain` s until every acknowledged event reached every subscriber of its
   tenant; what is still missing then is lost.

The generator shares the machine with the server: it is itself the bottleneck once its
own CPU nears one core (`cpu.loadgen_pct` in the report). For comparisons with the Node
original use `bench/run_benchmarks.py`, which drives both with the same Node load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import orjson

SOCKET_PATH = "/socket.io/?EIO=4&transport=websocket"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class BenchPlan:
    url: str = "http://127.0.0.1:3000"
    clients: int = 100
    tenants: int = 2
    rate: float = 100.0
    duration: float = 10.0
    publish: str = "rest"
    tenant_prefix: str = "tenant_"
    connect_concurrency: int = 100
    connect_timeout: float = 60.0
    drain: float = 10.0
    pid: int | None = None

    def tenant(self, index: int) -> str:
        return f"{self.tenant_prefix}{index % self.tenants}"


@dataclass(slots=True)
class Tally:
    """What all subscribers saw; latencies in ms."""

    started_ns: int = field(default_factory=time.perf_counter_ns)
    connected: int = 0
    connect_failures: dict[str, int] = field(default_factory=dict)
    published: int = 0
    acked_per_tenant: dict[str, int] = field(default_factory=dict)
    publish_errors: dict[str, int] = field(default_factory=dict)
    received: int = 0
    gaps: int = 0
    out_of_order: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))

    def now_ns(self) -> int:
        return time.perf_counter_ns() - self.started_ns

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


class Subscriber:
    """One Socket.IO client over a raw WebSocket; `ready` is set after `initial_events`."""

    def __init__(self, tally: Tally, tenant: str, *, counted: bool = True) -> None:
        self.tally = tally
        self.tenant = tenant
        self.counted = counted
        self.ready = asyncio.Event()
        self.last_seq = 0
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._ack_ids = itertools.count()
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def run(self, http: aiohttp.ClientSession, base_url: str) -> None:
        url = f"{base_url}{SOCKET_PATH}&tenant={self.tenant}"
        async with http.ws_connect(url, autoping=True, max_msg_size=0) as ws:
            self._ws = ws
            async for message in ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    await self._on_text(ws, message.data)
                elif message.type is aiohttp.WSMsgType.ERROR:
                    break
        if not self.ready.is_set():
            raise ConnectionError("closed before initial_events")

    async def _on_text(self, ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
        kind = text[:2]
        if kind == "42":
            self._on_event(orjson.loads(text[2:]))
        elif text == "2":
            await ws.send_str("3")
        elif kind == "43":
            bracket = text.index("[")
            future = self._acks.pop(int(text[2:bracket]), None)
            if future is not None and not future.done():
                future.set_result(orjson.loads(text[bracket:])[0])
        elif text[0] == "0":
            await ws.send_str("40")
        elif kind == "44":
            raise ConnectionError(f"connect_error {text[2:]}")

    def _on_event(self, packet: list[Any]) -> None:
        name = packet[0]
        if name == "event_created":
            self._on_event_created(packet[1])
        elif name == "connection_established":
            self.last_seq = int(packet[1].get("latestSeq", 0))
        elif name == "initial_events":
            events = packet[1]
            if events:
                self.last_seq = max(self.last_seq, int(events[-1]["seq"]))
            self.ready.set()

    def _on_event_created(self, event: dict[str, Any]) -> None:
        seq = int(event["seq"])
        if seq <= self.last_seq:
            self.tally.out_of_order += 1
            return
        if seq > self.last_seq + 1:
            self.tally.gaps += 1
        self.last_seq = seq
        message = str(event.get("message", ""))
        if not self.counted or not message.startswith("t="):
            return
        sent_ns = int(message[2 : message.index(" ")])
        self.tally.received += 1
        self.tally.latencies.append((self.tally.now_ns() - sent_ns) / 1e6)

    async def create_event(self, message: str) -> Any:
        """`create_event` with an ack; returns the ack's first argument."""
        assert self._ws is not None
        ack_id = next(self._ack_ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        payload = orjson.dumps(["create_event", {"message": message}]).decode()
        await self._ws.send_str(f"42{ack_id}{payload}")
        return await future


class Bench:
    def __init__(self, plan: BenchPlan, progress: bool = True) -> None:
        self.plan = plan
        self.progress = progress
        self.tally = Tally()
        self.subscribers: list[Subscriber] = []
        self.publishers: dict[str, Subscriber] = {}
        self.phase = "connect"
        self.server_rss: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> dict[str, Any]:
        plan = self.plan
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with aiohttp.ClientSession(connector=connector) as http:
            reporter = asyncio.create_task(self._report_progress())
            try:
                self._sample_rss("before")
                connect_s = await self._connect(http)
                self._sample_rss("idle")
                cpu_start = (time.monotonic(), server_cpu_seconds(plan.pid), loadgen_cpu())
                publish_s = await self._publish(http)
                drain_s = await self._drain()
                cpu_end = (time.monotonic(), server_cpu_seconds(plan.pid), loadgen_cpu())
                self._sample_rss("end")
            finally:
                reporter.cancel()
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(reporter, *self._tasks, return_exceptions=True)
        return self._result(connect_s, publish_s, drain_s, cpu_start, cpu_end)

    async def _connect(self, http: aiohttp.ClientSession) -> float:
        plan = self.plan
        gate = asyncio.Semaphore(plan.connect_concurrency)
        started = time.monotonic()

        async def connect(subscriber: Subscriber) -> None:
            async with gate:
                task = asyncio.create_task(self._hold(subscriber, http))
                self._tasks.append(task)
                waiter = asyncio.ensure_future(subscriber.ready.wait())
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if subscriber.ready.is_set() and subscriber.counted:
                    self.tally.connected += 1

        self.subscribers = [Subscriber(self.tally, plan.tenant(i)) for i in range(plan.clients)]
        if plan.publish == "socket":
            for index in range(min(plan.tenants, plan.clients or plan.tenants)):
                self.publishers[plan.tenant(index)] = Subscriber(
                    self.tally, plan.tenant(index), counted=False
                )
        everyone = self.subscribers + list(self.publishers.values())
        await asyncio.wait_for(
            asyncio.gather(*(connect(s) for s in everyone)), plan.connect_timeout
        )
        return time.monotonic() - started

    async def _hold(self, subscriber: Subscriber, http: aiohttp.ClientSession) -> None:
        try:
            await subscriber.run(http, self.plan.url)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is counted, by its kind
            reason = type(exc).__name__ if not str(exc) else str(exc)[:80]
            self.tally.count(self.tally.connect_failures, reason)

    async def _publish(self, http: aiohttp.ClientSession) -> float:
        self.phase = "publish"
        plan = self.plan
        sends: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        total = int(plan.rate * plan.duration)
        for k in range(total):
            due = started + k / plan.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._publish_one(http, plan.tenant(k), k))
            sends.add(task)
            task.add_done_callback(sends.discard)
        await asyncio.gather(*sends)
        return time.monotonic() - started

    async def _publish_one(self, http: aiohttp.ClientSession, tenant: str, k: int) -> None:
        tally = self.tally
        message = f"t={tally.now_ns()} n={k}"
        tally.published += 1
        try:
            if self.plan.publish == "socket":
                ack = await self.publishers[tenant].create_event(message)
                outcome = "ok" if isinstance(ack, dict) and ack.get("ok") else str(ack)[:60]
            else:
                async with http.post(
                    f"{self.plan.url}/api/events",
                    json={"message": message},
                    headers={"X-Tenant-ID": tenant},
                ) as response:
                    await response.read()
                    outcome = "ok" if response.status == 201 else str(response.status)
        except aiohttp.ClientError as exc:
            outcome = type(exc).__name__
        if outcome == "ok":
            tally.count(tally.acked_per_tenant, tenant)
        else:
            tally.count(tally.publish_errors, outcome)

    def expected(self) -> int:
        ready: dict[str, int] = {}
        for subscriber in self.subscribers:
            if subscriber.ready.is_set():
                ready[subscriber.tenant] = ready.get(subscriber.tenant, 0) + 1
        return sum(n * ready.get(t, 0) for t, n in self.tally.acked_per_tenant.items())

    async def _drain(self) -> float:
        self.phase = "drain"
        started = time.monotonic()
        # Deliveries arrive on many sockets; polling the count is cheaper than an Event each.
        while self.tally.received < self.expected() and time.monotonic() - started < (  # noqa: ASYNC110
            self.plan.drain
        ):
            await asyncio.sleep(0.02)
        return time.monotonic() - started

    async def _report_progress(self) -> None:
        while self.progress:
            await asyncio.sleep(1.0)
            t = self.tally
            line = (
                f"[{self.phase}] connected {t.connected}/{len(self.subscribers)}"
                f" published {t.published} acked {sum(t.acked_per_tenant.values())}"
                f" received {t.received}/{self.expected()}"
            )
            print(line, file=sys.stderr, flush=True)

    def _sample_rss(self, when: str) -> None:
        rss = server_rss_mb(self.plan.pid)
        if rss is not None:
            self.server_rss[when] = rss

    def _result(
        self,
        connect_s: float,
        publish_s: float,
        drain_s: float,
        cpu_start: tuple[float, float | None, float],
        cpu_end: tuple[float, float | None, float],
    ) -> dict[str, Any]:
        tally = self.tally
        expected = self.expected()
        window = cpu_end[0] - cpu_start[0]
        acked = sum(tally.acked_per_tenant.values())
        server_cpu = None
        if cpu_start[1] is not None and cpu_end[1] is not None:
            server_cpu = cpu_end[1] - cpu_start[1]
        rss = self.server_rss
        per_conn = None
        if "before" in rss and "idle" in rss and tally.connected:
            per_conn = round((rss["idle"] - rss["before"]) * 1024 / tally.connected, 2)
        return {
            "plan": asdict(self.plan),
            "connect": {
                "ok": tally.connected,
                "failed": self.plan.clients - tally.connected,
                "failures": tally.connect_failures,
                "wall_s": round(connect_s, 3),
            },
            "publish": {
                "attempted": tally.published,
                "acked": acked,
                "errors": tally.publish_errors,
                "acked_rate": round(acked / publish_s, 1) if publish_s else 0.0,
            },
            "delivery": {
                "expected": expected,
                "received": tally.received,
                "lost": max(expected - tally.received, 0),
                "gaps": tally.gaps,
                "out_of_order": tally.out_of_order,
                "per_s": round(tally.received / (publish_s + drain_s), 1),
                "latency_ms": percentiles(tally.latencies),
            },
            "cpu": {
                "window_s": round(window, 3),
                "server_pct": None if server_cpu is None else round(100 * server_cpu / window, 1),
                "server_us_per_delivery": None
                if server_cpu is None or not tally.received
                else round(server_cpu * 1e6 / tally.received, 2),
                "loadgen_pct": round(100 * (cpu_end[2] - cpu_start[2]) / window, 1),
            },
            "server": {
                **{f"rss_{k}_mb": round(v, 1) for k, v in rss.items()},
                "rss_per_conn_kb": per_conn,
            },
        }


def percentiles(values: array[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)
    last = len(ordered) - 1
    return {
        "p50": round(ordered[last * 50 // 100], 2),
        "p90": round(ordered[last * 90 // 100], 2),
        "p99": round(ordered[last * 99 // 100], 2),
        "max": round(ordered[last], 2),
    }


def server_rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def server_cpu_seconds(pid: int | None) -> float | None:
    """user+sys CPU seconds of process `pid` (fields 14 and 15 of /proc/PID/stat)."""
    if pid is None:
        return None
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def loadgen_cpu() -> float:
    times = os.times()
    return times.user + times.system


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feedbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = BenchPlan()
    parser.add_argument("--url", default=d.url, help="server base URL")
    parser.add_argument("--clients", type=int, default=d.clients, help="subscribers")
    parser.add_argument("--tenants", type=int, default=d.tenants, help="tenants, round-robin")
    parser.add_argument("--tenant-prefix", default=d.tenant_prefix)
    parser.add_argument("--rate", type=float, default=d.rate, help="events/s over all tenants")
    parser.add_argument("--duration", type=float, default=d.duration, help="publish seconds")
    parser.add_argument("--publish", choices=("rest", "socket"), default=d.publish)
    parser.add_argument("--connect-concurrency", type=int, default=d.connect_concurrency)
    parser.add_argument("--connect-timeout", type=float, default=d.connect_timeout)
    parser.add_argument("--drain", type=float, default=d.drain, help="max wait after publish")
    parser.add_argument("--pid", type=int, help="server PID: report its RSS and CPU")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    return parser


def plan_from_args(args: argparse.Namespace) -> BenchPlan:
    if args.clients < 0 or args.tenants < 1 or args.rate <= 0 or args.duration < 0:
        raise ValueError("need --clients >= 0, --tenants >= 1, --rate > 0, --duration >= 0")
    return BenchPlan(
        url=args.url.rstrip("/"),
        clients=args.clients,
        tenants=args.tenants,
        rate=args.rate,
        duration=args.duration,
        publish=args.publish,
        tenant_prefix=args.tenant_prefix,
        connect_concurrency=args.connect_concurrency,
        connect_timeout=args.connect_timeout,
        drain=args.drain,
        pid=args.pid,
    )


def summary(result: dict[str, Any]) -> str:
    c, p, d, cpu = result["connect"], result["publish"], result["delivery"], result["cpu"]
    lat = d["latency_ms"]
    return (
        f"connect {c['ok']} ok / {c['failed']} failed in {c['wall_s']} s; "
        f"published {p['acked']}/{p['attempted']} ({p['acked_rate']}/s) errors {p['errors']}; "
        f"delivered {d['received']}/{d['expected']} lost {d['lost']} gaps {d['gaps']} "
        f"out-of-order {d['out_of_order']} ({d['per_s']}/s); latency ms p50 {lat['p50']} "
        f"p90 {lat['p90']} p99 {lat['p99']} max {lat['max']}; server CPU {cpu['server_pct']}% "
        f"loadgen CPU {cpu['loadgen_pct']}%; server {result['server']}"
    )


def run_cli(args: argparse.Namespace) -> int:
    try:
        plan = plan_from_args(args)
    except ValueError as exc:
        print(f"feedbench: {exc}", file=sys.stderr)
        return 2
    result = asyncio.run(Bench(plan, progress=not args.quiet).run())
    if not args.quiet:
        print(summary(result), file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
