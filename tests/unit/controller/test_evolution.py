from __future__ import annotations

import numpy as np

from attnas.controller import RegularizedEvolution, TrialOutcome
from attnas.space import load_space


def test_aging_tournament_and_one_coordinate_mutation() -> None:
    space = load_space("attention_nas")
    evo = RegularizedEvolution(space, seed=0, population_size=6, sample_size=3)
    first = evo.suggest(6)  # random until the population is full
    for i, cell in enumerate(first):
        evo.observe(cell, float(i))
    failed = evo.suggest(1)[0]
    evo.observe(failed, TrialOutcome.failure("exception"))
    assert len(evo.population) == 6 and failed.hash() not in {o.cell.hash() for o in evo.population}
    children = evo.suggest(10)
    parents = np.array([o.vector for o in evo.population])
    for child in children:
        diff = (parents != np.array(space.encode(child))).sum(1)
        assert diff.min() == 1  # one coordinate away from some member (its parent)
    # aging: adding a member removes the oldest, whatever its fitness
    evo.observe(children[0], -1.0)
    assert [o.outcome.value for o in evo.population] == [1.0, 2.0, 3.0, 4.0, 5.0, -1.0]


def test_evolution_is_deterministic_given_seed() -> None:
    space = load_space("attention_nas")
    runs = []
    for _ in range(2):
        evo = RegularizedEvolution(space, seed=4, population_size=4, sample_size=2)
        out = []
        for step in range(4):
            cells = evo.suggest(3)
            out += [c.hash() for c in cells]
            for j, cell in enumerate(cells):
                evo.observe(cell, float((step * 7 + j * 3) % 5))
        runs.append(out)
    assert runs[0] == runs[1] and len(set(runs[0])) == 12
