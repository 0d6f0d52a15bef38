"""DDP on CPU with gloo and 2 processes equals single-process training on the same global batch.

The model has no BatchNorm: with plain BatchNorm each process would normalise with its own half
batch's statistics, which is a different function of the data than one process normalising the
global batch (SyncBatchNorm is the fix, and ``TrainConfig.sync_batchnorm`` turns it on). The
model and data are float64, so the only difference between the runs is the order of floating
point additions (two half-batch means averaged by the all-reduce versus one full-batch mean):
about 1e-16 relative per step, which after 6 SGD steps stays far below the 1e-10 tolerance.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

_SCRIPT = r"""
import json, sys
import torch
from torch import nn
from attnas.train import TrainConfig, Trainer, seed_everything
from attnas.train import cleanup_distributed, init_distributed

class Clips(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 4, 6, 6, generator=g, dtype=torch.float64)
        self.y = torch.randint(0, 3, (n,), generator=g)
    def __len__(self):
        return len(self.y)
    def __getitem__(self, i):
        return self.x[i], int(self.y[i])

def main():
    # as in run_trial: the trainer (and the DDP wrapper holding the process group) is gone
    # before the group is destroyed, not left for the interpreter's exit to tear down
    info = init_distributed("gloo")
    out, batch = sys.argv[1], int(sys.argv[2])
    seed_everything(0)
    model = nn.Sequential(nn.Conv3d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                          nn.Flatten(), nn.Linear(6, 3)).double()
    config = TrainConfig(epochs=2, batch_size=batch, lr=0.1, warmup_epochs=0.5, device="cpu",
                         weight_decay=1e-3, grad_clip=5.0)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, Clips(24, 1), Clips(10, 2), config, seed=3)
    history = trainer.fit()
    if info.is_main:
        torch.save(initial, out + ".init.pt")
        torch.save(model.state_dict(), out + ".pt")
        json.dump(history, open(out + ".json", "w"))

main()
cleanup_distributed()
print("torn down", flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_gloo_two_processes_equal_single_process(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    single = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "single"), "8"],
        env={**env, "WORLD_SIZE": "1"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "ddp"), "4"],
            env={
                **env,
                "WORLD_SIZE": "2",
                "RANK": str(r),
                "LOCAL_RANK": str(r),
                "MASTER_PORT": port,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    for rank, p in enumerate(procs):
        out, err = p.communicate(timeout=120)
        # "torn down" on stdout tells a crash at the interpreter's exit from one before
        assert p.returncode == 0, f"rank {rank} exited {p.returncode}:\n{out}\n{err}"
        assert out.strip().endswith("torn down"), f"rank {rank}:\n{out}\n{err}"
    a = torch.load(tmp_path / "single.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp.pt", weights_only=True)
    init = torch.load(tmp_path / "single.init.pt", weights_only=True)
    assert init.keys() == a.keys() == b.keys()
    for name, value in torch.load(tmp_path / "ddp.init.pt", weights_only=True).items():
        assert torch.equal(value, init[name]), name  # both runs start from the same weights
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-10, atol=1e-12, msg=name)
        # training moved every weight, so the equality above is not that of two untrained nets
        assert (a[name] - init[name]).abs().max() > 1e-4, name
    h1 = json.loads((tmp_path / "single.json").read_text())
    h2 = json.loads((tmp_path / "ddp.json").read_text())
    for e1, e2 in zip(h1, h2, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "val_clips"):
            assert e2[key] == pytest.approx(e1[key], rel=1e-10), key
    assert h2[-1]["val_clips"] == 10.0  # every validation clip counted once across ranks
