"""A synthetic trial function for tests and demos of dispatch (no training, no torch).

``run_synthetic_trial`` (``"attnas.dispatch.synthetic:run_synthetic_trial"``) scores a cell by
``synthetic_objective``, a deterministic function of its choice vector, and can be told to
sleep, raise, kill its own process or return NaN for chosen trials, so every path of a search
(slow trials, failures, worker deaths, timeouts) can be exercised in seconds.

The objective: with the space's cardinalities ``c_i`` and a target vector ``t`` drawn from
``target_seed``, a cell vector ``v`` scores ``mean_i (1 + cos(2π (v_i - t_i) / c_i)) / 2``, in
[0, 1] and 1 exactly at ``v = t``; a choice next to the target's (cyclically) scores higher than
one far from it.

Every execution first appends ``"<pid> <attempt>"`` to ``<trial_dir>/executions.log``, so a test
can count how many times each trial ran.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SYNTHETIC_TRIAL_FN = "attnas.dispatch.synthetic:run_synthetic_trial"


def target_vector(cardinalities: Sequence[int], target_seed: int = 0) -> list[int]:
    """The optimum of ``synthetic_objective``: one choice per coordinate drawn from the seed."""
    rng = random.Random(f"attnas.synthetic:{int(target_seed)}")
    return [rng.randrange(int(c)) for c in cardinalities]


def synthetic_objective(
    vector: Sequence[int], cardinalities: Sequence[int], target_seed: int = 0
) -> float:
    """The synthetic score of a cell vector (see the module docstring).

    Args:
        vector: the cell's choice vector (``SearchSpace.encode``).
        cardinalities: ``SearchSpace.cardinalities()``.
        target_seed: picks the optimum.

    Returns:
        A value in [0, 1]; 1 at the target vector.
    """
    if len(vector) != len(cardinalities):
        raise ValueError(
            f"cell vector has {len(vector)} entries, cardinalities have {len(cardinalities)}"
        )
    target = target_vector(cardinalities, target_seed)
    terms = [
        (1.0 + math.cos(2.0 * math.pi * (int(v) - t) / int(c))) / 2.0
        for v, t, c in zip(vector, target, cardinalities)
    ]
    return sum(terms) / len(terms)


def _ids(config: Mapping[str, Any], key: str) -> set[int]:
    return {int(i) for i in config.get(key) or ()}


def run_synthetic_trial(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Score the payload's cell; behaviour controlled by ``payload["config"]``.

    Config keys (all optional):
        space: the search space file or name (default ``"attention_nas"``).
        target_seed: picks the objective's optimum (default 0).
        sleep_s: seconds to sleep before returning (default 0).
        sleep_s_by_trial: ``{trial_id: seconds}`` overriding ``sleep_s``.
        raise_on_trials: trial ids that raise ``RuntimeError``.
        crash_on_trials: ``{trial_id: n}``: the process kills itself with SIGKILL on attempts
            1..n of that trial.
        nan_on_trials: trial ids that return ``top1 = NaN``.
        report_env: environment variable names whose values are returned under ``env``
            (to check a worker's pinning).

    Args:
        payload: a dispatch payload (``cell``, ``trial_id``, ``attempt``, ``trial_dir``, ...).

    Returns:
        ``{"top1": score, "trial_id", "attempt", "pid"}`` (and ``env`` when asked).
    """
    from attnas.space import CellSpec, load_space

    config = dict(payload.get("config") or {})
    trial_id = int(payload["trial_id"])
    attempt = int(payload.get("attempt", 1))
    trial_dir = payload.get("trial_dir")
    if trial_dir:
        Path(trial_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(trial_dir) / "executions.log", "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {attempt}\n")
    crash = {int(k): int(v) for k, v in (config.get("crash_on_trials") or {}).items()}
    if attempt <= crash.get(trial_id, 0):
        os.kill(os.getpid(), signal.SIGKILL)
    if trial_id in _ids(config, "raise_on_trials"):
        raise RuntimeError(f"synthetic failure of trial {trial_id}")
    sleeps = {int(k): float(v) for k, v in (config.get("sleep_s_by_trial") or {}).items()}
    delay = sleeps.get(trial_id, float(config.get("sleep_s", 0.0)))
    if delay > 0:
        time.sleep(delay)
    space = load_space(config.get("space", "attention_nas"))
    cell = CellSpec.from_dict(payload["cell"], source=f"payload of trial {trial_id}")
    value = synthetic_objective(
        space.encode(cell), space.cardinalities(), int(config.get("target_seed", 0))
    )
    if trial_id in _ids(config, "nan_on_trials"):
        value = float("nan")
    out: dict[str, Any] = {
        "top1": value,
        "trial_id": trial_id,
        "attempt": attempt,
        "pid": os.getpid(),
    }
    if config.get("report_env"):
        out["env"] = {k: os.environ.get(k) for k in config["report_env"]}
    return out
