"""`make bench`'s fan-out CPU and 10,000-connections rows: medians over the alternating
runs, so that one noisy run decides nothing; a failed connect in any run fails the goals."""

from __future__ import annotations

from typing import Any

from bench.run_benchmarks import connection_rows, efficiency_row


def run(wall: float, rss_kb: float = 4.0, cpu_pct: float = 90.0, failed: int = 0) -> Any:
    return {
        "connect": {"wallS": wall, "ok": 10000 - failed, "failed": failed, "serverCpuPct": cpu_pct},
        "server": {"rssPerConnKB": rss_kb},
    }


def test_the_connect_rows_are_medians_of_the_alternating_runs() -> None:
    rss, wall, cpu = connection_rows(
        {
            "node": [run(4.0, 15.0), run(3.0, 16.0), run(5.0, 14.0)],
            "python": [run(2.0, 3.0), run(3.5, 3.5), run(2.5, 4.0)],  # one noisy run
        }
    )
    assert rss[1:3] == ("15 KB", "3.5 KB") and rss[-1] == "met"
    assert wall[1:4] == ("4 s", "2.5 s", "0.62x") and wall[-1] == "met"
    assert "median of 3" in wall[0]
    assert cpu[1:3] == ("360 us", "225 us")  # 90 % of the median wall, per connect


def test_a_failed_connect_in_any_run_misses_the_goals() -> None:
    rows = connection_rows(
        {"node": [run(4.0)] * 3, "python": [run(2.0), run(2.0, failed=1), run(2.0)]}
    )
    assert [row[-1] for row in rows[:2]] == ["**missed**", "**missed**"]


def fan_out(server_pct: float) -> Any:
    """A 10 s window with 1,000,000 deliveries: `server_pct` % of a core is that many
    tenths of a microsecond per delivery."""
    return {"cpu": {"serverPct": server_pct, "windowS": 10}, "delivery": {"received": 1_000_000}}


def test_the_fan_out_cpu_row_is_the_median_of_the_alternating_runs() -> None:
    row = efficiency_row(
        {
            "node": [fan_out(124), fan_out(146), fan_out(143)],
            "python": [fan_out(53), fan_out(55), fan_out(70)],  # one noisy run
        }
    )
    assert row[1:4] == ("14.3 us", "5.5 us", "0.38x") and row[-1] == "met"
    assert "median of 3" in row[0]
