"""Peak memory of the efficient RSA (Eq. 11–12 via convolutions) vs the naive restatement.

The naive restatement is the one the unit tests check against the oracle
(``tests/unit/blocks/test_rsa_block.py::naive_rsa``): it unfolds each position's context and forms
Eq. 7's M×M self-correlation. Two numbers per implementation, on CPU in float32:

- peak: the highest total of live CPU tensor bytes allocated during forward + backward, from
  ``torch.profiler`` memory events (``profile_memory=True``), relative to the start;
- saved: the bytes of tensors autograd saves for backward (``saved_tensors_hooks``, storages
  counted once).

Run: ``.venv/bin/python experiments/bench/rsa_memory.py`` (defaults: the paper's 5×7×7 context,
input (1, 64, 8, 14, 14), nh=8, VplusR/VplusR).
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from attnas.blocks.rsa import RSA

_ROOT = Path(__file__).resolve().parents[2]


def _naive_rsa() -> Callable[..., torch.Tensor]:
    path = _ROOT / "tests" / "unit" / "blocks" / "test_rsa_block.py"
    spec = importlib.util.spec_from_file_location("_rsa_naive", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.naive_rsa


def peak_memory_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Peak live CPU bytes allocated while running ``fn()`` and backpropagating its sum."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn().sum().backward()
    # Allocations are attributed to the innermost op (its self memory), frees to "[memory]"
    # events; replaying both in time order gives the live total (allocation time ~ op start).
    deltas = sorted(
        (
            e.time_range.start,
            e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage,
        )
        for e in prof.events()
    )
    live = peak = 0
    for _, delta in deltas:
        live += delta
        peak = max(peak, live)
    return peak


def saved_tensor_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the tensors autograd saves for backward while running ``fn()``."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def measure(
    shape: tuple[int, ...] = (1, 64, 8, 14, 14),
    kernel_size: tuple[int, int, int] = (5, 7, 7),
    nh: int = 8,
) -> dict[str, dict[str, int]]:
    """Peak and saved bytes of the efficient and the naive RSA on one input."""
    torch.manual_seed(0)
    module = RSA(shape[1], shape[1], nh=nh, dk=0, kernel_size=kernel_size)
    x = torch.randn(shape, requires_grad=True)
    naive = _naive_rsa()
    sd = dict(module.named_parameters())

    def run_naive() -> torch.Tensor:
        return naive(
            x,
            sd,
            module.nh,
            module.dk,
            module.dv,
            module.dd,
            kernel_size,
            module.stride,
            module.kernel_type,
            module.feat_type,
        )

    torch.testing.assert_close(module(x), run_naive(), rtol=1e-4, atol=1e-5)
    return {
        "efficient": {
            "peak": peak_memory_bytes(lambda: module(x)),
            "saved": saved_tensor_bytes(lambda: module(x)),
        },
        "naive": {"peak": peak_memory_bytes(run_naive), "saved": saved_tensor_bytes(run_naive)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=5, default=[1, 64, 8, 14, 14])
    parser.add_argument("--kernel", type=int, nargs=3, default=[5, 7, 7])
    parser.add_argument("--nh", type=int, default=8)
    args = parser.parse_args()
    res = measure(tuple(args.shape), tuple(args.kernel), args.nh)
    mib = 2.0**20
    print(
        f"RSA memory, input {tuple(args.shape)}, context {tuple(args.kernel)}, nh={args.nh}, "
        "float32, CPU, forward + backward"
    )
    for name, r in res.items():
        print(
            f"  {name:9s} peak {r['peak'] / mib:9.1f} MiB   saved-for-backward "
            f"{r['saved'] / mib:9.1f} MiB"
        )
    ratio = res["naive"]["peak"] / max(res["efficient"]["peak"], 1)
    print(f"  naive / efficient peak: {ratio:.1f}x")


if __name__ == "__main__":
    main()
