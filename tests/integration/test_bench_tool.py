"""bench/feedbench.py against a real server: a tiny run loses nothing and reports every field."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from aiohttp.test_utils import TestServer

from bench.feedbench import Bench, BenchPlan
from tests.conftest import ServerFactory

TENANTS = ("tenant_0", "tenant_1")
FEEDBENCH = Path(__file__).resolve().parents[2] / "bench" / "feedbench.py"


async def test_a_small_run_delivers_every_event_and_reports_latency_and_rss(
    start_server: ServerFactory,
) -> None:
    server = await start_server(tenants=TENANTS)
    # The server runs in this process, so --pid is our own pid.
    plan = BenchPlan(
        url=str(server.make_url("")).rstrip("/"),
        clients=20,
        tenants=2,
        rate=20,
        duration=2,
        pid=os.getpid(),
    )
    result = await Bench(plan, progress=False).run()
    assert result["connect"]["ok"] == 20 and result["connect"]["failed"] == 0
    assert result["publish"]["acked"] == 40 and result["publish"]["errors"] == {}
    delivery = result["delivery"]
    assert delivery["expected"] == 400 and delivery["received"] == 400
    assert delivery["lost"] == 0 and delivery["gaps"] == 0 and delivery["out_of_order"] == 0
    latency = delivery["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert result["cpu"]["server_pct"] is not None and result["cpu"]["loadgen_pct"] >= 0
    assert {"rss_before_mb", "rss_idle_mb", "rss_end_mb", "rss_per_conn_kb"} <= set(
        result["server"]
    )


async def test_the_script_publishes_over_socket_and_prints_json_and_progress(
    start_server: ServerFactory,
) -> None:
    server: TestServer = await start_server(tenants=TENANTS)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(FEEDBENCH),
        "--url",
        str(server.make_url("")),
        "--clients=20",
        "--tenants=2",
        "--rate=20",
        "--duration=2",
        "--publish=socket",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    result = json.loads(stdout)
    assert result["connect"]["ok"] == 20
    assert result["delivery"]["expected"] == 400 and result["delivery"]["lost"] == 0
    assert set(result["delivery"]["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert "[publish] connected 20/20" in stderr.decode()
    assert "lost 0" in stderr.decode()
