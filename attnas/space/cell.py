"""Discrete attention cells as plain data: ``OpSpec``, ``OpNode`` and ``CellSpec``.

A cell is a small DAG (AttentionNAS Sec. 3.2). Node 0 is the cell input f0; node k >= 1 is an
op whose input is the learnable weighted sum of the nodes in its ``inputs``. The nodes listed in
``outputs`` are concatenated, projected back to C and added to f0.

Validation happens on construction, so a ``CellSpec`` that exists is a valid graph: inputs name
existing earlier nodes (a later or equal index is reported as a cycle when it closes one, as a
forward reference otherwise), op 1 reads f0 alone, every op reaches an output, and each
(type, dim, activation) is one its type supports.

Canonical form: two specs describe the same graph when a renumbering of their ops maps one onto
the other (input lists and output lists are sets: the cell sums its inputs and the order of the
concatenated outputs only permutes the rows of the output projection). ``canonical()`` returns
the lexicographically smallest serialisation over all topological numberings that order ops by
(depth, own signature); only ops that tie on both are permuted, so it stays cheap.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnas.space.capabilities import op_type_capabilities

SCHEMA_VERSION = 1


class SpecError(ValueError):
    """A cell or search-space description is invalid; the message names the file and key."""


@dataclass(frozen=True, order=True)
class OpSpec:
    """One attention operation: its type, attention dimension and activation φ."""

    type: str
    dim: str
    activation: str

    def __post_init__(self) -> None:
        try:
            caps = op_type_capabilities(self.type)
        except KeyError as err:
            raise SpecError(str(err.args[0])) from None
        if self.dim not in caps.dims:
            raise SpecError(
                f"op type {self.type!r} does not support dim {self.dim!r}; "
                f"supported: {list(caps.dims)}"
            )
        if self.activation not in caps.activations:
            raise SpecError(
                f"op type {self.type!r} does not support activation {self.activation!r}; "
                f"supported: {list(caps.activations)}"
            )

    def __str__(self) -> str:
        return f"{self.type}/{self.dim}/{self.activation}"

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "dim": self.dim, "activation": self.activation}


@dataclass(frozen=True)
class OpNode:
    """An op of a cell and the nodes (0 = cell input) whose weighted sum it reads."""

    op: OpSpec
    inputs: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.op.to_dict(), "inputs": list(self.inputs)}


_NODE_KEYS = {"type", "dim", "activation", "inputs"}
_CELL_KEYS = {"schema_version", "ops", "outputs", "name", "meta"}


@dataclass(frozen=True)
class CellSpec:
    """A discrete attention cell: ops (nodes 1..K) with their inputs, and the output nodes.

    Args:
        ops: the op nodes in order; ``ops[k-1]`` is node k.
        outputs: node indices (>= 1) concatenated into the cell output.
        name: optional human-readable name.
        meta: free-form provenance (e.g. the derivation's α, β and weights); not part of the
            graph, ignored by ``canonical()`` and ``hash()``.
    """

    ops: tuple[OpNode, ...]
    outputs: tuple[int, ...]
    name: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "outputs", tuple(sorted({int(o) for o in self.outputs})))
        normalised = []
        for node in self.ops:
            if not isinstance(node, OpNode):
                raise SpecError(f"cell ops must be OpNode, got {type(node).__name__}")
            normalised.append(OpNode(node.op, tuple(sorted({int(i) for i in node.inputs}))))
        object.__setattr__(self, "ops", tuple(normalised))
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        k_ops = len(self.ops)
        if k_ops < 1:
            raise SpecError("cell has no ops: 'ops' needs at least one entry")
        # Checked before the per-node loop: any other input of op 1 would otherwise be reported
        # only as "not an earlier node", hiding the rule that was broken.
        if self.ops[0].inputs != (0,):
            raise SpecError(
                "ops[0] (node 1) must read the cell input alone: inputs [0], got "
                f"{list(self.ops[0].inputs)}"
            )
        for k, node in enumerate(self.ops, start=1):
            if not node.inputs:
                raise SpecError(f"ops[{k - 1}] (node {k}): 'inputs' must be a non-empty list")
            for i in node.inputs:
                if i < 0 or i > k_ops:
                    raise SpecError(
                        f"ops[{k - 1}] (node {k}): input {i} does not exist "
                        f"(nodes are 0 = cell input .. {k_ops})"
                    )
                if i >= k:
                    kind = "cycle" if self._reaches(i, k) else "forward reference"
                    raise SpecError(
                        f"ops[{k - 1}] (node {k}): input {i} is not an earlier node ({kind}); "
                        "an op may only read the cell input and earlier ops"
                    )
        if not self.outputs:
            raise SpecError("cell 'outputs' must list at least one op node")
        for o in self.outputs:
            if o < 1 or o > k_ops:
                raise SpecError(f"outputs: node {o} is not an op node (1..{k_ops})")
        live = set(self.outputs)
        for k in range(k_ops, 0, -1):
            if k in live:
                live.update(i for i in self.ops[k - 1].inputs if i > 0)
        dead = [k for k in range(1, k_ops + 1) if k not in live]
        if dead:
            raise SpecError(
                f"op node(s) {dead} are unreachable: they feed no output "
                f"(outputs {list(self.outputs)})"
            )

    def _reaches(self, start: int, target: int) -> bool:
        """Whether following inputs from node ``start`` arrives at node ``target``."""
        stack, seen = [start], set()
        while stack:
            n = stack.pop()
            if n == target:
                return True
            if n in seen or n == 0 or n > len(self.ops):
                continue
            seen.add(n)
            stack.extend(self.ops[n - 1].inputs)
        return False

    # ------------------------------------------------------------------ views
    @property
    def num_ops(self) -> int:
        return len(self.ops)

    def consumers(self, node: int) -> list[int]:
        """Op nodes that read ``node``."""
        return [k for k, n in enumerate(self.ops, start=1) if node in n.inputs]

    def describe(self) -> str:
        """A one-line-per-op description in words, for reports."""
        lines = []
        for k, node in enumerate(self.ops, start=1):
            srcs = ", ".join("input" if i == 0 else f"op {i}" for i in node.inputs)
            lines.append(
                f"op {k}: {node.op.type} attention over {node.op.dim} with "
                f"{node.op.activation} activation, reading {srcs}"
            )
        lines.append("output: concat of " + ", ".join(f"op {o}" for o in self.outputs))
        return "\n".join(lines)

    # ------------------------------------------------------------------ canonical form / hash
    def canonical(self) -> str:
        """A string identical for every spec describing the same graph (see module docstring)."""
        k_ops = len(self.ops)
        up: dict[int, str] = {0: "in"}
        depth: dict[int, int] = {0: 0}
        for k, node in enumerate(self.ops, start=1):
            up[k] = f"{node.op}(" + ",".join(sorted(up[i] for i in node.inputs)) + ")"
            depth[k] = 1 + max(depth[i] for i in node.inputs)
        down: dict[int, str] = {}
        for k in range(k_ops, 0, -1):
            outs = sorted(f"{up[c]}<{down[c]}>" for c in self.consumers(k))
            down[k] = ("*" if k in self.outputs else "") + "[" + ",".join(outs) + "]"
        key = {k: (depth[k], up[k], down[k]) for k in range(1, k_ops + 1)}
        ordered = sorted(range(1, k_ops + 1), key=lambda k: key[k])
        groups = [list(g) for _, g in itertools.groupby(ordered, key=lambda k: key[k])]
        best: str | None = None
        for perm in itertools.product(*(itertools.permutations(g) for g in groups)):
            order = [k for grp in perm for k in grp]
            new = {0: 0, **{old: i for i, old in enumerate(order, start=1)}}
            parts = [
                f"{self.ops[old - 1].op}<-"
                + ",".join(str(x) for x in sorted(new[i] for i in self.ops[old - 1].inputs))
                for old in order
            ]
            text = (
                ";".join(parts)
                + "|out="
                + ",".join(str(x) for x in sorted(new[o] for o in self.outputs))
            )
            if best is None or text < best:
                best = text
        assert best is not None
        return best

    def hash(self) -> str:
        """A short stable hash of ``canonical()`` (16 hex digits)."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        if self.name is not None:
            d["name"] = self.name
        d["ops"] = [n.to_dict() for n in self.ops]
        d["outputs"] = list(self.outputs)
        if self.meta:
            d["meta"] = _plain(self.meta)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> CellSpec:
        """Build and validate a spec from its dict form; errors name ``source`` and the key."""
        if not isinstance(data, Mapping):
            raise SpecError(f"{source}: a cell must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - _CELL_KEYS)
        if unknown:
            raise SpecError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(_CELL_KEYS)}")
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise SpecError(
                f"{source}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})"
            )
        for key in ("ops", "outputs"):
            if key not in data:
                raise SpecError(f"{source}: missing key '{key}'")
        if not isinstance(data["ops"], Sequence) or isinstance(data["ops"], str):
            raise SpecError(f"{source}: 'ops' must be a list")
        nodes = []
        for idx, raw in enumerate(data["ops"]):
            where = f"{source}: ops[{idx}]"
            if not isinstance(raw, Mapping):
                raise SpecError(f"{where} must be a mapping")
            unknown = sorted(set(raw) - _NODE_KEYS)
            if unknown:
                raise SpecError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_NODE_KEYS)}")
            missing = sorted(_NODE_KEYS - set(raw))
            if missing:
                raise SpecError(f"{where}: missing key(s) {missing}")
            if not isinstance(raw["inputs"], Sequence) or isinstance(raw["inputs"], str):
                raise SpecError(f"{where}: 'inputs' must be a list of node indices")
            try:
                op = OpSpec(str(raw["type"]), str(raw["dim"]), str(raw["activation"]))
                inputs = tuple(int(i) for i in raw["inputs"])
            except SpecError as err:
                raise SpecError(f"{where}: {err}") from None
            except (TypeError, ValueError):
                raise SpecError(f"{where}: 'inputs' must be a list of integers") from None
            nodes.append(OpNode(op, inputs))
        try:
            outputs = tuple(int(o) for o in data["outputs"])
        except (TypeError, ValueError):
            raise SpecError(f"{source}: 'outputs' must be a list of integers") from None
        try:
            return cls(
                tuple(nodes), outputs, name=data.get("name"), meta=dict(data.get("meta") or {})
            )
        except SpecError as err:
            raise SpecError(f"{source}: {err}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_json(cls, text: str, source: str = "<json>") -> CellSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(f"{source}: not valid JSON: {err}") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<yaml>") -> CellSpec:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SpecError(f"{source}: not valid YAML: {err}") from None
        return cls.from_dict(data, source)

    def save(self, path: str | Path) -> Path:
        """Write the spec as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = self.to_yaml() if path.suffix in {".yaml", ".yml"} else self.to_json()
        path.write_text(text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CellSpec:
        """Read a YAML or JSON cell file; errors name the file."""
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"{path}: cell file not found")
        text = path.read_text()
        if path.suffix == ".json":
            return cls.from_json(text, str(path))
        return cls.from_yaml(text, str(path))


def single_op_cell(op: OpSpec) -> CellSpec:
    """A cell holding exactly one op (e.g. the non-local block's (dot, spatiotemporal, softmax))."""
    return CellSpec((OpNode(op, (0,)),), (1,))


def _plain(value: Any) -> Any:
    """Recursively turn mappings/sequences/numbers into YAML/JSON-safe plain data."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def chain(ops: Iterable[OpSpec]) -> CellSpec:
    """A cell whose ops form a chain f0 -> op1 -> op2 ... with every op an output."""
    ops = list(ops)
    nodes = tuple(OpNode(op, (k,)) for k, op in enumerate(ops))
    return CellSpec(nodes, tuple(range(1, len(ops) + 1)))
