"""``report.md``: a human-readable account of a search or a training run.

A report says what was searched (space and its size, searcher, backbone and positions, data,
budget), shows the found cells in words (``CellSpec.describe()``) and as YAML, compares their
accuracy and cost with the backbone alone and the backbone with non-local blocks, links the
plots, and shows how to reuse the cell from the command line and from Python with the actual
file paths. The writers take plain values (no Hydra objects) so they are easy to test.

Design choices where the spec is silent:

- Accuracies are percentages with two decimals (the paper's tables); parameters in millions and
  FLOPs in GFLOPs with three significant decimals, since the CPU-sized models are small.
- Δ top-1 is against the backbone alone when its row exists (the paper's "Δ Top-1" column).
- Bandit searches list every trial in store order, with its state, the invocation that ran it
  (``resume=true budget=<larger>`` grows a search) and, for failed trials, the first line of the
  error; failures are also grouped by message.
- Top-5 with 5 or fewer classes is always 100 %: it is shown as n/a.
- A bandit search's best trial is the maximum of N noisy trials chosen on the validation split:
  it is shown apart, labelled as a selection figure, and never set against single runs. With
  ``report.baselines=true`` the top cells are retrained with fresh seeds, next to the backbone
  alone and + non-local under the same budget, and those retrained rows form the comparison.
- Data problems (unreadable or undecodable videos, padded short videos) are listed per split.
- A differentiable search's report carries the collapse monitor of its ``telemetry.jsonl``
  (``attnas.supergraph.telemetry.collapse_summary``): per-epoch entropies against uniform, the
  top sink share, the gradient norms and coherence, how long the derived cell held, and the
  monitor's warnings, so that a cell set by noise and tie-breaks is said to be one.
- Every top-1 carries its uncertainty: the Wilson 95 % score interval over the validation clips
  of one evaluation (for a row of several seeds, the interval of the seed mean with the clips
  of one evaluation, since every seed is scored on the same clips), and the seed spread
  (mean ± sample std, n) where more than one seed ran.
- Two rows are *within noise* of each other when their Wilson 95 % intervals overlap, or when
  both ran several seeds and their per-seed values overlap (a re-run could swap them). The rule
  is conservative on purpose (overlapping 95 % intervals is a stricter bar than a 5 % test of
  the difference): a report should sooner call a gap noise than call noise a gap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnas.space import CellSpec

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed over ``n`` trials (95 % by default).

    Unlike ``p ± z·sqrt(p(1-p)/n)`` it stays inside [0, 1] and does not collapse to a point at
    0 % or 100 %.
    """
    if n <= 0:
        raise ValueError(f"wilson_interval: n must be > 0, got {n}")
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _val_clips(result: Mapping[str, Any]) -> int | None:
    """Validation clips of a result's final evaluation (``val_clips`` of its last epoch)."""
    n = result.get("val_clips")
    if n is None and result.get("history"):
        n = result["history"][-1].get("val_clips")
    return None if n is None else int(n)


@dataclass
class ResultRow:
    """One row of a comparison table.

    Attributes:
        label: what was trained (``backbone``, ``+ non-local``, ``+ derived cell``...).
        top1: validation top-1 in [0, 1] (the mean over ``values`` when several seeds ran;
            None: not available).
        top5: validation top-5 in [0, 1].
        params: parameters.
        flops: FLOPs of one forward pass of one clip.
        wall_s: seconds one run took (the mean over seeds).
        status: ``completed`` or ``failed`` (``k of n failed`` over seeds).
        clips: validation clips of one evaluation (None: unknown, no interval shown).
        values: per-seed top-1 of the completed runs (empty for a row built by hand).
    """

    label: str
    top1: float | None = None
    top5: float | None = None
    params: int | None = None
    flops: int | None = None
    wall_s: float | None = None
    status: str = "completed"
    clips: int | None = None
    values: tuple[float, ...] = ()

    @classmethod
    def from_result(
        cls, label: str, result: Mapping[str, Any], num_classes: int | None = None
    ) -> ResultRow:
        """A row from a ``TrialResult.to_dict()`` (or a trial store's metrics).

        ``num_classes`` (or the result's own ``num_classes``) <= 5 drops top-5, which is then
        100 % whatever the model does.
        """
        classes = result.get("num_classes") or num_classes
        top1 = result.get("top1")
        return cls(
            label=label,
            top1=top1,
            top5=None if classes is not None and int(classes) <= 5 else result.get("top5"),
            params=result.get("num_parameters"),
            flops=result.get("flops"),
            wall_s=result.get("wall_time_s"),
            status=str(result.get("status", "completed")),
            clips=_val_clips(result),
            values=() if top1 is None else (float(top1),),
        )

    @classmethod
    def from_results(
        cls, label: str, results: Sequence[Mapping[str, Any]], num_classes: int | None = None
    ) -> ResultRow:
        """One row over several seeds' results: the mean of the completed runs' figures."""
        rows = [cls.from_result(label, r, num_classes) for r in results]
        done = [r for r in rows if r.top1 is not None]
        if len(rows) == 1:
            return rows[0]
        failed = len(rows) - len([r for r in rows if r.status == "completed"])

        def mean(xs: list[Any]) -> Any:
            xs = [x for x in xs if x is not None]
            return sum(xs) / len(xs) if xs else None

        return cls(
            label=label,
            top1=mean([r.top1 for r in done]),
            top5=mean([r.top5 for r in done]),
            params=next((r.params for r in rows if r.params is not None), None),
            flops=next((r.flops for r in rows if r.flops is not None), None),
            wall_s=mean([r.wall_s for r in rows]),
            status="completed" if not failed else f"{failed} of {len(rows)} failed",
            clips=next((r.clips for r in done if r.clips is not None), None),
            values=tuple(r.top1 for r in done if r.top1 is not None),
        )

    @property
    def interval(self) -> tuple[float, float] | None:
        """Wilson 95 % interval of ``top1`` over ``clips`` (None when either is unknown)."""
        if self.top1 is None or not self.clips:
            return None
        return wilson_interval(self.top1, self.clips)

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (None with fewer than two)."""
        if len(self.values) < 2:
            return None
        m = sum(self.values) / len(self.values)
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (len(self.values) - 1))


def top1_words(row: ResultRow) -> str:
    """``76.00% ± 1.41 over 2 seeds (95 % CI 72.1–79.5 %, 512 clips)`` for printed summaries."""
    if row.top1 is None:
        return "n/a"
    text = f"{100 * row.top1:.2f}%"
    if row.std is not None:
        text += f" ± {100 * row.std:.2f} over {len(row.values)} seeds"
    iv = row.interval
    if iv is not None:
        text += f" (95 % CI {100 * iv[0]:.1f}–{100 * iv[1]:.1f} %, {row.clips} clips)"
    return text


def within_noise(a: ResultRow, b: ResultRow) -> bool:
    """Whether two rows are within noise of each other (the module docstring's rule).

    Rows without a top-1 are never within noise; rows without clips compare by seeds only.
    """
    if a.top1 is None or b.top1 is None:
        return False
    ia, ib = a.interval, b.interval
    if ia is not None and ib is not None and ia[0] <= ib[1] and ib[0] <= ia[1]:
        return True
    if len(a.values) >= 2 and len(b.values) >= 2:
        return min(a.values) <= max(b.values) and min(b.values) <= max(a.values)
    return False


NOISE_RULE = (
    "rule: two rows are within noise when their Wilson 95 % intervals overlap, or when both "
    "ran several seeds and their per-seed top-1s overlap"
)


def noise_lines(rows: Sequence[ResultRow]) -> list[str]:
    """The plain sentence(s) saying which rows are within noise of each other."""
    rows = [r for r in rows if r.top1 is not None]
    if len(rows) < 2:
        return []
    pairs = [
        f"**{a.label}** and **{b.label}**"
        for i, a in enumerate(rows)
        for b in rows[i + 1 :]
        if within_noise(a, b)
    ]
    if not pairs:
        return [f"No two rows are within noise of each other ({NOISE_RULE}).", ""]
    if len(pairs) == 1:
        return [f"{pairs[0]} are within noise of each other ({NOISE_RULE}).", ""]
    return [
        f"Within noise of each other ({NOISE_RULE}): " + "; ".join(pairs) + ".",
        "",
    ]


def compare_sentence(
    a: ResultRow, b: ResultRow, a_name: str | None = None, b_name: str | None = None
) -> str:
    """``a`` against ``b`` in words (the noise rule): beats it beyond noise, does not beat it
    (within noise), or does not beat it (lower beyond noise). Names default to the labels."""
    an, bn = a_name or a.label, b_name or b.label
    if a.top1 is None or b.top1 is None:
        return f"{an} cannot be compared with {bn} (a figure is missing)."
    gap = f"{_pct(a.top1)} % against {_pct(b.top1)} %"
    if within_noise(a, b):
        return f"{an} does not beat {bn}: {gap}, within noise."
    if a.top1 > b.top1:
        return f"{an} beats {bn} beyond noise: {gap}."
    return f"{an} does not beat {bn}: {gap}, lower beyond noise."


@dataclass
class SearchContext:
    """What was searched, for the report's first section.

    Attributes:
        title: the run's name.
        run_dir: the run directory.
        searcher: searcher name.
        searcher_options: its options.
        space: space name.
        space_file: the space file.
        space_size: number of cells in the space.
        num_ops: K.
        backbone: backbone name.
        positions: insertion points.
        data: dataset name.
        data_options: dataset options.
        trainer: the training config (plain dict).
        budget: what the search was allowed (words).
        seed: master seed.
        num_classes: classes, when known (for the Python snippet).
        input_shape: clip shape, when known (for the Python snippet).
        op_channel_ratio: ``C_op / C`` of the cells.
    """

    title: str
    run_dir: Path
    searcher: str
    searcher_options: dict[str, Any]
    space: str
    space_file: str
    space_size: int
    num_ops: int
    backbone: str
    positions: list[str] | None
    data: str
    data_options: dict[str, Any]
    trainer: dict[str, Any]
    budget: str
    seed: int
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    op_channel_ratio: float = 0.25
    extra: dict[str, Any] = field(default_factory=dict)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _top5(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def top5_informative(num_classes: int | None) -> bool:
    """Whether top-5 says anything (more than 5 classes, or unknown)."""
    return num_classes is None or int(num_classes) > 5


def cell_line(cell: CellSpec) -> str:
    """One line per cell, numbered as in its YAML (op k is ``ops[k-1]``, input 0 the cell's)."""
    ops = "; ".join(
        f"{k}: {n.op.type}/{n.op.dim}/{n.op.activation}<-{','.join(map(str, n.inputs))}"
        for k, n in enumerate(cell.ops, start=1)
    )
    return f"{ops}; out {','.join(map(str, cell.outputs))}"


def _mega(x: int | None) -> str:
    return "–" if x is None else f"{x / 1e6:.3f}"


def _giga(x: int | None) -> str:
    return "–" if x is None else f"{x / 1e9:.3f}"


def _secs(x: float | None) -> str:
    return "–" if x is None else f"{x:.0f}"


def _interval(r: ResultRow) -> str:
    iv = r.interval
    if iv is None:
        return "–"
    return f"{100 * iv[0]:.1f}–{100 * iv[1]:.1f} ({r.clips} clips)"


def _spread(r: ResultRow) -> str:
    std = r.std
    if std is None:
        return "1 seed" if len(r.values) == 1 else "–"
    return f"{_pct(r.top1)} ± {100 * std:.2f} (n = {len(r.values)})"


def comparison_table(rows: Sequence[ResultRow], reference: str | None = None) -> str:
    """A Markdown table of rows; Δ top-1 against the row labelled ``reference`` when given.

    Each top-1 carries its Wilson 95 % interval over the validation clips and, where several
    seeds ran, the seed spread (mean ± std, n).
    """
    ref = next((r for r in rows if r.label == reference and r.top1 is not None), None)
    lines = [
        "| model | top-1 (%) | 95 % CI (%) | seeds: mean ± std (%) | top-5 (%) | Δ top-1 | "
        "params (M) | GFLOPs | time (s) | status |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        delta = "–"
        if ref is not None and r.top1 is not None and r is not ref:
            delta = f"{100 * (r.top1 - ref.top1):+.2f}"
        lines.append(
            f"| {r.label} | {_pct(r.top1)} | {_interval(r)} | {_spread(r)} | {_top5(r.top5)} | "
            f"{delta} | {_mega(r.params)} | {_giga(r.flops)} | {_secs(r.wall_s)} | {r.status} |"
        )
    return "\n".join(lines)


UNCERTAINTY_NOTE = (
    "95 % CI: Wilson score interval of the top-1 over the validation clips of one evaluation "
    "(for several seeds, of their mean; every seed is scored on the same clips). Seeds: mean ± "
    "sample standard deviation over the seeds that ran. Time: seconds per run."
)


def _context_section(ctx: SearchContext) -> list[str]:
    trainer = ctx.trainer
    opts = ", ".join(f"{k}={v}" for k, v in ctx.searcher_options.items()) or "defaults"
    data_opts = ", ".join(f"{k}={v}" for k, v in ctx.data_options.items()) or "defaults"
    positions = ", ".join(ctx.positions) if ctx.positions else "the backbone's 5 defaults"
    return [
        f"# {ctx.title}",
        "",
        f"Run directory: `{ctx.run_dir}`",
        "",
        "## What was searched",
        "",
        f"- **Space**: `{ctx.space}` ({ctx.space_file}), K = {ctx.num_ops} ops per cell, "
        f"{ctx.space_size:,} cells"
        + (
            " (the space's cells; a derived cell's number of ops comes from α and β, not K)"
            if ctx.searcher == "differentiable"
            else ""
        ),
        f"- **Searcher**: `{ctx.searcher}` ({opts})",
        f"- **Backbone**: `{ctx.backbone}`, cells at {positions}",
        f"- **Data**: `{ctx.data}` ({data_opts})",
        f"- **Training**: {trainer.get('epochs')} epoch(s), batch {trainer.get('batch_size')}, "
        f"{trainer.get('optimizer')} lr {trainer.get('lr')}, device {trainer.get('device')}",
        f"- **Budget**: {ctx.budget}",
        f"- **Seed**: {ctx.seed}",
        "",
    ]


def _link(target: Path, base: Path) -> str:
    try:
        return str(target.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(target)


def _cell_section(
    title: str, cell: CellSpec, path: Path, base: Path, plot: Path | None = None
) -> list[str]:
    lines = [f"### {title}", "", f"File: `{path}` (hash `{cell.hash()}`)", ""]
    lines += ["In words:", "", "```text", cell.describe(), "```", ""]
    lines += [f"One line (numbered as in the YAML): `{cell_line(cell)}`", ""]
    drawing = _draw(cell, path.with_suffix(".graph.png"))
    if drawing is not None:
        lines += [f"![the cell]({_link(drawing, base)})", ""]
    if plot is not None and plot.is_file():
        lines += [f"![learned connection weights]({_link(plot, base)})", ""]
    bare = CellSpec(cell.ops, cell.outputs, name=cell.name)
    lines += ["```yaml", bare.to_yaml().rstrip(), "```", ""]
    if cell.meta:
        lines += ["(The file also records, under `meta`, the evidence behind each choice.)", ""]
    return lines


def _draw(cell: CellSpec, path: Path) -> Path | None:
    """Draw the cell's graph (``attnas.cells.draw``) next to its file; None if it cannot."""
    try:
        from attnas.cells.draw import draw_cell
    except ImportError:  # matplotlib missing: the report still has the words and the YAML
        return None
    import matplotlib.pyplot as plt

    fig = draw_cell(cell, path=path)
    plt.close(fig)
    return path


def data_section(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Unreadable, undecodable and padded videos per split, from the runs' ``data_report``."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for result in results.values():
        for split, kinds in (result.get("data_report") or {}).items():
            for kind, files in kinds.items():
                seen.setdefault((split, kind), {}).update(files)
    if not seen:
        return []
    words = {
        "unreadable": "unreadable (dropped)",
        "decode_failed": "failed to decode (skipped)",
        "padded": "shorter than a clip (last frame repeated)",
    }
    lines = [
        "## Data problems",
        "",
        "| split | problem | videos | files |",
        "| --- | --- | ---: | --- |",
    ]
    for (split, kind), files in sorted(seen.items()):
        names = ", ".join(f"`{Path(f).name}`" for f in sorted(files)[:10])
        more = f" (+{len(files) - 10} more)" if len(files) > 10 else ""
        lines.append(f"| {split} | {words.get(kind, kind)} | {len(files)} | {names}{more} |")
    return [*lines, ""]


def _reuse_section(ctx: SearchContext, cell_files: Mapping[str, Path]) -> list[str]:
    """Command line and Python snippets using the found cell file(s)."""
    classes = ctx.num_classes if ctx.num_classes is not None else "NUM_CLASSES"
    shape = tuple(ctx.input_shape) if ctx.input_shape is not None else "(3, T, H, W)"
    positions = list(ctx.positions) if ctx.positions else None
    lines = ["## How to reuse the cell", ""]
    first = next(iter(cell_files.values()))
    cell_set = first.parent / "cells.yaml" if len(cell_files) > 1 else None
    target = cell_set if cell_set is not None and cell_set.is_file() else first
    lines += [
        "Train it from scratch against the baselines (one multirun):",
        "",
        "```bash",
        f"attnas-train -m cell=none,nonlocal,{target} backbone={ctx.backbone} data={ctx.data}"
        + (f" 'backbone.positions=[{','.join(positions)}]'" if positions else ""),
        "```",
        "",
    ]
    if target != first:
        lines += [
            f"(`{target.name}` is the cell-set file: each position gets its own cell.)",
            "",
        ]
    lines += [
        "Insert it into a backbone in Python:",
        "",
        "```python",
        "from attnas.backbones import build_backbone, insert_cells",
        f"from attnas.cells import {'AttentionCell' if len(cell_files) == 1 else 'CellSet'}",
        "",
        f"model = build_backbone({ctx.backbone!r}, num_classes={classes}, input_shape={shape})",
    ]
    if len(cell_files) == 1:
        lines += [
            f"cell_file = {str(first)!r}",
            f"insert_cells(model, {positions!r}, lambda name, shape: AttentionCell.from_file(",
            "    cell_file, channels=shape[0],",
            f"    op_channels=max(1, round(shape[0] * {ctx.op_channel_ratio})), shape=shape))",
        ]
    else:
        lines += [
            f"cells = CellSet.load({str(target)!r}, op_channel_ratio={ctx.op_channel_ratio})",
            "insert_cells(model, None, cells)  # each position gets its own cell",
        ]
    lines += ["```", ""]
    return lines


def _rows_of(
    results: Mapping[str, Mapping[str, Any] | Sequence[Mapping[str, Any]]],
    labels: Mapping[str, str],
    num_classes: int | None,
) -> list[ResultRow]:
    """One row per key: a single result, or several seeds' results (a list)."""
    rows = []
    for key, value in _ordered(results):
        label = labels.get(key, key)
        if isinstance(value, Mapping):
            rows.append(ResultRow.from_result(label, value, num_classes))
        else:
            rows.append(ResultRow.from_results(label, list(value), num_classes))
    return rows


def _flat(
    results: Mapping[str, Mapping[str, Any] | Sequence[Mapping[str, Any]]],
) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            out[key] = value
        else:
            out.update({f"{key}[{i}]": v for i, v in enumerate(value)})
    return out


DIFFERENTIABLE_LABELS = {
    "none": "backbone alone",
    "nonlocal": "+ non-local blocks",
    "derived": "+ derived cell",
}


def write_differentiable_report(
    path: Path,
    ctx: SearchContext,
    cells: Mapping[str, CellSpec],
    cell_files: Sequence[Path],
    search: Mapping[str, Any],
    retrained: Mapping[str, Mapping[str, Any] | Sequence[Mapping[str, Any]]],
    alpha: int,
    beta: int,
    retrain_note: str | None = None,
    extra_sections: Sequence[str] = (),
    telemetry: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``report.md`` for a differentiable search.

    Args:
        path: the report file.
        ctx: what was searched.
        cells: the derived cell per insertion point.
        cell_files: the exported cell files (``cell.yaml`` or ``cell_<position>.yaml``).
        search: the search run's ``TrialResult.to_dict()``.
        retrained: ``{"derived"|"none"|"nonlocal": TrialResult.to_dict()}``, or a list of them
            (one per seed) per key (may be empty).
        alpha: derivation α.
        beta: derivation β.
        retrain_note: what the retrained rows are (None: trained from scratch with the trainer
            budget).
        extra_sections: Markdown lines placed after the accuracy table (e.g. the benchmark).
        telemetry: The search hook's per-epoch records for the collapse monitor (None: read
            ``<run_dir>/telemetry.jsonl`` when it exists).

    Returns:
        ``path``.
    """
    lines = _context_section(ctx)
    methods = {c.meta.get("derivation", {}).get("method", "weights") for c in cells.values()}
    if methods in ({"perturbation"}, {"pruning"}):
        pruning = (
            "; the sink pruned one node at a time, the network re-adapted for an epoch after "
            "each structural decision and restored afterwards"
            if methods == {"pruning"}
            else ""
        )
        how = (
            f"Derived with α = {alpha} (sink nodes kept) and β = {beta} (predecessors kept per "
            "node), each choice ranked not by its connection weight but by how much the trained "
            f"network's validation loss rose without it ({next(iter(methods))} selection"
            f"{pruning}, `attnas.supergraph.select`; the losses are in each cell file's `meta`). "
            "`attnas-derive` derives from the weights alone, without retraining: "
            f"`attnas-derive run_dir={ctx.run_dir} alpha=2 beta=1`."
        )
    elif methods == {"oneshot"}:
        chosen = next(iter(cells.values()))
        ops = f"{len(chosen.ops)} op" + ("s" if len(chosen.ops) != 1 else "")
        again = chosen.meta["derivation"].get("retrained", [])
        picked = (
            f"the {len(again)} best were trained from scratch with {len(again[0]['trials'])} "
            "fresh seeds each, and the one with the best mean is the derived cell"
            if again
            else "the best is the derived cell"
        )
        how = (
            "Chosen without the α / β rule: each of the space's "
            f"{chosen.meta['derivation']['candidates']:,} cells with {ops} was scored by the "
            "weights it inherits from the trained supergraph (validation top-1, BatchNorms "
            "re-estimated per cell; one-shot selection, `attnas.supergraph.select`), and "
            f"{picked}; the 10 best scores are in the cell file's `meta`. These scores are "
            "selection figures. `attnas-derive` derives from the weights alone: "
            f"`attnas-derive run_dir={ctx.run_dir} alpha=2 beta=1`."
        )
    else:
        how = (
            f"Derived from the learned connection weights with α = {alpha} (sink nodes kept) and "
            f"β = {beta} (predecessors kept per node). Derive again with other values, without "
            f"retraining: `attnas-derive run_dir={ctx.run_dir} alpha=2 beta=1`."
        )
    lines += ["## Derived cells", "", how, ""]
    by_file: dict[str, Path] = {}
    for f in cell_files:
        cell = CellSpec.load(f)
        stem = f.stem
        position = stem.removeprefix("cell_") if stem.startswith("cell_") else None
        title = f"Cell at {position}" if position else "Cell (every position)"
        lines += _cell_section(title, cell, f, ctx.run_dir, f.with_suffix(".png"))
        if position is None:
            by_file = {"all": f}
        else:
            by_file[position] = f
    if not cell_files:
        lines += ["(no cell was exported)", ""]
    lines += ["## Accuracy and cost", ""]
    k = ctx.num_classes
    search_row = ResultRow.from_result("supergraph (search run)", search, k)
    rows = [search_row]
    set_file = next(iter(cell_files)).parent / "cells.yaml" if len(cell_files) > 1 else None
    compared: list[ResultRow] = []
    if retrained:
        compared = _rows_of(retrained, DIFFERENTIABLE_LABELS, k)
        rows = [*compared, search_row]
        lines += [
            retrain_note
            or "Each model below was trained from scratch with the same trainer budget and "
            "the same positions; the supergraph row is the search run itself.",
            "",
        ]
    else:
        target = set_file if set_file is not None else next(iter(by_file.values()), "CELL")
        lines += [
            "The derived cells were not retrained (`searcher.retrain=false`); the row is the "
            "search run. Compare with the baselines: "
            f"`attnas-train -m cell=none,nonlocal,{target}`.",
            "",
        ]
    if not top5_informative(k):
        lines += [f"(Top-5 is n/a: with {k} classes it is 100 % for every model.)", ""]
    lines += [comparison_table(rows, reference="backbone alone"), ""]
    lines += [UNCERTAINTY_NOTE, ""]
    # the supergraph row is the search run, not a model anyone would deploy: it is not compared
    lines += noise_lines(compared)
    by_label = {r.label: r for r in compared}
    derived = by_label.get(DIFFERENTIABLE_LABELS["derived"])
    names = {"nonlocal": "non-local blocks", "none": "the backbone alone"}
    verdicts = [
        "- "
        + compare_sentence(
            derived, by_label[DIFFERENTIABLE_LABELS[other]], "The derived cell", names[other]
        )
        for other in ("nonlocal", "none")
        if derived is not None and DIFFERENTIABLE_LABELS[other] in by_label
    ]
    lines += [*verdicts, ""] if verdicts else []
    lines += list(extra_sections)
    if telemetry is None:
        telemetry = read_telemetry(ctx.run_dir / "telemetry.jsonl")
    lines += collapse_section(telemetry)
    lines += data_section({"search": search, **_flat(retrained)})
    plots = sorted(p for f in cell_files for p in [f.with_suffix(".png")] if p.is_file())
    if plots:
        lines += ["## Plots", ""]
        lines += [f"- [{p.name}]({_link(p, ctx.run_dir)})" for p in plots]
        lines += [""]
    if by_file:
        if "all" in by_file:
            lines += _reuse_section(ctx, {"all": by_file["all"]})
        else:
            lines += _reuse_section(ctx, by_file)
    path.write_text("\n".join(lines))
    return path


def read_telemetry(path: Path) -> list[dict[str, Any]]:
    """The records of a search's ``telemetry.jsonl`` (none when the file is missing)."""
    import json

    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _ratio(summary: Any, kind: str) -> str:
    ratio = summary.entropy_ratio(kind)
    return "–" if ratio is None else f"{ratio:.3f}"


def _sci(x: Any) -> str:
    return "–" if x is None else f"{x:.2e}"


def collapse_section(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """ "Did the search decide?": the collapse monitor of ``attnas.supergraph.telemetry``.

    Per position: the final entropy of each softmax as a fraction of uniform mixing, the top
    sink node's share, how long the derived cell has held, and the monitor's warnings; for a
    position-agnostic search also the per-epoch table with the gradient telemetry.
    """
    from attnas.supergraph.telemetry import MIN_ENTROPY_DROP, STABLE_FRACTION, collapse_summary

    summaries = collapse_summary(records)
    if not summaries:
        return []
    lines = [
        "## Did the search decide? (collapse monitor)",
        "",
        "Entropies are shown as a fraction of uniform mixing (1.000: the weights did not move). "
        f"A warning fires when an entropy fell by less than {100 * MIN_ENTROPY_DROP:.0f} % of "
        "uniform, or when the final cell did not hold over the last "
        f"{100 * STABLE_FRACTION:.0f} % of the epochs (at least 2); see "
        "`attnas.supergraph.telemetry`.",
        "",
    ]
    for key, summary in summaries.items():
        where = "every position" if key == "all" else key
        n = len(summary.cells)
        lines.append(
            f"- **{where}**: final entropy ÷ uniform: sink {_ratio(summary, 'sink')}, "
            f"level {_ratio(summary, 'level')}, activation {_ratio(summary, 'act')}; top sink "
            f"node's share {summary.top_sink_share[-1]:.3f}; the derived cell held for the "
            f"last {summary.stable_epochs} of {n} epoch(s)."
        )
        lines += [f"  - **Warning**: {w}." for w in summary.warnings]
    lines.append("")
    if len(summaries) == 1:
        (summary,) = summaries.values()
        lines += [
            "| epoch | sink H ÷ uniform | level H ÷ uniform | act H ÷ uniform | top sink share "
            "| cell changed | ‖g‖ sink | ‖g‖ network | sink gradient coherence |",
            "| ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: |",
        ]
        rows = [r["positions"][summary.position] for r in records]
        for i, (record, row) in enumerate(zip(records, rows)):
            cols = []
            for kind in ("sink", "level", "act"):
                top = summary.uniform.get(kind)
                values = summary.entropy.get(kind)
                cols.append("–" if not top or not values else f"{values[i] / top:.3f}")
            changed = "–" if i == 0 else ("yes" if summary.cells[i] != summary.cells[i - 1] else "")
            coherence = row.get("grad_coherence/sink")
            lines.append(
                f"| {record['epoch']} | {' | '.join(cols)} | {summary.top_sink_share[i]:.3f} | "
                f"{changed} | {_sci(row.get('grad_norm/sink'))} | "
                f"{_sci(record.get('grad_norm/net'))} | "
                f"{'–' if coherence is None else f'{coherence:.2f}'} |"
            )
        lines += [
            "",
            "‖g‖: mean per-step L2 norm of the gradient reaching the sink logits and all "
            "trained network weights. Coherence: ‖Σ g‖ ÷ Σ ‖g‖ over the epoch's steps (1: every "
            "step pushed the same way; about 1/√steps: random directions, so Adam's steps "
            "cancel out).",
            "",
        ]
    return lines


def _ordered(results: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    order = {"none": 0, "nonlocal": 1, "derived": 2}
    return sorted(results.items(), key=lambda kv: (order.get(kv[0], 9), kv[0]))


def _interval_words(result: Mapping[str, Any]) -> str:
    row = ResultRow.from_result("", result)
    iv = row.interval
    if iv is None:
        return ""
    return f" (Wilson 95 % interval {100 * iv[0]:.1f}–{100 * iv[1]:.1f} % over {row.clips} clips)"


def group_errors(trials: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[int]]]:
    """Failed trials grouped by the first line of their error, most frequent first."""
    groups: dict[str, list[int]] = {}
    for t in trials:
        if t.get("state") == "failed":
            msg = str(t.get("error") or "failed").strip().splitlines() or ["failed"]
            groups.setdefault(msg[0], []).append(int(t["trial_id"]))
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[1][0]))


def _invocation_of(trial_id: int, starts: Sequence[tuple[int, int]]) -> int | None:
    inv = None
    for n, first in starts:
        if trial_id >= first:
            inv = n
    return inv


def write_bandit_report(
    path: Path,
    ctx: SearchContext,
    trials: Sequence[Mapping[str, Any]],
    best_files: Sequence[Path],
    baselines: Mapping[str, Mapping[str, Any]],
    plot: Path | None = None,
    retrained: Mapping[str, Mapping[str, Any]] | None = None,
    invocations: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write ``report.md`` for a GPB / random / evolution search.

    Args:
        path: the report file.
        ctx: what was searched.
        trials: ``TrialRecord.to_dict()`` of every trial, in store order.
        best_files: the exported best cells, best first.
        baselines: ``{"none"|"nonlocal": TrialResult.to_dict()}`` (may be empty).
        plot: the best-so-far plot, if drawn.
        retrained: ``{"rank<k>": TrialResult.to_dict()}`` of the top cells retrained with fresh
            seeds under the trials' budget (may be empty).
        invocations: ``run.json``'s invocations (``invocation``, ``budget``, ``first_trial``).

    Returns:
        ``path``.
    """
    retrained = dict(retrained or {})
    k = ctx.num_classes
    lines = _context_section(ctx)
    done = [t for t in trials if t.get("state") == "completed"]
    failed = [t for t in trials if t.get("state") == "failed"]
    lines += [f"{len(trials)} trial(s): {len(done)} completed, {len(failed)} failed.", ""]
    starts = [
        (int(i["invocation"]), int(i["first_trial"]))
        for i in invocations
        if i.get("first_trial") is not None
    ]
    if len(invocations) > 1:
        lines += ["Invocations of this search (`resume=true` adds to it):", ""]
        for i in invocations:
            ids = [
                t["trial_id"]
                for t in trials
                if _invocation_of(t["trial_id"], starts) == i["invocation"]
            ]
            span = f"trials {min(ids)}–{max(ids)}" if ids else "no new trial"
            lines.append(
                f"- invocation {i['invocation']} ({i.get('started', '?')}, budget "
                f"{i.get('budget')}): {span}"
            )
        lines += [""]
    groups = group_errors(trials)
    if groups:
        lines += ["Why trials failed (grouped by message):", ""]
        lines += [
            f"- {len(ids)} × `{msg[:200]}` (trials {', '.join(map(str, ids))})"
            for msg, ids in groups
        ]
        lines += [""]
    lines += ["## Best cells", ""]
    for rank, f in enumerate(best_files, start=1):
        cell = CellSpec.load(f)
        lines += _cell_section(f"Rank {rank}", cell, f, ctx.run_dir)
    if not best_files:
        lines += ["(no trial completed)", ""]
    ranked = sorted(done, key=lambda t: -float(t["metrics"].get("top1") or 0.0))
    lines += ["## Accuracy and cost", ""]
    if ranked:
        best = ranked[0]
        lines += [
            f"**Selection figure**: the best of {len(done)} completed trials, trial "
            f"{best['trial_id']}, reached top-1 {_pct(best['metrics'].get('top1'))} % on the "
            f"validation split it was selected on{_interval_words(best['metrics'])}. As the "
            "maximum of noisy trials it is biased upwards and is not compared with single runs "
            "below.",
            "",
        ]
    labels = {"none": "backbone alone", "nonlocal": "+ non-local blocks"}
    rows: list[ResultRow] = []
    for key, v in _ordered(baselines):
        rows.append(ResultRow.from_result(labels.get(key, key), v, k))
    for key, v in sorted(retrained.items()):
        rows.append(ResultRow.from_result(f"+ {key} cell (retrained, fresh seed)", v, k))
    if baselines or retrained:
        lines += [
            "Every row below is one training run from scratch with a fresh seed and the same "
            "trainer budget as every trial: the top cells retrained, the backbone alone and "
            "the backbone with non-local blocks.",
            "",
        ]
        if not top5_informative(k):
            lines += [f"(Top-5 is n/a: with {k} classes it is 100 % for every model.)", ""]
        lines += [comparison_table(rows, reference="backbone alone"), ""]
        lines += [UNCERTAINTY_NOTE, ""]
        lines += noise_lines(rows)
    else:
        lines += [
            "No comparison was trained (`report.baselines=true` retrains the top "
            "`report.retrain_top` cells with fresh seeds next to the backbone alone and with "
            "non-local blocks, under the same budget).",
            "",
        ]
    lines += [
        "## All trials",
        "",
        "Top-1 here is each trial's own validation figure (the selection data).",
        "",
        "| trial | run | state | top-1 (%) | top-5 (%) | params (M) | GFLOPs | time (s) | cell |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for t in trials:
        m = t.get("metrics") or {}
        cell = CellSpec.from_dict(t["cell"])
        state = t.get("state", "?")
        if state == "failed" and t.get("error"):
            state += f" ({str(t['error']).strip().splitlines()[0][:60]})"
        inv = _invocation_of(int(t["trial_id"]), starts)
        top5 = m.get("top5") if top5_informative(m.get("num_classes") or k) else None
        lines.append(
            f"| {t['trial_id']} | {inv if inv is not None else '–'} | {state} | "
            f"{_pct(m.get('top1'))} | {_top5(top5)} | "
            f"{_mega(m.get('num_parameters'))} | {_giga(m.get('flops'))} | "
            f"{_secs(m.get('wall_time_s'))} | `{cell_line(cell)}` |"
        )
    lines += [""]
    # every trial reads the same data: its problems are listed once, from the trials that got
    # as far as reading it
    lines += data_section({str(t["trial_id"]): t.get("metrics") or {} for t in trials})
    if plot is not None and plot.is_file():
        lines += ["## Plots", "", f"![best so far]({_link(plot, ctx.run_dir)})", ""]
    if best_files:
        best_file = best_files[0].parent / "best.yaml"
        lines += _reuse_section(ctx, {"all": best_file if best_file.is_file() else best_files[0]})
    path.write_text("\n".join(lines))
    return path


def write_train_report(
    path: Path,
    title: str,
    cell: str,
    result: Mapping[str, Any],
    num_classes: int | None = None,
) -> Path:
    """Write the short ``report.md`` of one ``attnas-train`` run."""
    lines = [
        f"# {title}",
        "",
        f"Inserted: `{cell}`",
        "",
        comparison_table([ResultRow.from_result(cell, result, num_classes)]),
        "",
        UNCERTAINTY_NOTE,
        "",
    ]
    lines += data_section({"run": result})
    if result.get("status") == "failed":
        lines += ["```text", str(result.get("error", "")), "```", ""]
    path.write_text("\n".join(lines))
    return path
