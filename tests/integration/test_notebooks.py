"""Execute the notebooks with tiny settings (nbclient), so they cannot rot.

Parameters are injected papermill-style: a code cell with the overrides is inserted right after
the cell tagged ``parameters``. The kernel is ``python3``; jupyter_client starts a kernel spec
whose command is ``python`` with this interpreter (``sys.executable``), i.e. the project's venv.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `experiments` is a folder of scripts, not an installed package


def _run(name: str, overrides: dict[str, object], timeout: int = 600):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    src = "\n".join(f"{k} = {v!r}" for k, v in overrides.items())
    cell = nbformat.v4.new_code_cell(src)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(idx + 1, cell)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=timeout,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )  # fmt: skip
    client.execute()
    return nb


def _outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if kind in o.get("data", {})]  # fmt: skip


def _text(nb) -> str:
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            parts.append(o.get("text", ""))
            parts.extend(str(v) for k, v in o.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


def _kernel_python_is_ours() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    argv = KernelSpecManager().get_kernel_spec("python3").argv
    # jupyter_client substitutes sys.executable for a bare "python"
    assert argv[0] in ("python", "python3", sys.executable), argv


@pytest.mark.slow
def test_inspect_cell_notebook(tmp_path: Path) -> None:
    _kernel_python_is_ours()
    from attnas.space import CellSpec

    cell = CellSpec.from_dict({
        "name": "test_cell",
        "ops": [
            {"type": "map", "dim": "temporal", "activation": "softmax", "inputs": [0]},
            {"type": "dot", "dim": "spatiotemporal", "activation": "relu", "inputs": [0, 1]},
        ],
        "outputs": [1, 2],
    })  # fmt: skip
    path = cell.save(tmp_path / "cell.yaml")
    nb = _run("inspect_cell.ipynb", {"CELL_FILE": str(path), "BACKBONE": "r3d_tiny",
                                     "INPUT_SHAPE": (3, 8, 32, 32), "NUM_CLASSES": 3})  # fmt: skip
    assert _outputs(nb, "image/png"), "the cell drawing is missing"
    text = _text(nb)
    assert "op 2: dot attention over spatiotemporal with relu activation" in text
    assert "| this cell |" in text and "| non-local |" in text
    assert "logits shape: (2, 3)" in text
    assert "5 AttentionCell modules inserted" in text
    assert "identity at initialisation: True" in text
    assert _outputs(nb, "text/plain")[-1]["data"]["text/plain"] == "True"  # FORWARD_OK


@pytest.mark.slow
def test_compare_searchers_notebook(tmp_path: Path) -> None:
    # a stored result file, as experiments/compare_searchers.py writes it (tiny run)
    from experiments.compare_searchers import main

    main(["--mode", "synthetic", "--budget", "300", "--trial-cost", "60", "--seeds", "2",
          "--searchers", "random", "evolution", "--out", str(tmp_path)])  # fmt: skip
    report = json.loads((tmp_path / "compare_searchers_synthetic.json").read_text())
    assert [r["trials"] for r in report["runs"]["random"]] == [5, 5]
    nb = _run("compare_searchers.ipynb", {
        "RESULTS_DIR": str(tmp_path), "LIVE_SEARCHERS": ["random", "evolution", "gpb"],
        "LIVE_SEEDS": 1, "LIVE_BUDGET_TRIALS": 6, "LIVE_TRIAL_COST_S": 10.0,
        "STUDY_TABLE": "synthetic-small", "STUDY_SEARCHERS": ["random", "optuna_tpe"],
        "STUDY_SEEDS": 2, "STUDY_BUDGET": 12, "STUDY_WORKERS": [1, 8],
    })  # fmt: skip
    # stored curves, discovered cells, live curves, the live study's regret curves
    assert len(_outputs(nb, "image/png")) >= 4
    assert "0 stored study file(s)" in _text(nb) and "optuna_tpe/w8" in _text(nb)
    text = _text(nb)
    assert "1 result file(s)" in text
    for name in ("random", "evolution", "gpb"):
        assert f"| {name} |" in text
