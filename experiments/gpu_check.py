"""``python -m experiments.gpu_check [--cpu-dry-run]`` (``make gpu-check``): the GPU path, checked.

One run on one GPU (under 5 minutes) checks what no CPU machine can: the ``gpu``-marked tests,
a differentiable search step and a GPB trial under bf16 and fp16 autocast, CUDA determinism of
a seeded trial, the model benchmarks of ``make bench`` on CUDA with their absolute times, peak
GPU memory of the paper-size I3D (64×224² clips, batch 1 and 8) with 5 cells and with 5
supergraphs, and NCCL DDP with 1 process (and 2 when 2 GPUs are visible). It prints one line per
check (name, status, key figure) and writes JSON (default
``experiments/results/gpu/gpu_check_<device>.json``): the machine, torch, CUDA and cuDNN
versions, the device, and per check its status (``ok``, ``failed``, ``skipped``), figures,
summary, seconds and error text. The exit status is 1 when any check failed.

``--cpu-dry-run`` runs everything that does not need CUDA on the CPU, at tiny sizes where the
GPU run uses paper sizes, with gloo instead of NCCL; CUDA-only checks are recorded as
``skipped`` with the reason ``no CUDA``. The trainer runs float32 on CPU whatever ``amp`` says
(``TrainConfig.amp``), so the dry run of the AMP checks exercises the architecture-step audit
(a non-finite gradient injected on purpose must be skipped) but not autocast or the GradScaler;
the JSON says so in each of those checks' ``figures["cpu_stand_in"]``.

Design choices (the issue is silent on them):

- Isolation: on CUDA every check runs in its own interpreter (``--child``), under a timeout, so
  a CUDA error that poisons the context, an OOM's fragmentation, a process group or a
  ``torch.compile`` cache never leaks into the next check. The dry run runs checks in this
  process (``--isolation inline``; an interpreter start costs about 9 s on a loaded 2-core
  machine); a check that raises is recorded as failed and the others still run.
- The connection weights' guard is verified, not reimplemented: while a check runs,
  ``attnas.supergraph.search.ArchitectureStep`` is replaced by a subclass
  (``audited_architecture_steps``) that records, at each training step, the gradients the hook
  receives (still multiplied by the GradScaler's scale under fp16), whether they are finite,
  the gradients the Adam step actually sees (a step pre-hook on the hook's optimiser), and
  whether the weights moved. One step gets a non-finite gradient injected; the check fails
  unless that step and every other non-finite one left the weights unchanged and every step
  taken saw the received gradients divided by the scale.
- Autocast is confirmed, not assumed: a global forward hook counts the dtypes of every
  ``Conv3d`` output during training.
- ``make bench`` on CUDA runs, ``--quick``, the benchmarks whose work is on the model's device:
  every one but ``CPU_SIDE_BENCHMARKS`` (the GP, peer-searcher, video-decoding and RSA-memory
  ones measure CPU work whatever the device). Its own JSON goes next to this script's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "experiments" / "results" / "gpu"
SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "skipped")
# Benchmarks of ``experiments.bench`` that measure CPU-side work (the GP's acquisition step,
# peer searchers, video decoding, RSA's profiler-replayed CPU memory): left out of the CUDA
# run, where they would measure nothing new.
CPU_SIDE_BENCHMARKS = ("gp_latency", "peer_latency", "data_throughput", "rsa_memory")
MIB = 2.0**20


# ---------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class CheckContext:
    """Where and how big every check runs.

    Attributes:
        device: ``cuda`` (the GPU run) or ``cpu`` (the dry run).
        dry_run: CPU sizes and backends.
        scratch: a folder the check may write to (removed at the end unless ``--keep``).
        results_dir: where lasting outputs go (the bench JSON of the GPU run).
        all_gpu_tests: run every gpu test, also those that repeat this script's own checks
            (``COVERED_BY_CHECKS``).
    """

    device: torch.device
    dry_run: bool
    scratch: Path
    results_dir: Path = RESULTS_DIR
    all_gpu_tests: bool = False

    def pick(self, dry: Any, cuda: Any) -> Any:
        """``dry`` in the dry run, else ``cuda``."""
        return dry if self.dry_run else cuda


@dataclass
class CheckOutcome:
    """What a check returns (a failure is an exception, not an outcome).

    Attributes:
        summary: the key figure, in a few words, for the summary line.
        figures: every measured figure (JSON-serialisable).
        status: ``"ok"`` or ``"skipped"``.
        reason: why it was skipped.
    """

    summary: str
    figures: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    reason: str | None = None


class CheckFailed(AssertionError):
    """A check ran and found a defect (its figures are kept in the record)."""

    def __init__(self, message: str, figures: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.figures = figures or {}


@dataclass(frozen=True)
class Check:
    """One registered check.

    Attributes:
        name: the check's name (a summary line and a JSON record each).
        fn: ``fn(ctx) -> CheckOutcome``; raises on a defect.
        description: what it checks, in one line.
        needs_cuda: skipped without running in the dry run.
        timeout_s: wall-clock limit of its own interpreter (``--isolation process``).
    """

    name: str
    fn: Callable[[CheckContext], CheckOutcome]
    description: str
    needs_cuda: bool = False
    timeout_s: float = 120.0


CHECKS: dict[str, Check] = {}


def register_check(
    name: str, description: str, *, needs_cuda: bool = False, timeout_s: float = 120.0
) -> Callable[[Callable[[CheckContext], CheckOutcome]], Callable[[CheckContext], CheckOutcome]]:
    """Decorator adding ``fn`` to ``CHECKS`` under ``name`` (a duplicate name is an error)."""

    def add(fn: Callable[[CheckContext], CheckOutcome]) -> Callable[[CheckContext], CheckOutcome]:
        if name in CHECKS:
            raise ValueError(f"gpu check {name!r} is already registered")
        CHECKS[name] = Check(name, fn, description, needs_cuda, timeout_s)
        return fn

    return add


# ---------------------------------------------------------------------------------- helpers
def _space() -> Any:
    from attnas.space import load_space

    return load_space("attention_nas")


def trial_spec(ctx: CheckContext, amp: str = "none", **train: Any) -> Any:
    """The short real trial every training check runs: i3d_tiny on moving digits (8×32×32).

    The dry run trains 3 steps of 8 clips; the GPU run 8 steps of 16 (enough for the fp16
    GradScaler to skip and back off its scale at least once when it starts at 2**16). Under
    AMP the model is channels-last, as ``conf/trainer/gpu.yaml`` trains.
    """
    from attnas.train import TrainConfig, TrialSpec

    train_clips, val_clips, batch = ctx.pick((24, 16, 8), (128, 64, 16))
    config = dict(
        epochs=1,
        batch_size=batch,
        optimizer="adamw",
        lr=2e-3,
        amp=amp,
        channels_last=amp != "none",  # as conf/trainer/gpu.yaml trains (CUDA only)
        device=str(ctx.device),
        progress=False,
        checkpoint_every=1,
    )
    config.update(train)
    return TrialSpec(
        backbone="i3d_tiny",
        dataset="moving_digits",
        dataset_kwargs={"num_frames": 8, "size": 32, "num_classes": 4, "seed": 0},
        train_kwargs={"num_clips": train_clips},
        val_kwargs={"num_clips": val_clips},
        train=TrainConfig(**config),
        tracker="none",
    )


@contextlib.contextmanager
def conv_output_dtypes() -> Iterator[dict[str, int]]:
    """Count the dtypes of every ``Conv3d`` output in training mode while the block runs."""
    from torch import nn

    counts: dict[str, int] = {}

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(module, nn.Conv3d) and module.training and isinstance(output, torch.Tensor):
            key = str(output.dtype).removeprefix("torch.")
            counts[key] = counts.get(key, 0) + 1

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        yield counts
    finally:
        handle.remove()


@dataclass
class ArchStepAudit:
    """What ``audited_architecture_steps`` recorded: one dict per training step of every
    ``ArchitectureStep`` built while it was active (``records``)."""

    poison_steps: tuple[int, ...]
    records: list[dict[str, Any]] = field(default_factory=list)
    hooks_built: int = 0

    def problems(self, expect_scale: bool) -> list[str]:
        """Every way the records break the guard (empty when the connection weights only ever
        stepped on finite, unscaled gradients).

        Args:
            expect_scale: fp16 on CUDA: some step taken must have carried a scale != 1, or the
                unscaling was never exercised.
        """
        found: list[str] = []
        if not self.records:
            return ["no architecture step was attempted (no ArchitectureStep saw a training step)"]
        for r in self.records:
            if not r["received_finite"] and (r["stepped"] or r["weights_changed"]):
                found.append(
                    f"step {r['step']}: non-finite connection-weight gradients, yet the weights "
                    f"{'stepped' if r['stepped'] else 'changed'}"
                )
            if not r["received_finite"] and not r["counted_skipped"]:
                found.append(f"step {r['step']}: non-finite gradients not counted as skipped")
            if r["stepped"] and not r["step_grads_finite"]:
                found.append(f"step {r['step']}: Adam stepped on non-finite gradients")
            if r["stepped"] and r["unscale_rel_error"] > 1e-6:
                found.append(
                    f"step {r['step']}: Adam stepped on gradients that are not the received ones "
                    f"divided by the scale {r['scale']:g} (relative error "
                    f"{r['unscale_rel_error']:.3g})"
                )
        if not any(r["stepped"] for r in self.records):
            found.append("the connection weights never stepped")
        if self.poison_steps and not any(r["poisoned"] for r in self.records):
            found.append(
                f"the injected non-finite gradient (steps {self.poison_steps}) never "
                "reached the architecture step"
            )
        if expect_scale and not any(r["stepped"] and r["scale"] != 1.0 for r in self.records):
            found.append("fp16: no architecture step carried a GradScaler scale != 1")
        return found

    def figures(self) -> dict[str, Any]:
        stepped = [r for r in self.records if r["stepped"]]
        return {
            "steps_seen": len(self.records),
            "steps_taken": len(stepped),
            "steps_skipped": sum(r["counted_skipped"] for r in self.records),
            "nonfinite_received": sum(not r["received_finite"] for r in self.records),
            "injected_at": list(self.poison_steps),
            "scales_seen": sorted({r["scale"] for r in self.records}),
            "max_unscale_rel_error": max((r["unscale_rel_error"] for r in stepped), default=None),
        }


def _all_finite(tensors: Sequence[torch.Tensor | None]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)


@contextlib.contextmanager
def audited_architecture_steps(poison_steps: Sequence[int] = (2,)) -> Iterator[ArchStepAudit]:
    """Replace ``attnas.supergraph.search.ArchitectureStep`` by an auditing subclass for the block.

    The subclass records, at each training step: the GradScaler scale of the step, whether the
    gradients the hook received were finite, whether Adam stepped, whether the gradients Adam
    saw equal the received ones divided by the scale, whether the weights moved, and whether
    the step was counted as skipped. At the steps in ``poison_steps`` it first sets one
    received gradient entry to +inf (a non-finite gradient the guard must catch).

    Yields:
        The ``ArchStepAudit`` the records go to.
    """
    from attnas.supergraph import search as search_mod

    base = search_mod.ArchitectureStep
    audit = ArchStepAudit(tuple(poison_steps))

    class AuditedArchitectureStep(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.optimizer.register_step_pre_hook(self._audit_before_step)
            self._audit: dict[str, Any] = {}
            self._received: list[torch.Tensor | None] = []
            audit.hooks_built += 1

        def on_train_step(self, trainer: Any, batch: Any, step: int) -> None:
            grads = [p.grad for p in self.params]
            poisoned = False
            if step in audit.poison_steps:
                first = next((g for g in grads if g is not None), None)
                if first is not None:
                    first.view(-1)[0] = math.inf
                    poisoned = True
            self._received = [None if g is None else g.detach().clone() for g in grads]
            before = [p.detach().clone() for p in self.params]
            skipped_before = self.skipped_steps
            self._audit = {
                "step": step,
                "scale": float(getattr(trainer, "grad_scale", 1.0)),
                "poisoned": poisoned,
                "received_finite": _all_finite(self._received),
                "stepped": False,
                "step_grads_finite": None,
                "unscale_rel_error": 0.0,
            }
            super().on_train_step(trainer, batch, step)
            self._audit["counted_skipped"] = self.skipped_steps > skipped_before
            self._audit["weights_changed"] = any(
                not torch.equal(b, p.detach()) for b, p in zip(before, self.params)
            )
            audit.records.append(self._audit)

        def _audit_before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
            rec = self._audit
            rec["stepped"] = True
            seen = [p.grad for p in self.params]
            rec["step_grads_finite"] = _all_finite(seen)
            error = 0.0
            for got, raw in zip(seen, self._received):
                if got is None or raw is None:
                    continue
                want = raw.double() / rec["scale"]
                denom = float(want.abs().max().clamp_min(1e-30))
                error = max(error, float((got.double() - want).abs().max()) / denom)
            rec["unscale_rel_error"] = error

    search_mod.ArchitectureStep = AuditedArchitectureStep
    try:
        yield audit
    finally:
        search_mod.ArchitectureStep = base


def _amp_problems(ctx: CheckContext, amp: str, dtypes: dict[str, int]) -> list[str]:
    """On CUDA the training convolutions must have run in the autocast dtype."""
    if ctx.device.type != "cuda":
        return []
    want = {"bf16": "bfloat16", "fp16": "float16"}[amp]
    if dtypes.get(want, 0) == 0:
        return [f"{amp}: no Conv3d output in training was {want} (seen: {dtypes})"]
    return []


CPU_STAND_IN = "float32 on CPU: the trainer autocasts and scales on CUDA only (TrainConfig.amp)"


def _finite_history(history: Sequence[dict[str, Any]]) -> list[str]:
    bad = []
    for h in history:
        for key in ("train_loss", "val_loss"):
            if key in h and not math.isfinite(float(h[key])):
                bad.append(f"epoch {h.get('epoch')}: {key} = {h[key]}")
    return bad


# ---------------------------------------------------------------------------------- checks
@register_check(
    "cuda_env", "CUDA, cuDNN, NCCL and bf16 support of the device", needs_cuda=True, timeout_s=60
)
def check_cuda_env(ctx: CheckContext) -> CheckOutcome:
    device = ctx.device
    props = torch.cuda.get_device_properties(device)
    figures = {
        "device_count": torch.cuda.device_count(),
        "name": props.name,
        "capability": list(torch.cuda.get_device_capability(device)),
        "total_memory_gib": round(props.total_memory / 2**30, 2),
        "bf16_supported": torch.cuda.is_bf16_supported(),
        "cudnn": torch.backends.cudnn.version(),
        "nccl_available": torch.distributed.is_nccl_available(),
        "nccl": ".".join(map(str, torch.cuda.nccl.version()))
        if isinstance(torch.cuda.nccl.version(), tuple)
        else str(torch.cuda.nccl.version()),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    x = torch.randn(256, 256, device=device)
    figures["matmul_ok"] = bool(torch.isfinite(x @ x).all())
    missing = [k for k in ("bf16_supported", "nccl_available", "matmul_ok") if not figures[k]]
    if missing:
        raise CheckFailed(f"not available on {props.name}: {missing}", figures)
    return CheckOutcome(
        f"{props.name}, {figures['total_memory_gib']} GiB, sm_{props.major}{props.minor}", figures
    )


# gpu tests that call this script's own checks: the script runs and reports those checks
# itself, so ``gpu_tests`` leaves them out (``--all-gpu-tests`` keeps them) rather than spend
# the 5-minute budget twice on the same trials.
COVERED_BY_CHECKS = (
    "tests/gpu/test_amp_search_step.py::test_search_step_never_steps_on_scaled_or_nonfinite_"
    "gradients",
    "tests/gpu/test_amp_search_step.py::test_gpb_trial_under_amp_completes_with_finite_outputs",
    "tests/gpu/test_cuda_determinism.py::test_two_seeded_trials_are_identical",
    "tests/gpu/test_nccl_ddp.py::test_one_process_nccl",
    "tests/gpu/test_nccl_ddp.py::test_two_process_nccl_trainer",
)


@register_check("gpu_tests", "pytest -m gpu tests/gpu (the gpu-marked tests)", timeout_s=240)
def check_gpu_tests(ctx: CheckContext) -> CheckOutcome:
    report = ctx.scratch / "gpu_tests.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={report}",
        str(REPO / "tests" / "gpu"),
    ]
    deselected = () if ctx.all_gpu_tests else COVERED_BY_CHECKS
    cmd += [f"--deselect={node}" for node in deselected]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=230)
    figures = _junit_counts(report) if report.is_file() else {}
    figures["exit_code"] = proc.returncode
    figures["deselected_as_own_checks"] = list(deselected)
    figures["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
    if proc.returncode not in (0, 5) or figures.get("failed", 0) or figures.get("errors", 0):
        names = ", ".join(figures.get("failed_tests", [])[:5])
        raise CheckFailed(f"gpu tests failed (exit {proc.returncode}): {names}", figures)
    ran = figures.get("tests", 0) - figures.get("skipped", 0)
    summary = f"{ran} passed, {figures.get('skipped', 0)} skipped of {figures.get('tests', 0)}"
    if ran == 0:
        return CheckOutcome(summary, figures, "skipped", "no CUDA: every gpu test skipped")
    return CheckOutcome(summary, figures)


def _junit_counts(path: Path) -> dict[str, Any]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors")}
    counts["skipped"] = sum(int(s.get("skipped", 0)) for s in suites)
    failed = []
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname')}::{case.get('name')}")
    return {
        "tests": counts["tests"],
        "failed": counts["failures"],
        "errors": counts["errors"],
        "skipped": counts["skipped"],
        "failed_tests": failed,
    }


def _search_step(ctx: CheckContext, amp: str) -> CheckOutcome:
    """A differentiable search (joint, position-agnostic) through ``run_differentiable_search``
    with the architecture step audited (one non-finite gradient injected at step 2)."""
    from attnas.supergraph.search import DifferentiableSearchConfig, run_differentiable_search

    spec = trial_spec(ctx, amp)
    run_dir = ctx.scratch / f"search_{amp}"
    start = time.perf_counter()
    with audited_architecture_steps((2,)) as audit, conv_output_dtypes() as dtypes:
        result = run_differentiable_search(_space(), spec, DifferentiableSearchConfig(), run_dir)
    seconds = time.perf_counter() - start
    history = list(result.search.history)
    figures: dict[str, Any] = {
        "amp": amp,
        "channels_last": spec.train.channels_last and ctx.device.type == "cuda",
        **audit.figures(),
        "conv_output_dtypes": dict(dtypes),
        "arch_skipped_steps_metric": history[-1].get("arch_skipped_steps") if history else None,
        "train_loss": history[-1].get("train_loss") if history else None,
        "val_top1": result.search.top1,
        "search_seconds": round(seconds, 2),
        "peak_memory_mib": result.search.peak_memory_mb,
        "derived_cell": next(iter(result.cells.values())).canonical() if result.cells else None,
    }
    if ctx.device.type != "cuda":
        figures["cpu_stand_in"] = CPU_STAND_IN
    expect_scale = amp == "fp16" and ctx.device.type == "cuda"
    problems = audit.problems(expect_scale) + _amp_problems(ctx, amp, dtypes)
    problems += _finite_history(history)
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return CheckOutcome(
        f"{figures['steps_taken']}/{figures['steps_seen']} arch steps taken, "
        f"{figures['steps_skipped']} skipped (non-finite), scales {figures['scales_seen']}, "
        f"{seconds:.1f} s",
        figures,
    )


def _gpb_trial(ctx: CheckContext, amp: str) -> CheckOutcome:
    """A cell from ``GPBandit.suggest`` trained by the dispatch worker's trial function."""
    from attnas.controller import GPBandit
    from attnas.dispatch import run_train_trial

    space = _space()
    cell = GPBandit(space, seed=0).suggest(1)[0]
    spec = trial_spec(ctx, amp)
    payload = {
        "trial_id": 1,
        "cell": cell.to_dict(),
        "cell_hash": cell.hash(),
        "seed": 7,
        "attempt": 1,
        "trial_dir": str(ctx.scratch / f"gpb_{amp}" / "trials" / "1"),
        "config": spec.to_dict(),
    }
    with conv_output_dtypes() as dtypes:
        result = run_train_trial(payload)
    figures = {
        "amp": amp,
        "channels_last": spec.train.channels_last and ctx.device.type == "cuda",
        "cell": cell.canonical(),
        "status": result["status"],
        "top1": result["top1"],
        "val_loss": result["val_loss"],
        "val_nonfinite": result["val_nonfinite"],
        "wall_time_s": round(result["wall_time_s"], 2),
        "peak_memory_mib": result["peak_memory_mb"],
        "conv_output_dtypes": dict(dtypes),
    }
    if ctx.device.type != "cuda":
        figures["cpu_stand_in"] = CPU_STAND_IN
    if result["status"] != "completed":
        raise CheckFailed(f"GPB trial failed: {result['error']}", figures)
    problems = _amp_problems(ctx, amp, dtypes) + _finite_history(result["history"])
    if result["val_nonfinite"]:
        problems.append(f"{result['val_nonfinite']} validation clips had non-finite outputs")
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return CheckOutcome(
        f"completed, top1 {result['top1']:.3f}, {figures['wall_time_s']} s, "
        f"conv dtypes {dict(dtypes)}",
        figures,
    )


@register_check("search_step_bf16", "differentiable search step under bf16 autocast", timeout_s=90)
def check_search_step_bf16(ctx: CheckContext) -> CheckOutcome:
    return _search_step(ctx, "bf16")


@register_check(
    "search_step_fp16", "differentiable search step under fp16 autocast + GradScaler", timeout_s=90
)
def check_search_step_fp16(ctx: CheckContext) -> CheckOutcome:
    return _search_step(ctx, "fp16")


@register_check(
    "gpb_trial_bf16", "a GPB trial (dispatch worker's trial path) under bf16", timeout_s=90
)
def check_gpb_trial_bf16(ctx: CheckContext) -> CheckOutcome:
    return _gpb_trial(ctx, "bf16")


@register_check(
    "gpb_trial_fp16", "a GPB trial (dispatch worker's trial path) under fp16", timeout_s=90
)
def check_gpb_trial_fp16(ctx: CheckContext) -> CheckOutcome:
    return _gpb_trial(ctx, "fp16")


DETERMINISM_CELL = "experiments/results/cells/moving_digits_gpb.yaml"
TIMING_KEYS = ("epoch_time_s", "clips_per_s")


@register_check(
    "determinism", "two seeded deterministic trials: identical metrics and weights", timeout_s=120
)
def check_determinism(ctx: CheckContext) -> CheckOutcome:
    """The same seeded spec (``TrainConfig.deterministic``, a dot-attention cell) trained twice
    through ``run_trial``: every tensor of the two final checkpoints must be bitwise equal and
    every metric but the timings identical.

    Before this check existed, a deterministic CUDA trial on any I3D/S3D raised: the head's
    ``nn.AvgPool3d`` has no deterministic CUDA backward (now ``DeterministicAvgPool3d``).
    """
    from attnas.train import run_trial

    spec = trial_spec(ctx, deterministic=True).replace(cell=str(REPO / DETERMINISM_CELL))
    results, states = [], []
    for run in ("a", "b"):
        run_dir = ctx.scratch / f"determinism_{run}"
        result = run_trial(spec.replace(run_dir=str(run_dir)))
        if not result.ok:
            raise CheckFailed(f"run {run} failed: {result.error}", {"cell": DETERMINISM_CELL})
        results.append(result)
        path = run_dir / "checkpoints" / "last.pt"
        states.append(torch.load(path, map_location="cpu", weights_only=True)["model"])
    histories = [
        [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in r.history] for r in results
    ]
    differing = [k for k in states[0] if not torch.equal(states[0][k], states[1][k])]
    max_diff = max(
        (float((states[0][k].double() - states[1][k].double()).abs().max()) for k in differing),
        default=0.0,
    )
    figures = {
        "cell": DETERMINISM_CELL,
        "tensors_compared": len(states[0]),
        "tensors_differing": len(differing),
        "max_abs_weight_diff": max_diff,
        "metrics_identical": histories[0] == histories[1],
        "top1": [r.top1 for r in results],
        "val_loss": [r.val_loss for r in results],
        "first_differing": differing[:5],
    }
    if set(states[0]) != set(states[1]):
        raise CheckFailed("the two runs' checkpoints hold different tensors", figures)
    if differing or not figures["metrics_identical"]:
        raise CheckFailed(
            f"{len(differing)} of {len(states[0])} tensors differ (max {max_diff:.3g}); "
            f"metrics identical: {figures['metrics_identical']}",
            figures,
        )
    return CheckOutcome(
        f"2 runs identical: {len(states[0])} tensors bitwise, val_loss {results[0].val_loss:.6g}",
        figures,
    )


def memory_cell() -> Any:
    """The memory-heaviest 3-op cell of the paper's space: three spatiotemporal dot-product
    softmax ops, each reading every earlier node (a non-local block, chained three times)."""
    from attnas.space import CellSpec

    op = {"type": "dot", "dim": "spatiotemporal", "activation": "softmax"}
    return CellSpec.from_dict(
        {
            "name": "st_dot_softmax_x3",
            "ops": [{**op, "inputs": list(range(k))} for k in (1, 2, 3)],
            "outputs": [1, 2, 3],
        }
    )


def _build_memory_model(variant: str, backbone: str, classes: int, clip: tuple[int, ...]) -> Any:
    from attnas.backbones import build_backbone, insert_cells
    from attnas.supergraph.search import SupergraphFactory, derived_cell_factory

    model = build_backbone(backbone, classes, clip)
    positions = list(model.default_positions)
    space = _space()
    if variant == "cells":
        cell = memory_cell()
        factory = derived_cell_factory({p: cell for p in positions}, space.op_channel_ratio)
        insert_cells(model, positions, factory)
    elif variant == "supergraphs":
        sg = SupergraphFactory(space, position_specific=False)
        insert_cells(model, positions, sg)
        sg.attach(model)
    elif variant != "bare":
        raise ValueError(f"memory variant must be bare, cells or supergraphs, got {variant!r}")
    return model


def _measure_step_memory(
    model: Any, batch: int, clip: tuple[int, ...], classes: int, precision: str, device: Any
) -> dict[str, Any]:
    """Peak memory of one forward + backward (cross-entropy on random clips and labels)."""
    from torch.nn import functional as F

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *clip, generator=gen)
    y = torch.randint(0, classes, (batch,), generator=gen)
    dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]

    def loss() -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x.to(device))  # (B, K)
        return F.cross_entropy(logits.float(), y.to(device))

    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        try:
            loss().backward()
            torch.cuda.synchronize(device)
        except torch.cuda.OutOfMemoryError as err:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            return {"peak_mib": "OOM", "error": str(err).splitlines()[0]}
        peak = torch.cuda.max_memory_allocated(device)
        out = {"peak_mib": round(peak / MIB, 1), "above_weights_mib": round((peak - base) / MIB, 1)}
    else:
        from experiments.bench import peak_memory

        out = {"peak_mib": round(peak_memory(loss, device) / MIB, 1), "method": "profiler"}
    out["seconds"] = round(time.perf_counter() - start, 3)
    model.zero_grad(set_to_none=True)
    return out


@register_check(
    "memory_paper_size",
    "peak memory: I3D + 5 cells / + 5 supergraphs, 64x224^2, batch 1 and 8",
    timeout_s=180,
)
def check_memory_paper_size(ctx: CheckContext) -> CheckOutcome:
    backbone, classes, clip, batches, precisions = ctx.pick(
        ("i3d_tiny", 4, (3, 8, 32, 32), (1, 2), ("fp32",)),
        ("i3d", 400, (3, 64, 224, 224), (1, 8), ("fp32", "bf16")),
    )
    rows: list[dict[str, Any]] = []
    for variant in ("bare", "cells", "supergraphs"):
        model = _build_memory_model(variant, backbone, classes, clip).to(ctx.device).train()
        params = sum(p.numel() for p in model.parameters())
        for precision in precisions:
            for batch in batches:
                m = _measure_step_memory(model, batch, clip, classes, precision, ctx.device)
                rows.append(
                    {
                        "variant": variant,
                        "batch": batch,
                        "precision": precision,
                        "parameters": params,
                        **m,
                    }
                )
        del model
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    figures = {
        "backbone": backbone,
        "clip": list(clip),
        "cell": memory_cell().canonical(),
        "positions": "the backbone's 5 default insertion points",
        "rows": rows,
    }
    if ctx.device.type != "cuda":
        figures["cpu_stand_in"] = "tiny sizes; CPU peak from the profiler's allocation events"
    oom = [r for r in rows if r["peak_mib"] == "OOM"]
    top = max(rows, key=lambda r: -1 if r["peak_mib"] == "OOM" else r["peak_mib"])
    summary = (
        f"{backbone} {clip[1]}x{clip[2]}^2: max {top['peak_mib']} MiB "
        f"({top['variant']}, batch {top['batch']}, {top['precision']}), {len(oom)} OOM"
    )
    return CheckOutcome(summary, figures)


@register_check("bench", "make bench --quick on the model's device (absolute times)", timeout_s=240)
def check_bench(ctx: CheckContext) -> CheckOutcome:
    from experiments.bench.__main__ import BENCHMARKS

    only = ctx.pick(["search_cost"], [n for n in BENCHMARKS if n not in CPU_SIDE_BENCHMARKS])
    slug = "cpu_dry_run" if ctx.dry_run else device_slug(ctx.device)
    out = (ctx.scratch if ctx.dry_run else ctx.results_dir) / f"bench_{slug}.json"
    args = [ctx.pick("--tiny", "--quick"), "--device", str(ctx.device), "--out", str(out)]
    args += ["--only", *only] + (["--threads", "1"] if ctx.dry_run else [])
    # In this interpreter: on CUDA the check has its own already (--isolation process), and the
    # dry run saves an interpreter start. The bench's table goes to stdout as make bench's does.
    from experiments.bench.__main__ import main as bench_main

    code = bench_main(args)
    if not out.is_file():
        raise CheckFailed(f"bench wrote no results (exit {code})")
    payload = json.loads(out.read_text())
    rows = [_bench_row(r) for r in payload["benchmarks"]]
    figures = {
        "command": "python -m experiments.bench " + " ".join(args),
        "results": str(out.relative_to(REPO)) if out.is_relative_to(REPO) else str(out),
        "device": payload.get("device"),
        "wall_seconds": payload.get("wall_seconds"),
        "left_out": [n for n in BENCHMARKS if n not in only],
        "rows": rows,
    }
    errored = [r["name"] for r in rows if r["value"] is None]
    if code != 0 or errored:
        raise CheckFailed(f"bench exit {code}; benchmarks that raised: {errored}", figures)
    met = sum(r["met"] is True for r in rows)
    goals = sum(r["met"] is not None for r in rows)
    return CheckOutcome(
        f"{len(rows)} figures, {met}/{goals} goals met, {payload.get('wall_seconds')} s", figures
    )


def _bench_row(row: dict[str, Any]) -> dict[str, Any]:
    """A bench row with its absolute figures (``*_ms``, ``*_s``, ``*_mib`` details) kept."""
    absolute = {
        k: v
        for k, v in row.get("details", {}).items()
        if isinstance(v, int | float) and re.search(r"(_ms|_s|_mib|seconds)$", k)
    }
    return {k: row[k] for k in ("name", "value", "unit", "met", "goal")} | {"absolute": absolute}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ddp_worker(rank: int, world: int, backend: str, port: int, out_dir: str) -> None:
    """One process of the DDP smoke (``torch.multiprocessing.spawn`` target).

    Starts the process group (``attnas.train.init_distributed`` from torchrun's variables with
    2+ processes; ``init_process_group`` directly with 1, which ``init_distributed`` leaves
    alone), all-reduces ``rank + 1``, takes one DDP step of a small Conv3d net on per-rank data
    and compares its gradients with the average of each rank's own, and with 2+ processes
    trains the project's ``Trainer`` (DDP-wrapped) and compares the ranks' final weights.
    Writes ``rank<r>.json`` to ``out_dir``.
    """
    import torch.distributed as dist
    from torch import nn
    from torch.nn import functional as F

    from attnas.train import TrainConfig, Trainer, cleanup_distributed, init_distributed

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    cuda = backend == "nccl"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    record: dict[str, Any] = {"rank": rank, "world": world, "backend": backend}
    try:
        if world > 1:
            init_distributed(backend)
        else:
            dist.init_process_group(backend, rank=0, world_size=1)
        record["backend_in_use"] = dist.get_backend()
        t = torch.tensor([rank + 1.0], device=device)
        dist.all_reduce(t)
        record["all_reduce"] = float(t.item())

        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(1), nn.Linear(4 * 4 * 6 * 6, 3)
        ).to(device)
        local = [p.detach().clone() for p in net.parameters()]
        gen = torch.Generator().manual_seed(100 + rank)
        x = torch.randn(4, 3, 4, 6, 6, generator=gen).to(device)
        y = torch.randint(0, 3, (4,), generator=gen).to(device)
        plain = nn.Sequential(*[m for m in net])  # the same modules, without DDP
        F.cross_entropy(plain(x), y).backward()
        own = torch.cat([p.grad.flatten() for p in net.parameters()])
        net.zero_grad(set_to_none=True)
        ddp = nn.parallel.DistributedDataParallel(net, device_ids=[rank] if cuda else None)
        F.cross_entropy(ddp(x), y).backward()
        synced = torch.cat([p.grad.flatten() for p in net.parameters()])
        mean_own = own.clone()
        dist.all_reduce(mean_own)
        mean_own /= world
        record["ddp_grad_max_diff"] = float((synced - mean_own).abs().max())
        record["weights_unchanged_by_wrap"] = all(
            torch.equal(a, b.detach()) for a, b in zip(local, net.parameters())
        )

        if world > 1:
            record["trainer"] = _ddp_trainer_run(device, TrainConfig, Trainer)
    except Exception:
        record["error"] = traceback.format_exc()
    finally:  # a rank that failed does not wait for peers that may never reach the barrier
        cleanup_distributed(synchronize="error" not in record)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))


def _ddp_trainer_run(device: torch.device, config_cls: Any, trainer_cls: Any) -> dict[str, Any]:
    """The project's Trainer under DDP (2+ processes): both ranks must end with equal weights."""
    import torch.distributed as dist
    from torch import nn

    class Clips(torch.utils.data.Dataset):
        def __init__(self, n: int, seed: int) -> None:
            g = torch.Generator().manual_seed(seed)
            self.x = torch.randn(n, 3, 4, 6, 6, generator=g)
            self.y = torch.randint(0, 3, (n,), generator=g)

        def __len__(self) -> int:
            return len(self.y)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return self.x[i], int(self.y[i])

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv3d(3, 6, 3, padding=1),
        nn.BatchNorm3d(6),
        nn.ReLU(),
        nn.Flatten(1),
        nn.Linear(6 * 4 * 6 * 6, 3),
    )
    # SyncBatchNorm runs on CUDA only; on CPU (gloo) the ranks' BatchNorm buffers stay their own
    # and only the parameters are compared.
    config = config_cls(
        epochs=2,
        batch_size=4,
        lr=0.05,
        device=str(device),
        progress=False,
        sync_batchnorm=device.type == "cuda",
    )
    trainer = trainer_cls(model, Clips(32, 1), Clips(12, 2), config, seed=3)
    history = trainer.fit()
    flat = torch.cat([p.detach().float().flatten() for p in trainer.model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return {
        "ranks_max_weight_diff": max(float((g - flat).abs().max()) for g in gathered),
        "val_top1": history[-1]["val_top1"],
        "val_clips": history[-1]["val_clips"],
        "sync_batchnorm": any(isinstance(m, nn.SyncBatchNorm) for m in trainer.model.modules()),
    }


def _ddp_smoke(ctx: CheckContext, world: int) -> CheckOutcome:
    import torch.multiprocessing as mp

    # By its importable name: under ``python -m experiments.gpu_check`` this module is
    # ``__main__``, and spawned children must find the worker without running ``__main__``.
    from experiments.gpu_check import ddp_worker as worker

    backend = "gloo" if ctx.device.type != "cuda" else "nccl"
    if backend == "nccl" and torch.cuda.device_count() < world:
        return CheckOutcome(
            f"{torch.cuda.device_count()} GPU(s) visible",
            {"backend": backend},
            "skipped",
            f"needs {world} GPUs, {torch.cuda.device_count()} visible",
        )
    out_dir = ctx.scratch / f"ddp_{world}"
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # CUDA needs fresh interpreters (spawn); the CPU dry run forks, which skips each child's
    # imports (about 10 s on a loaded 2-core machine).
    method = "spawn" if backend == "nccl" else "fork"
    args = (world, backend, _free_port(), str(out_dir))
    mp.start_processes(worker, args=args, nprocs=world, start_method=method)
    seconds = round(time.perf_counter() - start, 2)
    records = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(world)]
    figures: dict[str, Any] = {
        "backend": backend,
        "start_method": method,
        "processes": world,
        "seconds": seconds,
        "ranks": records,
    }
    problems = [f"rank {r['rank']}: {r['error']}" for r in records if "error" in r]
    expected = world * (world + 1) / 2
    for r in records:
        if "error" in r:
            continue
        if r["all_reduce"] != expected:
            problems.append(f"rank {r['rank']}: all_reduce gave {r['all_reduce']}, not {expected}")
        if r["ddp_grad_max_diff"] > 1e-5:
            problems.append(
                f"rank {r['rank']}: DDP gradients differ from the ranks' mean by "
                f"{r['ddp_grad_max_diff']:.3g}"
            )
        trainer = r.get("trainer")
        if trainer is not None and trainer["ranks_max_weight_diff"] != 0.0:
            problems.append(
                f"rank {r['rank']}: ranks' weights differ after training by "
                f"{trainer['ranks_max_weight_diff']:.3g}"
            )
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    grad_diff = max(r["ddp_grad_max_diff"] for r in records)
    return CheckOutcome(
        f"{backend} x{world}: all_reduce ok, DDP grad diff {grad_diff:.2g}, {seconds} s", figures
    )


@register_check(
    "ddp_1proc", "1-process DDP smoke (NCCL on CUDA, gloo in the dry run)", timeout_s=120
)
def check_ddp_1proc(ctx: CheckContext) -> CheckOutcome:
    return _ddp_smoke(ctx, 1)


@register_check(
    "ddp_2proc", "2-process DDP + Trainer (when 2 GPUs are visible; gloo dry run)", timeout_s=150
)
def check_ddp_2proc(ctx: CheckContext) -> CheckOutcome:
    return _ddp_smoke(ctx, 2)


def probe_cuda_visibility(payload: dict[str, Any]) -> dict[str, Any]:
    """Trial function for the dispatcher's pinning test: what this worker process sees."""
    devices = torch.cuda.device_count()
    return {
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device_count": devices,
        "uuid": str(torch.cuda.get_device_properties(0).uuid) if devices else None,
        "worker": os.environ.get("ATTNAS_WORKER"),
        "top1": 0.0,
    }


# ---------------------------------------------------------------------------------- running
def device_slug(device: torch.device) -> str:
    """``"nvidia_h200"`` (the GPU's name, lower case, non-alphanumerics as ``_``) or ``"cpu"``."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name(device).lower()).strip("_")


def run_inline(check: Check, ctx: CheckContext) -> dict[str, Any]:
    """Run one check in this process; a raised exception becomes a ``failed`` record."""
    start = time.perf_counter()
    record: dict[str, Any] = {"name": check.name, "description": check.description}
    try:
        outcome = check.fn(ctx)
        if outcome.status not in ("ok", "skipped"):
            raise ValueError(f"check {check.name} returned status {outcome.status!r}")
        record |= {
            "status": outcome.status,
            "reason": outcome.reason,
            "summary": outcome.summary,
            "figures": outcome.figures,
            "error": None,
        }
    except Exception as err:
        figures = err.figures if isinstance(err, CheckFailed) else {}
        record |= {
            "status": "failed",
            "reason": None,
            "summary": f"{type(err).__name__}: {err}",
            "figures": figures,
            "error": traceback.format_exc(),
        }
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def run_isolated(check: Check, ctx: CheckContext) -> dict[str, Any]:
    """Run one check in a fresh interpreter (``--child``) under its timeout."""
    out = ctx.scratch / f"{check.name}.record.json"
    cmd = [
        sys.executable,
        "-m",
        "experiments.gpu_check",
        "--child",
        check.name,
        "--child-out",
        str(out),
        "--scratch",
        str(ctx.scratch),
        "--results-dir",
        str(ctx.results_dir),
    ]
    cmd += ["--cpu-dry-run"] if ctx.dry_run else ["--device", str(ctx.device)]
    cmd += ["--all-gpu-tests"] if ctx.all_gpu_tests else []
    log_path = ctx.scratch / f"{check.name}.log"
    start = time.perf_counter()
    # A session of its own, so that a timeout also ends the processes the check started
    # (the DDP workers) with the interpreter: the whole process group is killed.
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = proc.wait(timeout=check.timeout_s)
            how = f"its interpreter exited with code {code} and no record"
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            how = f"timed out after {check.timeout_s:g} s"
    tail = log_path.read_text(errors="replace")[-4000:]
    if out.is_file():
        return json.loads(out.read_text())
    return {
        "name": check.name,
        "description": check.description,
        "status": "failed",
        "reason": None,
        "summary": how,
        "figures": {},
        "error": f"{how}\n{tail}",
        "seconds": round(time.perf_counter() - start, 2),
    }


def environment(device: torch.device) -> dict[str, Any]:
    """Machine, versions and device facts recorded at the top of the JSON."""
    from experiments.bench import machine_info

    cuda = device.type == "cuda"
    return {
        "machine": machine_info() | {"hostname": platform.node()},
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if cuda
        else platform.processor() or platform.machine(),
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }


def summary_line(record: dict[str, Any]) -> str:
    """``name  status  key figure`` (the status of a skipped check carries its reason)."""
    status = record["status"]
    if status == "skipped" and record.get("reason"):
        status = f"skipped ({record['reason']})"
    return f"{record['name']:18s} {status:10s} {record['summary']}"


def run_checks(
    names: Sequence[str],
    ctx: CheckContext,
    isolation: str,
    registry: dict[str, Check] | None = None,
) -> list[dict[str, Any]]:
    """Run the named checks in order; CUDA-only ones are skipped without CUDA.

    Returns:
        One record per check: ``name``, ``description``, ``status``, ``reason``, ``summary``,
        ``figures``, ``error``, ``seconds``.
    """
    registry = CHECKS if registry is None else registry
    records = []
    for name in names:
        check = registry[name]
        if check.needs_cuda and ctx.device.type != "cuda":
            record = {
                "name": name,
                "description": check.description,
                "status": "skipped",
                "reason": "no CUDA",
                "summary": "needs a CUDA device",
                "figures": {},
                "error": None,
                "seconds": 0.0,
            }
        elif isolation == "process":
            record = run_isolated(check, ctx)
        else:
            record = run_inline(check, ctx)
        print(summary_line(record), flush=True)
        records.append(record)
    return records


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.gpu_check",
        description="Check the GPU path of attnas (AMP, determinism, memory, DDP, bench) and "
        "write one JSON record per check.",
    )
    parser.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="everything that does not need CUDA, on the CPU at tiny sizes",
    )
    parser.add_argument("--only", nargs="+", metavar="CHECK", help="run only these checks")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default experiments/results/gpu/gpu_check_<device>.json)",
    )
    parser.add_argument(
        "--isolation",
        choices=("process", "inline"),
        default=None,
        help="a fresh interpreter per check (default on CUDA) or this one (default in the dry run)",
    )
    parser.add_argument("--skip", nargs="+", metavar="CHECK", default=[], help="leave these out")
    parser.add_argument(
        "--all-gpu-tests",
        action="store_true",
        help="gpu_tests also runs the tests that repeat this script's own checks",
    )
    parser.add_argument("--device", default="cuda", help="CUDA device of the GPU run (cuda:i)")
    parser.add_argument("--scratch", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None, registry: dict[str, Check] | None = None) -> int:
    """Run the checks, print a summary line each, write the JSON; 1 when a check failed."""
    args = _parser().parse_args(argv)
    registry = CHECKS if registry is None else registry
    if args.cpu_dry_run:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device (torch.cuda.is_available() is False); run with "
            "--cpu-dry-run",
            file=sys.stderr,
        )
        return 2
    else:
        device = torch.device(args.device)
    if args.child is not None:  # one check, in its own interpreter (run_isolated)
        assert args.scratch is not None and args.child_out is not None
        ctx = CheckContext(
            device, args.cpu_dry_run, args.scratch, args.results_dir, args.all_gpu_tests
        )
        record = run_inline(registry[args.child], ctx)
        args.child_out.write_text(json.dumps(record, default=str))
        return 0
    unknown = [n for n in (args.only or []) + args.skip if n not in registry]
    names = [n for n in args.only or list(registry) if n not in args.skip]
    if unknown:
        print(f"gpu_check: unknown check(s) {unknown}; known: {list(registry)}", file=sys.stderr)
        return 2
    isolation = args.isolation or ("inline" if args.cpu_dry_run else "process")
    slug = "cpu_dry_run" if args.cpu_dry_run else device_slug(device)
    out = args.out or RESULTS_DIR / f"gpu_check_{slug}.json"
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="attnas-gpu-check-") as scratch:
        ctx = CheckContext(
            device, args.cpu_dry_run, Path(scratch), args.results_dir, args.all_gpu_tests
        )
        records = run_checks(names, ctx, isolation, registry)
    counts = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    payload = {
        "schema_version": SCHEMA_VERSION,
        "mode": "cpu-dry-run" if args.cpu_dry_run else "cuda",
        **environment(device),
        "isolation": isolation,
        "started": started,
        "wall_seconds": round(time.perf_counter() - start, 2),
        "counts": counts,
        "checks": records,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(
        f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped in "
        f"{payload['wall_seconds']:.0f} s; results: {out}"
    )
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
