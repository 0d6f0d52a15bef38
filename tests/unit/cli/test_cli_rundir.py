"""``attnas.cli.rundir``: the fingerprint, the allow-list of what may change on resume, and
refusals that write nothing (issue 16, items 3-6); ``convert`` wraps only a conversion
(issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from attnas.cli.errors import UserError, convert
from attnas.cli.rundir import RESUME_MAY_CHANGE, RunDir, differences, holds_run

BASE = {
    "budget": 4,
    "seed": 0,
    "trainer": {"lr": 0.1, "progress": None},
    "data": {"kwargs": {"size": 32}},
    "dispatch": {"workers": 2, "timeout_s": None},
    "tracking": {"name": "jsonl"},
    "resume": False,
}


def _with(**changes: object) -> dict:
    out = OmegaConf.to_container(OmegaConf.merge(BASE, changes))
    assert isinstance(out, dict)
    return out


def test_differences_name_key_and_both_values() -> None:
    assert differences(BASE, BASE) == []
    assert differences(BASE, _with(trainer={"lr": 0.5}, seed=1)) == [
        "seed: 0 -> 1",
        "trainer.lr: 0.1 -> 0.5",
    ]
    assert differences(BASE, _with(data={"kwargs": {"size": 64}})) == ["data.kwargs.size: 32 -> 64"]
    assert differences(BASE, _with(dispatch={"timeout_s": 5})) == ["dispatch.timeout_s: None -> 5"]


def test_allow_list_workers_growing_budget_tracking() -> None:
    assert {"dispatch.workers", "budget", "tracking"} <= set(RESUME_MAY_CHANGE)
    allowed = _with(dispatch={"workers": 8}, budget=10, tracking={"name": "none"}, resume=True)
    assert differences(BASE, allowed) == []
    assert differences(BASE, _with(budget=2)) == ["budget: 4 -> 2 (a budget may grow, not shrink)"]


def test_open_refuses_and_writes_nothing(tmp_path: Path) -> None:
    cfg = OmegaConf.create(BASE)
    run = tmp_path / "run"
    with pytest.raises(UserError, match=f"nothing to resume at {run}"):
        RunDir.open(run, "attnas-search", cfg, resume=True, fingerprint=BASE)
    assert not run.exists()
    first = RunDir.open(run, "attnas-search", cfg, resume=False, fingerprint=BASE, hydra_files={})
    assert holds_run(run) and not first.resumed
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="already holds a run; pass resume=true"):
        RunDir.open(run, "attnas-search", cfg, resume=False, fingerprint=BASE)
    changed = _with(trainer={"lr": 0.5})
    with pytest.raises(UserError, match=r"settings differ .*trainer\.lr: 0\.1 -> 0\.5"):
        RunDir.open(
            run, "attnas-search", OmegaConf.create(changed), resume=True, fingerprint=changed
        )
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    again = RunDir.open(run, "attnas-search", cfg, resume=True, fingerprint=_with(budget=6))
    assert again.resumed and [i["budget"] for i in again.invocations] == [4, 6]


def test_an_older_run_is_checked_against_its_config_yaml(tmp_path: Path) -> None:
    (tmp_path / "trials.sqlite").write_bytes(b"")  # not a database: counts as a run
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(BASE)))
    with pytest.raises(UserError, match=r"seed: 0 -> 3"):
        RunDir.open(tmp_path, "attnas-search", OmegaConf.create(BASE), resume=True,
                    fingerprint=_with(seed=3))  # fmt: skip


def test_convert_keeps_the_cause_and_bugs_keep_their_traceback() -> None:
    with pytest.raises(UserError, match="searcher: bad value") as info:
        convert("searcher", lambda: (_ for _ in ()).throw(ValueError("bad value")))
    assert isinstance(info.value.__cause__, ValueError)


def test_a_bug_in_a_searcher_constructor_is_not_a_user_error(monkeypatch) -> None:
    """Issue 15: ``convert`` used to turn any ValueError raised while *building* the searcher
    into a one-line config error, hiding real bugs; only the option conversion is wrapped now."""
    from attnas.cli.search_bandit import _build_searcher
    from attnas.controller.base import _SEARCHERS
    from attnas.space import load_space

    class Buggy:
        def __init__(self, space, seed: int = 0, depth: int = 1) -> None:
            raise ValueError("internal bug")

    monkeypatch.setitem(_SEARCHERS._entries, "buggy", Buggy)
    node = OmegaConf.create({"name": "buggy", "depth": 2})
    space = load_space("attention_nas")
    with pytest.raises(ValueError, match="internal bug") as info:
        _build_searcher("buggy", space, 0, node)
    assert not isinstance(info.value, UserError)
    with pytest.raises(UserError, match=r"searcher buggy: .*unexpected keyword argument 'width'"):
        _build_searcher("buggy", space, 0, OmegaConf.create({"name": "buggy", "width": 2}))
