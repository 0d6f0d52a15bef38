from __future__ import annotations

import numpy as np
import pytest

from attnas.controller import CellEncoder
from attnas.space import CellSpec, OpNode, OpSpec, load_space


@pytest.fixture(scope="module")
def space():
    return load_space("attention_nas")


def _cell() -> CellSpec:
    return CellSpec(
        (
            OpNode(OpSpec("map", "spatial", "none"), (0,)),
            OpNode(OpSpec("dot", "temporal", "softmax"), (0, 1)),
            OpNode(OpSpec("dot", "spatiotemporal", "relu"), (1, 2)),
        ),
        (1, 2, 3),
    )


def test_widths_for_the_paper_space(space) -> None:
    assert CellEncoder(space, "categorical").num_features == 14  # 3 ops x 3 factors + 2 + 3 bits
    assert CellEncoder(space, "onehot").num_features == 32  # 3 x (2 + 3 + 4) + 5 bits


def test_codes_of_a_known_cell(space) -> None:
    enc = CellEncoder(space, "categorical")
    vec = np.array([space.encode(_cell())])
    # types (map, dot), dims (spatial, temporal, spatiotemporal),
    # activations (none, relu, sigmoid, softmax); op 2 reads {0, 1}; op 3 reads {1, 2}
    expected = [0, 0, 0, 1, 1, 3, 1, 2, 1, 1, 1, 0, 1, 1]
    assert enc.factor_codes(vec)[0].tolist() == expected
    onehot = CellEncoder(space, "onehot").features(vec)[0]
    assert onehot.sum().item() == 9 + 4  # one hot per factor + four set connectivity bits
    assert onehot[:9].tolist() == [1, 0, 1, 0, 0, 1, 0, 0, 0]


def test_match_matrix_counts_matching_factors(space) -> None:
    enc = CellEncoder(space, "categorical")
    rng = np.random.default_rng(0)
    vecs = np.stack([rng.integers(0, c, 50) for c in space.cardinalities()], axis=1)
    h = enc.match_matrix(vecs)
    codes = enc.factor_codes(vecs)
    matches = (codes[:, None, :] == codes[None, :, :]).sum(-1)
    assert np.array_equal((h @ h.T).numpy().astype(int), matches)


def test_index_of_matches_enumeration_order(space) -> None:
    enc = CellEncoder(space, "categorical")
    allv = enc.all_vectors()
    assert allv.shape == (290_304, 5)
    first = [space.encode(c) for _, c in zip(range(30), space.enumerate())]
    assert allv[:30].tolist() == first
    idx = np.array([0, 17, 123_456, 290_303])
    assert enc.index_of(allv[idx]).tolist() == idx.tolist()


def test_unknown_encoding_is_named(space) -> None:
    with pytest.raises(ValueError, match="'hamming'"):
        CellEncoder(space, "hamming")
