from __future__ import annotations

import json
import subprocess
import sys

# optuna: the peers (controller/peers.py) import it when a peer is built, never at import
FORBIDDEN = ["hydra", "wandb", "attnas.ops", "attnas.cells", "attnas.blocks", "optuna"]


def test_controller_imports_no_attention_op_hydra_or_wandb() -> None:
    code = (
        "import sys, json; import attnas.controller; "
        f"print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
