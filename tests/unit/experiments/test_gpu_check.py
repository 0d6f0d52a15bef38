"""``experiments.gpu_check``: the check registry, the JSON schema of a dry run, CUDA-only checks
skipped without CUDA, a raising check recorded as failed while the others still run, and the
architecture-step audit's verdicts on hand-made records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from experiments import gpu_check
from experiments.gpu_check import ArchStepAudit, Check, CheckFailed, CheckOutcome

REQUIRED = {
    "gpu_tests",
    "search_step_bf16",
    "search_step_fp16",
    "gpb_trial_bf16",
    "gpb_trial_fp16",
    "determinism",
    "bench",
    "memory_paper_size",
    "ddp_1proc",
    "ddp_2proc",
}
RECORD_KEYS = {"name", "description", "status", "reason", "summary", "figures", "error", "seconds"}
TOP_KEYS = {
    "schema_version",
    "mode",
    "machine",
    "torch",
    "cuda",
    "cudnn",
    "device",
    "device_name",
    "gpu_count",
    "isolation",
    "started",
    "wall_seconds",
    "counts",
    "checks",
}
COMMITTED = Path(gpu_check.RESULTS_DIR) / "gpu_check_cpu_dry_run.json"


def test_registry_holds_every_check_the_issue_asks_for() -> None:
    assert set(gpu_check.CHECKS) >= REQUIRED
    assert gpu_check.CHECKS["cuda_env"].needs_cuda
    assert all(c.timeout_s > 0 for c in gpu_check.CHECKS.values())
    with pytest.raises(ValueError, match="already registered"):
        gpu_check.register_check("bench", "again")(lambda ctx: CheckOutcome("x"))


def _fake_registry(calls: list[str]) -> dict[str, Check]:
    def ok(ctx):
        calls.append("ok")
        assert ctx.dry_run and ctx.device.type == "cpu" and ctx.scratch.is_dir()
        return CheckOutcome("42 things", {"things": 42})

    def broken(ctx):
        calls.append("broken")
        raise CheckFailed("the figure is wrong", {"figure": 1.5})

    def cuda_only(ctx):
        calls.append("cuda_only")
        raise AssertionError("a CUDA-only check must not run without CUDA")

    def crashes(ctx):
        calls.append("crashes")
        raise RuntimeError("boom")

    return {
        "ok_check": Check("ok_check", ok, "returns a figure"),
        "broken_check": Check("broken_check", broken, "finds a defect"),
        "cuda_check": Check("cuda_check", cuda_only, "needs CUDA", needs_cuda=True),
        "crash_check": Check("crash_check", crashes, "raises"),
    }


def test_dry_run_schema_statuses_and_isolation(tmp_path, capsys) -> None:
    calls: list[str] = []
    out = tmp_path / "dry.json"
    code = gpu_check.main(["--cpu-dry-run", "--out", str(out)], registry=_fake_registry(calls))
    assert code == 1  # two checks failed
    assert calls == ["ok", "broken", "crashes"]  # every check but the CUDA-only one ran
    payload = json.loads(out.read_text())
    assert set(payload) == TOP_KEYS
    assert payload["mode"] == "cpu-dry-run" and payload["isolation"] == "inline"
    assert payload["torch"] == torch.__version__ and payload["device"] == "cpu"
    assert payload["counts"] == {"ok": 1, "failed": 2, "skipped": 1}
    records = {r["name"]: r for r in payload["checks"]}
    assert all(set(r) == RECORD_KEYS for r in records.values())
    assert records["ok_check"]["status"] == "ok" and records["ok_check"]["figures"] == {
        "things": 42
    }
    assert records["cuda_check"]["status"] == "skipped"
    assert records["cuda_check"]["reason"] == "no CUDA"
    broken = records["broken_check"]
    assert broken["status"] == "failed" and broken["figures"] == {"figure": 1.5}
    assert "the figure is wrong" in broken["error"]
    assert "RuntimeError: boom" in records["crash_check"]["error"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["ok_check", "ok"] and "42 things" in lines[0]
    assert "skipped (no CUDA)" in lines[2]
    assert lines[-1].startswith("1 ok, 2 failed, 1 skipped")


def test_bad_arguments_fail_with_one_line(tmp_path, capsys) -> None:
    registry = _fake_registry([])
    assert gpu_check.main(["--cpu-dry-run", "--only", "nope"], registry=registry) == 2
    assert "unknown check(s) ['nope']" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert gpu_check.main(["--out", str(tmp_path / "x.json")], registry=registry) == 2
        assert "run with --cpu-dry-run" in capsys.readouterr().err


def _record(step, **over):
    rec = {
        "step": step,
        "scale": 1.0,
        "poisoned": False,
        "received_finite": True,
        "stepped": True,
        "step_grads_finite": True,
        "unscale_rel_error": 0.0,
        "counted_skipped": False,
        "weights_changed": True,
    }
    return rec | over


def test_audit_verdicts() -> None:
    skipped = dict(
        poisoned=True,
        received_finite=False,
        stepped=False,
        step_grads_finite=None,
        counted_skipped=True,
        weights_changed=False,
    )
    good = ArchStepAudit((2,), [_record(1, scale=65536.0), _record(2, **skipped), _record(3)])
    assert good.problems(expect_scale=True) == []
    assert good.figures()["steps_taken"] == 2 and good.figures()["steps_skipped"] == 1

    stepped_on_inf = ArchStepAudit(
        (2,), [_record(1), _record(2, poisoned=True, received_finite=False)]
    )
    assert any("yet the weights stepped" in p for p in stepped_on_inf.problems(False))
    scaled = ArchStepAudit((), [_record(1, scale=1024.0, unscale_rel_error=1023.0)])
    assert any("divided by the scale 1024" in p for p in scaled.problems(False))
    assert any("scale != 1" in p for p in ArchStepAudit((), [_record(1)]).problems(True))
    assert ArchStepAudit((), []).problems(False)[0].startswith("no architecture step")


def test_committed_dry_run_json_matches_the_schema() -> None:
    payload = json.loads(COMMITTED.read_text())
    assert set(payload) == TOP_KEYS and payload["mode"] == "cpu-dry-run"
    records = {r["name"]: r for r in payload["checks"]}
    assert set(records) >= REQUIRED
    assert all(set(r) == RECORD_KEYS for r in records.values())
    assert payload["counts"]["failed"] == 0
    assert records["cuda_env"]["status"] == "skipped"
    assert records["gpu_tests"]["status"] == "skipped"  # every gpu test skipped without CUDA
    assert records["search_step_fp16"]["figures"]["steps_skipped"] >= 1


def test_isolated_check_past_its_timeout_is_killed_and_recorded_failed(tmp_path) -> None:
    ctx = gpu_check.CheckContext(torch.device("cpu"), dry_run=True, scratch=tmp_path)
    check = dataclasses.replace(gpu_check.CHECKS["ddp_2proc"], timeout_s=1.0)
    record = gpu_check.run_isolated(check, ctx)  # its interpreter is still importing at 1 s
    assert record["status"] == "failed" and record["summary"] == "timed out after 1 s"
    assert set(record) == RECORD_KEYS


def test_skip_and_only_select_checks(tmp_path) -> None:
    calls: list[str] = []
    out = tmp_path / "sel.json"
    argv = ["--cpu-dry-run", "--out", str(out), "--only", "ok_check", "crash_check"]
    code = gpu_check.main([*argv, "--skip", "crash_check"], registry=_fake_registry(calls))
    assert code == 0 and calls == ["ok"]
    assert [r["name"] for r in json.loads(out.read_text())["checks"]] == ["ok_check"]
    assert gpu_check.main([*argv, "--skip", "typo"], registry=_fake_registry(calls)) == 2
