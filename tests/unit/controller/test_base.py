"""Searcher protocol, outcomes, records, registry; the drain test runs over every searcher."""

from __future__ import annotations

import random

import pytest

from attnas.controller import (
    GPBandit,
    RandomSearch,
    RegularizedEvolution,
    Searcher,
    TrialOutcome,
    TrialRecord,
    build_searcher,
    list_searchers,
    register_searcher,
)
from attnas.space import load_space


@pytest.fixture(scope="module")
def small_space():
    """K=2, map op over 2 dims x 2 activations: 4 * 4 * 3 = 48 vectors, 42 distinct graphs
    (two different ops both reading f0 are the same cell in either order: 12 ordered pairs)."""
    return load_space("attention_nas").with_overrides(
        num_ops=2,
        op_types={"map": {"dims": ["spatial", "temporal"], "activations": ["relu", "softmax"]}},
        supergraph={"levels": 2, "nodes": "all"},
    )


def test_small_space_counts(small_space) -> None:
    assert small_space.size() == 48
    assert len({c.hash() for c in small_space.enumerate()}) == 42


@pytest.mark.parametrize("name", ["gpb", "random", "evolution"])
def test_searcher_drains_the_space_without_repeating_a_graph(small_space, name: str) -> None:
    kwargs = {
        "gpb": dict(n_init=2, fit_restarts=0, fit_maxiter=20),
        "evolution": dict(population_size=5, sample_size=2),
    }
    searcher = build_searcher(name, small_space, seed=0, **kwargs.get(name, {}))
    assert isinstance(searcher, Searcher)
    seen: list[str] = []
    rng = random.Random(0)
    while True:
        cells = searcher.suggest(5)
        if not cells:
            break
        seen += [c.hash() for c in cells]
        for cell in cells:
            searcher.observe(cell, rng.random())
    assert len(seen) == len(set(seen)) == 42


def test_outcome_rules() -> None:
    assert TrialOutcome.success(0.5).value == 0.5
    nan = TrialOutcome(value=float("inf"))
    assert nan.failed and nan.value is None and nan.error == "non-finite objective value inf"
    with pytest.raises(ValueError, match="needs a value"):
        TrialOutcome()


def test_observe_twice_and_isomorphic_duplicates_are_refused(small_space) -> None:
    searcher = RandomSearch(small_space, seed=0)
    a = small_space.decode([0, 1, 0])  # ops 1 and 2 both read f0
    b = small_space.decode([1, 0, 0])  # the same graph with the ops swapped
    assert a.hash() == b.hash()
    searcher.observe(a, 0.3)
    with pytest.raises(ValueError, match="already observed"):
        searcher.observe(b, 0.4)
    with pytest.raises(ValueError, match="already observed"):
        searcher.mark_pending(b)
    with pytest.raises(TypeError, match="TrialOutcome or a float"):
        searcher.observe(small_space.decode([2, 2, 1]), "0.4")


def test_pending_release_and_restore(small_space) -> None:
    searcher = RandomSearch(small_space, seed=1)
    cells = searcher.suggest(3)
    searcher.release(cells[0])
    assert {c.hash() for c in searcher.pending} == {c.hash() for c in cells[1:]}
    with pytest.raises(KeyError, match="not pending"):
        searcher.release(cells[0])
    searcher.observe(cells[1], 0.7)
    records = [
        {"cell": cells[1].to_dict(), "state": "completed", "metrics": {"top1": 0.7}},
        TrialRecord(cells[2], "running"),
    ]
    fresh = RandomSearch(small_space, seed=1)
    fresh.restore(records)
    assert fresh.best() == (cells[1], 0.7)
    assert [c.hash() for c in fresh.pending] == [cells[2].hash()]
    assert [c.hash() for c in fresh.suggest(4)] == [c.hash() for c in searcher.suggest(4)]
    with pytest.raises(RuntimeError, match="fresh searcher"):
        fresh.restore(records)
    with pytest.raises(ValueError, match=r"no 'value' and no metrics\['top1'\]"):
        TrialRecord.coerce({"cell": cells[0].to_dict(), "state": "completed", "metrics": {}})
    with pytest.raises(ValueError, match="'done' is not one of"):
        TrialRecord(cells[0], "done")


def test_registry() -> None:
    assert {"gpb", "random", "evolution"} <= set(list_searchers())
    with pytest.raises(ValueError, match="'random' is already registered"):
        register_searcher("random")(RandomSearch)
    with pytest.raises(KeyError, match="unknown searcher 'bayes'"):
        build_searcher("bayes", load_space("attention_nas"))
    assert isinstance(build_searcher("gpb", load_space("attention_nas")), GPBandit)
    assert isinstance(
        build_searcher("evolution", load_space("attention_nas")), RegularizedEvolution
    )
