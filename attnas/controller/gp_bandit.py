"""GP-UCB over attention cells (AttentionNAS Sec. 4.1): a GP bandit with an ask/tell interface.

The performance of a cell is modelled as a sample from a Gaussian process over the cell's
encoding (``encoding.py``); each step picks the cell maximising the upper confidence bound
μ(x) + sqrt(β_t) σ(x) with the GP-UCB schedule β_t of Srinivas et al. (``beta.py``), scaled
by ``beta_scale`` (default 0.2).

Exploration (``beta_scale``, default 0.2, the 1/5 Srinivas et al. ran in their experiments). The
theorem's schedule is an upper bound made for any function in the kernel's space; on the
spaces used here, sqrt(β_t) is about 5-6.5 (1,728 vectors of the K=2 table, t = 5 to 200), and
the UCB is then nearly σ alone. On the complete ``distant_match_k2`` table (real training,
``experiments.searcher_study``, 20 seeds, seeds paired), β_t / 5 reached a top-1 % cell in
0.84 [0.52, 1.37] × the trials of the theorem's β_t with 1 worker and 0.63 [0.48, 0.82] × with
8 asynchronous workers (mean 28.9 and 28.1 trials against 34.6 and 44.8), with lower regret at
50 trials (1.86 / 2.14 against 2.57 / 3.19 points); hence the default. On 20 fresh seeds
(20-39) the theorem's β_t took 1.50 [0.98, 2.39] × and 1.20 [0.85, 1.57] × the trials of β_t / 5.

Model. A GPyTorch exact GP fitted through BoTorch (``fit_gpytorch_mll``: L-BFGS on the marginal
likelihood plus hyper-parameter priors), float64, outcomes standardised (``Standardize``):

- ``kernel="categorical"`` (default): ``SingleTaskGP`` with ``ScaleKernel(CategoricalKernel)``
  (the kernel BoTorch's ``MixedSingleTaskGP`` uses for all-categorical inputs, computed by the
  faster but equal ``_HammingKernel``, plus priors) on the integer codes of (type, dim,
  activation) per op and the connectivity bits. Cell choices are unordered categories, so a
  kernel that only asks "same choice or not" (exp of an ARD-weighted Hamming distance) fits them
  without inventing an order or a geometry; one lengthscale per factor lets the GP learn which
  choices matter.
- ``kernel="onehot"``: ``SingleTaskGP`` with BoTorch's default-style Matern-5/2 ARD kernel
  (dimension-scaled lengthscale prior) on one-hot blocks plus the connectivity bits: also a
  function of which categories match, with one lengthscale per category value.

On the synthetic objective of the tests (additive per-factor scores plus an interaction over
the K=3 space, batches of 8, seeds 0-3) both find a top-0.1% cell in 17-34 evaluations (random
search: 997 expected) and the unique optimum of 290,304 cells in 49-70. The categorical kernel
needed fewer (means 22 and 51.5 against 31.5 and 64 for one-hot Matern) and fits faster
(14 inputs instead of 32), hence the default.

Refit schedule (``refit_growth``, default 0.1). The hyper-parameters (lengthscales,
outputscale, noise, constant mean) are fitted, from the same initial values each time, with
``fit_maxiter`` L-BFGS steps, on the first a finished trials, where a is the largest point
<= n (n finished trials) of the schedule a_0 = 1, a_{i+1} = max(a_i + 1, floor(a_i · 1.1)):
every trial up to 20, then roughly every 10 % more trials (at 50, 55, 60, ..., 343, 377, ...).
Between refits the GP is still conditioned on every finished trial, with the outcomes
standardised afresh (``_condition``); only the hyper-parameters wait. The fit dominated
``suggest`` (84 % of it at 50 observations of the K=3 space, 54 % at 400) while the data a
refit adds move the maximum-likelihood hyper-parameters little; with ``refit_growth=0`` every
new finished trial triggers a refit (the behaviour before the schedule).

Warm starts (``warm_maxiter``, default 20). With the schedule on, the hyper-parameters are fitted
at every point of the schedule in turn (points a >= ``n_init``; a ``suggest`` that finds several
points passed fits each of them, oldest first), each fit starting from the previous point's
hyper-parameters with ``warm_maxiter`` L-BFGS steps. Where the schedule is still dense (every
count, up to 19 finished trials at 0.1) every fit is cold, as without warm starts. A point at
least twice the last cold point is fitted cold as well (from the initial values, with the
restarts), and the fit with the higher marginal likelihood is kept, so a chain of warm starts
cannot drift into a poor optimum for long. Measured on the K=3 space (synthetic values, one
thread): a warm fit of 20 steps reached the cold fit's marginal log likelihood per point to
within 0.035 at 50 points, 0.0005 at 200 and 0.0007 at 414, in 0.33 s, 0.72 s and 1.27 s
against 2.6 s, 2.9 s and 8.6 s cold.
``warm_maxiter=0`` fits every refit cold (the behaviour before warm starts).

Acquisition (the fast path; DESIGN.md measured BoTorch's per-point posterior at 8-38 s for the
K=3 space). Only marginal means and variances are needed, so for all candidates at once, in
chunks: the cross-covariance K_cA (one matrix product of 0/1 "match" matrices for the
categorical kernel, squared distances for Matern), then mean = c + K_cT α and
var = s - ||L_A^{-1} K_Ac||² with the Cholesky factor L_A of the conditioning set computed once.
The candidate set is the whole space when it has at most ``exhaustive_limit`` cells, else a
random pool of ``pool_size`` cells refined by local search (all one-coordinate mutations of the
current top-UCB cells, repeated while they improve).

Scoring the whole space (exact, only cheaper). The categorical kernel is a product over
factors, hence over the coordinates of the cell vector, and the space is their full grid; so
K(space, C) is, per conditioning cell, the outer product of a table over the leading
coordinates and one over the rest (``CellEncoder.grid_split``: 576 × 504 for K=3), and
K(space, C) @ v is one small matrix product per column of v, with no kernel evaluated cell by
cell (``_space_times``). The posterior mean costs that once. The variances of the whole space
are cached with the conditioning cells they were computed for; while the hyper-parameters stay
(the refit schedule), the next call conditions only on the cells added since (new trials, new
pending cells): an exact rank-p downdate, O(size · n) per added cell instead of the full
O(size · n²) pass (``_space_var``, ``_downdate``), which runs only after a refit or when a
pending cell was released.

Batches and pending trials (GP-BUCB, Desautels et al. 2014). Pending cells and the cells already
chosen for the batch are conditioned on with a hallucinated observation equal to their posterior
mean: the mean is unchanged, so only the variance shrinks and no refit is needed. The first pass
conditions on observed + pending cells; the batch is then chosen greedily on a shortlist of the
top cells by UCB, whose joint covariance is updated by a rank-1 downdate per chosen cell. A
chosen cell is exact as long as its UCB beats the best UCB outside the shortlist (variances only
shrink); otherwise the pass is redone over all candidates with the chosen cells conditioned on.
The round t of β_t counts observed, pending and already-chosen cells (GP-BUCB's global round).

Failed trials: with ``failure_rule="impute_min"`` (default) a failed cell enters the GP with the
lowest value among completed trials, so the model learns to avoid regions that crash or run out
of memory; while no trial has completed, failed ones are left out. ``"exclude"`` leaves them out
of the GP altogether. Either way they are never proposed again.

Fit failures, the way BoTorch's ``fit_gpytorch_mll`` fallback treats them: the warnings raised
while fitting are recorded, not silenced; each failed attempt (``ModelFittingError``) is logged
with its cause; when every attempt fails the model keeps the priors' initial hyper-parameters,
which is logged as a warning and readable by the caller as ``fit_report.prior_hyperparameters``
(``fit_report`` describes the last fit: attempts, failures, warnings).

Determinism and resume: training data are sorted by cell vector before fitting, cold fits start
from the same initial values each time with restarts drawn from a generator seeded by (seed,
number of training points), on the first a finished trials (the schedule above), and warm fits
walk every point of the schedule in order whenever ``suggest`` is called, so the model is a
function of the finished trials in the order they finished and the seed, not of when
``suggest`` was called (a restored searcher walks the same points at its first ``suggest``).
``restore`` replays finished trials in the order of their ``finished_at`` (the trial store
records it), so a searcher restored from the store proposes what the original would have.

A prior mean from a cheaper source (``prior_mean``, e.g. a trained supergraph's one-shot score
of each cell, ``attnas.supergraph.oneshot``): a score per cell (by ``CellSpec.hash``),
standardised over the scores given (a cell without one gets their mean). The GP's mean becomes
c + w · s(x) (``_PriorMean``), w fitted with the other hyper-parameters by the marginal
likelihood, so a prior that does not predict the outcomes is weighted down to about 0 and the
model is the constant-mean GP again. The kernel sees only the cell's encoding; the score is one
more input column that only the mean reads.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from botorch.exceptions import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.kernels.categorical import CategoricalKernel
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.means import Mean
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior, LogNormalPrior

from attnas.controller.base import SearcherBase, register_searcher
from attnas.controller.beta import BetaSchedule
from attnas.controller.encoding import CellEncoder
from attnas.space import CellSpec, SearchSpace

FAILURE_RULES = ("impute_min", "exclude")
_DTYPE = torch.float64

logger = logging.getLogger("attnas.controller")


@dataclass(frozen=True)
class GPFitReport:
    """What the last hyper-parameter fit of a ``GPBandit`` did.

    Attributes:
        num_points: Training cells of the fit.
        attempts: Fits tried (the first from the initial values, then the restarts).
        failures: ``"attempt i: <error>"`` for each attempt that failed.
        warnings: ``"<category>: <message>"`` of every warning raised while fitting.
        prior_hyperparameters: Every attempt failed, so the model uses the kernel's initial
            (prior) hyper-parameters rather than fitted ones.
    """

    num_points: int
    attempts: int
    failures: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    prior_hyperparameters: bool = False


@dataclass
class _FittedGP:
    """What the fast path needs from a fitted model, in standardised units."""

    model: Any
    kind: str
    outputscale: float
    lengthscale: torch.Tensor  # (F,)
    noise: float
    constant: float
    y_mean: float
    y_std: float
    train_kmat: torch.Tensor  # (n, M): match matrix (categorical) or features (onehot)
    alpha: torch.Tensor  # (n,): (K_TT + σ²I)^{-1} (y - c - w s)
    prior_weight: float = 0.0  # w of the prior mean c + w s(x) (0 without ``prior_mean``)


@register_searcher("gpb")
class GPBandit(SearcherBase):
    """GP-UCB controller over a ``SearchSpace`` (see the module docstring).

    Args:
        space: the search space.
        seed: seeds every random choice (initial cells, pools, fit restarts).
        kernel: ``"categorical"`` or ``"onehot"`` (encoding + kernel, see module docstring).
        delta: δ of the GP-UCB β_t schedule.
        beta: a fixed β for every round instead of the schedule.
        beta_scale: multiplies the schedule's β_t (module docstring, "Exploration"; 1 is the
            theorem's schedule).
        n_init: completed trials needed before the GP is used; random cells until then.
        failure_rule: ``"impute_min"`` or ``"exclude"`` (see module docstring).
        exhaustive_limit: spaces up to this size are scored exhaustively.
        pool_size: random candidates per suggest for larger spaces.
        local_search_steps: rounds of one-coordinate mutation of the top cells (pool mode).
        fit_restarts: extra hyper-parameter fits from random initial lengthscales, made while
            the GP has at most ``restart_max_points`` training cells (small data sets are where
            the likelihood is multimodal; beyond, a restart would double the fit time).
        restart_max_points: see ``fit_restarts``.
        fit_maxiter: L-BFGS iterations per fit (the fit dominates ``suggest`` latency).
        refit_growth: hyper-parameters are refitted when the number of finished trials has
            grown by this fraction since the schedule's previous refit point (see the module
            docstring); 0 refits at every new finished trial.
        warm_maxiter: L-BFGS iterations of a refit started from the previous schedule point's
            hyper-parameters (module docstring, "Warm starts"); 0 fits every refit cold. Only
            with ``refit_growth`` > 0.
        chunk_size: candidates per batched posterior evaluation.
        shortlist: cells kept for the greedy batch (GP-BUCB) updates.
        prior_mean: a score per cell hash from a cheaper source (module docstring, "A prior
            mean"), or the path of a JSON file holding one (``prior_scores``); None: a
            constant mean.

    Attributes:
        fit_report: ``GPFitReport`` of the last hyper-parameter fit (None before the first).
    """

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        *,
        kernel: str = "categorical",
        delta: float = 0.1,
        beta: float | None = None,
        beta_scale: float = 0.2,
        n_init: int = 4,
        failure_rule: str = "impute_min",
        exhaustive_limit: int = 1_000_000,
        pool_size: int = 20_000,
        local_search_steps: int = 5,
        fit_restarts: int = 1,
        restart_max_points: int = 100,
        fit_maxiter: int = 100,
        refit_growth: float = 0.1,
        warm_maxiter: int = 20,
        chunk_size: int = 8192,
        shortlist: int = 1024,
        prior_mean: Mapping[str, float] | str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(space, seed)
        if failure_rule not in FAILURE_RULES:
            raise ValueError(
                f"unknown failure_rule {failure_rule!r}; choose one of {list(FAILURE_RULES)}"
            )
        if n_init < 1:
            raise ValueError(f"n_init must be >= 1, got {n_init}")
        if not (math.isfinite(refit_growth) and refit_growth >= 0.0):
            raise ValueError(f"refit_growth must be a finite number >= 0, got {refit_growth}")
        self.encoder = CellEncoder(space, kernel)
        self.kernel = kernel
        self.beta = BetaSchedule(space.size(), delta=delta, scale=beta_scale, fixed=beta)
        self.n_init = int(n_init)
        self.failure_rule = failure_rule
        self.exhaustive = space.size() <= exhaustive_limit
        self.pool_size = int(pool_size)
        self.local_search_steps = int(local_search_steps)
        self.fit_restarts = int(fit_restarts)
        self.restart_max_points = int(restart_max_points)
        self.fit_maxiter = int(fit_maxiter)
        self.refit_growth = float(refit_growth)
        if warm_maxiter < 0:
            raise ValueError(f"warm_maxiter must be >= 0, got {warm_maxiter}")
        self.warm_maxiter = int(warm_maxiter)
        self.chunk_size = int(chunk_size)
        self.shortlist = int(shortlist)
        self._fit_key: tuple | None = None  # data of the last hyper-parameter fit
        self._fit_model: Any = None  # the model of that fit (its hyper-parameters)
        self._fit_version = 0  # counts hyper-parameter fits (keys the variance cache)
        self._fit_point = 0  # schedule point of the last fit (warm starts)
        self._cold_point = 0  # schedule point of the last cold fit (warm starts)
        self._data_key: tuple | None = None
        self._gp: _FittedGP | None = None
        self._var_cache: tuple[int, np.ndarray, torch.Tensor] | None = None
        self.fit_report: GPFitReport | None = None
        if prior_mean is not None and not isinstance(prior_mean, Mapping):
            prior_mean = prior_scores(prior_mean)
        self._prior: dict[str, float] | None = _standardised(prior_mean)
        self._prior_cache: dict[tuple[int, ...], float] = {}
        self._prior_space: torch.Tensor | None = None  # the whole space's, ``all_vectors`` order

    # ------------------------------------------------------------------ resume
    def restore(self, records: Iterable[Any], metric: str = "top1") -> None:
        """``SearcherBase.restore``, with finished trials replayed in the order they finished.

        The hyper-parameters are fitted on the first finished trials (the refit schedule, see
        the module docstring), so the order matters: when every finished record has a
        ``finished_at`` (the trial store's records do), finished trials are observed in that
        order (ties in the order given), otherwise in the order given.
        """
        records = list(records)
        stamps = [_finished_at(r) for r in records]
        finished = [s for r, s in zip(records, stamps) if _record_state(r) in _FINISHED]
        if finished and all(s is not None for s in finished):
            order = sorted(
                range(len(records)),
                key=lambda i: (stamps[i] is None, stamps[i] if stamps[i] is not None else 0.0, i),
            )
            records = [records[i] for i in order]
        super().restore(records, metric)

    # ------------------------------------------------------------------ training data and fit
    def refit_point(self, n: int) -> int:
        """The number of finished trials the hyper-parameters are fitted on, with n finished.

        The schedule's points are a_0 = 1, a_{i+1} = max(a_i + 1, floor(a_i (1 + refit_growth)))
        (every count while the data are few, then about every ``refit_growth`` · n trials);
        this returns the largest point <= n (n itself when ``refit_growth`` is 0).
        """
        if self.refit_growth <= 0.0 or n <= 1:
            return n
        return self.schedule_points(0, n)[-1]

    def schedule_points(self, after: int, upto: int) -> list[int]:
        """The refit schedule's points p with ``after < p <= upto`` (``refit_point``)."""
        points, point = [], 1
        while point <= upto:
            if point > after:
                points.append(point)
            point = max(point + 1, math.floor(point * (1.0 + self.refit_growth)))
        return points

    def training_data(self, first: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Vectors and objective values the GP is fitted on (failure rule applied, sorted).

        Args:
            first: only the first ``first`` finished trials (in observation order); all when
                None.

        Shape:
            (n, D) int64 vectors, (n,) float64 values.
        """
        observed = list(self._observed.values())[:first]
        done = [o for o in observed if not o.outcome.failed]
        rows: list[tuple[tuple[int, ...], float]] = [(o.vector, o.outcome.value) for o in done]
        if self.failure_rule == "impute_min" and done:
            low = min(v for _, v in rows)
            rows += [(o.vector, low) for o in observed if o.outcome.failed]
        rows.sort()
        vectors = np.array([r[0] for r in rows], dtype=np.int64).reshape(
            -1, len(self.encoder.cardinalities)
        )
        values = np.array([r[1] for r in rows], dtype=np.float64)
        return vectors, values

    def _fitted(self) -> _FittedGP:
        """The GP on all training data, with the hyper-parameters of the schedule's last fit."""
        vectors, values = self.training_data()
        if self.warm_maxiter > 0 and self.refit_growth > 0.0:
            self._walk_schedule(vectors, values)
        else:
            fit_vectors, fit_values = self.training_data(self.refit_point(len(self._observed)))
            if len(fit_values) == 0:  # no completed trial among the first ones: fit on all
                fit_vectors, fit_values = vectors, values
            fit_key = (fit_vectors.tobytes(), fit_values.tobytes())
            if self._fit_model is None or fit_key != self._fit_key:
                self._fit_model = self._fit(fit_vectors, fit_values)
                self._fit_key = fit_key
                self._fit_version += 1
                self._gp = None
        data_key = (vectors.tobytes(), values.tobytes())
        if self._gp is None or data_key != self._data_key:
            self._gp = self._summarise(self._condition(self._fit_model, vectors, values), vectors)
            self._data_key = data_key
        return self._gp

    def _walk_schedule(self, vectors: np.ndarray, values: np.ndarray) -> None:
        """Fit at every schedule point since the last fit, each warm-started from the one
        before (module docstring, "Warm starts")."""
        target = self.refit_point(len(self._observed))
        if self._fit_key is not None and self._fit_point <= target:
            # the data of the last point must be what it was (they are, unless trials left)
            last_v, last_y = self.training_data(self._fit_point)
            if (last_v.tobytes(), last_y.tobytes()) != self._fit_key:
                self._fit_model, self._fit_key, self._fit_point, self._cold_point = (
                    None, None, 0, 0,
                )  # fmt: skip
        elif self._fit_point > target:  # fewer finished trials than before: start again
            self._fit_model, self._fit_key, self._fit_point, self._cold_point = None, None, 0, 0
        points = [p for p in self.schedule_points(self._fit_point, target) if p >= self.n_init]
        # where the schedule is dense (every count) each fit is cold on all the data, as without
        # warm starts, so of a run of such points only the last needs fitting
        points = [
            p
            for i, p in enumerate(points)
            if not (
                self._dense_point(p) and i + 1 < len(points) and self._dense_point(points[i + 1])
            )
        ]
        for point in points:
            fit_vectors, fit_values = self.training_data(point)
            if len(fit_values) == 0:  # every one of the first trials failed: nothing to fit
                continue
            dense = self._dense_point(point)
            cold = dense or self._fit_model is None or point >= 2 * self._cold_point
            start = None if dense else self._fit_model
            self._fit_model = self._fit(fit_vectors, fit_values, start=start, cold=cold)
            self._fit_key = (fit_vectors.tobytes(), fit_values.tobytes())
            self._fit_point = point
            if cold:
                self._cold_point = point
            self._fit_version += 1
            self._gp = None
        if self._fit_model is None:  # no completed trial among the scheduled ones: fit on all
            self._fit_model = self._fit(vectors, values)
            self._fit_key = None
            self._fit_version += 1
            self._gp = None

    def _dense_point(self, point: int) -> bool:
        """Whether the schedule's next point after ``point`` is ``point + 1``."""
        return math.floor(point * (1.0 + self.refit_growth)) <= point + 1

    def _condition(self, fitted: Any, vectors: np.ndarray, values: np.ndarray) -> Any:
        """A model of the same kind on ``vectors``/``values`` with ``fitted``'s hyper-parameters
        (its outcomes standardised afresh, as ``Standardize`` does for any new model)."""
        x = self._inputs(vectors)  # (n, F) or (n, F + 1)
        y = torch.as_tensor(values, dtype=_DTYPE).unsqueeze(-1)  # (n, 1)
        model = self._new_model(x, y)
        for name in ("covar_module", "likelihood", "mean_module"):
            getattr(model, name).load_state_dict(getattr(fitted, name).state_dict())
        model.eval()
        return model

    def _new_model(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        width = x.shape[-1] - (self._prior is not None)  # the prior's column: the mean's only
        dims = list(range(width)) if self._prior is not None else None
        if self.kernel == "categorical":
            covar = _categorical_covar(width, active_dims=dims)
        else:
            covar = get_covar_module_with_dim_scaled_prior(
                width, use_rbf_kernel=False, active_dims=dims
            )
        mean = _PriorMean() if self._prior is not None else None
        return SingleTaskGP(
            x, y, covar_module=covar, mean_module=mean, outcome_transform=Standardize(m=1)
        )

    def _inputs(self, vectors: np.ndarray) -> torch.Tensor:
        """The model's inputs: the encoder's features, and the prior score as a last column."""
        x = self.encoder.features(vectors)  # (n, F)
        if self._prior is None:
            return x
        return torch.cat([x, self._prior_of(vectors).unsqueeze(-1)], dim=-1)  # (n, F + 1)

    def _prior_of(self, vectors: np.ndarray) -> torch.Tensor:
        """The standardised prior score of each vector's cell (0 without a prior or a score).

        Shape:
            (n, D) -> (n,).
        """
        if self._prior is None:
            return torch.zeros(len(vectors), dtype=_DTYPE)
        out = []
        for v in map(tuple, vectors.tolist()):
            if v not in self._prior_cache:
                self._prior_cache[v] = self._prior.get(self.space.decode(list(v)).hash(), 0.0)
            out.append(self._prior_cache[v])
        return torch.tensor(out, dtype=_DTYPE)

    def _fit(
        self, vectors: np.ndarray, values: np.ndarray, start: Any = None, cold: bool = True
    ) -> Any:
        """Fit the hyper-parameters on ``vectors``/``values``; the model with the best marginal
        likelihood among the attempts.

        Attempts: from ``start``'s hyper-parameters (a warm start, ``warm_maxiter`` steps) when
        given; with ``cold``, from the initial values and then the restarts (``fit_maxiter``
        steps each).
        """
        x = self._inputs(vectors)  # (n, F) or (n, F + 1)
        y = torch.as_tensor(values, dtype=_DTYPE).unsqueeze(-1)  # (n, 1)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + len(values))
        best, best_mll = None, -math.inf
        restarts = self.fit_restarts if len(values) <= self.restart_max_points else 0
        starts: list[int] = ([-1] if start is not None else []) + (
            list(range(1 + restarts)) if cold else []
        )
        failures: list[str] = []
        caught: list[warnings.WarningMessage] = []
        for attempt, restart in enumerate(starts):
            model = self._new_model(x, y)
            base = _base_kernel(model.covar_module)
            maxiter = self.fit_maxiter
            if restart < 0:  # warm: the previous fit's hyper-parameters
                for name in ("covar_module", "likelihood", "mean_module"):
                    getattr(model, name).load_state_dict(getattr(start, name).state_dict())
                maxiter = self.warm_maxiter
            elif restart > 0:
                jitter = torch.empty_like(base.lengthscale).uniform_(-1.5, 1.5, generator=gen)
                base.lengthscale = base.lengthscale * torch.exp(jitter)
            mll = ExactMarginalLogLikelihood(model.likelihood, model)
            with torch.random.fork_rng(), warnings.catch_warnings(record=True) as attempt_warnings:
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                warnings.simplefilter("always")
                value = self._fit_attempt(model, mll, maxiter)
            caught += attempt_warnings
            if isinstance(value, ModelFittingError):
                failures.append(f"attempt {attempt + 1}: {value}")
                logger.warning(
                    "GP fit attempt %d of %d on %d cells failed: %s",
                    attempt + 1, len(starts), len(values), value,
                )  # fmt: skip
            elif value > best_mll:
                best, best_mll = model, value
        prior = best is None
        if best is None:  # every fit failed: keep the priors' initial hyper-parameters
            logger.warning(
                "every GP fit on %d cells failed (%d attempts); using the prior's initial "
                "hyper-parameters", len(values), len(starts),
            )  # fmt: skip
            best = self._new_model(x, y)
            best.eval()
        texts = tuple(f"{w.category.__name__}: {w.message}" for w in caught)
        if texts:
            logger.info(
                "GP fit on %d cells raised %d warning(s): %s", len(values), len(texts),
                "; ".join(sorted(set(texts))),
            )  # fmt: skip
        self.fit_report = GPFitReport(len(values), len(starts), tuple(failures), texts, prior)
        return best

    def _fit_attempt(self, model: Any, mll: Any, maxiter: int) -> float | ModelFittingError:
        """Fit ``model`` in place; its marginal log likelihood, or the fitting error."""
        try:
            fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": maxiter}})
        except ModelFittingError as err:
            return err
        model.train()
        with torch.no_grad():
            value = float(mll(model(*model.train_inputs), model.train_targets))
        model.eval()
        return value

    def _summarise(self, model: Any, vectors: np.ndarray) -> _FittedGP:
        covar = model.covar_module
        scale = float(covar.outputscale.detach()) if isinstance(covar, ScaleKernel) else 1.0
        base = _base_kernel(covar)
        gp = _FittedGP(
            model=model,
            kind=self.kernel,
            outputscale=scale,
            lengthscale=base.lengthscale.detach().reshape(-1).to(_DTYPE),
            noise=float(model.likelihood.noise.detach().reshape(-1)[0]),
            constant=float(model.mean_module.constant.detach()),
            y_mean=float(model.outcome_transform.means.reshape(-1)[0]),
            y_std=float(model.outcome_transform.stdvs.reshape(-1)[0]),
            train_kmat=self._kmat(vectors),
            alpha=torch.empty(0, dtype=_DTYPE),
        )
        if self._prior is not None:
            gp.prior_weight = float(model.mean_module.weight.detach())
        k_tt = self._cross(gp, gp.train_kmat, gp.train_kmat)  # (n, n)
        chol = _cholesky(k_tt, gp.noise)
        targets = model.train_targets.detach().to(_DTYPE)
        prior = gp.prior_weight * self._prior_of(vectors)  # (n,)
        resid = (targets - gp.constant - prior).unsqueeze(-1)  # (n, 1)
        gp.alpha = torch.cholesky_solve(resid, chol).squeeze(-1)  # (n,)
        return gp

    # ------------------------------------------------------------------ kernel fast path
    def _kmat(self, vectors: np.ndarray) -> torch.Tensor:
        """Kernel-side matrix of cells: match matrix (categorical) or features (onehot)."""
        if self.kernel == "categorical":
            return self.encoder.match_matrix(vectors)
        return self.encoder.features(vectors)

    def _cross(self, gp: _FittedGP, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """k(a, b) of the fitted kernel, from ``_kmat`` rows.

        Shape:
            a: (N, M), b: (P, M) -> (N, P).
        """
        if gp.kind == "categorical":
            # CategoricalKernel: exp(-mean_i [x_i != z_i] / l_i); mismatches = total - matches
            w = 1.0 / (gp.lengthscale * len(gp.lengthscale))  # (F,)
            sizes = torch.as_tensor(self.encoder.factor_sizes)
            w_cols = torch.repeat_interleave(w, sizes)  # (M,)
            log_k = (a * w_cols) @ b.T - w.sum()  # (N, P)
            return gp.outputscale * torch.exp(log_k)
        inv_l = 1.0 / gp.lengthscale  # (F,)
        a_s, b_s = a * inv_l, b * inv_l
        sq = (a_s * a_s).sum(1, keepdim=True) + (b_s * b_s).sum(1) - 2.0 * a_s @ b_s.T  # (N, P)
        r = torch.sqrt(sq.clamp_min(0.0))
        s5r = math.sqrt(5.0) * r
        return gp.outputscale * (1.0 + s5r + (5.0 / 3.0) * r * r) * torch.exp(-s5r)

    def _marginals(
        self,
        gp: _FittedGP,
        cand: torch.Tensor,
        cond: torch.Tensor,
        with_mean: bool = True,
        prior: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Standardised posterior mean and variance of ``cand`` rows, conditioned on ``cond``.

        ``cond`` starts with the training cells (in ``training_data`` order); rows after them
        are hallucinated at their posterior mean, so they shrink the variance only. ``prior``:
        the candidates' ``_prior_of`` (for the mean; needed with a prior mean).

        Shape:
            cand: (N, M), cond: (n_c, M), prior: (N,) -> mean (N,) or None, var (N,).
        """
        if with_mean and self._prior is not None and prior is None:
            raise ValueError("_marginals: a GP with a prior mean needs the candidates' prior")
        n_train = gp.train_kmat.shape[0]
        chol = _cholesky(self._cross(gp, cond, cond), gp.noise)  # (n_c, n_c)
        eye = torch.eye(cond.shape[0], dtype=_DTYPE)
        linv_t = torch.linalg.solve_triangular(chol, eye, upper=False).T  # (n_c, n_c)
        means, vars_ = [], []
        for start in range(0, cand.shape[0], self.chunk_size):
            k_ca = self._cross(gp, cand[start : start + self.chunk_size], cond)  # (c, n_c)
            if with_mean:
                means.append(gp.constant + k_ca[:, :n_train] @ gp.alpha)  # (c,)
                if prior is not None:
                    means[-1] = means[-1] + gp.prior_weight * prior[start : start + len(k_ca)]
            w = k_ca @ linv_t  # (c, n_c)
            vars_.append((gp.outputscale - (w * w).sum(1)).clamp_min(0.0))  # (c,)
        mean = torch.cat(means) if with_mean else None
        return mean, torch.cat(vars_)

    def posterior(self, cells: list[CellSpec]) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of the latent objective at ``cells`` (observed data only).

        Needs at least one observation. Values are in the objective's units.

        Shape:
            len(cells) = N -> mean (N,), var (N,).
        """
        vectors, _ = self.training_data()
        if len(vectors) == 0:
            raise RuntimeError("posterior() needs at least one completed observation")
        gp = self._fitted()
        vectors = np.array([self.space.encode(c) for c in cells], dtype=np.int64)
        cand = self._kmat(vectors)
        mean, var = self._marginals(gp, cand, gp.train_kmat, prior=self._prior_of(vectors))
        assert mean is not None
        return mean * gp.y_std + gp.y_mean, var * gp.y_std**2

    # ------------------------------------------------------------------ proposals
    def _propose(self, n: int, excluded: set[str]) -> list[CellSpec]:
        n_done = sum(not o.outcome.failed for o in self._observed.values())
        if n_done < self.n_init:
            return self._random_cells(n, excluded, self._rng("init"))
        gp = self._fitted()
        t0 = len(self._observed) + len(self._pending) + 1
        width = len(self.encoder.cardinalities)
        pending = np.array(
            sorted(self.space.encode(c) for c in self._pending.values()), dtype=np.int64
        ).reshape(-1, width)
        train_vectors, _ = self.training_data()
        # conditioning set: training cells (all of them, incl. imputed failures) + pending cells
        cond_vectors = np.concatenate([train_vectors, pending])  # (n_c, D)
        if self.exhaustive:
            vectors = self.encoder.all_vectors()
            avail = torch.ones(len(vectors), dtype=torch.bool)
            seen = [o.vector for o in self._observed.values()] + [
                tuple(v) for v in pending.tolist()
            ]
            if seen:
                avail[torch.from_numpy(self.encoder.index_of(np.array(seen)))] = False
            mean = gp.constant + self._space_times(gp, train_vectors, gp.alpha.unsqueeze(-1))[0]
            if self._prior is not None:
                if self._prior_space is None:
                    self._prior_space = self._prior_of(vectors)
                mean = mean + gp.prior_weight * self._prior_space
            var = self._space_var(gp, cond_vectors)
            cand = None
        else:
            cond = self._kmat(cond_vectors)
            vectors, cand, avail, mean, var = self._pool(gp, cond, t0)
        return self._select_batch(
            gp, n, t0, vectors, cand, avail, mean, var, cond_vectors, excluded
        )

    def _select_batch(
        self,
        gp: _FittedGP,
        n: int,
        t0: int,
        vectors: np.ndarray,
        cand: torch.Tensor | None,
        avail: torch.Tensor,
        mean: torch.Tensor,
        var: torch.Tensor,
        cond_vectors: np.ndarray,
        excluded: set[str],
    ) -> list[CellSpec]:
        """Greedy GP-BUCB batch over candidate rows (see the module docstring).

        ``cand`` holds the candidates' ``_kmat`` rows, or is None for the whole space (rows
        are then made from ``vectors`` when needed, and variances updated by ``_space_var``).
        """
        taken = set(excluded)
        chosen: list[int] = []
        out: list[CellSpec] = []

        def rows(idx: torch.Tensor) -> torch.Tensor:
            if cand is not None:
                return cand[idx]
            return self._kmat(vectors[idx.numpy()])

        while len(out) < n and bool(avail.any()):
            root = math.sqrt(self.beta(t0 + len(out)))
            ucb0 = torch.where(avail, mean + root * var.sqrt(), -math.inf)  # (N,)
            m = min(self.shortlist, int(avail.sum()))
            short = torch.topk(ucb0, m).indices  # (m,)
            outside = avail.clone()
            outside[short] = False
            sigma: torch.Tensor | None = None  # joint covariance of the shortlist, when needed
            s_var = var[short]
            s_avail = avail[short].clone()
            exact = True
            while len(out) < n and bool(s_avail.any()):
                root = math.sqrt(self.beta(t0 + len(out)))
                if sigma is not None:
                    s_var = torch.diagonal(sigma).clamp_min(0.0)
                ucb = torch.where(s_avail, mean[short] + root * s_var.sqrt(), -math.inf)
                b = int(torch.argmax(ucb))
                if chosen and bool(outside.any()):
                    bound = float((mean[outside] + root * var[outside].sqrt()).max())
                    if float(ucb[b]) < bound - 1e-9 * (1.0 + abs(bound)):
                        exact = False  # a cell outside the shortlist may now be better
                        break
                pos = int(short[b])
                s_avail[b] = False
                avail[pos] = False
                cell = self.space.decode(vectors[pos].tolist())
                key = cell.hash()
                if key in taken:  # an isomorphic duplicate of an evaluated/pending/chosen cell
                    continue
                taken.add(key)
                chosen.append(pos)
                out.append(cell)
                if len(out) == n:
                    break
                if sigma is None:  # the first pick needs no joint covariance; later ones do
                    cond = self._kmat(cond_vectors)
                    short_rows = rows(short)
                    k_sc = self._cross(gp, short_rows, cond)  # (m, n_c)
                    chol = _cholesky(self._cross(gp, cond, cond), gp.noise)
                    w = torch.linalg.solve_triangular(chol, k_sc.T, upper=False)  # (n_c, m)
                    sigma = self._cross(gp, short_rows, short_rows) - w.T @ w  # (m, m)
                col = sigma[:, b].clone()  # (m,)
                sigma = sigma - torch.outer(col, col) / (col[b] + gp.noise)  # (m, m)
            if exact and len(out) < n and bool(avail.any()) and not bool(s_avail.any()):
                exact = False  # shortlist used up: rescore with the chosen cells conditioned on
            if not exact and chosen:
                picked = vectors[np.array(chosen, dtype=np.int64)]
                if cand is None:
                    var = self._space_var(gp, np.concatenate([cond_vectors, picked]))
                else:
                    cond = self._kmat(np.concatenate([cond_vectors, picked]))
                    _, var = self._marginals(gp, cand, cond, with_mean=False)
                cond_vectors = np.concatenate([cond_vectors, picked])
                chosen = []
        return out

    # ------------------------------------------------------------------ the whole space
    def _grid_tables(self, gp: _FittedGP, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Categorical kernel between every cell of the space and ``rows``, as two factors.

        k(x, r) = P[i_lead(x), r] * Q[i_rest(x), r] (``CellEncoder.grid_split``; the outputscale
        is in P): the kernel is a product over factors, hence over coordinates.

        Shape:
            rows: (r, D) vectors -> P (prod(cards[:s]), r), Q (prod(cards[s:]), r).
        """
        cards = self.encoder.cardinalities
        split = self.encoder.grid_split()
        w = 1.0 / (gp.lengthscale * len(gp.lengthscale))  # (F,) as in ``_cross``
        codes = self.encoder.factor_codes(rows)  # (r, F)
        logs = []
        for value_codes, factors in self.encoder.coordinate_factors():
            mismatch = value_codes[:, None, :] != codes[None, :, factors]  # (c_d, r, f_d)
            logs.append(-(torch.from_numpy(mismatch).to(_DTYPE) @ w[factors]))  # (c_d, r)

        def table(coords: range) -> torch.Tensor:
            out = torch.zeros(1, len(rows), dtype=_DTYPE)
            for d in coords:  # mixed radix, the last coordinate fastest
                out = (out[:, None, :] + logs[d][None, :, :]).reshape(-1, len(rows))
            return torch.exp(out)

        return gp.outputscale * table(range(split)), table(range(split, len(cards)))

    def _space_times(self, gp: _FittedGP, rows: np.ndarray, coef: torch.Tensor) -> torch.Tensor:
        """K(space, rows) @ coef for every cell of the space (``all_vectors`` order).

        Shape:
            rows: (r, D), coef: (r, p) -> (p, size).
        """
        if self.kernel == "categorical":
            p_tab, q_tab = self._grid_tables(gp, rows)  # (G1, r), (G2, r)
            out = (p_tab.T.unsqueeze(0) * coef.T.unsqueeze(-1)).transpose(1, 2) @ q_tab.T
            return out.reshape(coef.shape[1], -1)  # (p, G1 * G2)
        feats, kmat = self.encoder.all_matrix("features"), self._kmat(rows)
        parts = [
            (self._cross(gp, feats[i : i + self.chunk_size], kmat) @ coef).T
            for i in range(0, feats.shape[0], self.chunk_size)
        ]
        return torch.cat(parts, dim=1)

    def _space_var(self, gp: _FittedGP, cond: np.ndarray) -> torch.Tensor:
        """Posterior variance (standardised) of every cell of the space given ``cond`` cells.

        Cached: when the hyper-parameters are those of the previous call and ``cond`` holds
        the previous conditioning cells plus new ones, the previous variances are updated for
        the new cells only (a rank-p downdate, O(size · n) instead of O(size · n²)).

        Shape:
            cond: (n_c, D) vectors -> (size,).
        """
        cached = self._var_cache
        if cached is not None and cached[0] == self._fit_version:
            before = {tuple(v) for v in cached[1].tolist()}
            now = [tuple(v) for v in cond.tolist()]
            if before <= set(now):
                added = np.array([v for v in now if v not in before], dtype=np.int64)
                added = added.reshape(-1, cond.shape[1])
                var = cached[2]
                if len(added):
                    var = self._downdate(gp, cached[1], added, var)
                self._var_cache = (self._fit_version, np.concatenate([cached[1], added]), var)
                return var
        var = self._full_space_var(gp, cond)
        self._var_cache = (self._fit_version, cond.copy(), var)
        return var

    def _full_space_var(self, gp: _FittedGP, cond: np.ndarray) -> torch.Tensor:
        """``_space_var`` from scratch: s - ||L^{-1} k_C(x)||² for every cell, in chunks."""
        kmat = self._kmat(cond)
        if self.kernel != "categorical":
            feats = self.encoder.all_matrix("features")
            return self._marginals(gp, feats, kmat, with_mean=False)[1]
        chol = _cholesky(self._cross(gp, kmat, kmat), gp.noise)  # (n_c, n_c)
        eye = torch.eye(len(cond), dtype=_DTYPE)
        linv_t = torch.linalg.solve_triangular(chol, eye, upper=False).T  # (n_c, n_c)
        p_tab, q_tab = self._grid_tables(gp, cond)  # (G1, n_c), (G2, n_c)
        step = max(1, self.chunk_size // q_tab.shape[0])
        parts = []
        for i in range(0, p_tab.shape[0], step):
            k_ca = (p_tab[i : i + step, None, :] * q_tab[None, :, :]).reshape(-1, len(cond))
            w = k_ca @ linv_t  # (c, n_c)
            parts.append((gp.outputscale - (w * w).sum(1)).clamp_min(0.0))
        return torch.cat(parts)

    def _downdate(
        self, gp: _FittedGP, cond: np.ndarray, added: np.ndarray, var: torch.Tensor
    ) -> torch.Tensor:
        """Variances given ``cond`` -> given ``cond`` + ``added`` (exact rank-p update).

        var'(x) = var(x) - u(x)ᵀ S⁻¹ u(x), u(x) = k(x, Z) - k(x, C) K_C⁻¹ k(C, Z) and
        S = k(Z, Z) - k(Z, C) K_C⁻¹ k(C, Z) + σ²I, K_C = k(C, C) + σ²I.
        """
        k_c, k_z = self._kmat(cond), self._kmat(added)
        p = len(added)
        if len(cond):
            chol = _cholesky(self._cross(gp, k_c, k_c), gp.noise)  # (n_c, n_c)
            solve = torch.cholesky_solve(self._cross(gp, k_c, k_z), chol)  # (n_c, p)
            schur = self._cross(gp, k_z, k_z) - self._cross(gp, k_z, k_c) @ solve  # (p, p)
            coef = torch.cat([-solve, torch.eye(p, dtype=_DTYPE)])  # (n_c + p, p)
            u = self._space_times(gp, np.concatenate([cond, added]), coef)  # (p, size)
        else:
            schur = self._cross(gp, k_z, k_z)
            u = self._space_times(gp, added, torch.eye(p, dtype=_DTYPE))
        chol_s = _cholesky(0.5 * (schur + schur.T), gp.noise)  # (p, p)
        w = torch.linalg.solve_triangular(chol_s, u, upper=False)  # (p, size)
        return (var - (w * w).sum(0)).clamp_min(0.0)

    def _pool(
        self, gp: _FittedGP, cond: torch.Tensor, t0: int
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Candidates for spaces too large to score whole: random pool + local search."""
        rng = self._rng("pool")
        cards = self.encoder.cardinalities
        seen = {o.vector for o in self._observed.values()}
        seen |= {tuple(self.space.encode(c)) for c in self._pending.values()}
        pool: dict[tuple[int, ...], None] = {}
        best = sorted(
            (o for o in self._observed.values() if not o.outcome.failed),
            key=lambda o: -o.outcome.value,
        )[:10]
        for o in best:
            for v in _neighbours(o.vector, cards):
                if v not in seen:
                    pool[v] = None
        while len(pool) < self.pool_size:
            v = tuple(rng.randrange(c) for c in cards)
            if v not in seen:
                pool[v] = None
        vectors = np.array(list(pool), dtype=np.int64)
        cand = self._kmat(vectors)
        mean, var = self._marginals(gp, cand, cond, prior=self._prior_of(vectors))
        assert mean is not None
        root = math.sqrt(self.beta(t0))
        for _ in range(self.local_search_steps):
            ucb = mean + root * var.sqrt()
            top = torch.topk(ucb, min(10, len(ucb))).indices.tolist()
            new = {
                v: None
                for i in top
                for v in _neighbours(tuple(vectors[i].tolist()), cards)
                if v not in pool and v not in seen
            }
            if not new:
                break
            new_vectors = np.array(list(new), dtype=np.int64)
            new_cand = self._kmat(new_vectors)
            new_mean, new_var = self._marginals(
                gp, new_cand, cond, prior=self._prior_of(new_vectors)
            )
            assert new_mean is not None
            improved = float((new_mean + root * new_var.sqrt()).max()) > float(ucb.max())
            pool.update(new)
            vectors = np.concatenate([vectors, new_vectors])
            cand = torch.cat([cand, new_cand])
            mean, var = torch.cat([mean, new_mean]), torch.cat([var, new_var])
            if not improved:
                break
        avail = torch.ones(len(vectors), dtype=torch.bool)
        return vectors, cand, avail, mean, var


_FINISHED = ("completed", "failed")


def _record_field(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, dict) else getattr(record, name, None)


def _record_state(record: Any) -> Any:
    return _record_field(record, "state")


def _finished_at(record: Any) -> float | None:
    stamp = _record_field(record, "finished_at")
    return None if stamp is None else float(stamp)


def _base_kernel(covar: Any) -> Any:
    base = covar.base_kernel if isinstance(covar, ScaleKernel) else covar
    if not hasattr(base, "lengthscale"):
        raise TypeError(f"GPBandit needs a kernel with lengthscales, got {type(base).__name__}")
    if isinstance(base, MaternKernel) and base.nu != 2.5:
        raise TypeError(f"the fast path implements Matern nu=2.5, got nu={base.nu}")
    return base


class _HammingKernel(CategoricalKernel):
    """BoTorch's ``CategoricalKernel``, exp(-mean_i [x_i != z_i] / l_i), computed faster.

    The parent divides a (n, m, d) mismatch tensor by the lengthscales and averages; here the
    average is one matrix-vector product with the weights 1 / (d l), whose backward pass is a
    single product too. Same values (the tests check it); about 10x faster to fit at 200 cells.
    """

    def forward(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        diag: bool = False,
        last_dim_is_batch: bool = False,
        **params: Any,
    ) -> torch.Tensor:
        if last_dim_is_batch:
            return super().forward(x1, x2, diag=diag, last_dim_is_batch=True)
        delta = (x1.unsqueeze(-2) != x2.unsqueeze(-3)).to(x1.dtype)  # (..., n, m, d)
        lengthscale = self.lengthscale  # (..., 1, d)
        weights = (1.0 / (lengthscale * lengthscale.shape[-1])).transpose(-1, -2)  # (..., d, 1)
        res = torch.exp(-(delta @ weights.unsqueeze(-3)).squeeze(-1))  # (..., n, m)
        if diag:
            res = torch.diagonal(res, dim1=-1, dim2=-2)
        return res


def _categorical_covar(num_factors: int, active_dims: list[int] | None = None) -> ScaleKernel:
    """ScaleKernel(CategoricalKernel) with priors that keep its hyper-parameters finite.

    BoTorch's ``MixedSingleTaskGP`` builds the same kernel without priors; on a few dozen cells
    the maximum-likelihood lengthscales of factors that do not matter run off to 1e4 and L-BFGS
    spends seconds chasing them. The kernel's distance (the mean mismatch over F factors) lies
    in [0, 1] like a distance in the unit cube, so the lengthscales get BoTorch's
    dimension-scaled prior for unit-cube inputs, LogNormal(sqrt(2) + log(F)/2, sqrt(3)) (mode
    about 0.8 for F=14), and the outputscale the classic Gamma(2, 0.15) prior; the fit is then a
    well-posed MAP problem.
    """
    return ScaleKernel(
        _HammingKernel(
            ard_num_dims=num_factors,
            active_dims=active_dims,
            lengthscale_prior=LogNormalPrior(
                math.sqrt(2.0) + 0.5 * math.log(num_factors), math.sqrt(3.0)
            ),
            lengthscale_constraint=GreaterThan(1e-4),
        ),
        outputscale_prior=GammaPrior(2.0, 0.15),
    )


class _PriorMean(Mean):
    """m(x) = c + w · x[..., -1]: a constant plus a fitted multiple of the cell's prior score,
    the last input column (module docstring, "A prior mean"). Both start at 0."""

    def __init__(self) -> None:
        super().__init__()
        self.register_parameter("constant", torch.nn.Parameter(torch.zeros((), dtype=_DTYPE)))
        self.register_parameter("weight", torch.nn.Parameter(torch.zeros((), dtype=_DTYPE)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.constant + self.weight * x[..., -1]


def prior_scores(path: str | os.PathLike[str]) -> dict[str, float]:
    """A ``prior_mean`` read from a JSON file: an object of scores by cell hash, or the result
    of ``experiments/oneshot_ranking.py`` (each cell's one-shot top-1 with recalibrated
    BatchNorm, the mean over its search seeds).

    Raises:
        ValueError: naming the file, when it is missing or holds neither.
    """
    file = Path(path)
    try:
        data = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"prior_mean: cannot read {file}: {err}") from None
    if isinstance(data, dict) and isinstance(data.get("cells"), list):
        key = "oneshot_top1_recalibrate"
        rows = [r for r in data["cells"] if isinstance(r, dict) and r.get(key)]
        if not rows:
            raise ValueError(f"prior_mean: {file} holds no cell with {key!r} scores")
        return {str(r["cell_hash"]): float(np.mean(r[key])) for r in rows}
    if isinstance(data, dict) and all(isinstance(v, int | float) for v in data.values()):
        return {str(k): float(v) for k, v in data.items()}
    raise ValueError(
        f"prior_mean: {file} is neither a JSON object of scores by cell hash nor a one-shot "
        "ranking result"
    )


def _standardised(scores: Mapping[str, float] | None) -> dict[str, float] | None:
    """Scores minus their mean, over their standard deviation (None stays None)."""
    if scores is None:
        return None
    values = np.array([float(v) for v in scores.values()], dtype=np.float64)
    if len(values) == 0 or not np.isfinite(values).all():
        raise ValueError("prior_mean: needs at least one score, every one finite")
    std = float(values.std()) or 1.0
    mean = float(values.mean())
    return {str(k): (float(v) - mean) / std for k, v in scores.items()}


def _cholesky(k: torch.Tensor, noise: float) -> torch.Tensor:
    """Lower Cholesky factor of k + noise·I, adding jitter if k is numerically singular."""
    eye = torch.eye(k.shape[0], dtype=k.dtype)
    jitter = 0.0
    for _ in range(6):
        chol, info = torch.linalg.cholesky_ex(k + (noise + jitter) * eye)
        if int(info) == 0:
            return chol
        jitter = 1e-8 if jitter == 0.0 else jitter * 10.0
    raise RuntimeError(f"kernel matrix of {k.shape[0]} cells is not positive definite")


def _neighbours(vector: tuple[int, ...], cards: list[int]) -> list[tuple[int, ...]]:
    """Every vector differing from ``vector`` in exactly one coordinate."""
    out = []
    for i, c in enumerate(cards):
        for v in range(c):
            if v != vector[i]:
                out.append((*vector[:i], v, *vector[i + 1 :]))
    return out
