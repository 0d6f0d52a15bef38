"""``attnas-derive``: derive cells again from a differentiable search, with other α/β.

No retraining: the learned connection weights are read from the search's
``cells/cell*.weights.json`` (or its checkpoint ``search/checkpoints/last.pt``, which also works
while the search still runs), and the cells, weights JSON and a PNG of the weights are written
to ``<run_dir>/derived_a{alpha}_b{beta}/`` (or ``out_dir=``).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from attnas.cli import CONFIG_DIR
from attnas.cli import schema as _schema  # noqa: F401  (registers the schemas)
from attnas.cli.runners import run_cli, run_derive_config


def _derive(cfg: DictConfig) -> None:
    from attnas.space import CellSpec

    out_dir, files = run_cli("attnas-derive", lambda: run_derive_config(cfg))
    print(f"attnas-derive: {len(files)} cell file(s) in {out_dir}")
    for f in files:
        print(f"  {f}: {CellSpec.load(f).canonical()}")
        png = f.with_suffix(".png")
        if png.is_file():
            print(f"  {png}")


@hydra.main(config_path=str(CONFIG_DIR), config_name="derive", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Entry point of ``attnas-derive`` (see ``conf/derive.yaml``)."""
    _derive(cfg)


if __name__ == "__main__":
    main()
