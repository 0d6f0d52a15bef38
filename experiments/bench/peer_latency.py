"""Benchmark: GPB's ``suggest(1)`` latency against Optuna GPSampler's, in one run.

The issue's goals: at 50, 200 and 400 observations GPB's ``suggest(1)`` takes at most 2x
GPSampler's next suggestion (same run, same machine), and GPB at 400 observations at most 2x
GPB at 50. Both searchers see the same distinct random cells of the paper's K = 3 space
(290,304 cells) with the same synthetic values (``gp_latency._Objective``: additive seeded
effects of the cell vector plus noise), one categorical parameter per factor of the cell vector.

How each is timed, as a user runs it:

- GPB (default settings): observe n - 1 cells, one warm-up ``suggest(1)`` (its first pass over
  the whole space is from scratch), observe its cell, then time ``suggest(1)`` at n
  observations; every timed call follows a new observation. GPB refits its hyper-parameters
  on a schedule (``refit_growth``: at 50, 55, 60, ... 343, 377, 414 finished trials), so a
  timed call at a schedule point includes a full refit and the others only condition on the
  new trial; ``details["gpb_refit"]`` says which timed calls refitted and ``gpb_refit_s`` /
  ``gpb_plain_s`` split the times accordingly (the ratio is still the median of all rounds).
- GPSampler: one long-lived in-memory study (Optuna's normal use: the sampler keeps its kernel
  parameters between calls as the next fit's starting values), n - 1 trials added, a warm-up
  ``ask`` + ``tell``, then time ``ask`` at n trials (its refit included), ``tell`` untimed.
- ``details`` also gives the attnas adapter's GPSampler (``optuna_gp``: a fresh study per call,
  so no cached kernel parameters) at the same n, since that is what the searcher study times.

The two are timed in alternating rounds (GPB, GPSampler | GPSampler, GPB ...), and a ratio is
the median of the per-round ratios (``experiments.bench`` module docstring). Where a goal is
missed, ``details["limit"]`` lists the functions with the most own time in one more GPB call.
"""

from __future__ import annotations

import statistics
import warnings
from typing import Any

from attnas.controller import GPBandit, build_searcher, peer_unavailable
from attnas.space import SearchSpace, load_space
from experiments.bench import BenchConfig, BenchResult, timed
from experiments.bench.gp_latency import _distinct_cells, _Objective, _profile_suggest

NAME = "peer_latency"
GOAL_RATIO = 2.0
GOAL_GROWTH = 2.0


class _OptunaGP:
    """GPSampler on one long-lived study over the cell vector's factors."""

    def __init__(self, space: SearchSpace, seed: int) -> None:
        import optuna
        from optuna.distributions import CategoricalDistribution

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = space
        self.dists = {
            f"x{i}": CategoricalDistribution(list(range(c)))
            for i, c in enumerate(space.cardinalities())
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.GPSampler(seed=seed)
        self.study = optuna.create_study(direction="maximize", sampler=sampler)

    def add(self, cells: list, objective: _Objective) -> None:
        from optuna.trial import create_trial

        self.study.add_trials(
            [
                create_trial(params=self._params(c), distributions=self.dists, value=objective(c))
                for c in cells
            ]
        )

    def _params(self, cell) -> dict[str, int]:
        return {f"x{i}": v for i, v in enumerate(self.space.encode(cell))}

    def ask(self) -> Any:
        return self.study.ask(self.dists)

    def tell(self, trial: Any, objective: _Objective) -> None:
        vector = [trial.params[f"x{i}"] for i in range(len(self.dists))]
        self.study.tell(trial, objective(self.space.decode(vector)))


def _measure(cfg: BenchConfig, space: SearchSpace, n: int, rounds: int, **gpb_kwargs: Any) -> dict:
    cells = _distinct_cells(space, n - 1, cfg.seed)
    gpb_obj, opt_obj = _Objective(space, cfg.seed), _Objective(space, cfg.seed)
    gpb = GPBandit(space, seed=cfg.seed, **gpb_kwargs)
    for cell in cells:
        gpb.observe(cell, gpb_obj(cell))
    gp = _OptunaGP(space, cfg.seed)
    gp.add(cells, opt_obj)
    adapter = build_searcher("optuna_gp", space, seed=cfg.seed)
    for cell in cells:
        adapter.observe(cell, opt_obj(cell))
    out: dict[str, Any] = {}

    refits: list[bool] = []

    def gpb_step() -> float:
        version = gpb._fit_version
        seconds = timed(lambda: out.__setitem__("gpb", gpb.suggest(1)), cfg.device)
        refits.append(gpb._fit_version != version)
        gpb.observe(out["gpb"][0], gpb_obj(out["gpb"][0]))
        return seconds

    def gp_step() -> float:
        seconds = timed(lambda: out.__setitem__("gp", gp.ask()), cfg.device)
        gp.tell(out["gp"], opt_obj)
        return seconds

    def adapter_step() -> float:
        seconds = timed(lambda: out.__setitem__("ad", adapter.suggest(1)), cfg.device)
        adapter.observe(out["ad"][0], opt_obj(out["ad"][0]))
        return seconds

    first = {"gpb": gpb_step(), "optuna_gp": gp_step()}  # warm-up: n - 1 observations
    times: dict[str, list[float]] = {"gpb": [], "optuna_gp": [], "adapter": []}
    for r in range(rounds):
        order = (gpb_step, gp_step) if r % 2 == 0 else (gp_step, gpb_step)
        pair = {fn: fn() for fn in order}
        times["gpb"].append(pair[gpb_step])
        times["optuna_gp"].append(pair[gp_step])
    times["adapter"].append(adapter_step())
    return {"times": times, "first_call_s": first, "searcher": gpb, "refits": refits[1:]}


def run(cfg: BenchConfig) -> list[BenchResult]:
    """GPB / GPSampler ``suggest(1)`` at each n, and GPB's growth from the first n to the last."""
    reason = peer_unavailable("optuna_gp")
    if reason is not None:
        raise RuntimeError(f"peer_latency cannot run: {reason}")
    # tiny: the harness's own test (numbers mean nothing): a small space, just past
    # GPSampler's 10 random start-up trials
    paper = load_space("attention_nas")
    space = cfg.pick(paper.with_overrides(num_ops=2), paper, paper)
    n_list = cfg.pick((12, 14), (50, 200, 400), (50, 200, 400))
    rounds = cfg.rounds(2, 3)
    results, medians = [], {}
    for n in n_list:
        m = _measure(cfg, space, n, rounds)
        ratios = [a / b for a, b in zip(m["times"]["gpb"], m["times"]["optuna_gp"])]
        value = statistics.median(ratios)
        medians[n] = statistics.median(m["times"]["gpb"])
        details: dict[str, Any] = {
            "space": f"{space.name} (K={space.num_ops}, {space.size()} cells)",
            "observations": n,
            "gpb_s": [round(t, 4) for t in m["times"]["gpb"]],
            "optuna_gp_s": [round(t, 4) for t in m["times"]["optuna_gp"]],
            "optuna_gp_adapter_s": [round(t, 4) for t in m["times"]["adapter"]],
            "first_call_s": {k: round(v, 3) for k, v in m["first_call_s"].items()},
            "per_round_ratios": [round(r, 3) for r in ratios],
            "gpb_refit": m["refits"],
            "gpb_refit_s": [round(t, 4) for t, r in zip(m["times"]["gpb"], m["refits"]) if r],
            "gpb_plain_s": [round(t, 4) for t, r in zip(m["times"]["gpb"], m["refits"]) if not r],
        }
        met = value <= GOAL_RATIO
        if not met:
            details["limit"] = _profile_suggest(m["searcher"], 1)
        results.append(
            BenchResult(f"{NAME}/gpb_over_optuna_gp_n{n}", f"<= {GOAL_RATIO:g}x", round(value, 3),
                        "x", met, details)
        )  # fmt: skip
    lo, hi = n_list[0], n_list[-1]
    growth = medians[hi] / medians[lo]
    details = {"gpb_median_s": {str(k): round(v, 4) for k, v in medians.items()}}
    if growth > GOAL_GROWTH:
        details["limit"] = [
            f"GPB's median suggest(1) grows from {medians[lo]:.3f} s at {lo} observations to "
            f"{medians[hi]:.3f} s at {hi}; the n={hi} row's limit lists where the time goes"
        ]
    results.append(
        BenchResult(f"{NAME}/gpb_n{hi}_over_n{lo}", f"<= {GOAL_GROWTH:g}x", round(growth, 3), "x",
                    growth <= GOAL_GROWTH, details)
    )  # fmt: skip
    return results
