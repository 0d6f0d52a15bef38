"""The searcher study: GPB against random, evolution and the peers on a tabular benchmark.

Every searcher runs through the real ``run_search`` loop and ``TrialStore`` with the simulated
backend (``SimulatedDispatcher``: each trial is a table lookup on a simulated clock), for
``--seeds`` seeds, with each worker count of ``--workers`` (1, and 8 asynchronous workers with
pending trials in flight), up to the largest of ``--budgets`` finished trials. Searchers:

==============  ============================================================================
``gpb``         attnas GPB with its defaults (categorical Hamming kernel, ``beta_scale`` 0.2)
``gpb_onehot``  attnas GPB, one-hot Matern-5/2 alternative
``gpb_cold``    attnas GPB with every refit cold (``warm_maxiter=0``): the warm-start ablation,
                run only when named in ``--searchers``
``gpb_beta1``   attnas GPB with the GP-UCB schedule's β_t unscaled (``beta_scale=1``, the
                theorem's value and the default before this study judged it); run only when named
``gpb_oneshot`` attnas GPB with a trained supergraph's one-shot scores as its prior mean
                (``prior_mean``; the scores: ``experiments.oneshot_ranking``'s JSON, which must
                hold every cell of the table), run only when named; ``priors`` records what the
                scores cost (search and scoring CPU seconds, and in the table's trials)
``gpb_onehot_beta1``, ``gpb_oneshot_beta1``  those two with ``beta_scale=1`` (compared with
                ``gpb_beta1``); run only when named
``random``      random search
``evolution``   regularised evolution (P = 20, S = 5)
``optuna_tpe``  Optuna TPE, multivariate, constant liar (``attnas.controller.peers``)
``optuna_gp``   Optuna GPSampler
``botorch_mixed``  BoTorch ``MixedSingleTaskGP`` + qLogNEI + ``optimize_acqf_mixed_alternating``
==============  ============================================================================

Reported per (searcher, workers), as means over seeds with 95 % bootstrap confidence intervals
(percentile bootstrap over seeds, 2,000 resamples):

- ``trials_to_top1pct`` / ``trials_to_best``: finished trials until the first cell in the
  table's top 1 % (``Benchmark.top(0.01)``) / with its best mean. A seed that never gets there
  counts as the largest budget (so the mean is then a lower bound: ``censored`` says how many).
- ``regret@b``: simple regret, the table's optimum minus the best *true* (table) mean among the
  first b finished trials. A searcher does not know its budget, so the first b trials of one
  run at the largest budget are the run at budget b (up to which trials were in flight at the
  stop); one run per seed serves every budget.
- ``searcher_s``: wall seconds spent inside the searcher's ``suggest``/``observe``/``restore``
  calls (measured around the calls; the simulated trial time is not in it), and per suggestion.
- ``repairs``: peer proposals that repeated a cell and were repaired (``peers.py``).

``configs`` records each GPB searcher's ``GPBandit`` arguments (every argument, defaults
included), and a study is resumed only where they are unchanged: a run is never counted under
a name whose meaning has moved (e.g. a changed default).

``goals`` holds the issue's ratios measured in this run (GPB's trials to the top 1 % against
random's and against the best peer's; regret at 50 against the best peer's; 8 workers against
1), each with a bootstrap CI; on a synthetic table they are indicative only.

Output: ``experiments/results/searcher_study_<table>[_quick].json`` (rewritten after every run,
so an interrupted study keeps what it ran, and running the same command again resumes it: the
finished runs are kept when the JSON is of the same table (``table_digest``, a hash of its
cells' values), largest budget and time scale, and only the others run; ``--fresh`` starts
over; ``--jobs N`` runs N runs at a time, one process each; runs go seed by seed, so a
partial study holds the same seeds of every searcher) and a ``.png`` of best-so-far
simple regret with 95 % bands, one panel per worker count. The JSON states each peer's
version, and for a searcher that cannot run here, exactly why (``unavailable``), or the
traceback of a run that raised.

Usage (from the repository root; ``make study ARGS="..."``)::

    .venv/bin/python -m experiments.searcher_study --table synthetic --quick   # minutes
    .venv/bin/python -m experiments.searcher_study                             # the real table

``--table`` takes a table name or folder (``attnas.benchmark.load``), or ``synthetic`` (a
complete synthetic table over the real table's K = 2 space, ``attnas.benchmark.synthetic``) or
``synthetic-small`` (164 cells). A table that is not complete is refused unless
``--allow-partial``: a searcher's trials of missing cells would fail.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``experiments`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from attnas.benchmark import Benchmark, SimulatedDispatcher, load
from attnas.benchmark.synthetic import synthetic_benchmark
from attnas.controller import (
    GPBandit,
    RandomSearch,
    RegularizedEvolution,
    build_searcher,
    peer_unavailable,
    peer_versions,
)
from attnas.controller.gp_bandit import prior_scores
from attnas.dispatch import TrialStore, run_search
from attnas.space import SearchSpace, load_space

log = logging.getLogger("experiments.searcher_study")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# ``gpb_oneshot``'s prior: one-shot top-1 of every table cell (BatchNorm recalibrated, the mode
# ``prior_scores`` reads)
ONESHOT_SCORES = RESULTS_DIR / "oneshot_ranking.json"
ONESHOT_MODE = "recalibrate"


def oneshot_scores(path: Path | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """The one-shot scores of ``experiments.oneshot_ranking`` (mean over its search seeds) by
    cell hash, and what they cost: the searches' and the scoring's seconds.

    Raises:
        ValueError: the file is missing, unreadable, or holds no ``recalibrate`` scores.
    """
    path = ONESHOT_SCORES if path is None else path
    if not path.is_file():
        raise ValueError(f"{path}: missing; run python -m experiments.oneshot_ranking first")
    scores = prior_scores(path)
    seeds = json.loads(path.read_text()).get("seeds", [])
    cost = {
        "source": path.name,
        "mode": ONESHOT_MODE,
        "cells": len(scores),
        "search_seeds": [s["seed"] for s in seeds],
        "search_s": round(sum(s["search_seconds"] for s in seeds), 1),
        "scoring_s": round(
            sum(
                (s["modes"][ONESHOT_MODE].get("seconds_per_cell") or 0.0) * len(scores)
                for s in seeds
            ),
            1,
        ),
    }
    return scores, cost


def _oneshot_prior(bench: Benchmark) -> dict[str, Any]:
    """What the one-shot prior cost, in CPU seconds and in the table's mean trial time.

    Raises:
        ValueError: ``oneshot_scores`` cannot read the scores, or they miss a table cell.
    """
    scores, prior = oneshot_scores()
    missing = [c for c in bench.cells() if c.hash() not in scores]
    if missing:
        raise ValueError(
            f"{ONESHOT_SCORES}: no one-shot score for {len(missing)} of the table's "
            f"{len(bench)} cells (e.g. {missing[0].hash()})"
        )
    walls = [r.wall_s for c in bench.cells() for r in bench.rows(c) if r.wall_s]
    cpu = prior["search_s"] + prior["scoring_s"]
    prior["cpu_s"] = round(cpu, 1)
    prior["trial_s_mean"] = round(float(np.mean(walls)), 2)
    prior["trials_equivalent"] = round(cpu / float(np.mean(walls)), 1)
    return prior


# GPB and its variants: ``GPBandit`` arguments over its defaults, and the GPB searcher each
# variant is judged against (``variants``). ``ONESHOT`` stands for the one-shot scores.
ONESHOT = "oneshot"
GPB_SEARCHERS: dict[str, tuple[dict[str, Any], str | None]] = {
    "gpb": ({}, None),
    "gpb_onehot": ({"kernel": "onehot"}, "gpb"),
    "gpb_cold": ({"warm_maxiter": 0}, "gpb"),
    "gpb_beta1": ({"beta_scale": 1.0}, "gpb"),
    "gpb_oneshot": ({"prior_mean": ONESHOT}, "gpb"),
    "gpb_onehot_beta1": ({"kernel": "onehot", "beta_scale": 1.0}, "gpb_beta1"),
    "gpb_oneshot_beta1": ({"prior_mean": ONESHOT, "beta_scale": 1.0}, "gpb_beta1"),
}


def gpb_config(name: str) -> dict[str, Any]:
    """Every ``GPBandit`` argument of GPB searcher ``name`` (defaults included; the one-shot
    prior as the name of its file): what ``configs`` records."""
    kwargs, _ = GPB_SEARCHERS[name]
    params = inspect.signature(GPBandit).parameters
    config = {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
    config.update(kwargs)
    if config.get("prior_mean") == ONESHOT:
        config["prior_mean"] = ONESHOT_SCORES.name
    return config


def _gpb(name: str) -> Callable[[SearchSpace, int], GPBandit]:
    kwargs = dict(GPB_SEARCHERS[name][0])

    def build(space: SearchSpace, seed: int) -> GPBandit:
        if kwargs.get("prior_mean") == ONESHOT:
            return GPBandit(space, seed=seed, **{**kwargs, "prior_mean": oneshot_scores()[0]})
        return GPBandit(space, seed=seed, **kwargs)

    return build


SEARCHERS: dict[str, Callable[[SearchSpace, int], Any]] = {
    **{name: _gpb(name) for name in GPB_SEARCHERS},
    "random": lambda space, seed: RandomSearch(space, seed=seed),
    "evolution": lambda space, seed: RegularizedEvolution(space, seed=seed),
    "optuna_tpe": lambda space, seed: build_searcher("optuna_tpe", space, seed=seed),
    "optuna_gp": lambda space, seed: build_searcher("optuna_gp", space, seed=seed),
    "botorch_mixed": lambda space, seed: build_searcher("botorch_mixed", space, seed=seed),
}
PEERS = ("optuna_tpe", "optuna_gp", "botorch_mixed")
# run only when named (``--searchers``)
ABLATIONS = ("gpb_cold", "gpb_beta1", "gpb_oneshot", "gpb_onehot_beta1", "gpb_oneshot_beta1")
DEFAULT_SEARCHERS = tuple(s for s in SEARCHERS if s not in ABLATIONS)
BUDGETS = (25, 50, 100, 200)
QUICK = {"seeds": 3, "budgets": (10, 20, 30)}
BOOTSTRAP = 2000


# ---------------------------------------------------------------------- tables
def small_space() -> SearchSpace:
    """K = 2 over map/dot x spatial/temporal x none/relu: 192 vectors, 164 distinct cells."""
    types = {"dims": ["spatial", "temporal"], "activations": ["none", "relu"]}
    return load_space("attention_nas").with_overrides(
        num_ops=2, op_types={"map": types, "dot": types}, supergraph={"levels": 2, "nodes": "all"}
    )


def open_table(name: str, allow_partial: bool = False) -> Benchmark:
    """The study's table: ``synthetic``, ``synthetic-small``, or a name/folder for ``load``.

    Raises:
        ValueError: for an incomplete table without ``allow_partial``.
    """
    if name == "synthetic":
        space = load_space("attention_nas").with_overrides(num_ops=2)
        return synthetic_benchmark(space, name="synthetic_k2")
    if name == "synthetic-small":
        return synthetic_benchmark(small_space(), name="synthetic_small")
    bench = load(name)
    if not bench.complete and not allow_partial:
        done = bench.manifest.get("cells_done", len(bench))
        total = bench.manifest.get("cells_total", "?")
        raise ValueError(
            f"benchmark {bench.name!r} is not complete ({done} of {total} cells): trials of the "
            "missing cells would fail; pass --allow-partial to study it anyway, or use "
            "--table synthetic"
        )
    return bench


# ---------------------------------------------------------------------- one run
class TimedSearcher:
    """Forwards the ask/tell calls to a searcher, timing them and recording what finished.

    Attributes:
        seconds: wall seconds inside ``suggest``/``observe``/``restore``/``mark_pending``.
        suggestions: ``suggest`` calls.
        finished: the cell hashes in the order their trials were observed.
    """

    def __init__(self, searcher: Any) -> None:
        self.searcher = searcher
        self.seconds = 0.0
        self.suggestions = 0
        self.finished: list[str] = []

    def _timed(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def suggest(self, n: int = 1) -> list[Any]:
        self.suggestions += 1
        return self._timed(self.searcher.suggest, n)

    def observe(self, cell: Any, result: Any) -> None:
        self._timed(self.searcher.observe, cell, result)
        self.finished.append(cell.hash())

    def mark_pending(self, cell: Any) -> None:
        self._timed(self.searcher.mark_pending, cell)

    def restore(self, records: Iterable[Any], metric: str = "top1") -> None:
        self._timed(self.searcher.restore, records, metric=metric)


def run_one(
    bench: Benchmark,
    searcher: str,
    seed: int,
    workers: int,
    budget: int,
    work_dir: Path,
    time_scale: float = 1.0,
) -> dict[str, Any]:
    """One search of ``budget`` trials through ``run_search`` and the simulated backend.

    Returns:
        ``searcher``, ``seed``, ``workers``, ``trials`` (cell hashes in finishing order),
        ``true_means`` (the table's mean of each), ``failed``, ``searcher_s``, ``suggestions``,
        ``repairs``, ``simulated_clock_s``, ``warnings`` (a peer's recorded warnings).
    """
    timed = TimedSearcher(SEARCHERS[searcher](bench.space, seed))
    dispatcher = SimulatedDispatcher(bench, num_workers=workers, time_scale=time_scale)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{searcher}_{seed}_{workers}_", dir=work_dir))
    with TrialStore.open(run_dir) as store:
        summary = run_search(timed, store, dispatcher, budget, master_seed=seed)
    inner = timed.searcher
    proposer_warnings = getattr(getattr(inner, "proposer", None), "warnings", {}) or {}
    return {
        "searcher": searcher,
        "seed": seed,
        "workers": workers,
        "trials": timed.finished,
        "true_means": [bench.mean(h) if h in bench else None for h in timed.finished],
        "failed": summary.failed,
        "searcher_s": round(timed.seconds, 4),
        "suggestions": timed.suggestions,
        "repairs": getattr(inner, "repairs", None),
        "simulated_clock_s": round(dispatcher.clock_s, 1),
        "warnings": dict(proposer_warnings),
    }


# ---------------------------------------------------------------------- statistics
def bootstrap_ci(values: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its percentile-bootstrap 95 % interval over ``values``."""
    x = np.asarray(values, dtype=np.float64)
    point = float(x.mean())
    if len(x) < 2:
        return point, point, point
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(BOOTSTRAP, len(x)))].mean(axis=1)  # (BOOTSTRAP,)
    low, high = np.percentile(means, [2.5, 97.5])
    return point, float(low), float(high)


def ratio_ci(
    a: Sequence[float], b: Sequence[float], seed: int = 0, paired: bool = False
) -> tuple[float, float, float]:
    """mean(a) / mean(b) with a 95 % bootstrap interval: a and b resampled independently, or
    with ``paired`` (a[i] and b[i] from the same seed) the same seeds for both."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    point = float(x.mean() / y.mean()) if y.mean() else math.inf
    if len(x) < 2 or len(y) < 2:
        return point, point, point
    if paired and len(x) != len(y):
        raise ValueError(f"a paired ratio needs as many values in a as in b ({len(x)}, {len(y)})")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(BOOTSTRAP, len(x)))
    xs = x[idx].mean(axis=1)
    ys = y[idx if paired else rng.integers(0, len(y), size=(BOOTSTRAP, len(y)))].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        low, high = np.percentile(xs / ys, [2.5, 97.5])
    return point, float(low), float(high)


def first_hit(trials: Sequence[str], targets: set[str]) -> int | None:
    """1-based index of the first trial whose cell is in ``targets``; None if none is."""
    return next((i + 1 for i, h in enumerate(trials) if h in targets), None)


def best_so_far(true_means: Sequence[float | None]) -> list[float]:
    """The best true mean among the first i trials, i = 1..n (failed trials count as -inf)."""
    out, best = [], -math.inf
    for m in true_means:
        best = max(best, -math.inf if m is None else m)
        out.append(best)
    return out


def targets(bench: Benchmark) -> tuple[set[str], set[str]]:
    """Hashes of the table's top-1 % cells and of its best cell(s)."""
    top = {c.hash() for c in bench.top(0.01)}
    return top, {h for h in top if bench.mean(h) >= bench.optimum()}


def run_metrics(
    bench: Benchmark,
    run: Mapping[str, Any],
    budgets: Sequence[int],
    goal_cells: tuple[set[str], set[str]] | None = None,
) -> dict:
    """Per-run figures: trials to the top 1 % and to the best cell, regret at each budget.

    ``goal_cells`` is ``targets(bench)``, computed here when not given.
    """
    top, best = goal_cells or targets(bench)
    curve = best_so_far(run["true_means"])
    regret = {}
    for b in budgets:
        found = curve[min(b, len(curve)) - 1] if curve else -math.inf
        regret[str(b)] = bench.optimum() - found if math.isfinite(found) else None
    return {
        "trials_to_top1pct": first_hit(run["trials"], top),
        "trials_to_best": first_hit(run["trials"], best),
        "regret": regret,
    }


def _censored(values: Sequence[int | None], cap: int) -> dict[str, Any]:
    reached = [v for v in values if v is not None]
    filled = [cap if v is None else v for v in values]
    mean, low, high = bootstrap_ci(filled)
    return {
        "mean": mean,
        "ci95": [low, high],
        "reached": len(reached),
        "seeds": len(values),
        "censored": len(values) - len(reached),
        "per_seed": list(values),
        "lower_bound": len(reached) < len(values),
    }


def summarise(
    bench: Benchmark, runs: Sequence[Mapping[str, Any]], budgets: Sequence[int]
) -> dict[str, dict[str, Any]]:
    """Per ``"<searcher>/w<workers>"``: the figures of the module docstring with their CIs."""
    cap = max(budgets)
    goal_cells = targets(bench)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        if "error" not in run:
            groups.setdefault(f"{run['searcher']}/w{run['workers']}", []).append(run)
    out = {}
    for key, group in groups.items():
        metrics = [run_metrics(bench, r, budgets, goal_cells) for r in group]
        regret = {}
        for b in budgets:
            values = [m["regret"][str(b)] for m in metrics if m["regret"][str(b)] is not None]
            mean, low, high = bootstrap_ci(values) if values else (math.nan,) * 3
            regret[str(b)] = {"mean": mean, "ci95": [low, high], "seeds": len(values)}
        seconds = [r["searcher_s"] for r in group]
        per_suggest = [r["searcher_s"] / max(1, r["suggestions"]) for r in group]
        s_mean, s_low, s_high = bootstrap_ci(seconds)
        p_mean, p_low, p_high = bootstrap_ci(per_suggest)
        repairs = [r["repairs"] for r in group if r.get("repairs") is not None]
        out[key] = {
            "searcher": group[0]["searcher"],
            "workers": group[0]["workers"],
            "seeds": len(group),
            "seed_ids": [r["seed"] for r in group],  # the order of every per_seed list
            "trials_to_top1pct": _censored([m["trials_to_top1pct"] for m in metrics], cap),
            "trials_to_best": _censored([m["trials_to_best"] for m in metrics], cap),
            "regret": regret,
            "searcher_s": {"mean": s_mean, "ci95": [s_low, s_high]},
            "searcher_s_per_suggest": {"mean": p_mean, "ci95": [p_low, p_high]},
            "repairs_mean": float(np.mean(repairs)) if repairs else None,
            "failed_trials": sum(r["failed"] for r in group),
        }
    return out


def goals(summary: Mapping[str, Mapping[str, Any]], budgets: Sequence[int]) -> list[dict[str, Any]]:
    """The issue's ratio goals measured in this study (GPB = ``gpb``, default kernel)."""
    regret_at = str(50 if 50 in budgets else max(budgets))

    def trials(key: str) -> list[float]:
        return _trials_to_top1pct(summary, key, max(budgets))

    rows = []
    for w in sorted({s["workers"] for s in summary.values()}):
        if f"gpb/w{w}" not in summary:
            continue
        if f"random/w{w}" in summary:
            rows.append(
                _ratio_goal(f"gpb/random trials to top 1 % (w={w})", 0.5,
                            trials(f"gpb/w{w}"), trials(f"random/w{w}"))
            )  # fmt: skip
        peers = {p: summary[f"{p}/w{w}"] for p in PEERS if f"{p}/w{w}" in summary}
        if not peers:
            continue
        best = min(peers, key=lambda p: peers[p]["trials_to_top1pct"]["mean"])
        rows.append(
            _ratio_goal(f"gpb/best peer ({best}) trials to top 1 % (w={w})", 1.0,
                        trials(f"gpb/w{w}"), trials(f"{best}/w{w}"))
        )  # fmt: skip
        best = min(peers, key=lambda p: peers[p]["regret"][regret_at]["mean"])
        mine, theirs = summary[f"gpb/w{w}"]["regret"][regret_at], peers[best]["regret"][regret_at]
        rows.append(
            {
                "goal": f"gpb regret at {regret_at} against the best peer's ({best}, w={w})",
                "target": "<= the peer's",
                "value": mine["mean"],
                "ci95": mine["ci95"],
                "peer_value": theirs["mean"],
                "peer_ci95": theirs["ci95"],
                "met": mine["mean"] <= theirs["mean"],
            }
        )
    if "gpb/w1" in summary and "gpb/w8" in summary:
        rows.append(
            _ratio_goal("gpb 8 workers / 1 worker trials to top 1 %", 1.5,
                        trials("gpb/w8"), trials("gpb/w1"))
        )  # fmt: skip
    return rows


def _trials_to_top1pct(summary: Mapping[str, Mapping[str, Any]], key: str, cap: int) -> list[float]:
    """Per seed, the trials to the top 1 %; a seed that never got there counts as ``cap``."""
    return [cap if v is None else v for v in summary[key]["trials_to_top1pct"]["per_seed"]]


def variants(
    summary: Mapping[str, Mapping[str, Any]], budgets: Sequence[int]
) -> list[dict[str, Any]]:
    """Each GPB variant (a remedy or an ablation) against the GPB it varies (``GPB_SEARCHERS``:
    default GPB, or ``gpb_beta1`` for the ``_beta1`` variants), per worker count: the ratio of
    mean trials to the top 1 % with its bootstrap CI (below 1: the variant is faster), and both
    regrets at 50 trials. A remedy is kept only if this says it helps.

    The variants share GPB's seeds (and so its random initial cells): with as many seeds each,
    the interval resamples seeds in pairs (``paired``), else independently."""
    cap = max(budgets)
    regret_at = str(50 if 50 in budgets else max(budgets))
    rows = []
    for key, s in summary.items():
        against = GPB_SEARCHERS.get(s["searcher"], ({}, None))[1]
        base = f"{against}/w{s['workers']}"
        if against is None or base not in summary:
            continue
        a, b = (_trials_to_top1pct(summary, k, cap) for k in (key, base))
        paired = s.get("seed_ids") is not None and s.get("seed_ids") == summary[base].get(
            "seed_ids"
        )
        value, low, high = ratio_ci(a, b, paired=paired)
        rows.append(
            {
                "variant": key,
                "against": base,
                "seeds": [len(a), len(b)],
                "paired": paired,
                "trials_to_top1pct_ratio": value,
                "ci95": [low, high],
                f"regret@{regret_at}": [s["regret"][regret_at]["mean"],
                                        summary[base]["regret"][regret_at]["mean"]],
            }
        )  # fmt: skip
    return rows


def _ratio_goal(name: str, bound: float, a: Sequence[float], b: Sequence[float]) -> dict:
    """mean(a) / mean(b) against ``<= bound``, with its bootstrap CI."""
    value, low, high = ratio_ci(a, b)
    return {
        "goal": name,
        "target": f"<= {bound:g}",
        "value": value,
        "ci95": [low, high],
        "met": value <= bound,
    }


# ---------------------------------------------------------------------- output
def plot(payload: Mapping[str, Any], path: Path | None = None) -> Any:
    """Best-so-far simple regret against trials, mean and 95 % band, a panel per worker count.

    Args:
        payload: the study's payload (or its JSON, read back).
        path: where to save the figure (None: return it unsaved, e.g. for a notebook).

    Returns:
        The matplotlib figure, or None when no run succeeded.
    """
    from matplotlib.figure import Figure  # no pyplot: no backend switched, none needed

    ok = [r for r in payload["runs"] if "error" not in r]
    workers = sorted({r["workers"] for r in ok})
    if not workers:
        return None
    optimum, name_ = payload["optimum"], payload["table"]
    fig = Figure(figsize=(6 * len(workers), 4.2))
    axes = fig.subplots(1, len(workers), squeeze=False)
    for ax, w in zip(axes[0], workers):
        for name in SEARCHERS:
            group = [r for r in ok if r["searcher"] == name and r["workers"] == w]
            if not group:
                continue
            n = min(len(r["trials"]) for r in group)
            curves = np.array([best_so_far(r["true_means"])[:n] for r in group])  # (seeds, n)
            regret = optimum - curves
            regret[~np.isfinite(regret)] = np.nan
            mean = np.nanmean(regret, axis=0)
            bands = np.array(
                [
                    bootstrap_ci(
                        regret[:, i][~np.isnan(regret[:, i])]
                        if np.isfinite(regret[:, i]).any()
                        else [np.nan]
                    )[1:]
                    for i in range(n)
                ]
            )
            x = np.arange(1, n + 1)
            ax.plot(x, mean, label=name)
            ax.fill_between(x, bands[:, 0], bands[:, 1], alpha=0.2)
        ax.set_title(f"{name_}: {w} worker{'s' if w > 1 else ''}")
        ax.set_xlabel("finished trials")
        ax.set_ylabel("simple regret (optimum - best true mean)")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _write(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=True) + "\n")
    os.replace(tmp, path)


def table_digest(bench: Benchmark) -> str:
    """SHA-256 (16 hex digits) of the table's cells and per-seed values: a resumed study must
    read the very same table (a re-export with new rows changes it, the export time does not)."""
    h = hashlib.sha256()
    for cell in sorted(bench.cells(), key=lambda c: c.hash()):
        h.update(f"{cell.hash()}:{','.join(repr(v) for v in bench.values(cell))};".encode())
    return h.hexdigest()[:16]


def _key(run: Mapping[str, Any]) -> tuple[str, int, int]:
    return (str(run["searcher"]), int(run["seed"]), int(run["workers"]))


def _prior_runs(
    out: Path, header: Mapping[str, Any], plan: Sequence[tuple[str, int, int]]
) -> list[dict[str, Any]]:
    """The finished runs of an earlier, interrupted study at ``out`` that this one keeps.

    Raises:
        ValueError: when ``out`` holds a study of another table, largest budget or time
            scale, or finished runs outside this study's plan (they would be lost).
    """
    try:
        prior = json.loads(out.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{out}: not a study's JSON ({err}); pass --fresh to overwrite it"
        ) from None
    for key in ("table", "table_digest", "time_scale"):
        if prior.get(key) != header[key]:
            raise ValueError(
                f"{out}: holds a study with another {key} ({prior.get(key)!r}, this one "
                f"{header[key]!r}); pass --fresh to start over, or --out elsewhere"
            )
    if max(prior.get("budgets") or [0]) != max(header["budgets"]):
        raise ValueError(
            f"{out}: holds runs to {max(prior.get('budgets') or [0])} trials, this study runs "
            f"to {max(header['budgets'])}; pass --fresh to start over, or --out elsewhere"
        )
    runs = [r for r in prior.get("runs", []) if "error" not in r]  # a raised run runs again
    held = prior.get("configs", {})
    for name in sorted({r["searcher"] for r in runs} & set(header["configs"])):
        if held.get(name) != header["configs"][name]:
            was = held.get(name)
            moved = (
                "records no configuration for them"
                if was is None
                else "made them with "
                + ", ".join(
                    f"{k}={was.get(k)!r}"
                    for k, v in header["configs"][name].items()
                    if was.get(k) != v
                )
            )
            raise ValueError(
                f"{out}: its {name} runs are not this study's {name} (the study {moved}); "
                "pass --fresh to start over, or --out elsewhere"
            )
    outside = [r for r in runs if _key(r) not in set(plan)]
    if outside:
        name, seed, w = _key(outside[0])
        raise ValueError(
            f"{out}: holds {len(outside)} finished runs outside this study (e.g. {name} "
            f"workers={w} seed={seed}); widen --searchers/--seeds/--workers, or pass --fresh"
        )
    return runs


_WORKER_BENCH: Benchmark | None = None


def _init_job(bench: Benchmark, parent: int) -> None:
    global _WORKER_BENCH
    _die_with(parent)
    _WORKER_BENCH = bench


def _die_with(parent: int) -> None:
    """End this job process when the study's process ``parent`` dies, however it dies (a
    killed study leaves no job process running on; Linux ``PR_SET_PDEATHSIG``, elsewhere a
    no-op)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the call
        os._exit(1)


def _run_job(name: str, seed: int, workers: int, budget: int, time_scale: float) -> dict:
    """One run in a job process (``study(jobs > 1)``); errors come back as the run's record."""
    assert _WORKER_BENCH is not None
    with tempfile.TemporaryDirectory(dir=_shm()) as tmp:
        return _run_or_error(_WORKER_BENCH, name, seed, workers, budget, Path(tmp), time_scale)


def _shm() -> str | None:
    return "/dev/shm" if Path("/dev/shm").is_dir() else None


def _run_or_error(
    bench: Benchmark, name: str, seed: int, w: int, budget: int, tmp: Path, time_scale: float
) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        run = run_one(bench, name, seed, w, budget, tmp, time_scale)
    except Exception:  # a study reports a broken searcher and goes on
        run = {"searcher": name, "seed": seed, "workers": w, "error": traceback.format_exc()}
    run["run_s"] = round(time.perf_counter() - start, 2)
    return run


def study(
    bench: Benchmark,
    *,
    searchers: Sequence[str] = DEFAULT_SEARCHERS,
    seeds: int = 20,
    first_seed: int = 0,
    workers: Sequence[int] = (1, 8),
    budgets: Sequence[int] = BUDGETS,
    out: Path | None = None,
    time_scale: float = 1.0,
    progress: bool = True,
    resume: bool = True,
    jobs: int = 1,
) -> dict[str, Any]:
    """Run the study (module docstring); write ``out`` (JSON) and its plot after every run.

    Args:
        bench: the table.
        searchers: names from ``SEARCHERS``.
        seeds: seeds ``first_seed`` .. ``first_seed + seeds - 1`` of every searcher.
        first_seed: the first seed (e.g. fresh seeds to confirm a choice made on seeds 0-19).
        workers: simulated worker counts.
        budgets: the budgets reported; every run goes to the largest.
        out: the JSON path (the plot goes next to it as ``.png``); None writes nothing.
        time_scale: ``SimulatedDispatcher``'s factor on the recorded trial times.
        progress: print a line per run to stderr.
        resume: keep the finished runs an interrupted study left at ``out`` (same table, same
            largest budget and time scale) and run only the others; False starts over.
        jobs: runs at a time, each in its own process (one thread each); the searcher seconds
            of concurrent runs share the machine's cores.

    Returns:
        The payload written to ``out``.

    Raises:
        ValueError: for an unknown searcher, ``jobs < 1``, or a study at ``out`` that this one
            cannot resume (``_prior_runs``).
    """
    unknown = [s for s in searchers if s not in SEARCHERS]
    if unknown:
        raise ValueError(f"unknown searcher(s) {unknown}; choose from {list(SEARCHERS)}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if first_seed < 0:
        raise ValueError(f"first seed must be >= 0, got {first_seed}")
    budgets = sorted(int(b) for b in budgets)
    unavailable = {p: peer_unavailable(p) for p in PEERS if p in searchers}
    unavailable = {p: why for p, why in unavailable.items() if why is not None}
    priors: dict[str, Any] = {}
    oneshot = [s for s in searchers if GPB_SEARCHERS.get(s, ({}, None))[0].get("prior_mean")]
    if oneshot:
        try:
            prior = _oneshot_prior(bench)
            priors.update({name: prior for name in oneshot})
        except ValueError as err:
            unavailable.update({name: str(err) for name in oneshot})
    for name, why in unavailable.items():
        print(f"[study] {name} cannot run here: {why}", file=sys.stderr, flush=True)
    payload: dict[str, Any] = {
        "table": bench.name,
        "table_complete": bench.complete,
        "table_digest": table_digest(bench),
        "cells": len(bench),
        "space": {
            "name": bench.space.name,
            "num_ops": bench.space.num_ops,
            "vectors": bench.space.size(),
        },
        "optimum": bench.optimum(),
        "top1pct_cells": len(bench.top(0.01)),
        "synthetic": bench.manifest.get("synthetic"),
        "seeds": seeds,
        "first_seed": first_seed,
        "workers": list(workers),
        "budgets": budgets,
        "time_scale": time_scale,
        "versions": peer_versions(),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "jobs": jobs,
        },
        "unavailable": unavailable,
        "priors": priors,
        "configs": {name: gpb_config(name) for name in searchers if name in GPB_SEARCHERS},
        "runs": [],
    }
    plan = [
        (name, seed, w)
        for w in workers
        for name in searchers
        if name not in unavailable
        for seed in range(first_seed, first_seed + seeds)
    ]
    order = {key: i for i, key in enumerate(plan)}
    if out is not None and resume and out.exists():
        payload["runs"] = _prior_runs(out, payload, plan)
        if payload["runs"] and progress:
            print(f"[study] resuming {out}: {len(payload['runs'])} of {len(plan)} runs kept",
                  file=sys.stderr, flush=True)  # fmt: skip
    done = {_key(r) for r in payload["runs"]}
    # seed-major: an interrupted study holds the same seeds of every searcher and worker count,
    # so its partial summary compares like with like
    todo = sorted((key for key in plan if key not in done), key=lambda k: (k[1], order[k]))

    def record(run: dict[str, Any]) -> None:
        payload["runs"].append(run)
        payload["runs"].sort(key=lambda r: order[_key(r)])
        if progress:
            status = "error" if "error" in run else f"{run['searcher_s']:.1f} s searcher"
            print(f"[study] {run['searcher']} w={run['workers']} seed={run['seed']}: {status}, "
                  f"{run['run_s']:.1f} s", file=sys.stderr, flush=True)  # fmt: skip
        payload["summary"] = summarise(bench, payload["runs"], budgets)
        payload["goals"] = goals(payload["summary"], budgets)
        payload["variants"] = variants(payload["summary"], budgets)
        if out is not None:
            _write(out, payload)

    if jobs == 1:
        with tempfile.TemporaryDirectory(dir=_shm()) as tmp:
            for name, seed, w in todo:
                record(_run_or_error(bench, name, seed, w, max(budgets), Path(tmp), time_scale))
    elif todo:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")  # no fork of a process holding torch
        with ProcessPoolExecutor(jobs, context, _init_job, (bench, os.getpid())) as pool:
            futures = [pool.submit(_run_job, n, s, w, max(budgets), time_scale)
                       for n, s, w in todo]  # fmt: skip
            for future in as_completed(futures):
                record(future.result())
    payload["summary"] = summarise(bench, payload["runs"], budgets)
    payload["goals"] = goals(payload["summary"], budgets)
    payload["variants"] = variants(payload["summary"], budgets)
    if out is not None:
        _write(out, payload)
        plot(payload, out.with_suffix(".png"))
    return payload


def format_summary(payload: Mapping[str, Any]) -> str:
    """A short text table of the summary and the goals."""
    budgets = payload["budgets"]
    head = f"{'searcher':22s} {'top1% (reached)':>22s} {'best (reached)':>22s} "
    head += " ".join(f"{'regret@' + str(b):>10s}" for b in budgets) + f" {'s/suggest':>10s}"
    lines = [head, "-" * len(head)]
    for key, s in payload.get("summary", {}).items():
        cells = [f"{key:22s}"]
        for x in (s["trials_to_top1pct"], s["trials_to_best"]):
            low, high = x["ci95"]
            cells.append(f"{x['mean']:7.1f} [{low:.0f},{high:.0f}] ({x['reached']}/{x['seeds']})")
        cells += [f"{s['regret'][str(x)]['mean']:10.4f}" for x in budgets]
        cells.append(f"{s['searcher_s_per_suggest']['mean']:10.3f}")
        lines.append(" ".join(cells))
    for g in payload.get("goals", []):
        lines.append(
            f"goal {g['goal']}: {g['value']:.3g} (target {g['target']}) "
            f"{'met' if g['met'] else 'NOT met'}"
        )
    for v in payload.get("variants", []):
        low, high = v["ci95"]
        lines.append(
            f"variant {v['variant']} / {v.get('against', 'gpb')} trials to top 1 %: "
            f"{v['trials_to_top1pct_ratio']:.3g} [{low:.3g}, {high:.3g}]"
        )
    for name, why in payload.get("unavailable", {}).items():
        lines.append(f"{name}: cannot run here: {why}")
    for run in payload.get("runs", []):
        if "error" in run:
            last = run["error"].strip().splitlines()[-1]
            lines.append(f"{run['searcher']} w={run['workers']} seed={run['seed']} raised: {last}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.searcher_study",
        description="GPB against random, evolution, Optuna and BoTorch on a tabular benchmark.",
    )
    parser.add_argument(
        "--table",
        default=None,
        help="table name/folder, 'synthetic' or 'synthetic-small' "
        "(default: attnas.benchmark's default table)",
    )
    parser.add_argument("--allow-partial", action="store_true", help="study an incomplete table")
    parser.add_argument(
        "--searchers",
        nargs="+",
        default=None,
        choices=list(SEARCHERS),
        help="(default: the default searchers, and every searcher the JSON at --out holds)",
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds per searcher (20)")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="the first seed (0); seeds run from it on"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--budgets", type=int, nargs="+", default=None, help="(25 50 100 200)")
    parser.add_argument("--quick", action="store_true", help="3 seeds, 30 trials")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, one process each")
    parser.add_argument(
        "--fresh", action="store_true", help="start over instead of resuming the JSON at --out"
    )
    return parser


def default_searchers(out: Path, resume: bool = True) -> list[str]:
    """The searchers a study runs when none are named: the defaults, and those the study being
    resumed at ``out`` holds runs of (an ablation run once by name is continued, not refused)."""
    names = list(DEFAULT_SEARCHERS)
    if resume and out.is_file():
        try:
            held = {r.get("searcher") for r in json.loads(out.read_text()).get("runs", [])}
        except (json.JSONDecodeError, AttributeError):
            held = set()  # ``study`` names what is wrong with the file
        names += [s for s in SEARCHERS if s in held and s not in names]
    return names


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study from the command line; 0 on success (a missed goal is a result)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        bench = open_table(args.table or "distant_match_k2", args.allow_partial)
    except (ValueError, FileNotFoundError) as err:
        print(f"searcher_study: {err}", file=sys.stderr)
        return 2
    seeds = args.seeds or (QUICK["seeds"] if args.quick else 20)
    budgets = args.budgets or (QUICK["budgets"] if args.quick else BUDGETS)
    out = (
        args.out
        or RESULTS_DIR / f"searcher_study_{bench.name}{'_quick' if args.quick else ''}.json"
    )
    searchers = args.searchers or default_searchers(out, resume=not args.fresh)
    try:
        payload = study(
            bench,
            searchers=searchers,
            seeds=seeds,
            first_seed=args.first_seed,
            workers=args.workers,
            budgets=budgets,
            out=out,
            time_scale=args.time_scale,
            resume=not args.fresh,
            jobs=args.jobs,
        )
    except ValueError as err:
        print(f"searcher_study: {err}", file=sys.stderr)
        return 2
    print(format_summary(payload))
    print(f"results: {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
