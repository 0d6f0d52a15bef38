"""Search spaces of attention cells (AttentionNAS Sec. 3) as plain data, and their YAML files.

A ``SearchSpace`` fixes K (ops per cell), the (dim, activation) choices allowed per op type, the
connectivity rule, C_op as a fraction of the cell's channels, the supergraph shape for the
differentiable searcher and the derivation's α/β defaults.

Cells of the space are the GPB's fixed-length vectors (paper Sec. 4.1): one op choice per op
(an index into ``op_choices()``) followed by one connectivity choice for each of ops 2..K (an
index into ``input_choices(k)``); ``encode``/``decode`` convert. With ``connectivity:
multi_input`` op k reads any non-empty subset of {f0, f1, ..., f_{k-1}} (the paper), with
``single_input`` exactly one of them. GPB cells output every op (``outputs: all``, the paper's
cell-level rule), so every op is reachable by construction.

``size()`` counts those vectors exactly: the paper's K=3 space has 24 op choices per op and
3 × 7 connectivity patterns, 24³ · 21 = 290,304 cells. Different vectors can describe the same
graph (two identical ops reading f0 in either order); ``CellSpec.hash`` identifies them.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from attnas.space.capabilities import ACTIVATIONS, DIMS, op_type_capabilities
from attnas.space.cell import SCHEMA_VERSION, CellSpec, OpNode, OpSpec, SpecError

CONNECTIVITIES = ("multi_input", "single_input")


@dataclass(frozen=True)
class OpTypeChoice:
    """The dims and activations a space allows for one op type, and its op parameters."""

    dims: tuple[str, ...]
    activations: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class SupergraphShape:
    """m levels of the same n nodes, each a fixed (type, dim); activations mixed per node."""

    levels: int = 2
    nodes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SearchSpace:
    """A space of attention cells; see the module docstring."""

    name: str
    num_ops: int
    op_types: Mapping[str, OpTypeChoice]
    connectivity: str = "multi_input"
    op_channel_ratio: float = 0.25
    supergraph: SupergraphShape = SupergraphShape()
    alpha: int = 3
    beta: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        if self.num_ops < 1:
            raise SpecError(f"space {self.name!r}: num_ops must be >= 1, got {self.num_ops}")
        if self.connectivity not in CONNECTIVITIES:
            raise SpecError(
                f"space {self.name!r}: connectivity {self.connectivity!r} is not one of "
                f"{list(CONNECTIVITIES)}"
            )
        if not self.op_types:
            raise SpecError(f"space {self.name!r}: op_types is empty")
        for t, choice in self.op_types.items():
            for d in choice.dims:
                for a in choice.activations:
                    OpSpec(t, d, a)  # raises SpecError naming the unsupported combination
        if not 0 < self.op_channel_ratio <= 1:
            raise SpecError(f"space {self.name!r}: op_channel_ratio must be in (0, 1]")
        if not self.supergraph.nodes:
            nodes = tuple((t, d) for t, c in self.op_types.items() for d in c.dims)
            object.__setattr__(self, "supergraph", replace(self.supergraph, nodes=nodes))
        for t, d in self.supergraph.nodes:
            if t not in self.op_types or d not in self.op_types[t].dims:
                raise SpecError(
                    f"space {self.name!r}: supergraph node {t}/{d} is not allowed by op_types"
                )
        if self.supergraph.levels < 1:
            raise SpecError(f"space {self.name!r}: supergraph.levels must be >= 1")
        n_nodes = len(self.supergraph.nodes) * self.supergraph.levels
        if not 1 <= self.alpha <= n_nodes:
            raise SpecError(f"space {self.name!r}: derivation.alpha must be in 1..{n_nodes}")
        if not 1 <= self.beta <= len(self.supergraph.nodes):
            raise SpecError(
                f"space {self.name!r}: derivation.beta must be in 1..{len(self.supergraph.nodes)}"
            )

    # ------------------------------------------------------------------ choices
    def op_choices(self) -> list[OpSpec]:
        """Every op the space allows, in a fixed order (type, dim, activation as declared)."""
        return [
            OpSpec(t, d, a) for t, c in self.op_types.items() for d in c.dims for a in c.activations
        ]

    def input_choices(self, k: int) -> list[tuple[int, ...]]:
        """The input sets op node ``k`` (1-based) may read, in a fixed order."""
        if k < 1 or k > self.num_ops:
            raise IndexError(f"op node {k} is outside 1..{self.num_ops}")
        if k == 1:
            return [(0,)]
        if self.connectivity == "single_input":
            return [(i,) for i in range(k)]
        return [combo for r in range(1, k + 1) for combo in itertools.combinations(range(k), r)]

    def activations_for(self, op_type: str) -> tuple[str, ...]:
        return self.op_types[op_type].activations

    def op_params(self, op_type: str) -> dict[str, Any]:
        return dict(self.op_types[op_type].params)

    def op_channels(self, channels: int) -> int:
        """C_op for a cell with ``channels`` input channels."""
        return max(1, round(channels * self.op_channel_ratio))

    # ------------------------------------------------------------------ size / enumerate / sample
    def cardinalities(self) -> list[int]:
        """Number of choices of each coordinate of the cell vector (see ``encode``)."""
        n_ops = len(self.op_choices())
        return [n_ops] * self.num_ops + [
            len(self.input_choices(k)) for k in range(2, self.num_ops + 1)
        ]

    def size(self) -> int:
        """Exact number of cell vectors in the space."""
        return math.prod(self.cardinalities())

    def decode(self, vector: Sequence[int]) -> CellSpec:
        """The cell of a choice vector ``[op_1..op_K, conn_2..conn_K]``."""
        cards = self.cardinalities()
        if len(vector) != len(cards):
            raise ValueError(f"cell vector has {len(vector)} entries, space needs {len(cards)}")
        for i, (v, c) in enumerate(zip(vector, cards)):
            if not 0 <= int(v) < c:
                raise ValueError(f"cell vector entry {i} = {v} outside 0..{c - 1}")
        ops = self.op_choices()
        k_ops = self.num_ops
        nodes = []
        for k in range(1, k_ops + 1):
            inputs = (0,) if k == 1 else self.input_choices(k)[int(vector[k_ops + k - 2])]
            nodes.append(OpNode(ops[int(vector[k - 1])], inputs))
        return CellSpec(tuple(nodes), tuple(range(1, k_ops + 1)))

    def encode(self, cell: CellSpec) -> list[int]:
        """The choice vector of ``cell``; ``SpecError`` when the cell is not in the space."""
        self.check(cell)
        ops = self.op_choices()
        vec = [ops.index(n.op) for n in cell.ops]
        vec += [
            self.input_choices(k).index(cell.ops[k - 1].inputs) for k in range(2, cell.num_ops + 1)
        ]
        return vec

    def check(self, cell: CellSpec) -> None:
        """Raise ``SpecError`` saying why ``cell`` is not in this space."""
        if cell.num_ops != self.num_ops:
            raise SpecError(f"cell has {cell.num_ops} ops, space {self.name!r} has {self.num_ops}")
        allowed = set(self.op_choices())
        for k, node in enumerate(cell.ops, start=1):
            if node.op not in allowed:
                raise SpecError(f"op {k} ({node.op}) is not allowed by space {self.name!r}")
            if node.inputs not in self.input_choices(k):
                raise SpecError(
                    f"op {k} reads {list(node.inputs)}, not allowed by {self.connectivity}"
                )
        if cell.outputs != tuple(range(1, self.num_ops + 1)):
            raise SpecError(f"space {self.name!r} cells output every op")

    def contains(self, cell: CellSpec) -> bool:
        try:
            self.check(cell)
        except SpecError:
            return False
        return True

    def enumerate(self, limit: int = 1_000_000) -> Iterator[CellSpec]:
        """Every cell vector's cell, in mixed-radix order; refuses spaces larger than ``limit``."""
        if self.size() > limit:
            raise ValueError(
                f"space {self.name!r} has {self.size():,} cells, more than limit={limit:,}"
            )
        for vector in itertools.product(*(range(c) for c in self.cardinalities())):
            yield self.decode(vector)

    def sample(self, rng: random.Random | int | None = None) -> CellSpec:
        """A uniformly random cell vector's cell."""
        if not isinstance(rng, random.Random):
            rng = random.Random(rng)
        return self.decode([rng.randrange(c) for c in self.cardinalities()])

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "description": self.description,
            "num_ops": self.num_ops,
            "op_types": {
                t: {
                    "dims": list(c.dims),
                    "activations": list(c.activations),
                    **({"params": dict(c.params)} if c.params else {}),
                }
                for t, c in self.op_types.items()
            },
            "connectivity": self.connectivity,
            "op_channel_ratio": self.op_channel_ratio,
            "supergraph": {
                "levels": self.supergraph.levels,
                "nodes": [f"{t}/{d}" for t, d in self.supergraph.nodes],
            },
            "derivation": {"alpha": self.alpha, "beta": self.beta},
        }

    def with_overrides(self, **overrides: Any) -> SearchSpace:
        """A copy with top-level fields replaced (validated again)."""
        return SearchSpace.from_dict({**self.to_dict(), **overrides}, f"<{self.name} overrides>")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> SearchSpace:
        return _parse_space(data, source)


# ---------------------------------------------------------------------- parsing
_SPACE_KEYS = {
    "schema_version",
    "name",
    "description",
    "num_ops",
    "op_types",
    "connectivity",
    "op_channel_ratio",
    "supergraph",
    "derivation",
}
_TYPE_KEYS = {"dims", "activations", "params"}
_SUPERGRAPH_KEYS = {"levels", "nodes"}
_DERIVATION_KEYS = {"alpha", "beta"}


def _check_keys(where: str, data: Any, allowed: set[str]) -> None:
    if not isinstance(data, Mapping):
        raise SpecError(f"{where} must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _names(where: str, value: Any, universe: Sequence[str]) -> tuple[str, ...]:
    if value == "all":
        return tuple(universe)
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise SpecError(f"{where} must be 'all' or a non-empty list")
    bad = [v for v in value if v not in universe]
    if bad:
        raise SpecError(f"{where}: unsupported value(s) {bad}; supported: {list(universe)}")
    return tuple(value)


def _int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where} must be an integer, got {value!r}")
    return value


def _parse_space(data: Mapping[str, Any], source: str) -> SearchSpace:
    _check_keys(source, data, _SPACE_KEYS)
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise SpecError(f"{source}: schema_version {version!r} not supported (expected 1)")
    for key in ("num_ops", "op_types"):
        if key not in data:
            raise SpecError(f"{source}: missing key '{key}'")
    num_ops = _int(f"{source}: num_ops", data["num_ops"])
    if num_ops < 1:
        raise SpecError(f"{source}: num_ops must be >= 1 (K < 1 has no cell), got {num_ops}")
    raw_types = data["op_types"]
    if not isinstance(raw_types, Mapping) or not raw_types:
        raise SpecError(f"{source}: op_types must be a non-empty mapping of type -> choices")
    op_types: dict[str, OpTypeChoice] = {}
    for t, raw in raw_types.items():
        where = f"{source}: op_types.{t}"
        try:
            caps = op_type_capabilities(t)
        except KeyError as err:
            raise SpecError(f"{where}: {err.args[0]}") from None
        raw = raw if raw is not None else {}
        _check_keys(where, raw, _TYPE_KEYS)
        # "all" means every value the type supports (a type need not support every dim)
        dims_universe = caps.dims if raw.get("dims", "all") == "all" else DIMS
        dims = _names(f"{where}.dims", raw.get("dims", "all"), dims_universe)
        acts_universe = caps.activations if raw.get("activations", "all") == "all" else ACTIVATIONS
        acts = _names(f"{where}.activations", raw.get("activations", "all"), acts_universe)
        bad_d = [d for d in dims if d not in caps.dims]
        bad_a = [a for a in acts if a not in caps.activations]
        if bad_d or bad_a:
            raise SpecError(
                f"{where}: unsupported combination: type {t!r} supports dims {list(caps.dims)} "
                f"and activations {list(caps.activations)}; asked for "
                f"{'dims ' + str(bad_d) if bad_d else ''}{' ' if bad_d and bad_a else ''}"
                f"{'activations ' + str(bad_a) if bad_a else ''}"
            )
        params = raw.get("params") or {}
        if not isinstance(params, Mapping):
            raise SpecError(f"{where}.params must be a mapping")
        op_types[str(t)] = OpTypeChoice(dims, acts, dict(params))
    connectivity = data.get("connectivity", "multi_input")
    if connectivity not in CONNECTIVITIES:
        raise SpecError(
            f"{source}: connectivity {connectivity!r} is not one of {list(CONNECTIVITIES)}"
        )
    ratio = data.get("op_channel_ratio", 0.25)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise SpecError(f"{source}: op_channel_ratio must be a number in (0, 1], got {ratio!r}")
    sg = data.get("supergraph") or {}
    _check_keys(f"{source}: supergraph", sg, _SUPERGRAPH_KEYS)
    levels = _int(f"{source}: supergraph.levels", sg.get("levels", 2))
    if levels < 1:
        raise SpecError(f"{source}: supergraph.levels must be >= 1, got {levels}")
    nodes_raw = sg.get("nodes", "all")
    if nodes_raw == "all":
        nodes = tuple((t, d) for t, c in op_types.items() for d in c.dims)
    else:
        if not isinstance(nodes_raw, Sequence) or isinstance(nodes_raw, str) or not nodes_raw:
            raise SpecError(f"{source}: supergraph.nodes must be 'all' or a list of 'type/dim'")
        nodes_list = []
        for i, n in enumerate(nodes_raw):
            parts = n.split("/") if isinstance(n, str) else list(n)
            if len(parts) != 2:
                raise SpecError(f"{source}: supergraph.nodes[{i}] must be 'type/dim', got {n!r}")
            t, d = parts
            if t not in op_types or d not in op_types[t].dims:
                raise SpecError(
                    f"{source}: supergraph.nodes[{i}] {t}/{d} is not allowed by op_types"
                )
            nodes_list.append((t, d))
        nodes = tuple(nodes_list)
    deriv = data.get("derivation") or {}
    _check_keys(f"{source}: derivation", deriv, _DERIVATION_KEYS)
    alpha = _int(f"{source}: derivation.alpha", deriv.get("alpha", 3))
    beta = _int(f"{source}: derivation.beta", deriv.get("beta", 1))
    try:
        return SearchSpace(
            name=str(data.get("name", Path(source).stem)),
            num_ops=num_ops,
            op_types=op_types,
            connectivity=connectivity,
            op_channel_ratio=float(ratio),
            supergraph=SupergraphShape(levels, nodes),
            alpha=alpha,
            beta=beta,
            description=str(data.get("description", "")),
        )
    except SpecError as err:
        raise SpecError(f"{source}: {err}") from None


def load_space(path: str | Path, **overrides: Any) -> SearchSpace:
    """Load and validate a search-space YAML file.

    Args:
        path: a YAML file (see ``search_spaces/``); a bare name such as ``"attention_nas"`` is
            looked up in the project's ``search_spaces/`` folder.
        **overrides: top-level keys replacing the file's (e.g. ``num_ops=2``).

    Raises:
        SpecError: the file is missing or malformed; the message names the file and the key.
    """
    import yaml

    path = _resolve(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, Mapping):
        raise SpecError(f"{path}: a search space must be a YAML mapping")
    data = {**data, **overrides}
    return _parse_space(data, str(path))


def spaces_dir() -> Path:
    """The project's ``search_spaces/`` folder (next to the ``attnas`` package)."""
    return Path(__file__).resolve().parents[2] / "search_spaces"


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    folders = [spaces_dir(), Path.cwd() / "search_spaces"]
    if p.suffix == "" and not p.parent.parts:
        for folder in folders:
            candidate = folder / f"{p.name}.yaml"
            if candidate.is_file():
                return candidate
    raise SpecError(
        f"{p}: search-space file not found (bare names are looked up in "
        f"{', '.join(str(f) for f in folders)})"
    )
