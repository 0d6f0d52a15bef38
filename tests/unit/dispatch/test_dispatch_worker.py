"""Worker side: trial-function lookup, result capture, the trainer adapter, the synthetic score."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from attnas.dispatch import resolve_trial_fn, synthetic_objective, trial_spec_dict
from attnas.dispatch.synthetic import run_synthetic_trial, target_vector
from attnas.dispatch.worker import main, run_payload
from attnas.space import load_space


def test_resolve_trial_fn_errors() -> None:
    assert resolve_trial_fn("attnas.dispatch.synthetic:run_synthetic_trial") is run_synthetic_trial
    with pytest.raises(ValueError, match=r"must look like 'package.module:function'"):
        resolve_trial_fn("attnas.dispatch.synthetic.run_synthetic_trial")
    with pytest.raises(ValueError, match=r"attnas.dispatch.synthetic has no attribute 'nope'"):
        resolve_trial_fn("attnas.dispatch.synthetic:nope")
    with pytest.raises(ValueError, match="is not callable"):
        resolve_trial_fn("attnas.dispatch.synthetic:SYNTHETIC_TRIAL_FN")


def test_run_payload_captures_errors() -> None:
    out = run_payload(
        "attnas.dispatch.synthetic:run_synthetic_trial",
        {"trial_id": 4, "cell": {}, "config": {"raise_on_trials": [4]}},
    )
    assert out["ok"] is False
    assert out["error"].startswith("Traceback") and "synthetic failure of trial 4" in out["error"]
    out = run_payload("json:dumps", {"a": 1})  # returns a str, not a dict
    assert out["ok"] is False and "returned str, expected a dict" in out["error"]
    out = run_payload("attnas.nowhere:fn", {})
    assert out["ok"] is False and "ModuleNotFoundError" in out["error"]


def test_worker_main_writes_the_result_file(tmp_path: Path) -> None:
    space = load_space("attention_nas")
    payload = {"trial_id": 1, "cell": space.sample(3).to_dict(), "trial_dir": str(tmp_path / "t")}
    (tmp_path / "p.json").write_text(json.dumps(payload))
    fn = "attnas.dispatch.synthetic:run_synthetic_trial"
    assert main([fn, str(tmp_path / "p.json"), str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["ok"] is True
    assert result["result"]["top1"] == pytest.approx(
        synthetic_objective(space.encode(space.sample(3)), space.cardinalities())
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "r.json", "t"]
    assert main(["too", "few"]) == 2


def test_synthetic_objective_formula() -> None:
    cards = [24, 24, 3, 7]
    target = target_vector(cards, target_seed=5)
    assert synthetic_objective(target, cards, 5) == 1.0
    moved = list(target)
    moved[0] = (target[0] + 12) % 24  # opposite choice: that term is (1 + cos(pi)) / 2 = 0
    moved[3] = (target[3] + 1) % 7
    expected = (0.0 + 1.0 + 1.0 + (1 + math.cos(2 * math.pi / 7)) / 2) / 4
    assert synthetic_objective(moved, cards, 5) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="cell vector has 3 entries, cardinalities have 4"):
        synthetic_objective([0, 0, 0], cards)


def test_trial_spec_dict_builds_a_trial_spec(tmp_path: Path) -> None:
    from attnas.train.spec import TrialSpec

    cell = load_space("attention_nas").sample(0)
    payload = {
        "trial_id": 7,
        "cell": cell.to_dict(),
        "seed": 1234,
        "attempt": 2,
        "trial_dir": str(tmp_path / "trials" / "7"),
        "config": {"backbone": "i3d_tiny", "train": {"epochs": 2, "lr": 0.05, "seed": 0}},
    }
    spec = TrialSpec.from_dict(trial_spec_dict(payload))
    assert spec.cell == cell.to_dict() and spec.backbone == "i3d_tiny"
    assert spec.run_dir == str(tmp_path / "trials" / "7")
    assert (spec.train.seed, spec.seed, spec.train.epochs, spec.train.lr) == (1234, 1234, 2, 0.05)
    assert spec.resume is True and spec.name == "trial-7"
    assert payload["config"]["train"]["seed"] == 0  # the payload is not modified
    with pytest.raises(KeyError, match="dispatch payload has no 'seed'"):
        trial_spec_dict({"cell": {}, "trial_dir": "x", "trial_id": 1})
