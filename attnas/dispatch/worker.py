"""The worker side of dispatch: run one trial function on one payload, and the trainer adapter.

``python -m attnas.dispatch.worker FN PAYLOAD_JSON RESULT_JSON`` (what ``LocalDispatcher``
starts, one process per trial) reads the payload, calls the trial function named by ``FN``
(``"package.module:function"``) and writes ``{"ok": true, "result": {...}}`` or
``{"ok": false, "error": "<traceback>"}`` to ``RESULT_JSON`` atomically (a temporary file, then
``os.replace``), so the search process either finds a whole result or none. A worker that dies
leaves no result file; the dispatcher reports that as the worker's death. Workers never touch
the trial store.

A worker whose parent (the search process) disappears exits within a second (a watchdog thread
compares ``os.getppid()`` with the parent it started under), so killing the search never leaves
orphan trials holding a GPU.

``run_train_trial`` is the production trial function (``"attnas.dispatch.worker:run_train_trial"``):
it turns a payload into an ``attnas.train.TrialSpec`` and returns ``run_trial(spec).to_dict()``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attnas.dispatch.base import resolve_trial_fn

TRAIN_TRIAL_FN = "attnas.dispatch.worker:run_train_trial"


def run_payload(fn_path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Call the trial function on ``payload``; never raises for the trial's own errors.

    Args:
        fn_path: ``"package.module:function"``.
        payload: the trial's payload dict.

    Returns:
        ``{"ok": True, "result": metrics}`` or ``{"ok": False, "error": traceback text}``.
    """
    try:
        fn = resolve_trial_fn(fn_path)
        result = fn(dict(payload))
        if not isinstance(result, Mapping):
            raise TypeError(
                f"trial function {fn_path} returned {type(result).__name__}, expected a dict"
            )
        result = dict(result)
        json.dumps(result)  # fail here, in the trial, when the result cannot travel
    except Exception:
        return {"ok": False, "error": traceback.format_exc()}
    return {"ok": True, "result": result}


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file and ``os.replace``."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _watch_parent(parent: int, interval_s: float = 0.5) -> None:
    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, name="attnas-parent-watchdog", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Entry point of a local worker process (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        usage = "usage: python -m attnas.dispatch.worker FN PAYLOAD_JSON RESULT_JSON"
        print(usage, file=sys.stderr)
        return 2
    fn_path, payload_path, result_path = args
    _watch_parent(os.getppid())
    payload = json.loads(Path(payload_path).read_text(encoding="utf-8"))
    outcome = run_payload(fn_path, payload)
    write_json_atomic(Path(result_path), outcome)
    return 0


def trial_spec_dict(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The ``attnas.train.TrialSpec`` dict of a dispatch payload.

    ``payload["config"]`` holds the ``TrialSpec`` fields shared by every trial of the search
    (backbone, data, ``train`` config, ...); the payload adds the cell, the trial directory as
    the spec's ``run_dir`` (checkpoints and logs go there), the trial's seed as ``train.seed``
    and ``resume=True``, so a re-queued trial continues from its last checkpoint.

    Args:
        payload: a payload built by ``attnas.dispatch.build_payload``.

    Returns:
        The dict for ``TrialSpec.from_dict``.
    """
    for key in ("cell", "seed", "trial_dir", "trial_id"):
        if key not in payload:
            raise KeyError(f"dispatch payload has no {key!r} (keys: {sorted(payload)})")
    config = dict(payload.get("config") or {})
    train = dict(config.get("train") or {})
    train["seed"] = int(payload["seed"])
    config.update(
        cell=dict(payload["cell"]),
        run_dir=str(payload["trial_dir"]),
        train=train,
        trial_key=None,
        resume=True,
    )
    config.setdefault("name", f"trial-{payload['trial_id']}")
    return config


def run_train_trial(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Trial function running ``attnas.train.run_trial`` on a payload (see ``trial_spec_dict``).

    Returns:
        ``TrialResult.to_dict()`` (``status``, ``top1``, ``error``, ...).
    """
    from attnas.train import TrialSpec, run_trial

    spec = TrialSpec.from_dict(trial_spec_dict(payload))
    return run_trial(spec).to_dict()


if __name__ == "__main__":
    sys.exit(main())
