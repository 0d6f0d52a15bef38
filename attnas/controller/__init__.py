"""Searchers that propose attention cells: the GP bandit (paper Sec. 4.1), two baselines, and
the peers users would pick instead (Optuna TPE and GPSampler, BoTorch's mixed path; ``peers.py``,
installed with ``pip install -e ".[peers]"``).

All follow the ask/tell ``Searcher`` protocol (``suggest(n)``, ``observe(cell, result)``,
``mark_pending``, ``release``, ``restore``) and are registered by name:

>>> from attnas.space import load_space
>>> from attnas.controller import build_searcher
>>> searcher = build_searcher("random", load_space("attention_nas"), seed=0)
>>> cell = searcher.suggest(1)[0]
>>> searcher.observe(cell, 0.41)

This package imports no attention op, Hydra or wandb (STYLE.md's layering): it knows cells only
as ``attnas.space`` data.
"""

from __future__ import annotations

from attnas.controller.base import (
    TRIAL_STATES,
    Observation,
    Searcher,
    SearcherBase,
    TrialOutcome,
    TrialRecord,
    build_searcher,
    list_searchers,
    register_searcher,
)
from attnas.controller.beta import BetaSchedule, gp_ucb_beta
from attnas.controller.encoding import ENCODINGS, CellEncoder
from attnas.controller.evolution import RegularizedEvolution
from attnas.controller.gp_bandit import FAILURE_RULES, GPBandit
from attnas.controller.peers import (
    PEERS,
    BoTorchMixedProposer,
    OptunaProposer,
    PeerSearcher,
    peer_unavailable,
    peer_versions,
)
from attnas.controller.random_search import RandomSearch

__all__ = [
    "ENCODINGS",
    "FAILURE_RULES",
    "PEERS",
    "TRIAL_STATES",
    "BetaSchedule",
    "BoTorchMixedProposer",
    "CellEncoder",
    "GPBandit",
    "Observation",
    "OptunaProposer",
    "PeerSearcher",
    "RandomSearch",
    "RegularizedEvolution",
    "Searcher",
    "SearcherBase",
    "TrialOutcome",
    "TrialRecord",
    "build_searcher",
    "gp_ucb_beta",
    "list_searchers",
    "peer_unavailable",
    "peer_versions",
    "register_searcher",
]
