"""The peer adapters (Optuna TPE, Optuna GPSampler, BoTorch mixed) keep the ask/tell contract.

A contract test in GPyTorch's manner: every test runs over every peer through one factory, with
small BoTorch settings so that the fast suite stays fast (the study uses BoTorch's defaults).
"""

from __future__ import annotations

import importlib
import random

import pytest

from attnas.controller import (
    PEERS,
    PeerSearcher,
    Searcher,
    TrialRecord,
    build_searcher,
    peer_unavailable,
    peer_versions,
)
from attnas.space import load_space

SPACE = load_space("attention_nas").with_overrides(
    num_ops=2,
    op_types={
        "map": {"dims": ["spatial", "temporal"], "activations": ["none", "relu"]},
        "dot": {"dims": ["spatial", "temporal"], "activations": ["none", "relu"]},
    },
    supergraph={"levels": 2, "nodes": "all"},
)  # 8 * 8 * 3 = 192 vectors
_SMALL = {"botorch_mixed": dict(n_init=4, num_restarts=2, raw_samples=32, mc_samples=32)}


def make(name: str, seed: int = 0) -> PeerSearcher:
    return build_searcher(name, SPACE, seed=seed, **_SMALL.get(name, {}))  # type: ignore[return-value]


def value(cell) -> float:
    """A structured objective of the cell vector (so the models have something to fit)."""
    v = SPACE.encode(cell)
    return -((v[0] - 5) ** 2) - 0.5 * (v[1] - 2) ** 2 + v[2]


def history(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    cells: dict[str, object] = {}
    while len(cells) < n:
        cell = SPACE.sample(rng)
        cells.setdefault(cell.hash(), cell)
    return list(cells.values())


@pytest.fixture(params=PEERS)
def peer_name(request) -> str:
    return request.param


def test_every_peer_runs_here() -> None:
    assert {name: peer_unavailable(name) for name in PEERS} == dict.fromkeys(PEERS)
    versions = peer_versions()
    assert not versions["optuna"].startswith("not importable")
    assert not versions["botorch"].startswith("not importable")


def test_distinct_new_cells_that_respect_pending(peer_name: str) -> None:
    searcher = make(peer_name)
    assert isinstance(searcher, Searcher)
    cells = history(14)
    for cell in cells[:12]:
        searcher.observe(cell, value(cell))
    for cell in cells[12:]:
        searcher.mark_pending(cell)
    out = searcher.suggest(4)
    keys = [c.hash() for c in out]
    assert len(out) == 4 and len(set(keys)) == 4
    assert not set(keys) & {c.hash() for c in cells}  # neither evaluated nor pending
    assert set(keys) <= {c.hash() for c in searcher.pending}
    for cell in out:
        assert SPACE.contains(cell)


def test_same_seed_same_proposals_and_restore_continues_exactly(peer_name: str) -> None:
    cells = history(14, seed=1)
    a = make(peer_name, seed=3)
    for cell in cells[:12]:
        a.observe(cell, value(cell))
    a.mark_pending(cells[12])
    records = [TrialRecord(c, "completed", value(c)) for c in cells[:12]]
    records.append(TrialRecord(cells[12], "running"))
    b = make(peer_name, seed=3)
    b.restore(list(reversed(records)))  # another finishing order: the same data
    assert [c.hash() for c in a.suggest(2)] == [c.hash() for c in b.suggest(2)]


def test_a_peer_sees_failed_and_pending_trials() -> None:
    seen = {}

    class Recorder:
        def propose(self, cards, finished, pending, seed):
            seen.update(finished=list(finished), pending=list(pending), seed=seed)
            return (0,) * len(cards)

    searcher = PeerSearcher(SPACE, Recorder(), seed=0)
    cells = history(3)
    searcher.observe(cells[0], 0.5)
    searcher.observe(cells[1], float("nan"))  # a failure
    searcher.mark_pending(cells[2])
    searcher.suggest(1)
    assert sorted(seen["finished"]) == sorted(
        [(tuple(SPACE.encode(cells[0])), 0.5), (tuple(SPACE.encode(cells[1])), None)]
    )
    assert seen["pending"] == [tuple(SPACE.encode(cells[2]))]


def test_repeated_proposals_are_repaired_to_the_nearest_new_cell() -> None:
    class Stubborn:
        def propose(self, cards, finished, pending, seed):
            return (1, 2, 0)

    searcher = PeerSearcher(SPACE, Stubborn(), seed=0)
    first = searcher.suggest(1)[0]
    assert SPACE.encode(first) == [1, 2, 0] and searcher.repairs == 0
    second = searcher.suggest(1)[0]
    assert sum(a != b for a, b in zip(SPACE.encode(second), [1, 2, 0])) == 1  # Hamming 1
    assert searcher.repairs == 1
    seen = {first.hash(), second.hash()}
    while cells := searcher.suggest(7):  # the space drains without a repeat
        for cell in cells:
            assert cell.hash() not in seen
            seen.add(cell.hash())
    assert len(seen) == len({c.hash() for c in SPACE.enumerate()})


def test_a_missing_library_is_named(monkeypatch) -> None:
    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name == "optuna":
            raise ImportError("No module named 'optuna'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)
    reason = peer_unavailable("optuna_tpe")
    assert reason is not None and "optuna" in reason and ".[peers]" in reason
    with pytest.raises(ImportError, match="optuna_tpe needs optuna"):
        build_searcher("optuna_tpe", SPACE)
    assert peer_unavailable("botorch_mixed") is None
