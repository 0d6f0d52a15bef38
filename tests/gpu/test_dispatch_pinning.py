"""``LocalDispatcher`` on a GPU machine: slot i's worker sees exactly GPU ``gpus[i]`` (through
``CUDA_VISIBLE_DEVICES``), and a CPU slot sees none."""

from __future__ import annotations

import time

import pytest
import torch

from attnas.dispatch import LocalDispatcher, visible_gpus
from experiments.gpu_check import REPO

pytestmark = pytest.mark.gpu

PROBE = "experiments.gpu_check:probe_cuda_visibility"


def _run(dispatcher: LocalDispatcher, n: int) -> dict[int, dict]:
    for i in range(n):
        dispatcher.submit(i, {"trial_id": i})
    events, deadline = {}, time.monotonic() + 120
    while len(events) < n and time.monotonic() < deadline:
        for event in dispatcher.poll(0.5):
            events[event.trial_id] = event
    assert len(events) == n, f"only {len(events)} of {n} probes finished"
    assert all(e.ok for e in events.values()), [e.error for e in events.values()]
    return {i: e.result for i, e in events.items()}


def test_each_slot_sees_only_its_gpu() -> None:
    gpus = visible_gpus()
    assert gpus, "a GPU machine lists its GPUs"
    uuids = [str(torch.cuda.get_device_properties(i).uuid) for i in range(len(gpus))]
    env = {"PYTHONPATH": str(REPO)}  # the probe lives in experiments/
    with LocalDispatcher(PROBE, gpus="auto", env=env, timeout_s=100) as dispatcher:
        assert dispatcher.num_workers == len(gpus)
        results = _run(dispatcher, len(gpus))
    for slot, result in results.items():
        assert result["cuda_visible_devices"] == gpus[slot]
        assert result["device_count"] == 1
        assert result["uuid"] == uuids[slot]
        assert result["worker"] == f"local:{slot}:gpu{gpus[slot]}"


def test_cpu_slot_sees_no_gpu() -> None:
    env = {"PYTHONPATH": str(REPO)}  # the probe lives in experiments/
    with LocalDispatcher(PROBE, num_workers=1, gpus=None, env=env, timeout_s=100) as dispatcher:
        (result,) = _run(dispatcher, 1).values()
    assert result["cuda_visible_devices"] == "" and result["device_count"] == 0
