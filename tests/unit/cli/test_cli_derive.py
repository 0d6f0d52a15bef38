"""``attnas-derive``'s core: re-derivation from the exported weights or the checkpoint equals
``derive_cell`` on the same weights, and bad α/β or folders fail with clear messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from attnas.cli.derive import run_derive_config
from attnas.cli.errors import UserError
from attnas.space import CellSpec, load_space
from attnas.supergraph import ArchitectureWeights, derive_cell


def _fake_search(run: Path, position_specific: bool = False) -> dict[str, ArchitectureWeights]:
    space = load_space("attention_nas")
    nodes = list(space.supergraph.nodes)
    keys = ["Mixed_4b", "Mixed_4c"] if position_specific else ["all"]
    gen = torch.Generator().manual_seed(0)
    weights = {}
    for key in keys:
        w = ArchitectureWeights(
            space.supergraph.levels, nodes, [space.activations_for(t) for t, _ in nodes]
        )
        with torch.no_grad():
            for p in (w.w_level, w.w_act, w.w_sink):
                p.copy_(torch.randn(p.shape, generator=gen))
        weights[key] = w
        stem = "cell" if key == "all" else f"cell_{key}"
        (run / "cells").mkdir(parents=True, exist_ok=True)
        (run / "cells" / f"{stem}.weights.json").write_text(json.dumps(w.to_dict()))
    state = {
        f"architecture.{k}.{n}": p.detach().clone()
        for k, w in weights.items()
        for n, p in w.named_parameters()
    }
    (run / "search" / "checkpoints").mkdir(parents=True)
    torch.save({"model": state, "epoch": 1}, run / "search" / "checkpoints" / "last.pt")
    cfg = {
        "space": {"file": "attention_nas", "overrides": {}},
        "searcher": {"name": "differentiable", "alpha": None, "beta": None, "temperature": 1.0},
        "backbone": {"positions": keys if position_specific else ["Mixed_4b", "Mixed_4c"]},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return weights


def _cfg(**kw):
    base = {"run_dir": None, "alpha": None, "beta": None, "out_dir": None, "source": "auto"}
    return OmegaConf.create({**base, **kw})


@pytest.mark.parametrize("source", ["weights", "checkpoint"])
def test_rederived_cell_equals_derive_cell(tmp_path: Path, source: str) -> None:
    weights = _fake_search(tmp_path)
    out, files = run_derive_config(_cfg(run_dir=str(tmp_path), alpha=2, beta=1, source=source))
    assert out == tmp_path / "derived_a2_b1" and [f.name for f in files] == ["cell.yaml"]
    expected = derive_cell(weights["all"], 2, 1)
    assert CellSpec.load(files[0]).canonical() == expected.canonical()
    assert (out / "cell.png").is_file() and (out / "derive_config.yaml").is_file()


def test_defaults_come_from_the_space_and_position_specific_gives_one_file_each(
    tmp_path: Path,
) -> None:
    weights = _fake_search(tmp_path, position_specific=True)
    out, files = run_derive_config(_cfg(run_dir=str(tmp_path), out_dir=str(tmp_path / "o")))
    assert out == tmp_path / "o"  # space attention_nas: alpha 3, beta 1
    assert sorted(f.name for f in files) == ["cell_Mixed_4b.yaml", "cell_Mixed_4c.yaml"]
    for key in ("Mixed_4b", "Mixed_4c"):
        got = CellSpec.load(tmp_path / "o" / f"cell_{key}.yaml")
        assert got.canonical() == derive_cell(weights[key], 3, 1).canonical()


def test_bad_alpha_and_folder_are_user_errors(tmp_path: Path) -> None:
    _fake_search(tmp_path)
    with pytest.raises(UserError, match=r"alpha=13 must be in 1\.\.12"):
        run_derive_config(_cfg(run_dir=str(tmp_path), alpha=13))
    with pytest.raises(UserError, match="is not a directory"):
        run_derive_config(_cfg(run_dir=str(tmp_path / "nowhere")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="differentiable search"):
        run_derive_config(_cfg(run_dir=str(empty)))
