"""Trial store and dispatch: where GPB trials are recorded and run.

- ``TrialStore``: every trial of a search in ``<run_dir>/trials.sqlite`` (SQLite, WAL mode, one
  writer), the basis of resuming a killed search.
- ``Dispatcher``: runs trial functions asynchronously; ``LocalDispatcher`` (``"local"``: one
  process per trial, one slot per GPU or CPU share) and ``RayDispatcher`` (``"ray"``: Ray tasks).
- ``run_search``: the asynchronous ask/tell loop joining a searcher, the store and a dispatcher.

>>> from attnas.controller import build_searcher
>>> from attnas.dispatch import TrialStore, build_dispatcher, run_search
>>> from attnas.space import load_space
>>> store = TrialStore.open("runs/demo")
>>> searcher = build_searcher("random", load_space("attention_nas"), seed=0)
>>> with build_dispatcher("local", trial_fn="attnas.dispatch.synthetic:run_synthetic_trial",
...                       num_workers=2, gpus=None) as dispatcher:
...     summary = run_search(searcher, store, dispatcher, budget=8)
>>> [(r.cell_hash, r.state, r.metrics["top1"]) for r in store.trials()]

This package knows trials, not GPs or ops (STYLE.md): it imports neither the controller (outcomes
are built lazily) nor torch; Ray is imported only by ``RayDispatcher``.
"""

from __future__ import annotations

from attnas.dispatch.base import (
    Dispatcher,
    TrialEvent,
    build_dispatcher,
    list_dispatchers,
    register_dispatcher,
    resolve_trial_fn,
)
from attnas.dispatch.local import LocalDispatcher, visible_gpus
from attnas.dispatch.loop import (
    SearchSummary,
    SystematicFailure,
    build_payload,
    restore_searcher,
    run_search,
)
from attnas.dispatch.ray_backend import RayDispatcher
from attnas.dispatch.store import (
    STORE_FILENAME,
    TRIAL_STATES,
    TrialRecord,
    TrialStore,
    trial_seed,
)
from attnas.dispatch.synthetic import SYNTHETIC_TRIAL_FN, synthetic_objective
from attnas.dispatch.worker import TRAIN_TRIAL_FN, run_train_trial, trial_spec_dict

__all__ = [
    "STORE_FILENAME",
    "SYNTHETIC_TRIAL_FN",
    "TRAIN_TRIAL_FN",
    "TRIAL_STATES",
    "Dispatcher",
    "LocalDispatcher",
    "RayDispatcher",
    "SearchSummary",
    "SystematicFailure",
    "TrialEvent",
    "TrialRecord",
    "TrialStore",
    "build_dispatcher",
    "build_payload",
    "list_dispatchers",
    "register_dispatcher",
    "resolve_trial_fn",
    "restore_searcher",
    "run_search",
    "run_train_trial",
    "synthetic_objective",
    "trial_seed",
    "trial_spec_dict",
    "visible_gpus",
]
