"""``OpSpec`` / ``CellSpec``: validation messages, YAML/JSON round trips, canonical hash."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from attnas.space import SCHEMA_VERSION, CellSpec, OpNode, OpSpec, SpecError, chain, single_op_cell

X = OpSpec("dot", "spatiotemporal", "softmax")
Y = OpSpec("map", "temporal", "sigmoid")
Z = OpSpec("dot", "spatial", "relu")


def _cell(nodes: list[tuple[OpSpec, tuple[int, ...]]], outputs: tuple[int, ...]) -> CellSpec:
    return CellSpec(tuple(OpNode(op, inputs) for op, inputs in nodes), outputs)


def _node(op: OpSpec, inputs: list[int]) -> dict:
    return {**op.to_dict(), "inputs": inputs}


# ---------------------------------------------------------------------------------------- OpSpec
@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("foo", "spatial", "relu"), ["unknown op type 'foo'", "known types", "'map'", "'dot'"]),
        (
            ("map", "bogus", "relu"),
            ["op type 'map' does not support dim 'bogus'", "spatiotemporal"],
        ),
        (("dot", "temporal", "tanh"), ["op type 'dot' does not support activation 'tanh'"]),
        (
            ("rsa", "spatial", "softmax"),
            ["op type 'rsa' does not support activation 'softmax'", "supported: ['none']"],
        ),
    ],
)
def test_opspec_validation_messages(args, fragments):
    with pytest.raises(SpecError) as info:
        OpSpec(*args)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_opspec_is_plain_ordered_data():
    op = OpSpec("map", "temporal", "sigmoid")
    assert str(op) == "map/temporal/sigmoid"
    assert op.to_dict() == {"type": "map", "dim": "temporal", "activation": "sigmoid"}
    assert op == OpSpec(**op.to_dict())
    assert hash(op) == hash(OpSpec("map", "temporal", "sigmoid"))
    assert sorted([Y, X]) == [X, Y]  # ordered by (type, dim, activation)


# ---------------------------------------------------------------------------------------- CellSpec
def test_inputs_and_outputs_are_normalised_to_sorted_sets():
    cell = _cell([(X, (0,)), (Y, (1, 0, 1))], (2, 1, 2))
    assert cell.ops[1].inputs == (0, 1)
    assert cell.outputs == (1, 2)
    assert cell.num_ops == 2
    assert cell.consumers(0) == [1, 2]
    assert cell.consumers(1) == [2]
    assert cell.consumers(2) == []


def test_helpers_build_the_expected_graphs():
    one = single_op_cell(X)
    assert one.ops == (OpNode(X, (0,)),) and one.outputs == (1,)
    c = chain([X, Y, Z])
    assert [n.inputs for n in c.ops] == [(0,), (1,), (2,)]
    assert c.outputs == (1, 2, 3)
    text = c.describe()
    assert "op 1: dot attention over spatiotemporal with softmax activation, reading input" in text
    assert "op 3: dot attention over spatial with relu activation, reading op 2" in text
    assert text.endswith("output: concat of op 1, op 2, op 3")


@pytest.mark.parametrize(
    ("nodes", "outputs", "fragments"),
    [
        # op 2 reads op 3 and op 3 reads op 2: a cycle
        ([(X, (0,)), (Y, (3,)), (Z, (2,))], (1, 2, 3), ["ops[1] (node 2)", "input 3", "cycle"]),
        # self loop
        ([(X, (0,)), (Y, (2,))], (1, 2), ["ops[1] (node 2)", "input 2", "cycle"]),
        # a later node that does not close a cycle
        ([(X, (0,)), (Y, (3,)), (Z, (0,))], (1, 2, 3), ["input 3", "forward reference"]),
        # dangling inputs
        (
            [(X, (0,)), (Y, (7,))],
            (1, 2),
            ["ops[1] (node 2)", "input 7 does not exist", "0 = cell input .. 2"],
        ),
        ([(X, (0,)), (Y, (-1,))], (1, 2), ["input -1 does not exist"]),
        # unreachable op
        (
            [(X, (0,)), (Y, (1,)), (Z, (1,))],
            (2,),
            ["op node(s) [3] are unreachable", "feed no output", "outputs [2]"],
        ),
        ([(X, (0,)), (Y, (0,))], (1,), ["op node(s) [2] are unreachable"]),
        # op 1 must read f0 alone
        ([(X, (1,))], (1,), ["ops[0] (node 1) must read the cell input alone", "got [1]"]),
        ([(X, (0, 1))], (1,), ["ops[0] (node 1) must read the cell input alone", "got [0, 1]"]),
        ([(X, (0,)), (Y, (0,)), (Z, (2,))], (1, 3), None),  # valid control case
        # empty lists
        ([(X, (0,)), (Y, ())], (1, 2), ["ops[1] (node 2): 'inputs' must be a non-empty list"]),
        ([(X, (0,))], (), ["'outputs' must list at least one op node"]),
        ([(X, (0,))], (2,), ["outputs: node 2 is not an op node (1..1)"]),
        ([(X, (0,))], (0,), ["outputs: node 0 is not an op node"]),
        ([], (1,), ["cell has no ops"]),
    ],
)
def test_graph_validation_messages(nodes, outputs, fragments):
    if fragments is None:
        assert _cell(nodes, outputs).num_ops == len(nodes)
        return
    with pytest.raises(SpecError) as info:
        _cell(nodes, outputs)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_non_opnode_rejected():
    with pytest.raises(SpecError, match="cell ops must be OpNode, got dict"):
        CellSpec(({"type": "dot"},), (1,))


# ---------------------------------------------------------------------------------------- files
def _example() -> CellSpec:
    return CellSpec(
        (OpNode(X, (0,)), OpNode(Y, (0, 1)), OpNode(Z, (1, 2))),
        (2, 3),
        name="example",
        meta={"alpha": 2, "beta": 1, "w_sink": [0.25, 0.75], "source": {"run": "abc", "step": 7}},
    )


def test_yaml_round_trip_keeps_schema_version_and_meta(tmp_path):
    cell = _example()
    text = cell.to_yaml()
    data = yaml.safe_load(text)
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert data["name"] == "example"
    assert data["ops"][1] == {
        "type": "map",
        "dim": "temporal",
        "activation": "sigmoid",
        "inputs": [0, 1],
    }
    assert data["outputs"] == [2, 3]
    back = CellSpec.from_yaml(text)
    assert back == cell
    assert back.meta == cell.meta
    assert back.name == "example"
    path = cell.save(tmp_path / "sub" / "cell.yaml")
    assert path.read_text() == text
    loaded = CellSpec.load(path)
    assert loaded == cell and dict(loaded.meta) == dict(cell.meta)


def test_json_round_trip_keeps_schema_version_and_meta(tmp_path):
    cell = _example()
    text = cell.to_json()
    data = json.loads(text)
    assert data["schema_version"] == 1
    assert data["meta"]["source"] == {"run": "abc", "step": 7}
    back = CellSpec.from_json(text)
    assert back == cell and dict(back.meta) == dict(cell.meta)
    path = cell.save(tmp_path / "cell.json")
    assert json.loads(path.read_text()) == data
    assert CellSpec.load(path) == cell


def test_meta_is_not_part_of_equality_or_hash():
    a = _example()
    b = CellSpec(a.ops, a.outputs, name="example", meta={"other": 1})
    assert a == b
    assert a.hash() == b.hash()


def test_meta_with_numpy_like_scalars_is_written_as_plain_numbers():
    class _Scalar:  # anything with .item(), e.g. a numpy or torch scalar
        def item(self):
            return 0.5

    cell = CellSpec((OpNode(X, (0,)),), (1,), meta={"w": [_Scalar()], "t": (1, 2)})
    assert cell.to_dict()["meta"] == {"w": [0.5], "t": [1, 2]}
    assert "!!python" not in cell.to_yaml()


_VALID_OP = {"type": "dot", "dim": "spatial", "activation": "softmax", "inputs": [0]}


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        (
            {"ops": [_VALID_OP], "outputs": [1], "bogus": 1},
            ["cell.yaml: unknown key(s) ['bogus']", "allowed"],
        ),
        (
            {"ops": [{**_VALID_OP, "kernel": 3}], "outputs": [1]},
            ["cell.yaml: ops[0]: unknown key(s) ['kernel']"],
        ),
        (
            {"schema_version": 2, "ops": [_VALID_OP], "outputs": [1]},
            ["cell.yaml: schema_version 2 is not supported (expected 1)"],
        ),
        (
            {"schema_version": "1", "ops": [_VALID_OP], "outputs": [1]},
            ["schema_version '1' is not supported"],
        ),
        ({"outputs": [1]}, ["cell.yaml: missing key 'ops'"]),
        ({"ops": [_VALID_OP]}, ["cell.yaml: missing key 'outputs'"]),
        (
            {"ops": [{"type": "dot", "dim": "spatial", "activation": "softmax"}], "outputs": [1]},
            ["cell.yaml: ops[0]: missing key(s) ['inputs']"],
        ),
        (
            {"ops": [{"type": "dot", "inputs": [0]}], "outputs": [1]},
            ["cell.yaml: ops[0]: missing key(s) ['activation', 'dim']"],
        ),
        (
            {"ops": [{**_VALID_OP, "activation": "tanh"}], "outputs": [1]},
            ["cell.yaml: ops[0]:", "does not support activation 'tanh'"],
        ),
        (
            {"ops": [_VALID_OP, {**_VALID_OP, "inputs": [3]}], "outputs": [1, 2]},
            ["cell.yaml:", "input 3 does not exist"],
        ),
        (
            {"ops": [_VALID_OP, {**_VALID_OP, "inputs": ["a"]}], "outputs": [1, 2]},
            ["cell.yaml: ops[1]: 'inputs' must be a list of integers"],
        ),
        (
            {"ops": [{**_VALID_OP, "inputs": 0}], "outputs": [1]},
            ["cell.yaml: ops[0]: 'inputs' must be a list of node indices"],
        ),
        ({"ops": "dot", "outputs": [1]}, ["cell.yaml: 'ops' must be a list"]),
        (
            {"ops": [_VALID_OP], "outputs": ["x"]},
            ["cell.yaml: 'outputs' must be a list of integers"],
        ),
        (
            {"ops": [_VALID_OP, {**_VALID_OP, "inputs": [0]}], "outputs": [2]},
            ["cell.yaml:", "unreachable"],
        ),
        (
            {
                "ops": [_VALID_OP, {**_VALID_OP, "inputs": [3]}, {**_VALID_OP, "inputs": [2]}],
                "outputs": [1, 2, 3],
            },
            ["cell.yaml:", "cycle"],
        ),
        ([1, 2], ["cell.yaml: a cell must be a mapping, got list"]),
    ],
)
def test_from_dict_rejections_name_file_and_key(data, fragments):
    with pytest.raises(SpecError) as info:
        CellSpec.from_dict(data, "cell.yaml")
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match=r"nope\.yaml: cell file not found"):
        CellSpec.load(missing)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("ops: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: not valid YAML"):
        CellSpec.load(bad_yaml)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{ops: ")
    with pytest.raises(SpecError, match=r"bad\.json: not valid JSON"):
        CellSpec.load(bad_json)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({"ops": [_VALID_OP], "outputs": [1], "extra": True}))
    with pytest.raises(SpecError, match=r"unknown\.yaml: unknown key\(s\) \['extra'\]"):
        CellSpec.load(unknown)


# ---------------------------------------------------------------------------------------- hashing
def _renumber(cell: CellSpec, order: list[int], rng: random.Random) -> CellSpec:
    """The same graph with op ``order[i]`` (old index) placed at new index i+1; lists shuffled."""
    new = {0: 0, **{old: i for i, old in enumerate(order, start=1)}}
    nodes = []
    for old in order:
        node = cell.ops[old - 1]
        inputs = [new[i] for i in node.inputs]
        rng.shuffle(inputs)
        nodes.append(OpNode(node.op, tuple(inputs)))
    outputs = [new[o] for o in cell.outputs]
    rng.shuffle(outputs)
    return CellSpec(tuple(nodes), tuple(outputs))


def _topological_orders(cell: CellSpec, rng: random.Random, count: int) -> list[list[int]]:
    orders = []
    for _ in range(count):
        placed: list[int] = []
        remaining = set(range(1, cell.num_ops + 1))
        while remaining:
            ready = sorted(
                k for k in remaining if all(i == 0 or i in placed for i in cell.ops[k - 1].inputs)
            )
            pick = rng.choice(ready)
            placed.append(pick)
            remaining.remove(pick)
        orders.append(placed)
    return orders


def test_isomorphic_specs_share_canonical_form_and_hash():
    rng = random.Random(0)
    # two identical ops reading f0, a third reading both, and one more reading f0 and op 3
    base = _cell([(X, (0,)), (X, (0,)), (Y, (1, 2)), (Z, (0, 3)), (Y, (0,))], (3, 4, 5))
    hashes = set()
    canon = set()
    orders = _topological_orders(base, rng, 40)
    assert len({tuple(o) for o in orders}) > 5  # many distinct renumberings were tried
    for order in orders:
        other = _renumber(base, order, rng)  # the first op of a topological order reads f0 only
        hashes.add(other.hash())
        canon.add(other.canonical())
    assert len(hashes) == 1 and len(canon) == 1
    assert hashes == {base.hash()}
    assert len(base.hash()) == 16 and int(base.hash(), 16) >= 0


def test_hand_renumbered_specs_share_hash():
    a = _cell([(X, (0,)), (Y, (0,)), (Z, (1, 2))], (1, 2, 3))
    b = _cell([(Y, (0,)), (X, (0,)), (Z, (2, 1))], (3, 2, 1))
    assert a != b  # different numbering ...
    assert a.canonical() == b.canonical() and a.hash() == b.hash()  # ... same graph


def test_non_isomorphic_specs_differ():
    specs = [
        _cell([(X, (0,)), (Y, (0,)), (Z, (1, 2))], (1, 2, 3)),
        _cell([(X, (0,)), (Y, (0,)), (Z, (1, 2))], (2, 3)),  # op 1 not an output
        _cell([(X, (0,)), (Y, (0,)), (Z, (0, 1, 2))], (1, 2, 3)),  # extra edge
        _cell([(X, (0,)), (Y, (1,)), (Z, (1, 2))], (1, 2, 3)),  # Y reads X instead of f0
        _cell([(X, (0,)), (Z, (0,)), (Y, (1, 2))], (1, 2, 3)),  # types swapped
        _cell([(Y, (0,)), (X, (0,)), (Z, (1,))], (1, 2, 3)),  # Z reads Y only
        _cell([(Y, (0,)), (X, (0,)), (Z, (2,))], (1, 2, 3)),  # Z reads X only
    ]
    hashes = [s.hash() for s in specs]
    assert len(set(hashes)) == len(specs)
    assert len({s.canonical() for s in specs}) == len(specs)


def test_shared_op_differs_from_two_identical_copies():
    """Tree signatures of the outputs coincide here; only the sharing differs."""
    # one X feeding two Ys vs two Xs each feeding one Y: outputs are {Y(X(in)), Y(X(in))} in both
    shared = _cell([(X, (0,)), (Y, (1,)), (Y, (1,))], (2, 3))
    copies = _cell([(X, (0,)), (X, (0,)), (Y, (1,)), (Y, (2,))], (3, 4))
    assert shared.hash() != copies.hash()
    # the same number of ops and identical per-op upward trees, different sharing
    a = _cell([(X, (0,)), (X, (0,)), (Y, (1,)), (Y, (2,)), (Z, (1, 2))], (3, 4, 5))
    b = _cell([(X, (0,)), (X, (0,)), (Y, (1,)), (Y, (1,)), (Z, (1, 2))], (3, 4, 5))
    assert a.hash() != b.hash()
    assert a.canonical() != b.canonical()
    # and each is stable under renumbering the two X copies
    a_swapped = _cell([(X, (0,)), (X, (0,)), (Y, (2,)), (Y, (1,)), (Z, (1, 2))], (3, 4, 5))
    b_swapped = _cell([(X, (0,)), (X, (0,)), (Y, (2,)), (Y, (2,)), (Z, (1, 2))], (3, 4, 5))
    assert a_swapped.hash() == a.hash()
    assert b_swapped.hash() == b.hash()


def test_canonical_form_is_an_exact_description():
    cell = _cell([(Y, (0,)), (X, (0,)), (Z, (1, 2))], (2, 3))
    # ops ordered by (depth, signature): X sorts before Y ("dot" < "map"), Z last
    assert cell.canonical() == (
        "dot/spatiotemporal/softmax<-0;map/temporal/sigmoid<-0;dot/spatial/relu<-1,2|out=1,3"
    )
