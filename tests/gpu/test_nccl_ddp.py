"""NCCL process groups: 1 process (init, all-reduce, a DDP step), and 2 processes training the
project's Trainer under DDP when 2 GPUs are visible (``experiments.gpu_check.ddp_worker``)."""

from __future__ import annotations

import pytest
import torch

from experiments import gpu_check

pytestmark = pytest.mark.gpu


def _ctx(tmp_path):
    return gpu_check.CheckContext(torch.device("cuda"), dry_run=False, scratch=tmp_path)


def test_one_process_nccl(tmp_path) -> None:
    f = gpu_check.check_ddp_1proc(_ctx(tmp_path)).figures
    (rank,) = f["ranks"]
    assert rank["backend_in_use"] == "nccl" and rank["all_reduce"] == 1.0
    assert rank["ddp_grad_max_diff"] <= 1e-5


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 visible GPUs")
def test_two_process_nccl_trainer(tmp_path) -> None:
    f = gpu_check.check_ddp_2proc(_ctx(tmp_path)).figures
    assert [r["all_reduce"] for r in f["ranks"]] == [3.0, 3.0]
    for r in f["ranks"]:
        assert r["trainer"]["ranks_max_weight_diff"] == 0.0
        assert r["trainer"]["sync_batchnorm"]
