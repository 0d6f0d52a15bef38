"""The differentiable search engine: ``SuperGraph``, ``ArchitectureWeights``, ``derive_cell``."""

from __future__ import annotations

from attnas.supergraph.derive import cell_from_supergraph, derive_cell
from attnas.supergraph.graph import SuperGraph
from attnas.supergraph.weights import ArchitectureWeights

__all__ = ["ArchitectureWeights", "SuperGraph", "cell_from_supergraph", "derive_cell"]
