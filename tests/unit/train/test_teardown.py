"""cleanup_distributed: a barrier before the group is destroyed, none for a process leaving on
an error (whose peers may never reach it), and ddp_entry picks between them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.distributed as dist

from attnas.train import cleanup_distributed, ddp_entry, dist_info


@pytest.fixture
def group(tmp_path: Path):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.fixture
def barriers(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    calls: list[None] = []
    real = dist.barrier
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: (calls.append(None), real(*a, **k))[1])
    return calls


@pytest.mark.parametrize("synchronize", [True, False])
def test_cleanup_waits_only_when_asked_and_destroys_the_group(
    group: None, barriers: list[None], synchronize: bool
) -> None:
    assert dist.is_initialized()
    cleanup_distributed(synchronize=synchronize)
    assert not dist.is_initialized()
    assert dist_info().world_size == 1
    assert len(barriers) == int(synchronize)
    cleanup_distributed()  # without a group: nothing to do
    assert len(barriers) == int(synchronize)


def test_a_failing_trial_leaves_without_the_barrier(
    group: None, barriers: list[None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text("{}")
    monkeypatch.setattr(ddp_entry.TrialSpec, "from_json", staticmethod(lambda text: object()))

    def boom(spec: object) -> None:
        raise RuntimeError("trial crashed")

    monkeypatch.setattr(ddp_entry, "run_trial", boom)
    with pytest.raises(RuntimeError, match="trial crashed"):
        ddp_entry.main([str(spec)])
    assert not dist.is_initialized() and barriers == []
