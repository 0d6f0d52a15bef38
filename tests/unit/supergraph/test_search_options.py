"""The search options against connection weights that do not move (issue 14): no weight decay,
a learning-rate schedule, a temperature schedule, the sink BatchNorm's initial weight during
search, β-decay regularisation, Dirichlet mixing, SDARTS random smoothing and GDAS-style Gumbel
sampling."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from attnas.space import load_space
from attnas.supergraph.search import ArchitectureStep, DifferentiableSearchConfig, SupergraphFactory
from attnas.supergraph.weights import ArchitectureWeights, temperature_at

SPACE = load_space("attention_nas")
SHAPE = (16, 2, 4, 4)


def _hook(**options) -> tuple[ArchitectureStep, SupergraphFactory]:
    factory = SupergraphFactory(SPACE, position_specific=False)
    factory("Mixed_4b", SHAPE)
    config = DifferentiableSearchConfig(**options)
    return ArchitectureStep(factory, config, SPACE.alpha, SPACE.beta), factory


def _trainer(epochs: int, steps: int, epoch: int = 0) -> SimpleNamespace:
    return SimpleNamespace(config=SimpleNamespace(epochs=epochs), steps_per_epoch=steps,
                           epoch=epoch, grad_scale=1.0, parameters=[])  # fmt: skip


def test_weight_decay_of_the_connection_weights_can_be_turned_off():
    assert _hook()[0].optimizer.param_groups[0]["weight_decay"] == 1e-3  # the default, unchanged
    hook, factory = _hook(arch_weight_decay=0.0)
    (group,) = hook.optimizer.param_groups
    assert group["weight_decay"] == 0.0
    assert {id(p) for p in group["params"]} == {id(p) for p in factory.weights["all"].parameters()}
    with pytest.raises(ValueError, match="arch_weight_decay"):
        DifferentiableSearchConfig(arch_weight_decay=-1.0)


def test_cosine_schedule_of_the_connection_weights_learning_rate():
    hook, _ = _hook(arch_lr=0.1, arch_lr_schedule="cosine", arch_min_lr_ratio=0.1, warmup_epochs=1)
    hook.on_fit_start(_trainer(epochs=5, steps=10))  # 4 search epochs after warm-up: 40 steps
    assert hook.arch_lr() == pytest.approx(0.1)
    hook.steps = 20
    assert hook.arch_lr() == pytest.approx(0.01 + 0.09 * 0.5)
    hook.steps = 40
    assert hook.arch_lr() == pytest.approx(0.01)
    constant, _ = _hook(arch_lr=0.1)
    constant.on_fit_start(_trainer(epochs=5, steps=10))
    constant.steps = 40
    assert constant.arch_lr() == 0.1
    with pytest.raises(ValueError, match="arch_lr_schedule"):
        DifferentiableSearchConfig(arch_lr_schedule="step")


def test_the_optimiser_steps_with_the_scheduled_learning_rate():
    hook, factory = _hook(arch_lr=0.1, arch_lr_schedule="cosine", arch_weight_decay=0.0)
    trainer = _trainer(epochs=1, steps=2)
    hook.on_fit_start(trainer)
    sink = factory.weights["all"].w_sink
    lrs = []
    for step in (1, 2):
        sink.grad = torch.ones_like(sink)
        hook.on_train_step(trainer, None, step)
        lrs.append(hook.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.05])  # cosine over 2 steps: the peak, then half way
    assert hook.steps == 2


def test_temperature_schedule_values():
    assert [temperature_at(e, 5, 1.0, 0.1) for e in (0, 4)] == pytest.approx([1.0, 0.1])
    assert temperature_at(2, 5, 1.0, 0.1) == pytest.approx(math.sqrt(0.1))  # geometric middle
    assert temperature_at(2, 5, 1.0, 0.2, "linear") == pytest.approx(0.6)
    assert temperature_at(3, 5, 1.0, 0.1, "constant") == 1.0
    assert temperature_at(3, 5, 2.0, None) == 2.0
    assert temperature_at(9, 5, 1.0, 0.1) == pytest.approx(0.1)  # past the end: the end value
    with pytest.raises(ValueError, match="schedule"):
        temperature_at(0, 5, 1.0, 0.1, "cosine")
    with pytest.raises(ValueError, match="temperature_final"):
        DifferentiableSearchConfig(temperature_final=0.0)


def test_hook_sets_each_epochs_temperature_also_after_a_resume():
    hook, factory = _hook(temperature=1.0, temperature_final=0.1)
    weights = factory.weights["all"]
    hook.on_fit_start(_trainer(epochs=5, steps=1))
    assert weights.temperature == 1.0
    hook.on_epoch_end(_trainer(epochs=5, steps=1), 0, {})
    assert weights.temperature == pytest.approx(0.1**0.25)
    resumed, factory = _hook(temperature=1.0, temperature_final=0.1)
    resumed.on_fit_start(_trainer(epochs=5, steps=1, epoch=4))
    assert factory.weights["all"].temperature == pytest.approx(0.1)
    # a lower temperature sharpens the same logits
    with torch.no_grad():
        factory.weights["all"].w_sink[0] = 1.0
    sharp = float(factory.weights["all"].sink_probs().detach()[0])
    factory.weights["all"].set_temperature(1.0)
    assert sharp > float(factory.weights["all"].sink_probs().detach()[0])


def test_sink_batchnorm_starts_small_but_open_during_search_when_asked():
    default = SupergraphFactory(SPACE, position_specific=False)("Mixed_4b", SHAPE)
    assert torch.equal(default.out_norm.weight, torch.zeros(SHAPE[0]))  # the convention
    factory = SupergraphFactory(SPACE, position_specific=True, sink_bn_init=0.1)
    graphs = [factory(name, SHAPE) for name in ("Mixed_4b", "Mixed_4c")]
    for graph in graphs:
        assert torch.equal(graph.out_norm.weight, torch.full((SHAPE[0],), 0.1))
    assert list(factory.graphs) == ["Mixed_4b", "Mixed_4c"]
    # open: the connection weights get a gradient from the very first step
    x = torch.randn(2, *SHAPE)
    graphs[0](x).square().sum().backward()
    assert factory.weights["Mixed_4b"].w_sink.grad.abs().max() > 0


def test_beta_decay_adds_the_softmax_of_each_row_to_the_gradients():
    nodes = SPACE.supergraph.nodes
    weights = ArchitectureWeights(2, nodes, [SPACE.activations_for(t) for t, _ in nodes])
    with torch.no_grad():
        weights.w_sink.copy_(torch.linspace(-1, 1, 12))
    rows = 1 + 6 + 12  # the sink, each level-2 node's predecessors, each node's activations
    weights.logsumexp_penalty().backward()
    torch.testing.assert_close(
        weights.w_sink.grad, torch.softmax(weights.w_sink, 0).detach() / rows
    )

    hook, factory = _hook(beta_decay=0.5)
    sink = factory.weights["all"].w_sink
    seen = []
    hook.optimizer.register_step_pre_hook(lambda *args: seen.append(sink.grad.clone()))
    hook.on_fit_start(_trainer(epochs=1, steps=1))
    sink.grad = torch.zeros_like(sink)
    hook.on_train_step(_trainer(epochs=1, steps=1), None, 1)
    torch.testing.assert_close(seen[0], torch.full((12,), 0.5 / 12 / rows))
    with pytest.raises(ValueError, match="beta_decay"):
        DifferentiableSearchConfig(beta_decay=-0.1)


def test_entropy_penalty_adds_the_gradient_of_the_mean_row_entropy():
    nodes = SPACE.supergraph.nodes
    acts = [SPACE.activations_for(t) for t, _ in nodes]
    weights = ArchitectureWeights(2, nodes, acts)
    rows = 1 + 6 + 12
    uniform = (math.log(12) + 6 * math.log(6) + sum(math.log(len(a)) for a in acts) * 2) / rows
    torch.testing.assert_close(weights.entropy_penalty(), torch.tensor(uniform))
    with torch.no_grad():
        weights.w_sink.copy_(torch.linspace(-1, 1, 12))
    weights.entropy_penalty().backward()
    p = torch.softmax(weights.w_sink, 0).detach()
    entropy = -(p * p.log()).sum()
    # dH/dw_i = -p_i (log p_i + H) for a softmax row
    torch.testing.assert_close(weights.w_sink.grad, -p * (p.log() + entropy) / rows)

    hook, factory = _hook(entropy_penalty=2.0)
    aw = factory.weights["all"]
    with torch.no_grad():
        aw.w_sink.copy_(torch.linspace(-1, 1, 12))
    seen = []
    hook.optimizer.register_step_pre_hook(lambda *args: seen.append(aw.w_sink.grad.clone()))
    hook.on_fit_start(_trainer(epochs=1, steps=1))
    for w in (aw.w_sink, aw.w_level, aw.w_act):
        w.grad = torch.zeros_like(w)
    before = aw.entropies()["entropy/sink"]
    hook.on_train_step(_trainer(epochs=1, steps=1), None, 1)
    torch.testing.assert_close(seen[0], 2.0 * weights.w_sink.grad)
    assert hook.steps == 1 and aw.entropies()["entropy/sink"] < before  # the step sharpened it
    with pytest.raises(ValueError, match="entropy_penalty"):
        DifferentiableSearchConfig(entropy_penalty=-1.0)


def test_dirichlet_mixing_samples_in_a_training_forward_and_uses_the_mean_otherwise():
    nodes = SPACE.supergraph.nodes
    weights = ArchitectureWeights(2, nodes, [SPACE.activations_for(t) for t, _ in nodes],
                                  dirichlet=True)  # fmt: skip
    with torch.no_grad():
        weights.w_sink.copy_(torch.linspace(-1, 1, 12))
    torch.manual_seed(0)
    a, b = weights.sink_probs(), weights.sink_probs()
    assert not torch.allclose(a, b)  # a fresh sample per call
    torch.testing.assert_close(a.sum(), torch.tensor(1.0))
    a[-1].backward()
    assert weights.w_sink.grad.abs().max() > 0  # reparameterised: the logits get a gradient
    concentration = torch.nn.functional.elu(weights.w_sink.detach()) + 1
    mean = concentration / concentration.sum()
    with torch.no_grad():  # derivation, evaluation: the mean
        torch.testing.assert_close(weights.sink_probs(), mean)
    torch.testing.assert_close(weights.eval().sink_probs(), mean)
    # the mean keeps the logits' order, so derivation is unchanged; zero logits are uniform
    assert weights.sink_probs().argsort().tolist() == list(range(12))
    plain = ArchitectureWeights(2, nodes, [SPACE.activations_for(t) for t, _ in nodes])
    torch.testing.assert_close(
        ArchitectureWeights.from_dict({**plain.to_dict(), "dirichlet": True}).act_probs(False),
        plain.act_probs(),
    )
    assert SupergraphFactory(SPACE, False, dirichlet=True)._weights_for("x").dirichlet
    factory = SupergraphFactory(SPACE, False, dirichlet=True, sink_bn_init=0.1)
    graph = factory("Mixed_4b", SHAPE)
    graph(torch.randn(2, *SHAPE)).sum().backward()
    assert factory.weights["all"].w_level.grad.abs().max() > 0


def test_perturbation_adds_bounded_noise_to_the_mixing_weights_in_a_training_forward_only():
    nodes = SPACE.supergraph.nodes
    acts = [SPACE.activations_for(t) for t, _ in nodes]
    weights = ArchitectureWeights(2, nodes, acts, perturbation=0.03)
    with torch.no_grad():
        weights.w_act.normal_()
    plain = ArchitectureWeights.from_dict({**weights.to_dict(), "perturbation": 0.0})
    assert ArchitectureWeights.from_dict(weights.to_dict()).perturbation == 0.03
    torch.manual_seed(0)
    noisy, again = weights.act_probs(), weights.act_probs()
    clean = plain.act_probs()
    assert not torch.allclose(noisy, again)  # fresh noise per call
    assert (noisy - clean).abs().max() <= 0.03 + 1e-7 and (noisy - clean).abs().max() > 0.01
    assert noisy.min() >= 0 and torch.all(noisy[:, ~weights.act_mask] == 0)  # masked stay 0
    # the noise is additive: the logits get the unperturbed mixture's gradient (where unclamped)
    noisy[0, 0, 0].backward()
    clean[0, 0, 0].backward()
    torch.testing.assert_close(weights.w_act.grad, plain.w_act.grad)
    with torch.no_grad():  # derivation, evaluation: no noise
        torch.testing.assert_close(weights.act_probs(), clean.detach())
    torch.testing.assert_close(weights.eval().act_probs(), clean.detach())
    config = DifferentiableSearchConfig(perturbation=0.05, dirichlet=True, position_specific=True)
    factory = SupergraphFactory.from_config(SPACE, config)
    built = factory._weights_for("x")
    assert built.perturbation == 0.05 and built.dirichlet and factory.position_specific
    with pytest.raises(ValueError, match="perturbation"):
        DifferentiableSearchConfig(perturbation=-0.1)
    with pytest.raises(ValueError, match="perturbation"):
        ArchitectureWeights(2, nodes, acts, perturbation=-1.0)


def test_gumbel_mixing_samples_one_hot_rows_in_a_training_forward_and_the_softmax_otherwise():
    nodes = SPACE.supergraph.nodes
    acts = [SPACE.activations_for(t) for t, _ in nodes]
    weights = ArchitectureWeights(2, nodes, acts, temperature=0.5, gumbel=True)
    with torch.no_grad():
        weights.w_act.normal_(generator=torch.Generator().manual_seed(1))
        weights.w_sink.copy_(torch.linspace(-1, 1, 12))
    torch.manual_seed(0)
    act = weights.act_probs()  # (m, n, A): one draw per row
    assert torch.all((act == 0) | ((act - 1).abs() < 1e-6))  # one-hot, up to rounding
    torch.testing.assert_close(act.sum(-1), torch.ones(2, len(nodes)))
    assert torch.all(act[:, ~weights.act_mask] == 0)  # a masked activation is never drawn
    # the draws follow softmax(w / τ): 4,000 of them within 5 binomial standard errors
    draws = torch.stack([weights.sink_probs().detach() for _ in range(4000)])
    expected = torch.softmax(weights.w_sink.detach() / 0.5, dim=0)
    err = 5 * (expected * (1 - expected) / 4000).sqrt()
    assert torch.all((draws.mean(0) - expected).abs() < err), (draws.mean(0), expected)
    # straight through: the gradient is that of the relaxation softmax(w / τ + g), same noise g
    c = torch.randn(12, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    (weights.sink_probs() * c).sum().backward()
    torch.manual_seed(3)
    w = weights.w_sink.detach().clone().requires_grad_()
    gumbels = -torch.empty(12).exponential_().log()
    (torch.softmax(w / 0.5 + gumbels, dim=0) * c).sum().backward()
    torch.testing.assert_close(weights.w_sink.grad, w.grad)
    assert weights.w_sink.grad.abs().min() > 0  # every choice's logit, not only the drawn one
    with torch.no_grad():  # derivation, evaluation: the softmax
        torch.testing.assert_close(weights.sink_probs(), expected)
    torch.testing.assert_close(weights.eval().sink_probs(), expected)
    assert ArchitectureWeights.from_dict(weights.to_dict()).gumbel
    config = DifferentiableSearchConfig(gumbel=True, sink_bn_init=0.1)
    factory = SupergraphFactory.from_config(SPACE, config)
    graph = factory("Mixed_4b", SHAPE)
    graph(torch.randn(2, *SHAPE)).sum().backward()
    sink_grad = factory.weights["all"].w_sink.grad  # one sampled node, every sink logit
    assert factory.weights["all"].gumbel and torch.all(sink_grad != 0)
    with pytest.raises(ValueError, match="gumbel"):
        DifferentiableSearchConfig(gumbel=True, dirichlet=True)
    with pytest.raises(ValueError, match="gumbel"):
        ArchitectureWeights(2, nodes, acts, dirichlet=True, gumbel=True)


def test_telemetry_every_n_steps_goes_to_its_own_file(tmp_path):
    factory = SupergraphFactory(SPACE, position_specific=False)
    factory("Mixed_4b", SHAPE)
    config = DifferentiableSearchConfig(telemetry_every=2)
    hook = ArchitectureStep(factory, config, 3, 1, telemetry_path=tmp_path / "telemetry.jsonl")
    trainer = _trainer(epochs=1, steps=4)
    hook.on_fit_start(trainer)
    sink = factory.weights["all"].w_sink
    for step in range(1, 5):
        sink.grad = torch.ones_like(sink)
        hook.on_train_step(trainer, None, step)
    hook.on_epoch_end(trainer, 0, {})
    lines = (tmp_path / "telemetry_steps.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["step"], r["arch_steps"]) for r in records] == [(2, 2), (4, 4)]
    assert records[0]["grad_norm/all/sink"] == pytest.approx(math.sqrt(12))
    assert records[0]["grad_coherence/all/sink"] == pytest.approx(1.0)
    (epoch,) = [
        json.loads(line) for line in (tmp_path / "telemetry.jsonl").read_text().splitlines()
    ]
    assert epoch["positions"]["all"]["grad_norm/sink"] == pytest.approx(math.sqrt(12))
