"""The benchmark harness (``python -m experiments.bench``): its machinery and its JSON schema.

Nothing here checks a speed: the fast tests run the harness on trivially small sizes
(``--tiny``) and check the results file's schema, the round-robin order of the timing loop, the
paired-ratio arithmetic and the peak-memory measurement against a known allocation. The slow
test runs every benchmark (tiny) through the command line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[3]
ROW_KEYS = {"name", "goal", "value", "unit", "met", "details"}


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    # ``experiments`` is not installed; ``python -m`` finds it from the repository root.
    monkeypatch.syspath_prepend(str(REPO))


def check_schema(payload: dict[str, Any]) -> None:
    """The contract of ``bench/results.json``."""
    assert {"machine", "torch", "device", "benchmarks"} <= set(payload)
    assert payload["torch"] == torch.__version__
    assert isinstance(payload["device"], str) and payload["device"]
    assert {"platform", "cpu_count", "load_average"} <= set(payload["machine"])
    assert payload["benchmarks"], "no benchmark rows"
    for row in payload["benchmarks"]:
        assert set(row) == ROW_KEYS, row["name"]
        assert isinstance(row["name"], str) and "/" in row["name"]
        assert isinstance(row["goal"], str) and row["goal"]
        assert isinstance(row["unit"], str) and row["unit"]
        assert isinstance(row["value"], float | int), row
        assert row["met"] in (True, False, None)
        assert "error" not in row["details"], row["details"].get("error")
        if row["met"] is False:
            assert row["details"].get("limit"), f"{row['name']} missed its goal without a limit"


def test_interleaved_times_runs_variants_round_robin() -> None:
    from experiments.bench import interleaved_times

    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = interleaved_times(fns, rounds=3, warmup=2, device=torch.device("cpu"))
    # 2 warm-up rounds, then 3 timed rounds, the order reversed every other round
    assert calls == ["a", "b"] * 2 + ["a", "b", "b", "a", "a", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in times.values() for t in v)


def test_paired_ratio_is_the_median_of_per_round_ratios() -> None:
    from experiments.bench import paired_ratio

    assert paired_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0]) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="equally long"):
        paired_ratio([1.0], [1.0, 2.0])


def test_config_rejects_unknown_scale_and_picks_per_scale() -> None:
    from experiments.bench import BenchConfig

    with pytest.raises(ValueError, match="scale must be one of"):
        BenchConfig(scale="huge")
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        BenchConfig(repeats=0)
    cfg = BenchConfig(scale="quick")
    assert cfg.pick(1, 2, 3) == 2 and cfg.rounds(5, 9) == 5
    assert BenchConfig(scale="full", repeats=4).rounds(5, 9) == 4


def test_ratio_result_adds_a_limit_only_on_a_miss() -> None:
    from experiments.bench import ratio_result

    hit = ratio_result("x/y", 1.5, 1.2, {"a": 1}, limit=lambda: ["never called"])
    miss = ratio_result("x/y", 1.5, 1.8, {"a": 1}, limit=lambda: ["top op"])
    assert (hit.met, "limit" in hit.details) == (True, False)
    assert (miss.met, miss.details["limit"], miss.goal) == (False, ["top op"], "<= 1.5x")


def test_peak_memory_sees_a_known_allocation() -> None:
    from experiments.bench import MIB, peak_memory

    x = torch.randn(1024, requires_grad=True)
    # forward allocates the (256 * 1024,) float32 result: 1 MiB; its backward only a 4 KiB grad
    peak = peak_memory(lambda: x.repeat(256), torch.device("cpu"))
    assert 1.0 <= peak / MIB <= 3.0
    bigger = peak_memory(lambda: x.repeat(1024), torch.device("cpu"))
    assert bigger / peak == pytest.approx(4.0, rel=0.25)


def test_format_table_marks_misses_and_errors() -> None:
    from experiments.bench.__main__ import format_table

    rows = [
        {"name": "a/x", "goal": "<= 1x", "value": 0.5, "unit": "x", "met": True},
        {"name": "b/y", "goal": "<= 1x", "value": 2.0, "unit": "x", "met": False},
        {"name": "c/z", "goal": "g", "value": None, "unit": "", "met": False},
    ]
    lines = format_table(rows).splitlines()
    assert "yes" in lines[2] and "NO" in lines[3] and "error" in lines[4]


def test_tiny_run_writes_the_results_schema(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from experiments.bench.__main__ import main

    out = tmp_path / "results.json"
    only = ["op_efficiency", "activation_mixing", "rsa_memory", "data_throughput"]
    assert main(["--tiny", "--device", "cpu", "--only", *only, "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    check_schema(payload)
    assert payload["device"] == "cpu" and payload["scale"] == "tiny"
    names = [r["name"] for r in payload["benchmarks"]]
    assert names == [
        "op_efficiency/op_time",
        "op_efficiency/op_memory",
        "op_efficiency/block_time",
        "op_efficiency/block_memory",
        "activation_mixing/dot_spatiotemporal",
        "activation_mixing/map_spatiotemporal",
        "rsa_memory/efficient_growth",
        "rsa_memory/naive_growth",
        "data_throughput/uncached",
        "data_throughput/cached",
        "data_throughput/cache_speedup",
    ]
    rows = {r["name"]: r for r in payload["benchmarks"]}
    # the restatements computed the same function as our modules
    assert rows["op_efficiency/op_time"]["details"]["max_abs_diff"] < 1e-4
    # every generated video was delivered once per timed epoch
    data = rows["data_throughput/cached"]["details"]
    assert data["videos"] == 4 and data["epochs"] == 1
    stdout = capsys.readouterr().out
    assert all(name in stdout for name in names)


def test_a_failing_benchmark_becomes_an_error_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from experiments.bench import __main__ as cli

    def boom(cfg: Any) -> list:
        raise RuntimeError("controller not ready")

    monkeypatch.setitem(cli.BENCHMARKS, "gp_latency", boom)
    out = tmp_path / "r.json"
    assert cli.main(["--tiny", "--only", "gp_latency", "--out", str(out)]) == 1
    (row,) = json.loads(out.read_text())["benchmarks"]
    assert row["value"] is None and row["met"] is False
    assert "controller not ready" in row["details"]["error"]


@pytest.mark.slow
def test_tiny_run_of_every_benchmark_through_the_command_line(tmp_path: Path) -> None:
    """``python -m experiments.bench`` end to end (``--tiny``: the quick and full modes differ
    from it only in the sizes ``BenchConfig.pick`` chooses, which a fast test covers)."""
    from experiments.bench.__main__ import BENCHMARKS

    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.bench", "--tiny", "--device", "cpu", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(out.read_text())
    check_schema(payload)
    assert {r["name"].split("/")[0] for r in payload["benchmarks"]} == set(BENCHMARKS)
    assert "op_efficiency/op_time" in proc.stdout
