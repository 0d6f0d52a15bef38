"""The search's gradient telemetry (``GradientMeter``) and collapse monitor (``collapse_summary``)
on records written by the real ``ArchitectureStep``."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from attnas.space import load_space
from attnas.supergraph.search import ArchitectureStep, DifferentiableSearchConfig, SupergraphFactory
from attnas.supergraph.telemetry import GradientMeter, collapse_summary
from attnas.supergraph.weights import ArchitectureWeights

SPACE = load_space("attention_nas")


def _records(logits_per_epoch):
    """Per-epoch telemetry of the real hook, the logits set to each entry before its epoch end
    (None: left as they are)."""
    factory = SupergraphFactory(SPACE, position_specific=False)
    factory._weights_for("all")
    records: list[dict] = []
    hook = ArchitectureStep(factory, DifferentiableSearchConfig(), SPACE.alpha, SPACE.beta)
    hook._write = lambda record, suffix="": records.append(dict(record))
    trainer = SimpleNamespace(config=SimpleNamespace(epochs=len(logits_per_epoch)),
                              steps_per_epoch=4, epoch=0)  # fmt: skip
    hook.on_fit_start(trainer)
    weights = factory.weights["all"]
    for epoch, logits in enumerate(logits_per_epoch):
        if logits is not None:
            with torch.no_grad():
                for name, value in logits.items():
                    getattr(weights, name).copy_(value)
        hook.on_epoch_end(trainer, epoch, {})
    return records


def _decided(scale: float) -> dict[str, torch.Tensor]:
    """Logits that prefer, by ``scale``, the first node of each choice."""
    nodes = SPACE.supergraph.nodes
    w = ArchitectureWeights(2, nodes, [SPACE.activations_for(t) for t, _ in nodes])
    out = {}
    for name in ("w_sink", "w_level", "w_act"):
        value = torch.zeros_like(getattr(w, name))
        value[..., 0] = scale
        out[name] = value
    return out


def test_warning_fires_when_the_weights_did_not_move():
    (summary,) = collapse_summary(_records([None] * 5)).values()
    assert summary.position == "all" and summary.epochs == (1, 2, 3, 4, 5)
    assert summary.uniform["sink"] == pytest.approx(math.log(12))
    assert summary.entropy_ratio("sink") == pytest.approx(1.0)
    assert summary.top_sink_share == pytest.approx((1 / 12,) * 5)
    # the tie-break cell never changes: stable, but every softmax is undecided
    assert summary.stable_epochs == 5
    kinds = sorted(w.split()[0] for w in summary.warnings)
    assert kinds == ["act", "level", "sink"]
    assert all("barely moved" in w for w in summary.warnings)


def test_no_warning_when_the_weights_moved_and_the_cell_settled():
    moved = [_decided(s) for s in (0.5, 1.0, 2.0, 3.0, 4.0)]
    (summary,) = collapse_summary(_records(moved)).values()
    assert summary.warnings == ()
    assert summary.entropy_ratio("sink") < 0.9
    assert summary.top_sink_share[-1] > 0.5
    assert list(summary.entropy["sink"]) == sorted(summary.entropy["sink"], reverse=True)


def test_warning_fires_when_the_cell_still_changes_at_the_end():
    first, second = _decided(4.0), _decided(4.0)
    second["w_sink"] = second["w_sink"].roll(5)  # another top node: another derived cell
    (summary,) = collapse_summary(_records([first] * 4 + [second])).values()
    assert summary.stable_epochs == 1
    assert summary.cells[-1] != summary.cells[-2]
    (warning,) = summary.warnings
    assert "still changing" in warning and "1 of 5 epochs" in warning


def test_stability_needs_the_last_fifth_of_the_epochs_and_at_least_two():
    a, b = _decided(4.0), _decided(4.0)
    b["w_sink"] = b["w_sink"].roll(5)
    # 10 epochs: the last 2 (20 %) must agree; 3 agreeing is enough, 1 is not
    ok = collapse_summary(_records([a] * 7 + [b] * 3))["all"]
    assert ok.stable_epochs == 3 and ok.warnings == ()
    assert collapse_summary(_records([a] * 7 + [b] * 3), stable_fraction=0.5)["all"].warnings
    assert "unknown" in collapse_summary(_records([a]))["all"].warnings[0]


def test_gradient_meter_coherence_is_one_for_a_constant_gradient_and_small_for_random_ones():
    weights = ArchitectureWeights(1, [("dot", "spatial"), ("dot", "temporal")],
                                  [("none",), ("none",)])  # fmt: skip
    g = torch.Generator().manual_seed(0)
    constant, noisy = GradientMeter(), GradientMeter()
    for _ in range(64):
        for meter, grad in ((constant, torch.tensor([1.0, -1.0])),
                            (noisy, torch.randn(2, generator=g))):  # fmt: skip
            weights.w_sink.grad = grad
            meter.add_weights("all", weights)
            meter.add_norm("net", [torch.full((3,), 2.0)])
            meter.step()
    a, b = constant.summary(), noisy.summary()
    assert a["grad_coherence/all/sink"] == pytest.approx(1.0)
    assert a["grad_norm/all/sink"] == pytest.approx(math.sqrt(2))
    assert a["grad_norm/net"] == pytest.approx(2 * math.sqrt(3))
    assert b["grad_coherence/all/sink"] < 0.3  # about 1/sqrt(64) for random directions
