"""Why the connection weights of ``make demo``'s search barely move (issue 14's diagnosis).

``python -m experiments.search_gradients [--variants demo,bn0,...] [--epochs 8] [--seed 0]``

Runs the search part of ``make demo`` (``attnas-search experiment=cpu_demo``: the proxy protocol
of ``benchmarks/distant_match_k2``, joint, position-agnostic, the ``attention_nas`` space,
``run_proxy_search``) once per variant of the search config, and prints, per epoch, what the
hook's gradient telemetry recorded: the mean per-step gradient norm reaching the sink, level
and activation logits against that reaching the network weights (all trained ones, and those
inside the supergraph), the gradients' coherence over the epoch, the largest logit change,
the logits' range and the entropies. Nothing is retrained. Variants (each the demo's config with
one change): ``demo`` (arch_lr 0.01, arch weight decay 1e-3, the protocol's sink BatchNorm
weight 1.0), ``bn0`` (sink BatchNorm weight 0, DESIGN's identity-at-insertion convention),
``bn0.1``, ``wd0`` (no weight decay on the connection weights), ``lr0.1`` (arch_lr 0.1),
``lr0.1_wd0``. Results go to ``experiments/results/search_gradients.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "demo": {},
    "bn0": {"sink_bn_init": 0.0},
    "bn0.1": {"sink_bn_init": 0.1},
    "wd0": {"arch_weight_decay": 0.0},
    "lr0.1": {"arch_lr": 0.1},
    "lr0.1_wd0": {"arch_lr": 0.1, "arch_weight_decay": 0.0},
}
DEMO = {"mode": "joint", "position_specific": False, "arch_lr": 1e-2}


def run_variant(name: str, epochs: int, seed: int, out_dir: Path) -> dict[str, Any]:
    from attnas.benchmark import FeatureCache, ProxyProtocol, load
    from attnas.benchmark.search import protocol_weights, run_proxy_search, table_folder
    from attnas.space import load_space
    from attnas.supergraph.search import DifferentiableSearchConfig

    folder = table_folder("distant_match_k2")
    protocol = ProxyProtocol.from_dict(load(str(folder)).manifest["protocol"])
    if epochs != protocol.train.epochs:
        protocol = dataclasses.replace(protocol, train=protocol.train.replace(epochs=epochs))
    cache = FeatureCache(protocol, protocol_weights(protocol, folder, out_dir / "proxy"))
    config = DifferentiableSearchConfig(**{**DEMO, **VARIANTS[name]})
    start = time.perf_counter()
    telemetry = out_dir / f"{name}.telemetry.jsonl"
    telemetry.unlink(missing_ok=True)
    result = run_proxy_search(
        protocol, cache, load_space("attention_nas"), config, seed, telemetry_path=telemetry
    )
    return {
        "variant": name,
        "config": dataclasses.asdict(config),
        "epochs": epochs,
        "seed": seed,
        "wall_s": time.perf_counter() - start,
        "val_top1": result.history[-1]["val_top1"],
        "telemetry": result.telemetry,
    }


def print_run(run: dict[str, Any]) -> None:
    print(f"== {run['variant']}: val top-1 {run['val_top1']:.3f}, {run['wall_s']:.0f} s")
    print(
        "ep  |g|sink   |g|level  |g|act    |g|net    |g|sg     coh.sink coh.lvl  "
        "Δmax.sink  logits.sink       H.sink H.lvl  H.act  top"
    )
    for r in run["telemetry"]:
        p = r["positions"]["all"]
        lo, hi = p["logits/sink"]
        print(
            f"{r['epoch']:<3} {p.get('grad_norm/sink', 0):.2e} {p.get('grad_norm/level', 0):.2e} "
            f"{p.get('grad_norm/act', 0):.2e} {r['grad_norm/net']:.2e} "
            f"{r['grad_norm/supergraph']:.2e} {p.get('grad_coherence/sink', 0):.3f}    "
            f"{p.get('grad_coherence/level', 0):.3f}    {p.get('epoch_update/sink', 0):.4f}     "
            f"[{lo:+.3f}, {hi:+.3f}]  {p['entropy/sink']:.4f} {p['entropy/level']:.4f} "
            f"{p['entropy/act']:.4f} {p['top_sink_share']:.4f}"
        )


def summary_table(runs: dict[str, dict[str, Any]]) -> str:
    """One Markdown row per run: the final state and the gradients' size and coherence."""
    from attnas.supergraph.telemetry import collapse_summary

    lines = [
        "| variant | val top-1 | sink H ÷ uniform | level | act | top sink share | sink logits "
        "| ‖g‖ sink, epoch 1 / mean | ‖g‖ network, mean | sink coherence, mean | cell changes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |",
    ]
    for name, run in runs.items():
        records = run["telemetry"]
        summary = collapse_summary(records)["all"]
        rows = [r["positions"]["all"] for r in records]
        g_sink = [row["grad_norm/sink"] for row in rows]
        coherence = [row["grad_coherence/sink"] for row in rows]
        lo, hi = rows[-1]["logits/sink"]
        changes = sum(a != b for a, b in zip(summary.cells, summary.cells[1:]))
        lines.append(
            f"| {name} | {run['val_top1']:.3f} | {summary.entropy_ratio('sink'):.4f} | "
            f"{summary.entropy_ratio('level'):.4f} | {summary.entropy_ratio('act'):.4f} | "
            f"{summary.top_sink_share[-1]:.3f} | [{lo:+.2f}, {hi:+.2f}] | "
            f"{g_sink[0]:.1e} / {sum(g_sink) / len(g_sink):.1e} | "
            f"{sum(r['grad_norm/net'] for r in records) / len(records):.2f} | "
            f"{sum(coherence) / len(coherence):.2f} | {changes} of {len(rows) - 1} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/search_gradients")
    parser.add_argument("--out", default="experiments/results/search_gradients.json")
    args = parser.parse_args()
    out = Path(args.out)
    runs = json.loads(out.read_text()) if out.is_file() else {}
    for name in args.variants.split(","):
        run = run_variant(name, args.epochs, args.seed, Path(args.work))
        print_run(run)
        runs[f"{name}/seed{args.seed}/epochs{args.epochs}"] = run
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(runs, indent=1))
    print(summary_table(runs))


if __name__ == "__main__":
    main()
