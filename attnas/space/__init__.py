"""Search-space data: ops, cells and spaces of cells. Pure data; imports no torch.

>>> from attnas.space import load_space
>>> space = load_space("attention_nas")
>>> space.size()
290304
"""

from __future__ import annotations

from attnas.space.capabilities import (
    ACTIVATIONS,
    DIMS,
    OpTypeCapabilities,
    declare_op_type,
    known_op_types,
    op_type_capabilities,
)
from attnas.space.cell import (
    SCHEMA_VERSION,
    CellSpec,
    OpNode,
    OpSpec,
    SpecError,
    chain,
    single_op_cell,
)
from attnas.space.search_space import (
    OpTypeChoice,
    SearchSpace,
    SupergraphShape,
    load_space,
    spaces_dir,
)

__all__ = [
    "ACTIVATIONS",
    "DIMS",
    "SCHEMA_VERSION",
    "CellSpec",
    "OpNode",
    "OpSpec",
    "OpTypeCapabilities",
    "OpTypeChoice",
    "SearchSpace",
    "SpecError",
    "SupergraphShape",
    "chain",
    "declare_op_type",
    "known_op_types",
    "load_space",
    "op_type_capabilities",
    "single_op_cell",
    "spaces_dir",
]
