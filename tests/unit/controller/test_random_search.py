from __future__ import annotations

from attnas.controller import RandomSearch
from attnas.space import load_space


def test_same_seed_same_proposals_and_distinct_cells() -> None:
    space = load_space("attention_nas")
    a, b = RandomSearch(space, seed=7), RandomSearch(space, seed=7)
    for searcher in (a, b):
        for i, cell in enumerate(searcher.suggest(6)):
            searcher.observe(cell, 0.1 * i)
    assert [o.cell.hash() for o in a.observations] == [o.cell.hash() for o in b.observations]
    nxt = a.suggest(20)
    assert [c.hash() for c in nxt] == [c.hash() for c in b.suggest(20)]
    assert len({c.hash() for c in nxt} | {o.cell.hash() for o in a.observations}) == 26
    assert [c.hash() for c in RandomSearch(space, seed=8).suggest(6)] != [
        o.cell.hash() for o in a.observations
    ]
    assert a.best()[1] == 0.5
