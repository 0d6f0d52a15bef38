"""channels-last 3D and ``torch.compile`` on CUDA: same numbers as the plain eager model."""

from __future__ import annotations

import pytest
import torch

from attnas.cells import AttentionCell
from attnas.space import CellSpec, load_space
from attnas.supergraph.search import SupergraphFactory
from attnas.train import TrainConfig, Trainer

DEVICE = torch.device("cuda")

pytestmark = pytest.mark.gpu

CELL = {
    "ops": [
        {"type": "dot", "dim": "spatiotemporal", "activation": "softmax", "inputs": [0]},
        {"type": "map", "dim": "temporal", "activation": "sigmoid", "inputs": [0, 1]},
        {"type": "dot", "dim": "spatial", "activation": "relu", "inputs": [1, 2]},
    ],
    "outputs": [1, 2, 3],
}
SHAPE = (32, 4, 8, 8)  # (C, T, H, W)


@pytest.fixture(autouse=True)
def _no_tf32():
    """Exact float32 on both sides (TF32 matmuls would differ by ~1e-3)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _cell() -> AttentionCell:
    torch.manual_seed(0)
    return AttentionCell(CellSpec.from_dict(CELL), SHAPE[0], SHAPE[0] // 4, SHAPE).to(DEVICE).eval()


def test_channels_last_cell_matches_contiguous() -> None:
    cell = _cell()
    x = torch.randn(2, *SHAPE, device="cuda")
    want = cell(x)
    cl = _cell().to(memory_format=torch.channels_last_3d)
    got = cl(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_trainer_channels_last_step_is_finite_and_uses_the_format() -> None:
    class Clips(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int):
            g = torch.Generator().manual_seed(i)
            return torch.randn(3, 8, 32, 32, generator=g), i % 4

    from attnas.backbones import build_backbone

    model = build_backbone("i3d_tiny", 4, (3, 8, 32, 32))
    config = TrainConfig(
        epochs=1,
        batch_size=4,
        channels_last=True,
        amp="bf16",
        device="cuda",
        progress=False,
        checkpoint_every=0,
    )
    trainer = Trainer(model, Clips(), Clips(), config)
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    history = trainer.fit()
    assert torch.isfinite(torch.tensor([history[-1]["train_loss"], history[-1]["val_loss"]])).all()


def test_compiled_cell_matches_eager_forward_and_backward() -> None:
    cell = _cell().train()
    compiled = torch.compile(cell)
    x = torch.randn(2, *SHAPE, device="cuda", requires_grad=True)
    want = cell(x)
    (grad_want,) = torch.autograd.grad(want.square().sum(), x)
    got = compiled(x)
    (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_got, grad_want, rtol=1e-4, atol=1e-4)


def test_compiled_supergraph_matches_eager() -> None:
    """One compilation (training mode, forward + backward), against the eager graph."""
    space = load_space("attention_nas")
    torch.manual_seed(0)
    factory = SupergraphFactory(space, position_specific=False)
    graph = factory("pos", SHAPE)
    factory.attach(graph)  # the connection weights move with the graph
    graph = graph.to(DEVICE).train()
    compiled = torch.compile(graph)
    x = torch.randn(2, *SHAPE, device="cuda", requires_grad=True)
    want = graph(x)
    (grad_want,) = torch.autograd.grad(want.square().sum(), x)
    got = compiled(x)
    (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_got, grad_want, rtol=1e-4, atol=1e-4)
