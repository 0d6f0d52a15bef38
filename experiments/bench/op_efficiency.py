"""Benchmark 1: our (dot, spatiotemporal, softmax) op and ``NonLocalBlock`` vs a restatement.

The restatement is the non-local block written out as the paper's equations read: θ, φ, g as
1×1×1 convolutions, the explicit N×N matrix ``softmax(θᵀφ · d^-1/2)``, then ``A gᵀ``; for the
block also ``conv_out``, BatchNorm and the residual. It runs on the very parameters of the
module it is compared with, and its output is checked equal before anything is timed.

Sizes: I3D-R50's res4 non-local block scaled to CPU (C=256 -> inner 128 rather than
1024 -> 512, T=4 (quick) or 8 (full), 14×14). The op is built with ``c_out = inner`` so that it
computes exactly the block's attention core (θ = G1, φ = G2, g = G3); the block's final
BatchNorm weight is set to one (its zero init would make the output independent of the
attention). Goal: time and peak memory of forward + backward ≤ 1.0× the restatement's.
``details["ours_attention_kernels"]`` names the kernel ``scaled_dot_product_attention`` chose
(on CPU the fused flash kernel needs 4-D ``(B, heads, N, d)`` inputs and equal q/v widths;
otherwise it runs the math path, which forms the N×N matrix like the restatement).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile

from attnas.blocks import NonLocalBlock
from attnas.ops import build_op
from experiments.bench import (
    MIB,
    BenchConfig,
    BenchResult,
    interleaved_times,
    ms,
    paired_ratio,
    peak_memory,
    profile_lines,
    ratio_result,
)

NAME = "op_efficiency"


def restated_attention(
    x: torch.Tensor,
    theta: tuple[torch.Tensor, torch.Tensor],
    phi: tuple[torch.Tensor, torch.Tensor],
    g: tuple[torch.Tensor, torch.Tensor],
    scale: float,
) -> torch.Tensor:
    """``softmax(θᵀφ · scale) gᵀ`` with the N×N matrix formed explicitly.

    Args:
        x: input.
        theta: (weight ``(d, C)``, bias ``(d,)``) of θ; likewise ``phi`` and ``g``.
        scale: the similarity scale (``d^-1/2``).

    Shape:
        ``(B, C, T, H, W) -> (B, d, T, H, W)``.
    """
    b, _, t, h, w = x.shape

    def proj(p: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.conv3d(x, p[0][:, :, None, None, None], p[1]).flatten(2)  # (B, d, N)

    th, ph, gg = proj(theta), proj(phi), proj(g)
    attn = torch.softmax(torch.matmul(th.transpose(1, 2), ph) * scale, dim=-1)  # (B, N, N)
    y = torch.matmul(attn, gg.transpose(1, 2))  # (B, N, d)
    return y.transpose(1, 2).reshape(b, -1, t, h, w)  # (B, d, T, H, W)


def _wb(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight as ``(out, in)``, bias) of a Linear or 1×1×1 Conv3d."""
    return layer.weight.reshape(layer.weight.shape[0], -1), layer.bias


def restated_op(op: nn.Module) -> Any:
    """The restatement with the op's G1 (θ), G2 (φ), G3 (g)."""
    scale = op.inner_channels**-0.5
    return lambda x: restated_attention(x, _wb(op.g1), _wb(op.g2), _wb(op.g3), scale)


def restated_block(block: NonLocalBlock) -> Any:
    """The restatement of the whole block with its parameters (conv_out, norm, residual)."""
    scale = block.dim_inner**-0.5

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = restated_attention(
            x, _wb(block.conv_theta), _wb(block.conv_phi), _wb(block.conv_g), scale
        )  # (B, d, T, H, W)
        return x + block.norm(block.conv_out(y))  # (B, C, T, H, W)

    return forward


def _fwd_bwd(forward: Any, x: torch.Tensor, module: nn.Module) -> Any:
    """One forward + backward of ``forward(x).sum()``, gradients reset first."""

    def step() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        forward(x).sum().backward()

    return step


def attention_kernels(fn: Any) -> list[str]:
    """The attention kernels (``aten::*scaled_dot_product*``) one call of ``fn`` runs."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sorted({e.key for e in prof.key_averages() if "scaled_dot_product" in e.key})


def run(cfg: BenchConfig) -> list[BenchResult]:
    """Time and peak-memory ratios of the op and the block against their restatements."""
    b, c, inner, t, hw = cfg.pick((1, 16, 8, 2, 4), (2, 256, 128, 4, 14), (4, 256, 128, 8, 14))
    dev = cfg.device
    torch.manual_seed(cfg.seed)
    shape = (c, t, hw, hw)
    op = build_op(("dot", "spatiotemporal", "softmax"), c, inner, shape).to(dev)
    block = NonLocalBlock(c, inner).to(dev)
    nn.init.ones_(block.norm.weight)
    x = torch.randn(b, *shape, device=dev, requires_grad=True)  # (B, C, T, H, W)
    pairs = {
        "op": (op, restated_op(op)),
        "block": (block, restated_block(block)),
    }
    diffs = {}
    with torch.no_grad():
        for key, (module, restated) in pairs.items():
            ours, ref = module(x), restated(x)
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
            diffs[key] = float((ours - ref).abs().max())
    fns = {}
    for key, (module, restated) in pairs.items():
        fns[f"ours_{key}"] = _fwd_bwd(module, x, module)
        fns[f"restated_{key}"] = _fwd_bwd(restated, x, module)
    times = interleaved_times(fns, cfg.rounds(7, 11), cfg.warmup, dev)
    peaks = {}
    for key, (module, restated) in pairs.items():
        for variant, fwd in (("ours", module), ("restated", restated)):
            module.zero_grad(set_to_none=True)
            x.grad = None
            peaks[f"{variant}_{key}"] = peak_memory(lambda fwd=fwd: fwd(x), dev)
    sizes = {"B": b, "C": c, "inner": inner, "T": t, "H": hw, "W": hw, "N": t * hw * hw}
    results = []
    for key in pairs:
        ours, ref = f"ours_{key}", f"restated_{key}"
        common = {**sizes, "max_abs_diff": diffs[key], "rounds": len(times[ours])}
        time_details = {
            **common,
            "ours_ms": ms(times[ours]),
            "restated_ms": ms(times[ref]),
            "ours_top_ops": profile_lines(fns[ours], dev),
            "ours_attention_kernels": attention_kernels(fns[ours]),
        }
        results.append(
            ratio_result(
                f"{NAME}/{key}_time",
                1.0,
                paired_ratio(times[ours], times[ref]),
                time_details,
                limit=lambda f=fns[ours]: profile_lines(f, dev),
                goal="ours <= 1.0x the restatement's time",
            )
        )
        mem_details = {
            **common,
            "ours_peak_mib": round(peaks[ours] / MIB, 2),
            "restated_peak_mib": round(peaks[ref] / MIB, 2),
        }
        results.append(
            ratio_result(
                f"{NAME}/{key}_memory",
                1.0,
                peaks[ours] / max(peaks[ref], 1),
                mem_details,
                limit=lambda f=fns[ours]: profile_lines(f, dev, by="memory"),
                goal="ours <= 1.0x the restatement's peak memory",
            )
        )
    return results
