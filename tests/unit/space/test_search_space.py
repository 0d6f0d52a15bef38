"""``SearchSpace`` / ``load_space``: exact sizes, enumeration, encoding, sampling, file errors."""

from __future__ import annotations

import collections
import random
from pathlib import Path

import pytest
import yaml

from attnas.space import (
    CellSpec,
    OpNode,
    OpSpec,
    OpTypeCapabilities,
    SearchSpace,
    SpecError,
    load_space,
    single_op_cell,
    spaces_dir,
)
from attnas.space import capabilities as capabilities_module


def _write(tmp_path: Path, data: object, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _small(**changes: object) -> dict:
    data = {
        "schema_version": 1,
        "name": "small",
        "num_ops": 2,
        "op_types": {"dot": {"dims": ["spatial"], "activations": ["softmax", "sigmoid"]}},
        "connectivity": "multi_input",
        "supergraph": {"levels": 1, "nodes": ["dot/spatial"]},
        "derivation": {"alpha": 1, "beta": 1},
    }
    data.update(changes)
    return data


# ---------------------------------------------------------------------------------------- shipped
def test_attention_nas_space_is_the_papers():
    space = load_space("attention_nas")
    assert space.num_ops == 3
    assert len(space.op_choices()) == 24  # 2 types x 3 dims x 4 activations
    assert len(set(space.op_choices())) == 24
    assert space.cardinalities() == [24, 24, 24, 3, 7]
    assert space.size() == 290304 == 24**3 * 21
    assert space.input_choices(1) == [(0,)]
    assert space.input_choices(2) == [(0,), (1,), (0, 1)]
    assert space.input_choices(3) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert space.op_channels(64) == 16  # C_op = C / 4
    assert space.supergraph.levels == 2
    assert len(space.supergraph.nodes) == 6
    assert set(space.supergraph.nodes) == {
        (t, d) for t in ("map", "dot") for d in ("spatial", "temporal", "spatiotemporal")
    }
    assert (space.alpha, space.beta) == (3, 1)
    assert space.connectivity == "multi_input"


def test_path_and_bare_name_load_the_same_space():
    by_name = load_space("attention_nas")
    by_path = load_space(spaces_dir() / "attention_nas.yaml")
    assert by_name == by_path
    assert (spaces_dir() / "nonlocal.yaml").is_file()


def test_nonlocal_space_has_exactly_the_nonlocal_cell():
    space = load_space("nonlocal")
    assert space.size() == 1
    cells = list(space.enumerate())
    assert cells == [single_op_cell(OpSpec("dot", "spatiotemporal", "softmax"))]
    assert space.sample(0) == cells[0]
    assert space.op_channels(64) == 32  # dim_inner = dim_in / 2


def test_num_ops_override():
    space = load_space("attention_nas", num_ops=2)
    assert space.num_ops == 2
    assert space.size() == 24**2 * 3
    space1 = load_space(spaces_dir() / "attention_nas.yaml", num_ops=1)
    assert space1.size() == 24
    with pytest.raises(SpecError, match=r"attention_nas\.yaml: num_ops must be >= 1"):
        load_space("attention_nas", num_ops=0)


def test_with_overrides_and_dict_round_trip():
    space = load_space("attention_nas")
    assert SearchSpace.from_dict(space.to_dict()) == space
    two = space.with_overrides(num_ops=2, connectivity="single_input")
    assert two.cardinalities() == [24, 24, 2]
    with pytest.raises(SpecError, match="num_ops must be >= 1"):
        space.with_overrides(num_ops=0)


# ---------------------------------------------------------------------------------------- size
@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, 2 * 2 * 3),
        ({"num_ops": 3}, 2**3 * 3 * 7),
        ({"num_ops": 3, "connectivity": "single_input"}, 2**3 * 2 * 3),
        ({"num_ops": 1}, 2),
        (
            {
                "num_ops": 2,
                "op_types": {
                    "map": {"dims": ["temporal", "spatial"], "activations": ["none"]},
                    "dot": {"dims": ["spatial"], "activations": ["relu"]},
                },
            },
            3 * 3 * 3,
        ),
    ],
)
def test_size_is_exact_and_equals_enumeration(tmp_path, changes, expected):
    space = load_space(_write(tmp_path, _small(**changes)))
    assert space.size() == expected
    cells = list(space.enumerate())
    assert len(cells) == expected
    vectors = [tuple(space.encode(c)) for c in cells]
    assert len(set(vectors)) == expected  # every vector once
    for vector, cell in zip(vectors, cells):
        assert space.decode(vector) == cell
        assert space.contains(cell)
        assert cell.outputs == tuple(range(1, space.num_ops + 1))


def test_enumerate_refuses_large_spaces():
    with pytest.raises(ValueError, match=r"has 290,304 cells, more than limit=1,000"):
        next(load_space("attention_nas").enumerate(limit=1000))


def test_hash_identifies_vectors_describing_the_same_graph(tmp_path):
    """Two identical ops reading f0 in either order are one graph (documented duplicate)."""
    space = load_space(_write(tmp_path, _small()))
    cells = list(space.enumerate())
    # Both ops reading f0 with different activations: (softmax, sigmoid) and (sigmoid, softmax)
    # are one graph with the ops renumbered; every other vector is a graph of its own.
    by_hash = collections.defaultdict(list)
    for c in cells:
        by_hash[c.hash()].append(c)
    assert len(by_hash) == 12 - 1
    merged = [group for group in by_hash.values() if len(group) > 1]
    assert len(merged) == 1
    assert {tuple(n.op.activation for n in c.ops) for c in merged[0]} == {
        ("softmax", "sigmoid"),
        ("sigmoid", "softmax"),
    }


# ---------------------------------------------------------------------------------------- encode
def test_encode_decode_round_trip_over_samples():
    space = load_space("attention_nas")
    rng = random.Random(123)
    for _ in range(300):
        cell = space.sample(rng)
        vector = space.encode(cell)
        assert len(vector) == 5
        assert all(0 <= v < c for v, c in zip(vector, space.cardinalities()))
        assert space.decode(vector) == cell
        # the serialised cell is still in the space
        assert space.encode(CellSpec.from_yaml(cell.to_yaml())) == vector


def test_decode_first_and_last_vectors():
    space = load_space("attention_nas")
    first = space.decode([0, 0, 0, 0, 0])
    assert [n.op for n in first.ops] == [OpSpec("map", "spatial", "none")] * 3
    assert [n.inputs for n in first.ops] == [(0,), (0,), (0,)]
    last = space.decode([23, 23, 23, 2, 6])
    assert [n.op for n in last.ops] == [OpSpec("dot", "spatiotemporal", "softmax")] * 3
    assert [n.inputs for n in last.ops] == [(0,), (0, 1), (0, 1, 2)]


def test_decode_and_check_errors():
    space = load_space("attention_nas")
    with pytest.raises(ValueError, match="cell vector has 3 entries, space needs 5"):
        space.decode([0, 0, 0])
    with pytest.raises(ValueError, match=r"cell vector entry 3 = 3 outside 0\.\.2"):
        space.decode([0, 0, 0, 3, 0])
    x = OpSpec("dot", "spatial", "softmax")
    two = CellSpec((OpNode(x, (0,)), OpNode(x, (1,))), (1, 2))
    with pytest.raises(SpecError, match="cell has 2 ops, space 'attention_nas' has 3"):
        space.encode(two)
    bad_op = CellSpec(
        (OpNode(OpSpec("rsa", "spatial", "none"), (0,)), OpNode(x, (1,)), OpNode(x, (2,))),
        (1, 2, 3),
    )
    with pytest.raises(SpecError, match=r"op 1 \(rsa/spatial/none\) is not allowed"):
        space.check(bad_op)
    partial_out = CellSpec((OpNode(x, (0,)), OpNode(x, (1,)), OpNode(x, (2,))), (3,))
    with pytest.raises(SpecError, match="cells output every op"):
        space.check(partial_out)
    assert not space.contains(partial_out)
    single = space.with_overrides(connectivity="single_input")
    multi = CellSpec((OpNode(x, (0,)), OpNode(x, (0, 1)), OpNode(x, (2,))), (1, 2, 3))
    with pytest.raises(SpecError, match=r"op 2 reads \[0, 1\], not allowed by single_input"):
        single.check(multi)
    with pytest.raises(IndexError, match=r"op node 4 is outside 1\.\.3"):
        space.input_choices(4)


# ---------------------------------------------------------------------------------------- sample
def test_sample_is_in_space_and_deterministic_per_seed():
    space = load_space("attention_nas")
    a = [space.sample(random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    assert space.sample(7) == a[0]  # an int seed means random.Random(seed)
    rng1, rng2 = random.Random(11), random.Random(11)
    seq1 = [space.sample(rng1) for _ in range(50)]
    seq2 = [space.sample(rng2) for _ in range(50)]
    assert seq1 == seq2
    assert all(space.contains(c) for c in seq1)
    assert len({c.hash() for c in seq1}) > 45  # 50 draws from 290k cells are (nearly) all new


def test_sample_is_uniform_over_vectors(tmp_path):
    space = load_space(_write(tmp_path, _small()))  # 12 vectors
    rng = random.Random(0)
    counts = collections.Counter(tuple(space.encode(space.sample(rng))) for _ in range(2400))
    assert len(counts) == 12
    # expected 200 each; binomial sd ~ 13.5, so 140..260 is > 4 sd wide
    assert all(140 <= n <= 260 for n in counts.values()), counts


# ---------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"bogus": 1}, ["unknown key(s) ['bogus']"]),
        (
            {"op_types": {"dot": {"dims": ["spatial"], "kernel": 3}}},
            ["op_types.dot: unknown key(s) ['kernel']"],
        ),
        (
            {"op_types": {"rsa": {"dims": ["spatial"], "activations": ["softmax"]}}},
            ["op_types.rsa: unsupported combination", "type 'rsa'", "activations ['softmax']"],
        ),
        (
            {"op_types": {"sta": {"dims": "all", "activations": ["relu", "softmax"]}}},
            ["op_types.sta: unsupported combination", "activations ['relu']"],
        ),
        ({"op_types": {"foo": {"dims": "all"}}}, ["op_types.foo: unknown op type 'foo'"]),
        (
            {"op_types": {"dot": {"dims": ["bogus"]}}},
            ["op_types.dot.dims: unsupported value(s) ['bogus']"],
        ),
        (
            {"op_types": {"dot": {"activations": ["tanh"]}}},
            ["op_types.dot.activations: unsupported value(s) ['tanh']"],
        ),
        ({"op_types": {"dot": {"dims": []}}}, ["op_types.dot.dims must be 'all' or a non-empty"]),
        ({"op_types": {"dot": {"params": [1]}}}, ["op_types.dot.params must be a mapping"]),
        ({"op_types": {}}, ["op_types must be a non-empty mapping"]),
        ({"num_ops": 0}, ["num_ops must be >= 1 (K < 1 has no cell), got 0"]),
        ({"num_ops": -2}, ["num_ops must be >= 1", "got -2"]),
        ({"num_ops": "three"}, ["num_ops must be an integer, got 'three'"]),
        ({"num_ops": True}, ["num_ops must be an integer"]),
        (
            {"connectivity": "full"},
            ["connectivity 'full' is not one of", "multi_input", "single_input"],
        ),
        ({"op_channel_ratio": 0}, ["op_channel_ratio must be a number in (0, 1], got 0"]),
        ({"op_channel_ratio": 1.5}, ["op_channel_ratio must be a number in (0, 1]"]),
        ({"schema_version": 2}, ["schema_version 2 not supported"]),
        (
            {"supergraph": {"levels": 1, "nodes": ["dot/temporal"]}},
            ["supergraph.nodes[0] dot/temporal is not allowed by op_types"],
        ),
        (
            {"supergraph": {"levels": 1, "nodes": ["map/spatial"]}},
            ["supergraph.nodes[0] map/spatial is not allowed by op_types"],
        ),
        (
            {"supergraph": {"levels": 1, "nodes": ["dot/spatial", "dot"]}},
            ["supergraph.nodes[1] must be 'type/dim', got 'dot'"],
        ),
        ({"supergraph": {"levels": 0}}, ["supergraph.levels must be >= 1, got 0"]),
        ({"supergraph": {"depth": 2}}, ["supergraph: unknown key(s) ['depth']"]),
        ({"supergraph": {"nodes": []}}, ["supergraph.nodes must be 'all' or a list"]),
        ({"derivation": {"alpha": 0, "beta": 1}}, ["derivation.alpha must be in 1..1"]),
        ({"derivation": {"alpha": 1, "beta": 2}}, ["derivation.beta must be in 1..1"]),
        ({"derivation": {"gamma": 1}}, ["derivation: unknown key(s) ['gamma']"]),
    ],
)
def test_load_space_errors_name_file_and_key(tmp_path, changes, fragments):
    path = _write(tmp_path, _small(**changes), name="broken_space.yaml")
    with pytest.raises(SpecError) as info:
        load_space(path)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("key", ["num_ops", "op_types"])
def test_missing_keys_named(tmp_path, key):
    data = _small()
    del data[key]
    path = _write(tmp_path, data)
    with pytest.raises(SpecError, match=rf"space\.yaml: missing key '{key}'"):
        load_space(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SpecError, match=r"nowhere\.yaml: search-space file not found"):
        load_space(tmp_path / "nowhere.yaml")
    with pytest.raises(SpecError, match=r"no_such_space: search-space file not found"):
        load_space("no_such_space")
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_ops: [1,\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: not valid YAML"):
        load_space(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match=r"list\.yaml: a search space must be a YAML mapping"):
        load_space(listed)


def test_all_means_what_the_type_supports(tmp_path, monkeypatch):
    """``dims: all`` / ``activations: all`` expand to the type's capabilities, not every value."""
    monkeypatch.setitem(
        capabilities_module._OP_TYPES,
        "spatial_only",
        OpTypeCapabilities(("spatial",), ("softmax",)),
    )
    data = _small(
        op_types={"spatial_only": {"dims": "all", "activations": "all"}, "rsa": None},
        supergraph={"levels": 1, "nodes": "all"},
    )
    space = load_space(_write(tmp_path, data))
    assert space.op_types["spatial_only"].dims == ("spatial",)
    assert space.op_types["spatial_only"].activations == ("softmax",)
    assert space.op_types["rsa"].activations == ("none",)
    assert len(space.op_choices()) == 1 + 3
    assert space.supergraph.nodes == (
        ("spatial_only", "spatial"),
        ("rsa", "spatial"),
        ("rsa", "temporal"),
        ("rsa", "spatiotemporal"),
    )
