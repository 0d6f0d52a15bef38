"""Random search: uniformly random cell vectors, never repeating a cell (by canonical hash).

The baseline every searcher is compared with. Sampling is uniform over cell vectors (the GP's
decision set), so a graph with several vector spellings is a little more likely than one with a
single spelling; duplicates of evaluated or pending cells are rejected by hash.
"""

from __future__ import annotations

from attnas.controller.base import SearcherBase, register_searcher
from attnas.space import CellSpec, SearchSpace


@register_searcher("random")
class RandomSearch(SearcherBase):
    """Uniformly random new cells.

    Args:
        space: the search space.
        seed: same seed, same proposals (given the same observations).
    """

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        super().__init__(space, seed)

    def _propose(self, n: int, excluded: set[str]) -> list[CellSpec]:
        return self._random_cells(n, excluded, self._rng("random"))
