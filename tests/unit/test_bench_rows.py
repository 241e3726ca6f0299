"""`make bench`'s fan-out CPU and 10,000-connections rows: medians over the alternating
runs, so that one noisy run decides nothing; a failed connect in any run fails the goals.
The ceiling row says when a ladder ended at the loadgen's limit, not the server's."""

from __future__ import annotations

from typing import Any

from bench.run_benchmarks import CEILING_RATES, ceiling_row, connection_rows, efficiency_row


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


def step(rate: int, ok: bool, loadgen_pct: float = 60.0) -> Any:
    return {"rate": rate, "ok": ok, "result": {"cpu": {"loadgenPct": loadgen_pct}}}


def ladder(steps: list[Any]) -> Any:
    return {"steps": steps, "best": max([s["rate"] for s in steps if s["ok"]], default=0)}


def test_the_ceiling_row_says_which_ladder_ended_at_the_loadgen() -> None:
    node = ladder([step(60, True), step(70, True), step(80, False), step(80, False)])
    python = ladder([step(960, True), step(1120, False, 99.0), step(1120, False, 97.5)])
    row = ceiling_row({"node": node, "python": python})
    assert row[1:4] == ("70 ev/s", "960 ev/s (loadgen-bound)", "13.71x") and row[-1] == "met"


def test_a_failed_step_with_cpu_left_in_the_loadgen_is_the_server_ceiling() -> None:
    node = ladder([step(100, True), step(110, False), step(110, False)])
    python = ladder([step(720, True), step(800, False, 99.0), step(800, False, 80.0)])
    row = ceiling_row({"node": node, "python": python})
    assert row[1:4] == ("100 ev/s", "720 ev/s", "7.20x") and row[-1] == "**missed**"


def test_a_ladder_passed_to_its_last_step_says_so() -> None:
    node = ladder([step(100, True), step(110, False), step(110, False)])
    python = ladder([step(rate, True) for rate in CEILING_RATES])
    row = ceiling_row({"node": node, "python": python})
    assert row[2] == f"{CEILING_RATES[-1]} ev/s (ladder top)" and row[-1] == "met"
