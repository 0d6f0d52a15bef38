"""``python -m experiments.bench [--quick]``: run the benchmark suite, write ``bench/results.json``.

The JSON holds ``machine``, ``torch``, ``device`` and ``benchmarks`` (one row per figure:
``name``, ``goal``, ``value``, ``unit``, ``met``, ``details``); stdout gets a short table. The
file is rewritten after every benchmark, so an interrupted run keeps what it measured. A
benchmark that raises becomes a row with ``value = None``, ``met = False`` and the traceback in
``details["error"]``, and the exit status is 1; a missed goal is a result, not an error (exit 0).

On a machine shared with other jobs pass ``--threads 1`` (``make bench ARGS="--quick --threads
1"``): torch's default of one thread per core then oversubscribes the cores, and its threads'
waits for each other inflated one training step about 35-fold on a 2-core machine at load 11.
The thread count is recorded in ``machine.torch_threads``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from experiments.bench import (
    BenchConfig,
    BenchResult,
    activation_mixing,
    data_throughput,
    device_name,
    gp_latency,
    growth,
    machine_info,
    op_efficiency,
    peer_latency,
    position_specific,
    rsa_growth,
    search_cost,
)

BENCHMARKS: dict[str, Callable[[BenchConfig], list[BenchResult]]] = {
    op_efficiency.NAME: op_efficiency.run,
    activation_mixing.NAME: activation_mixing.run,
    search_cost.NAME: search_cost.run,
    growth.NAME: growth.run,
    position_specific.NAME: position_specific.run,
    gp_latency.NAME: gp_latency.run,
    peer_latency.NAME: peer_latency.run,
    rsa_growth.NAME: rsa_growth.run,
    data_throughput.NAME: data_throughput.run,
}

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "bench" / "results.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench",
        description="Speed and memory benchmarks of attnas, as ratios measured in one run.",
    )
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", action="store_true", help="smaller sizes (< 5 min on 2 cores)")
    scale.add_argument(
        "--tiny", action="store_true", help="trivially small sizes for the harness's own tests"
    )
    parser.add_argument(
        "--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON path")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device", default=None, help="cpu or cuda[:i] (default: cuda when available)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's; use 1 on a machine shared with other jobs)",
    )
    parser.add_argument(
        "--data-root", default=None, help="video folder for the data benchmark (default: weizmann4)"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the search-cost benchmark's models (default off: minutes per model)",
    )
    return parser


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The short stdout table: name, value, goal, met."""
    lines = [f"{'benchmark':38s} {'value':>14s}  {'met':5s} goal", "-" * 96]
    for r in rows:
        value = "error" if r["value"] is None else f"{r['value']:.4g} {r['unit']}"
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        lines.append(f"{r['name']:38s} {value:>14s}  {met:5s} {r['goal']}")
    return "\n".join(lines)


def _write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks; return the exit status (1 when a benchmark errored)."""
    args = _parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    scale = "tiny" if args.tiny else "quick" if args.quick else "full"
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = BenchConfig(
        scale=scale,
        device=device,
        repeats=args.repeats,
        seed=args.seed,
        data_root=args.data_root,
        compile=args.compile,
    )
    payload: dict[str, Any] = {
        "machine": machine_info(),
        "torch": torch.__version__,
        "device": device_name(device),
        "scale": scale,
        "benchmarks": [],
    }
    start = time.perf_counter()
    errored = False
    for name in args.only or list(BENCHMARKS):
        t0 = time.perf_counter()
        print(f"[bench] {name} ({scale}) ...", file=sys.stderr, flush=True)
        try:
            rows = [r.to_dict() for r in BENCHMARKS[name](cfg)]
        except Exception:
            errored = True
            error = traceback.format_exc()
            print(error, file=sys.stderr, flush=True)
            rows = [
                BenchResult(name, "(benchmark raised)", None, "", False, {"error": error}).to_dict()
            ]
        seconds = round(time.perf_counter() - t0, 2)
        for row in rows:
            row["details"]["benchmark_seconds"] = seconds
        payload["benchmarks"].extend(rows)
        payload["wall_seconds"] = round(time.perf_counter() - start, 2)
        payload["machine"]["load_average_end"] = machine_info()["load_average"]
        _write(args.out, payload)
    print(
        f"attnas benchmarks ({scale}) on {payload['device']}, torch {payload['torch']}, "
        f"{payload['machine']['cpu_count']} CPUs, load {payload['machine']['load_average']}, "
        f"{payload.get('wall_seconds', 0):.0f} s"
    )
    print(format_table(payload["benchmarks"]))
    print(f"results: {args.out}")
    return 1 if errored else 0


if __name__ == "__main__":
    sys.exit(main())
