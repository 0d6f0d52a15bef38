"""The one-shot ranking study's statistics, on hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attnas.space import CellSpec, OpNode, OpSpec
from experiments.oneshot_ranking import connectivity, kendall, spearman, top_overlap


def test_kendall_and_spearman_without_ties():
    # one discordant pair of six: tau = (5 - 1) / 6; rank differences 0, 1, -1, 0
    x, y = np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])
    assert kendall(x, y) == pytest.approx(4 / 6)
    assert spearman(x, y) == pytest.approx(1 - 6 * 2 / (4 * 15))


def test_ties_follow_tau_b_and_average_ranks():
    x, y = np.array([1.0, 1, 2]), np.array([1.0, 2, 3])
    # pairs: (0, 1) tied in x, the other two concordant: 2 / sqrt((3 - 1) * 3)
    assert kendall(x, y) == pytest.approx(2 / math.sqrt(6))
    # ranks of x: 1.5, 1.5, 3
    assert spearman(x, y) == pytest.approx(1.5 / math.sqrt(1.5 * 2))
    assert math.isnan(kendall(np.ones(4), np.arange(4.0)))  # a constant score ranks nothing
    assert math.isnan(spearman(np.ones(4), np.arange(4.0)))


def test_top_overlap_counts_the_shared_best_cells():
    truth = np.arange(20.0)
    score = truth.copy()
    score[[18, 19]] = -1  # the two best cells scored worst
    top = top_overlap(score, truth, 0.1)
    assert (top["k"], top["overlap"], top["chance"]) == (2, 0, 0.2)
    assert top_overlap(score, truth, 0.2)["overlap"] == 2  # cells 16, 17 of 16..19


def test_connectivity_names_the_three_kinds_of_k2_cells():
    op = OpSpec("dot", "spatial", "softmax")
    kinds = [
        connectivity(CellSpec((OpNode(op, (0,)), OpNode(op, inputs)), (1, 2)))
        for inputs in [(1,), (0,), (0, 1)]
    ]
    assert kinds == ["chain", "parallel", "f0+op1"]
