"""Run one ``TrialSpec`` JSON file, single-process or data-parallel under torchrun.

Usage::

    python -m attnas.train.ddp_entry spec.json [--result result.json]
    torchrun --nproc_per_node 2 -m attnas.train.ddp_entry spec.json

Every process runs ``run_trial`` on the same spec; the process group comes from torchrun's
environment (NCCL with CUDA, gloo otherwise). Rank 0 writes the result (to ``--result`` and,
when the spec has a run directory, ``<run_dir>/result.json``). The exit status is 0 for a
completed trial and 1 for a failed one.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from attnas.train.distributed import cleanup_distributed, init_distributed
from attnas.train.run import run_trial
from attnas.train.spec import TrialSpec


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the trial, write the result.

    Args:
        argv: Command-line arguments (None: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m attnas.train", description="Run one TrialSpec JSON file."
    )
    parser.add_argument("spec", type=Path, help="TrialSpec JSON file")
    parser.add_argument("--result", type=Path, default=None, help="where rank 0 writes the result")
    parser.add_argument("--backend", default=None, help="process-group backend (nccl, gloo)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    spec = TrialSpec.from_json(args.spec.read_text())
    info = init_distributed(args.backend)
    try:
        result = run_trial(spec)
    except BaseException:
        cleanup_distributed(synchronize=False)  # the peers may never reach a barrier
        raise
    cleanup_distributed()
    if info.is_main and args.result is not None:
        args.result.parent.mkdir(parents=True, exist_ok=True)
        args.result.write_text(json.dumps(result.to_dict(), indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
