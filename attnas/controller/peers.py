"""The searchers users would pick instead of GPB, behind the attnas ask/tell interface.

One adapter, ``PeerSearcher``, turns a *vector proposer* (a function of the finished and pending
trials that returns the next choice vector) into a ``Searcher``, so Optuna's and BoTorch's
optimisers run through ``run_search`` with pending trials in flight, exactly as GPB does. The
peers are used as their libraries ship them; nothing of theirs is reimplemented here:

- ``optuna_tpe``: ``optuna.samplers.TPESampler(multivariate=True, constant_liar=True)``, Optuna's
  default algorithm in its multivariate form, with the constant liar Optuna recommends when
  trials run in parallel (running trials count as bad ones, so workers spread out).
- ``optuna_gp``: ``optuna.samplers.GPSampler()`` (its own Matern kernel, priors and logEI; with
  running trials it switches to its q-batch logEI itself).
- ``botorch_mixed``: BoTorch's standard path for categorical spaces: ``MixedSingleTaskGP`` with
  every factor in ``cat_dims`` (its ``CategoricalKernel``), ``fit_gpytorch_mll``,
  ``qLogNoisyExpectedImprovement`` with the pending cells as ``X_pending``, optimised by
  ``optimize_acqf_mixed_alternating`` over the categorical dims.

The parameters are the factors of the space's choice vector: one categorical parameter per
coordinate of ``space.cardinalities()`` (``x0`` .. ``x{D-1}``, values ``0 .. c-1``), decoded by
``space.decode``.

Design choices where the issue is silent:

- Stateless proposals: every ``suggest`` builds the peer afresh (a new in-memory Optuna study
  holding the finished trials as ``COMPLETE``/``FAIL`` and the pending ones as ``RUNNING``; a new
  BoTorch model), with a seed drawn from (seed, number of finished and pending trials), and the
  trials sorted by vector. A proposal is then a function of the data and the seed, as GPB's is,
  so a searcher restored from the trial store proposes what the original would have (the resume
  contract), whatever order asynchronous trials finished in. The price: GPSampler loses the
  kernel parameters it caches between calls in one process as starting values of its next fit.
- ``suggest(n)`` asks for one vector at a time, each seeing the earlier ones as pending.
- Repair: every vector decodes to a valid cell, but a peer can propose a cell that is already
  evaluated or pending, directly or as an isomorphic variant (``CellSpec.hash``); Optuna does not
  avoid repeats in categorical spaces. Such a vector is replaced by the nearest new cell in
  Hamming distance over the factors (distance 1, then 2, each in a seeded random order; beyond
  that a uniformly random new cell). ``repairs`` counts them; the study reports it.
- Failed trials are told to Optuna as ``FAIL`` (its samplers ignore them) and left out of the
  BoTorch model; none is proposed again.
- Optuna's log is set to WARNING when a proposal is made: a fresh study per proposal would
  otherwise log one INFO line per suggestion.
- The peers' libraries are imported when a peer is first built, not with this module, so the
  controller package keeps no hard dependency on Optuna (``pip install -e ".[peers]"``);
  ``peer_unavailable(name)`` says exactly why one cannot run.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import random
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from attnas.controller.base import SearcherBase, _random_distinct, register_searcher
from attnas.space import CellSpec, SearchSpace

PEERS = ("optuna_tpe", "optuna_gp", "botorch_mixed")
_LIBRARIES = {
    "optuna_tpe": ("optuna",),
    "optuna_gp": ("optuna", "torch", "scipy"),
    "botorch_mixed": ("botorch", "gpytorch", "torch"),
}

Vector = tuple[int, ...]
Finished = tuple[Vector, float | None]  # (vector, value); None for a failed trial


class VectorProposer(Protocol):
    """A peer seen from the adapter: the next choice vector given the trials so far."""

    def propose(
        self,
        cards: Sequence[int],
        finished: Sequence[Finished],
        pending: Sequence[Vector],
        seed: int,
    ) -> Vector:
        """The next vector (coordinates in ``0 .. cards[i] - 1``).

        Args:
            cards: the space's cardinalities.
            finished: finished trials sorted by vector (value None: failed).
            pending: running trials' vectors, sorted.
            seed: the seed of this proposal.
        """
        ...


def peer_versions() -> dict[str, str]:
    """Installed version of each peer library, or why it cannot be imported."""
    out = {}
    for lib in ("optuna", "botorch", "gpytorch", "torch", "scipy"):
        try:
            out[lib] = str(importlib.import_module(lib).__version__)
        except ImportError as err:
            out[lib] = f"not importable: {err}"
    return out


def peer_unavailable(name: str) -> str | None:
    """None when peer ``name`` can run here, else exactly why not."""
    if name not in PEERS:
        raise KeyError(f"unknown peer {name!r}; known: {list(PEERS)}")
    for lib in _LIBRARIES[name]:
        try:
            importlib.import_module(lib)
        except ImportError as err:
            return (
                f"{name} needs {lib}, which cannot be imported ({err}); "
                'install the peers extra: pip install -e ".[peers]"'
            )
    return None


def _require(name: str) -> None:
    reason = peer_unavailable(name)
    if reason is not None:
        raise ImportError(reason)


def _proposal_seed(seed: int, purpose: str, finished: int, pending: int) -> int:
    text = f"{seed}:{purpose}:{finished}:{pending}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "big") & 0x7FFFFFFF


class PeerSearcher(SearcherBase):
    """The one adapter from a peer optimiser to the ask/tell ``Searcher`` (module docstring).

    Args:
        space: the search space.
        proposer: the peer (``OptunaProposer``, ``BoTorchMixedProposer``).
        seed: same seed, same proposals (given the same trials).
        name: the peer's name, for reports.

    Attributes:
        repairs: proposals that were an evaluated or pending cell and were repaired.
    """

    def __init__(
        self, space: SearchSpace, proposer: VectorProposer, seed: int = 0, name: str = "peer"
    ) -> None:
        super().__init__(space, seed)
        self.proposer = proposer
        self.name = name
        self.repairs = 0

    def _propose(self, n: int, excluded: set[str]) -> list[CellSpec]:
        cards = self.space.cardinalities()
        finished = sorted(
            (o.vector, None if o.outcome.failed else o.outcome.value)
            for o in self._observed.values()
        )
        pending = sorted(tuple(self.space.encode(c)) for c in self._pending.values())
        taken = set(excluded)
        out: list[CellSpec] = []
        for _ in range(n):
            seed = _proposal_seed(self.seed, self.name, len(finished), len(pending))
            vector = tuple(int(v) for v in self.proposer.propose(cards, finished, pending, seed))
            cell = self._repair(vector, taken, random.Random(seed))
            if cell is None:
                break  # the space is used up
            taken.add(cell.hash())
            out.append(cell)
            pending = sorted([*pending, tuple(self.space.encode(cell))])
        return out

    def _repair(self, vector: Vector, taken: set[str], rng: random.Random) -> CellSpec | None:
        """The proposed cell when new, else the nearest new one (module docstring)."""
        cell = self.space.decode(vector)
        if cell.hash() not in taken:
            return cell
        self.repairs += 1
        cards = self.space.cardinalities()
        for distance in (1, 2):
            candidates = list(_at_distance(vector, cards, distance))
            rng.shuffle(candidates)
            for v in candidates:
                near = self.space.decode(v)
                if near.hash() not in taken:
                    return near
        rest = _random_distinct(self.space, 1, taken, rng)
        return rest[0] if rest else None


def _at_distance(vector: Vector, cards: Sequence[int], distance: int) -> list[Vector]:
    """Every vector differing from ``vector`` in exactly ``distance`` coordinates."""
    out = []
    for coords in itertools.combinations(range(len(cards)), distance):
        choices = [[v for v in range(cards[i]) if v != vector[i]] for i in coords]
        for values in itertools.product(*choices):
            new = list(vector)
            for i, v in zip(coords, values):
                new[i] = v
            out.append(tuple(new))
    return out


# ---------------------------------------------------------------------- Optuna
class OptunaProposer:
    """An Optuna sampler on a fresh in-memory study per proposal.

    Args:
        make_sampler: ``seed -> optuna.samplers.BaseSampler``.
    """

    def __init__(self, make_sampler: Callable[[int], Any]) -> None:
        self.make_sampler = make_sampler

    def propose(
        self,
        cards: Sequence[int],
        finished: Sequence[Finished],
        pending: Sequence[Vector],
        seed: int,
    ) -> Vector:
        import optuna
        from optuna.distributions import CategoricalDistribution
        from optuna.trial import TrialState, create_trial

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        dists = {f"x{i}": CategoricalDistribution(list(range(c))) for i, c in enumerate(cards)}
        study = optuna.create_study(direction="maximize", sampler=self.make_sampler(seed))

        def params(vector: Vector) -> dict[str, int]:
            return {f"x{i}": int(v) for i, v in enumerate(vector)}

        trials = [
            create_trial(params=params(v), distributions=dists, value=value)
            if value is not None
            else create_trial(state=TrialState.FAIL, params=params(v), distributions=dists)
            for v, value in finished
        ]
        trials += [
            create_trial(state=TrialState.RUNNING, params=params(v), distributions=dists)
            for v in pending
        ]
        study.add_trials(trials)
        with warnings.catch_warnings():
            # GPSampler and constant_liar are marked experimental: a fact, not news per call
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            trial = study.ask(dists)
        return tuple(int(trial.params[f"x{i}"]) for i in range(len(cards)))


def _tpe(seed: int) -> Any:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)


def _gp(seed: int) -> Any:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.GPSampler(seed=seed)


@register_searcher("optuna_tpe")
def optuna_tpe(space: SearchSpace, seed: int = 0) -> PeerSearcher:
    """Optuna's multivariate TPE (constant liar) through the adapter; needs ``optuna``."""
    _require("optuna_tpe")
    return PeerSearcher(space, OptunaProposer(_tpe), seed=seed, name="optuna_tpe")


@register_searcher("optuna_gp")
def optuna_gp(space: SearchSpace, seed: int = 0) -> PeerSearcher:
    """Optuna's ``GPSampler`` through the adapter; needs ``optuna``."""
    _require("optuna_gp")
    return PeerSearcher(space, OptunaProposer(_gp), seed=seed, name="optuna_gp")


# ---------------------------------------------------------------------- BoTorch
class BoTorchMixedProposer:
    """``MixedSingleTaskGP`` + qLogNEI + ``optimize_acqf_mixed_alternating`` (module docstring).

    Args:
        n_init: completed trials before the model is used; uniformly random vectors until then
            (Optuna's samplers start with 10 random trials too).
        num_restarts: ``optimize_acqf_mixed_alternating``'s restarts (BoTorch's default 20).
        raw_samples: its initial candidates (BoTorch's default 1024).
        mc_samples: qLogNEI's quasi-MC samples (BoTorch's default 512; the sampler is seeded
            here so that a proposal is a function of the data and the seed).

    Attributes:
        warnings: ``"<category>: <message>" -> count`` of the warnings BoTorch raised while
            fitting and optimising (recorded, not silenced; the study reports them).
    """

    def __init__(
        self,
        n_init: int = 10,
        num_restarts: int = 20,
        raw_samples: int = 1024,
        mc_samples: int = 512,
    ) -> None:
        self.n_init = int(n_init)
        self.num_restarts = int(num_restarts)
        self.raw_samples = int(raw_samples)
        self.mc_samples = int(mc_samples)
        self.warnings: dict[str, int] = {}

    def propose(
        self,
        cards: Sequence[int],
        finished: Sequence[Finished],
        pending: Sequence[Vector],
        seed: int,
    ) -> Vector:
        done = [(v, y) for v, y in finished if y is not None]
        if len(done) < self.n_init:
            rng = random.Random(seed)
            return tuple(rng.randrange(c) for c in cards)
        import torch
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import MixedSingleTaskGP
        from botorch.models.transforms.outcome import Standardize
        from botorch.optim.optimize_mixed import optimize_acqf_mixed_alternating
        from botorch.sampling.normal import SobolQMCNormalSampler
        from gpytorch.mlls import ExactMarginalLogLikelihood

        dims = len(cards)
        x = torch.tensor([v for v, _ in done], dtype=torch.float64)  # (n, D)
        y = torch.tensor([[y] for _, y in done], dtype=torch.float64)  # (n, 1)
        x_pending = torch.tensor(pending, dtype=torch.float64).reshape(-1, dims)  # (p, D)
        bounds = torch.tensor([[0.0] * dims, [float(c - 1) for c in cards]], dtype=torch.float64)
        with torch.random.fork_rng(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.manual_seed(seed)
            model = MixedSingleTaskGP(
                x, y, cat_dims=list(range(dims)), outcome_transform=Standardize(m=1)
            )
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
            acqf = qLogNoisyExpectedImprovement(
                model,
                X_baseline=x,
                sampler=SobolQMCNormalSampler(torch.Size([self.mc_samples]), seed=seed),
                X_pending=x_pending if len(pending) else None,
            )
            cand, _ = optimize_acqf_mixed_alternating(
                acqf,
                bounds=bounds,
                cat_dims={i: [float(v) for v in range(c)] for i, c in enumerate(cards)},
                q=1,
                num_restarts=self.num_restarts,
                raw_samples=self.raw_samples,
                # every dim is categorical: a continuous relaxation has nothing to relax
                options={"initialization_strategy": "random"},
            )  # (1, D)
        for w in caught:
            key = f"{w.category.__name__}: {str(w.message).splitlines()[0][:160]}"
            self.warnings[key] = self.warnings.get(key, 0) + 1
        return tuple(round(float(v)) for v in cand.reshape(-1))


@register_searcher("botorch_mixed")
def botorch_mixed(space: SearchSpace, seed: int = 0, **kwargs: Any) -> PeerSearcher:
    """BoTorch's mixed/categorical path through the adapter (``BoTorchMixedProposer`` kwargs)."""
    _require("botorch_mixed")
    return PeerSearcher(space, BoTorchMixedProposer(**kwargs), seed=seed, name="botorch_mixed")
