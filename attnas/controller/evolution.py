"""Regularised (aging) evolution, Real et al. 2019 ("Regularized evolution for image classifier
architecture search", AAAI), asynchronous form, over the cell vectors of a ``SearchSpace``.

- Until the population holds ``population_size`` completed cells, propose random new cells.
- Then each proposal samples ``sample_size`` members uniformly (with replacement, as in the
  paper's Algorithm 1), takes the best as parent and mutates one coordinate of its vector (one
  op choice or one connectivity choice) to a different value, uniformly.
- Every completed trial joins the population as its youngest member; when the population exceeds
  ``population_size`` the oldest is removed (aging, not the worst).

Choices where the paper is silent: failed trials never join the population (they have no
fitness) but are never proposed again; a child that is already evaluated or pending (by hash,
so isomorphic duplicates count) is re-drawn, up to 100 times per proposal, then a random new
cell is proposed instead. ``restore`` replays records in the order given, so pass them in
completion order to rebuild the same population.
"""

from __future__ import annotations

from collections import deque

from attnas.controller.base import Observation, SearcherBase, register_searcher
from attnas.space import CellSpec, SearchSpace


@register_searcher("evolution")
class RegularizedEvolution(SearcherBase):
    """Aging evolution with tournament selection and one-coordinate mutation.

    Args:
        space: the search space.
        seed: same seed, same proposals (given the same observations).
        population_size: P, members kept (the oldest is removed beyond it).
        sample_size: S, members drawn per tournament.
    """

    def __init__(
        self, space: SearchSpace, seed: int = 0, population_size: int = 20, sample_size: int = 5
    ) -> None:
        super().__init__(space, seed)
        if population_size < 1 or sample_size < 1:
            raise ValueError(
                f"population_size and sample_size must be >= 1, got {population_size}, "
                f"{sample_size}"
            )
        self.population_size = int(population_size)
        self.sample_size = int(sample_size)
        self.population: deque[Observation] = deque()

    def _on_observe(self, obs: Observation) -> None:
        if obs.outcome.failed:
            return
        self.population.append(obs)
        while len(self.population) > self.population_size:
            self.population.popleft()

    def _propose(self, n: int, excluded: set[str]) -> list[CellSpec]:
        rng = self._rng("evolution")
        if len(self.population) < self.population_size:
            return self._random_cells(n, excluded, rng)
        cards = self.space.cardinalities()
        taken = set(excluded)
        out: list[CellSpec] = []
        members = list(self.population)
        for _ in range(n):
            child = None
            for _attempt in range(100):
                sample = [members[rng.randrange(len(members))] for _ in range(self.sample_size)]
                parent = max(sample, key=lambda o: o.outcome.value)
                vector = list(parent.vector)
                i = rng.randrange(len(cards))
                if cards[i] < 2:
                    continue
                vector[i] = rng.choice([v for v in range(cards[i]) if v != vector[i]])
                cell = self.space.decode(vector)
                if cell.hash() not in taken:
                    child = cell
                    break
            if child is None:
                fallback = self._random_cells(1, taken, rng)
                if not fallback:
                    break
                child = fallback[0]
            taken.add(child.hash())
            out.append(child)
        return out
