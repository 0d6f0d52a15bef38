"""AMP (bf16 and fp16) on CUDA: a differentiable search step and a GPB trial.

The connection weights must never step on gradients that are non-finite or still multiplied
by the fp16 GradScaler's scale: ``experiments.gpu_check.audited_architecture_steps`` records
every architecture step of a real ``run_differentiable_search`` (one non-finite gradient is
injected at step 2) and ``ArchStepAudit.problems`` lists every breach.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments import gpu_check

pytestmark = pytest.mark.gpu


def _ctx(tmp_path: Path) -> gpu_check.CheckContext:
    return gpu_check.CheckContext(torch.device("cuda"), dry_run=False, scratch=tmp_path)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_search_step_never_steps_on_scaled_or_nonfinite_gradients(tmp_path, amp) -> None:
    outcome = (
        gpu_check.check_search_step_bf16(_ctx(tmp_path))
        if amp == "bf16"
        else (gpu_check.check_search_step_fp16(_ctx(tmp_path)))
    )
    f = outcome.figures
    assert f["steps_taken"] >= 1
    assert f["steps_skipped"] >= f["nonfinite_received"] >= 1  # the injected one at least
    assert f["arch_skipped_steps_metric"] == f["steps_skipped"]
    assert f["max_unscale_rel_error"] <= 1e-6
    want = {"bf16": "bfloat16", "fp16": "float16"}[amp]
    assert f["conv_output_dtypes"].get(want, 0) > 0, f["conv_output_dtypes"]
    if amp == "fp16":
        assert max(f["scales_seen"]) > 1.0  # the GradScaler's scale was there to divide out
    else:
        assert f["scales_seen"] == [1.0]


def test_the_audit_catches_a_step_on_scaled_gradients(tmp_path, monkeypatch) -> None:
    """The audit is not vacuous: with the unscaling removed, fp16 steps are reported."""
    from attnas.supergraph import search as search_mod

    def finite_only(params, scale):  # skips non-finite steps but forgets to unscale
        return all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)

    monkeypatch.setattr(search_mod, "unscale_and_check", finite_only)
    with pytest.raises(gpu_check.CheckFailed, match="not the received ones divided by the scale"):
        gpu_check.check_search_step_fp16(_ctx(tmp_path))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_gpb_trial_under_amp_completes_with_finite_outputs(tmp_path, amp) -> None:
    check = gpu_check.check_gpb_trial_bf16 if amp == "bf16" else gpu_check.check_gpb_trial_fp16
    f = check(_ctx(tmp_path)).figures
    assert f["status"] == "completed" and f["val_nonfinite"] == 0
    assert torch.isfinite(torch.tensor(f["val_loss"]))
    want = {"bf16": "bfloat16", "fp16": "float16"}[amp]
    assert f["conv_output_dtypes"].get(want, 0) > 0, f["conv_output_dtypes"]
